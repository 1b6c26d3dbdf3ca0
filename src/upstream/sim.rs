//! A simulated OpenAI-compatible upstream: the same component serves `switchyard demo`, the
//! integration tests and the benchmarks.
//!
//! It answers `POST /v1/chat/completions` (non-streaming and SSE, with `stream_options.include_usage`,
//! `max_tokens` truncation and optional logprobs) and `GET /v1/models`, after a configurable
//! latency, with a configurable random failure rate. Tests script exact misbehaviour with
//! [`Fault`]s, consumed one per request in order, and count the calls it received.
//!
//! It is built on hyper directly rather than axum so that it can misbehave at the transport
//! level: drop a connection before answering, or abort a stream halfway.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How a simulated upstream behaves when no fault is scripted.
#[derive(Debug, Clone)]
pub struct SimSpec {
    /// The model name it reports in answers.
    pub model: String,
    /// Delay before the response headers.
    pub latency: Duration,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// Share of requests (0..1) answered with a 500 at random.
    pub failure_rate: f64,
    /// Share of requests (0..1) that stall for `stall` before their headers, at random.
    pub stall_rate: f64,
    pub stall: Duration,
    /// Words in each answer.
    pub words: usize,
    /// The log-probability reported for each token when logprobs are asked for.
    pub logprob: f64,
    /// Random faults: each request draws one, `(probability, fault)`, in order; the rest of the
    /// probability mass answers normally.
    pub random_faults: Vec<(f64, Fault)>,
    pub seed: u64,
}

impl SimSpec {
    pub fn new(model: impl Into<String>) -> Self {
        SimSpec {
            model: model.into(),
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            failure_rate: 0.0,
            stall_rate: 0.0,
            stall: Duration::from_secs(5),
            words: 12,
            logprob: -0.05,
            random_faults: Vec::new(),
            seed: 7,
        }
    }
}

/// One scripted misbehaviour, used for the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// An error status with an OpenAI error body, and `Retry-After` seconds if given.
    Status { code: u16, retry_after: Option<u64> },
    /// Drop the connection without answering.
    Reset,
    /// 200 with a body that is not JSON.
    Malformed,
    /// Wait this long before the response headers.
    StallHeaders(Duration),
    /// Streaming: headers at once, the first chunk after this long (non-streaming: like a stall).
    SlowFirstToken(Duration),
    /// Streaming: the first chunk, then silence for this long, then the rest.
    StallAfterFirstChunk(Duration),
    /// Streaming: this delay between every chunk.
    SlowChunks(Duration),
    /// Streaming: a few chunks, then a clean end without `[DONE]`.
    TruncatedStream,
    /// Streaming: the first chunk, then the connection is aborted.
    AbortStream,
    /// Streaming: an in-band error event instead of the first chunk.
    ErrorEvent,
    /// 200 with a JSON answer whose `finish_reason` is `length`.
    Length,
    /// Answer with exactly this content.
    Content(String),
    /// Answer with a call to this tool instead of content.
    ToolCall { name: String, arguments: String },
    /// Answer normally, reporting this log-probability for every token (when asked for logprobs).
    Logprob(f64),
    /// A buggy upstream: a 400 whose message echoes the request's `Authorization` header.
    EchoAuth,
    /// 200 with an answer of this many bytes of content.
    Huge(usize),
}

impl Fault {
    /// A short name, for counting injected faults.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status { code: 429, .. } => "429 + Retry-After",
            Fault::Status { code, .. } if *code >= 500 => "5xx",
            Fault::Status { .. } => "4xx",
            Fault::Reset => "connection reset",
            Fault::Malformed => "malformed JSON",
            Fault::StallHeaders(_) => "stall before headers",
            Fault::SlowFirstToken(_) => "slow first token",
            Fault::StallAfterFirstChunk(_) => "stall after first chunk",
            Fault::SlowChunks(_) => "slow every chunk",
            Fault::TruncatedStream => "truncated SSE",
            Fault::AbortStream => "aborted SSE",
            Fault::ErrorEvent => "error event",
            Fault::Length => "finish_reason length",
            Fault::Content(_) => "scripted content",
            Fault::ToolCall { .. } => "scripted tool call",
            Fault::Logprob(_) => "scripted logprob",
            Fault::EchoAuth => "echoed credentials",
            Fault::Huge(_) => "huge answer",
        }
    }
}

