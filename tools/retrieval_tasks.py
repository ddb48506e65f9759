#!/usr/bin/env python3
"""Retrieval tasks for choosing and checking feedloop's default model, and their evaluation.

Three tasks, each a list of queries with 20 candidates, exactly one relevant, built from real text
that ships on the machine and that tools/distill_model.py never reads (it trains on fortunes and
/usr/share/doc). Debian package descriptions and man pages are reserved for an independent check
and are not read here.

  python-docstrings  Python's standard library (/usr/lib/python3.X, tests excluded): the summary
                     line of a function's or class's docstring (or its first sentence) -> the rest
                     of that docstring (>= 10 words; the stdlib has few longer docstrings).
  rust-docs          `///` comments of the crates in cargo's registry (the workspace's
                     dependencies, newest version of each): the first paragraph -> the rest.
  markdown-sections  the Markdown documents of those crates and of the npm packages in node_modules
                     (READMEs and docs; not changelogs, licences or contribution guides):
                     a section heading (>= 3 words, used by no other document) -> its text.

Every source is split into DEV and TEST by package (a Python top-level module, a crate, an npm
package), so no package feeds both; variants are chosen on DEV only. The 19 negatives of a query
come from the same split: up to 9 from its own package (the hard ones), the rest at random.

Scores: MRR@20 and Recall@1 (ties broken at random, in expectation), with 95 % bootstrap intervals
over queries (1,000 resamples, fixed seed), and paired differences between systems.

  python tools/retrieval_tasks.py build            write the tasks to .cache/retrieval/
  python tools/retrieval_tasks.py evaluate [...]   BM25, MiniLM, feedloop's model (+ variants)
  python tools/retrieval_tasks.py check            `make test`'s quick check: the evaluation on the
                                                   first 200 DEV queries of python-docstrings

The tasks are rebuilt deterministically from the files; each task's sha256 goes in the report.
"""
import argparse
import ast
import hashlib
import json
import math
import os
import re
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("FEEDLOOP_RETRIEVAL_CACHE", REPO / ".cache" / "retrieval"))
SEED = 20261202
CANDIDATES = 20
SAME_PACKAGE_NEGATIVES = 9
MAX_QUERIES = 1500  # per task and split (a deterministic sample when there are more)
TASKS = ("python-docstrings", "rust-docs", "markdown-sections")


def split_of(package):
    """DEV or TEST, by a hash of the package name (stable across machines and versions)."""
    return "dev" if zlib.crc32(package.encode()) % 2 == 0 else "test"


# ---------------------------------------------------------------- text clean-up
_FENCE = re.compile(r"^\s*(```|~~~).*?^\s*(```|~~~)[^\n]*$", re.S | re.M)
_WS = re.compile(r"[ \t]+")


def clean(text):
    """Prose only: no fenced code, doctest lines, HTML tags, link targets or table rules."""
    text = _FENCE.sub("\n", text)
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if s.startswith((">>>", "... ", "|-", "<!--", "[!")) or s in ("...",):
            continue
        s = re.sub(r"<[^>]{1,200}>", " ", s)
        s = re.sub(r"\]\([^)]*\)", "]", s)
        s = re.sub(r"!\[[^\]]*\]", " ", s)
        lines.append(_WS.sub(" ", s))
    out = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", out).strip()


def words(text):
    return re.findall(r"\w+", text.lower())


def summary_and_rest(doc, first_sentence=False, min_words=20):
    """A doc comment's first paragraph and the rest, both cleaned; None when either is too short.
    With `first_sentence`, a docstring of one paragraph splits after its first sentence instead."""
    doc = doc.strip()
    parts = re.split(r"\n\s*\n", doc, maxsplit=1)
    if len(parts) != 2 and first_sentence:
        parts = re.split(r"(?<=[a-z0-9)][.:])\s+(?=[A-Z])", doc, maxsplit=1)
    if len(parts) != 2:
        return None
    query = " ".join(parts[0].split())
    rest = clean(parts[1])
    if not 4 <= len(words(query)) <= 40 or len(words(rest)) < min_words:
        return None
    if query.startswith(("#", "```", "|", ">>>", "..")) or "http" in query:
        return None
    return query, rest


