//! Failover underneath every answer: for one request and one tier, try the highest-priority
//! healthy target, retry it per its policy, move on to the next on failure, hedge a slow one,
//! fall back to another tier when a whole tier fails; all inside the request's deadline.
//!
//! Deadlines nest: each call is bounded by its target's TTFT deadline (the first byte of a
//! stream, the whole body otherwise), which is itself cut to what is left of the request's
//! total deadline. A timeout is just another failure that moves on to the next target.
//! Dropping a call's future drops its connection, which is how a slow target is cancelled.

pub mod health;
pub mod retry;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, Stream, StreamExt};
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::{Config, Target, Tier};
use crate::telemetry::{
    AttemptLabels, FloatGauge, Metrics, TargetLabels, TierLabels, TransitionLabels,
};
use crate::upstream::sse::{SseEvent, SseParser};
use crate::upstream::{classify, ProviderClient, UpstreamError};
use health::{Admit, Breaker, HealthState};
use retry::Next;

/// The bytes of an upstream stream after its first event.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>> + Send>>;

/// A target with everything a call needs: its client, health, retry budget and metric handles.
pub struct TargetRuntime {
    pub cfg: Target,
    pub client: ProviderClient,
    pub breaker: Arc<Breaker>,
    budget: TpsBudget,
    health_gauge: FloatGauge,
    retries: prometheus_client::metrics::counter::Counter,
    stream_errors: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for TargetRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetRuntime")
            .field("id", &self.cfg.id)
            .finish_non_exhaustive()
    }
}

impl TargetRuntime {
    fn note_health(&self, change: Option<HealthState>, metrics: &Metrics) {
        if let Some(s) = change {
            self.health_gauge.set(s.gauge());
            metrics
                .health_transitions
                .get_or_create(&TransitionLabels {
                    target: self.cfg.id.clone(),
                    to: s.as_str().to_string(),
                })
                .inc();
            tracing::warn!(target_id = %self.cfg.id, state = s.as_str(), "target health changed");
        }
    }

    /// Records a failure of a stream after it reached the client.
    pub fn stream_failed(&self, metrics: &Metrics) {
        self.stream_errors.inc();
        self.note_health(self.breaker.on_failure(), metrics);
    }
}

#[derive(Debug)]
pub struct TierRuntime {
    pub cfg: Tier,
    pub targets: Vec<Arc<TargetRuntime>>,
}

/// All tiers, built once from the config.
#[derive(Debug)]
pub struct Engine {
    pub tiers: BTreeMap<String, TierRuntime>,
    pub metrics: Arc<Metrics>,
    /// Largest non-streaming answer read from an upstream.
    max_response_bytes: usize,
}

/// The readable record of what happened to one request: one entry per upstream call or skip.
#[derive(Debug, Default)]
pub struct Trace {
    steps: Mutex<Vec<String>>,
    attempts: AtomicU32,
    first_call: Mutex<Option<Instant>>,
}

impl Trace {
    fn push(&self, s: String) {
        self.steps.lock().unwrap_or_else(|p| p.into_inner()).push(s);
    }
    fn call_started(&self) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut f = self.first_call.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(Instant::now());
        }
    }
    /// Upstream calls made.
    pub fn attempts(&self) -> u32 {
        self.attempts.load(Ordering::Relaxed)
    }
    /// When the first upstream call started.
    pub fn first_call(&self) -> Option<Instant> {
        *self.first_call.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The path taken, e.g. `a/m: http 500; a/m (retry 1): http 500; b/m: ok`.
    pub fn route(&self) -> String {
        self.steps
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("; ")
    }
}

/// The first byte (or, not streaming, the whole body) of an accepted answer.
pub enum Answer {
    /// A whole non-streaming answer: its bytes as they came, and parsed.
    Full {
        bytes: Bytes,
        json: serde_json::Value,
    },
    Stream {
        /// Events already read, up to and including the first one with data.
        first: Vec<Bytes>,
        rest: ByteStream,
        parser: SseParser,
        saw_done: bool,
    },
}

/// An answer and who gave it.
pub struct Won {
    pub answer: Answer,
    pub target: Arc<TargetRuntime>,
    pub tier: String,
    /// When the answer (its first byte) arrived.
    pub at: Instant,
}

