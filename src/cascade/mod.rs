//! The cascade: call the planned tier, check its answer before the client sees anything, and
//! escalate a failed answer to a stronger tier. Each tier's calls go through the same failover,
//! retries, health and SLOs as any request, all inside the request's one deadline.
//!
//! A tier takes part when its config has a `cascade` table. Its answers are checked with that
//! table's checks, and a rejected answer goes to `escalate_to`. That tier's own cascade table,
//! if it has one, decides what happens next. The last tier's answer is checked with the same
//! checks, for the record: it is returned even when it fails, unless the route is `strict`.
//! If an escalation fails outright (every target down), the answer already in hand is returned.

pub mod arithmetic;
pub mod checks;
pub mod schema;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{Cascade, ShortDeadline};
use crate::resilience::{Answer, Engine, Failure, Plan, TargetRuntime, Trace};
use crate::telemetry::{CascadeLabels, Metrics};
use checks::{RequestChecks, Verdict};

/// An answer the cascade settled on.
pub struct Settled {
    pub answer: Value,
    pub tier: String,
    pub target: Arc<TargetRuntime>,
    /// When the settled answer arrived.
    pub at: Instant,
    /// The cost of every call made, if every answering target has a price.
    pub cost_usd: Option<f64>,
    /// Whether the returned answer passed its checks.
    pub accepted: bool,
}

pub enum CascadeError {
    /// No tier produced an answer.
    Failed(Failure),
    /// `strict`, and the last answer still failed its checks; or too little time to escalate
    /// with `on_short_deadline = "fail"`.
    Rejected(String),
}

/// The readable record of the cascade, for `x-switchyard-cascade`:
/// `cheap:rejected(schema: …)>reasoning:accepted`.
#[derive(Debug, Default)]
pub struct CascadePath(Vec<String>);

impl CascadePath {
    fn push(&mut self, tier: &str, what: &str, why: &str) {
        if why.is_empty() {
            self.0.push(format!("{tier}:{what}"));
        } else {
            self.0.push(format!("{tier}:{what}({why})"));
        }
    }
    pub fn render(&self) -> String {
        self.0.join(">")
    }
}

/// Builds the body sent to a target: (model, ask for logprobs).
pub type BodyFor<'a> = dyn Fn(&str, bool) -> Bytes + Sync + 'a;

#[allow(clippy::too_many_arguments)]
pub async fn run(
    engine: &Engine,
    metrics: &Metrics,
    plan: &Plan,
    req: &RequestChecks,
    body_for: &BodyFor<'_>,
    deadline: Instant,
    trace: &Trace,
    path: &mut CascadePath,
) -> Result<Settled, CascadeError> {
    let mut tier = plan.tier.clone();
    let mut first = plan.first;
    let mut rules: Option<Cascade> = None;
    let mut held: Option<Settled> = None;
    let mut total_cost = Some(0.0);
    loop {
        let own = engine.tiers.get(&tier).and_then(|t| t.cfg.cascade.clone());
        if own.is_some() {
            rules = own.clone();
        }
        let Some(cfg) = rules.clone() else {
            return Err(CascadeError::Failed(Failure::AllFailed));
        };
        let want_logprobs = own
            .as_ref()
            .is_some_and(|c| c.has(crate::config::Check::Confidence));
        let body = |model: &str| body_for(model, want_logprobs && !req.client_logprobs);
        let this_plan = Plan {
            tier: tier.clone(),
            first: first.take(),
        };
        let won = match engine
            .execute(&this_plan, &body, false, deadline, trace)
            .await
        {
            Ok(w) => w,
            Err(f) => {
                return match held {
                    Some(h) => {
                        path.push(&tier, "failed", failure_text(&f));
                        count(metrics, &tier, "failed", failure_text(&f));
                        Ok(h)
                    }
                    None => Err(CascadeError::Failed(f)),
                };
            }
        };
        let Answer::Full { json, .. } = won.answer else {
            return Err(CascadeError::Failed(Failure::AllFailed));
        };
        let mut answer = json;
        total_cost = total_cost
            .and_then(|c| crate::upstream::cost_usd(won.target.cfg.price, &answer).map(|x| c + x));
        let verdict = checks::check(&answer, req, &cfg);
        if want_logprobs && !req.client_logprobs {
            strip_logprobs(&mut answer);
        }
        let settled = Settled {
            answer,
            tier: tier.clone(),
            target: won.target,
            at: won.at,
            cost_usd: total_cost,
            accepted: verdict.accepted(),
        };
        match (&verdict, &own) {
            (Verdict::Accept { .. }, _) => {
                path.push(&tier, "accepted", &verdict.reason());
                count(metrics, &tier, "accepted", "");
                return Ok(settled);
            }
            (Verdict::Reject { kind, .. }, None) => {
                // The end of the chain: report, then return it unless strict.
                path.push(&tier, "rejected", &verdict.reason());
                count(metrics, &tier, "rejected", kind);
                if cfg.strict {
                    return Err(CascadeError::Rejected(format!(
                        "the answer failed its checks at the last tier: {}",
                        path.render()
                    )));
                }
                return Ok(settled);
            }
            (Verdict::Reject { kind, .. }, Some(c)) => {
                path.push(&tier, "rejected", &verdict.reason());
                count(metrics, &tier, "rejected", kind);
                let left = deadline.saturating_duration_since(Instant::now());
                if left < c.min_escalation_time {
                    let why = format!("{}ms left", left.as_millis());
                    return match c.on_short_deadline {
                        ShortDeadline::Accept => {
                            path.push(
                                &c.escalate_to,
                                "skipped",
                                &format!("deadline, {why}, accepted {tier}"),
                            );
                            count(metrics, &c.escalate_to, "skipped", "deadline");
                            Ok(settled)
                        }
                        ShortDeadline::Fail => {
                            path.push(&c.escalate_to, "skipped", &format!("deadline, {why}"));
                            count(metrics, &c.escalate_to, "skipped", "deadline");
                            Err(CascadeError::Rejected(format!(
                                "the answer failed its checks and too little time was left to escalate: {}",
                                path.render()
                            )))
                        }
                    };
                }
                tier = c.escalate_to.clone();
                held = Some(settled);
            }
        }
    }
}

fn failure_text(f: &Failure) -> &'static str {
    match f {
        Failure::Passthrough { .. } => "client error",
        Failure::AllFailed => "all targets failed",
        Failure::Deadline => "deadline",
    }
}

fn count(metrics: &Metrics, tier: &str, verdict: &str, reason: &str) {
    metrics
        .cascade
        .get_or_create(&CascadeLabels {
            tier: tier.to_string(),
            verdict: verdict.to_string(),
            reason: reason.to_string(),
        })
        .inc();
}

/// Removes logprobs the router asked for and the client did not.
fn strip_logprobs(answer: &mut Value) {
    if let Some(choices) = answer.get_mut("choices").and_then(Value::as_array_mut) {
        for c in choices {
            if let Some(obj) = c.as_object_mut() {
                if obj.contains_key("logprobs") {
                    obj.insert("logprobs".into(), Value::Null);
                }
            }
        }
    }
}