# ---------------------------------------------------------------- sources
def python_items():
    root = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}")
    if not root.is_dir():
        roots = sorted(Path("/usr/lib").glob("python3.*"))
        root = roots[-1]
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
            "lib2to3", "config-3.11-x86_64-linux-gnu"}
    items = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(p in skip or p.startswith("test_") for p in rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        package = rel.parts[0].removesuffix(".py")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                pair = doc and summary_and_rest(doc, first_sentence=True, min_words=10)
                if pair:
                    items.append((package, *pair))
    return items


def newest_crates():
    """{crate name: source dir} for the newest version of each crate in cargo's registry."""
    home = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo"))
    newest = {}
    for d in sorted(home.glob("registry/src/*/*")):
        m = re.match(r"^(.*)-(\d+)\.(\d+)\.(\d+)(.*)$", d.name)
        if not m or not d.is_dir():
            continue
        name, version = m.group(1), tuple(int(m.group(i)) for i in (2, 3, 4))
        if name not in newest or version > newest[name][0]:
            newest[name] = (version, d)
    return {k: v[1] for k, v in sorted(newest.items())}


def rust_items(crates):
    items = []
    for name, d in crates.items():
        for path in sorted(d.rglob("*.rs")):
            if any(p in ("tests", "benches", "examples", "target") for p in path.relative_to(d).parts):
                continue
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                continue
            block = []
            for line in lines + [""]:
                s = line.strip()
                if s.startswith("///") and not s.startswith("////"):
                    block.append(s[3:][1:] if s[3:4] == " " else s[3:])
                    continue
                if block:
                    pair = summary_and_rest("\n".join(block))
                    if pair:
                        items.append((name, *pair))
                    block = []
    return items


def markdown_items(crates):
    not_prose = re.compile(r"changelog|changes|history|license|licence|contributing|security|"
                           r"code_of_conduct|release|authors|copyright|notice", re.I)
    readmes = []
    packages = [(name, d) for name, d in crates.items()]
    nm = REPO / "node_modules"
    packages += [("npm:" + str(p.relative_to(nm)), p)
                 for p in sorted(list(nm.glob("[!.@]*")) + list(nm.glob("@*/*"))) if p.is_dir()]
    for name, d in packages:
        for f in sorted(d.rglob("*.md")):
            rel = f.relative_to(d)
            if "node_modules" in rel.parts or "target" in rel.parts or not_prose.search(f.name):
                continue
            readmes.append((name, f))
    sections = []
    for package, f in readmes:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        text = _FENCE.sub("\n", text)
        current, body = None, []
        for line in text.splitlines() + ["# end"]:
            m = re.match(r"^#{1,4}\s+(.*?)\s*#*\s*$", line)
            if m:
                if current:
                    sections.append((package, current, clean("\n".join(body))))
                heading = re.sub(r"[`*_\[\]]", "", m.group(1)).strip()
                current, body = heading, []
            elif current is not None:
                body.append(line)
    heading_docs = Counter(h.lower() for _, h, _ in {(p, h, "") for p, h, _ in sections})
    items = []
    for package, heading, body in sections:
        if len(words(heading)) < 3 or heading_docs[heading.lower()] > 1 or len(words(body)) < 20:
            continue
        items.append((package, heading, body))
    return items


# ---------------------------------------------------------------- tasks
def make_lists(items, task):
    """One task split -> [{"query", "candidates": [texts], "relevant": 0-based index}]."""
    by_query, by_passage = Counter(q for _, q, _ in items), Counter(p for _, _, p in items)
    items = [it for it in items if by_query[it[1]] == 1 and by_passage[it[2]] == 1]
    out = {}
    for split in ("dev", "test"):
        pool = [it for it in items if split_of(it[0]) == split]
        rng = np.random.default_rng([SEED, zlib.crc32(f"{task}/{split}".encode())])
        chosen = sorted(rng.permutation(len(pool))[:MAX_QUERIES].tolist())
        by_package = defaultdict(list)
        for i, it in enumerate(pool):
            by_package[it[0]].append(i)
        lists = []
        for i in chosen:
            package, query, passage = pool[i]
            own = [j for j in by_package[package] if j != i]
            hard = [own[k] for k in rng.permutation(len(own))[:SAME_PACKAGE_NEGATIVES]] if own else []
            rest = set(hard) | {i}
            others = []
            while len(hard) + len(others) < CANDIDATES - 1:
                j = int(rng.integers(len(pool)))
                if j not in rest and pool[j][0] != package:
                    rest.add(j)
                    others.append(j)
            negatives = hard + others
            slot = int(rng.integers(CANDIDATES))
            candidates = [pool[j][2] for j in negatives]
            candidates.insert(slot, passage)
            lists.append({"package": package, "query": query, "candidates": candidates, "relevant": slot})
        out[split] = lists
    return out


def build():
    crates = newest_crates()
    sources = {"python-docstrings": python_items(), "rust-docs": rust_items(crates),
               "markdown-sections": markdown_items(crates)}
    CACHE.mkdir(parents=True, exist_ok=True)
    summary = {}
    for task, items in sources.items():
        splits = make_lists(items, task)
        for split, lists in splits.items():
            path = CACHE / f"{task}.{split}.json"
            data = json.dumps(lists, ensure_ascii=False, sort_keys=True).encode()
            path.write_bytes(data)
            summary[f"{task}.{split}"] = {
                "queries": len(lists), "packages": len({x["package"] for x in lists}),
                "sha256": hashlib.sha256(data).hexdigest()}
        summary[task + ".items"] = len(items)
    print(json.dumps(summary, indent=1))
    return summary


def load(task, split):
    path = CACHE / f"{task}.{split}.json"
    if not path.exists():
        sys.exit(f"{path} is missing: run `python tools/retrieval_tasks.py build` first")
    data = path.read_bytes()
    return json.loads(data), hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- metrics
def reciprocal_ranks(scores, relevant):
    """Expected 1/rank and P(rank 1) of the relevant candidate when ties are broken at random."""
    s = np.asarray(scores, dtype=np.float64)
    r = s[relevant]
    greater = int((s > r).sum())
    ties = int((s == r).sum())  # includes the relevant one
    ranks = np.arange(greater + 1, greater + ties + 1)
    return float(np.mean(1.0 / ranks)), (1.0 / ties if greater == 0 else 0.0)


def bootstrap(values, seed=SEED, n=1000):
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": round(float(v.mean()), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


# ---------------------------------------------------------------- systems
def bm25_scores(lists, k1=1.2, b=0.75):
    """Okapi BM25 over lower-cased words, idf from the task split's passages (Lucene's idf)."""
    passages = {c for x in lists for c in x["candidates"]}
    df = Counter()
    lengths = []
    for p in passages:
        w = words(p)
        lengths.append(len(w))
        df.update(set(w))
    n, avgdl = len(passages), float(np.mean(lengths))
    idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}
    out = []
    for x in lists:
        q = words(x["query"])
        row = []
        for c in x["candidates"]:
            tf = Counter(words(c))
            dl = sum(tf.values())
            row.append(sum(idf.get(t, 0.0) * tf[t] * (k1 + 1) / (tf[t] + k1 * (1 - b + b * dl / avgdl))
                           for t in q if tf[t]))
        out.append(row)
    return out


