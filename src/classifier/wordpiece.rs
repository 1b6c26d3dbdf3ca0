//! BERT's uncased WordPiece tokenizer, written out so the hot path is a few hash lookups per
//! word: clean the text, lower-case it, strip accents, split on white space and punctuation
//! (and around CJK characters), then split each word greedily into the longest vocabulary
//! pieces (`##` marks a continuation). A test pins it to the `tokenizers` crate's output.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// Words longer than this become `[UNK]`, as in BERT.
const MAX_WORD_CHARS: usize = 100;

/// FNV-1a: the vocabulary's keys are short, trusted strings, where it is several times faster
/// than the default SipHash (this lookup is most of the classifier's time).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Vocab = HashMap<String, u32, BuildHasherDefault<Fnv>>;

#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: Vocab,
    unk: u32,
    size: usize,
}

fn is_punct(c: char) -> bool {
    if c.is_ascii() {
        // 33..=47, 58..=64, 91..=96 and 123..=126: BERT counts ASCII symbols as punctuation.
        return c.is_ascii_punctuation();
    }
    c.is_punctuation()
}

fn is_cjk(c: char) -> bool {
    let cp = c as u32;
    (0x4E00..=0x9FFF).contains(&cp)
        || (0x3400..=0x4DBF).contains(&cp)
        || (0x20000..=0x2A6DF).contains(&cp)
        || (0x2A700..=0x2B73F).contains(&cp)
        || (0x2B740..=0x2B81F).contains(&cp)
        || (0x2B820..=0x2CEAF).contains(&cp)
        || (0xF900..=0xFAFF).contains(&cp)
        || (0x2F800..=0x2FA1F).contains(&cp)
}

fn is_control(c: char) -> bool {
    if c == '\t' || c == '\n' || c == '\r' {
        return false;
    }
    c.is_other_control() || c.is_other_format() || c.is_other_private_use()
}

impl WordPiece {
    /// From the lines of a `vocab.txt` (one token per line; the id is the line number).
    pub fn from_vocab(text: &str) -> Option<WordPiece> {
        let vocab: Vocab = text
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let unk = *vocab.get("[UNK]")?;
        let size = text.lines().count();
        Some(WordPiece { vocab, unk, size })
    }

    pub fn vocab_size(&self) -> usize {
        self.size
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Token ids without special tokens, at most `max` of them.
    pub fn encode(&self, text: &str, max: usize) -> Vec<u32> {
        if text.is_ascii() {
            return self.encode_ascii(text, max);
        }
        self.encode_unicode(text, max)
    }

    /// The same steps as `encode_unicode` for ASCII text, where NFD, accent stripping and the
    /// Unicode categories are no-ops or simple byte ranges.
    fn encode_ascii(&self, text: &str, max: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(64);
        let mut word = String::with_capacity(32);
        for b in text.bytes() {
            if out.len() >= max {
                break;
            }
            match b {
                b' ' | b'\t' | b'\n' | b'\r' => self.push_word(&mut word, &mut out),
                // Control characters (vertical tab and form feed among them) are dropped.
                0..=31 | 127 => {}
                // For ASCII, BERT's punctuation is exactly these four ranges (`is_punct`).
                _ if b.is_ascii_punctuation() => {
                    self.push_word(&mut word, &mut out);
                    let mut s = String::from(char::from(b));
                    self.push_word(&mut s, &mut out);
                }
                _ => word.push(char::from(b.to_ascii_lowercase())),
            }
        }
        self.push_word(&mut word, &mut out);
        out.truncate(max);
        out
    }

    fn encode_unicode(&self, text: &str, max: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(64);
        let mut word = String::with_capacity(32);
        for c in text.nfd() {
            if out.len() >= max {
                break;
            }
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                continue;
            }
            if c.is_whitespace() {
                self.push_word(&mut word, &mut out);
                continue;
            }
            // Strip accents: drop combining marks after NFD.
            if unicode_normalization::char::is_combining_mark(c) {
                continue;
            }
            if is_punct(c) || is_cjk(c) {
                self.push_word(&mut word, &mut out);
                let mut s = String::new();
                s.extend(c.to_lowercase());
                self.push_word(&mut s, &mut out);
                continue;
            }
            word.extend(c.to_lowercase());
        }
        self.push_word(&mut word, &mut out);
        out.truncate(max);
        out
    }

    fn push_word(&self, word: &mut String, out: &mut Vec<u32>) {
        if word.is_empty() {
            return;
        }
        // Lower-casing can produce combining marks (e.g. 'İ'): strip them too.
        if !word.is_ascii()
            && word
                .chars()
                .any(unicode_normalization::char::is_combining_mark)
        {
            let cleaned: String = word
                .nfd()
                .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
                .collect();
            *word = cleaned;
        }
        if word.chars().count() > MAX_WORD_CHARS {
            out.push(self.unk);
            word.clear();
            return;
        }
        let start_len = out.len();
        let mut start = 0;
        let bytes = word.as_str();
        // The whole word is usually in the vocabulary.
        if let Some(id) = self.vocab.get(bytes) {
            out.push(*id);
            word.clear();
            return;
        }
        let mut piece = String::with_capacity(word.len() + 2);
        while start < bytes.len() {
            let mut end = bytes.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.push_str(&bytes[start..end]);
                if let Some(id) = self.vocab.get(piece.as_str()) {
                    found = Some(*id);
                    break;
                }
                // Step back one character.
                end = bytes[..end]
                    .char_indices()
                    .next_back()
                    .map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(start_len);
                    out.push(self.unk);
                    break;
                }
            }
        }
        word.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vocab() -> &'static WordPiece {
        static VOCAB: std::sync::OnceLock<WordPiece> = std::sync::OnceLock::new();
        VOCAB.get_or_init(|| {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/router/vocab.txt");
            let text = std::fs::read_to_string(path).unwrap();
            WordPiece::from_vocab(&text).unwrap()
        })
    }

    #[test]
    fn ascii_path_handles_controls_and_punctuation() {
        let wp = vocab();
        for text in [
            "Hello, World!",
            "a\u{b}b\u{c}c\u{1f}d\u{7f}e",
            "tabs\tand\r\nnewlines  ",
            "x=1;y=[2,3]{}~`|\\^",
            "",
        ] {
            assert_eq!(
                wp.encode_ascii(text, usize::MAX),
                wp.encode_unicode(text, usize::MAX),
                "{text:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_cases())]
        #[test]
        fn ascii_fast_path_matches_the_unicode_path(text in "[\\x00-\\x7f]{0,80}", max in 1usize..40) {
            let wp = vocab();
            prop_assert_eq!(wp.encode_ascii(&text, max), wp.encode_unicode(&text, max));
        }
    }
}
