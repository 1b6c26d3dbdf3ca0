//! `switchyard eval cascade`: replays recorded cheap-model answers through the server's own
//! answer checks. An accepted answer counts with the cheap model's recorded correctness; a
//! rejected one escalates and counts with the strong model's, paying for both calls. The same
//! run reports always-cheap, always-strong, the oracle, and routing alone (random and by prompt
//! length) at the cascade's own strong-call share, so the checks are judged against doing
//! nothing clever at the same price.

use serde::Serialize;
use serde_json::json;

use super::data::AnswerPair;
use crate::cascade::checks::{check, RequestChecks, Verdict};
use crate::config::{Cascade, Price};

/// Token counts are not recorded; they are estimated as characters / 4, for prompts and
/// answers alike, and said so in the report.
pub const CHARS_PER_TOKEN: f64 = 4.0;

#[derive(Debug, Clone, Serialize)]
pub struct Strategy {
    pub name: String,
    /// Share of prompts answered correctly.
    pub quality: f64,
    /// Share of prompts that called the strong model.
    pub strong_share: f64,
    /// US dollars per 1,000 prompts.
    pub cost_per_1k: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CascadeReport {
    pub prompts: usize,
    pub checks: Vec<String>,
    pub cheap_price: [f64; 2],
    pub strong_price: [f64; 2],
    pub accepted: usize,
    pub escalated: usize,
    pub accept_rate: f64,
    /// Accepted but wrong, as a share of accepted answers.
    pub false_accept_rate: f64,
    /// Wrong cheap answers the checks caught, as a share of all wrong cheap answers.
    pub wrong_caught: f64,
    /// Right cheap answers that were escalated anyway, as a share of all right cheap answers.
    pub right_escalated: f64,
    /// Rejections by check.
    pub reasons: Vec<(String, usize)>,
    /// The first rejections: (reason, whether the cheap answer was in fact right).
    pub examples: Vec<(String, bool)>,
    pub strategies: Vec<Strategy>,
}

fn tokens(s: &str) -> f64 {
    (s.chars().count() as f64 / CHARS_PER_TOKEN).ceil()
}

fn call_cost(p: Price, prompt: &str, answer: &str) -> f64 {
    (tokens(prompt) * p.input + tokens(answer) * p.output) / 1e6
}

/// Replays the rows through `check` with the given cascade settings.
pub fn evaluate(rows: &[AnswerPair], cfg: &Cascade, cheap: Price, strong: Price) -> CascadeReport {
    let n = rows.len().max(1) as f64;
    let req = RequestChecks::default();
    let mut accepted = 0usize;
    let mut false_accepts = 0usize;
    let mut caught = 0usize;
    let mut right_escalated = 0usize;
    let mut quality = 0.0;
    let mut cost = 0.0;
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    let mut examples = Vec::new();
    for r in rows {
        let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": r.cheap_answer}, "finish_reason": "stop"}]});
        let c_cost = call_cost(cheap, &r.prompt, &r.cheap_answer);
        match check(&answer, &req, cfg) {
            Verdict::Accept { .. } => {
                accepted += 1;
                quality += f64::from(u8::from(r.cheap_correct));
                cost += c_cost;
                if !r.cheap_correct {
                    false_accepts += 1;
                }
            }
            v @ Verdict::Reject { .. } => {
                if examples.len() < 20 {
                    examples.push((v.reason(), r.cheap_correct));
                }
                let Verdict::Reject { kind, .. } = v else {
                    continue;
                };
                *reasons.entry(kind.to_string()).or_default() += 1;
                quality += f64::from(u8::from(r.strong_correct));
                cost += c_cost + call_cost(strong, &r.prompt, &r.strong_answer);
                if r.cheap_correct {
                    right_escalated += 1;
                } else {
                    caught += 1;
                }
            }
        }
    }
    let escalated = rows.len() - accepted;
    let share = escalated as f64 / n;
    let wrong = rows.iter().filter(|r| !r.cheap_correct).count().max(1) as f64;
    let right = rows.iter().filter(|r| r.cheap_correct).count().max(1) as f64;

    let cheap_cost: Vec<f64> = rows
        .iter()
        .map(|r| call_cost(cheap, &r.prompt, &r.cheap_answer))
        .collect();
    let strong_cost: Vec<f64> = rows
        .iter()
        .map(|r| call_cost(strong, &r.prompt, &r.strong_answer))
        .collect();
    let mean = |f: &dyn Fn(usize) -> f64| (0..rows.len()).map(f).sum::<f64>() / n;
    let q = |b: bool| f64::from(u8::from(b));
    let per_1k = 1000.0;

    let mut strategies = vec![
        Strategy {
            name: "always-cheap".into(),
            quality: mean(&|i| q(rows[i].cheap_correct)),
            strong_share: 0.0,
            cost_per_1k: mean(&|i| cheap_cost[i]) * per_1k,
        },
        Strategy {
            name: "always-strong".into(),
            quality: mean(&|i| q(rows[i].strong_correct)),
            strong_share: 1.0,
            cost_per_1k: mean(&|i| strong_cost[i]) * per_1k,
        },
        Strategy {
            name: "oracle (strong only where cheap is wrong)".into(),
            quality: mean(&|i| q(rows[i].cheap_correct || rows[i].strong_correct)),
            strong_share: mean(&|i| q(!rows[i].cheap_correct)),
            cost_per_1k: mean(&|i| {
                if rows[i].cheap_correct {
                    cheap_cost[i]
                } else {
                    strong_cost[i]
                }
            }) * per_1k,
        },
        Strategy {
            // The exact expectation over random choices of which prompts go strong.
            name: "routing alone: random, same strong share".into(),
            quality: mean(&|i| {
                (1.0 - share) * q(rows[i].cheap_correct) + share * q(rows[i].strong_correct)
            }),
            strong_share: share,
            cost_per_1k: mean(&|i| (1.0 - share) * cheap_cost[i] + share * strong_cost[i]) * per_1k,
        },
    ];
    // Routing by prompt length: the longest prompts go strong.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((rows[i].prompt.chars().count(), i)));
    let k = escalated;
    let mut to_strong = vec![false; rows.len()];
    for &i in order.iter().take(k) {
        to_strong[i] = true;
    }
    strategies.push(Strategy {
        name: "routing alone: prompt length, same strong share".into(),
        quality: mean(&|i| {
            if to_strong[i] {
                q(rows[i].strong_correct)
            } else {
                q(rows[i].cheap_correct)
            }
        }),
        strong_share: share,
        cost_per_1k: mean(&|i| {
            if to_strong[i] {
                strong_cost[i]
            } else {
                cheap_cost[i]
            }
        }) * per_1k,
    });
    strategies.push(Strategy {
        name: "cascade (these checks)".into(),
        quality: quality / n,
        strong_share: share,
        cost_per_1k: cost / n * per_1k,
    });

    CascadeReport {
        prompts: rows.len(),
        checks: cfg
            .checks
            .iter()
            .map(|c| format!("{c:?}").to_lowercase())
            .collect(),
        cheap_price: [cheap.input, cheap.output],
        strong_price: [strong.input, strong.output],
        accepted,
        escalated,
        accept_rate: accepted as f64 / n,
        false_accept_rate: false_accepts as f64 / (accepted.max(1) as f64),
        wrong_caught: caught as f64 / wrong,
        right_escalated: right_escalated as f64 / right,
        reasons: reasons.into_iter().collect(),
        examples,
        strategies,
    }
}

impl CascadeReport {
    pub fn markdown(&self, data: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!("# Cascade replay: {data}\n\n"));
        s.push_str(&format!(
            "{} prompts; checks: {}. Prices ($ per million tokens, in/out): cheap {}/{}, strong {}/{}; \
             tokens estimated as characters / {CHARS_PER_TOKEN}. Logprobs and finish reasons are not recorded, \
             so the confidence and truncation checks cannot fire here.\n\n",
            self.prompts,
            self.checks.join(", "),
            self.cheap_price[0],
            self.cheap_price[1],
            self.strong_price[0],
            self.strong_price[1]
        ));
        s.push_str(&format!(
            "- accept rate: {:.1}% ({} accepted, {} escalated)\n- false-accept rate (accepted but wrong): {:.1}%\n\
             - wrong cheap answers caught: {:.1}%\n- right cheap answers escalated anyway: {:.1}%\n",
            self.accept_rate * 100.0,
            self.accepted,
            self.escalated,
            self.false_accept_rate * 100.0,
            self.wrong_caught * 100.0,
            self.right_escalated * 100.0
        ));
        if !self.reasons.is_empty() {
            let r: Vec<String> = self
                .reasons
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!("- rejections by check: {}\n", r.join(", ")));
        }
        if !self.examples.is_empty() {
            s.push_str("\nFirst rejections (was the cheap answer in fact right?):\n\n");
            for (reason, right) in self.examples.iter().take(10) {
                s.push_str(&format!(
                    "- {} {reason}\n",
                    if *right { "right:" } else { "wrong:" }
                ));
            }
        }
        s.push_str(
            "\n| strategy | quality | strong calls | cost $ / 1k prompts |\n|---|---|---|---|\n",
        );
        for st in &self.strategies {
            s.push_str(&format!(
                "| {} | {:.1}% | {:.1}% | {:.4} |\n",
                st.name,
                st.quality * 100.0,
                st.strong_share * 100.0,
                st.cost_per_1k
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Check;

    fn pair(cheap_answer: &str, cheap_correct: bool, strong_correct: bool) -> AnswerPair {
        AnswerPair {
            prompt: "pppp".into(),
            cheap_answer: cheap_answer.into(),
            cheap_correct,
            strong_answer: "ssss".into(),
            strong_correct,
        }
    }

    #[test]
    fn hand_computed_replay() {
        // 4 prompts: the arithmetic check rejects the two with a wrong step.
        let rows = vec![
            pair("2 + 2 = 4", true, true),
            pair("2 + 2 = 5", false, true),
            pair("3 * 3 = 9", false, true),
            pair("3 * 3 = 10", true, false),
        ];
        let cfg = crate::config::cascade_for_eval(vec![Check::Completion, Check::Arithmetic]);
        let p = Price {
            input: 1e6,
            output: 1e6,
        }; // $1 per token: costs count tokens
        let r = evaluate(
            &rows,
            &cfg,
            p,
            Price {
                input: 10e6,
                output: 10e6,
            },
        );
        assert_eq!((r.accepted, r.escalated), (2, 2));
        assert!((r.false_accept_rate - 0.5).abs() < 1e-9);
        assert!((r.wrong_caught - 0.5).abs() < 1e-9);
        assert!((r.right_escalated - 0.5).abs() < 1e-9);
        let cascade = r.strategies.last().unwrap();
        // accepted: row0 right, row2 wrong; escalated: row1 strong right, row3 strong wrong.
        assert!((cascade.quality - 0.5).abs() < 1e-9);
        // prompt 1 token; cheap answers: "2 + 2 = 4" 9 chars -> 3 tokens; strong "ssss" 1 token.
        // cheap calls: 4 x (1 + 3) = 16 (row3's answer "3 * 3 = 10" is 10 chars -> 3 tokens).
        // strong calls (rows 1, 3): 2 x (1 + 1) x 10 = 40. Total 56 over 4 prompts = 14 per prompt.
        assert!(
            (cascade.cost_per_1k - 14_000.0).abs() < 1e-6,
            "{}",
            cascade.cost_per_1k
        );
        let oracle = &r.strategies[2];
        assert!((oracle.quality - 1.0).abs() < 1e-9);
        assert!((oracle.strong_share - 0.5).abs() < 1e-9);
    }
}
