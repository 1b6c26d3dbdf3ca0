//! `switchyard eval domain-offsets`: the domain offsets that suit a labelled sample of a
//! deployment's own prompts, fitted to them and cross-validated.
//!
//! The model reports each prompt's domain probabilities without offsets; an offset per domain
//! then moves its log-probability (as `routing.domain_offsets` does), and a coordinate search
//! over a grid finds the offsets that find the most domain prompts for the fewest general
//! prompts called a domain.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::classifier::{ChatText, Classifier, GENERAL};

/// The offsets tried for each domain: −4 to 4 in steps of 0.25.
const GRID: std::ops::RangeInclusive<i32> = -16..=16;
const GRID_STEP: f32 = 0.25;
/// The grid's largest offset either way: a fitted offset there may want to go further.
pub const GRID_EDGE: f32 = 16.0 * GRID_STEP;
/// Coordinate sweeps at most; the search stops earlier when a sweep changes nothing.
const SWEEPS: usize = 10;

/// How the fit weighs its two kinds of error, and when a domain is called.
#[derive(Debug, Clone, Copy)]
pub struct FitSettings {
    /// What a general prompt called a domain costs, in domain prompts found: 1 maximises
    /// accuracy over the domain labels.
    pub false_alarm_cost: f64,
    /// A domain below this probability is not called (`routing.domain_min_confidence`; 0: the
    /// most probable label, as `eval classify` counts).
    pub min_confidence: f32,
}

/// One labelled prompt: its label's index and the model's domain probabilities without
/// offsets, in the labels' order.
#[derive(Debug, Clone)]
pub struct Scored {
    pub truth: usize,
    pub scores: Vec<(String, f32)>,
}

/// What a set of offsets does to a sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Per label: prompts of that label, and those called it.
    pub support: Vec<usize>,
    pub right: Vec<usize>,
    /// General prompts called a domain.
    pub false_alarms: usize,
}

impl Counts {
    /// Domain prompts (every label but general) called their own domain.
    pub fn found(&self, general: usize) -> usize {
        self.right
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != general)
            .map(|(_, r)| r)
            .sum()
    }

    fn add(&mut self, other: &Counts) {
        for (a, b) in self.support.iter_mut().zip(&other.support) {
            *a += b;
        }
        for (a, b) in self.right.iter_mut().zip(&other.right) {
            *a += b;
        }
        self.false_alarms += other.false_alarms;
    }
}

/// The label called for domain probabilities `scores` moved by `offsets`: the one the model
/// then reports, unless it is not confident enough for its domain tier
/// ([`crate::routing::confident_domain`]), when general is. The classifier's and the policy's
/// own code decide, as in the server.
fn call(scores: &[(String, f32)], offsets: &[f32], general: usize, min_confidence: f32) -> usize {
    let (label, moved) = crate::classifier::offset_domain(scores, offsets);
    let top = moved
        .iter()
        .position(|(l, _)| *l == label)
        .unwrap_or(general);
    if top == general || min_confidence <= 0.0 {
        return top;
    }
    if crate::routing::confident_domain(&label, moved[top].1, f64::from(min_confidence)) {
        top
    } else {
        general
    }
}

/// What `offsets` (one per label, general's 0) do to `rows`.
pub fn count(rows: &[&Scored], offsets: &[f32], general: usize, min_confidence: f32) -> Counts {
    let k = offsets.len();
    let mut c = Counts {
        support: vec![0; k],
        right: vec![0; k],
        false_alarms: 0,
    };
    for r in rows {
        let called = call(&r.scores, offsets, general, min_confidence);
        c.support[r.truth] += 1;
        if called == r.truth {
            c.right[r.truth] += 1;
        } else if r.truth == general {
            c.false_alarms += 1;
        }
    }
    c
}

/// The offsets (one per label, general's 0) that maximise domain prompts found minus
/// `false_alarm_cost` times general prompts called a domain over `rows`; of equal ones, the
/// smallest in sum of magnitudes. Coordinate search over the grid −4 to 4 in quarter steps,
/// from no offsets.
pub fn fit(rows: &[&Scored], labels: usize, general: usize, settings: FitSettings) -> Vec<f32> {
    let objective = |o: &[f32]| {
        let c = count(rows, o, general, settings.min_confidence);
        c.found(general) as f64 - settings.false_alarm_cost * c.false_alarms as f64
    };
    let size = |o: &[f32]| o.iter().map(|v| v.abs()).sum::<f32>();
    let mut best = vec![0.0f32; labels];
    let mut best_value = objective(&best);
    for _ in 0..SWEEPS {
        let before = best.clone();
        for d in (0..labels).filter(|&d| d != general) {
            for step in GRID {
                let mut o = best.clone();
                o[d] = step as f32 * GRID_STEP;
                let v = objective(&o);
                if v > best_value || (v == best_value && size(&o) < size(&best)) {
                    (best, best_value) = (o, v);
                }
            }
        }
        if best == before {
            break;
        }
    }
    best
}

