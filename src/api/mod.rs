//! The HTTP surface: OpenAI-compatible handlers, the decision headers, health and metrics.
//! Nothing below `api/` knows about axum.

pub mod decision_log;
pub mod request;
pub mod sse;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use tower::ServiceBuilder;

use crate::cascade::checks::RequestChecks;
use crate::cascade::schema::SchemaCache;
use crate::cascade::{self, CascadeError, CascadePath};
use crate::classifier::ChatReading;
use crate::config::{Config, StreamMode};
use crate::error::ApiError;
use crate::resilience::{Answer, ByteStream, Engine, Failure, TargetRuntime, Trace, Won};
use crate::routing::{self, ROUTER_MODEL};
use crate::telemetry::{Metrics, RequestLabels, TierLabels};
use crate::upstream::sse::{error_event, SseParser};
use crate::upstream::{classify, UpstreamError};
use request::ChatRequest;

/// Longest value put in a decision header.
const MAX_HEADER_LEN: usize = 2048;
/// Prompts up to this size are classified on the async runtime (at most about 30 µs); longer
/// ones on the blocking pool, since the text scan grows with their length.
const INLINE_CLASSIFY_BYTES: usize = 8 * 1024;

pub struct AppState {
    pub config: Arc<Config>,
    pub classifier: Option<Arc<crate::classifier::Classifier>>,
    pub policy: routing::Policy,
    /// Classifications running at once; past it requests are shed (429).
    classify_permits: Arc<tokio::sync::Semaphore>,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub schemas: SchemaCache,
    /// Precomputed `/v1/models` body.
    models: Bytes,
    next_id: AtomicU64,
    id_prefix: String,
    pub decision_log: Option<decision_log::DecisionLog>,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        classifier: Option<Arc<crate::classifier::Classifier>>,
    ) -> Result<AppState, crate::resilience::EngineError> {
        let engine = Engine::new(&config, metrics.clone())?;
        let policy = routing::Policy::new(&config);
        let models = Bytes::from(models_body(&config).to_string());
        Ok(AppState {
            config,
            classifier,
            policy,
            classify_permits: Arc::new(tokio::sync::Semaphore::new(256)),
            engine,
            metrics,
            schemas: SchemaCache::new(),
            models,
            next_id: AtomicU64::new(1),
            id_prefix: format!("{:08x}", fastrand::u32(..)),
            decision_log: None,
        })
    }

    /// Records every answered request in `log`.
    pub fn with_decision_log(mut self, log: decision_log::DecisionLog) -> AppState {
        self.decision_log = Some(log);
        self
    }
}

fn models_body(config: &Config) -> serde_json::Value {
    let mut data = vec![
        json!({"id": ROUTER_MODEL, "object": "model", "created": 0, "owned_by": "switchyard"}),
    ];
    for name in config.tiers.keys() {
        data.push(json!({"id": format!("switchyard/{name}"), "object": "model", "created": 0, "owned_by": "switchyard"}));
    }
    let mut seen = std::collections::BTreeSet::new();
    for tier in config.tiers.values() {
        for t in &tier.targets {
            if seen.insert(t.model.clone()) {
                data.push(
                    json!({"id": t.model, "object": "model", "created": 0, "owned_by": t.provider}),
                );
            }
        }
    }
    json!({"object": "list", "data": data})
}

/// The router with every route and layer.
pub fn app(state: Arc<AppState>) -> Router {
    let shed_metrics = state.metrics.clone();
    let limit = state.config.server.max_concurrency;
    let chat_route = post(chat).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(move |_: tower::BoxError| {
                let m = shed_metrics.clone();
                async move {
                    m.shed.inc();
                    error_response(&ApiError::Overloaded, HeaderMap::new())
                }
            }))
            .load_shed()
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limit)),
    );
    Router::new()
        .route("/v1/chat/completions", chat_route)
        .route("/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .fallback(|req: Request| async move {
            error_response(
                &ApiError::NotFound(format!(
                    "no route for {} {}",
                    req.method(),
                    req.uri().path()
                )),
                HeaderMap::new(),
            )
        })
        .method_not_allowed_fallback(|req: Request| async move {
            error_response(
                &ApiError::MethodNotAllowed(format!(
                    "{} is not allowed on {}",
                    req.method(),
                    req.uri().path()
                )),
                HeaderMap::new(),
            )
        })
        .with_state(state)
}

