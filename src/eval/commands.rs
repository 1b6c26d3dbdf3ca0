//! The `switchyard eval …` commands: each prints a Markdown report and, with `--out DIR`, writes
//! `report.md`, `report.json` and SVG plots there.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::classify::{self, ClassifyReport};
use super::dataset::{self, Record};
use super::route::{self, Pair, Point, Strategy};
use super::{import, offsets, plot, EvalError};
use crate::classifier::train::RowRule;
use crate::classifier::{ChatReading, ChatText, Classifier};
use crate::config::{Config, Price};

fn werr(path: &Path, e: impl std::fmt::Display) -> EvalError {
    EvalError::Write {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn bar(len: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

/// Writes `report.md` and `report.json` into `dir`.
pub fn write_report(dir: &Path, md: &str, json: &serde_json::Value) -> Result<(), EvalError> {
    std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
    let p = dir.join("report.md");
    std::fs::write(&p, md).map_err(|e| werr(&p, e))?;
    let p = dir.join("report.json");
    let text = serde_json::to_string_pretty(json).map_err(|e| werr(&p, e))?;
    std::fs::write(&p, text).map_err(|e| werr(&p, e))
}

fn pct(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{:.1}%", v * 100.0))
}

fn num(x: Option<f64>) -> String {
    x.map_or("–".into(), |v| format!("{v:.3}"))
}

/// Which of the prompts a model held out of its training an evaluation keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Whole held-out sources and held-out rows.
    All,
    /// Whole held-out sources (subjects, tasks, files it never saw).
    Sources,
    /// Rows held out of the sources it trained on (`validation_rows` in its metrics.json).
    Rows,
}

/// The prompts a model folder held out of its training, as its `metrics.json` records them.
#[derive(Debug, Clone, Copy)]
pub struct HeldOut<'a> {
    pub dir: &'a Path,
    pub split: Split,
}

/// Keeps the records a model held out of its training (`validation_sources` and the
/// `validation_rows` rule in the model folder's `metrics.json`), so the model is judged on
/// prompts it has not seen.
pub fn keep_held_out(records: &mut Vec<Record>, held: HeldOut<'_>) -> Result<(), EvalError> {
    let path = held.dir.join("metrics.json");
    let bad = |message: String| EvalError::File {
        file: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let m: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let sources: std::collections::HashSet<&str> = m
        .get("validation_sources")
        .and_then(|v| v.as_array())
        .ok_or_else(|| bad("no \"validation_sources\" list".into()))?
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    // A model from before the row split held out no rows.
    let rows = match m.get("validation_rows") {
        Some(v) => Some((
            serde_json::from_value::<RowRule>(v.clone())
                .map_err(|e| bad(format!("validation_rows: {e}")))?,
            // The split's own seed when training set one (`--split-seed`), else the seed.
            m.get("split_seed")
                .or_else(|| m.get("seed"))
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(|| bad("no \"seed\"".into()))?,
        )),
        None => None,
    };
    records.retain(|r| {
        let Some(source) = r.source.as_deref() else {
            return false;
        };
        let whole = sources.contains(source);
        let row = || {
            !whole
                && rows
                    .as_ref()
                    .is_some_and(|(rule, seed)| rule.holds_out(source, &r.text(), *seed))
        };
        match held.split {
            Split::All => whole || row(),
            Split::Sources => whole,
            Split::Rows => row(),
        }
    });
    Ok(())
}

/// The records of a dataset file, only those `held_out` names if given.
fn read_records(data: &Path, held_out: Option<HeldOut<'_>>) -> Result<Vec<Record>, EvalError> {
    let mut records = dataset::read(data)?;
    if let Some(held) = held_out {
        keep_held_out(&mut records, held)?;
    }
    Ok(records)
}

/// The same, less decision-log records written without their prompt (nothing to classify).
fn records_with_text(data: &Path, held_out: Option<HeldOut<'_>>) -> Result<Vec<Record>, EvalError> {
    let mut records = read_records(data, held_out)?;
    records.retain(|r| !r.text().trim().is_empty());
    Ok(records)
}

/// How a report names its data: the file, and what the model held out of it.
fn data_label(data: &Path, held_out: Option<HeldOut<'_>>) -> String {
    let Some(h) = held_out else {
        return data.display().to_string();
    };
    let what = match h.split {
        Split::All => "the sources and rows",
        Split::Sources => "the sources",
        Split::Rows => "the rows",
    };
    format!("{}, {what} {} held out", data.display(), h.dir.display())
}

// ---------------------------------------------------------------------------------------------
// import

pub fn import_cmd(
    source: &str,
    input: &Path,
    out: &Path,
    exclude: &[PathBuf],
) -> Result<String, EvalError> {
    let mut records = import::import(source, input)?;
    let read = records.len();
    let excluded = import::prompt_set(exclude)?;
    let (overlap, dup) = dataset::dedupe(&mut records, &excluded);
    dataset::write(out, &records)?;
    Ok(format!(
        "{source}: read {read} prompts from {}; dropped {overlap} also in --exclude files and {dup} duplicates (normalised text); wrote {} to {}\n",
        input.display(),
        records.len(),
        out.display()
    ))
}

// ---------------------------------------------------------------------------------------------
// classify

pub fn classify_report_md(data: &str, model: &str, r: &ClassifyReport) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# eval classify\n\nData: `{data}` ({} prompts). Model: {model}.\n",
        r.prompts
    );
    for h in &r.heads {
        let _ = writeln!(
            md,
            "## {} head\n\n{} labelled prompts: accuracy **{:.1}%**, macro-F1 {:.3}, expected calibration error {:.3}.",
            h.head,
            h.n,
            h.accuracy * 100.0,
            h.macro_f1,
            h.ece
        );
        if !h.unknown_labels.is_empty() {
            let list: Vec<String> = h
                .unknown_labels
                .iter()
                .map(|(l, n)| format!("{l} ({n})"))
                .collect();
            let _ = writeln!(
                md,
                "Labels the model does not have, left out: {}.",
                list.join(", ")
            );
        }
        let _ = writeln!(
            md,
            "\n| label | support | precision | recall | F1 |\n|---|---:|---:|---:|---:|"
        );
        for l in h
            .per_label
            .iter()
            .filter(|l| l.support > 0 || l.precision.is_some())
        {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                l.label,
                l.support,
                pct(l.precision),
                pct(l.recall),
                num(l.f1)
            );
        }
        let _ = writeln!(
            md,
            "\nConfusion matrix (rows: true label; columns: predicted):\n"
        );
        let present: Vec<usize> = (0..h.labels.len())
            .filter(|&i| {
                h.confusion[i].iter().sum::<usize>() > 0 || h.confusion.iter().any(|row| row[i] > 0)
            })
            .collect();
        let _ = write!(md, "| true \\ predicted |");
        for &j in &present {
            let _ = write!(md, " {} |", h.labels[j]);
        }
        let _ = write!(md, "\n|---|");
        for _ in &present {
            let _ = write!(md, "---:|");
        }
        md.push('\n');
        for &i in present
            .iter()
            .filter(|&&i| h.confusion[i].iter().sum::<usize>() > 0)
        {
            let _ = write!(md, "| {} |", h.labels[i]);
            for &j in &present {
                let _ = write!(md, " {} |", h.confusion[i][j]);
            }
            md.push('\n');
        }
        md.push('\n');
    }
    if !r.complexity.is_empty() {
        // The complexity lexicon's families, when the model has them: diagnostic columns.
        let families: Vec<&String> = r.complexity[0].lexicon.keys().collect();
        let _ = write!(md, "## Complexity\n\nSpearman rank correlation with each label present, next to prompt length's");
        if families.is_empty() {
            md.push_str(".\n\n");
        } else {
            md.push_str(" and, as a diagnostic, each complexity lexicon family's score alone (one of the inputs the complexity score weighs).\n\n");
        }
        md.push_str("| against | prompts | model | prompt length |");
        for f in &families {
            let _ = write!(md, " {LEXICON_PREFIX}{f} |");
        }
        md.push_str(&format!(
            "\n|---|---:|---:|---:|{}\n",
            "---:|".repeat(families.len())
        ));
        for c in &r.complexity {
            let _ = write!(
                md,
                "| {} | {} | {} | {} |",
                c.against,
                c.n,
                num(c.model),
                num(c.length)
            );
            for f in &families {
                let _ = write!(md, " {} |", num(c.lexicon.get(*f).copied().flatten()));
            }
            md.push('\n');
        }
        md.push('\n');
    }
    let l = &r.latency_us;
    let _ = writeln!(
        md,
        "## Latency\n\nPer prompt, end to end (tokenise, embed, heads), one at a time on one thread: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs, mean {:.1} µs.",
        l.get("p50").copied().unwrap_or(f64::NAN),
        l.get("p90").copied().unwrap_or(f64::NAN),
        l.get("p99").copied().unwrap_or(f64::NAN),
        l.get("max").copied().unwrap_or(f64::NAN),
        l.get("mean").copied().unwrap_or(f64::NAN)
    );
    let checks = [
        (
            &r.domain_check,
            "Domain check",
            "re-scored the domain",
            "probability of `general` was below",
            "",
        ),
        (
            &r.intent_check,
            "Intent check",
            "re-read the intent",
            "intent's probability was below",
            "; the intent reported is the two models' pooled",
        ),
    ];
    for (check, title, did, whose, then) in checks {
        if let Some(c) = check {
            let _ = writeln!(
                md,
                "\n## {title}\n\nThe second model {did} of {} of {} prompts ({:.1}%): those whose {whose} {}{then}. The latency above includes it.",
                c.checked,
                r.prompts,
                100.0 * c.checked as f64 / r.prompts.max(1) as f64,
                c.below
            );
        }
    }
    md
}