/// The fit of `rows` scored on themselves, and cross-validated: each of `folds` parts (by a
/// hash of its prompt's text; at least two) counted with offsets fitted on the others.
pub fn cross_validate(
    rows: &[(u64, Scored)],
    labels: usize,
    general: usize,
    folds: u64,
    settings: FitSettings,
) -> (Vec<f32>, Counts) {
    let all: Vec<&Scored> = rows.iter().map(|(_, s)| s).collect();
    let fitted = fit(&all, labels, general, settings);
    let mut held = Counts {
        support: vec![0; labels],
        right: vec![0; labels],
        false_alarms: 0,
    };
    let folds = folds.max(2);
    for f in 0..folds {
        let (test, train): (Vec<_>, Vec<_>) = rows.iter().partition(|(h, _)| h % folds == f);
        let train: Vec<&Scored> = train.into_iter().map(|(_, s)| s).collect();
        let test: Vec<&Scored> = test.into_iter().map(|(_, s)| s).collect();
        let o = fit(&train, labels, general, settings);
        held.add(&count(&test, &o, general, settings.min_confidence));
    }
    (fitted, held)
}

/// A row of the report: offsets, and what they do.
#[derive(Debug, Clone, Serialize)]
pub struct OffsetRow {
    pub name: String,
    /// By label; absent where there are none, or none to name (the cross-validated row).
    pub offsets: Option<BTreeMap<String, f32>>,
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize)]
pub struct OffsetsReport {
    pub labels: Vec<String>,
    pub prompts: usize,
    /// Prompts whose domain label the model does not have, by label.
    pub unknown_labels: BTreeMap<String, usize>,
    pub false_alarm_cost: f64,
    pub min_confidence: f32,
    pub folds: u64,
    pub rows: Vec<OffsetRow>,
    /// The fitted offsets, as `routing.domain_offsets` takes them.
    pub toml: String,
}