pub fn error_response(e: &ApiError, headers: HeaderMap) -> Response {
    let mut r = (e.status(), axum::Json(e.body())).into_response();
    r.headers_mut().extend(headers);
    r
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.models.clone(),
    )
        .into_response()
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let tiers: serde_json::Map<String, serde_json::Value> = s
        .engine
        .tiers
        .iter()
        .map(|(name, t)| {
            let targets: serde_json::Map<String, serde_json::Value> = t
                .targets
                .iter()
                .map(|x| (x.cfg.id.clone(), json!(x.breaker.state().as_str())))
                .collect();
            (name.clone(), serde_json::Value::Object(targets))
        })
        .collect();
    axum::Json(json!({"status": "ready", "tiers": tiers})).into_response()
}

fn header_value(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(MAX_HEADER_LEN)
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// Checks the client's key; returns the key's allowed tiers (empty: all).
fn check_auth<'c>(config: &'c Config, headers: &HeaderMap) -> Result<&'c [String], ApiError> {
    if config.api_keys.is_empty() {
        return Ok(&[]);
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    // Compare against every key so the time taken does not say which one nearly matched.
    let mut found: Option<&'c [String]> = None;
    for k in &config.api_keys {
        if bool::from(k.sha256.ct_eq(&digest)) {
            found = Some(&k.tiers);
        }
    }
    found.ok_or(ApiError::Unauthorized)
}

/// Decision headers common to answers and errors.
struct Decision {
    request_id: String,
    tier: Option<String>,
    reason: &'static str,
    target: Option<String>,
    cascade: Option<String>,
    cost_usd: Option<f64>,
    rule: Option<String>,
    scores: Option<(String, String, f32)>,
    /// When the domain check re-scored the domain: the first model's domain.
    unchecked_domain: Option<String>,
    /// When the intent check re-read the intent: the first model's intent.
    unchecked_intent: Option<String>,
    policy: Option<String>,
    /// What the decision log records of the prompt: its size, and its text when enabled.
    prompt_chars: Option<usize>,
    prompt: Option<String>,
}

impl Decision {
    /// The decision log's record of an answered request (`eval/dataset.schema.json`).
    fn record(
        &self,
        target: &TargetRuntime,
        stream: bool,
        latency: Duration,
        overhead: Duration,
    ) -> crate::eval::dataset::Record {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut outcomes = std::collections::BTreeMap::new();
        outcomes.insert(
            target.cfg.model.clone(),
            crate::eval::dataset::Outcome {
                cost_usd: self.cost_usd,
                latency_ms: Some(ms(latency)),
                ..Default::default()
            },
        );
        let (intent, domain, complexity) = match &self.scores {
            Some((i, d, c)) => (Some(i.clone()), Some(d.clone()), Some(*c)),
            None => (None, None, None),
        };
        crate::eval::dataset::Record {
            id: Some(self.request_id.clone()),
            source: Some("switchyard/decision-log".into()),
            prompt: self.prompt.clone(),
            outcomes,
            decision: Some(json!({
                "unix_ms": unix_ms,
                "tier": self.tier, "target": self.target, "reason": self.reason,
                "rule": self.rule, "policy": self.policy,
                "scores": {"intent": intent, "domain": domain, "complexity": complexity,
                           "unchecked_domain": self.unchecked_domain,
                           "unchecked_intent": self.unchecked_intent},
                "features": {"prompt_chars": self.prompt_chars},
                "cascade": self.cascade, "stream": stream,
                "latency_ms": ms(latency), "overhead_ms": ms(overhead), "cost_usd": self.cost_usd,
            })),
            ..Default::default()
        }
    }

