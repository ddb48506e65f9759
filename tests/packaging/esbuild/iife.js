// An IIFE bundle has no import.meta.url: the files are named explicitly.
import { Ranker } from "feedloop";
import { report, twice } from "../shared/check.js";

report(twice(Ranker, { wasm: "./feedloop_wasm_bg.wasm", model: "./feedloop-default.onnx" }));
