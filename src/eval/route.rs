//! `switchyard eval route`: how well a score routes between a cheap and a strong model, on
//! recorded outcomes, next to the baselines computed in the same run.

use serde::Serialize;

use super::dataset::Record;
use super::metrics::{apgr, routing_curve};
use crate::config::Price;

/// One prompt with both models' recorded quality and cost.
#[derive(Debug, Clone)]
pub struct Pair {
    /// What the router reads of the record: its prompt, or its chat.
    pub chat: crate::classifier::ChatText,
    pub weak: f64,
    pub strong: f64,
    pub weak_cost: f64,
    pub strong_cost: f64,
}

/// The prompts of `records` that have a quality for both models, and how many were skipped.
/// Costs come from each outcome (recorded, or tokens at the given price); `None` if any is
/// missing, and then the reports use the strong share as the cost axis.
pub fn pairs(
    records: &[Record],
    cheap: &str,
    strong: &str,
    cheap_price: Option<Price>,
    strong_price: Option<Price>,
) -> (Vec<Pair>, usize, bool) {
    let mut out = Vec::new();
    let mut skipped = 0;
    let mut costs_known = true;
    for r in records {
        let (Some(w), Some(s)) = (r.outcomes.get(cheap), r.outcomes.get(strong)) else {
            skipped += 1;
            continue;
        };
        let (Some(wq), Some(sq)) = (w.quality, s.quality) else {
            skipped += 1;
            continue;
        };
        let (wc, sc) = (w.cost(cheap_price), s.cost(strong_price));
        costs_known &= wc.is_some() && sc.is_some();
        out.push(Pair {
            chat: r.chat(),
            weak: wq,
            strong: sq,
            weak_cost: wc.unwrap_or(0.0),
            strong_cost: sc.unwrap_or(1.0),
        });
    }
    if !costs_known {
        // The share of strong calls is the cost: 0 for the cheap model, 1 for the strong one.
        for p in &mut out {
            p.weak_cost = 0.0;
            p.strong_cost = 1.0;
        }
    }
    (out, skipped, costs_known)
}

/// A routing strategy's curve and its summary figures.
#[derive(Debug, Clone, Serialize)]
pub struct Strategy {
    pub name: String,
    /// Mean quality with k of n prompts sent strong (k = 0..=n), highest score first.
    #[serde(skip)]
    pub quality: Vec<f64>,
    /// Mean cost per prompt at the same k.
    #[serde(skip)]
    pub cost: Vec<f64>,
    pub apgr: Option<f64>,
    /// Smallest strong share that recovers 50% / 80% of the quality gap.
    pub cpt50: Option<f64>,
    pub cpt80: Option<f64>,
    /// Smallest strong share reaching 95% of always-strong quality, and the cost saved there
    /// against always-strong.
    pub share_at_95: Option<f64>,
    pub saving_at_95: Option<f64>,
    /// Area under the non-decreasing convex hull of (cost, quality), over the cost range,
    /// divided by that range (RouterBench's AIQ).
    pub aiq: Option<f64>,
}

/// Smallest k/n with PGR(k) ≥ `x`.
pub fn cpt(quality: &[f64], x: f64) -> Option<f64> {
    let (first, last) = (*quality.first()?, *quality.last()?);
    let gap = last - first;
    if gap.abs() < 1e-12 || quality.len() < 2 {
        return None;
    }
    let n = (quality.len() - 1) as f64;
    quality
        .iter()
        .position(|q| (q - first) / gap >= x - 1e-12)
        .map(|k| k as f64 / n)
}

/// RouterBench's AIQ: the area under the upper, non-decreasing convex hull of the points,
/// divided by their cost range. `None` if the range is empty.
pub fn aiq(points: &[(f64, f64)]) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = points.to_vec();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let (lo, hi) = (pts.first()?.0, pts.last()?.0);
    if hi - lo <= 1e-15 {
        return None;
    }
    // Upper hull by the monotone chain.
    let mut hull: Vec<(f64, f64)> = Vec::new();
    for p in pts {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
            if cross >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    // Non-decreasing: paying more never has to buy less quality.
    let mut best = f64::NEG_INFINITY;
    for p in &mut hull {
        best = best.max(p.1);
        p.1 = best;
    }
    let area: f64 = hull
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Some(area / (hi - lo))
}

/// Routing by `score` (higher goes strong first).
pub fn strategy(name: &str, score: &[f64], pairs: &[Pair]) -> Strategy {
    let weak: Vec<f64> = pairs.iter().map(|p| p.weak).collect();
    let strong: Vec<f64> = pairs.iter().map(|p| p.strong).collect();
    let wc: Vec<f64> = pairs.iter().map(|p| p.weak_cost).collect();
    let sc: Vec<f64> = pairs.iter().map(|p| p.strong_cost).collect();
    let quality = routing_curve(score, &weak, &strong);
    let cost = routing_curve(score, &wc, &sc);
    from_curves(name, quality, cost)
}