#[derive(Debug)]
struct Shared {
    spec: SimSpec,
    script: Mutex<VecDeque<Fault>>,
    calls: AtomicUsize,
    /// Chat requests being handled now (a cancelled one is dropped by hyper and leaves).
    active: AtomicUsize,
    requests: Mutex<VecDeque<Value>>,
    rng: Mutex<fastrand::Rng>,
    injected: Mutex<std::collections::BTreeMap<&'static str, usize>>,
}

/// Kept request bodies, newest last, for tests to inspect.
const KEPT_REQUESTS: usize = 32;

/// A running simulated upstream; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Abort;
impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection abort")
    }
}
impl std::error::Error for Abort {}

type SimBody = UnsyncBoxBody<Bytes, Abort>;

impl SimServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub async fn start(spec: SimSpec) -> std::io::Result<SimServer> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?, spec).await
    }

    pub async fn start_on(addr: SocketAddr, spec: SimSpec) -> std::io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rng: Mutex::new(fastrand::Rng::with_seed(spec.seed)),
            spec,
            script: Mutex::new(VecDeque::new()),
            calls: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            requests: Mutex::new(VecDeque::new()),
            injected: Mutex::new(Default::default()),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(SimServer { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to put in a provider's `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Chat completion requests received so far.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Chat requests in progress (headers not yet sent); one whose client hung up is dropped.
    pub fn active(&self) -> usize {
        self.shared.active.load(Ordering::SeqCst)
    }

    /// Queues faults for the next requests, in order.
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.script).extend(faults);
    }

    /// Faults injected so far, by kind (scripted and random).
    pub fn injected(&self) -> std::collections::BTreeMap<&'static str, usize> {
        lock(&self.shared.injected).clone()
    }

    /// The most recent request bodies received (up to 32).
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.requests).iter().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<SimBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<SimBody> {
    full(status, "application/json", v.to_string())
}

fn error_body(message: &str, kind: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<SimBody>, Abort> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/models") => Ok(json_response(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": shared.spec.model, "object": "model", "owned_by": "switchyard-sim"}]}),
        )),
        (&Method::POST, "/v1/chat/completions") => chat(shared, req).await,
        _ => Ok(json_response(
            StatusCode::NOT_FOUND,
            &error_body("not found", "invalid_request_error"),
        )),
    }
}

/// The text of the last user message, for the simulated answer to echo.
fn last_user_text(body: &Value) -> String {
    let msgs = body.get("messages").and_then(Value::as_array);
    let Some(m) = msgs.and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    }) else {
        return String::new();
    };
    crate::classifier::message_text(m)
}

struct Plan {
    id: String,
    created: u64,
    model: String,
    /// The answer in the pieces it is streamed in; concatenated, the content.
    tokens: Vec<String>,
    tool_call: Option<(String, String)>,
    finish: &'static str,
    logprobs: bool,
    logprob: f64,
    usage: Value,
}

