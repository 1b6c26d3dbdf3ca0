//! Fault injection under load: simulated upstreams that misbehave at random in every way a
//! provider can, a router configured over them, and a bounded load that checks every single
//! response. Used by the integration tests (a short run) and by `scripts/chaos` (a long one).
//!
//! Topology: tier `cheap` = a dead port (connection refused), two faulty targets, and one
//! healthy target; it falls back to tier `reasoning` = one faulty and one healthy target. With a
//! healthy target in every tier, every request must succeed, except streams that an upstream
//! broke after their first byte had reached the client (no failover is possible then; they
//! must end with an error event, never hang or end silently).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::upstream::sim::{Fault, SimServer, SimSpec};

/// The total SLO of every tier in the chaos config.
pub const TOTAL_SLO: Duration = Duration::from_secs(3);

/// The simulated upstreams of a chaos run; dropped, they stop.
pub struct Upstreams {
    pub sims: Vec<(String, SimServer)>,
    dead_url: String,
}

/// Every kind of fault the faulty upstreams inject.
fn fault_kinds() -> Vec<Fault> {
    vec![
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        Fault::Status {
            code: 429,
            retry_after: Some(0),
        },
        Fault::Status {
            code: 429,
            retry_after: Some(30),
        },
        Fault::Reset,
        Fault::Malformed,
        Fault::StallHeaders(Duration::from_secs(5)),
        Fault::SlowFirstToken(Duration::from_secs(2)),
        Fault::StallAfterFirstChunk(Duration::from_secs(5)),
        Fault::SlowChunks(Duration::from_millis(20)),
        Fault::TruncatedStream,
        Fault::AbortStream,
        Fault::ErrorEvent,
    ]
}

fn faulty(model: &str, seed: u64, share: f64) -> SimSpec {
    let mut s = SimSpec::new(model);
    s.seed = seed;
    s.words = 8;
    s.chunk_delay = Duration::from_millis(2);
    let kinds = fault_kinds();
    let each = share / kinds.len() as f64;
    s.random_faults = kinds.into_iter().map(|f| (each, f)).collect();
    s
}

impl Upstreams {
    pub async fn start() -> std::io::Result<Upstreams> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let dead_url = format!("http://{}/v1", l.local_addr()?);
        drop(l);
        let mut healthy = SimSpec::new("healthy-cheap");
        healthy.latency = Duration::from_millis(5);
        healthy.words = 8;
        let mut healthy_r = SimSpec::new("healthy-reasoning");
        healthy_r.latency = Duration::from_millis(10);
        healthy_r.words = 8;
        let specs = [
            ("faulty-a", faulty("faulty-a", 1, 0.5)),
            ("faulty-b", faulty("faulty-b", 2, 0.3)),
            ("healthy-c", healthy),
            ("faulty-d", faulty("faulty-d", 3, 0.4)),
            ("healthy-e", healthy_r),
        ];
        let mut sims = Vec::new();
        for (name, spec) in specs {
            sims.push((name.to_string(), SimServer::start(spec).await?));
        }
        // Random faults alone can miss a rare kind in a short run (the breakers keep load off
        // the faulty targets): the first calls to faulty-d, the reasoning tier's first target,
        // get one of each kind, in order. (faulty-a is left to random faults, so its breaker
        // can be seen to recover.)
        if let Some((_, d)) = sims.iter().find(|(n, _)| n == "faulty-d") {
            d.script(fault_kinds());
        }
        Ok(Upstreams { sims, dead_url })
    }

    fn url(&self, name: &str) -> String {
        self.sims
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| self.dead_url.clone(), |(_, s)| s.base_url())
    }

    /// The router config over these upstreams.
    pub fn config(&self, listen: &str) -> String {
        let mut t = format!("[server]\nlisten = \"{listen}\"\nmax_concurrency = 4096\n[routing]\ndefault_tier = \"cheap\"\n");
        t.push_str(&format!(
            "[providers.dead]\nbase_url = \"{}\"\nconnect_timeout = \"200ms\"\n",
            self.dead_url
        ));
        for name in ["faulty-a", "faulty-b", "healthy-c", "faulty-d", "healthy-e"] {
            t.push_str(&format!(
                "[providers.{name}]\nbase_url = \"{}\"\n",
                self.url(name)
            ));
        }
        let common = r#"slo = { ttft = "300ms", total = "3s", idle = "300ms" }
retry = { max_retries = 1, backoff = "10ms", retry_after_cap = "200ms" }
health = { failures = 5, window = "10s", cooldown = "1s" }"#;
        t.push_str(&format!(
            "[tiers.cheap]\n{common}\nfallback_tier = \"reasoning\"\ntargets = [{{ provider = \"dead\", model = \"dead\" }}, {{ provider = \"faulty-a\", model = \"faulty-a\" }}, {{ provider = \"faulty-b\", model = \"faulty-b\" }}, {{ provider = \"healthy-c\", model = \"healthy-cheap\" }}]\n"
        ));
        t.push_str(&format!(
            "[tiers.reasoning]\n{common}\ntargets = [{{ provider = \"faulty-d\", model = \"faulty-d\" }}, {{ provider = \"healthy-e\", model = \"healthy-reasoning\" }}]\n"
        ));
        t
    }

    /// Faults injected so far, by kind, over every upstream.
    pub fn injected(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for (_, s) in &self.sims {
            for (k, v) in s.injected() {
                *out.entry(k).or_default() += v;
            }
        }
        out
    }

    /// Chat requests each upstream received.
    pub fn calls(&self) -> Vec<(String, usize)> {
        self.sims
            .iter()
            .map(|(n, s)| (n.clone(), s.calls()))
            .collect()
    }
}

