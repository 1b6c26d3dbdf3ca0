//! Importers: the public sources, read in their publishers' formats, written in the one dataset
//! format (`dataset.rs`). `switchyard eval import --source KIND --input PATH --out FILE`.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde_json::Value;

use super::dataset::{normalise, Outcome, Record};
use super::datasets::{self, file_err, Example};
use super::EvalError;

/// The weak and strong models of RouteLLM's recordings.
pub const ROUTELLM_WEAK: &str = "mistralai/Mixtral-8x7B-Instruct-v0.1";
pub const ROUTELLM_STRONG: &str = "gpt-4-1106-preview";

/// Tokens estimated from text where the source records none: characters / 4, at least 1.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// The source kinds `import` reads.
pub const SOURCES: &[(&str, &str)] = &[
    (
        "routellm-mmlu",
        "a directory of RouteLLM mmlu_<subject>.csv outcome files",
    ),
    (
        "routellm-gsm8k",
        "RouteLLM's GSM8K responses CSV (outcomes and both answers)",
    ),
    (
        "llmrouter",
        "LLMRouter train.jsonl, with llms.json (prices) beside it",
    ),
    ("math", "Hendrycks MATH JSONL (problem, level, type)"),
    ("gsm8k", "GSM8K JSONL (question)"),
    (
        "legalbench",
        "a LegalBench directory (<task>/base_prompt.txt, test.tsv)",
    ),
    ("pubmedqa", "PubMedQA JSONL (question, contexts)"),
    ("headlines", "FrugalGPT HEADLINES CSV"),
    ("ifeval", "IFEval JSONL (prompt)"),
    ("handwritten", "the project's training-data directory"),
];

fn from_example(e: Example, i: usize) -> Record {
    Record {
        id: Some(format!("{}/{i}", e.source)),
        source: Some(e.source),
        prompt: Some(e.prompt),
        intent: e.intent,
        domain: e.domain,
        complexity: e.complexity.map(f64::from),
        difficulty: e.difficulty.map(f64::from),
        ..Default::default()
    }
}

/// The labelled prompt in a record, for training.
pub fn to_example(r: &Record) -> Example {
    Example {
        prompt: r.text(),
        intent: r.intent.clone(),
        domain: r.domain.clone(),
        complexity: r.complexity.map(|c| c as f32),
        difficulty: r.difficulty.map(|d| d as f32),
        // A dataset record does not say which of its models is the cheap one.
        cheap_error: None,
        source: r.source.clone().unwrap_or_else(|| "dataset".into()),
        // `eval import --source handwritten` names its sources so.
        handwritten: r
            .source
            .as_deref()
            .is_some_and(|s| s.starts_with("handwritten-")),
    }
}

/// RouteLLM MMLU: correctness of the two models; input tokens estimated from the prompt. A
/// `routellm-mmlu-contaminated.jsonl` beside the directory, if present, removes its prompts.
fn routellm_mmlu(dir: &Path) -> Result<Vec<Record>, EvalError> {
    let contaminated = dir.with_file_name(format!(
        "{}-contaminated.jsonl",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("routellm-mmlu")
    ));
    let rows = datasets::read_mmlu_outcomes(dir, Some(&contaminated))?;
    let mut counters: BTreeMap<String, usize> = BTreeMap::new();
    Ok(rows
        .into_iter()
        .map(|o| {
            let source = format!("mmlu/{}", o.subject);
            let n = counters.entry(source.clone()).or_default();
            *n += 1;
            let tokens = estimate_tokens(&o.prompt);
            let outcome = |right: bool| Outcome {
                quality: Some(if right { 1.0 } else { 0.0 }),
                input_tokens: Some(tokens),
                ..Default::default()
            };
            Record {
                id: Some(format!("{source}/{n}")),
                domain: Some(datasets::mmlu_domain(&o.subject).into()),
                intent: Some("open_qa".into()),
                source: Some(source),
                outcomes: [
                    (ROUTELLM_WEAK.to_string(), outcome(o.weak)),
                    (ROUTELLM_STRONG.to_string(), outcome(o.strong)),
                ]
                .into_iter()
                .collect(),
                prompt: Some(o.prompt),
                ..Default::default()
            }
        })
        .collect())
}

