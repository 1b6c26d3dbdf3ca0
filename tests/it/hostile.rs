//! Hostile input over HTTP: none of it may panic, hang or grow without bound, and each gets a
//! clear 4xx.

use std::time::Duration;

use serde_json::json;
use switchyard::upstream::sim::Fault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

async fn setup(server_extra: &str) -> (Harness, switchyard::upstream::sim::SimServer) {
    let a = sim("a").await;
    let toml = format!(
        "[server]\n{server_extra}\n[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\nretry = {{ max_retries = 0 }}\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        providers(&[("a", a.base_url())])
    );
    (router(&toml).await, a)
}

#[tokio::test]
async fn deeply_nested_invalid_and_enormous_bodies_are_400s() {
    let (h, a) = setup("").await;
    let nested = format!(
        "{{\"model\":\"switchyard\",\"messages\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = h.post_raw(nested).await;
    assert_eq!(r.status, 400);
    assert!(error_message(&r.body).contains("not valid JSON"));

    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(b"{\"model\":\"switchyard\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let many: Vec<_> = (0..20_000)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let r = h
        .post(&json!({"model": "switchyard", "messages": many}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "messages");

    let r = h
        .post(&json!({"model": ["switchyard"], "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(a.calls(), 0);
    // Still serving.
    assert_eq!(h.post(&chat_body("switchyard")).await.status, 200);
}

#[tokio::test]
async fn a_header_flood_is_refused_and_the_server_keeps_serving() {
    let (h, _a) = setup("").await;
    let mut req = h
        .client
        .post(h.url("/v1/chat/completions"))
        .json(&chat_body("switchyard"));
    for i in 0..500 {
        req = req.header(format!("x-flood-{i}"), "y".repeat(64));
    }
    let status = req.send().await.map(|r| r.status().as_u16());
    assert!(
        status.as_ref().is_ok_and(|s| (400..500).contains(s)) || status.is_err(),
        "{status:?}"
    );
    assert_eq!(h.post(&chat_body("switchyard")).await.status, 200);
}

#[tokio::test]
async fn a_slow_client_gets_408() {
    let (h, a) = setup("body_read_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(h.router.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\"")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(a.calls(), 0);
}

#[tokio::test]
async fn an_oversized_upstream_answer_is_refused() {
    let (h, a) = setup("max_upstream_response_bytes = 100000").await;
    a.script([Fault::Huge(200_000)]);
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 502);
    assert!(error_message(&r.body).contains("answer larger than 100000 bytes"));
}

#[tokio::test]
async fn request_fields_cannot_choose_the_upstream_host() {
    let (h, a) = setup("").await;
    for model in [
        "http://127.0.0.1:1/v1",
        "../../etc/passwd",
        "switchyard/../cheap",
    ] {
        let r = h.post(&chat_body(model)).await;
        assert_eq!(r.status, 404, "{model}");
    }
    // Fields that name hosts are passed through as data, never followed.
    let mut body = chat_body("switchyard");
    body["base_url"] = json!("http://127.0.0.1:1/v1");
    body["api_base"] = json!("http://127.0.0.1:1/v1");
    assert_eq!(h.post(&body).await.status, 200);
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn long_multibyte_prompts_are_routed_not_crashed() {
    // Found by training on a chemistry prompt: the classifier's tail window began inside a
    // multi-byte character. Short (classified in place) and long (on the blocking pool).
    let (h, _a) = setup("").await;
    for (unit, n) in [
        ("😀 ", 700),
        ("😀 ", 3000),
        ("日本語 ", 900),
        ("№ – é ", 2000),
    ] {
        let body = json!({"model": "switchyard", "messages": [{"role": "user", "content": unit.repeat(n)}]});
        let r = h.post(&body).await;
        assert_eq!(r.status, 200, "{unit} × {n}: {:?}", r.body);
        assert_eq!(r.header("x-switchyard-decision"), "classifier");
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    // Slowloris: a connection that sends headers a byte at a time, or stops halfway, must not
    // hold a connection and a task for ever.
    let (h, a) = setup("header_read_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(h.router.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-slow: a")
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 4096];
    // The server closes the connection (hyper sends no response here): EOF or a reset.
    let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .expect("the server kept a half-sent request open");
    if let Ok(n) = read {
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(a.calls(), 0);
    // A prompt client on another connection is unaffected.
    assert_eq!(h.post(&chat_body("switchyard/cheap")).await.status, 200);
}

#[test]
fn zero_read_timeouts_are_config_errors() {
    for key in ["header_read_timeout", "body_read_timeout"] {
        let toml = format!(
            "[server]\n{key} = \"0s\"\n[routing]\ndefault_tier = \"t\"\n[providers.p]\nbase_url = \"http://127.0.0.1:1/v1\"\n[tiers.t]\ntargets = [{{ provider = \"p\", model = \"m\" }}]\n"
        );
        let e = switchyard::config::Config::from_toml(&toml, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("server.{key}")), "{e}");
    }
}