/// What one request ended as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A complete answer (a JSON completion, or a stream ending in `[DONE]`).
    Ok,
    /// A stream that started, then ended with a well-formed error event (code given).
    StreamErrorAfterFirstByte(String),
    /// A well-formed OpenAI error response with this status.
    HttpError(u16),
    /// Anything else: a broken body, a stream that ended silently, a transport error. Never allowed.
    Violation(String),
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub requests: usize,
    pub outcomes: BTreeMap<Outcome, usize>,
    /// Milliseconds to the end of each response.
    pub latencies_ms: Vec<f64>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies_ms.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
    }
    pub fn max_ms(&self) -> f64 {
        self.latencies_ms.iter().copied().fold(0.0, f64::max)
    }
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes
            .iter()
            .filter(|(k, _)| f(k))
            .map(|(_, v)| *v)
            .sum()
    }
}

fn classify_json(status: u16, body: &[u8]) -> Outcome {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Outcome::Violation(format!("http {status}: body is not JSON")),
    };
    if status == 200 {
        if v.get("choices").is_some_and(Value::is_array) {
            Outcome::Ok
        } else {
            Outcome::Violation("200 without choices".into())
        }
    } else if v.pointer("/error/message").is_some_and(Value::is_string)
        && v.pointer("/error/type").is_some()
    {
        Outcome::HttpError(status)
    } else {
        Outcome::Violation(format!("http {status}: not an OpenAI error body"))
    }
}

fn classify_stream(text: &str) -> Outcome {
    let events: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let Some(last) = events.last() else {
        return Outcome::Violation("empty stream".into());
    };
    for e in &events[..events.len() - 1] {
        if !e.starts_with("data: {") {
            return Outcome::Violation(format!("unexpected event {e:.60}"));
        }
    }
    if *last == "data: [DONE]" {
        return Outcome::Ok;
    }
    match last
        .strip_prefix("data: ")
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
    {
        Some(v) if v.pointer("/error/message").is_some() => Outcome::StreamErrorAfterFirstByte(
            v.pointer("/error/code")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string(),
        ),
        _ => Outcome::Violation(format!(
            "stream ended without [DONE] or an error: {last:.60}"
        )),
    }
}