/// RouteLLM GSM8K responses: correctness and each model's answer; tokens estimated from text.
fn routellm_gsm8k(path: &Path) -> Result<Vec<Record>, EvalError> {
    let rows = super::data::read_routellm_answers(path, ROUTELLM_WEAK, ROUTELLM_STRONG)?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let tokens = estimate_tokens(&r.prompt);
            let outcome = |right: bool, answer: String| Outcome {
                quality: Some(if right { 1.0 } else { 0.0 }),
                input_tokens: Some(tokens),
                output_tokens: Some(estimate_tokens(&answer)),
                answer: Some(answer),
                ..Default::default()
            };
            Record {
                id: Some(format!("routellm-gsm8k/{}", i + 1)),
                // As `train` names it, so `--held-out-of` finds its held-out rows.
                source: Some("routellm-gsm8k".into()),
                intent: Some("math".into()),
                domain: Some("general".into()),
                outcomes: [
                    (
                        ROUTELLM_WEAK.to_string(),
                        outcome(r.cheap_correct, r.cheap_answer),
                    ),
                    (
                        ROUTELLM_STRONG.to_string(),
                        outcome(r.strong_correct, r.strong_answer),
                    ),
                ]
                .into_iter()
                .collect(),
                prompt: Some(r.prompt),
                ..Default::default()
            }
        })
        .collect())
}

/// LLMRouter: scores of 9 models per question, and cost from `llms.json`'s prices. The data has
/// no answer lengths, so the cost counts the question's estimated tokens at each input price.
fn llmrouter(path: &Path) -> Result<Vec<Record>, EvalError> {
    let (prices_path, prices) = datasets::read_llm_list(path)?;
    let price_of = |model: &str| -> Result<f64, EvalError> {
        prices
            .get(model)
            .and_then(|m| m.get("input_price"))
            .and_then(Value::as_f64)
            .ok_or_else(|| file_err(&prices_path, format!("no input_price for model {model:?}")))
    };
    // The complexity label is dropped below; the groups label reads no prices, only the sizes
    // an import has always needed. One example per row, in order.
    let rows = datasets::read_jsonl(path)?;
    let (examples, _) = datasets::llmrouter_examples(
        path,
        &rows,
        &prices_path,
        &prices,
        datasets::LlmrouterLabel::Groups,
    )?;
    let mut out = Vec::new();
    for (i, (e, (line, v))) in examples.into_iter().zip(&rows).enumerate() {
        let tokens = estimate_tokens(&e.prompt);
        let mut outcomes = BTreeMap::new();
        for (model, score) in v
            .get("scores")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let q = score.as_f64().ok_or_else(|| EvalError::Field {
                file: path.display().to_string(),
                line: *line,
                field: format!("scores.{model}"),
                message: "not a number".into(),
            })?;
            outcomes.insert(
                model.clone(),
                Outcome {
                    quality: Some(q),
                    input_tokens: Some(tokens),
                    cost_usd: Some(tokens as f64 * price_of(model)? / 1e6),
                    ..Default::default()
                },
            );
        }
        let mut r = from_example(e, i + 1);
        // The mean score is derived from these very outcomes: not an independent label.
        r.complexity = None;
        r.outcomes = outcomes;
        out.push(r);
    }
    Ok(out)
}

/// Reads `input` as `source` into records.
pub fn import(source: &str, input: &Path) -> Result<Vec<Record>, EvalError> {
    let examples = match source {
        "routellm-mmlu" => return routellm_mmlu(input),
        "routellm-gsm8k" => return routellm_gsm8k(input),
        "llmrouter" => return llmrouter(input),
        "math" => datasets::read_math(input)?,
        "gsm8k" => datasets::read_gsm8k(input)?,
        "legalbench" => datasets::read_legalbench(input)?,
        "pubmedqa" => datasets::read_pubmedqa(input)?,
        "headlines" => datasets::read_headlines(input)?,
        "ifeval" => datasets::read_ifeval(input)?,
        "handwritten" => datasets::read_handwritten(input)?,
        other => {
            let names: Vec<&str> = SOURCES.iter().map(|(n, _)| *n).collect();
            return Err(EvalError::File {
                file: input.display().to_string(),
                message: format!("unknown source {other:?} (one of: {})", names.join(", ")),
            });
        }
    };
    Ok(examples
        .into_iter()
        .enumerate()
        // A row that fills its template with nothing has no prompt to judge.
        .filter(|(_, e)| !e.prompt.trim().is_empty())
        .map(|(i, e)| from_example(e, i + 1))
        .collect())
}

/// The normalised prompts of dataset files, to exclude from another split.
pub fn prompt_set(files: &[std::path::PathBuf]) -> Result<HashSet<String>, EvalError> {
    let mut out = HashSet::new();
    for f in files {
        for r in super::dataset::read(f)? {
            out.insert(normalise(&r.text()));
        }
    }
    Ok(out)
}
