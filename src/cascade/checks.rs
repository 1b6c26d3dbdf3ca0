//! The answer checks. Each takes a chat completion (the upstream's JSON) and says whether it is
//! good enough to return, and if not, why, in a form short enough for a header.
//!
//! Order, cheapest and most telling first: completion (truncated, filtered, empty, refusal),
//! structure (JSON schema, JSON object, tool calls), confidence (log-probabilities),
//! arithmetic. A truncated answer is reported as truncated, not as invalid JSON.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::arithmetic;
use super::schema::{first_error, SchemaCache};
use crate::config::{Cascade, Check};

/// What the request asks of the answer, compiled once per request.
#[derive(Default)]
pub struct RequestChecks {
    /// `response_format: json_schema`.
    pub schema: Option<Arc<jsonschema::Validator>>,
    /// `response_format: json_object` (or a schema): the answer must be a JSON object.
    pub json: bool,
    /// Declared tools and their compiled `parameters`.
    pub tools: HashMap<String, Option<Arc<jsonschema::Validator>>>,
    /// The client asked for logprobs itself.
    pub client_logprobs: bool,
}

/// Why a request's own schema is unusable: (message, param).
pub type SchemaProblem = (String, String);

impl RequestChecks {
    /// Compiles the request's schemas; a malformed one is the client's error.
    pub fn from_request(
        body: &Map<String, Value>,
        cache: &SchemaCache,
    ) -> Result<RequestChecks, SchemaProblem> {
        let mut rc = RequestChecks {
            client_logprobs: body.get("logprobs").and_then(Value::as_bool) == Some(true),
            ..Default::default()
        };
        if let Some(rf) = body.get("response_format") {
            match rf.get("type").and_then(Value::as_str) {
                Some("json_schema") => {
                    let schema = rf.pointer("/json_schema/schema").ok_or_else(|| {
                        (
                            "response_format.json_schema.schema is required".to_string(),
                            "response_format".to_string(),
                        )
                    })?;
                    let v = cache.get(schema).map_err(|e| {
                        (
                            format!("response_format.json_schema.schema is not a valid JSON Schema: {e}"),
                            "response_format".to_string(),
                        )
                    })?;
                    rc.schema = Some(v);
                    rc.json = true;
                }
                Some("json_object") => rc.json = true,
                _ => {}
            }
        }
        if let Some(Value::Array(tools)) = body.get("tools") {
            for (i, t) in tools.iter().enumerate() {
                let Some(name) = t.pointer("/function/name").and_then(Value::as_str) else {
                    continue;
                };
                let params = match t.pointer("/function/parameters") {
                    None => None,
                    Some(p) => Some(cache.get(p).map_err(|e| {
                        (
                            format!(
                                "tools[{i}].function.parameters is not a valid JSON Schema: {e}"
                            ),
                            format!("tools[{i}].function.parameters"),
                        )
                    })?),
                };
                rc.tools.insert(name.to_string(), params);
            }
        }
        Ok(rc)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Accept {
        /// Checks that could not run, e.g. `confidence skipped (no logprobs)`.
        notes: Vec<String>,
    },
    Reject {
        /// The check that failed: `truncated`, `schema`, `refusal`, `confidence`, …
        kind: &'static str,
        detail: String,
    },
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accept { .. })
    }

    /// For the cascade header, e.g. `schema: /items/0/price: "x" is not of type "number"`.
    pub fn reason(&self) -> String {
        match self {
            Verdict::Accept { notes } => notes.join(", "),
            Verdict::Reject { kind, detail } if detail.is_empty() => kind.to_string(),
            Verdict::Reject { kind, detail } => format!("{kind}: {detail}"),
        }
    }
}

fn reject(kind: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Reject {
        kind,
        detail: detail.into(),
    }
}

/// Runs the tier's checks on every choice of the answer.
pub fn check(answer: &Value, req: &RequestChecks, cfg: &Cascade) -> Verdict {
    let Some(choices) = answer.get("choices").and_then(Value::as_array) else {
        return reject("malformed", "no choices");
    };
    if choices.is_empty() {
        return reject("empty", "no choices");
    }
    let mut notes = Vec::new();
    for choice in choices {
        if let Some(v) = check_choice(choice, req, cfg, &mut notes) {
            return v;
        }
    }
    notes.dedup();
    Verdict::Accept { notes }
}