pub fn classify_cmd(
    data: &Path,
    held_out: Option<HeldOut<'_>>,
    model: &Classifier,
    model_name: &str,
    reading: ChatReading,
    out: Option<&Path>,
) -> Result<String, EvalError> {
    let records = records_with_text(data, held_out)?;
    let report = classify::evaluate(model, &records, reading, &bar(records.len(), "classifying"));
    let what = data_label(data, held_out);
    let md = classify_report_md(&what, model_name, &report);
    if let Some(dir) = out {
        write_report(dir, &md, &json!(report))?;
        for h in &report.heads {
            plot::confusion(
                &dir.join(format!("confusion_{}.svg", h.head)),
                &format!("{} confusion", h.head),
                &h.labels,
                &h.confusion,
            )?;
        }
        let heads: Vec<(String, plot::Bins)> = report
            .heads
            .iter()
            .map(|h| (h.head.clone(), h.reliability.clone()))
            .collect();
        plot::reliability(&dir.join("calibration.svg"), "calibration", &heads)?;
    }
    Ok(md)
}

// ---------------------------------------------------------------------------------------------
// domain-offsets

/// `eval domain-offsets`: the domain offsets fitted to the labelled prompts of `data`, against
/// none and the model's own, with a cross-validated count and the config line.
pub fn domain_offsets_cmd(
    data: &Path,
    held_out: Option<HeldOut<'_>>,
    model: Classifier,
    model_name: &str,
    settings: offsets::FitSettings,
    folds: u64,
    out: Option<&Path>,
) -> Result<String, EvalError> {
    let records = records_with_text(data, held_out)?;
    let chats: Vec<(ChatText, String)> = records
        .iter()
        .filter_map(|r| r.domain.clone().map(|d| (r.chat(), d)))
        .collect();
    let pb = bar(chats.len(), "scoring domains");
    let report = offsets::evaluate(model, &chats, settings, folds, &pb).map_err(|message| {
        EvalError::File {
            file: model_name.to_string(),
            message,
        }
    })?;
    let md = offsets_report_md(&data_label(data, held_out), model_name, &report);
    if let Some(dir) = out {
        write_report(dir, &md, &json!(report))?;
    }
    Ok(md)
}

