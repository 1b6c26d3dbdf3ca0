//! The one dataset format every evaluation reads, and the server's decision log writes: JSON
//! lines, one prompt each (`eval/dataset.schema.json` is its JSON Schema).
//!
//! ```json
//! {"id": "mmlu/anatomy/17", "source": "mmlu/anatomy", "prompt": "…",
//!  "intent": "open_qa", "domain": "medical", "complexity": 0.85, "difficulty": 3,
//!  "outcomes": {"gpt-4-1106-preview": {"quality": 1, "cost_usd": 0.0021, "latency_ms": 900},
//!               "mistralai/Mixtral-8x7B-Instruct-v0.1": {"quality": 0, "input_tokens": 212}}}
//! ```

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::EvalError;
use crate::config::Price;

/// One prompt: its text, optional labels, and optional recorded outcomes per model.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Where it came from: a file, task or subject. Splits hold out whole sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// OpenAI-style chat messages, instead of (or as well as) `prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// 0..1: how likely a cheap model gets it wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity: Option<f64>,
    /// A human difficulty rating on the source's own scale (MATH: level 1..5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, Outcome>,
    /// What the router decided (written by the server's decision log; ignored by the metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Value>,
}

/// One model's recorded result on a prompt.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// 0..1 (correctness, a pass rate) or a judge's score; higher is better. Absent when nobody
    /// judged it (the decision log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

impl Outcome {
    /// The recorded cost, or the token counts at `price`.
    pub fn cost(&self, price: Option<Price>) -> Option<f64> {
        if self.cost_usd.is_some() {
            return self.cost_usd;
        }
        let p = price?;
        let i = self.input_tokens? as f64;
        let o = self.output_tokens.unwrap_or(0) as f64;
        Some((i * p.input + o * p.output) / 1e6)
    }
}

impl Record {
    /// The text the classifier reads: `prompt`, or the last user turn of `messages` with context.
    pub fn text(&self) -> String {
        self.chat().text
    }

    /// What the classifier reads: `prompt`, or the last user turn of `messages` and its context.
    pub fn chat(&self) -> crate::classifier::ChatText {
        match (&self.prompt, &self.messages) {
            (Some(p), _) => crate::classifier::ChatText::prompt(p.clone()),
            (None, Some(m)) => crate::classifier::chat_text(m),
            (None, None) => Default::default(),
        }
    }
}

/// Lower-cased, with runs of white space and punctuation collapsed: two prompts that differ
/// only in those are the same prompt for de-duplication.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// Words that say nothing about what a prompt asks, left out of [`content_words`].
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "of", "to", "in", "on", "at", "by", "for", "with",
    "from", "into", "onto", "about", "as", "is", "are", "was", "were", "be", "been", "being", "am",
    "do", "does", "did", "doing", "have", "has", "had", "having", "i", "me", "my", "mine", "we",
    "us", "our", "you", "your", "yours", "he", "him", "his", "she", "her", "it", "its", "they",
    "them", "their", "this", "that", "these", "those", "there", "here", "what", "which", "who",
    "whom", "whose", "when", "where", "why", "how", "can", "could", "would", "should", "will",
    "shall", "may", "might", "must", "not", "no", "yes", "so", "than", "then", "too", "very",
    "just", "also", "only", "some", "any", "all", "each", "every", "more", "most", "much", "many",
    "such", "own", "same", "other", "another", "one", "please", "pls", "thanks", "thank", "hi",
    "hey", "ok", "okay", "s", "t", "d", "ll", "m", "re", "ve", "don", "doesn", "didn", "isn",
    "aren", "wasn", "weren", "won", "wouldn", "shouldn", "couldn", "get", "got", "make", "give",
    "tell", "write", "say", "show", "use",
];

/// The distinct content words of a text: its [`normalise`]d words less [`STOP_WORDS`].
pub fn content_words(text: &str) -> HashSet<String> {
    normalise(text)
        .split(' ')
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(w))
        .map(str::to_string)
        .collect()
}

/// Whether two prompts (their [`content_words`]) share at least half of the words in either
/// (Jaccard ≥ 0.5): the same request reworded, which [`normalise`] alone misses ("How do I undo
/// my last git commit but keep the changes?" against "How do I undo the last git commit but
/// keep my changes?").
pub fn near_duplicates(a: &HashSet<String>, b: &HashSet<String>) -> bool {
    let shared = a.intersection(b).count();
    shared > 0 && 2 * shared >= a.len() + b.len() - shared
}

fn field_err(
    file: &Path,
    line: u64,
    field: impl Into<String>,
    message: impl Into<String>,
) -> EvalError {
    EvalError::Field {
        file: file.display().to_string(),
        line,
        field: field.into(),
        message: message.into(),
    }
}

/// Checks what serde cannot: a prompt is present, numbers are in range.
fn validate(file: &Path, line: u64, r: &Record) -> Result<(), EvalError> {
    match (&r.prompt, &r.messages) {
        // Decision-log records carry the prompt only when the server was told to keep it.
        (None, None) if r.decision.is_some() => {}
        (None, None) => {
            return Err(field_err(
                file,
                line,
                "prompt",
                "a record needs \"prompt\" or \"messages\"",
            ))
        }
        (Some(p), _) if p.trim().is_empty() => {
            return Err(field_err(file, line, "prompt", "empty"))
        }
        _ => {}
    }
    if let Some(c) = r.complexity {
        if !(0.0..=1.0).contains(&c) {
            return Err(field_err(
                file,
                line,
                "complexity",
                format!("{c} is outside 0..1"),
            ));
        }
    }
    if let Some(d) = r.difficulty {
        if !d.is_finite() {
            return Err(field_err(file, line, "difficulty", "not a finite number"));
        }
    }
    for (model, o) in &r.outcomes {
        let at = |f: &str| format!("outcomes.{model}.{f}");
        if let Some(q) = o.quality {
            if !q.is_finite() {
                return Err(field_err(file, line, at("quality"), "not a finite number"));
            }
        }
        for (name, v) in [("cost_usd", o.cost_usd), ("latency_ms", o.latency_ms)] {
            if v.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Err(field_err(file, line, at(name), "must be a number ≥ 0"));
            }
        }
    }
    Ok(())
}

