//! Routing, failover, retries, health, SLOs and the API's errors, over real HTTP.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard::upstream::sim::{Fault, SimSpec};

use crate::harness::*;

const FAST_RETRY: &str =
    "retry = { max_retries = 1, backoff = \"10ms\", retry_after_cap = \"2s\" }";

#[tokio::test]
async fn fails_over_after_retrying_a_500() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    ]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((a.calls(), b.calls()), (2, 1));
    assert_eq!(r.header("x-switchyard-attempts"), "3");
    assert_eq!(r.header("x-switchyard-target"), "b/b-model");
    assert_eq!(r.header("x-switchyard-tier"), "cheap");
    assert_eq!(
        r.header("x-switchyard-route"),
        "a/a-model: http 500; a/a-model (retry 1): http 500; b/b-model: ok"
    );
    // The response's model is the model that actually answered.
    assert_eq!(r.body["model"], "b");
    let oh: f64 = r.header("x-switchyard-overhead-ms").parse().unwrap();
    assert!((0.0..50.0).contains(&oh), "{oh}");
}

#[tokio::test]
async fn honours_retry_after_then_fails_over_on_429() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
    ]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!((a.calls(), b.calls()), (2, 1));
    assert!(
        r.elapsed >= Duration::from_millis(1000),
        "Retry-After not honoured: {:?}",
        r.elapsed
    );
    assert!(r.elapsed < Duration::from_millis(1900), "{:?}", r.elapsed);
    assert!(r.header("x-switchyard-route").contains("http 429"));
}

#[tokio::test]
async fn retry_after_beyond_the_cap_fails_over_at_once() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::Status {
        code: 429,
        retry_after: Some(30),
    }]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert!(r.elapsed < Duration::from_millis(500), "{:?}", r.elapsed);
}

#[tokio::test]
async fn connection_refused_fails_over() {
    let b = sim("b").await;
    let h = one_tier(&[("a", dead_url().await), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.calls(), 1);
    assert_eq!(
        r.header("x-switchyard-route"),
        "a/a-model: connect failed (refused); b/b-model: ok"
    );
}

#[tokio::test]
async fn connection_reset_fails_over() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::Reset]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert!(
        r.header("x-switchyard-route")
            .starts_with("a/a-model: connection"),
        "{}",
        r.header("x-switchyard-route")
    );
}

#[tokio::test]
async fn malformed_upstream_json_fails_over() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::Malformed]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["model"], "b");
    assert!(r
        .header("x-switchyard-route")
        .contains("malformed response"));
}

#[tokio::test]
async fn a_target_missing_its_ttft_is_cancelled_and_the_next_answers() {
    let a = sim("a").await;
    let mut spec = SimSpec::new("b");
    spec.latency = Duration::from_millis(200);
    let b = sim_with(spec).await;
    a.script([Fault::StallHeaders(Duration::from_secs(5))]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "slo = { ttft = \"300ms\", total = \"5s\" }",
    )
    .await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["model"], "b");
    // ≈ the SLO (300 ms) + the next target's time (200 ms).
    assert!(
        r.elapsed >= Duration::from_millis(480) && r.elapsed < Duration::from_millis(1200),
        "{:?}",
        r.elapsed
    );
    assert!(r
        .header("x-switchyard-route")
        .contains("no answer within ttft 300ms"));
}

#[tokio::test]
async fn all_targets_down_is_a_quick_502_naming_each() {
    let a = sim("a").await;
    a.script([
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        Fault::Status {
            code: 503,
            retry_after: None,
        },
    ]);
    let h = one_tier(&[("a", a.base_url()), ("b", dead_url().await)], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 502);
    let msg = error_message(&r.body);
    assert!(msg.contains("a/a-model: http 503"), "{msg}");
    assert!(msg.contains("b/b-model: connect failed (refused)"), "{msg}");
    assert!(r.elapsed < Duration::from_secs(1), "{:?}", r.elapsed);
    assert_eq!(r.header("x-switchyard-attempts"), "3");
}

