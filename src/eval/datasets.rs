//! Labelled prompts from the public sources, read in their publishers' own formats, and the
//! project's hand-written examples. Training and evaluation both read through here.
//!
//! Every example carries a `source` (a file, a task, a subject) so splits can hold out whole
//! sources rather than rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::EvalError;

#[derive(Debug, Clone)]
pub struct Example {
    pub prompt: String,
    pub intent: Option<String>,
    pub domain: Option<String>,
    /// 0..1, how likely a cheap model gets it wrong where a stronger one gets it right (what
    /// escalating buys); `None` where unknown.
    pub complexity: Option<f32>,
    /// A human difficulty rating where one exists (MATH level 1..5).
    pub difficulty: Option<f32>,
    /// 0..1, how often the cheap side of recorded outcomes got it wrong; `None` where no
    /// outcomes were recorded. Training calibrates the complexity score to it.
    pub cheap_error: Option<f32>,
    pub source: String,
    /// Written by people in everyday voice (`training-data/`), rather than taken from a public
    /// exam or document set: training weighs these more.
    pub handwritten: bool,
}

/// Recorded weak/strong correctness for a prompt (RouteLLM MMLU).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub prompt: String,
    pub subject: String,
    pub weak: bool,
    pub strong: bool,
}

pub(crate) fn file_err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::File {
        file: path.display().to_string(),
        message: message.into(),
    }
}

pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<(u64, Value)>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| EvalError::Field {
            file: path.display().to_string(),
            line: i as u64 + 1,
            field: "(line)".into(),
            message: format!("invalid JSON: {e}"),
        })?;
        out.push((i as u64 + 1, v));
    }
    Ok(out)
}

fn str_field(path: &Path, line: u64, v: &Value, field: &str) -> Result<String, EvalError> {
    v.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| EvalError::Field {
            file: path.display().to_string(),
            line,
            field: field.into(),
            message: "missing or not a string".into(),
        })
}

fn ex(
    prompt: String,
    intent: Option<&str>,
    domain: Option<&str>,
    complexity: Option<f32>,
    source: String,
) -> Example {
    Example {
        prompt,
        intent: intent.map(str::to_string),
        domain: domain.map(str::to_string),
        complexity,
        difficulty: None,
        cheap_error: None,
        source,
        handwritten: false,
    }
}

/// The domain an MMLU subject belongs to.
pub fn mmlu_domain(subject: &str) -> &'static str {
    match subject {
        "professional_law" | "jurisprudence" | "international_law" => "legal",
        "professional_medicine"
        | "clinical_knowledge"
        | "college_medicine"
        | "medical_genetics"
        | "anatomy"
        | "nutrition"
        | "virology"
        | "human_aging" => "medical",
        "professional_accounting"
        | "econometrics"
        | "high_school_macroeconomics"
        | "high_school_microeconomics" => "finance",
        _ => crate::classifier::GENERAL,
    }
}

/// The intent of an LLMRouter `task_name`.
fn llmrouter_intent(task: &str) -> Option<&'static str> {
    Some(match task {
        "math" | "gsm8k" => "math",
        "mbpp" | "human_eval" => "coding",
        // Science exam questions (OpenBookQA, ARC) read like any factual question.
        "natural_qa" | "trivia_qa" | "mmlu" | "openbook_qa" | "arc_challenge" => "open_qa",
        "commonsense_qa" | "gpqa" => "reasoning",
        "commongen" => "creative_writing",
        _ => return None,
    })
}

