//! The chat completion request as the router sees it: the few fields it interprets, validated
//! with errors that name the field, and everything else kept as it came, to be passed through.

use bytes::Bytes;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::error::ApiError;

const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

/// Longest `messages` array accepted.
pub const MAX_MESSAGES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub stream: bool,
    /// The whole request body, every field the router does not interpret included.
    pub body: Map<String, Value>,
}

fn bad(message: impl Into<String>, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn check_number(body: &Map<String, Value>, key: &str, min: f64, max: f64) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if (min..=max).contains(&x) => Ok(()),
            _ => Err(bad(format!("{key} must be between {min} and {max}"), key)),
        },
        Some(_) => Err(bad(format!("{key} must be a number"), key)),
    }
}

fn check_positive_int(body: &Map<String, Value>, key: &str) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        Some(_) => Err(bad(format!("{key} must be a positive integer"), key)),
    }
}

impl ChatRequest {
    pub fn parse(bytes: &[u8]) -> Result<ChatRequest, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(
                format!(
                    "request body is not valid JSON: {e} (line {}, column {})",
                    e.line(),
                    e.column()
                ),
                None,
            )
        })?;
        let Value::Object(body) = value else {
            return Err(ApiError::bad_request(
                "request body must be a JSON object",
                None,
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
            Some(Value::String(_)) => return Err(bad("model must not be empty", "model")),
            Some(_) => return Err(bad("model must be a string", "model")),
            None => return Err(bad("you must provide a model parameter", "model")),
        };
        let messages = match body.get("messages") {
            Some(Value::Array(m)) => m,
            Some(_) => return Err(bad("messages must be an array", "messages")),
            None => return Err(bad("you must provide a messages parameter", "messages")),
        };
        if messages.is_empty() {
            return Err(bad(
                "messages must contain at least one message",
                "messages",
            ));
        }
        if messages.len() > MAX_MESSAGES {
            return Err(bad(
                format!("messages may hold at most {MAX_MESSAGES} messages"),
                "messages",
            ));
        }
        for (i, m) in messages.iter().enumerate() {
            let Value::Object(m) = m else {
                return Err(bad(
                    format!("messages[{i}] must be an object"),
                    &format!("messages[{i}]"),
                ));
            };
            match m.get("role") {
                Some(Value::String(r)) if ROLES.contains(&r.as_str()) => {}
                Some(Value::String(r)) => {
                    return Err(bad(
                        format!(
                            "messages[{i}].role {r:?} is not one of {}",
                            ROLES.join(", ")
                        ),
                        &format!("messages[{i}].role"),
                    ))
                }
                _ => {
                    return Err(bad(
                        format!("messages[{i}].role must be a string"),
                        &format!("messages[{i}].role"),
                    ))
                }
            }
            match m.get("content") {
                None | Some(Value::Null | Value::String(_) | Value::Array(_)) => {}
                Some(_) => {
                    return Err(bad(
                        format!(
                            "messages[{i}].content must be a string, an array of parts, or null"
                        ),
                        &format!("messages[{i}].content"),
                    ))
                }
            }
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("stream must be a boolean", "stream")),
        };
        match body.get("stream_options") {
            None | Some(Value::Null | Value::Object(_)) => {}
            Some(_) => return Err(bad("stream_options must be an object", "stream_options")),
        }
        check_number(&body, "temperature", 0.0, 2.0)?;
        check_number(&body, "top_p", 0.0, 1.0)?;
        check_number(&body, "presence_penalty", -2.0, 2.0)?;
        check_number(&body, "frequency_penalty", -2.0, 2.0)?;
        check_positive_int(&body, "max_tokens")?;
        check_positive_int(&body, "max_completion_tokens")?;
        check_positive_int(&body, "n")?;
        Ok(ChatRequest {
            model,
            stream,
            body,
        })
    }

    /// The body to send to a target: unchanged but for `model`.
    pub fn body_for(&self, model: &str) -> Bytes {
        self.serialize(Rewrite {
            body: &self.body,
            model,
            non_streaming: false,
            logprobs: false,
        })
    }

    /// The body for a cascade call: not streaming (the answer is checked whole), and asking
    /// for logprobs when the confidence check wants them.
    pub fn body_for_cascade(&self, model: &str, logprobs: bool) -> Bytes {
        self.serialize(Rewrite {
            body: &self.body,
            model,
            non_streaming: true,
            logprobs,
        })
    }

    fn serialize(&self, r: Rewrite<'_>) -> Bytes {
        // Serialising a map of JSON values to a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&r).unwrap_or_default())
    }
}

