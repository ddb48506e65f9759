#!/usr/bin/env python3
"""Quality per byte of the default model's token table: how it is stored (int8 / int4, per row or
per group, f32 / f16 scales), which rows it keeps (the vocabulary pruned to the tokens the
distiller's TRAIN corpus uses most, the rest mapped to [UNK]) — each variant scored on the retrieval
tasks of tools/retrieval_tasks.py (DEV chooses; `--split test` reports), sized as the file the
package would ship (bytes and brotli, quality 11, as the bench pages measure), and checked for the
words of the demo's samples (www/samples.json) a pruned table no longer has a row for.

Every variant starts from an int8 per-row table (`--base`, the default model before the int4 table:
`git show a70a172:models/feedloop-default.onnx`), so int4 is requantized from int8 — which is also
how the distiller builds the shipped table (quantize_int4), so the variant it ships is measured as is.
Each variant is run as a real ONNX graph in onnxruntime (the table dequantized into the file), so
the score is the contract's `score` output, lexical term included.

Usage: git show a70a172:models/feedloop-default.onnx > /tmp/int8.onnx
       python tools/table_study.py --base /tmp/int8.onnx [--split dev|test] [--variants a,b,...]
                                   [--output F.json] [--record]
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import distill_model as dm  # noqa: E402
import retrieval_tasks as rt  # noqa: E402

UNK = 100
SPECIAL = (0, 100, 101, 102, 103)


def brotli_size(data: bytes) -> int:
    """Brotli quality 11 through Node's zlib (what the bench pages and the package check use)."""
    js = ("const z=require('zlib');const c=[];process.stdin.on('data',d=>c.push(d));process.stdin.on('end',"
          "()=>{const b=Buffer.concat(c);process.stdout.write(String(z.brotliCompressSync(b,{params:"
          "{[z.constants.BROTLI_PARAM_QUALITY]:11,[z.constants.BROTLI_PARAM_SIZE_HINT]:b.length}}).length))})")
    return int(subprocess.run(["node", "-e", js], input=data, capture_output=True, check=True).stdout)