/// Reads the RouteLLM MMLU outcome CSVs (`mmlu_<subject>.csv`), skipping contaminated prompts.
pub fn read_mmlu_outcomes(
    dir: &Path,
    contaminated: Option<&Path>,
) -> Result<Vec<Outcome>, EvalError> {
    let mut skip = std::collections::HashSet::new();
    if let Some(c) = contaminated.filter(|c| c.exists()) {
        for (_, v) in read_jsonl(c)? {
            if let Some(p) = v.get("train_prompt").and_then(Value::as_str) {
                skip.insert(p.trim().to_string());
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let weak = "mistralai/Mixtral-8x7B-Instruct-v0.1";
    let strong = "gpt-4-1106-preview";
    let mut out = Vec::new();
    for f in files {
        let subject = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .trim_start_matches("mmlu_")
            .to_string();
        let mut rdr = csv::Reader::from_path(&f).map_err(|e| file_err(&f, e.to_string()))?;
        let headers = rdr
            .headers()
            .map_err(|e| file_err(&f, e.to_string()))?
            .clone();
        let col = |n: &str| {
            headers
                .iter()
                .position(|h| h == n)
                .ok_or_else(|| file_err(&f, format!("no column {n:?}")))
        };
        let (ip, iw, is) = (col("prompt")?, col(weak)?, col(strong)?);
        for rec in rdr.records() {
            let rec = rec.map_err(|e| file_err(&f, e.to_string()))?;
            let line = rec.position().map_or(0, |p| p.line());
            let b = |i: usize, name: &str| match rec.get(i).unwrap_or("") {
                "True" => Ok(true),
                "False" => Ok(false),
                other => Err(EvalError::Field {
                    file: f.display().to_string(),
                    line,
                    field: name.into(),
                    message: format!("expected True or False, found {other:?}"),
                }),
            };
            let prompt = rec.get(ip).unwrap_or("").to_string();
            if skip.contains(prompt.trim()) {
                continue;
            }
            out.push(Outcome {
                prompt,
                subject: subject.clone(),
                weak: b(iw, weak)?,
                strong: b(is, strong)?,
            });
        }
    }
    Ok(out)
}

/// Complexity from recorded outcomes, as what escalating the prompt buys: right only by the
/// strong model is hard (0.9); right by the weak model is easy (0.1), and lowest (0.0) when the
/// strong model got it wrong; wrong by both is scored like easy (0.1), since sending it to the
/// strong model costs more and answers no better. Scoring "wrong by both" as hardest ranked the
/// subjects both models fail first, and routing by it did no better than prompt length.
pub fn outcome_complexity(weak: bool, strong: bool) -> f32 {
    gain_complexity(f64::from(u8::from(weak)), f64::from(u8::from(strong)))
}

/// The same for qualities in 0..1: with the gain g = strong − cheap, 0.1 + 0.8·g when the strong
/// side does better and 0.1 + 0.1·g when it does worse.
pub fn gain_complexity(cheap: f64, strong: f64) -> f32 {
    let g = (strong - cheap).clamp(-1.0, 1.0);
    (0.1 + 0.8 * g.max(0.0) + 0.1 * g.min(0.0)) as f32
}

/// LLMRouter models of at least this many billion parameters count as its strong side.
pub const LLMROUTER_STRONG_BILLIONS: f64 = 40.0;

/// GSM8K (`question`): grade-school maths.
pub fn read_gsm8k(path: &Path) -> Result<Vec<Example>, EvalError> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            Ok(ex(
                str_field(path, line, &v, "question")?,
                Some("math"),
                Some("general"),
                None,
                "gsm8k".into(),
            ))
        })
        .collect()
}

/// RouteLLM's GSM8K outcomes (`routellm-gsm8k-half.csv`) as labelled prompts: maths, with
/// complexity from Mixtral/GPT-4 correctness.
pub fn read_gsm8k_outcomes(path: &Path) -> Result<Vec<Example>, EvalError> {
    Ok(super::data::read_routellm_answers(
        path,
        super::import::ROUTELLM_WEAK,
        super::import::ROUTELLM_STRONG,
    )?
    .into_iter()
    .map(|r| Example {
        cheap_error: Some(f32::from(u8::from(!r.cheap_correct))),
        ..ex(
            r.prompt,
            Some("math"),
            Some("general"),
            Some(outcome_complexity(r.cheap_correct, r.strong_correct)),
            "routellm-gsm8k".into(),
        )
    })
    .collect())
}