    fn headers(&self, trace: &Trace, overhead: Duration) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, v: HeaderValue| {
            h.insert(HeaderName::from_static(name), v);
        };
        put("x-switchyard-request-id", header_value(&self.request_id));
        if let Some(t) = &self.tier {
            put("x-switchyard-tier", header_value(t));
        }
        put(
            "x-switchyard-decision",
            HeaderValue::from_static(self.reason),
        );
        if let Some(t) = &self.target {
            put("x-switchyard-target", header_value(t));
        }
        put("x-switchyard-attempts", HeaderValue::from(trace.attempts()));
        let route = trace.route();
        if !route.is_empty() {
            put("x-switchyard-route", header_value(&route));
        }
        if let Some(c) = &self.cascade {
            put("x-switchyard-cascade", header_value(c));
        }
        if let Some(r) = &self.rule {
            put("x-switchyard-rule", header_value(r));
        }
        if let Some((intent, domain, complexity)) = &self.scores {
            put("x-switchyard-intent", header_value(intent));
            put("x-switchyard-domain", header_value(domain));
            put(
                "x-switchyard-complexity",
                header_value(&format!("{complexity:.3}")),
            );
        }
        if let Some(first) = &self.unchecked_domain {
            put("x-switchyard-domain-checked", header_value(first));
        }
        if let Some(first) = &self.unchecked_intent {
            put("x-switchyard-intent-checked", header_value(first));
        }
        if let Some(p) = &self.policy {
            put("x-switchyard-policy", header_value(p));
        }
        if let Some(c) = self.cost_usd {
            put("x-switchyard-cost-usd", header_value(&format!("{c:.8}")));
        }
        put(
            "x-switchyard-overhead-ms",
            header_value(&format!("{:.3}", overhead.as_secs_f64() * 1000.0)),
        );
        h
    }
}

/// Time spent in the router: before the first upstream call, and after the answer arrived.
fn overhead(start: Instant, trace: &Trace, answer_at: Option<Instant>) -> Duration {
    let now = Instant::now();
    match (trace.first_call(), answer_at) {
        (Some(first), Some(at)) => first.duration_since(start) + now.duration_since(at),
        (Some(first), None) => first.duration_since(start),
        (None, _) => now.duration_since(start),
    }
}

async fn chat(State(s): State<Arc<AppState>>, req: Request) -> Response {
    let start = Instant::now();
    s.metrics.in_flight.inc();
    let id = s.next_id.fetch_add(1, Ordering::Relaxed);
    let mut decision = Decision {
        request_id: format!("{}-{id}", s.id_prefix),
        tier: None,
        reason: "none",
        target: None,
        cascade: None,
        cost_usd: None,
        rule: None,
        scores: None,
        unchecked_domain: None,
        unchecked_intent: None,
        policy: None,
        prompt_chars: None,
        prompt: None,
    };
    let trace = Trace::default();
    let result = handle_chat(&s, req, start, &trace, &mut decision).await;
    s.metrics.in_flight.dec();
    match result {
        Ok(resp) => resp,
        Err((e, stream)) => {
            let tier = decision.tier.clone().unwrap_or_else(|| "none".into());
            s.metrics
                .requests
                .get_or_create(&RequestLabels {
                    tier,
                    status: e.status().as_u16(),
                    stream,
                })
                .inc();
            let h = decision.headers(&trace, overhead(start, &trace, None));
            error_response(&e, h)
        }
    }
}