/// Splits text into stream pieces, each word carrying the space before it.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, w) in text.split(' ').enumerate() {
        if i == 0 {
            out.push(w.to_string());
        } else {
            out.push(format!(" {w}"));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

impl Plan {
    fn new(shared: &Shared, body: &Value, n: usize, fault: &Fault) -> Plan {
        let spec = &shared.spec;
        let mut tool_call = None;
        let mut tokens = match fault {
            Fault::Content(c) => pieces(c),
            Fault::ToolCall { name, arguments } => {
                tool_call = Some((name.clone(), arguments.clone()));
                Vec::new()
            }
            _ => {
                let echo: String = last_user_text(body).chars().take(120).collect();
                let mut words: Vec<String> = format!("{} answers: {}", spec.model, echo)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                let filler = [
                    "this",
                    "is",
                    "a",
                    "simulated",
                    "answer",
                    "from",
                    "switchyard's",
                    "test",
                    "upstream.",
                ];
                let mut i = 0;
                while words.len() < spec.words {
                    words.push(filler[i % filler.len()].to_string());
                    i += 1;
                }
                words.truncate(spec.words.max(1));
                let json_mode = matches!(
                    body.pointer("/response_format/type")
                        .and_then(Value::as_str),
                    Some("json_object" | "json_schema")
                );
                if json_mode {
                    pieces(&json!({"answer": words.join(" ")}).to_string())
                } else {
                    pieces(&words.join(" "))
                }
            }
        };
        let max_tokens = body
            .get("max_completion_tokens")
            .or_else(|| body.get("max_tokens"))
            .and_then(Value::as_u64);
        let mut finish = if tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        };
        if let Some(m) = max_tokens {
            if (m as usize) < tokens.len() {
                tokens.truncate(m as usize);
                finish = "length";
            }
        }
        if *fault == Fault::Length {
            finish = "length";
        }
        let logprob = match fault {
            Fault::Logprob(l) => *l,
            _ => spec.logprob,
        };
        let prompt_tokens = body.get("messages").map_or(0, |m| m.to_string().len() / 4);
        let completion_tokens = tokens.len().max(1);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Plan {
            id: format!("chatcmpl-sim-{n}"),
            created,
            model: spec.model.clone(),
            tool_call,
            finish,
            logprobs: body.get("logprobs").and_then(Value::as_bool) == Some(true),
            logprob,
            usage: json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}),
            tokens,
        }
    }

    fn logprobs_of(&self, tokens: &[String]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        json!({"content": tokens.iter().map(|t| json!({"token": t, "logprob": self.logprob, "bytes": null, "top_logprobs": []})).collect::<Vec<_>>()})
    }

    fn tool_calls(&self) -> Option<Value> {
        self.tool_call.as_ref().map(|(name, args)| {
            json!([{"id": "call_sim_1", "type": "function", "function": {"name": name, "arguments": args}}])
        })
    }

    fn completion(&self) -> Value {
        let content = if self.tool_call.is_some() {
            Value::Null
        } else {
            json!(self.tokens.concat())
        };
        let mut message = json!({"role": "assistant", "content": content});
        if let Some(tc) = self.tool_calls() {
            message["tool_calls"] = tc;
        }
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": message,
                         "logprobs": self.logprobs_of(&self.tokens), "finish_reason": self.finish}],
            "usage": self.usage,
        })
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, logprobs: Value) -> Bytes {
        let v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        });
        Bytes::from(format!("data: {v}\n\n"))
    }

    /// Every event of the stream, in order.
    fn events(&self, include_usage: bool) -> Vec<Bytes> {
        let mut out = vec![self.chunk(
            json!({"role": "assistant", "content": ""}),
            None,
            Value::Null,
        )];
        for tok in &self.tokens {
            out.push(self.chunk(
                json!({"content": tok}),
                None,
                self.logprobs_of(std::slice::from_ref(tok)),
            ));
        }
        if let Some(Value::Array(calls)) = self.tool_calls() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|mut c| {
                    c["index"] = json!(0);
                    c
                })
                .collect();
            out.push(self.chunk(json!({"tool_calls": calls}), None, Value::Null));
        }
        out.push(self.chunk(json!({}), Some(self.finish), Value::Null));
        if include_usage {
            let v = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                           "model": self.model, "choices": [], "usage": self.usage});
            out.push(Bytes::from(format!("data: {v}\n\n")));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

type Steps = Vec<(Duration, Result<Bytes, Abort>)>;

fn sse_response(steps: Steps) -> Response<SimBody> {
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut it| async move {
        let (delay, item) = it.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((item.map(Frame::data), it))
    });
    let stream: Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, Abort>> + Send>> = Box::pin(stream);
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    r
}