/// Why no answer came back.
#[derive(Debug)]
pub enum Failure {
    /// A client error from the upstream, returned as it is.
    Passthrough { status: u16, body: Bytes },
    /// Every target tried failed (or was unhealthy).
    AllFailed,
    /// The request's total deadline passed.
    Deadline,
}

/// Which targets to try for one request.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tier: String,
    /// Index of a target in the tier to try first (the client named its model).
    pub first: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("unknown provider {0}")]
    UnknownProvider(String),
}

/// A target being tried: resolves to the target and its answer (with when it arrived).
type InFlight<'a> = BoxFuture<'a, (Arc<TargetRuntime>, Result<(Answer, Instant), TargetFail>)>;

enum TargetFail {
    Fallback,
    Return(UpstreamError),
}

impl Engine {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Engine, EngineError> {
        let mut clients = BTreeMap::new();
        for (name, p) in &config.providers {
            clients.insert(
                name.clone(),
                ProviderClient::new(p).map_err(EngineError::Client)?,
            );
        }
        // One runtime per target id, shared by every tier that lists it: health is the target's.
        let mut shared: BTreeMap<String, Arc<TargetRuntime>> = BTreeMap::new();
        let mut tiers = BTreeMap::new();
        for (name, tier) in &config.tiers {
            let mut targets = Vec::new();
            for t in &tier.targets {
                if let Some(rt) = shared.get(&t.id) {
                    targets.push(rt.clone());
                    continue;
                }
                let client = clients
                    .get(&t.provider)
                    .cloned()
                    .ok_or_else(|| EngineError::UnknownProvider(t.provider.clone()))?;
                let labels = TargetLabels {
                    target: t.id.clone(),
                };
                let health_gauge = metrics.target_health.get_or_create(&labels).clone();
                health_gauge.set(1.0);
                let rt = Arc::new(TargetRuntime {
                    cfg: t.clone(),
                    client,
                    breaker: Arc::new(Breaker::new(t.health)),
                    budget: TpsBudget::new(Duration::from_secs(10), 10, t.retry.budget_ratio),
                    health_gauge,
                    retries: metrics.retries.get_or_create(&labels).clone(),
                    stream_errors: metrics.stream_errors.get_or_create(&labels).clone(),
                });
                shared.insert(t.id.clone(), rt.clone());
                targets.push(rt);
            }
            tiers.insert(
                name.clone(),
                TierRuntime {
                    cfg: tier.clone(),
                    targets,
                },
            );
        }
        Ok(Engine {
            tiers,
            metrics,
            max_response_bytes: config.server.max_upstream_response_bytes,
        })
    }

    /// Runs the plan: the tier's targets in order, then its fallback tiers, until one answers.
    pub async fn execute(
        &self,
        plan: &Plan,
        body_for: &(dyn Fn(&str) -> Bytes + Sync),
        stream: bool,
        deadline: Instant,
        trace: &Trace,
    ) -> Result<Won, Failure> {
        let mut tier_name = plan.tier.clone();
        let mut first = plan.first;
        loop {
            let Some(tier) = self.tiers.get(&tier_name) else {
                return Err(Failure::AllFailed);
            };
            let mut order: Vec<Arc<TargetRuntime>> = tier.targets.clone();
            if let Some(i) = first.take().filter(|i| *i < order.len()) {
                let t = order.remove(i);
                order.insert(0, t);
            }
            match self
                .run_tier(tier, &order, body_for, stream, deadline, trace)
                .await
            {
                Ok(w) => return Ok(w),
                Err(Failure::AllFailed) => {}
                Err(other) => return Err(other),
            }
            match &tier.cfg.fallback_tier {
                Some(next) if Instant::now() < deadline => {
                    self.metrics
                        .tier_fallbacks
                        .get_or_create(&TierLabels {
                            tier: tier_name.clone(),
                        })
                        .inc();
                    trace.push(format!(
                        "tier {tier_name} failed, falling back to tier {next}"
                    ));
                    tier_name = next.clone();
                }
                Some(_) => return Err(Failure::Deadline),
                None => return Err(Failure::AllFailed),
            }
        }
    }