/// Scores `chats` (with their domain labels) with `model`, its own offsets taken off, and fits
/// offsets to them.
pub fn evaluate(
    model: Classifier,
    chats: &[(ChatText, String)],
    settings: FitSettings,
    folds: u64,
    pb: &indicatif::ProgressBar,
) -> Result<OffsetsReport, String> {
    let folds = folds.max(2);
    let trained = model.config.domain_offsets.clone();
    let model = model.with_domain_offsets(&BTreeMap::new())?;
    let labels = model.config.domain_labels.clone();
    let general = labels
        .iter()
        .position(|l| l == GENERAL)
        .ok_or_else(|| format!("the model's domain labels have no {GENERAL:?}"))?;
    let mut unknown_labels: BTreeMap<String, usize> = BTreeMap::new();
    let mut rows = Vec::new();
    for (chat, label) in chats {
        pb.inc(1);
        let Some(truth) = labels.iter().position(|l| l == label) else {
            *unknown_labels.entry(label.clone()).or_default() += 1;
            continue;
        };
        let reported = model.classify_chat(chat).domain_scores;
        let scores = labels
            .iter()
            .map(|l| (l.clone(), crate::classifier::probability_of(&reported, l)))
            .collect();
        let hash = crate::classifier::train::stable_hash(
            &crate::classifier::train::hash_text(&chat.text),
            0,
        );
        rows.push((hash, Scored { truth, scores }));
    }
    pb.finish_and_clear();
    let by_label = |o: &BTreeMap<String, f32>| -> Vec<f32> {
        labels
            .iter()
            .map(|l| o.get(l).copied().unwrap_or(0.0))
            .collect()
    };
    let named = |o: &[f32]| -> BTreeMap<String, f32> {
        labels
            .iter()
            .zip(o)
            .filter(|(_, v)| **v != 0.0)
            .map(|(l, v)| (l.clone(), *v))
            .collect()
    };
    let all: Vec<&Scored> = rows.iter().map(|(_, s)| s).collect();
    let at = |o: &[f32]| count(&all, o, general, settings.min_confidence);
    let (fitted, held) = cross_validate(&rows, labels.len(), general, folds, settings);
    let none = vec![0.0; labels.len()];
    let mut report_rows = vec![OffsetRow {
        name: "none".into(),
        offsets: None,
        counts: at(&none),
    }];
    if !trained.is_empty() {
        report_rows.push(OffsetRow {
            name: "the model's".into(),
            offsets: Some(trained.clone()),
            counts: at(&by_label(&trained)),
        });
    }
    report_rows.push(OffsetRow {
        name: "fitted to all the prompts".into(),
        offsets: Some(named(&fitted)),
        counts: at(&fitted),
    });
    report_rows.push(OffsetRow {
        name: format!(
            "fitted to {} of {} parts, counted on the other, each in turn",
            folds - 1,
            folds
        ),
        offsets: None,
        counts: held,
    });
    let entries: Vec<String> = named(&fitted)
        .iter()
        .map(|(l, v)| format!("{l} = {v:?}"))
        .collect();
    Ok(OffsetsReport {
        labels,
        prompts: rows.len(),
        unknown_labels,
        false_alarm_cost: settings.false_alarm_cost,
        min_confidence: settings.min_confidence,
        folds,
        rows: report_rows,
        toml: format!("domain_offsets = {{ {} }}", entries.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels general, legal; `legal_logit` is log p(legal) − log p(general).
    fn row(truth: usize, legal_logit: f32) -> Scored {
        let p = 1.0 / (1.0 + (-legal_logit).exp());
        Scored {
            truth,
            scores: vec![("general".into(), 1.0 - p), ("legal".into(), p)],
        }
    }

    const ARGMAX: FitSettings = FitSettings {
        false_alarm_cost: 1.0,
        min_confidence: 0.0,
    };

    #[test]
    fn offsets_move_the_calls_and_are_counted() {
        let rows = [row(1, -0.6), row(1, 0.4), row(0, -1.7), row(0, -0.3)];
        let refs: Vec<&Scored> = rows.iter().collect();
        let c = count(&refs, &[0.0, 0.0], 0, 0.0);
        assert_eq!(c.support, vec![2, 2]);
        assert_eq!((c.found(0), c.false_alarms), (1, 0));
        let c = count(&refs, &[0.0, 1.0], 0, 0.0);
        assert_eq!((c.found(0), c.false_alarms), (2, 1));
        // A minimum confidence keeps a domain call below it general.
        let c = count(&refs, &[0.0, 0.0], 0, 0.65);
        assert_eq!(c.found(0), 0);
    }

    #[test]
    fn the_fit_weighs_found_against_false_alarms() {
        // Legal prompts at logits −0.6 and −0.55 and general ones at −1.7 and −0.3: an offset
        // between 0.6 and 1.7 finds both legal prompts for one false alarm.
        let rows = [row(1, -0.6), row(1, -0.55), row(0, -1.7), row(0, -0.3)];
        let refs: Vec<&Scored> = rows.iter().collect();
        let o = fit(&refs, 2, 0, ARGMAX);
        assert_eq!(o, vec![0.0, 0.75], "the smallest offset of the best");
        // At a false alarm's cost of 3 the trade is not worth it: no offset.
        let dear = FitSettings {
            false_alarm_cost: 3.0,
            ..ARGMAX
        };
        assert_eq!(fit(&refs, 2, 0, dear), vec![0.0, 0.0]);
        // Legal prompts the model over-calls: a negative offset.
        let rows = [row(1, 2.0), row(0, 0.9), row(0, 1.2)];
        let refs: Vec<&Scored> = rows.iter().collect();
        assert_eq!(fit(&refs, 2, 0, ARGMAX), vec![0.0, -1.25]);
    }

    #[test]
    fn cross_validation_counts_every_prompt_once_with_offsets_fitted_without_it() {
        // Legal prompts at logit −0.6 and general ones at −2: every part's fit is 0.75, which
        // finds them all with no false alarm, on the part left out as on the rest.
        let rows: Vec<(u64, Scored)> = (0..40)
            .map(|i| {
                let legal = i % 3 == 0;
                (
                    i * 7919,
                    row(usize::from(legal), if legal { -0.6 } else { -2.0 }),
                )
            })
            .collect();
        let (fitted, held) = cross_validate(&rows, 2, 0, 5, ARGMAX);
        assert_eq!(fitted, vec![0.0, 0.75]);
        assert_eq!(held.support, vec![26, 14]);
        assert_eq!((held.found(0), held.false_alarms), (14, 0));
        // A general prompt among the legal ones is counted once, in its own part.
        let mut rows = rows;
        rows.push((3, row(0, -0.5)));
        let (_, held) = cross_validate(&rows, 2, 0, 5, ARGMAX);
        assert_eq!(held.support.iter().sum::<usize>(), 41);
    }
}
