//! Provider clients. Today one wire protocol, OpenAI-compatible chat completions, which covers
//! OpenAI, vLLM, Ollama, llama.cpp server, Groq, Together, DeepSeek, OpenRouter and most others.
//!
//! Each provider gets its own pooled `reqwest::Client` (keep-alive, HTTP/1.1, and HTTP/2 where
//! the server negotiates it over TLS). This module knows nothing of tiers, retries or deadlines:
//! it sends one request and says precisely what came back.

pub mod sim;
pub mod sse;

use std::error::Error as _;
use std::time::Duration;

use bytes::Bytes;
use http::header;

use crate::config::Provider;

/// Longest upstream error body kept (for passing a client error back, and for diagnosis).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What went wrong with one upstream call. Its `Display` is short: it goes into the route header.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect failed ({0})")]
    Connect(&'static str),
    #[error("no answer within ttft {}ms", .0.as_millis())]
    TtftTimeout(Duration),
    #[error("stream silent for {}ms", .0.as_millis())]
    IdleTimeout(Duration),
    #[error("request deadline reached")]
    Deadline,
    #[error("http {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        body: Bytes,
        context_length: bool,
    },
    #[error("connection {0}")]
    Closed(&'static str),
    #[error("malformed response ({0})")]
    Malformed(String),
    #[error("error in stream ({0})")]
    ErrorEvent(String),
}

impl UpstreamError {
    /// Whether this failure says something about the target's health (a client error does not).
    pub fn counts_against_health(&self) -> bool {
        match self {
            UpstreamError::Status {
                status,
                context_length,
                ..
            } => !*context_length && (*status >= 500 || matches!(status, 401 | 403 | 408 | 429)),
            UpstreamError::Connect(_)
            | UpstreamError::TtftTimeout(_)
            | UpstreamError::IdleTimeout(_)
            | UpstreamError::Closed(_)
            | UpstreamError::Malformed(_)
            | UpstreamError::ErrorEvent(_) => true,
            UpstreamError::Deadline => false,
        }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Connect(_) => "connect",
            UpstreamError::TtftTimeout(_) => "ttft_timeout",
            UpstreamError::IdleTimeout(_) => "idle_timeout",
            UpstreamError::Deadline => "deadline",
            UpstreamError::Status { status, .. } if *status >= 500 => "http_5xx",
            UpstreamError::Status { status: 429, .. } => "http_429",
            UpstreamError::Status { .. } => "http_4xx",
            UpstreamError::Closed(_) => "closed",
            UpstreamError::Malformed(_) => "malformed",
            UpstreamError::ErrorEvent(_) => "error_event",
        }
    }
}

/// Classifies a transport error by walking its `source()` chain.
pub fn classify(e: &reqwest::Error) -> UpstreamError {
    let mut io_kind = None;
    let mut incomplete = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            io_kind = Some(io.kind());
        }
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            incomplete |= h.is_incomplete_message() || h.is_canceled() || h.is_closed();
        }
        src = s.source();
    }
    use std::io::ErrorKind as K;
    if e.is_connect() {
        return UpstreamError::Connect(match io_kind {
            Some(K::ConnectionRefused) => "refused",
            Some(K::TimedOut) => "timed out",
            _ => "unreachable",
        });
    }
    match io_kind {
        Some(K::ConnectionReset) => UpstreamError::Closed("reset"),
        Some(K::ConnectionAborted) => UpstreamError::Closed("aborted"),
        Some(K::BrokenPipe) => UpstreamError::Closed("broken pipe"),
        Some(K::UnexpectedEof) => UpstreamError::Closed("closed early"),
        _ if incomplete => UpstreamError::Closed("closed before the answer was complete"),
        _ if e.is_decode() || e.is_body() => UpstreamError::Closed("body interrupted"),
        _ => UpstreamError::Closed("failed"),
    }
}

/// Installs the TLS crypto provider once per process (ring; no C toolchain beyond `cc`).
pub fn ensure_crypto_provider() {
    // Err means one is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// One provider's pooled HTTP client and the URL it posts to.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    chat_url: String,
    provider: Provider,
}

impl ProviderClient {
    pub fn new(provider: &Provider) -> Result<Self, reqwest::Error> {
        ensure_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(provider.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .tcp_nodelay(true)
            .no_proxy();
        if provider.http2_prior_knowledge {
            builder = builder.http2_prior_knowledge();
        }
        let http = builder.build()?;
        Ok(ProviderClient {
            http,
            chat_url: format!("{}/chat/completions", provider.base_url),
            provider: provider.clone(),
        })
    }

    pub fn name(&self) -> &str {
        &self.provider.name
    }

    /// Sends one chat completion request and returns the response once its headers arrive,
    /// or the error status with its (bounded) body.
    pub async fn send(
        &self,
        body: Bytes,
        stream: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut req = self
            .http
            .post(&self.chat_url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::ACCEPT,
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            )
            .body(body);
        if let Some(key) = &self.provider.api_key {
            let mut v =
                http::HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                    UpstreamError::Malformed("api key is not a valid header value".into())
                })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        }
        for (k, v) in &self.provider.headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|e| classify(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let mut body = read_bounded(resp, MAX_ERROR_BODY).await;
        if let Some(key) = &self.provider.api_key {
            body = redact(body, key.expose());
        }
        let context_length =
            status == http::StatusCode::BAD_REQUEST && is_context_length_error(&body);
        Err(UpstreamError::Status {
            status: status.as_u16(),
            retry_after,
            body,
            context_length,
        })
    }
}

/// The cost of an answer in US dollars from its `usage` and the target's prices.
pub fn cost_usd(price: Option<crate::config::Price>, answer: &serde_json::Value) -> Option<f64> {
    let p = price?;
    let usage = answer.get("usage")?;
    let input = usage.get("prompt_tokens")?.as_f64()?;
    let output = usage.get("completion_tokens")?.as_f64()?;
    Some((input * p.input + output * p.output) / 1e6)
}

/// `Retry-After` as seconds (the HTTP-date form is rare from LLM providers and is ignored).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
        .map(Duration::from_secs_f64)
}

/// Removes a secret from an upstream body (a provider that echoes the key in an error must not
/// make the router pass it on).
fn redact(body: Bytes, secret: &str) -> Bytes {
    if secret.len() < 4 {
        return body;
    }
    let text = String::from_utf8_lossy(&body);
    if !text.contains(secret) {
        return body;
    }
    Bytes::from(text.replace(secret, "<redacted>"))
}

/// Reads a whole answer, failing once it passes `limit` bytes.
pub async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Bytes, UpstreamError> {
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e))? {
        if out.len() + chunk.len() > limit {
            return Err(UpstreamError::Malformed(format!(
                "answer larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

fn is_context_length_error(body: &[u8]) -> bool {
    let text = String::from_utf8_lossy(body).to_ascii_lowercase();
    text.contains("context_length_exceeded") || text.contains("maximum context length")
}

async fn read_bounded(mut resp: reqwest::Response, limit: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn secrets_are_redacted_from_bodies() {
        let b = redact(Bytes::from_static(b"bad key sk-abc123 given"), "sk-abc123");
        assert_eq!(&b[..], b"bad key <redacted> given");
    }

    #[test]
    fn context_length_is_recognised() {
        assert!(is_context_length_error(
            br#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#
        ));
        assert!(!is_context_length_error(
            br#"{"error":{"message":"bad temperature"}}"#
        ));
    }
}