/// MATH (`problem`, `level` "Level 1".."Level 5", `type`): the level is the difficulty.
pub fn read_math(path: &Path) -> Result<Vec<Example>, EvalError> {
    let mut out = Vec::new();
    for (line, v) in read_jsonl(path)? {
        let level = v
            .get("level")
            .and_then(Value::as_str)
            .and_then(|l| l.trim_start_matches("Level ").parse::<f32>().ok());
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let mut e = ex(
            str_field(path, line, &v, "problem")?,
            Some("math"),
            Some("general"),
            level.map(|l| 0.1 + 0.2 * (l - 1.0)),
            format!("math/{kind}"),
        );
        e.difficulty = level;
        out.push(e);
    }
    Ok(out)
}

/// PubMedQA (`question`, `contexts`): closed QA over the given abstracts.
pub fn read_pubmedqa(path: &Path) -> Result<Vec<Example>, EvalError> {
    let mut out = Vec::new();
    for (line, v) in read_jsonl(path)? {
        let q = str_field(path, line, &v, "question")?;
        let ctx: Vec<&str> = v
            .get("contexts")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push(ex(
            format!("{}\n\nQuestion: {q}", ctx.join(" ")),
            Some("closed_qa"),
            Some("medical"),
            None,
            "pubmedqa".into(),
        ));
    }
    Ok(out)
}

/// FrugalGPT's HEADLINES CSV (no header; "Q: <headline> A:" then the label).
pub fn read_headlines(path: &Path) -> Result<Vec<Example>, EvalError> {
    let mut out = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .map_err(|e| file_err(path, e.to_string()))?;
    for rec in rdr.records() {
        let rec = rec.map_err(|e| file_err(path, e.to_string()))?;
        let text = rec
            .get(0)
            .unwrap_or("")
            .trim_start_matches("Q:")
            .trim()
            .trim_end_matches("A:")
            .trim()
            .to_string();
        if !text.is_empty() {
            out.push(ex(format!("Does this headline say the price of gold went up, down, stayed neutral, or none? {text}"), Some("classification"), Some("finance"), None, "headlines".into()));
        }
    }
    Ok(out)
}

/// IFEval (`prompt`): instruction following, no intent label.
pub fn read_ifeval(path: &Path) -> Result<Vec<Example>, EvalError> {
    read_jsonl(path)?
        .into_iter()
        .map(|(line, v)| {
            Ok(ex(
                str_field(path, line, &v, "prompt")?,
                None,
                Some("general"),
                None,
                "ifeval".into(),
            ))
        })
        .collect()
}

/// LegalBench (`<task>/base_prompt.txt` with `test.tsv` rows filled in).
pub fn read_legalbench(dir: &Path) -> Result<Vec<Example>, EvalError> {
    let mut out = Vec::new();
    let mut tasks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    tasks.sort();
    for t in tasks {
        let name = t
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        let base = std::fs::read_to_string(t.join("base_prompt.txt")).unwrap_or_default();
        // Use only the part after the few-shot examples: the instruction and the row.
        let tsv = t.join("test.tsv");
        let Ok(mut rdr) = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .flexible(true)
            .from_path(&tsv)
        else {
            continue;
        };
        let headers = match rdr.headers() {
            Ok(h) => h.clone(),
            Err(_) => continue,
        };
        let intent = if name.contains("extraction") || name.starts_with("definition_extraction") {
            "extraction"
        } else {
            "classification"
        };
        for rec in rdr.records().flatten() {
            let mut prompt = base.clone();
            for (h, v) in headers.iter().zip(rec.iter()) {
                prompt = prompt.replace(&format!("{{{{{h}}}}}"), v);
            }
            // Keep the instruction head and the filled-in tail: the few-shot middle says little.
            let chars: Vec<char> = prompt.chars().collect();
            let text: String = if chars.len() > 1200 {
                chars[..400]
                    .iter()
                    .chain(['\n'].iter())
                    .chain(chars[chars.len() - 700..].iter())
                    .collect()
            } else {
                prompt
            };
            out.push(ex(
                text,
                Some(intent),
                Some("legal"),
                None,
                format!("legalbench/{name}"),
            ));
        }
    }
    Ok(out)
}

