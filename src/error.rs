//! The one error type a client can see, the one table mapping it to an HTTP status, and the one
//! OpenAI-shaped body: `{"error":{"message","type","param","code"}}`.
//!
//! Messages are written for the client: they say what was wrong with the request or what each
//! upstream did, never a provider key or an internal detail.

use http::StatusCode;
use serde_json::json;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON or an invalid field; `param` names the field.
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("timed out reading the request body")]
    RequestTimeout,
    #[error("the model `{0}` does not exist; see GET /v1/models")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the router is at capacity; retry shortly")]
    Overloaded,
    /// Every target tried failed; the message says what each did.
    #[error("{0}")]
    AllTargetsFailed(String),
    /// The cascade's last answer failed its checks on a `strict` route.
    #[error("{0}")]
    CascadeRejected(String),
    /// The request's total deadline passed.
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("internal error")]
    Internal,
}

impl From<&ApiError> for StatusCode {
    fn from(e: &ApiError) -> StatusCode {
        match e {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AllTargetsFailed(_) | ApiError::CascadeRejected(_) => StatusCode::BAD_GATEWAY,
            ApiError::DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
            param: param.map(str::to_string),
        }
    }

    /// OpenAI's `type` and `code` for this error.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest { .. } => ("invalid_request_error", "invalid_request"),
            ApiError::Unauthorized => ("invalid_request_error", "invalid_api_key"),
            ApiError::Forbidden(_) => ("permission_error", "permission_denied"),
            ApiError::RequestTimeout => ("invalid_request_error", "request_timeout"),
            ApiError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            ApiError::NotFound(_) => ("invalid_request_error", "not_found"),
            ApiError::MethodNotAllowed(_) => ("invalid_request_error", "method_not_allowed"),
            ApiError::PayloadTooLarge(_) => ("invalid_request_error", "request_too_large"),
            ApiError::Overloaded => ("rate_limit_error", "router_overloaded"),
            ApiError::AllTargetsFailed(_) => ("upstream_error", "all_targets_failed"),
            ApiError::CascadeRejected(_) => ("upstream_error", "cascade_rejected"),
            ApiError::DeadlineExceeded(_) => ("timeout_error", "deadline_exceeded"),
            ApiError::Internal => ("server_error", "internal_error"),
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from(self)
    }

    /// The OpenAI-shaped body.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind();
        let param = match self {
            ApiError::BadRequest { param, .. } => param.clone(),
            ApiError::ModelNotFound(_) => Some("model".to_string()),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_an_openai_shaped_body() {
        let all = [
            ApiError::bad_request("messages must be an array", Some("messages")),
            ApiError::Unauthorized,
            ApiError::Forbidden("no".into()),
            ApiError::RequestTimeout,
            ApiError::ModelNotFound("gpt-9".into()),
            ApiError::NotFound("no route".into()),
            ApiError::MethodNotAllowed("use POST".into()),
            ApiError::PayloadTooLarge(10),
            ApiError::Overloaded,
            ApiError::AllTargetsFailed("a: http 500".into()),
            ApiError::CascadeRejected("cheap:rejected(empty)".into()),
            ApiError::DeadlineExceeded("deadline".into()),
            ApiError::Internal,
        ];
        for e in all {
            let b = e.body();
            let inner = &b["error"];
            assert!(inner["message"].is_string());
            assert!(inner["type"].is_string());
            assert!(inner["code"].is_string());
            assert!(inner.get("param").is_some());
            assert!(e.status().is_client_error() || e.status().is_server_error());
        }
        assert_eq!(
            ApiError::ModelNotFound("x".into()).body()["error"]["param"],
            "model"
        );
    }
}