fn from_curves(name: &str, quality: Vec<f64>, cost: Vec<f64>) -> Strategy {
    let n = quality.len().saturating_sub(1).max(1) as f64;
    let q_strong = quality.last().copied().unwrap_or(0.0);
    let c_strong = cost.last().copied().unwrap_or(0.0);
    let k95 = quality.iter().position(|q| *q >= 0.95 * q_strong - 1e-12);
    let points: Vec<(f64, f64)> = cost.iter().copied().zip(quality.iter().copied()).collect();
    Strategy {
        name: name.to_string(),
        apgr: apgr(&quality),
        cpt50: cpt(&quality, 0.5),
        cpt80: cpt(&quality, 0.8),
        share_at_95: k95.map(|k| k as f64 / n),
        saving_at_95: k95
            .filter(|_| c_strong > 0.0)
            .map(|k| 1.0 - cost[k] / c_strong),
        aiq: aiq(&points),
        quality,
        cost,
    }
}

/// Random routing: each figure is the mean over `seeds` shuffles; the curve is the mean curve.
pub fn random(pairs: &[Pair], seeds: u64) -> Strategy {
    let mut runs = Vec::new();
    for s in 0..seeds {
        let mut rng = fastrand::Rng::with_seed(s);
        let score: Vec<f64> = (0..pairs.len()).map(|_| rng.f64()).collect();
        runs.push(strategy("random", &score, pairs));
    }
    let m = runs.len().max(1) as f64;
    let mean_vec = |f: &dyn Fn(&Strategy) -> &Vec<f64>| -> Vec<f64> {
        let len = runs.first().map_or(0, |r| f(r).len());
        (0..len)
            .map(|i| runs.iter().map(|r| f(r)[i]).sum::<f64>() / m)
            .collect()
    };
    let mean_opt = |f: &dyn Fn(&Strategy) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = runs.iter().filter_map(f).collect();
        (v.len() == runs.len() && !v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    Strategy {
        name: format!("random (mean of {seeds} seeds)"),
        apgr: mean_opt(&|r| r.apgr),
        cpt50: mean_opt(&|r| r.cpt50),
        cpt80: mean_opt(&|r| r.cpt80),
        share_at_95: mean_opt(&|r| r.share_at_95),
        saving_at_95: mean_opt(&|r| r.saving_at_95),
        aiq: mean_opt(&|r| r.aiq),
        quality: mean_vec(&|r| &r.quality),
        cost: mean_vec(&|r| &r.cost),
    }
}

/// A fixed choice: quality, cost per prompt, strong share.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub name: String,
    pub quality: f64,
    pub cost: f64,
    pub strong_share: f64,
}

/// Always-cheap, always-strong, and the oracle (strong only where it does better).
pub fn fixed_points(pairs: &[Pair]) -> Vec<Point> {
    let n = pairs.len().max(1) as f64;
    let mean = |f: &dyn Fn(&Pair) -> f64| pairs.iter().map(f).sum::<f64>() / n;
    vec![
        Point {
            name: "always-cheap".into(),
            quality: mean(&|p| p.weak),
            cost: mean(&|p| p.weak_cost),
            strong_share: 0.0,
        },
        Point {
            name: "always-strong".into(),
            quality: mean(&|p| p.strong),
            cost: mean(&|p| p.strong_cost),
            strong_share: 1.0,
        },
        Point {
            name: "oracle".into(),
            quality: mean(&|p| p.weak.max(p.strong)),
            cost: mean(&|p| {
                if p.strong > p.weak {
                    p.strong_cost
                } else {
                    p.weak_cost
                }
            }),
            strong_share: mean(&|p| if p.strong > p.weak { 1.0 } else { 0.0 }),
        },
    ]
}

/// The router's operating point at a complexity threshold: prompts scoring above it go strong.
pub fn at_threshold(name: &str, score: &[f64], threshold: f64, pairs: &[Pair]) -> Point {
    let n = pairs.len().max(1) as f64;
    let (mut q, mut c, mut k) = (0.0, 0.0, 0.0);
    for (s, p) in score.iter().zip(pairs) {
        if *s > threshold {
            q += p.strong;
            c += p.strong_cost;
            k += 1.0;
        } else {
            q += p.weak;
            c += p.weak_cost;
        }
    }
    Point {
        name: name.to_string(),
        quality: q / n,
        cost: c / n,
        strong_share: k / n,
    }
}

/// For data with more than two models (LLMRouter): each model alone, and the oracle that picks,
/// per prompt, the cheapest model with the best recorded quality.
#[derive(Debug, Clone, Serialize)]
pub struct MultiModel {
    pub prompts: usize,
    pub models: Vec<Point>,
    pub oracle: Point,
}