/// LLMRouter's model list, `llms.json` beside its `train.jsonl`: each model's size and prices.
pub(crate) fn read_llm_list(train: &Path) -> Result<(PathBuf, BTreeMap<String, Value>), EvalError> {
    let path = train.with_file_name("llms.json");
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e.to_string()))?;
    let models = serde_json::from_str(&text).map_err(|e| file_err(&path, e.to_string()))?;
    Ok((path, models))
}

/// A cheap and a strong model, by name.
pub type ModelPair = (String, String);

/// How [`read_llmrouter_prompts`] turns LLMRouter's per-model scores into a complexity label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LlmrouterLabel {
    /// What escalating from the cheapest model (by price in `llms.json`) to the most accurate
    /// one (mean score over the file) buys: the pair a router of this data would be deployed
    /// between.
    #[default]
    Pair,
    /// The mean score of the models of at least [`LLMROUTER_STRONG_BILLIONS`] billion
    /// parameters against the mean of the smaller ones. A large model that fails a task's
    /// answer format (LLMRouter's llama3-chatqa-1.5-70b scores 0.02 on ARC) then pulls that
    /// task's label down whatever the strong model does.
    Groups,
}

/// The cheap and strong models of [`LlmrouterLabel::Pair`]: the model with the lowest input plus
/// output price in `llms.json`, and the model with the highest mean score over `rows` (ties go
/// to the first name in order). `None` when no model has both a price and a score.
fn llmrouter_pair(rows: &[(u64, Value)], models: &BTreeMap<String, Value>) -> Option<ModelPair> {
    let mut totals: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (_, v) in rows {
        for (model, score) in v
            .get("scores")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            if let Some(score) = score.as_f64() {
                let t = totals.entry(model.as_str()).or_default();
                t.0 += score;
                t.1 += 1.0;
            }
        }
    }
    let price = |model: &str| {
        let m = models.get(model)?;
        let p = |k: &str| m.get(k).and_then(Value::as_f64);
        Some(p("input_price")? + p("output_price")?)
    };
    let cheap = totals
        .keys()
        .filter_map(|m| Some((price(m)?, *m)))
        .min_by(|a, b| a.0.total_cmp(&b.0))?
        .1;
    let strong = totals
        .iter()
        .map(|(m, (sum, n))| (sum / n, *m))
        .reduce(|best, x| if x.0 > best.0 { x } else { best })?
        .1;
    Some((cheap.to_string(), strong.to_string()))
}

/// LLMRouter's `train.jsonl` (`question`, `scores` per model, `task_name`), as labelled prompts.
/// Complexity is what escalating buys ([`gain_complexity`]), between the models `label` names;
/// the cheap side's error is one minus its score (with [`LlmrouterLabel::Groups`], the small
/// models' mean). One minus the share of models right (the prompt's difficulty) ranked prompts
/// every model fails first, and routed worse than random. Also returns the cheap and strong
/// models of [`LlmrouterLabel::Pair`] (`None` with `Groups`), for the model card.
pub fn read_llmrouter_prompts(
    path: &Path,
    label: LlmrouterLabel,
) -> Result<(Vec<Example>, Option<ModelPair>), EvalError> {
    let (sizes_path, models) = read_llm_list(path)?;
    llmrouter_examples(path, &read_jsonl(path)?, &sizes_path, &models, label)
}