fn offsets_report_md(what: &str, model_name: &str, r: &offsets::OffsetsReport) -> String {
    let general = r
        .labels
        .iter()
        .position(|l| l == crate::classifier::GENERAL)
        .unwrap_or(0);
    let domains: Vec<usize> = (0..r.labels.len()).filter(|&i| i != general).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Domain offsets\n");
    let _ = writeln!(
        md,
        "Data: `{what}` ({} prompts with a domain label the model has{}). Model: {model_name}, \
         scored without offsets; each row adds its offsets to the domain log-probabilities, as \
         `routing.domain_offsets` does.\n",
        r.prompts,
        if r.unknown_labels.is_empty() {
            String::new()
        } else {
            let skipped: Vec<String> = r
                .unknown_labels
                .iter()
                .map(|(l, n)| format!("{n} {l}"))
                .collect();
            format!("; skipped, labels it has not: {}", skipped.join(", "))
        }
    );
    let _ = writeln!(
        md,
        "Fitted by coordinate search over −4 to 4 in steps of 0.25 per domain, maximising the \
         domain prompts found minus {} × the general prompts called a domain{}; of equal fits, \
         the smallest offsets.\n",
        r.false_alarm_cost,
        if r.min_confidence > 0.0 {
            format!(
                " (a domain is called only at a probability of {} or more, as \
                 `routing.domain_min_confidence` routes)",
                r.min_confidence
            )
        } else {
            String::new()
        }
    );
    let header: Vec<String> = domains
        .iter()
        .map(|&d| format!("{} found", r.labels[d]))
        .collect();
    let _ = writeln!(
        md,
        "| offsets | {} | domain prompts found | general called a domain | accuracy |",
        header.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---:|---:|---:|", "---:|".repeat(domains.len()));
    for row in &r.rows {
        let c = &row.counts;
        let cells: Vec<String> = domains
            .iter()
            .map(|&d| format!("{}/{}", c.right[d], c.support[d]))
            .collect();
        let found_of: usize = domains.iter().map(|&d| c.support[d]).sum();
        let total: usize = c.support.iter().sum();
        let right: usize = c.right.iter().sum();
        let name = match &row.offsets {
            Some(o) => format!("{} ({})", row.name, crate::classifier::offsets_text(o)),
            None => row.name.clone(),
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {}/{found_of} | {}/{} | {} |",
            cells.join(" | "),
            c.found(general),
            c.false_alarms,
            c.support[general],
            pct((total > 0).then(|| right as f64 / total as f64))
        );
    }
    let fitted = r.rows.iter().find(|row| row.name.starts_with("fitted"));
    if let Some(o) = fitted.and_then(|row| row.offsets.as_ref()) {
        let edge: Vec<&str> = o
            .iter()
            .filter(|(_, v)| v.abs() >= offsets::GRID_EDGE)
            .map(|(l, _)| l.as_str())
            .collect();
        if !edge.is_empty() {
            let _ = writeln!(
                md,
                "\nThe fit of {} sits at the edge of the grid (±{}): these prompts would \
                 move it further still, and the model reads their domains unlike their labels.",
                edge.join(", "),
                offsets::GRID_EDGE
            );
        }
    }
    let _ = writeln!(
        md,
        "\nThe last row is the honest estimate for new prompts like these: each of {} parts \
         (by a hash of the prompt) counted with offsets fitted on the others. For the router \
         config:\n\n```toml\n[routing]\n{}\n```",
        r.folds, r.toml
    );
    md
}

// ---------------------------------------------------------------------------------------------
// route

/// Which recorded models stand for the cheap and the strong tier, and their prices.
#[derive(Debug, Clone)]
pub struct TierModels {
    pub cheap: String,
    pub strong: String,
    pub cheap_price: Option<Price>,
    pub strong_price: Option<Price>,
    pub threshold: f64,
    /// The config's `routing.complexity_pair`, if it names one.
    pub complexity_pair: Option<String>,
}

/// From flags, or else the router config: the default tier's and the strong tier's first
/// targets (their `model` and `price`), the complexity threshold, and the config's complexity
/// pair.
pub fn tier_models(
    config: Option<&Path>,
    cheap: Option<String>,
    strong: Option<String>,
    cheap_price: Option<Price>,
    strong_price: Option<Price>,
    threshold: Option<f64>,
) -> Result<TierModels, EvalError> {
    let cfg = match config {
        Some(p) => Some(Config::load_offline(p).map_err(|e| {
            let file = p.display().to_string();
            // A file that cannot be read is already named; a bad key is named inside it.
            let message = if e.path == file {
                e.message
            } else {
                e.to_string()
            };
            EvalError::File { file, message }
        })?),
        None => None,
    };
    let first = |tier: Option<&String>| {
        cfg.as_ref()
            .and_then(|c| c.tiers.get(tier?))
            .and_then(|t| t.targets.first())
            .map(|t| (t.model.clone(), t.price))
    };
    let from_cfg_cheap = first(cfg.as_ref().map(|c| &c.default_tier));
    let from_cfg_strong = first(cfg.as_ref().and_then(|c| c.routing.strong_tier.as_ref()));
    let missing = |what: &str| EvalError::File {
        file: config.map_or("(flags)".into(), |p| p.display().to_string()),
        message: format!("no {what} model: pass --{what} or a --config whose tiers name it"),
    };
    Ok(TierModels {
        cheap: cheap
            .or_else(|| from_cfg_cheap.as_ref().map(|c| c.0.clone()))
            .ok_or_else(|| missing("cheap"))?,
        strong: strong
            .or_else(|| from_cfg_strong.as_ref().map(|c| c.0.clone()))
            .ok_or_else(|| missing("strong"))?,
        cheap_price: cheap_price.or(from_cfg_cheap.and_then(|c| c.1)),
        strong_price: strong_price.or(from_cfg_strong.and_then(|c| c.1)),
        threshold: threshold
            .or(cfg.as_ref().map(|c| c.routing.complexity_threshold))
            .unwrap_or(crate::config::DEFAULT_COMPLEXITY_THRESHOLD),
        complexity_pair: cfg.and_then(|c| c.routing.complexity_pair),
    })
}

/// How reports name a complexity lexicon family's score alone.
const LEXICON_PREFIX: &str = "complexity lexicon: ";

/// Everything `eval route` computes, for the report and for `compare`.
pub struct RouteRun {
    pub pairs: Vec<Pair>,
    pub skipped: usize,
    pub costs_known: bool,
    pub router_scores: Vec<f64>,
    pub strategies: Vec<Strategy>,
    pub points: Vec<Point>,
    pub multi: Option<route::MultiModel>,
}

/// Scores the prompts with the model and computes the router's curve and every baseline.
pub fn route_run(records: &[Record], tm: &TierModels, model: &Classifier, seeds: u64) -> RouteRun {
    let (pairs, skipped, costs_known) = route::pairs(
        records,
        &tm.cheap,
        &tm.strong,
        tm.cheap_price,
        tm.strong_price,
    );
    let pb = bar(pairs.len(), "scoring");
    let router_scores: Vec<f64> = pairs
        .iter()
        .map(|p| {
            pb.inc(1);
            f64::from(model.classify_chat(&p.chat).complexity)
        })
        .collect();
    pb.finish_and_clear();
    let length: Vec<f64> = pairs
        .iter()
        .map(|p| p.chat.text.chars().count() as f64)
        .collect();
    let mut points = route::fixed_points(&pairs);
    points.push(route::at_threshold(
        &format!("router at threshold {:.2}", tm.threshold),
        &router_scores,
        tm.threshold,
        &pairs,
    ));
    let mut strategies = vec![
        route::strategy("router (complexity)", &router_scores, &pairs),
        route::strategy("prompt length", &length, &pairs),
        route::random(&pairs, seeds),
    ];
    // Diagnostics: each complexity lexicon family's score alone, as the complexity head reads it.
    let families = &model.config.complexity_lexicon;
    let lexicon: Vec<Vec<(String, f32)>> = if families.is_empty() {
        Vec::new()
    } else {
        pairs
            .iter()
            .map(|p| model.complexity_lexicon_scores(&p.chat.text))
            .collect()
    };
    for (j, family) in families.iter().enumerate() {
        let scores: Vec<f64> = lexicon.iter().map(|l| f64::from(l[j].1)).collect();
        strategies.push(route::strategy(
            &format!("{LEXICON_PREFIX}{family} (diagnostic)"),
            &scores,
            &pairs,
        ));
    }
    RouteRun {
        strategies,
        multi: route::multi_model(records),
        pairs,
        skipped,
        costs_known,
        router_scores,
        points,
    }
}

fn cost_label(costs_known: bool) -> &'static str {
    if costs_known {
        "$ / 1k prompts"
    } else {
        "strong share"
    }
}

