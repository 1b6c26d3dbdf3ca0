//! The cascade over real HTTP: the cheap tier's answer is checked, failures escalate.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard::upstream::sim::{Fault, SimServer, SimSpec};

use crate::harness::*;

struct Setup {
    h: Harness,
    cheap: SimServer,
    strong: SimServer,
}

async fn setup(cascade: &str, reasoning_extra: &str) -> Setup {
    let cheap = sim("cheap").await;
    let strong = sim("strong").await;
    let toml = format!(
        r#"[routing]
default_tier = "cheap"
{}
[tiers.cheap]
slo = {{ ttft = "2s", total = "5s" }}
cascade = {{ {cascade} }}
targets = [{{ provider = "c", model = "small", price = {{ input = 1.0, output = 2.0 }} }}]
[tiers.reasoning]
{reasoning_extra}
targets = [{{ provider = "s", model = "large", price = {{ input = 10.0, output = 30.0 }} }}]
"#,
        providers(&[("c", cheap.base_url()), ("s", strong.base_url())])
    );
    Setup {
        h: router(&toml).await,
        cheap,
        strong,
    }
}

fn schema_request() -> Value {
    json!({
        "model": "switchyard",
        "messages": [{"role": "user", "content": "List the items with prices as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "items", "schema": {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": {
                "type": "object", "required": ["name", "price"],
                "properties": {"name": {"type": "string"}, "price": {"type": "number"}}}}}}}}
    })
}

const VALID: &str = r#"{"items": [{"name": "tea", "price": 3.5}]}"#;

fn content(r: &Reply) -> String {
    r.body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_valid_answer_is_accepted_at_the_cheap_tier() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    s.cheap.script([Fault::Content(VALID.into())]);
    let r = s.h.post(&schema_request()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(content(&r), VALID);
    assert_eq!((s.cheap.calls(), s.strong.calls()), (1, 0));
    assert_eq!(r.header("x-switchyard-cascade"), "cheap:accepted");
    assert_eq!(r.header("x-switchyard-tier"), "cheap");
    // The router asked for logprobs (confidence check) without streaming, and hid them again.
    let sent = &s.cheap.requests()[0];
    assert_eq!(sent["logprobs"], true);
    assert_eq!(r.body["choices"][0]["logprobs"], Value::Null);
    let cost: f64 = r.header("x-switchyard-cost-usd").parse().unwrap();
    assert!(cost > 0.0);
}

#[tokio::test]
async fn invalid_json_escalates_to_the_reasoning_tier() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    s.cheap
        .script([Fault::Content("Sure! Here it is: {\"items\": [".into())]);
    s.strong.script([Fault::Content(VALID.into())]);
    let r = s.h.post(&schema_request()).await;
    assert_eq!(r.status, 200);
    assert_eq!(content(&r), VALID);
    assert_eq!(r.body["model"], "strong");
    assert_eq!((s.cheap.calls(), s.strong.calls()), (1, 1));
    assert_eq!(r.header("x-switchyard-tier"), "reasoning");
    assert_eq!(r.header("x-switchyard-attempts"), "2");
    let path = r.header("x-switchyard-cascade");
    assert!(
        path.starts_with("cheap:rejected(schema: not JSON"),
        "{path}"
    );
    assert!(
        path.ends_with(">reasoning:accepted(confidence skipped (no logprobs))"),
        "{path}"
    );
    // Both calls are paid for: the cost covers the cheap call and the strong one.
    let usage = |v: &Value, k: &str| v["usage"][k].as_f64().unwrap();
    let strong_cost =
        (usage(&r.body, "prompt_tokens") * 10.0 + usage(&r.body, "completion_tokens") * 30.0) / 1e6;
    let cost: f64 = r.header("x-switchyard-cost-usd").parse().unwrap();
    assert!(cost > strong_cost, "{cost} <= {strong_cost}");
    let (_, m) = s.h.get("/metrics").await;
    assert!(
        m.contains(
            "switchyard_cascade_total{tier=\"cheap\",verdict=\"rejected\",reason=\"schema\"} 1"
        ),
        "{m}"
    );
    assert!(m.contains(
        "switchyard_cascade_total{tier=\"reasoning\",verdict=\"accepted\",reason=\"\"} 1"
    ));
}