def quantize(table, bits, group, f16):
    """Symmetric quantization of `table` [V, D] with one scale per `group` columns of a row;
    returns the dequantized table (what a runtime computes) and the stored bytes of values + scales."""
    V, D = table.shape
    levels = 2 ** (bits - 1) - 1  # int8: ±127, int4: ±7
    g = table.reshape(V, D // group, group)
    scale = np.abs(g).max(2) / levels
    scale[scale == 0] = 1.0
    scale = scale.astype(np.float16 if f16 else np.float32).astype(np.float32)
    q = np.clip(np.rint(g / scale[:, :, None]), -levels, levels)
    deq = (q.astype(np.float32) * scale[:, :, None]).reshape(V, D)
    value_bytes = V * D * bits // 8
    scale_bytes = scale.size * (2 if f16 else 4)
    # the bytes as a file would hold them (values packed two per byte for int4), for brotli
    if bits == 8:
        packed = q.astype(np.int8).tobytes()
    else:
        n = (q.reshape(V, D).astype(np.int16) + 8).astype(np.uint8)
        packed = (n[:, 0::2] | (n[:, 1::2] << 4)).astype(np.uint8).tobytes()
    stored = packed + scale.astype(np.float16 if f16 else np.float32).tobytes()
    assert len(stored) == value_bytes + scale_bytes
    return deq, stored


VARIANTS = {
    # name: (bits, group, f16 scales, kept vocabulary: None = all 30,522, int = the K most used)
    "int8-row-f32": (8, 64, False, None),
    "int8-row-f16": (8, 64, True, None),
    "int4-row-f16": (4, 64, True, None),
    "int4-g32-f16": (4, 32, True, None),
    "int4-g16-f16": (4, 16, True, None),
    "int4-g32-f16-live": (4, 32, True, "live"),
    "int8-row-f16-seen": (8, 64, True, "seen"),
    "int4-g32-f16-seen": (4, 32, True, "seen"),
    "int4-g32-f16-20k": (4, 32, True, 20000),
    "int4-g32-f16-15k": (4, 32, True, 15000),
    "int4-g32-f16-10k": (4, 32, True, 10000),
    "int4-row-f16-20k": (4, 64, True, 20000),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--split", default="dev", choices=("dev", "test"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--base", required=True, help="a model with an int8 per-row table")
    ap.add_argument("--output")
    ap.add_argument("--record", action="store_true",
                    help="also record it in docs/model-quality.json under table_study.<split>")
    args = ap.parse_args()
    base = onnx.load(args.base)
    w = {t.name: numpy_helper.to_array(t) for t in base.graph.initializer}
    table = w["token_embeddings_int8"].astype(np.float32) * w["token_embeddings_scale"][:, None]
    V, D = table.shape
    vocab = {p.key: p.value for p in base.metadata_props}["feedloop.vocab"].split("\n")
    dead = [i for i, t in enumerate(vocab) if t.startswith("[unused")]
    sentences = dm.build_datasets()[0]
    counts, n_sentences = dm.train_token_counts(V, sentences), len(sentences)
    order = [int(i) for i in np.argsort(-counts, kind="stable") if i not in SPECIAL]
    print(f"{V} tokens, {len(dead)} [unusedN], {int((counts > 0).sum())} seen in {n_sentences} TRAIN "
          f"sentences", flush=True)

    # the rest of the file (graph, vocabulary, idf, head) and its brotli size, without the table
    rest = onnx.load(args.base)
    keep = [t for t in rest.graph.initializer if not t.name.startswith("token_embeddings")]
    del rest.graph.initializer[:]
    rest.graph.initializer.extend(keep)
    rest_bytes = rest.SerializeToString()

    # the demo's texts (www/samples.json: everyday support answers), to see which words a pruned
    # table no longer knows
    demo = json.loads((REPO / "www" / "samples.json").read_text())
    demo_texts = [x for s in demo for x in [s["question"], *s["candidates"]]]
    demo_vocab = vocab
    tasks = {t: rt.load(t, args.split)[0] for t in rt.TASKS}
    _, encode = rt.model_session(args.base)
    demo_ids = [i for ids in encode(demo_texts) for i in ids]
    encoded = {t: [(encode([x["query"]])[0], encode(x["candidates"])) for x in lists]
               for t, lists in tasks.items()}

    report = {"split": args.split, "base_model_sha256": dm.sha256_file(args.base),
              "train_sentences": n_sentences, "variants": {}}
    for name in args.variants.split(","):
        bits, group, f16, kept = VARIANTS[name]
        keep_ids = list(range(V))
        if kept == "live":
            keep_ids = [i for i, t in enumerate(vocab) if not t.startswith("[unused")]
        elif kept == "seen":
            keep_ids = sorted(set(SPECIAL) | {i for i in range(V) if counts[i] > 0})
        elif kept is not None:
            keep_ids = sorted(set(SPECIAL) | set(order[:kept - len(SPECIAL)]))
        deq, stored = quantize(table[keep_ids], bits, group, f16)
        full = np.repeat(deq[[keep_ids.index(UNK)]], V, axis=0) if len(keep_ids) < V else deq
        if len(keep_ids) < V:
            full[keep_ids] = deq
            # every id's row in the kept table (pruned ids share [UNK]'s), as a graph would gather it
            remap = np.full(V, keep_ids.index(UNK), np.uint16)
            remap[keep_ids] = np.arange(len(keep_ids), dtype=np.uint16)
            stored += remap.tobytes()
        model = onnx.load(args.base)
        graph = model.graph
        inits = [t for t in graph.initializer if not t.name.startswith("token_embeddings")]
        inits.append(numpy_helper.from_array(full.astype(np.float32), "token_embeddings"))
        del graph.initializer[:]
        graph.initializer.extend(inits)
        nodes = [n for n in graph.node if n.op_type != "DequantizeLinear"]
        del graph.node[:]
        graph.node.extend(nodes)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        kept_set = set(keep_ids)
        lost = sorted({demo_vocab[i] for i in demo_ids if i not in kept_set})
        entry = {"bits": bits, "group": group, "scales": "f16" if f16 else "f32", "rows": len(keep_ids),
                 "demo_tokens_lost": len([i for i in demo_ids if i not in kept_set]), "demo_words_lost": lost,
                 "table_bytes": len(stored), "file_bytes": len(rest_bytes) + len(stored),
                 "file_brotli": brotli_size(rest_bytes + stored), "tasks": {}}
        for t, lists in tasks.items():
            scores = []
            for (ctx, cands) in encoded[t]:
                ids, mask = dm.pad_batch(cands)
                cids, cmask = dm.pad_batch([ctx])
                if not ctx:
                    cmask[:] = 0
                _, s = sess.run(None, {"token_ids": ids, "attention_mask": mask,
                                       "context_token_ids": cids, "context_attention_mask": cmask})
                scores.append(s)
            rr, r1 = rt.evaluate_scores(lists, scores)
            entry["tasks"][t] = {"mrr@20": round(float(rr.mean()), 4), "recall@1": round(float(r1.mean()), 4)}
        entry["mean_mrr@20"] = round(float(np.mean([v["mrr@20"] for v in entry["tasks"].values()])), 4)
        report["variants"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "tasks"}),
              {t: v["mrr@20"] for t, v in entry["tasks"].items()}, flush=True)
    report["command"] = f"python tools/table_study.py --base <int8 model> --split {args.split}"
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    if args.record:
        quality = json.loads(dm.QUALITY_PATH.read_text())
        quality.setdefault("table_study", {})[args.split] = report
        dm.QUALITY_PATH.write_text(json.dumps(quality, indent=2) + "\n")
        print(f"recorded in {dm.QUALITY_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