fn cost_fmt(costs_known: bool, c: f64) -> String {
    if costs_known {
        format!("{:.4}", c * 1000.0)
    } else {
        format!("{:.1}%", c * 100.0)
    }
}

pub fn route_report_md(data: &str, model: &str, tm: &TierModels, run: &RouteRun) -> String {
    let mut md = String::new();
    let price = |p: Option<Price>| {
        p.map_or("recorded cost or none".into(), |p| {
            format!("${} / M in, ${} / M out", p.input, p.output)
        })
    };
    let _ = writeln!(
        md,
        "# eval route\n\nData: `{data}`: {} prompts with a quality for both models ({} skipped). Model: {model}.\n\n- cheap tier: `{}` ({})\n- strong tier: `{}` ({})\n- cost axis: {}\n",
        run.pairs.len(),
        run.skipped,
        tm.cheap,
        price(tm.cheap_price),
        tm.strong,
        price(tm.strong_price),
        if run.costs_known { "cost per prompt (recorded, or tokens at the prices above)" } else { "share of strong calls (costs unknown)" }
    );
    let _ = writeln!(md, "## Routing curves\n\nThe router sends the prompts with the highest complexity to the strong model first; the baselines order them by prompt length and at random. Diagnostic rows, when the model has a complexity lexicon, order them by one lexicon family's score alone, one of the inputs the complexity score weighs. APGR: area under the performance-gap-recovered curve; CPT(x): strong share needed to recover x of the gap; AIQ: area under the cost/quality convex hull over the cost range.\n");
    let _ = writeln!(md, "| strategy | APGR | CPT(50%) | CPT(80%) | strong share at 95% of strong quality | cost saved there | AIQ |\n|---|---:|---:|---:|---:|---:|---:|");
    for s in &run.strategies {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            s.name,
            num(s.apgr),
            pct(s.cpt50),
            pct(s.cpt80),
            pct(s.share_at_95),
            pct(s.saving_at_95),
            num(s.aiq)
        );
    }
    let _ = writeln!(
        md,
        "\n## Fixed points\n\n| strategy | quality | strong share | {} |\n|---|---:|---:|---:|",
        cost_label(run.costs_known)
    );
    for p in &run.points {
        let _ = writeln!(
            md,
            "| {} | {:.1}% | {:.1}% | {} |",
            p.name,
            p.quality * 100.0,
            p.strong_share * 100.0,
            cost_fmt(run.costs_known, p.cost)
        );
    }
    if let Some(m) = &run.multi {
        let router = &run.strategies[0];
        let _ = writeln!(md, "\n## Every recorded model\n\n{} prompts with every model's outcome. The router (cheap `{}`, strong `{}`) at each model's cost: the best quality its curve reaches without spending more.\n\n| model | quality | $ / 1k prompts | router at that cost |\n|---|---:|---:|---:|", m.prompts, tm.cheap, tm.strong);
        let mut models = m.models.clone();
        models.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        for p in models.iter().chain(std::iter::once(&m.oracle)) {
            let at = if run.costs_known {
                route::quality_at_cost(router, p.cost)
            } else {
                None
            };
            let _ = writeln!(
                md,
                "| {} | {:.1}% | {:.4} | {} |",
                p.name,
                p.quality * 100.0,
                p.cost * 1000.0,
                at.map_or("–".into(), |q| format!("{:.1}%", q * 100.0))
            );
        }
    }
    md
}