async fn handle_chat(
    s: &Arc<AppState>,
    req: Request,
    start: Instant,
    trace: &Trace,
    decision: &mut Decision,
) -> Result<Response, (ApiError, bool)> {
    let (parts, body) = req.into_parts();
    let allowed_tiers = check_auth(&s.config, &parts.headers).map_err(|e| (e, false))?;
    let limit = s.config.server.max_body_bytes;
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(s.config.server.body_read_timeout, read).await {
        Err(_) => return Err((ApiError::RequestTimeout, false)),
        Ok(Err(_)) => return Err((ApiError::PayloadTooLarge(limit), false)),
        Ok(Ok(b)) => b,
    };
    let chat = ChatRequest::parse(&bytes).map_err(|e| (e, false))?;
    let stream = chat.stream;
    if let Some(log) = &s.decision_log {
        let messages = chat.body.get("messages").and_then(|m| m.as_array());
        let text = crate::classifier::prompt_text(messages.map_or(&[][..], Vec::as_slice));
        decision.prompt_chars = Some(text.chars().count());
        decision.prompt = log.prompts.then_some(text);
    }
    let (mut plan, reason) = routing::plan(&s.config, &chat.model).map_err(|e| (e, stream))?;
    decision.reason = reason.as_str();
    if let routing::Reason::Router { threshold } = reason {
        let header_threshold = match parts.headers.get("x-switchyard-threshold") {
            None => None,
            Some(v) => Some(
                routing::parse_threshold(v.to_str().unwrap_or("?"), "x-switchyard-threshold")
                    .map_err(|e| (e, stream))?,
            ),
        };
        route_request(
            s,
            &chat,
            threshold.or(header_threshold),
            &mut plan,
            decision,
        )
        .await
        .map_err(|e| (e, stream))?;
    }
    decision.tier = Some(plan.tier.clone());
    if !allowed_tiers.is_empty() && !allowed_tiers.contains(&plan.tier) {
        return Err((
            ApiError::Forbidden(format!("this API key may not use the tier {:?}", plan.tier)),
            stream,
        ));
    }
    let total = s
        .engine
        .tiers
        .get(&plan.tier)
        .map_or(Duration::from_secs(60), |t| t.cfg.total);
    let deadline = start + total;

    let cascade_cfg = s
        .engine
        .tiers
        .get(&plan.tier)
        .and_then(|t| t.cfg.cascade.clone());
    if let Some(c) = &cascade_cfg {
        if stream && c.stream == StreamMode::Bypass {
            decision.cascade = Some(format!("{}:bypassed(stream)", plan.tier));
        } else {
            return run_cascade(s, &chat, &plan, start, deadline, total, trace, decision).await;
        }
    }

    let body_for = |model: &str| chat.body_for(model);
    let result = s
        .engine
        .execute(&plan, &body_for, stream, deadline, trace)
        .await;
    let won = match result {
        Ok(w) => w,
        Err(f) => return failure_response(s, f, &plan.tier, stream, total, start, trace, decision),
    };
    let Won {
        answer,
        target,
        at,
        tier,
    } = won;
    match answer {
        Answer::Full { bytes, json } => {
            let cost = crate::upstream::cost_usd(target.cfg.price, &json);
            let (headers, tier_labels) = answered(
                s, decision, &tier, &target, stream, start, at, at, cost, trace,
            );
            s.metrics
                .request_duration
                .get_or_create(&tier_labels)
                .observe(start.elapsed().as_secs_f64());
            Ok(json_ok(headers, bytes))
        }
        Answer::Stream {
            first,
            rest,
            parser,
            saw_done,
        } => {
            let (headers, tier_labels) = answered(
                s, decision, &tier, &target, stream, start, at, at, None, trace,
            );
            let relay = Relay {
                pending: first.into(),
                rest,
                parser,
                saw_done,
                finished: false,
                idle: target.cfg.slo.idle,
                deadline,
                target,
                metrics: s.metrics.clone(),
                tier: tier_labels,
                start,
            };
            Ok(sse_ok(headers, Body::from_stream(relay.into_stream())))
        }
    }
}

