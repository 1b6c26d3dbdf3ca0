//! `switchyard eval classify`: the router model against labelled prompts.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

use super::dataset::Record;
use super::metrics::spearman;
use crate::classifier::{ChatReading, Classifier, Scores};

/// One head's figures over the prompts that carry its label.
#[derive(Debug, Clone, Serialize)]
pub struct HeadReport {
    pub head: String,
    pub labels: Vec<String>,
    /// Prompts whose label the model knows (the others are counted in `unknown_labels`).
    pub n: usize,
    pub unknown_labels: BTreeMap<String, usize>,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_label: Vec<LabelStats>,
    /// `confusion[i][j]`: prompts labelled `labels[i]` predicted `labels[j]`.
    pub confusion: Vec<Vec<usize>>,
    /// Expected calibration error of the top label's probability, 10 equal-width bins.
    pub ece: f64,
    /// Per bin: (mean confidence, accuracy, count).
    pub reliability: Vec<(f64, f64, usize)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelStats {
    pub label: String,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub support: usize,
}

/// Rank correlation of the complexity score with a label, next to prompt length's.
#[derive(Debug, Clone, Serialize)]
pub struct Correlation {
    pub against: String,
    pub n: usize,
    pub model: Option<f64>,
    pub length: Option<f64>,
    /// Each complexity lexicon family's score alone (a diagnostic), by family.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lexicon: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    pub prompts: usize,
    pub heads: Vec<HeadReport>,
    pub complexity: Vec<Correlation>,
    /// Microseconds per prompt, end to end (tokenise, embed, heads): percentiles and the mean.
    pub latency_us: BTreeMap<String, f64>,
    /// With a domain check: its threshold and how many prompts it re-scored.
    pub domain_check: Option<CheckCount>,
    /// With an intent check: its threshold and how many prompts' intents it re-read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub intent_check: Option<CheckCount>,
}

/// A check's threshold and how many prompts it re-scored.
#[derive(Debug, Clone, Serialize)]
pub struct CheckCount {
    pub below: f64,
    pub checked: usize,
}

/// `(true label, predicted label, top probability)` triples to a head report.
pub fn head_report(head: &str, labels: &[String], rows: &[(String, String, f64)]) -> HeadReport {
    let index: BTreeMap<&str, usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.as_str(), i))
        .collect();
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    let mut unknown: BTreeMap<String, usize> = BTreeMap::new();
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); 10];
    let mut n = 0;
    for (truth, pred, conf) in rows {
        let (Some(&t), Some(&p)) = (index.get(truth.as_str()), index.get(pred.as_str())) else {
            *unknown.entry(truth.clone()).or_default() += 1;
            continue;
        };
        n += 1;
        confusion[t][p] += 1;
        let b = ((conf * 10.0) as usize).min(9);
        bins[b].0 += conf;
        bins[b].1 += f64::from(u8::from(t == p));
        bins[b].2 += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let per_label: Vec<LabelStats> = (0..k)
        .map(|i| {
            let tp = confusion[i][i] as f64;
            let support: usize = confusion[i].iter().sum();
            let predicted: usize = (0..k).map(|r| confusion[r][i]).sum();
            let precision = (predicted > 0).then(|| tp / predicted as f64);
            let recall = (support > 0).then(|| tp / support as f64);
            let f1 = match (precision, recall) {
                (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
                (Some(_), Some(_)) => Some(0.0),
                _ => None,
            };
            LabelStats {
                label: labels[i].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    // Macro-F1 over the labels present in the data (a label with no support has no recall).
    let present: Vec<f64> = per_label
        .iter()
        .filter(|l| l.support > 0)
        .map(|l| l.f1.unwrap_or(0.0))
        .collect();
    let macro_f1 = if present.is_empty() {
        0.0
    } else {
        present.iter().sum::<f64>() / present.len() as f64
    };
    let total = n.max(1) as f64;
    let ece = bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|(c, a, m)| (*m as f64 / total) * ((c - a) / *m as f64).abs())
        .sum();
    HeadReport {
        head: head.to_string(),
        labels: labels.to_vec(),
        n,
        unknown_labels: unknown,
        accuracy: correct as f64 / total,
        macro_f1,
        per_label,
        confusion,
        ece,
        reliability: bins
            .iter()
            .map(|(c, a, m)| {
                let m1 = (*m).max(1) as f64;
                (c / m1, a / m1, *m)
            })
            .collect(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Scores every record (timed, one at a time) and reports each head.
pub fn evaluate(
    model: &Classifier,
    records: &[Record],
    reading: ChatReading,
    progress: &indicatif::ProgressBar,
) -> ClassifyReport {
    let mut scored: Vec<(Scores, f64)> = Vec::with_capacity(records.len());
    for r in records {
        let chat = r.chat();
        let t0 = Instant::now();
        let s = model.classify_chat_as(&chat, reading);
        scored.push((s, t0.elapsed().as_secs_f64() * 1e6));
        progress.inc(1);
    }
    progress.finish_and_clear();
    let top = |v: &[(String, f32)]| v.iter().map(|(_, p)| f64::from(*p)).fold(0.0, f64::max);
    let intent_rows: Vec<(String, String, f64)> = records
        .iter()
        .zip(&scored)
        .filter_map(|(r, (s, _))| {
            Some((r.intent.clone()?, s.intent.clone(), top(&s.intent_scores)))
        })
        .collect();
    let domain_rows: Vec<(String, String, f64)> = records
        .iter()
        .zip(&scored)
        .filter_map(|(r, (s, _))| {
            Some((r.domain.clone()?, s.domain.clone(), top(&s.domain_scores)))
        })
        .collect();
    let mut heads = Vec::new();
    if !intent_rows.is_empty() {
        heads.push(head_report(
            "intent",
            &model.config.intent_labels,
            &intent_rows,
        ));
    }
    if !domain_rows.is_empty() {
        heads.push(head_report(
            "domain",
            &model.config.domain_labels,
            &domain_rows,
        ));
    }
    // A labelled prompt: its label, complexity, length and lexicon scores.
    struct Row<'a> {
        label: f64,
        model: f64,
        length: f64,
        lexicon: &'a [(String, f32)],
    }
    // Each prompt with a complexity label's lexicon scores, once for both labels.
    let lexicon: Vec<Vec<(String, f32)>> = records
        .iter()
        .map(|r| {
            if r.difficulty.is_some() || r.complexity.is_some() {
                model.complexity_lexicon_scores(&r.text())
            } else {
                Vec::new()
            }
        })
        .collect();
    let mut complexity = Vec::new();
    for (name, get) in [
        (
            "difficulty",
            (|r: &Record| r.difficulty) as fn(&Record) -> Option<f64>,
        ),
        ("complexity label", |r: &Record| r.complexity),
    ] {
        let rows: Vec<Row> = records
            .iter()
            .zip(&scored)
            .zip(&lexicon)
            .filter_map(|((r, (s, _)), lexicon)| {
                Some(Row {
                    label: get(r)?,
                    model: f64::from(s.complexity),
                    length: r.text().chars().count() as f64,
                    lexicon,
                })
            })
            .collect();
        if rows.len() >= 3 {
            let column = |f: &dyn Fn(&Row) -> f64| -> Vec<f64> { rows.iter().map(f).collect() };
            let y = column(&|r| r.label);
            let lexicon = model
                .config
                .complexity_lexicon
                .iter()
                .enumerate()
                .map(|(j, family)| {
                    let x = column(&|r| r.lexicon.get(j).map_or(0.0, |l| f64::from(l.1)));
                    (family.clone(), spearman(&x, &y))
                })
                .collect();
            complexity.push(Correlation {
                against: name.into(),
                n: rows.len(),
                model: spearman(&column(&|r| r.model), &y),
                length: spearman(&column(&|r| r.length), &y),
                lexicon,
            });
        }
    }
    let mut lat: Vec<f64> = scored.iter().map(|(_, t)| *t).collect();
    lat.sort_by(f64::total_cmp);
    let mut latency_us: BTreeMap<String, f64> =
        [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)]
            .into_iter()
            .map(|(k, p)| (k.to_string(), percentile(&lat, p)))
            .collect();
    latency_us.insert(
        "mean".into(),
        lat.iter().sum::<f64>() / lat.len().max(1) as f64,
    );
    ClassifyReport {
        prompts: records.len(),
        heads,
        complexity,
        latency_us,
        domain_check: model.domain_check().map(|c| CheckCount {
            below: as_written(c.below),
            checked: scored.iter().filter(|(s, _)| s.domain_checked()).count(),
        }),
        intent_check: model
            .domain_check()
            .and_then(|c| c.intent_below)
            .map(|below| CheckCount {
                below: as_written(below),
                checked: scored.iter().filter(|(s, _)| s.intent_checked()).count(),
            }),
    }
}

/// A threshold as written in the config (0.9, not the f32's 0.8999999761581421).
fn as_written(below: f32) -> f64 {
    (f64::from(below) * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_metrics_by_hand() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = |t: &str, p: &str, c: f64| (t.to_string(), p.to_string(), c);
        // a→a (0.95), a→b (0.85), b→b (0.75), c→a (0.55), plus one unknown label.
        let rows = [
            r("a", "a", 0.95),
            r("a", "b", 0.85),
            r("b", "b", 0.75),
            r("c", "a", 0.55),
            r("z", "a", 0.9),
        ];
        let h = head_report("intent", &labels, &rows);
        assert_eq!(h.n, 4);
        assert_eq!(h.unknown_labels.get("z"), Some(&1));
        assert_eq!(
            h.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]
        );
        assert!((h.accuracy - 0.5).abs() < 1e-12);
        // a: P 1/2, R 1/2, F1 1/2; b: P 1/2, R 1, F1 2/3; c: P none, R 0, F1 0 → macro 7/18.
        assert!((h.macro_f1 - 7.0 / 18.0).abs() < 1e-12, "{}", h.macro_f1);
        assert_eq!(h.per_label[2].precision, None);
        // Bins: 0.95 right, 0.85 wrong, 0.75 right, 0.55 wrong: each alone in its bin.
        // ECE = (|0.95−1| + |0.85−0| + |0.75−1| + |0.55−0|) / 4 = (0.05+0.85+0.25+0.55)/4 = 0.425.
        assert!((h.ece - 0.425).abs() < 1e-12, "{}", h.ece);
    }
}