pub fn route_plot(dir: &Path, run: &RouteRun) -> Result<(), EvalError> {
    let lines: Vec<(String, Vec<(f64, f64)>)> = run
        .strategies
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.cost
                    .iter()
                    .map(|c| if run.costs_known { c * 1000.0 } else { *c })
                    .zip(s.quality.iter().copied())
                    .collect(),
            )
        })
        .collect();
    let scale = |c: f64| if run.costs_known { c * 1000.0 } else { c };
    let mut points: Vec<(String, (f64, f64))> = run
        .points
        .iter()
        .map(|p| (p.name.clone(), (scale(p.cost), p.quality)))
        .collect();
    if let Some(m) = &run.multi {
        if run.costs_known {
            points.extend(
                m.models
                    .iter()
                    .map(|p| (p.name.clone(), (p.cost * 1000.0, p.quality))),
            );
        }
    }
    plot::curves(
        &dir.join("cost_quality.svg"),
        "cost vs quality",
        cost_label(run.costs_known),
        "mean quality",
        &lines,
        &points,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn route_cmd(
    data: &Path,
    held_out: Option<HeldOut<'_>>,
    tm: &TierModels,
    model: &Classifier,
    model_name: &str,
    seeds: u64,
    out: Option<&Path>,
) -> Result<String, EvalError> {
    let records = read_records(data, held_out)?;
    let run = route_run(&records, tm, model, seeds);
    if run.pairs.is_empty() {
        return Err(EvalError::File {
            file: data.display().to_string(),
            message: format!(
                "no prompt has a quality for both {:?} and {:?}",
                tm.cheap, tm.strong
            ),
        });
    }
    let what = data_label(data, held_out);
    let md = route_report_md(&what, model_name, tm, &run);
    if let Some(dir) = out {
        let j = json!({
            "data": data.display().to_string(), "model": model_name,
            "cheap": tm.cheap, "strong": tm.strong, "threshold": tm.threshold,
            "prompts": run.pairs.len(), "skipped": run.skipped, "costs_known": run.costs_known,
            "strategies": run.strategies, "points": run.points, "multi_model": run.multi,
            "curves": run.strategies.iter().map(|s| {
                // 101 points (strong share 0%, 1%, …, 100%) describe the curve; every prompt's would be a row-by-row copy.
                let n = s.quality.len().saturating_sub(1);
                let at: Vec<usize> = (0..=100).map(|p| p * n / 100).collect();
                json!({"name": s.name, "strong_share": at.iter().map(|&k| k as f64 / n.max(1) as f64).collect::<Vec<_>>(),
                       "quality": at.iter().map(|&k| s.quality[k]).collect::<Vec<_>>(),
                       "cost": at.iter().map(|&k| s.cost[k]).collect::<Vec<_>>()})
            }).collect::<Vec<_>>(),
        });
        write_report(dir, &md, &j)?;
        route_plot(dir, &run)?;
    }
    Ok(md)
}

// ---------------------------------------------------------------------------------------------
// compare

/// The mean, and a 95% percentile interval, of `stat` over `resamples` bootstrap resamples of
/// the prompt indices (the same resample for both sides, so the difference is paired).
pub fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    stat: &dyn Fn(&[usize]) -> Option<f64>,
) -> Option<(f64, f64, f64)> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut vals = Vec::with_capacity(resamples);
    let mut idx = vec![0usize; n];
    for _ in 0..resamples {
        for v in idx.iter_mut() {
            *v = rng.usize(..n.max(1));
        }
        if let Some(x) = stat(&idx) {
            vals.push(x);
        }
    }
    if vals.is_empty() {
        return None;
    }
    vals.sort_by(f64::total_cmp);
    let at = |p: f64| vals[((p * (vals.len() - 1) as f64).round() as usize).min(vals.len() - 1)];
    Some((
        vals.iter().sum::<f64>() / vals.len() as f64,
        at(0.025),
        at(0.975),
    ))
}