    async fn run_tier(
        &self,
        tier: &TierRuntime,
        order: &[Arc<TargetRuntime>],
        body_for: &(dyn Fn(&str) -> Bytes + Sync),
        stream: bool,
        deadline: Instant,
        trace: &Trace,
    ) -> Result<Won, Failure> {
        let tier_labels = TierLabels {
            tier: tier.cfg.name.clone(),
        };
        let mut next = 0usize;
        let mut tried_any = false;
        let mut inflight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
        let mut hedge_at: Option<Instant> = None;
        let launch = |t: Arc<TargetRuntime>| {
            let body = body_for(&t.cfg.model);
            async move {
                let r = self.run_target(&t, body, stream, deadline, trace).await;
                (t, r)
            }
            .boxed()
        };
        loop {
            if inflight.is_empty() {
                match self.pick(order, &mut next, tried_any, trace) {
                    Some(t) => {
                        tried_any = true;
                        inflight.push(launch(t));
                        hedge_at = tier.cfg.hedge_after.map(|h| Instant::now() + h);
                    }
                    None => {
                        return Err(if Instant::now() >= deadline {
                            Failure::Deadline
                        } else {
                            Failure::AllFailed
                        })
                    }
                }
            }
            let hedge = async {
                match hedge_at {
                    Some(at) if next < order.len() => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((t, res)) = inflight.next() => match res {
                    Ok((answer, at)) => {
                        return Ok(Won { answer, target: t, tier: tier.cfg.name.clone(), at });
                    }
                    Err(TargetFail::Return(UpstreamError::Status { status, body, .. })) => {
                        return Err(Failure::Passthrough { status, body });
                    }
                    Err(TargetFail::Return(_)) => return Err(Failure::AllFailed),
                    Err(TargetFail::Fallback) => {
                        if Instant::now() >= deadline {
                            return Err(Failure::Deadline);
                        }
                        self.metrics.failovers.get_or_create(&tier_labels).inc();
                    }
                },
                () = hedge => {
                    hedge_at = None;
                    if let Some(t) = self.pick(order, &mut next, tried_any, trace) {
                        trace.push(format!("hedging to {} after {}ms", t.cfg.id, tier.cfg.hedge_after.map_or(0, |h| h.as_millis())));
                        self.metrics.hedges.get_or_create(&tier_labels).inc();
                        inflight.push(launch(t));
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    trace.push("request deadline reached".to_string());
                    return Err(Failure::Deadline);
                }
            }
        }
    }

    /// The next target to try, skipping unhealthy ones and, once one was tried, those marked
    /// `fallback = false`.
    fn pick(
        &self,
        order: &[Arc<TargetRuntime>],
        next: &mut usize,
        tried_any: bool,
        trace: &Trace,
    ) -> Option<Arc<TargetRuntime>> {
        while *next < order.len() {
            let t = &order[*next];
            *next += 1;
            if tried_any && !t.cfg.fallback {
                trace.push(format!("{}: skipped (fallback = false)", t.cfg.id));
                continue;
            }
            match t.breaker.admit() {
                Admit::Yes => return Some(t.clone()),
                Admit::Probe => {
                    t.note_health(Some(HealthState::Probing), &self.metrics);
                    trace.push(format!("{}: probing after cooldown", t.cfg.id));
                    return Some(t.clone());
                }
                Admit::No => trace.push(format!("{}: skipped (unhealthy)", t.cfg.id)),
            }
        }
        None
    }

    /// One target: the first call and its retries.
    async fn run_target(
        &self,
        t: &TargetRuntime,
        body: Bytes,
        stream: bool,
        deadline: Instant,
        trace: &Trace,
    ) -> Result<(Answer, Instant), TargetFail> {
        let mut retries = 0u32;
        t.budget.deposit();
        loop {
            trace.call_started();
            let result = call(t, body.clone(), stream, deadline, self.max_response_bytes).await;
            let label = if retries == 0 {
                t.cfg.id.clone()
            } else {
                format!("{} (retry {retries})", t.cfg.id)
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind(),
            };
            self.metrics
                .upstream_attempts
                .get_or_create(&AttemptLabels {
                    target: t.cfg.id.clone(),
                    outcome: outcome.to_string(),
                })
                .inc();
            let e = match result {
                Ok(a) => {
                    trace.push(format!("{label}: ok"));
                    t.note_health(t.breaker.on_success(), &self.metrics);
                    return Ok((a, Instant::now()));
                }
                Err(e) => e,
            };
            trace.push(format!("{label}: {e}"));
            tracing::debug!(target_id = %t.cfg.id, error = %e, "upstream call failed");
            if e.counts_against_health() {
                t.note_health(t.breaker.on_failure(), &self.metrics);
            }
            match retry::decide(&t.cfg.retry, &t.cfg.fallback_on, &e, retries) {
                Next::Retry(delay) => {
                    if Instant::now() + delay >= deadline {
                        return Err(TargetFail::Fallback);
                    }
                    if !t.budget.withdraw() {
                        trace.push(format!("{}: retry budget exhausted", t.cfg.id));
                        return Err(TargetFail::Fallback);
                    }
                    t.retries.inc();
                    retries += 1;
                    tokio::time::sleep(delay).await;
                }
                Next::Fallback => return Err(TargetFail::Fallback),
                Next::Return => return Err(TargetFail::Return(e)),
            }
        }
    }
}

/// One upstream call, bounded by the target's TTFT deadline cut to the request's deadline.
async fn call(
    t: &TargetRuntime,
    body: Bytes,
    stream: bool,
    deadline: Instant,
    max_bytes: usize,
) -> Result<Answer, UpstreamError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(UpstreamError::Deadline);
    }
    let ttft = t.cfg.slo.ttft;
    let cut_by_deadline = now + ttft > deadline;
    let until = if cut_by_deadline {
        deadline
    } else {
        now + ttft
    };
    let fut = async {
        let resp = t.client.send(body, stream).await?;
        if stream {
            first_event(resp).await
        } else {
            let bytes = crate::upstream::read_limited(resp, max_bytes).await?;
            let json = check_completion(&bytes)?;
            Ok(Answer::Full { bytes, json })
        }
    };
    match tokio::time::timeout_at(until, fut).await {
        Ok(r) => r,
        Err(_) if cut_by_deadline => Err(UpstreamError::Deadline),
        Err(_) => Err(UpstreamError::TtftTimeout(ttft)),
    }
}

