//! BERT uncased WordPiece, byte-for-byte the same ids as Hugging Face `tokenizers` with the
//! `BertNormalizer` + `BertPreTokenizer` + `WordPiece` pipeline of all-MiniLM-L6-v2's `tokenizer.json`.
//!
//! Parity matters more than elegance here: every step mirrors the reference implementation, in the
//! same order, with the same Unicode tables (`unicode_categories`, which `tokenizers` itself uses), and
//! `tests/fixtures/tokenizer_cases.json` holds the reference ids the tests compare against.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};

/// How a model's text is normalized and split, read from the model's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerConfig {
    pub lowercase: bool,
    pub strip_accents: bool,
    pub handle_chinese_chars: bool,
    pub unk_token: String,
    pub continuing_subword_prefix: String,
    pub max_input_chars_per_word: usize,
    /// Tokens matched verbatim in the raw text before normalization, as `tokenizers` does with the
    /// special "added tokens" of a BERT `tokenizer.json` (so a literal "[SEP]" is the separator).
    pub special_tokens: Vec<String>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            lowercase: true,
            strip_accents: true,
            handle_chinese_chars: true,
            unk_token: "[UNK]".into(),
            continuing_subword_prefix: "##".into(),
            max_input_chars_per_word: 100,
            special_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// A WordPiece tokenizer over a fixed vocabulary (line `i` of the vocabulary is id `i`).
#[derive(Debug, Clone)]
pub struct WordPieceTokenizer {
    config: TokenizerConfig,
    /// FxHash: the keys are the model's own vocabulary, and SipHash made building this map 17 % of
    /// loading the default model in wasm.
    vocab: FxHashMap<String, u32>,
    vocab_size: usize,
    unk_id: u32,
    /// Special tokens present in the vocabulary, longest first (leftmost-longest matching).
    special: Vec<(String, u32)>,
}

impl WordPieceTokenizer {
    /// Builds a tokenizer from vocabulary lines. Fails if the vocabulary is empty, has duplicate
    /// tokens, or lacks the unknown token.
    pub fn new<I, S>(vocab: I, config: TokenizerConfig) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let vocab = vocab.into_iter();
        let mut map = FxHashMap::with_capacity_and_hasher(vocab.size_hint().0, Default::default());
        let mut count = 0usize;
        for (id, token) in vocab.enumerate() {
            let id = u32::try_from(id)
                .map_err(|_| Error::Contract("vocabulary has more than 2^32 tokens".into()))?;
            match map.entry(token.into()) {
                Entry::Occupied(e) => {
                    return Err(Error::Contract(format!(
                        "vocabulary lists token {:?} twice",
                        e.key()
                    )));
                }
                Entry::Vacant(e) => {
                    e.insert(id);
                }
            }
            count += 1;
        }
        if count == 0 {
            return Err(Error::Contract("vocabulary is empty".into()));
        }
        let unk_id = *map.get(&config.unk_token).ok_or_else(|| {
            Error::Contract(format!(
                "vocabulary lacks the unknown token {:?}",
                config.unk_token
            ))
        })?;
        let mut special: Vec<(String, u32)> = config
            .special_tokens
            .iter()
            .filter(|t| !t.is_empty())
            .filter_map(|t| map.get(t).map(|&id| (t.clone(), id)))
            .collect();
        special.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(Self {
            config,
            vocab: map,
            vocab_size: count,
            unk_id,
            special,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn config(&self) -> &TokenizerConfig {
        &self.config
    }

    /// Token ids of `text`, without special tokens and without truncation.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while let Some((start, token, id)) = self.next_special(rest) {
            self.encode_plain(&rest[..start], &mut ids);
            ids.push(id);
            rest = &rest[start + token.len()..];
        }
        self.encode_plain(rest, &mut ids);
        ids
    }

    /// The leftmost special token in `text`, the longest one where several start there.
    fn next_special(&self, text: &str) -> Option<(usize, &str, u32)> {
        self.special
            .iter()
            .filter_map(|(t, id)| text.find(t.as_str()).map(|at| (at, t.as_str(), *id)))
            .min_by_key(|&(at, t, _)| (at, std::cmp::Reverse(t.len())))
    }

    fn encode_plain(&self, text: &str, ids: &mut Vec<u32>) {
        if text.is_empty() {
            return;
        }
        let normalized = self.normalize(text);
        for word in pre_tokenize(&normalized) {
            self.word_piece(word, ids);
        }
    }

    /// Token ids of `text`, cut after the first `max_tokens` tokens.
    pub fn encode_truncated(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut ids = self.encode(text);
        ids.truncate(max_tokens);
        ids
    }

    /// `BertNormalizer`: clean text, pad CJK ideographs, strip accents, lowercase — in that order.
    fn normalize(&self, text: &str) -> String {
        if text.is_ascii() {
            return self.normalize_ascii(text);
        }
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if c == '\0' || c == '\u{fffd}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                out.push(' ');
            } else if self.config.handle_chinese_chars && is_chinese_char(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        if self.config.strip_accents {
            out = out.nfd().filter(|c| !c.is_mark_nonspacing()).collect();
        }
        if self.config.lowercase {
            // Per character, as the reference does (so a final 'Σ' becomes 'σ', not 'ς').
            out = out.chars().flat_map(char::to_lowercase).collect();
        }
        out
    }

