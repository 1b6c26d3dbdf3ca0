//! Streaming: chunk-by-chunk pass-through, failover before the first byte, errors after it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use switchyard::upstream::sim::{Fault, SimSpec};

use crate::harness::*;

struct Streamed {
    status: u16,
    headers: reqwest::header::HeaderMap,
    /// Each network chunk received, with when it arrived.
    chunks: Vec<(Duration, String)>,
}

impl Streamed {
    fn text(&self) -> String {
        self.chunks.iter().map(|(_, c)| c.as_str()).collect()
    }
    fn data_events(&self) -> Vec<String> {
        self.text()
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
            .collect()
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

async fn stream(h: &Harness, body: Value) -> Streamed {
    let start = Instant::now();
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut chunks = Vec::new();
    let mut s = r.bytes_stream();
    while let Some(c) = s.next().await {
        let c = c.unwrap();
        chunks.push((start.elapsed(), String::from_utf8(c.to_vec()).unwrap()));
    }
    Streamed {
        status,
        headers,
        chunks,
    }
}

fn stream_body(model: &str) -> Value {
    json!({"model": model, "stream": true, "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": "Count to five"}]})
}

#[tokio::test]
async fn chunks_pass_through_as_they_arrive() {
    let mut spec = SimSpec::new("a");
    spec.chunk_delay = Duration::from_millis(80);
    spec.words = 5;
    let a = sim_with(spec).await;
    let h = one_tier(&[("a", a.base_url())], "").await;
    let s = stream(&h, stream_body("switchyard")).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), "text/event-stream");
    assert_eq!(s.header("x-switchyard-target"), "a/a-model");
    assert_eq!(s.header("x-switchyard-attempts"), "1");
    assert!(!s.header("x-switchyard-overhead-ms").is_empty());
    let events = s.data_events();
    // role chunk, 5 words, finish chunk, usage chunk, [DONE]
    assert_eq!(events.len(), 9, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let usage: Value = serde_json::from_str(&events[7]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 5);
    // Forwarded as they arrive, not coalesced: chunks are spread over the upstream's pacing.
    assert!(s.chunks.len() >= 7, "{:?}", s.chunks);
    let gaps: Vec<Duration> = s.chunks.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let paced = gaps
        .iter()
        .filter(|g| **g >= Duration::from_millis(50))
        .count();
    assert!(paced >= 5, "chunks were buffered: {gaps:?}");
}

#[tokio::test]
async fn a_stall_after_the_first_chunk_ends_the_stream_with_an_error_event() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::StallAfterFirstChunk(Duration::from_secs(5))]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "slo = { ttft = \"1s\", total = \"10s\", idle = \"300ms\" }",
    )
    .await;
    let start = Instant::now();
    let s = stream(&h, stream_body("switchyard")).await;
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s.status, 200);
    let events = s.data_events();
    assert_eq!(events.len(), 2, "{events:?}");
    let err: Value = serde_json::from_str(&events[1]).unwrap();
    assert_eq!(err["error"]["code"], "stream_stalled");
    assert!(!s.text().contains("[DONE]"));
    // No failover once the first byte has reached the client.
    assert_eq!(b.calls(), 0);
    let (_, m) = h.get("/metrics").await;
    assert!(m.contains("switchyard_stream_errors_total{target=\"a/a-model\"} 1"));
}

#[tokio::test]
async fn failures_before_the_first_byte_fail_over() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([
        Fault::ErrorEvent,
        Fault::SlowFirstToken(Duration::from_secs(3)),
    ]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "slo = { ttft = \"300ms\", total = \"10s\" }\nretry = { max_retries = 0 }\nhealth = { failures = 10 }",
    )
    .await;
    for expected in [
        "a/a-model: error in stream (simulated overload); b/b-model: ok",
        "a/a-model: no answer within ttft 300ms; b/b-model: ok",
    ] {
        let s = stream(&h, stream_body("switchyard")).await;
        assert_eq!(s.status, 200);
        assert_eq!(s.header("x-switchyard-route"), expected);
        assert!(s.text().contains("\"model\":\"b\""));
        assert_eq!(s.data_events().last().unwrap(), "[DONE]");
    }
}

#[tokio::test]
async fn truncated_and_aborted_streams_end_with_an_error_event() {
    let a = sim("a").await;
    a.script([Fault::TruncatedStream, Fault::AbortStream]);
    let h = one_tier(&[("a", a.base_url())], "").await;
    for code in ["stream_truncated", "stream_interrupted"] {
        let s = stream(&h, stream_body("switchyard")).await;
        assert_eq!(s.status, 200);
        let last: Value = serde_json::from_str(s.data_events().last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], code, "{}", s.text());
    }
}

#[tokio::test]
async fn streaming_errors_before_any_byte_are_plain_http_errors() {
    let h = one_tier(&[("a", dead_url().await)], "").await;
    let s = stream(&h, stream_body("switchyard")).await;
    assert_eq!(s.status, 502);
    let v: Value = serde_json::from_str(&s.text()).unwrap();
    error_message(&v);
}
