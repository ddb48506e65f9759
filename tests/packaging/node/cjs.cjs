// CommonJS: require() of the ES module package (Node ≥ 20.19, 22.12).
const { Ranker } = require("feedloop");

import("../shared/check.js")
  .then(({ rankAndThumbsDown }) => rankAndThumbsDown(Ranker))
  .then((result) => console.log(JSON.stringify(result)))
  .catch((error) => {
    console.error(error.message);
    process.exitCode = 1;
  });