def minilm_embedder():
    sys.path.insert(0, str(REPO / "tools"))
    import distill_model as dm
    from tokenizers import Tokenizer
    files = dm.teacher_files()
    tok = Tokenizer.from_file(str(files["tokenizer.json"]))
    tok.no_padding()
    tok.enable_truncation(dm.TEACHER_MAX_TOKENS)
    model = dm.MiniLM(files["model.safetensors"], files["config.json"], dtype=np.float32)

    def embed(texts):
        ids = [e.ids for e in tok.encode_batch(list(texts))]
        return model.encode_sentences(ids, batch=16)
    return embed


def cached_embeddings(name, texts, embed):
    """Embeddings of `texts` (a list), cached under .cache/retrieval by a hash of name + texts."""
    key = hashlib.sha256((name + "\0" + "\0".join(texts)).encode()).hexdigest()[:24]
    path = CACHE / f"emb-{name}-{key}.npy"
    if path.exists():
        return np.load(path)
    vecs = np.asarray(embed(texts), dtype=np.float32)
    np.save(path, vecs)
    return vecs


def cosine_scores(lists, name, embed):
    texts = sorted({x["query"] for x in lists} | {c for x in lists for c in x["candidates"]})
    vecs = cached_embeddings(name, texts, embed)
    index = {t: i for i, t in enumerate(texts)}
    out = []
    for x in lists:
        q = vecs[index[x["query"]]]
        out.append([float(vecs[index[c]] @ q) for c in x["candidates"]])
    return out


def graph_scores(lists, sess, encode):
    """The model's own ranking score: the graph's `score` output (default head) for each list, with
    the query as the context — what `Ranker.rank` orders by out of the box."""
    sys.path.insert(0, str(REPO / "tools"))
    import distill_model as dm
    out = []
    for x in lists:
        ctx = encode([x["query"]])[0]
        ids, mask = dm.pad_batch(encode(x["candidates"]))
        cids, cmask = dm.pad_batch([ctx])
        if not ctx:
            cmask[:] = 0
        _, score = sess.run(None, {"token_ids": ids, "attention_mask": mask,
                                   "context_token_ids": cids, "context_attention_mask": cmask})
        out.append([float(v) for v in score])
    return out


def evaluate_scores(lists, scores):
    rr, r1 = zip(*(reciprocal_ranks(s, x["relevant"]) for x, s in zip(lists, scores)))
    return np.array(rr), np.array(r1)


def model_session(path):
    import onnxruntime as ort
    from tokenizers import Tokenizer
    sys.path.insert(0, str(REPO / "tools"))
    import distill_model as dm
    tok = Tokenizer.from_file(str(dm.teacher_files()["tokenizer.json"]))
    tok.no_padding()
    tok.no_truncation()

    def encode(texts):
        return [e.ids[:dm.MAX_TOKENS] for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), encode