#[tokio::test]
async fn client_errors_are_returned_not_failed_over() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::Status {
        code: 400,
        retry_after: None,
    }]);
    let h = one_tier(&[("a", a.base_url()), ("b", b.base_url())], FAST_RETRY).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["message"], "simulated 400");
    assert_eq!((a.calls(), b.calls()), (1, 0));
}

#[tokio::test]
async fn health_opens_after_n_failures_and_recovers_after_cooldown() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Status {
            code: 500,
            retry_after: None,
        },
    ]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "retry = { max_retries = 0 }\nhealth = { failures = 2, window = \"60s\", cooldown = \"400ms\" }",
    )
    .await;
    for _ in 0..2 {
        assert_eq!(h.post(&chat_body("switchyard")).await.status, 200);
    }
    assert_eq!(a.calls(), 2);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("switchyard_target_health{target=\"a/a-model\"} 0.0"),
        "{metrics}"
    );
    // Unhealthy: skipped without a call.
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(a.calls(), 2);
    assert_eq!(
        r.header("x-switchyard-route"),
        "a/a-model: skipped (unhealthy); b/b-model: ok"
    );
    assert_eq!(r.header("x-switchyard-attempts"), "1");
    // After the cooldown one probe goes through; its success restores the target.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.body["model"], "a");
    assert!(r
        .header("x-switchyard-route")
        .starts_with("a/a-model: probing after cooldown"));
    assert_eq!(a.calls(), 3);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("switchyard_target_health{target=\"a/a-model\"} 1.0"),
        "{metrics}"
    );
    assert!(metrics
        .contains("switchyard_health_transitions_total{target=\"a/a-model\",to=\"unhealthy\"} 1"));
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.body["model"], "a");
}

#[tokio::test]
async fn hedging_starts_the_next_target_and_keeps_the_first_answer() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::StallHeaders(Duration::from_secs(3))]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "slo = { ttft = \"2s\", total = \"5s\" }\nhedge_after = \"150ms\"",
    )
    .await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["model"], "b");
    assert!(r.elapsed < Duration::from_millis(800), "{:?}", r.elapsed);
    assert!(r.elapsed >= Duration::from_millis(150), "{:?}", r.elapsed);
    assert_eq!((a.calls(), b.calls()), (1, 1));
    assert_eq!(r.header("x-switchyard-attempts"), "2");
    assert!(r
        .header("x-switchyard-route")
        .contains("hedging to b/b-model after 150ms"));
}

#[tokio::test]
async fn the_request_deadline_gives_504() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::StallHeaders(Duration::from_secs(3))]);
    b.script([Fault::StallHeaders(Duration::from_secs(3))]);
    let h = one_tier(
        &[("a", a.base_url()), ("b", b.base_url())],
        "slo = { ttft = \"400ms\", total = \"600ms\" }",
    )
    .await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 504);
    assert!(error_message(&r.body).contains("600ms deadline"));
    assert!(r.elapsed < Duration::from_millis(1000), "{:?}", r.elapsed);
}

#[tokio::test]
async fn a_failed_tier_falls_back_to_its_fallback_tier() {
    let a = sim("a").await;
    let big = sim("big").await;
    a.script([Fault::Status {
        code: 500,
        retry_after: None,
    }]);
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\nretry = {{ max_retries = 0 }}\nfallback_tier = \"reasoning\"\ntargets = [{{ provider = \"a\", model = \"small\" }}]\n[tiers.reasoning]\ntargets = [{{ provider = \"big\", model = \"large\" }}]\n",
        providers(&[("a", a.base_url()), ("big", big.base_url())])
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-switchyard-tier"), "reasoning");
    assert!(r
        .header("x-switchyard-route")
        .contains("tier cheap failed, falling back to tier reasoning"));
    let (_, metrics) = h.get("/metrics").await;
    assert!(metrics.contains("switchyard_tier_fallbacks_total{tier=\"cheap\"} 1"));
}