#[tokio::test]
async fn wrong_types_escalate_with_the_json_pointer() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    s.cheap.script([Fault::Content(
        r#"{"items": [{"name": "tea", "price": "3.50"}]}"#.into(),
    )]);
    s.strong.script([Fault::Content(VALID.into())]);
    let r = s.h.post(&schema_request()).await;
    assert_eq!(
        r.header("x-switchyard-cascade"),
        "cheap:rejected(schema: /items/0/price: \"3.50\" is not of type \"number\")>reasoning:accepted(confidence skipped (no logprobs))"
    );
    assert_eq!(content(&r), VALID);
}

#[tokio::test]
async fn tool_call_arguments_are_validated() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    let body = json!({
        "model": "switchyard",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}]
    });
    s.cheap.script([
        Fault::ToolCall {
            name: "get_weather".into(),
            arguments: "{\"town\": \"Oslo\"}".into(),
        },
        Fault::ToolCall {
            name: "launch_rocket".into(),
            arguments: "{}".into(),
        },
        Fault::ToolCall {
            name: "get_weather".into(),
            arguments: "{\"city\": \"Oslo\"}".into(),
        },
    ]);
    s.strong.script([
        Fault::ToolCall {
            name: "get_weather".into(),
            arguments: "{\"city\": \"Oslo\"}".into(),
        },
        Fault::ToolCall {
            name: "get_weather".into(),
            arguments: "{\"city\": \"Oslo\"}".into(),
        },
    ]);
    let r = s.h.post(&body).await;
    assert!(
        r.header("x-switchyard-cascade")
            .starts_with("cheap:rejected(tool_calls: get_weather: /: "),
        "{}",
        r.header("x-switchyard-cascade")
    );
    assert_eq!(
        r.body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"city\": \"Oslo\"}"
    );
    let r = s.h.post(&body).await;
    assert!(r
        .header("x-switchyard-cascade")
        .starts_with("cheap:rejected(tool_calls: call to undeclared tool \"launch_rocket\")"));
    let r = s.h.post(&body).await;
    // A tool call has no content tokens, so there is no confidence to judge.
    assert_eq!(
        r.header("x-switchyard-cascade"),
        "cheap:accepted(confidence skipped (no logprobs))"
    );
    assert_eq!((s.cheap.calls(), s.strong.calls()), (3, 2));
}

#[tokio::test]
async fn truncated_answers_escalate() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    s.cheap.script([Fault::Length]);
    let r = s.h.post(&chat_body("switchyard")).await;
    assert!(r
        .header("x-switchyard-cascade")
        .starts_with("cheap:rejected(truncated: finish_reason length)>reasoning:accepted"));
    assert_eq!(r.body["model"], "strong");
}

#[tokio::test]
async fn low_confidence_escalates() {
    let s = setup("escalate_to = \"reasoning\", min_mean_logprob = -1.0", "").await;
    s.cheap.script([Fault::Logprob(-2.5), Fault::Logprob(-0.2)]);
    let r = s.h.post(&chat_body("switchyard")).await;
    assert!(
        r.header("x-switchyard-cascade")
            .starts_with("cheap:rejected(confidence: mean logprob -2.50 < -1)>reasoning:accepted"),
        "{}",
        r.header("x-switchyard-cascade")
    );
    let r = s.h.post(&chat_body("switchyard")).await;
    assert_eq!(r.header("x-switchyard-cascade"), "cheap:accepted");
    assert_eq!(s.strong.calls(), 1);
}

#[tokio::test]
async fn streaming_in_buffer_mode_checks_then_streams() {
    let s = setup("escalate_to = \"reasoning\", stream = \"buffer\"", "").await;
    s.cheap.script([Fault::Content("not json at all".into())]);
    s.strong.script([Fault::Content(VALID.into())]);
    let mut body = schema_request();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = s.h.post(&body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "text/event-stream");
    assert!(r
        .header("x-switchyard-cascade")
        .ends_with(">reasoning:accepted(confidence skipped (no logprobs))"));
    let text = r.body.as_str().unwrap().to_string();
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(*events.last().unwrap(), "[DONE]");
    let streamed: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, VALID);
    assert!(events.iter().any(|e| e.contains("\"usage\"")));
    // Both tiers were called without streaming; the client still got a stream.
    assert_eq!(s.cheap.requests()[0]["stream"], false);
    assert!(s.cheap.requests()[0].get("stream_options").is_none());
    assert_eq!(s.strong.requests()[0]["stream"], false);
}