/// [`read_llmrouter_prompts`] of rows already read from `path` (`read_jsonl`) and the model list
/// read from `sizes_path` beside it (`read_llm_list`): one example per row, in order.
pub(crate) fn llmrouter_examples(
    path: &Path,
    rows: &[(u64, Value)],
    sizes_path: &Path,
    models: &BTreeMap<String, Value>,
    label: LlmrouterLabel,
) -> Result<(Vec<Example>, Option<ModelPair>), EvalError> {
    let strong = |model: &str| -> Result<bool, EvalError> {
        models
            .get(model)
            .and_then(|m| m.get("size"))
            .and_then(Value::as_str)
            .and_then(|s| s.trim().trim_end_matches(['B', 'b']).parse::<f64>().ok())
            .map(|b| b >= LLMROUTER_STRONG_BILLIONS)
            .ok_or_else(|| {
                file_err(
                    sizes_path,
                    format!("no size like \"7B\" for model {model:?}"),
                )
            })
    };
    let pair = match label {
        LlmrouterLabel::Pair => Some(llmrouter_pair(rows, models).ok_or_else(|| {
            file_err(
                sizes_path,
                "no model with both a price (input_price, output_price) and a score",
            )
        })?),
        LlmrouterLabel::Groups => None,
    };
    let mut out = Vec::new();
    for (line, v) in rows {
        let q = str_field(path, *line, v, "question")?;
        let task = v
            .get("task_name")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let scores = v.get("scores").and_then(Value::as_object);
        let (complexity, cheap_error) = if let Some((cheap, strong)) = &pair {
            let score = |m: &str| scores.and_then(|s| s.get(m)).and_then(Value::as_f64);
            (
                score(cheap)
                    .zip(score(strong))
                    .map(|(c, s)| gain_complexity(c, s)),
                score(cheap).map(|c| (1.0 - c).clamp(0.0, 1.0) as f32),
            )
        } else {
            let (mut big, mut small) = (Vec::new(), Vec::new());
            for (model, score) in scores.into_iter().flatten() {
                let Some(score) = score.as_f64() else {
                    continue;
                };
                if strong(model)? {
                    big.push(score);
                } else {
                    small.push(score);
                }
            }
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            (
                (!big.is_empty() && !small.is_empty())
                    .then(|| gain_complexity(mean(&small), mean(&big))),
                (!small.is_empty()).then(|| (1.0 - mean(&small)).clamp(0.0, 1.0) as f32),
            )
        };
        out.push(Example {
            cheap_error,
            ..ex(
                q,
                llmrouter_intent(task),
                Some("general"),
                complexity,
                format!("llmrouter/{task}"),
            )
        });
    }
    Ok((out, pair))
}

/// RouteLLM's MMLU outcomes as labelled prompts (complexity from the outcomes).
pub fn read_mmlu_prompts(
    dir: &Path,
    contaminated: Option<&Path>,
) -> Result<Vec<Example>, EvalError> {
    Ok(read_mmlu_outcomes(dir, contaminated)?
        .into_iter()
        .map(|o| Example {
            cheap_error: Some(f32::from(u8::from(!o.weak))),
            ..ex(
                o.prompt,
                Some("open_qa"),
                Some(mmlu_domain(&o.subject)),
                Some(outcome_complexity(o.weak, o.strong)),
                format!("mmlu/{}", o.subject),
            )
        })
        .collect())
}

/// Every labelled example under `data` (the shared data directory) and `handwritten`, and the
/// models LLMRouter's complexity labels compare ([`read_llmrouter_prompts`]). Per-source caps
/// keep the big sources from drowning the small ones.
pub fn read_all(
    data: &Path,
    handwritten: &Path,
    cap_per_source: usize,
    llmrouter: LlmrouterLabel,
) -> Result<(Vec<Example>, Option<ModelPair>), EvalError> {
    let p = data.join("prompts");
    let mut out = read_gsm8k(&p.join("gsm8k-train.jsonl"))?;
    out.extend(read_math(&p.join("math-train.jsonl"))?);
    out.extend(read_pubmedqa(&p.join("pubmedqa.jsonl"))?);
    out.extend(read_headlines(&p.join("headlines-train.csv"))?);
    out.extend(read_ifeval(&p.join("ifeval.jsonl"))?);
    out.extend(read_legalbench(&p.join("legalbench"))?);
    let (llmrouter, pair) = read_llmrouter_prompts(
        &data.join("routing-outcomes/llmrouter/train.jsonl"),
        llmrouter,
    )?;
    out.extend(llmrouter);
    out.extend(read_mmlu_prompts(
        &data.join("routing-outcomes/routellm-mmlu"),
        Some(&data.join("routing-outcomes/routellm-mmlu-contaminated.jsonl")),
    )?);
    out.extend(read_gsm8k_outcomes(
        &data.join("routing-outcomes/routellm-gsm8k-half.csv"),
    )?);
    out.extend(read_handwritten(handwritten)?);
    Ok((cap(out, cap_per_source), pair))
}

