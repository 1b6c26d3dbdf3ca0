//! Turning a whole chat completion into the server-sent events of a streamed one, for answers
//! the cascade buffered and checked before streaming them out.

use bytes::Bytes;
use serde_json::{json, Map, Value};

fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// The stream a client would have received: a role chunk, the content (and tool calls), the
/// finish reason, the usage chunk when asked for, and `[DONE]`.
pub fn completion_to_events(completion: &Value, include_usage: bool) -> Vec<Bytes> {
    let mut base = Map::new();
    for k in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = completion.get(k) {
            base.insert(k.to_string(), v.clone());
        }
    }
    base.insert("object".into(), json!("chat.completion.chunk"));
    let chunk = |choices: Value| {
        let mut c = base.clone();
        c.insert("choices".into(), choices);
        event(&Value::Object(c))
    };
    let mut out = Vec::new();
    let empty = Vec::new();
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for (i, ch) in choices.iter().enumerate() {
        let index = ch.get("index").cloned().unwrap_or(json!(i));
        let msg = ch.get("message").cloned().unwrap_or(Value::Null);
        out.push(chunk(json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}])));
        let mut delta = Map::new();
        if let Some(c) = msg
            .get("content")
            .filter(|c| c.as_str().is_some_and(|s| !s.is_empty()))
        {
            delta.insert("content".into(), c.clone());
        }
        if let Some(r) = msg.get("refusal").filter(|r| !r.is_null()) {
            delta.insert("refusal".into(), r.clone());
        }
        if let Some(Value::Array(calls)) = msg.get("tool_calls") {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    json!({"index": k, "id": c.get("id"), "type": c.get("type").cloned().unwrap_or(json!("function")),
                           "function": c.get("function")})
                })
                .collect();
            delta.insert("tool_calls".into(), Value::Array(calls));
        }
        if !delta.is_empty() {
            let logprobs = ch.get("logprobs").cloned().unwrap_or(Value::Null);
            out.push(chunk(json!([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null}])));
        }
        let finish = ch.get("finish_reason").cloned().unwrap_or(json!("stop"));
        out.push(chunk(
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": finish}]),
        ));
    }
    if include_usage {
        if let Some(u) = completion.get("usage") {
            let mut c = base.clone();
            c.insert("choices".into(), json!([]));
            c.insert("usage".into(), u.clone());
            out.push(event(&Value::Object(c)));
        }
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completion_becomes_a_stream() {
        let c = json!({"id": "x", "created": 1, "model": "m", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}});
        let ev: Vec<String> = completion_to_events(&c, true)
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(ev.len(), 5);
        assert!(ev[1].contains("\"content\":\"Hello\""));
        assert!(ev[2].contains("\"finish_reason\":\"stop\""));
        assert!(ev[3].contains("\"usage\""));
        assert_eq!(ev[4], "data: [DONE]\n\n");
    }
}