#[tokio::test]
async fn streaming_in_bypass_mode_is_not_checked() {
    let s = setup("escalate_to = \"reasoning\", stream = \"bypass\"", "").await;
    s.cheap.script([Fault::Content("not json at all".into())]);
    let mut body = schema_request();
    body["stream"] = json!(true);
    let r = s.h.post(&body).await;
    assert_eq!(r.header("x-switchyard-cascade"), "cheap:bypassed(stream)");
    assert!(r.body.as_str().unwrap().contains("not"));
    assert_eq!(s.strong.calls(), 0);
}

#[tokio::test]
async fn too_little_time_to_escalate_accepts_or_fails_as_configured() {
    let mut slow = SimSpec::new("cheap");
    slow.latency = Duration::from_millis(300);
    for (mode, expect) in [("accept", 200), ("fail", 502)] {
        let cheap = sim_with(slow.clone()).await;
        let strong = sim("strong").await;
        cheap.script([Fault::Length]);
        let toml = format!(
            "[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\nslo = {{ ttft = \"1s\", total = \"1s\" }}\ncascade = {{ min_escalation_time = \"800ms\", on_short_deadline = \"{mode}\" }}\ntargets = [{{ provider = \"c\", model = \"small\" }}]\n[tiers.reasoning]\ntargets = [{{ provider = \"s\", model = \"large\" }}]\n",
            providers(&[("c", cheap.base_url()), ("s", strong.base_url())])
        );
        let h = router(&toml).await;
        let r = h.post(&chat_body("switchyard")).await;
        assert_eq!(r.status, expect, "{mode}: {:?}", r.body);
        let path = r.header("x-switchyard-cascade");
        assert!(
            path.starts_with(
                "cheap:rejected(truncated: finish_reason length)>reasoning:skipped(deadline, "
            ),
            "{path}"
        );
        assert_eq!(strong.calls(), 0);
        if expect == 200 {
            assert_eq!(r.body["model"], "cheap");
        } else {
            assert_eq!(r.body["error"]["code"], "cascade_rejected");
        }
    }
}

#[tokio::test]
async fn a_repeated_schema_is_compiled_once() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    s.cheap
        .script([Fault::Content(VALID.into()), Fault::Content(VALID.into())]);
    s.h.post(&schema_request()).await;
    s.h.post(&schema_request()).await;
    assert_eq!(s.h.router.state.schemas.stats(), (1, 1));
}

#[tokio::test]
async fn a_malformed_schema_is_a_400_naming_it() {
    let s = setup("escalate_to = \"reasoning\"", "").await;
    let mut body = schema_request();
    body["response_format"]["json_schema"]["schema"] = json!({"type": "objekt"});
    let r = s.h.post(&body).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "response_format");
    assert!(error_message(&r.body).contains("not a valid JSON Schema"));
    assert_eq!(s.cheap.calls() + s.strong.calls(), 0);
}

#[tokio::test]
async fn the_last_tier_answer_is_returned_with_its_failures_unless_strict() {
    for (strict, expect) in [(false, 200), (true, 502)] {
        let s = setup(
            &format!("escalate_to = \"reasoning\", strict = {strict}"),
            "",
        )
        .await;
        s.cheap.script([Fault::Content("nope".into())]);
        s.strong.script([Fault::Content("still nope".into())]);
        let r = s.h.post(&schema_request()).await;
        assert_eq!(r.status, expect);
        let path = r.header("x-switchyard-cascade");
        assert!(
            path.contains(">reasoning:rejected(schema: not JSON"),
            "{path}"
        );
        if strict {
            assert!(error_message(&r.body).contains("failed its checks"));
        } else {
            assert_eq!(content(&r), "still nope");
        }
    }
}

#[tokio::test]
async fn a_failed_escalation_returns_the_answer_in_hand() {
    let cheap = sim("cheap").await;
    cheap.script([Fault::Length]);
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\ncascade = {{}}\ntargets = [{{ provider = \"c\", model = \"small\" }}]\n[tiers.reasoning]\nretry = {{ max_retries = 0 }}\ntargets = [{{ provider = \"s\", model = \"large\" }}]\n",
        providers(&[("c", cheap.base_url()), ("s", dead_url().await)])
    );
    let h = router(&toml).await;
    let r = h.post(&chat_body("switchyard")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["model"], "cheap");
    assert_eq!(
        r.header("x-switchyard-cascade"),
        "cheap:rejected(truncated: finish_reason length)>reasoning:failed(all targets failed)"
    );
}