/// One figure for both sides, with the difference and its bootstrap interval.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Diff {
    pub metric: String,
    pub prompts: usize,
    pub a: Option<f64>,
    pub b: Option<f64>,
    pub diff: Option<f64>,
    pub ci95: Option<(f64, f64)>,
}

#[allow(clippy::too_many_arguments)]
pub fn compare_cmd(
    data: &Path,
    held_out: Option<HeldOut<'_>>,
    a: (&str, &Classifier),
    b: (&str, &Classifier),
    tm: Option<&TierModels>,
    resamples: usize,
    seed: u64,
    out: Option<&Path>,
) -> Result<String, EvalError> {
    let records = records_with_text(data, held_out)?;
    let chats: Vec<ChatText> = records.iter().map(Record::chat).collect();
    let pb = bar(chats.len() * 2, "scoring with both models");
    // Scores, and each prompt's classification time in microseconds, sorted.
    let score = |m: &Classifier| -> (Vec<crate::classifier::Scores>, Vec<f64>) {
        let mut times = Vec::with_capacity(chats.len());
        let scores = chats
            .iter()
            .map(|t| {
                pb.inc(1);
                let t0 = std::time::Instant::now();
                let s = m.classify_chat(t);
                times.push(t0.elapsed().as_secs_f64() * 1e6);
                s
            })
            .collect();
        times.sort_by(f64::total_cmp);
        (scores, times)
    };
    let ((sa, ta), (sb, tb)) = (score(a.1), score(b.1));
    pb.finish_and_clear();
    let p50 = |t: &[f64]| t.get(t.len() / 2).copied();
    let mut diffs = Vec::new();
    for (head, truth, pick) in [
        (
            "intent accuracy",
            (|r: &Record| r.intent.clone()) as fn(&Record) -> Option<String>,
            (|s: &crate::classifier::Scores| s.intent.clone())
                as fn(&crate::classifier::Scores) -> String,
        ),
        (
            "domain accuracy",
            |r: &Record| r.domain.clone(),
            |s: &crate::classifier::Scores| s.domain.clone(),
        ),
    ] {
        let rows: Vec<(f64, f64)> = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let t = truth(r)?;
                Some((
                    f64::from(u8::from(pick(&sa[i]) == t)),
                    f64::from(u8::from(pick(&sb[i]) == t)),
                ))
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let mean = |f: &dyn Fn(&(f64, f64)) -> f64, idx: &[usize]| {
            idx.iter().map(|&i| f(&rows[i])).sum::<f64>() / idx.len() as f64
        };
        let all: Vec<usize> = (0..rows.len()).collect();
        let (ma, mb) = (mean(&|r| r.0, &all), mean(&|r| r.1, &all));
        let ci = bootstrap(rows.len(), resamples, seed, &|idx| {
            Some(mean(&|r| r.1, idx) - mean(&|r| r.0, idx))
        });
        diffs.push(Diff {
            metric: head.into(),
            prompts: rows.len(),
            a: Some(ma),
            b: Some(mb),
            diff: Some(mb - ma),
            ci95: ci.map(|c| (c.1, c.2)),
        });
    }
    // Complexity against human difficulty ratings, where the data has them.
    let rated: Vec<(f64, f64, f64)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let d = r.difficulty?;
            Some((d, f64::from(sa[i].complexity), f64::from(sb[i].complexity)))
        })
        .collect();
    if rated.len() >= 3 {
        // Side b: whether to rank model B's scores rather than model A's.
        let rho = |b: bool, idx: &[usize]| {
            let d: Vec<f64> = idx.iter().map(|&i| rated[i].0).collect();
            let c: Vec<f64> = idx
                .iter()
                .map(|&i| if b { rated[i].2 } else { rated[i].1 })
                .collect();
            super::metrics::spearman(&c, &d)
        };
        let all: Vec<usize> = (0..rated.len()).collect();
        let (ra, rb) = (rho(false, &all), rho(true, &all));
        let ci = bootstrap(rated.len(), resamples, seed, &|idx| {
            Some(rho(true, idx)? - rho(false, idx)?)
        });
        diffs.push(Diff {
            metric: "complexity Spearman with difficulty".into(),
            prompts: rated.len(),
            a: ra,
            b: rb,
            diff: ra.zip(rb).map(|(x, y)| y - x),
            ci95: ci.map(|c| (c.1, c.2)),
        });
    }
    if let Some(tm) = tm {
        let (pairs, _, _) = route::pairs(
            &records,
            &tm.cheap,
            &tm.strong,
            tm.cheap_price,
            tm.strong_price,
        );
        let with_outcomes: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                let q = |m: &str| r.outcomes.get(m).and_then(|o| o.quality).is_some();
                q(&tm.cheap) && q(&tm.strong)
            })
            .map(|(i, _)| i)
            .collect();
        if !pairs.is_empty() {
            let ca: Vec<f64> = with_outcomes
                .iter()
                .map(|&i| f64::from(sa[i].complexity))
                .collect();
            let cb: Vec<f64> = with_outcomes
                .iter()
                .map(|&i| f64::from(sb[i].complexity))
                .collect();
            let apgr_of = |scores: &[f64], idx: &[usize]| {
                let s: Vec<f64> = idx.iter().map(|&i| scores[i]).collect();
                let p: Vec<Pair> = idx.iter().map(|&i| pairs[i].clone()).collect();
                route::strategy("", &s, &p).apgr
            };
            let all: Vec<usize> = (0..pairs.len()).collect();
            let (aa, ab) = (apgr_of(&ca, &all), apgr_of(&cb, &all));
            let pb = bar(resamples, "bootstrap");
            let ci = bootstrap(pairs.len(), resamples, seed, &|idx| {
                pb.inc(1);
                Some(apgr_of(&cb, idx)? - apgr_of(&ca, idx)?)
            });
            pb.finish_and_clear();
            diffs.push(Diff {
                metric: format!("APGR ({} → {})", tm.cheap, tm.strong),
                prompts: pairs.len(),
                a: aa,
                b: ab,
                diff: aa.zip(ab).map(|(x, y)| y - x),
                ci95: ci.map(|c| (c.1, c.2)),
            });
        }
    }
    diffs.push(Diff {
        metric: "classify latency p50, µs (no interval)".into(),
        prompts: chats.len(),
        a: p50(&ta),
        b: p50(&tb),
        diff: p50(&ta).zip(p50(&tb)).map(|(x, y)| y - x),
        ci95: None,
    });
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# eval compare\n\nData: `{}` ({} prompts). A: {}. B: {}. Differences are B − A, with a 95% paired bootstrap interval over prompts ({resamples} resamples, seed {seed}); an interval that contains 0 is no evidence of a difference.\n\n| metric | prompts | A | B | B − A | 95% interval |\n|---|---:|---:|---:|---:|---|",
        data_label(data, held_out),
        records.len(),
        a.0,
        b.0
    );
    for d in &diffs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            d.metric,
            d.prompts,
            num(d.a),
            num(d.b),
            d.diff.map_or("–".into(), |x| format!("{x:+.3}")),
            d.ci95
                .map_or("–".into(), |(lo, hi)| format!("[{lo:+.3}, {hi:+.3}]"))
        );
    }
    if let Some(dir) = out {
        write_report(
            dir,
            &md,
            &json!({"data": data.display().to_string(), "a": a.0, "b": b.0, "resamples": resamples, "seed": seed, "metrics": diffs}),
        )?;
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_keeps_the_sources_and_the_rows_a_model_left_out() {
        let dir = std::env::temp_dir().join(format!("switchyard-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rule = RowRule::new();
        let seed = 7;
        let records: Vec<Record> = (0..200)
            .flat_map(|i| {
                ["mmlu/anatomy", "mmlu/virology", "legalbench/x"].map(|s| Record {
                    source: Some(s.into()),
                    prompt: Some(format!("Question {i}?")),
                    ..Default::default()
                })
            })
            .collect();
        let metrics = |rows: bool| {
            let mut m = json!({"validation_sources": ["mmlu/virology"], "seed": seed});
            if rows {
                m["validation_rows"] = serde_json::to_value(&rule).unwrap();
            }
            std::fs::write(dir.join("metrics.json"), m.to_string()).unwrap();
        };
        let kept = |split| {
            let mut r = records.clone();
            keep_held_out(&mut r, HeldOut { dir: &dir, split }).unwrap();
            r
        };
        metrics(true);
        let sources = kept(Split::Sources);
        assert_eq!(sources.len(), 200);
        assert!(sources
            .iter()
            .all(|r| r.source.as_deref() == Some("mmlu/virology")));
        let rows = kept(Split::Rows);
        assert!((5..=40).contains(&rows.len()), "{}", rows.len());
        assert!(rows.iter().all(|r| {
            r.source.as_deref() == Some("mmlu/anatomy")
                && rule.holds_out("mmlu/anatomy", &r.text(), seed)
        }));
        assert_eq!(kept(Split::All).len(), sources.len() + rows.len());
        // A model trained with --split-seed held out the rows of that seed, not of its own.
        let mut m = json!({"validation_sources": ["mmlu/virology"], "seed": seed + 1});
        m["validation_rows"] = serde_json::to_value(&rule).unwrap();
        std::fs::write(dir.join("metrics.json"), m.to_string()).unwrap();
        let other = kept(Split::Rows);
        assert_ne!(other, rows, "seed {} holds out other rows", seed + 1);
        m["split_seed"] = json!(seed);
        std::fs::write(dir.join("metrics.json"), m.to_string()).unwrap();
        assert_eq!(kept(Split::Rows), rows);
        // A model from before the row split held out whole sources only.
        metrics(false);
        assert!(kept(Split::Rows).is_empty());
        assert_eq!(kept(Split::All).len(), 200);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bootstrap_of_a_constant_is_that_constant() {
        let (m, lo, hi) = bootstrap(10, 100, 1, &|_| Some(0.25)).unwrap();
        assert_eq!((m, lo, hi), (0.25, 0.25, 0.25));
        // The mean of 0/1 values: the interval contains the sample mean.
        let v = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0];
        let (m, lo, hi) = bootstrap(v.len(), 500, 3, &|idx| {
            Some(idx.iter().map(|&i| v[i]).sum::<f64>() / idx.len() as f64)
        })
        .unwrap();
        assert!(
            lo <= 0.625 && 0.625 <= hi && (m - 0.625).abs() < 0.05,
            "{m} {lo} {hi}"
        );
    }
}

#[cfg(test)]
mod tier_tests {
    use super::*;

    #[test]
    fn tiers_map_to_models_from_the_config_or_flags() {
        let dir = std::env::temp_dir().join(format!("switchyard-tiers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("r.toml");
        std::fs::write(
            &cfg,
            r#"
[routing]
default_tier = "cheap"
strong_tier = "big"
complexity_threshold = 0.4
[providers.p]
base_url = "http://127.0.0.1:1/v1"
api_key_env = "SOME_KEY_NOBODY_SET"
[tiers.cheap]
targets = [{ provider = "p", model = "small-a", price = { input = 0.5, output = 1.5 } }, { provider = "p", model = "small-b" }]
[tiers.big]
targets = [{ provider = "p", model = "large" }]
"#,
        )
        .unwrap();
        let tm = tier_models(Some(&cfg), None, None, None, None, None).unwrap();
        assert_eq!(
            (tm.cheap.as_str(), tm.strong.as_str(), tm.threshold),
            ("small-a", "large", 0.4)
        );
        assert_eq!(
            tm.cheap_price.map(|p| (p.input, p.output)),
            Some((0.5, 1.5))
        );
        assert!(tm.strong_price.is_none());
        // Flags win over the config.
        let tm = tier_models(
            Some(&cfg),
            None,
            Some("other".into()),
            None,
            None,
            Some(0.7),
        )
        .unwrap();
        assert_eq!((tm.strong.as_str(), tm.threshold), ("other", 0.7));
        let e = tier_models(None, Some("a".into()), None, None, None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--strong"), "{e}");
    }
}