/// The request body with `model` replaced, and optionally streaming turned off and logprobs on.
struct Rewrite<'a> {
    body: &'a Map<String, Value>,
    model: &'a str,
    non_streaming: bool,
    logprobs: bool,
}

impl Serialize for Rewrite<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (k, v) in self.body {
            match k.as_str() {
                "model" => m.serialize_entry(k, self.model)?,
                "stream" if self.non_streaming => m.serialize_entry(k, &false)?,
                "stream_options" if self.non_streaming => {}
                "logprobs" if self.logprobs => m.serialize_entry(k, &true)?,
                _ => m.serialize_entry(k, v)?,
            }
        }
        if self.logprobs && !self.body.contains_key("logprobs") {
            m.serialize_entry("logprobs", &true)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::String),
            prop_oneof![
                Just("model"),
                Just("messages"),
                Just("role"),
                Just("content"),
                Just("stream"),
                Just("user"),
                Just("switchyard")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(5, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("model".to_string()),
                        Just("messages".to_string()),
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("stream".to_string()),
                        Just("temperature".to_string()),
                        Just("max_tokens".to_string()),
                        ".{0,8}".prop_map(|s| s)
                    ],
                    inner,
                    0..8
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::proptest_cases())]

        #[test]
        fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = ChatRequest::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_json_and_errors_are_400s(v in json_value()) {
            match ChatRequest::parse(v.to_string().as_bytes()) {
                Ok(r) => {
                    // Whatever it accepts, it can forward.
                    let out: Value = serde_json::from_slice(&r.body_for("m")).unwrap();
                    prop_assert_eq!(&out["model"], "m");
                }
                Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
            }
        }
    }

    fn param_of(body: &str) -> Option<String> {
        match ChatRequest::parse(body.as_bytes()) {
            Err(ApiError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn keeps_unknown_fields_and_replaces_model() {
        let r = ChatRequest::parse(
            br#"{"model":"switchyard","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function"}],"seed":7,"metadata":{"a":"b"},"stream":true}"#,
        )
        .unwrap();
        assert!(r.stream);
        let out: Value = serde_json::from_slice(&r.body_for("gpt-x")).unwrap();
        assert_eq!(out["model"], "gpt-x");
        assert_eq!(out["seed"], 7);
        assert_eq!(out["tools"][0]["type"], "function");
        assert_eq!(out["metadata"]["a"], "b");
    }

    #[test]
    fn invalid_fields_are_named() {
        assert_eq!(param_of(r#"{"messages":[]}"#).as_deref(), Some("model"));
        assert_eq!(
            param_of(r#"{"model":3,"messages":[]}"#).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[]}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":"hi"}"#).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#).as_deref(),
            Some("messages[0].role")
        );
        assert_eq!(
            param_of(r#"{"model":"m","messages":[{"role":"user","content":5}]}"#).as_deref(),
            Some("messages[0].content")
        );
        let ok = r#""messages":[{"role":"user","content":"x"}]"#;
        assert_eq!(
            param_of(&format!(r#"{{"model":"m",{ok},"stream":"yes"}}"#)).as_deref(),
            Some("stream")
        );
        assert_eq!(
            param_of(&format!(r#"{{"model":"m",{ok},"temperature":9}}"#)).as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param_of(&format!(r#"{{"model":"m",{ok},"max_tokens":0}}"#)).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(param_of("{not json"), None);
        assert_eq!(param_of("[1,2]"), None);
    }
}
