import { Ranker } from "feedloop";
import { rankAndThumbsDown } from "../shared/check.js";

rankAndThumbsDown(Ranker).then(
  (result) => console.log(JSON.stringify(result)),
  (error) => {
    console.error(error.message);
    process.exitCode = 1;
  },
);
