#!/usr/bin/env python3
"""feedloop (tract, Rust) against onnxruntime (Python) natively, on the same token ids.

Builds the benchmark's candidate pools from www/samples.json (as www/samples.js does), tokenizes them
with Hugging Face `tokenizers` (the ids feedloop's tokenizer produces: tests/fixtures check it), times
onnxruntime (CPU, one thread) on embed + score for 1, 32 and 100 candidates, runs feedloop's criterion
bench `compare` on the same ids, and writes the native section of BENCHMARKS.md.

    .venv/bin/python tools/bench_native.py           # make bench-native-compare
"""
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_fixtures  # noqa: E402  (tokenizer.json location, padding helper)

SIZES = [1, 32, 100]
PREFIXES = ["", "In short: ", "Good question. ", "As far as I know, ", "Update: ", "Note that "]


def candidate_pool(count, answers):
    """www/samples.js candidatePool(), in Python."""
    out = []
    for i in range(count):
        r = i // len(answers)
        prefix = PREFIXES[r % len(PREFIXES)]
        suffix = f" (#{r})" if r >= len(PREFIXES) else ""
        out.append(prefix + answers[i % len(answers)] + suffix)
    return out


def main():
    samples = json.loads((ROOT / "www/samples.json").read_text())
    answers = [c for s in samples for c in s["candidates"]]
    tok = make_fixtures.load_tokenizer()
    ids = lambda text: tok.encode(text, add_special_tokens=False).ids[:512]  # noqa: E731
    context_ids = ids(samples[0]["question"])
    pools = {str(n): [ids(t) for t in candidate_pool(n, answers)] for n in SIZES}
    inputs_path = ROOT / "target/bench/native-inputs.json"
    inputs_path.parent.mkdir(parents=True, exist_ok=True)
    inputs_path.write_text(json.dumps({"context_ids": context_ids, "pools": pools}))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(ROOT / "models/feedloop-default.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    ci, cm = make_fixtures.pad([context_ids])
    ort_ms = {}
    for n in SIZES:
        ti, tm = make_fixtures.pad(pools[str(n)])
        feeds = {"token_ids": ti, "attention_mask": tm, "context_token_ids": ci, "context_attention_mask": cm}
        for _ in range(20):
            session.run(["score"], feeds)
        times = []
        deadline = time.perf_counter() + 3.0
        while time.perf_counter() < deadline or len(times) < 50:
            start = time.perf_counter()
            session.run(["score"], feeds)
            times.append((time.perf_counter() - start) * 1000)
        ort_ms[n] = statistics.median(times)

    env = dict(os.environ, FEEDLOOP_BENCH_INPUTS=str(inputs_path))
    subprocess.run(["cargo", "bench", "-p", "feedloop-core", "--features", "bundled-model", "--bench", "compare"],
                   cwd=ROOT, env=env, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    feedloop_ms = {}
    for n in SIZES:
        est = json.loads((target / f"criterion/score_token_ids/{n}/new/estimates.json").read_text())
        feedloop_ms[n] = est["median"]["point_estimate"] / 1e6

    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        pass
    rows = "\n".join(
        f"| embed + score {n} candidate{'s' if n > 1 else ''} | {feedloop_ms[n]:.3f} ms | {ort_ms[n]:.3f} ms | "
        f"{feedloop_ms[n] / ort_ms[n]:.2f} |" for n in SIZES)
    section = f"""<!-- native:start -->
## feedloop vs onnxruntime, natively

{date.today().isoformat()}, {cpu}, {os.cpu_count()} cores; onnxruntime {ort.__version__} (Python, CPU
execution provider, 1 thread, all graph optimizations); feedloop = tract via `feedloop-core` (criterion,
`--bench compare`, bench profile). The same token ids (Hugging Face `tokenizers`, identical to
feedloop's tokenizer) and the same ONNX file; medians (`.venv/bin/python tools/bench_native.py`).

| work | feedloop (tract) | onnxruntime | feedloop / ORT |
|---|---|---|---|
{rows}
<!-- native:end -->"""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n<!-- compare:start -->\n<!-- compare:end -->\n"
    if "<!-- native:start -->" not in text:
        text += "\n<!-- native:start -->\n<!-- native:end -->\n"
    text = re.sub(r"<!-- native:start -->.*<!-- native:end -->", lambda _: section, text, flags=re.S)
    path.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