#[tokio::test]
async fn a_no_fallback_target_is_never_used_as_a_fallback() {
    let a = sim("a").await;
    let b = sim("b").await;
    a.script([Fault::Status {
        code: 500,
        retry_after: None,
    }]);
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\nretry = {{ max_retries = 0 }}\ntargets = [{{ provider = \"a\", model = \"a-model\" }}, {{ provider = \"b\", model = \"b-model\", fallback = false }}]\n",
        providers(&[("a", a.base_url()), ("b", b.base_url())])
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 502);
    assert_eq!(b.calls(), 0);
    assert!(error_message(&r.body).contains("b/b-model: skipped (fallback = false)"));
    // Named directly, it is the highest-priority target and is used.
    let r = h.post(&chat_body("b-model")).await;
    assert_eq!(r.status, 200);
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn model_names_pick_tiers_and_targets() {
    let a = sim("a").await;
    let b = sim("b").await;
    let big = sim("big").await;
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"a-model\" }}, {{ provider = \"b\", model = \"b-model\" }}]\n[tiers.reasoning]\ntargets = [{{ provider = \"big\", model = \"large\" }}]\n",
        providers(&[("a", a.base_url()), ("b", b.base_url()), ("big", big.base_url())])
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard/reasoning")).await;
    assert_eq!(
        (r.status, r.header("x-switchyard-tier").as_str()),
        (200, "reasoning")
    );
    assert_eq!(r.header("x-switchyard-decision"), "pinned");
    let r = h.post(&chat_body("b-model")).await;
    assert_eq!(r.header("x-switchyard-target"), "b/b-model");
    let r = h.post(&chat_body("gpt-nonexistent")).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "model_not_found");
    let (status, models) = h.get("/v1/models").await;
    assert_eq!(status, 200);
    let models: Value = serde_json::from_str(&models).unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "switchyard",
            "switchyard/cheap",
            "switchyard/reasoning",
            "a-model",
            "b-model",
            "large"
        ]
    );
}

#[tokio::test]
async fn unknown_fields_pass_through_untouched() {
    let a = sim("a").await;
    let h = one_tier(&[("a", a.base_url())], "").await;
    let body = json!({
        "model": "switchyard",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "temperature": 0.25,
        "seed": 42,
        "user": "u-1",
        "metadata": {"team": "x"},
        "logprobs": true,
        "some_future_field": [1, {"nested": null}]
    });
    let r = h.post(&body).await;
    assert_eq!(r.status, 200);
    let got = &a.requests()[0];
    let mut expected = body.clone();
    expected["model"] = json!("a-model");
    assert_eq!(got, &expected);
}