/// A non-streaming answer must be a JSON object with `choices` and no `error`.
fn check_completion(bytes: &[u8]) -> Result<serde_json::Value, UpstreamError> {
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| UpstreamError::Malformed(format!("invalid JSON at column {}", e.column())))?;
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("error object");
        return Err(UpstreamError::ErrorEvent(truncate(msg, 120)));
    }
    if !v.get("choices").is_some_and(|c| c.is_array()) {
        return Err(UpstreamError::Malformed("no choices array".into()));
    }
    Ok(v)
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n).chain("…".chars()).collect()
    }
}

/// Reads a stream until its first event with data: that is the stream's first byte.
async fn first_event(resp: reqwest::Response) -> Result<Answer, UpstreamError> {
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_sse {
        return Err(UpstreamError::Malformed("expected an event stream".into()));
    }
    let mut rest: ByteStream = Box::pin(resp.bytes_stream());
    let mut parser = SseParser::new();
    let mut first = Vec::new();
    loop {
        let chunk = match rest.next().await {
            None => return Err(UpstreamError::Closed("stream ended before any data")),
            Some(Err(e)) => return Err(classify(&e)),
            Some(Ok(c)) => c,
        };
        let events: Vec<SseEvent> = parser
            .push(&chunk)
            .map_err(|e| UpstreamError::Malformed(e.to_string()))?;
        let mut got_data = false;
        let mut saw_done = false;
        for ev in events {
            if let Some(msg) = ev.error_message() {
                return Err(UpstreamError::ErrorEvent(truncate(&msg, 120)));
            }
            got_data |= ev.data.is_some();
            saw_done |= ev.is_done();
            first.push(ev.raw);
        }
        if got_data {
            return Ok(Answer::Stream {
                first,
                rest,
                parser,
                saw_done,
            });
        }
    }
}
