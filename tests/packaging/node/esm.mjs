import { Ranker } from "feedloop";
import { rankAndThumbsDown } from "../shared/check.js";

console.log(JSON.stringify(await rankAndThumbsDown(Ranker)));