/// Reads a dataset file. Any malformed line is an error naming the file, the line and the field.
pub fn read(path: &Path) -> Result<Vec<Record>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::File {
        file: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let r: Record = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let field = if field == "." {
                "(line)".to_string()
            } else {
                field
            };
            field_err(path, n, field, e.inner().to_string())
        })?;
        validate(path, n, &r)?;
        out.push(r);
    }
    Ok(out)
}

/// Writes records as JSON lines.
pub fn write(path: &Path, records: &[Record]) -> Result<(), EvalError> {
    let werr = |e: std::io::Error| EvalError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(werr)?);
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| EvalError::Write {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        writeln!(f, "{line}").map_err(werr)?;
    }
    f.flush().map_err(werr)
}

/// Drops records whose normalised prompt is in `exclude` or earlier in `records`; returns how
/// many were dropped for each reason (overlap, duplicate).
pub fn dedupe(records: &mut Vec<Record>, exclude: &HashSet<String>) -> (usize, usize) {
    let mut seen = HashSet::new();
    let (mut overlap, mut dup) = (0, 0);
    records.retain(|r| {
        let key = normalise(&r.text());
        if exclude.contains(&key) {
            overlap += 1;
            false
        } else if !seen.insert(key) {
            dup += 1;
            false
        } else {
            true
        }
    });
    (overlap, dup)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_the_documented_example() {
        let p = tmp(
            "ok.jsonl",
            r#"{"id": "a", "source": "s", "prompt": "What is 2+2?", "intent": "math", "complexity": 0.1, "outcomes": {"m1": {"quality": 1, "cost_usd": 0.001}, "m2": {"quality": 0.5, "input_tokens": 10, "output_tokens": 5}}}

{"messages": [{"role": "user", "content": "hi"}]}
"#,
        );
        let rs = read(&p).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].outcomes["m1"].cost(None), Some(0.001));
        let price = Price {
            input: 1.0,
            output: 2.0,
        };
        assert_eq!(rs[0].outcomes["m2"].cost(Some(price)), Some(20.0 / 1e6));
        assert_eq!(rs[1].text(), "hi");
    }

    #[test]
    fn errors_name_the_file_line_and_field() {
        for (text, field) in [
            ("{\"prompt\": \"x\", \"complexity\": 2}", "complexity"),
            (
                "{\"prompt\": \"x\", \"outcomes\": {\"m\": {\"quality\": \"high\"}}}",
                "outcomes.m.quality",
            ),
            ("{\"prompt\": \"x\", \"intnet\": \"math\"}", "intnet"),
            ("{\"intent\": \"math\"}", "prompt"),
            (
                "{\"prompt\": \"x\", \"outcomes\": {\"m\": {\"cost_usd\": -1}}}",
                "outcomes.m.cost_usd",
            ),
            ("not json", "(line)"),
        ] {
            let p = tmp("bad.jsonl", &format!("{{\"prompt\": \"fine\"}}\n{text}\n"));
            let e = read(&p).unwrap_err().to_string();
            assert!(e.contains("bad.jsonl:2:"), "{e}");
            assert!(e.contains(field), "{field} not in {e}");
        }
    }

    #[test]
    fn dedupe_uses_normalised_text() {
        assert_eq!(normalise("  What's  the time?\n"), "what s the time");
        let r = |p: &str| Record {
            prompt: Some(p.into()),
            ..Default::default()
        };
        let mut rs = vec![
            r("What is law?"),
            r("what is LAW"),
            r("Other"),
            r("held out!"),
        ];
        let exclude: HashSet<String> = [normalise("Held-out")].into_iter().collect();
        assert_eq!(dedupe(&mut rs, &exclude), (1, 1));
        assert_eq!(rs.len(), 2);
    }
}

#[cfg(test)]
mod schema_tests {
    use super::*;

    /// The JSON Schema in `eval/` accepts what the reader writes, and rejects what it rejects.
    #[test]
    fn schema_file_agrees_with_the_reader() {
        let schema: Value =
            serde_json::from_str(include_str!("../../eval/dataset.schema.json")).unwrap();
        let v = jsonschema::validator_for(&schema).unwrap();
        let mut r = Record {
            id: Some("x/1".into()),
            prompt: Some("What is 2+2?".into()),
            complexity: Some(0.2),
            ..Default::default()
        };
        r.outcomes.insert(
            "m".into(),
            Outcome {
                quality: Some(1.0),
                input_tokens: Some(7),
                answer: Some("4".into()),
                ..Default::default()
            },
        );
        assert!(v.is_valid(&serde_json::to_value(&r).unwrap()));
        for bad in [
            serde_json::json!({"intent": "math"}),
            serde_json::json!({"prompt": "x", "complexity": 1.5}),
            serde_json::json!({"prompt": "x", "intnet": "math"}),
            serde_json::json!({"prompt": "x", "outcomes": {"m": {"quality": "high"}}}),
        ] {
            assert!(!v.is_valid(&bad), "{bad}");
        }
    }
}