/// Sends `requests` requests at `concurrency` to `base_url`: every fourth streams, and the model
/// rotates between the router's choice and the two pinned tiers. Each request is bounded by
/// `TOTAL_SLO` + 5 s on the client side, so a hang shows as a violation rather than a stuck run.
pub async fn load(base_url: &str, requests: usize, concurrency: usize) -> LoadReport {
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
    {
        Ok(c) => c,
        Err(_) => return LoadReport::default(),
    };
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(LoadReport::default()));
    let start = Instant::now();
    let url = format!("{base_url}/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, results, url) =
            (client.clone(), next.clone(), results.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let stream = i % 4 == 3;
                let model = ["switchyard", "switchyard/cheap", "switchyard/reasoning"][i % 3];
                let body = json!({"model": model, "stream": stream,
                    "messages": [{"role": "user", "content": format!("request {i}: say something")}]});
                let t = Instant::now();
                let fut = async {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .map_err(|e| format!("send: {e}"))?;
                    let status = r.status().as_u16();
                    let is_sse = r
                        .headers()
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("text/event-stream"));
                    if is_sse {
                        let mut text = String::new();
                        let mut s = r.bytes_stream();
                        while let Some(c) = s.next().await {
                            let c = c.map_err(|e| format!("stream body: {e}"))?;
                            text.push_str(&String::from_utf8_lossy(&c));
                        }
                        Ok::<Outcome, String>(classify_stream(&text))
                    } else {
                        let b = r.bytes().await.map_err(|e| format!("body: {e}"))?;
                        Ok(classify_json(status, &b))
                    }
                };
                let outcome = match tokio::time::timeout(TOTAL_SLO + Duration::from_secs(5), fut).await {
                    Err(_) => Outcome::Violation("no response within the SLO + 5 s".into()),
                    Ok(Err(e)) => Outcome::Violation(e),
                    Ok(Ok(o)) => o,
                };
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                let mut r = results.lock().unwrap_or_else(|p| p.into_inner());
                r.requests += 1;
                *r.outcomes.entry(outcome).or_default() += 1;
                r.latencies_ms.push(ms);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut r = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    r.elapsed = start.elapsed();
    r
}

/// `switchyard_health_transitions_total` from a metrics page: (target, to) -> count.
pub fn transitions(metrics: &str) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_health_transitions_total{"))
    {
        let target = line
            .split("target=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        let to = line
            .split("to=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("");
        let n = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        out.insert((target.to_string(), to.to_string()), n);
    }
    out
}

/// The report as a Markdown table.
pub fn render(
    report: &LoadReport,
    injected: &BTreeMap<&'static str, usize>,
    calls: &[(String, usize)],
    transitions: &BTreeMap<(String, String), u64>,
) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{} requests in {:.1} s ({:.0} req/s); latency ms p50 {:.1}, p90 {:.1}, p99 {:.1}, max {:.1} (total SLO {} ms)\n\n",
        report.requests,
        report.elapsed.as_secs_f64(),
        report.requests as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.percentile(50.0),
        report.percentile(90.0),
        report.percentile(99.0),
        report.max_ms(),
        TOTAL_SLO.as_millis()
    ));
    s.push_str("| faults injected | count |\n|---|---|\n");
    for (k, v) in injected {
        s.push_str(&format!("| {k} | {v} |\n"));
    }
    s.push_str("| connection refused (target `dead`) | every call while healthy |\n\n| outcome | requests |\n|---|---|\n");
    for (k, v) in &report.outcomes {
        let name = match k {
            Outcome::Ok => "complete answer".to_string(),
            Outcome::StreamErrorAfterFirstByte(c) => {
                format!("stream ended by error event after first byte ({c})")
            }
            Outcome::HttpError(s) => format!("HTTP error {s}"),
            Outcome::Violation(v) => format!("VIOLATION: {v}"),
        };
        s.push_str(&format!("| {name} | {v} |\n"));
    }
    s.push_str("\n| upstream | calls |\n|---|---|\n");
    for (n, c) in calls {
        s.push_str(&format!("| {n} | {c} |\n"));
    }
    s.push_str("\n| breaker transitions | count |\n|---|---|\n");
    for ((t, to), n) in transitions {
        s.push_str(&format!("| {t} -> {to} | {n} |\n"));
    }
    s
}