/// Rules first, then the classifier's scores: sets the plan's tier for the model `switchyard`.
async fn route_request(
    s: &Arc<AppState>,
    chat: &ChatRequest,
    threshold: Option<f64>,
    plan: &mut crate::resilience::Plan,
    decision: &mut Decision,
) -> Result<(), ApiError> {
    let messages = chat
        .body
        .get("messages")
        .and_then(|m| m.as_array())
        .map_or(&[][..], Vec::as_slice);
    let text = crate::classifier::chat_text(messages);
    if let Some(rule) = s.policy.rule_for(&text.text, chat.body.get("metadata")) {
        plan.tier = rule.tier.clone();
        decision.rule = Some(rule.name.clone());
        decision.reason = "rule";
        return Ok(());
    }
    let Some(classifier) = s.classifier.clone() else {
        return Ok(());
    };
    // A prompt of up to INLINE_CLASSIFY_BYTES is classified in place: that takes tens of
    // microseconds (`cargo bench --bench router`), less than a hand-off to the blocking pool.
    // Longer ones, and the domain check's second model (milliseconds with an encoder), run off
    // the async runtime; when too many are queued, shed.
    let inline = classifier.is_static() && text.text.len() <= INLINE_CLASSIFY_BYTES;
    let scores = if inline {
        classifier.classify_chat_unchecked(&text)
    } else {
        off_runtime(s, classifier.clone(), text.clone(), None).await?
    };
    let scores = if classifier.needs_check(&scores) {
        if classifier.is_static_with_check() && inline {
            let mut scores = scores;
            classifier.check(&text, ChatReading::Both, &mut scores);
            scores
        } else {
            off_runtime(s, classifier, text, Some(scores)).await?
        }
    } else {
        scores
    };
    let (tier, why) = s.policy.tier_for_scores(&scores, threshold);
    plan.tier = tier;
    decision.reason = "classifier";
    decision.policy = Some(why);
    let outcome = |first: &String, last: &String| {
        let outcome = if first == last { "kept" } else { "changed" };
        crate::telemetry::CheckLabels {
            outcome: outcome.into(),
        }
    };
    if let Some(first) = &scores.unchecked_domain {
        s.metrics
            .domain_checks
            .get_or_create(&outcome(first, &scores.domain))
            .inc();
    }
    if let Some(first) = &scores.unchecked_intent {
        s.metrics
            .intent_checks
            .get_or_create(&outcome(first, &scores.intent))
            .inc();
    }
    decision.unchecked_domain = scores.unchecked_domain;
    decision.unchecked_intent = scores.unchecked_intent;
    decision.scores = Some((scores.intent, scores.domain, scores.complexity));
    Ok(())
}

/// Classifies `chat` on the blocking pool (or, given this model's `scores`, checks their
/// domain there), holding one of the bounded classification permits.
async fn off_runtime(
    s: &AppState,
    classifier: std::sync::Arc<crate::classifier::Classifier>,
    chat: crate::classifier::ChatText,
    scores: Option<crate::classifier::Scores>,
) -> Result<crate::classifier::Scores, ApiError> {
    let permit = s
        .classify_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match scores {
            None => classifier.classify_chat(&chat),
            Some(mut scores) => {
                classifier.check(&chat, ChatReading::Both, &mut scores);
                scores
            }
        }
    })
    .await
    .map_err(|_| ApiError::Internal)
}

