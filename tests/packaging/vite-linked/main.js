import { Ranker } from "feedloop";
import { report, twice } from "../shared/check.js";

report(twice(Ranker));