struct ActiveGuard(Arc<Shared>);
impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<SimBody>, Abort> {
    let n = shared.calls.fetch_add(1, Ordering::SeqCst) + 1;
    shared.active.fetch_add(1, Ordering::SeqCst);
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let _active = ActiveGuard(shared.clone());
    let Ok(collected) = req.into_body().collect().await else {
        return Err(Abort);
    };
    let body: Value = match serde_json::from_slice(&collected.to_bytes()) {
        Ok(v) => v,
        Err(e) => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &error_body(&format!("invalid JSON: {e}"), "invalid_request_error"),
            ))
        }
    };
    {
        let mut kept = lock(&shared.requests);
        if kept.len() == KEPT_REQUESTS {
            kept.pop_front();
        }
        kept.push_back(body.clone());
    }
    let fault = lock(&shared.script).pop_front().unwrap_or_else(|| {
        let (fail, stall, pick) = {
            let mut rng = lock(&shared.rng);
            (rng.f64(), rng.f64(), rng.f64())
        };
        if fail < shared.spec.failure_rate {
            return Fault::Status {
                code: 500,
                retry_after: None,
            };
        }
        if stall < shared.spec.stall_rate {
            return Fault::StallHeaders(shared.spec.stall);
        }
        let mut acc = 0.0;
        for (p, f) in &shared.spec.random_faults {
            acc += p;
            if pick < acc {
                return f.clone();
            }
        }
        Fault::None
    });
    if fault != Fault::None {
        *lock(&shared.injected).entry(fault.name()).or_default() += 1;
    }
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let plan = Plan::new(&shared, &body, n, &fault);
    let latency = shared.spec.latency;
    let gap = shared.spec.chunk_delay;

    match fault {
        Fault::Status { code, retry_after } => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = json_response(
                status,
                &error_body(&format!("simulated {code}"), "server_error"),
            );
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, http::HeaderValue::from(s));
            }
            return Ok(r);
        }
        Fault::Reset => return Err(Abort),
        Fault::EchoAuth => {
            return Ok(json_response(
                StatusCode::BAD_REQUEST,
                &error_body(
                    &format!("invalid request; you sent Authorization: {auth}"),
                    "invalid_request_error",
                ),
            ))
        }
        Fault::Huge(n) => {
            let mut c = plan.completion();
            c["choices"][0]["message"]["content"] = json!("x".repeat(n));
            return Ok(json_response(StatusCode::OK, &c));
        }
        Fault::Malformed => {
            return Ok(full(
                StatusCode::OK,
                "application/json",
                "{\"id\": \"chatcmpl-broken\", \"choices\": [",
            ))
        }
        Fault::StallHeaders(d) => tokio::time::sleep(d).await,
        Fault::SlowFirstToken(d) if !stream => tokio::time::sleep(d).await,
        _ => {}
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !stream {
        return Ok(json_response(StatusCode::OK, &plan.completion()));
    }

    let events = plan.events(include_usage);
    let mut steps: Steps = Vec::with_capacity(events.len());
    for (i, ev) in events.into_iter().enumerate() {
        let delay = match (&fault, i) {
            (Fault::SlowFirstToken(d), 0) => *d,
            (Fault::StallAfterFirstChunk(d), 1) => *d,
            (Fault::SlowChunks(d), _) => *d,
            (_, 0) => Duration::ZERO,
            _ => gap,
        };
        steps.push((delay, Ok(ev)));
    }
    match fault {
        Fault::TruncatedStream => steps.truncate(3),
        Fault::AbortStream => {
            steps.truncate(2);
            // A pause so the first chunks are flushed before the connection drops.
            steps.push((Duration::from_millis(50), Err(Abort)));
        }
        Fault::ErrorEvent => {
            steps = vec![(
                Duration::ZERO,
                Ok(Bytes::from(format!(
                    "data: {}\n\n",
                    error_body("simulated overload", "server_error")
                ))),
            )];
        }
        _ => {}
    }
    Ok(sse_response(steps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_and_counts() {
        let sim = SimServer::start(SimSpec::new("m")).await.unwrap();
        crate::upstream::ensure_crypto_provider();
        let c = reqwest::Client::new();
        let r = c
            .post(format!("{}/chat/completions", sim.base_url()))
            .body(r#"{"model":"m","messages":[{"role":"user","content":"hello there"}],"max_tokens":3}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["model"], "m");
        assert_eq!(sim.calls(), 1);
        sim.script([Fault::Status {
            code: 503,
            retry_after: Some(1),
        }]);
        let r = c
            .post(format!("{}/chat/completions", sim.base_url()))
            .body(r#"{"model":"m","messages":[]}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(sim.calls(), 2);
        assert_eq!(sim.requests().len(), 2);
    }
}