/// Records an answer from `tier`'s `target` (which arrived at `at` and reaches the client at
/// `first_byte`): the request and cost counters, time to first token and router overhead.
/// Returns the decision headers and the tier's metric labels.
#[allow(clippy::too_many_arguments)]
fn answered(
    s: &AppState,
    decision: &mut Decision,
    tier: &str,
    target: &TargetRuntime,
    stream: bool,
    start: Instant,
    at: Instant,
    first_byte: Instant,
    cost_usd: Option<f64>,
    trace: &Trace,
) -> (HeaderMap, TierLabels) {
    decision.tier = Some(tier.to_string());
    decision.target = Some(target.cfg.id.clone());
    decision.cost_usd = cost_usd;
    let tier_labels = TierLabels {
        tier: tier.to_string(),
    };
    if let Some(c) = cost_usd {
        s.metrics.cost.get_or_create(&tier_labels).inc_by(c);
    }
    s.metrics
        .requests
        .get_or_create(&RequestLabels {
            tier: tier.to_string(),
            status: 200,
            stream,
        })
        .inc();
    s.metrics
        .ttft
        .get_or_create(&tier_labels)
        .observe(first_byte.duration_since(start).as_secs_f64());
    let oh = overhead(start, trace, Some(at));
    s.metrics.overhead.observe(oh.as_secs_f64());
    if let Some(log) = &s.decision_log {
        log.record(&decision.record(target, stream, first_byte.duration_since(start), oh));
    }
    (decision.headers(trace, oh), tier_labels)
}