#[tokio::test]
async fn bad_requests_get_openai_shaped_4xx() {
    let a = sim("a").await;
    let toml = format!(
        "[server]\nmax_body_bytes = 2048\n[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        providers(&[("a", a.base_url())])
    );
    let h = router(&toml).await;
    let r = h
        .post_raw("{\"model\": \"switchyard\", \"messages\": [".into())
        .await;
    assert_eq!(r.status, 400);
    assert!(error_message(&r.body).contains("not valid JSON"));
    let r = h
        .post(&json!({"model": "switchyard", "messages": [{"role": "user", "content": 1}]}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "messages[0].content");
    let r = h.post(&json!({"model": "switchyard", "messages": [{"role": "user", "content": "x".repeat(5000)}]})).await;
    assert_eq!(r.status, 413);
    error_message(&r.body);
    let r = h.post_raw("\u{0}\u{1}\u{2}".into()).await;
    assert_eq!(r.status, 400);
    let (status, body) = h.get("/v1/nothing").await;
    assert_eq!(status, 404);
    error_message(&serde_json::from_str(&body).unwrap());
    let (status, body) = h.get("/v1/chat/completions").await;
    assert_eq!(status, 405);
    error_message(&serde_json::from_str(&body).unwrap());
    assert_eq!(a.calls(), 0);
}

#[tokio::test]
async fn api_keys_are_checked_when_configured() {
    use sha2::Digest;
    let a = sim("a").await;
    let digest = hex::encode(sha2::Sha256::digest(b"sy-test-key"));
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n[auth]\nkeys = [{{ name = \"team\", sha256 = \"{digest}\" }}]\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        providers(&[("a", a.base_url())])
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 401);
    error_message(&r.body);
    let send = |key: &'static str| {
        h.client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth(key)
            .json(&chat_body("switchyard"))
            .send()
    };
    assert_eq!(send("wrong").await.unwrap().status(), 401);
    assert_eq!(send("sy-test-key").await.unwrap().status(), 200);
    assert_eq!(a.calls(), 1);
}

#[tokio::test]
async fn a_key_limited_to_some_tiers_gets_403_elsewhere() {
    use sha2::Digest;
    let a = sim("a").await;
    let big = sim("big").await;
    let digest = hex::encode(sha2::Sha256::digest(b"team-key"));
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n[auth]\nkeys = [{{ name = \"team\", sha256 = \"{digest}\", tiers = [\"cheap\"] }}]\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n[tiers.reasoning]\ntargets = [{{ provider = \"big\", model = \"large\" }}]\n",
        providers(&[("a", a.base_url()), ("big", big.base_url())])
    );
    let h = router(&toml).await;
    let send = |model: &'static str| {
        h.client
            .post(h.url("/v1/chat/completions"))
            .bearer_auth("team-key")
            .json(&chat_body(model))
            .send()
    };
    assert_eq!(send("switchyard").await.unwrap().status(), 200);
    for model in ["switchyard/reasoning", "large"] {
        let r = send(model).await.unwrap();
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "permission_denied");
    }
    assert_eq!(big.calls(), 0);
}

#[tokio::test]
async fn the_router_sheds_load_with_429() {
    let mut spec = SimSpec::new("a");
    spec.latency = Duration::from_millis(600);
    let a = sim_with(spec).await;
    let toml = format!(
        "[server]\nmax_concurrency = 1\n[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        providers(&[("a", a.base_url())])
    );
    let h = router(&toml).await;
    let body = chat_body("switchyard");
    let slow = h.post(&body);
    let second = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        h.post(&body).await
    };
    let (first, second) = tokio::join!(slow, second);
    assert_eq!(first.status, 200);
    assert_eq!(second.status, 429);
    assert_eq!(second.body["error"]["type"], "rate_limit_error");
    let (_, metrics) = h.get("/metrics").await;
    assert!(metrics.contains("switchyard_shed_total 1"));
}

#[tokio::test]
async fn health_ready_and_metrics_endpoints() {
    let a = sim("a").await;
    let h = one_tier(&[("a", a.base_url())], "").await;
    assert_eq!(h.get("/health").await.0, 200);
    let (status, ready) = h.get("/ready").await;
    assert_eq!(status, 200);
    assert!(ready.contains("\"a/a-model\":\"healthy\""), "{ready}");
    h.post(&chat_body("switchyard")).await;
    let (status, m) = h.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "switchyard_requests_total{tier=\"cheap\",status=\"200\",stream=\"false\"} 1",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_time_to_first_token_seconds_bucket",
        "switchyard_router_overhead_seconds_bucket",
        "switchyard_upstream_attempts_total{target=\"a/a-model\",outcome=\"ok\"} 1",
        "switchyard_target_health{target=\"a/a-model\"} 1.0",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }
}

#[tokio::test]
async fn provider_keys_never_reach_the_client() {
    let a = sim("a").await;
    a.script([Fault::Status {
        code: 500,
        retry_after: None,
    }]);
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n[providers.a]\nbase_url = \"{}\"\napi_key_env = \"SY_TEST_KEY\"\n[tiers.cheap]\nretry = {{ max_retries = 0 }}\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        a.base_url()
    );
    let config = switchyard::config::Config::from_toml(&toml, &|k| {
        (k == "SY_TEST_KEY").then(|| "sk-very-secret-1234".to_string())
    })
    .unwrap();
    assert!(!format!("{config:?}").contains("sk-very-secret-1234"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = switchyard::server::start(config, listener).unwrap();
    switchyard::upstream::ensure_crypto_provider();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.url()))
        .json(&chat_body("switchyard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let headers = format!("{:?}", r.headers());
    let body = r.text().await.unwrap();
    assert!(!headers.contains("sk-very-secret") && !body.contains("sk-very-secret"));
    let m = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!m.contains("sk-very-secret"));
}

#[tokio::test]
async fn http2_upstreams_work_with_prior_knowledge() {
    let a = sim("a").await;
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n[providers.a]\nbase_url = \"{}\"\nhttp2_prior_knowledge = true\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        a.base_url()
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(a.calls(), 1);
}