def check(model, limit):
    """The evaluation end to end on a small sample that every machine has the same text for (the
    Python standard library): the tasks build, every system scores, MRR and Recall@1 are in range,
    and the default model's own score (with its lexical term) ranks better than its cosine alone.
    A sanity check, not the measurement (that is `evaluate` on all of DEV and TEST)."""
    sys.path.insert(0, str(REPO / "tools"))
    import distill_model as dm
    lists = make_lists(python_items(), "python-docstrings")["dev"][:limit]
    assert len(lists) == limit, f"only {len(lists)} DEV queries"
    assert all(len(x["candidates"]) == CANDIDATES and 0 <= x["relevant"] < CANDIDATES for x in lists)
    sess, encode = model_session(model)

    def cosine(texts):
        return dm.ort_embed(sess, [x if x else [0] for x in encode(texts)])
    texts = sorted({x["query"] for x in lists} | {c for x in lists for c in x["candidates"]})
    vecs = cosine(texts)
    index = {t: i for i, t in enumerate(texts)}
    systems = {
        "bm25": bm25_scores(lists),
        "feedloop": graph_scores(lists, sess, encode),
        "feedloop-cosine": [[float(vecs[index[c]] @ vecs[index[x["query"]]]) for c in x["candidates"]]
                            for x in lists],
    }
    report = {}
    for name, scores in systems.items():
        rr, r1 = evaluate_scores(lists, scores)
        assert 0.05 < rr.mean() <= 1 and 0 <= r1.mean() <= 1, (name, rr.mean(), r1.mean())
        report[name] = {"mrr@20": round(float(rr.mean()), 4), "recall@1": round(float(r1.mean()), 4)}
    print(json.dumps({"task": "python-docstrings", "split": "dev", "queries": limit, **report}))
    assert report["feedloop"]["mrr@20"] > report["feedloop-cosine"]["mrr@20"], \
        "the lexical term should help the default model on this sample"
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    ck = sub.add_parser("check")
    ck.add_argument("--model", default=str(REPO / "models" / "feedloop-default.onnx"))
    ck.add_argument("--limit", type=int, default=200)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--split", default="dev", choices=("dev", "test"))
    ev.add_argument("--model", default=str(REPO / "models" / "feedloop-default.onnx"))
    ev.add_argument("--no-minilm", action="store_true", help="skip full MiniLM (slow the first time)")
    ev.add_argument("--limit", type=int, default=0, help="the first N queries of each task only")
    ev.add_argument("--output", help="write the report (JSON) here")
    ev.add_argument("--record", action="store_true",
                    help="also record it in docs/model-quality.json under retrieval.<split>")
    args = ap.parse_args()
    if args.cmd == "build":
        build()
        return 0
    if args.cmd == "check":
        return check(args.model, args.limit)
    sys.path.insert(0, str(REPO / "tools"))
    import distill_model as dm
    sess, encode = model_session(args.model)

    def feedloop_embed(texts):
        return dm.ort_embed(sess, [x if x else [0] for x in encode(texts)])
    model_hash = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
    minilm = None if args.no_minilm else minilm_embedder()
    report = {"split": args.split, "model": Path(args.model).name, "model_sha256": model_hash,
              "tasks": {}}
    for task in TASKS:
        lists, digest = load(task, args.split)
        if args.limit:
            lists = lists[:args.limit]
        systems = {"bm25": bm25_scores(lists),
                   "feedloop": graph_scores(lists, sess, encode),
                   "feedloop-cosine": cosine_scores(lists, "feedloop-" + model_hash[:12], feedloop_embed)}
        if minilm:
            systems["minilm"] = cosine_scores(lists, "minilm", minilm)
        per = {k: evaluate_scores(lists, v) for k, v in systems.items()}
        entry = {"queries": len(lists), "sha256": digest}
        for k, (rr, r1) in per.items():
            entry[k] = {"mrr@20": bootstrap(rr), "recall@1": bootstrap(r1)}
        for k in ("bm25", "minilm"):
            if k in per:
                entry[f"feedloop-minus-{k}"] = bootstrap(per["feedloop"][0] - per[k][0])
        report["tasks"][task] = entry
        print(task, json.dumps({k: v["mrr@20"]["mean"] if isinstance(v, dict) and "mrr@20" in v else v
                                for k, v in entry.items() if k != "sha256"}), flush=True)
    report["command"] = "python tools/retrieval_tasks.py evaluate --split " + args.split
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")
    if args.record and not args.limit:
        path = REPO / "docs" / "model-quality.json"
        quality = json.loads(path.read_text())
        quality.setdefault("retrieval", {})[args.split] = report
        path.write_text(json.dumps(quality, indent=2) + "\n")
        print(f"recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