/// At most `cap_per_source` examples from each source, deterministically (every k-th row).
pub fn cap(out: Vec<Example>, cap_per_source: usize) -> Vec<Example> {
    let mut by_source: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for e in out {
        by_source.entry(e.source.clone()).or_default().push(e);
    }
    let mut capped = Vec::new();
    for (_, rows) in by_source {
        if rows.len() <= cap_per_source {
            capped.extend(rows);
        } else {
            let step = rows.len() as f64 / cap_per_source as f64;
            capped.extend((0..cap_per_source).map(|i| rows[(i as f64 * step) as usize].clone()));
        }
    }
    capped
}

/// The project's hand-written examples (`training-data/*.jsonl`).
/// The optional `difficulty` of a hand-written example: a whole number from 1 to 5.
fn rating(path: &Path, line: u64, v: &Value) -> Result<Option<f32>, EvalError> {
    let Some(d) = v.get("difficulty") else {
        return Ok(None);
    };
    match d.as_u64() {
        Some(r @ 1..=5) => Ok(Some(r as f32)),
        _ => Err(EvalError::Field {
            file: path.display().to_string(),
            line,
            field: "difficulty".into(),
            message: format!("expected a whole number from 1 to 5, found {d}"),
        }),
    }
}

pub fn read_handwritten(dir: &Path) -> Result<Vec<Example>, EvalError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| file_err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        for (line, v) in read_jsonl(&f)? {
            let intent = str_field(&f, line, &v, "intent")?;
            // A writer's 1–5 rating maps like a MATH level; without one, priors for the tasks a
            // cheap model rarely gets wrong. Both are documented in the model card.
            let rated = rating(&f, line, &v)?;
            let prior = match rated {
                Some(r) => Some(0.1 + 0.2 * (r - 1.0)),
                None => match intent.as_str() {
                    "chat" => Some(0.05),
                    "brainstorming" | "rewrite" => Some(0.15),
                    "summarization" | "extraction" | "classification" => Some(0.2),
                    "creative_writing" => Some(0.25),
                    _ => None,
                },
            };
            // A conversation trains as the router reads it whole: the last user turn after its
            // context, labelled by what that turn asks. It may have no domain: then it trains
            // intent and complexity only (training-data/README.md says why).
            let (prompt, domain) = match v.get("messages").and_then(|m| m.as_array()) {
                Some(m) => {
                    let domain = match v.get("domain") {
                        None => None,
                        Some(_) => Some(str_field(&f, line, &v, "domain")?),
                    };
                    (crate::classifier::chat_text(m).text, domain)
                }
                None => (
                    str_field(&f, line, &v, "prompt")?,
                    Some(str_field(&f, line, &v, "domain")?),
                ),
            };
            let mut e = ex(
                prompt,
                Some(&intent),
                domain.as_deref(),
                prior,
                str_field(&f, line, &v, "source")?,
            );
            e.difficulty = rated;
            e.handwritten = true;
            out.push(e);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-written conversation trains as the router reads it whole, and may have no domain;
    /// a hand-written prompt still needs one.
    #[test]
    fn a_hand_written_conversation_reads_whole_and_needs_no_domain() {
        let dir = std::env::temp_dir().join(format!("sy-handwritten-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chat = r#"{"messages": [{"role": "user", "content": "solve x^2 = 4"}, {"role": "assistant", "content": "x = 2 or -2"}, {"role": "user", "content": "now as a poem"}], "intent": "creative_writing", "source": "handwritten-conversations-0"}"#;
        std::fs::write(dir.join("c.jsonl"), format!("{chat}\n")).unwrap();
        let read = read_handwritten(&dir).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].prompt, "solve x^2 = 4\nx = 2 or -2\nnow as a poem");
        assert_eq!(read[0].intent.as_deref(), Some("creative_writing"));
        assert_eq!(read[0].domain, None);
        assert!(read[0].handwritten);
        std::fs::write(
            dir.join("c.jsonl"),
            "{\"prompt\": \"hi\", \"intent\": \"chat\", \"source\": \"s\"}\n",
        )
        .unwrap();
        let err = read_handwritten(&dir).unwrap_err().to_string();
        assert!(err.contains("c.jsonl:1") && err.contains("domain"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An LLMRouter folder: `cheap` is the cheapest model, `best` the most accurate, `broken` a
    /// large model that fails the answer format of the second task.
    fn llmrouter_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-llmrouter-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("llms.json"),
            r#"{"cheap": {"size": "7B", "input_price": 0.1, "output_price": 0.1},
                "small": {"size": "8B", "input_price": 0.2, "output_price": 0.2},
                "broken": {"size": "70B", "input_price": 0.9, "output_price": 0.9},
                "best": {"size": "51B", "input_price": 0.9, "output_price": 0.9}}"#,
        )
        .unwrap();
        let row = |q: &str, task: &str, c: f64, s: f64, b: f64, k: f64| {
            format!(
                r#"{{"question": "{q}", "task_name": "{task}", "scores": {{"cheap": {c}, "small": {s}, "broken": {b}, "best": {k}}}}}"#
            )
        };
        std::fs::write(
            dir.join("train.jsonl"),
            [
                row("Add 2 and 3.", "gsm8k", 1.0, 1.0, 1.0, 1.0),
                row(
                    "Which is a mammal? A) trout B) whale",
                    "arc_challenge",
                    0.0,
                    1.0,
                    0.0,
                    1.0,
                ),
                row("Who wrote Hamlet?", "trivia_qa", 1.0, 0.0, 1.0, 0.0),
            ]
            .join("\n"),
        )
        .unwrap();
        dir.join("train.jsonl")
    }

    #[test]
    fn the_llmrouter_pair_label_is_what_escalating_from_the_cheapest_to_the_best_model_buys() {
        let train = llmrouter_dir("pair");
        let (rows, pair) = read_llmrouter_prompts(&train, LlmrouterLabel::Pair).unwrap();
        assert_eq!(pair, Some(("cheap".to_string(), "best".to_string())));
        let labels: Vec<_> = rows.iter().map(|e| (e.complexity, e.cheap_error)).collect();
        assert_eq!(
            labels,
            [
                (Some(0.1), Some(0.0)),
                (Some(gain_complexity(0.0, 1.0)), Some(1.0)),
                (Some(gain_complexity(1.0, 0.0)), Some(0.0)),
            ]
        );
        assert_eq!(rows[1].source, "llmrouter/arc_challenge");
        // The groups label averages the broken large model in: by it, escalating the second
        // prompt buys nothing, though the best model gets it right and the cheapest does not.
        let (rows, pair) = read_llmrouter_prompts(&train, LlmrouterLabel::Groups).unwrap();
        assert_eq!(pair, None);
        assert_eq!(rows[1].complexity, Some(gain_complexity(0.5, 0.5)));
        assert_eq!(rows[1].cheap_error, Some(0.5));
    }

    #[test]
    fn the_llmrouter_pair_label_needs_a_priced_model() {
        let train = llmrouter_dir("unpriced");
        std::fs::write(
            train.with_file_name("llms.json"),
            r#"{"cheap": {"size": "7B"}, "small": {"size": "8B"}, "broken": {"size": "70B"}, "best": {"size": "51B"}}"#,
        )
        .unwrap();
        let err = read_llmrouter_prompts(&train, LlmrouterLabel::Pair)
            .unwrap_err()
            .to_string();
        assert!(err.contains("llms.json") && err.contains("price"), "{err}");
        assert!(read_llmrouter_prompts(&train, LlmrouterLabel::Groups).is_ok());
    }
}
