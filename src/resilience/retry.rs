//! What to do after a failed upstream call: retry the same target, move on to the next, or give
//! the upstream's answer back to the client. One exhaustive match on the error kind, so a new
//! kind of failure must be placed deliberately; nothing is retryable by default.

use std::time::Duration;

use crate::config::RetryPolicy;
use crate::upstream::UpstreamError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Call the same target again after this delay.
    Retry(Duration),
    /// Move on to the next target (or tier).
    Fallback,
    /// Return the upstream's error to the client as it is (a client error).
    Return,
}

/// `retries_done` counts retries already made of this target for this request.
pub fn decide(
    policy: &RetryPolicy,
    fallback_on: &[u16],
    e: &UpstreamError,
    retries_done: u32,
) -> Next {
    match e {
        UpstreamError::Status {
            status,
            retry_after,
            context_length,
            ..
        } => {
            if *context_length {
                // Another target may have a larger context window.
                return Next::Fallback;
            }
            if policy.on_status.contains(status) && retries_done < policy.max_retries {
                match retry_after {
                    Some(ra) if *ra > policy.retry_after_cap => {}
                    Some(ra) => return Next::Retry(*ra),
                    None => return Next::Retry(backoff(policy, retries_done)),
                }
            }
            if fallback_on.contains(status) {
                Next::Fallback
            } else {
                Next::Return
            }
        }
        // Timeouts and broken connections move on: the same target is the likeliest to do it again.
        UpstreamError::Connect(_)
        | UpstreamError::TtftTimeout(_)
        | UpstreamError::IdleTimeout(_)
        | UpstreamError::Closed(_)
        | UpstreamError::Malformed(_)
        | UpstreamError::ErrorEvent(_)
        | UpstreamError::Deadline => Next::Fallback,
    }
}

/// Exponential backoff with equal jitter: half the delay fixed, half random.
pub fn backoff(policy: &RetryPolicy, retries_done: u32) -> Duration {
    let exp = policy
        .backoff
        .saturating_mul(1u32.checked_shl(retries_done.min(16)).unwrap_or(u32::MAX));
    let d = exp.min(policy.max_backoff);
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 1,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            on_status: vec![429, 500, 503],
            retry_after_cap: Duration::from_secs(2),
            budget_ratio: 0.2,
        }
    }

    fn status(code: u16, ra: Option<u64>) -> UpstreamError {
        UpstreamError::Status {
            status: code,
            retry_after: ra.map(Duration::from_secs),
            body: Bytes::new(),
            context_length: false,
        }
    }

    const FALLBACK: &[u16] = &[429, 500, 502, 503, 504];

    #[test]
    fn retries_listed_statuses_then_falls_back() {
        let p = policy();
        assert!(matches!(
            decide(&p, FALLBACK, &status(500, None), 0),
            Next::Retry(_)
        ));
        assert_eq!(decide(&p, FALLBACK, &status(500, None), 1), Next::Fallback);
        assert_eq!(decide(&p, FALLBACK, &status(502, None), 0), Next::Fallback);
    }

    #[test]
    fn honours_retry_after_up_to_the_cap() {
        let p = policy();
        assert_eq!(
            decide(&p, FALLBACK, &status(429, Some(1)), 0),
            Next::Retry(Duration::from_secs(1))
        );
        assert_eq!(
            decide(&p, FALLBACK, &status(429, Some(30)), 0),
            Next::Fallback
        );
    }

    #[test]
    fn client_errors_are_returned_but_context_length_falls_back() {
        let p = policy();
        assert_eq!(decide(&p, FALLBACK, &status(400, None), 0), Next::Return);
        let ctx = UpstreamError::Status {
            status: 400,
            retry_after: None,
            body: Bytes::new(),
            context_length: true,
        };
        assert_eq!(decide(&p, FALLBACK, &ctx, 0), Next::Fallback);
    }

    #[test]
    fn transport_failures_fall_back_without_retry() {
        let p = policy();
        for e in [
            UpstreamError::Connect("refused"),
            UpstreamError::Closed("reset"),
            UpstreamError::Malformed("x".into()),
            UpstreamError::TtftTimeout(Duration::from_secs(1)),
        ] {
            assert_eq!(decide(&p, FALLBACK, &e, 0), Next::Fallback);
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        for _ in 0..50 {
            let b0 = backoff(&p, 0);
            assert!(b0 >= Duration::from_millis(50) && b0 <= Duration::from_millis(100));
            let b5 = backoff(&p, 5);
            assert!(b5 >= Duration::from_millis(500) && b5 <= Duration::from_secs(1));
        }
    }
}
