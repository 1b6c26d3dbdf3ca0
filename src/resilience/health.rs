//! Per-target health: a small circuit breaker.
//!
//! ```text
//!            N failures within `window`             `cooldown` elapsed: admit one probe
//!  Healthy ─────────────────────────────▶ Unhealthy ───────────────────────────────▶ Probing
//!     ▲                                        ▲                                        │
//!     │                 probe failed           └────────────────────────────────────────┤
//!     └──────────────────────────────────────────────────────── probe succeeded ────────┘
//! ```
//!
//! - **Healthy** (closed): every request is admitted; failures are remembered for `window`.
//! - **Unhealthy** (open): the target is skipped until `cooldown` has passed.
//! - **Probing** (half-open): one request is admitted as a probe; others are skipped. If the probe
//!   is abandoned (its caller went away), another is admitted after a further `cooldown`.
//!
//! Time comes from `tokio::time::Instant`, so tests drive it with paused time.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::config::HealthPolicy;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    Healthy,
    Unhealthy,
    Probing,
}

impl HealthState {
    /// The value of the `switchyard_target_health` gauge: 1 healthy, 0.5 probing, 0 unhealthy.
    pub fn gauge(self) -> f64 {
        match self {
            HealthState::Healthy => 1.0,
            HealthState::Probing => 0.5,
            HealthState::Unhealthy => 0.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Probing => "probing",
        }
    }
}

/// Whether a request may go to the target now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// Admitted as the one probe of a recovering target.
    Probe,
    No,
}

#[derive(Debug)]
enum State {
    Healthy { failures: VecDeque<Instant> },
    Unhealthy { until: Instant },
    Probing { started: Instant },
}

#[derive(Debug)]
pub struct Breaker {
    policy: HealthPolicy,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(policy: HealthPolicy) -> Self {
        Breaker {
            policy,
            state: Mutex::new(State::Healthy {
                failures: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> HealthState {
        match &*self.lock() {
            State::Healthy { .. } => HealthState::Healthy,
            State::Unhealthy { .. } => HealthState::Unhealthy,
            State::Probing { .. } => HealthState::Probing,
        }
    }

    /// Decides admission, moving Unhealthy to Probing once the cooldown has passed.
    pub fn admit(&self) -> Admit {
        let now = Instant::now();
        let mut st = self.lock();
        match &*st {
            State::Healthy { .. } => Admit::Yes,
            State::Unhealthy { until } if now >= *until => {
                *st = State::Probing { started: now };
                Admit::Probe
            }
            State::Unhealthy { .. } => Admit::No,
            State::Probing { started } if now.duration_since(*started) >= self.policy.cooldown => {
                *st = State::Probing { started: now };
                Admit::Probe
            }
            State::Probing { .. } => Admit::No,
        }
    }

    /// Whether `admit` would let a request through, without changing state.
    pub fn would_admit(&self) -> bool {
        let now = Instant::now();
        match &*self.lock() {
            State::Healthy { .. } => true,
            State::Unhealthy { until } => now >= *until,
            State::Probing { started } => now.duration_since(*started) >= self.policy.cooldown,
        }
    }

    /// Records a success; returns the new state if it changed.
    pub fn on_success(&self) -> Option<HealthState> {
        let mut st = self.lock();
        match &*st {
            // A late success from a call admitted before the target went unhealthy does not
            // close the breaker: only the probe does.
            State::Healthy { .. } | State::Unhealthy { .. } => None,
            State::Probing { .. } => {
                *st = State::Healthy {
                    failures: VecDeque::new(),
                };
                Some(HealthState::Healthy)
            }
        }
    }

    /// Records a failure; returns the new state if it changed.
    pub fn on_failure(&self) -> Option<HealthState> {
        let now = Instant::now();
        let mut st = self.lock();
        match &mut *st {
            State::Healthy { failures } => {
                while failures
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.policy.window)
                {
                    failures.pop_front();
                }
                failures.push_back(now);
                if failures.len() >= self.policy.failures as usize {
                    *st = State::Unhealthy {
                        until: now + self.policy.cooldown,
                    };
                    Some(HealthState::Unhealthy)
                } else {
                    None
                }
            }
            State::Probing { .. } => {
                *st = State::Unhealthy {
                    until: now + self.policy.cooldown,
                };
                Some(HealthState::Unhealthy)
            }
            // A late failure from a call admitted before the target went unhealthy.
            State::Unhealthy { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker() -> Breaker {
        Breaker::new(HealthPolicy {
            failures: 3,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_failures_in_window_and_recovers_after_cooldown() {
        let b = breaker();
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.admit(), Admit::Yes);
        assert_eq!(b.on_failure(), Some(HealthState::Unhealthy));
        assert_eq!(b.admit(), Admit::No);

        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(b.admit(), Admit::No);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.state(), HealthState::Probing);
        // Only one probe at a time.
        assert_eq!(b.admit(), Admit::No);
        assert_eq!(b.on_success(), Some(HealthState::Healthy));
        assert_eq!(b.admit(), Admit::Yes);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_count() {
        let b = breaker();
        b.on_failure();
        b.on_failure();
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.state(), HealthState::Healthy);
        assert_eq!(b.on_failure(), None);
        assert_eq!(b.on_failure(), Some(HealthState::Unhealthy));
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_success_does_not_close_an_open_breaker() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        assert_eq!(b.on_success(), None);
        assert_eq!(b.state(), HealthState::Unhealthy);
        assert_eq!(b.admit(), Admit::No);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_for_another_cooldown() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.on_failure(), Some(HealthState::Unhealthy));
        assert_eq!(b.admit(), Admit::No);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(b.would_admit());
        assert_eq!(b.admit(), Admit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_is_replaced_after_cooldown() {
        let b = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.admit(), Admit::Probe);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.admit(), Admit::No);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(b.admit(), Admit::Probe);
    }
}