fn json_ok(headers: HeaderMap, body: Bytes) -> Response {
    let mut r = (StatusCode::OK, headers, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn sse_ok(headers: HeaderMap, body: Body) -> Response {
    let mut r = (StatusCode::OK, headers, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

/// The response for a request no tier could answer.
#[allow(clippy::too_many_arguments)]
fn failure_response(
    s: &AppState,
    f: Failure,
    tier: &str,
    stream: bool,
    total: Duration,
    start: Instant,
    trace: &Trace,
    decision: &Decision,
) -> Result<Response, (ApiError, bool)> {
    match f {
        Failure::Passthrough { status, body } => {
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            s.metrics
                .requests
                .get_or_create(&RequestLabels {
                    tier: tier.to_string(),
                    status,
                    stream,
                })
                .inc();
            let mut h = decision.headers(trace, overhead(start, trace, None));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok((code, h, body).into_response())
        }
        Failure::AllFailed => Err((
            ApiError::AllTargetsFailed(format!("every target failed: {}", trace.route())),
            stream,
        )),
        Failure::Deadline => Err((
            ApiError::DeadlineExceeded(format!(
                "no answer within the {}ms deadline: {}",
                total.as_millis(),
                trace.route()
            )),
            stream,
        )),
    }
}

/// The cascade path: a non-streaming call per tier, checked; streamed out afterwards if asked.
#[allow(clippy::too_many_arguments)]
async fn run_cascade(
    s: &Arc<AppState>,
    chat: &ChatRequest,
    plan: &crate::resilience::Plan,
    start: Instant,
    deadline: Instant,
    total: Duration,
    trace: &Trace,
    decision: &mut Decision,
) -> Result<Response, (ApiError, bool)> {
    let stream = chat.stream;
    let checks = RequestChecks::from_request(&chat.body, &s.schemas)
        .map_err(|(message, param)| (ApiError::bad_request(message, Some(&param)), stream))?;
    let body_for = |model: &str, logprobs: bool| chat.body_for_cascade(model, logprobs);
    let mut path = CascadePath::default();
    let result = cascade::run(
        &s.engine, &s.metrics, plan, &checks, &body_for, deadline, trace, &mut path,
    )
    .await;
    decision.cascade = Some(path.render());
    let settled = match result {
        Ok(x) => x,
        Err(CascadeError::Failed(f)) => {
            return failure_response(s, f, &plan.tier, stream, total, start, trace, decision)
        }
        Err(CascadeError::Rejected(msg)) => return Err((ApiError::CascadeRejected(msg), stream)),
    };
    // The client's first byte is now: the checked answer goes out whole.
    let (headers, tier_labels) = answered(
        s,
        decision,
        &settled.tier,
        &settled.target,
        stream,
        start,
        settled.at,
        Instant::now(),
        settled.cost_usd,
        trace,
    );
    s.metrics
        .request_duration
        .get_or_create(&tier_labels)
        .observe(start.elapsed().as_secs_f64());
    if stream {
        let include_usage = chat
            .body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(|v| v.as_bool())
            == Some(true);
        let events = sse::completion_to_events(&settled.answer, include_usage);
        let body = Body::from_stream(futures_util::stream::iter(
            events.into_iter().map(Ok::<Bytes, std::io::Error>),
        ));
        Ok(sse_ok(headers, body))
    } else {
        Ok(json_ok(headers, Bytes::from(settled.answer.to_string())))
    }
}

/// Forwards an upstream stream to the client event by event, as each upstream chunk arrives.
/// After the first byte has reached the client the stream cannot fail over: a failure ends it
/// with an OpenAI-shaped error event (and no `[DONE]`).
struct Relay {
    pending: std::collections::VecDeque<Bytes>,
    rest: ByteStream,
    parser: SseParser,
    saw_done: bool,
    finished: bool,
    idle: Duration,
    deadline: Instant,
    target: Arc<TargetRuntime>,
    metrics: Arc<Metrics>,
    tier: TierLabels,
    start: Instant,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.metrics
            .request_duration
            .get_or_create(&self.tier)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Relay {
    fn into_stream(self) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold(self, |mut r| async move {
            let next = r.next_bytes().await?;
            Some((Ok(next), r))
        })
    }

    fn fail(&mut self, e: &UpstreamError, code: &str) -> Bytes {
        self.finished = true;
        if e.counts_against_health() {
            self.target.stream_failed(&self.metrics);
        } else {
            self.target.breaker.on_success();
        }
        tracing::warn!(target_id = %self.target.cfg.id, error = %e, "stream failed after its first byte");
        error_event(
            &format!("upstream {} failed mid-stream: {e}", self.target.cfg.id),
            code,
        )
    }

    async fn next_bytes(&mut self) -> Option<Bytes> {
        if let Some(b) = self.pending.pop_front() {
            return Some(b);
        }
        if self.finished || self.saw_done {
            return None;
        }
        loop {
            let idle_at = Instant::now() + self.idle;
            let until = idle_at.min(self.deadline);
            let item = match tokio::time::timeout_at(until, self.rest.next()).await {
                Err(_) if until == self.deadline => {
                    return Some(self.fail(&UpstreamError::Deadline, "deadline_exceeded"));
                }
                Err(_) => {
                    return Some(
                        self.fail(&UpstreamError::IdleTimeout(self.idle), "stream_stalled"),
                    )
                }
                Ok(i) => i,
            };
            let chunk = match item {
                None => {
                    return if self.saw_done {
                        None
                    } else {
                        Some(self.fail(
                            &UpstreamError::Closed("stream ended without [DONE]"),
                            "stream_truncated",
                        ))
                    };
                }
                Some(Err(e)) => return Some(self.fail(&classify(&e), "stream_interrupted")),
                Some(Ok(c)) => c,
            };
            let events = match self.parser.push(&chunk) {
                Ok(ev) => ev,
                Err(e) => {
                    return Some(
                        self.fail(&UpstreamError::Malformed(e.to_string()), "stream_malformed"),
                    )
                }
            };
            if events.is_empty() {
                continue;
            }
            let mut out = bytes::BytesMut::new();
            for ev in events {
                if let Some(msg) = ev.error_message() {
                    // Forward what came before, then the upstream's own error event, and stop.
                    self.finished = true;
                    self.target.stream_failed(&self.metrics);
                    tracing::warn!(target_id = %self.target.cfg.id, error = %msg, "upstream sent an error event mid-stream");
                    out.extend_from_slice(&ev.raw);
                    break;
                }
                self.saw_done |= ev.is_done();
                out.extend_from_slice(&ev.raw);
            }
            return Some(out.freeze());
        }
    }
}