    /// The same result as the general path for ASCII text, without the Unicode tables: ASCII has no
    /// CJK ideographs, NFD leaves it unchanged (so no accents to strip), and its controls are
    /// 0x00–0x1F and 0x7F.
    fn normalize_ascii(&self, text: &str) -> String {
        let lowercase = self.config.lowercase;
        text.bytes()
            .filter_map(|b| match b {
                b'\t' | b'\n' | b'\r' | b' ' => Some(' '),
                0x00..=0x1f | 0x7f => None,
                _ if lowercase => Some(char::from(b.to_ascii_lowercase())),
                _ => Some(char::from(b)),
            })
            .collect()
    }

    /// Greedy longest-match-first WordPiece; a word that cannot be covered becomes one unknown token.
    fn word_piece(&self, word: &str, ids: &mut Vec<u32>) {
        if word.chars().count() > self.config.max_input_chars_per_word {
            ids.push(self.unk_id);
            return;
        }
        let first = ids.len();
        let mut start = 0;
        let mut candidate = String::with_capacity(word.len() + 2);
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str(&self.config.continuing_subword_prefix);
                }
                candidate.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(candidate.as_str()) {
                    found = Some(id);
                    break;
                }
                end = previous_char_boundary(word, end);
            }
            match found {
                Some(id) => {
                    ids.push(id);
                    start = end;
                }
                None => {
                    ids.truncate(first);
                    ids.push(self.unk_id);
                    return;
                }
            }
        }
    }
}

fn previous_char_boundary(s: &str, mut index: usize) -> usize {
    index -= 1;
    while !s.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// `BertPreTokenizer`: split on whitespace (dropped) and on punctuation (kept, one char a word).
fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    let mut words = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() || is_bert_punctuation(c) {
            if let Some(start) = word_start.take() {
                words.push(&text[start..i]);
            }
            if !c.is_whitespace() {
                words.push(&text[i..i + c.len_utf8()]);
            }
        } else if word_start.is_none() {
            word_start = Some(i);
        }
    }
    if let Some(start) = word_start {
        words.push(&text[start..]);
    }
    words.into_iter()
}

fn is_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_control(c: char) -> bool {
    // Tab, newline and carriage return count as whitespace, not control (as in BERT).
    !matches!(c, '\t' | '\n' | '\r') && c.is_other()
}

fn is_bert_punctuation(c: char) -> bool {
    // Every ASCII character in a Unicode P* category is ASCII punctuation, so ASCII text never needs
    // the Unicode tables (their binary search was a fifth of ranking new texts).
    if c.is_ascii() {
        c.is_ascii_punctuation()
    } else {
        c.is_punctuation()
    }
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> WordPieceTokenizer {
        let vocab = [
            "[PAD]", "[UNK]", "hello", "world", "un", "##aff", "##able", ",", "!", "cafe", "中",
        ];
        WordPieceTokenizer::new(vocab, TokenizerConfig::default()).unwrap()
    }

    #[test]
    fn ascii_punctuation_shortcut_agrees_with_the_unicode_tables() {
        for c in (0u8..=127).map(char::from) {
            assert_eq!(
                is_bert_punctuation(c),
                c.is_ascii_punctuation() || c.is_punctuation(),
                "{c:?}"
            );
        }
    }

    #[test]
    fn splits_punctuation_and_subwords() {
        let t = tiny();
        assert_eq!(
            t.encode("Hello, unaffable world!"),
            vec![2, 7, 4, 5, 6, 3, 8]
        );
    }

    #[test]
    fn strips_accents_and_pads_cjk() {
        let t = tiny();
        assert_eq!(t.encode("CAFÉ中hello"), vec![9, 10, 2]);
    }

    #[test]
    fn uncoverable_word_is_one_unknown() {
        let t = tiny();
        assert_eq!(t.encode("unaffablex hello"), vec![1, 2]);
    }

    #[test]
    fn overlong_word_is_unknown_and_truncation_cuts() {
        let t = tiny();
        let long = "a".repeat(101);
        assert_eq!(t.encode(&long), vec![1]);
        assert_eq!(t.encode_truncated("hello world hello", 2), vec![2, 3]);
    }

    #[test]
    fn special_tokens_match_verbatim_before_normalization() {
        let t = tiny();
        // "[UNK]" is special; "[unk]" is ordinary text (punctuation + a word not in the vocabulary).
        assert_eq!(t.encode("hello[UNK]world"), vec![2, 1, 3]);
        assert_eq!(t.encode("hello [unk]"), vec![2, 1, 1, 1]);
    }

    #[test]
    fn vocabulary_must_hold_unknown_token_once() {
        let err = WordPieceTokenizer::new(["a", "b"], TokenizerConfig::default()).unwrap_err();
        assert!(err.to_string().contains("[UNK]"), "{err}");
        let err =
            WordPieceTokenizer::new(["[UNK]", "a", "a"], TokenizerConfig::default()).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