fn check_choice(
    choice: &Value,
    req: &RequestChecks,
    cfg: &Cascade,
    notes: &mut Vec<String>,
) -> Option<Verdict> {
    let msg = choice.get("message").unwrap_or(&Value::Null);
    let content = msg.get("content").and_then(Value::as_str).unwrap_or("");
    let tool_calls = msg.get("tool_calls").and_then(Value::as_array);
    let has_tool_calls = tool_calls.is_some_and(|t| !t.is_empty());

    if cfg.has(Check::Completion) {
        match choice.get("finish_reason").and_then(Value::as_str) {
            Some("length") => return Some(reject("truncated", "finish_reason length")),
            Some("content_filter") => {
                return Some(reject("filtered", "finish_reason content_filter"))
            }
            _ => {}
        }
        if let Some(r) = msg
            .get("refusal")
            .and_then(Value::as_str)
            .filter(|r| !r.trim().is_empty())
        {
            return Some(reject("refusal", crate::resilience::truncate(r, 60)));
        }
        if content.trim().is_empty() && !has_tool_calls {
            return Some(reject("empty", ""));
        }
        let head: String = content.chars().take(240).collect::<String>().to_lowercase();
        let head = head.replace('\u{2019}', "'");
        if let Some(p) = cfg
            .refusal_patterns
            .iter()
            .find(|p| head.contains(p.as_str()))
        {
            return Some(reject("refusal", format!("matched {p:?}")));
        }
    }

    if cfg.has(Check::Schema) && req.json && !has_tool_calls {
        let parsed: Value = match serde_json::from_str(content.trim()) {
            Ok(v) => v,
            Err(e) => return Some(reject("schema", format!("not JSON ({e})"))),
        };
        match &req.schema {
            Some(v) => {
                if let Some(e) = first_error(v, &parsed) {
                    return Some(reject("schema", e));
                }
            }
            None if !parsed.is_object() => return Some(reject("schema", "not a JSON object")),
            None => {}
        }
    }

    if cfg.has(Check::ToolCalls) {
        for call in tool_calls.into_iter().flatten() {
            let name = call
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(params) = req.tools.get(name) else {
                return Some(reject(
                    "tool_calls",
                    format!("call to undeclared tool {name:?}"),
                ));
            };
            let args_text = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            let args: Value = match serde_json::from_str(args_text) {
                Ok(v) => v,
                Err(e) => {
                    return Some(reject(
                        "tool_calls",
                        format!("{name}: arguments are not JSON ({e})"),
                    ))
                }
            };
            if let Some(e) = params.as_ref().and_then(|v| first_error(v, &args)) {
                return Some(reject("tool_calls", format!("{name}: {e}")));
            }
        }
    }

    if cfg.has(Check::Confidence) {
        let lps: Vec<f64> = choice
            .pointer("/logprobs/content")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("logprob").and_then(Value::as_f64))
                    .collect()
            })
            .unwrap_or_default();
        if lps.is_empty() {
            notes.push("confidence skipped (no logprobs)".to_string());
        } else {
            let mean = lps.iter().sum::<f64>() / lps.len() as f64;
            let min = lps.iter().copied().fold(f64::INFINITY, f64::min);
            if mean < cfg.min_mean_logprob {
                return Some(reject(
                    "confidence",
                    format!("mean logprob {mean:.2} < {}", cfg.min_mean_logprob),
                ));
            }
            if min < cfg.min_token_logprob {
                return Some(reject(
                    "confidence",
                    format!("min token logprob {min:.2} < {}", cfg.min_token_logprob),
                ));
            }
        }
    }

    if cfg.has(Check::Arithmetic) {
        if let Some(e) = arithmetic::first_error(content) {
            return Some(reject("arithmetic", e));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ShortDeadline, StreamMode, DEFAULT_REFUSALS};
    use serde_json::json;
    use std::time::Duration;

    fn cfg(checks: &[Check]) -> Cascade {
        Cascade {
            escalate_to: "reasoning".into(),
            checks: checks.to_vec(),
            min_mean_logprob: -1.0,
            min_token_logprob: -5.0,
            refusal_patterns: DEFAULT_REFUSALS.iter().map(|s| s.to_string()).collect(),
            stream: StreamMode::Buffer,
            strict: false,
            min_escalation_time: Duration::from_secs(1),
            on_short_deadline: ShortDeadline::Accept,
        }
    }

    const ALL: &[Check] = &[
        Check::Completion,
        Check::Schema,
        Check::ToolCalls,
        Check::Confidence,
        Check::Arithmetic,
    ];

    fn answer(content: Value, finish: &str) -> Value {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]})
    }

    fn req(body: Value) -> RequestChecks {
        RequestChecks::from_request(body.as_object().unwrap(), &SchemaCache::new()).unwrap()
    }

    #[test]
    fn completion_checks() {
        let r = RequestChecks::default();
        let c = cfg(ALL);
        assert!(check(&answer(json!("Paris."), "stop"), &r, &c).accepted());
        assert_eq!(
            check(&answer(json!("Par"), "length"), &r, &c).reason(),
            "truncated: finish_reason length"
        );
        assert_eq!(
            check(&answer(json!("  "), "stop"), &r, &c).reason(),
            "empty"
        );
        assert!(check(
            &answer(json!("I’m sorry, but I can’t help with that."), "stop"),
            &r,
            &c
        )
        .reason()
        .starts_with("refusal"));
        let refused = json!({"choices": [{"message": {"content": null, "refusal": "No."}, "finish_reason": "stop"}]});
        assert_eq!(check(&refused, &r, &c).reason(), "refusal: No.");
        // Switched off: not checked.
        assert!(check(&answer(json!("Par"), "length"), &r, &cfg(&[Check::Schema])).accepted());
    }

    #[test]
    fn schema_checks_name_the_pointer() {
        let r = req(
            json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
            "type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"price": {"type": "number"}}}}}}}}}),
        );
        let c = cfg(ALL);
        assert!(check(
            &answer(json!("{\"items\":[{\"price\":3}]}"), "stop"),
            &r,
            &c
        )
        .accepted());
        let v = check(
            &answer(json!("{\"items\":[{\"price\":\"3\"}]}"), "stop"),
            &r,
            &c,
        );
        assert!(
            v.reason().starts_with("schema: /items/0/price: "),
            "{}",
            v.reason()
        );
        assert!(check(&answer(json!("here you go: {"), "stop"), &r, &c)
            .reason()
            .starts_with("schema: not JSON"));
        let obj = req(json!({"response_format": {"type": "json_object"}}));
        assert_eq!(
            check(&answer(json!("[1]"), "stop"), &obj, &c).reason(),
            "schema: not a JSON object"
        );
    }

    #[test]
    fn tool_call_checks() {
        let r = req(
            json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}}}}]}),
        );
        let c = cfg(ALL);
        let call = |name: &str, args: &str| {
            json!({"choices": [{"message": {"content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": name, "arguments": args}}]}, "finish_reason": "tool_calls"}]})
        };
        assert!(check(&call("get_weather", "{\"city\":\"Oslo\"}"), &r, &c).accepted());
        assert_eq!(
            check(&call("launch", "{}"), &r, &c).reason(),
            "tool_calls: call to undeclared tool \"launch\""
        );
        assert!(check(&call("get_weather", "{\"city\":"), &r, &c)
            .reason()
            .starts_with("tool_calls: get_weather: arguments are not JSON"));
        assert!(check(&call("get_weather", "{}"), &r, &c)
            .reason()
            .starts_with("tool_calls: get_weather: /: "));
    }

    #[test]
    fn confidence_checks_and_skips() {
        let r = RequestChecks::default();
        let c = cfg(ALL);
        let with = |lps: &[f64]| {
            json!({"choices": [{"message": {"content": "Paris"}, "finish_reason": "stop",
                "logprobs": {"content": lps.iter().map(|l| json!({"token": "t", "logprob": l})).collect::<Vec<_>>()}}]})
        };
        assert!(check(&with(&[-0.1, -0.2]), &r, &c).accepted());
        assert!(check(&with(&[-2.0, -1.5]), &r, &c)
            .reason()
            .starts_with("confidence: mean logprob -1.75"));
        assert!(check(
            &with(&[-0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1, -6.0]),
            &r,
            &c
        )
        .reason()
        .starts_with("confidence: min token logprob -6.00"));
        assert_eq!(
            check(&answer(json!("Paris"), "stop"), &r, &c),
            Verdict::Accept {
                notes: vec!["confidence skipped (no logprobs)".into()]
            }
        );
    }

    #[test]
    fn malformed_request_schemas_are_problems() {
        let body = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 12}}}});
        let e = RequestChecks::from_request(body.as_object().unwrap(), &SchemaCache::new())
            .err()
            .unwrap();
        assert_eq!(e.1, "response_format");
        assert!(e.0.contains("not a valid JSON Schema"), "{}", e.0);
    }
}