pub fn multi_model(records: &[Record]) -> Option<MultiModel> {
    let mut names: Vec<String> = records
        .iter()
        .flat_map(|r| r.outcomes.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    if names.len() <= 2 {
        return None;
    }
    let full: Vec<&Record> = records
        .iter()
        .filter(|r| {
            names.iter().all(|m| {
                r.outcomes
                    .get(m)
                    .is_some_and(|o| o.quality.is_some() && o.cost(None).is_some())
            })
        })
        .collect();
    if full.is_empty() {
        return None;
    }
    let n = full.len() as f64;
    let models = names
        .iter()
        .map(|m| Point {
            name: m.clone(),
            quality: full
                .iter()
                .filter_map(|r| r.outcomes[m].quality)
                .sum::<f64>()
                / n,
            cost: full
                .iter()
                .filter_map(|r| r.outcomes[m].cost(None))
                .sum::<f64>()
                / n,
            strong_share: f64::NAN,
        })
        .collect();
    let (mut q, mut c) = (0.0, 0.0);
    for r in &full {
        let best = r
            .outcomes
            .values()
            .filter_map(|o| o.quality)
            .fold(f64::NEG_INFINITY, f64::max);
        let cheapest = r
            .outcomes
            .values()
            .filter(|o| o.quality.is_some_and(|x| x >= best - 1e-12))
            .filter_map(|o| o.cost(None))
            .fold(f64::INFINITY, f64::min);
        q += best;
        c += cheapest;
    }
    Some(MultiModel {
        prompts: full.len(),
        models,
        oracle: Point {
            name: "oracle (cheapest best model per prompt)".into(),
            quality: q / n,
            cost: c / n,
            strong_share: f64::NAN,
        },
    })
}

/// The router's quality at the cost of `budget` (per prompt): the best point of its curve that
/// costs no more.
pub fn quality_at_cost(s: &Strategy, budget: f64) -> Option<f64> {
    s.cost
        .iter()
        .zip(&s.quality)
        .filter(|(c, _)| **c <= budget + 1e-15)
        .map(|(_, q)| *q)
        .fold(None, |m, q| Some(m.map_or(q, |m: f64| m.max(q))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(weak: f64, strong: f64) -> Pair {
        Pair {
            chat: Default::default(),
            weak,
            strong,
            weak_cost: 1.0,
            strong_cost: 10.0,
        }
    }

    #[test]
    fn four_prompts_by_hand() {
        // weak right on 0 and 1; strong right on 0, 2 and 3 (the metrics module's example).
        let pairs = [
            pair(1.0, 1.0),
            pair(1.0, 0.0),
            pair(0.0, 1.0),
            pair(0.0, 1.0),
        ];
        let s = strategy("router", &[0.2, 0.1, 0.9, 0.8], &pairs);
        assert_eq!(s.quality, vec![0.5, 0.75, 1.0, 1.0, 0.75]);
        // Costs per prompt: 1, then each strong call adds 9/4.
        assert_eq!(s.cost, vec![1.0, 3.25, 5.5, 7.75, 10.0]);
        // PGR 0, 1, 2, 2, 1: 50% and 80% are first reached at k = 1 → share 0.25.
        assert_eq!((s.cpt50, s.cpt80), (Some(0.25), Some(0.25)));
        // 95% of always-strong (0.75) = 0.7125: k = 1, cost 3.25 of 10 → saving 67.5%.
        assert_eq!(s.share_at_95, Some(0.25));
        assert!((s.saving_at_95.unwrap() - 0.675).abs() < 1e-12);
        // Hull of (1, .5) (3.25, .75) (5.5, 1) (7.75, 1) (10, .75): upper hull (1,.5) (5.5,1)
        // (10,.75), made non-decreasing: (10, 1). Area: 4.5·0.75 + 4.5·1 = 7.875; /9 = 0.875.
        assert!((s.aiq.unwrap() - 0.875).abs() < 1e-12, "{:?}", s.aiq);
        let pts = fixed_points(&pairs);
        assert_eq!((pts[0].quality, pts[1].quality), (0.5, 0.75));
        // Oracle: strong only on 2 and 3 → quality 1.0, share 0.5, cost (1+1+10+10)/4.
        assert_eq!(
            (pts[2].quality, pts[2].strong_share, pts[2].cost),
            (1.0, 0.5, 5.5)
        );
        let t = at_threshold("router@0.5", &[0.2, 0.1, 0.9, 0.8], 0.5, &pairs);
        assert_eq!((t.quality, t.strong_share), (1.0, 0.5));
        assert_eq!(quality_at_cost(&s, 6.0), Some(1.0));
        assert_eq!(quality_at_cost(&s, 0.5), None);
    }

    #[test]
    fn cpt_and_aiq_edge_cases() {
        assert_eq!(cpt(&[0.5, 0.5], 0.5), None);
        assert_eq!(aiq(&[(1.0, 0.3)]), None);
        // A straight line from (0, 0) to (1, 1): area 0.5.
        assert!((aiq(&[(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]).unwrap() - 0.5).abs() < 1e-12);
        let r = random(
            &[
                pair(1.0, 1.0),
                pair(1.0, 0.0),
                pair(0.0, 1.0),
                pair(0.0, 1.0),
            ],
            50,
        );
        assert!(r.apgr.is_some() && r.quality.len() == 5);
    }
}
