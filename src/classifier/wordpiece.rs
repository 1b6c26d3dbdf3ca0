//! BERT's uncased WordPiece tokenizer, written out so the hot path is a few hash lookups per
//! word: clean the text, lower-case it, strip accents, split on white space and punctuation
//! (and around CJK characters), then split each word greedily into the longest vocabulary
//! pieces (`##` marks a continuation). A test pins it to the `tokenizers` crate's output.

use std::collections::HashMap;

use unicode_categories::UnicodeCategories;
use unicode_normalization::UnicodeNormalization;

/// Words longer than this become `[UNK]`, as in BERT.
const MAX_WORD_CHARS: usize = 100;

#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    unk: u32,
    size: usize,
}

fn is_punct(c: char) -> bool {
    let cp = c as u32;
    (33..=47).contains(&cp)
        || (58..=64).contains(&cp)
        || (91..=96).contains(&cp)
        || (123..=126).contains(&cp)
        || c.is_punctuation()
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
        let vocab: HashMap<String, u32> = text
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
        if word
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
