//! Logging setup and the Prometheus metrics, all named `switchyard_*`.
//!
//! Per-target handles are created once at start-up and cloned into the target's runtime, so
//! the hot path increments an atomic instead of looking up a label set.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Logs go to stderr; `RUST_LOG` filters them (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tier: String,
    pub status: u16,
    pub stream: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub target: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub target: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CascadeLabels {
    pub tier: String,
    pub verdict: String,
    pub reason: String,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~100 s
    Histogram::new(exponential_buckets(0.0001, 2.5, 16))
}

fn overhead_histogram() -> Histogram {
    // 10 µs .. ~80 ms
    Histogram::new(exponential_buckets(0.00001, 2.0, 14))
}

pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<TierLabels, Histogram, fn() -> Histogram>,
    pub ttft: Family<TierLabels, Histogram, fn() -> Histogram>,
    pub overhead: Histogram,
    pub upstream_attempts: Family<AttemptLabels, Counter>,
    pub retries: Family<TargetLabels, Counter>,
    pub failovers: Family<TierLabels, Counter>,
    pub tier_fallbacks: Family<TierLabels, Counter>,
    pub hedges: Family<TierLabels, Counter>,
    pub target_health: Family<TargetLabels, FloatGauge>,
    pub health_transitions: Family<TransitionLabels, Counter>,
    pub stream_errors: Family<TargetLabels, Counter>,
    pub shed: Counter,
    pub in_flight: Gauge,
    pub cascade: Family<CascadeLabels, Counter>,
    pub cost: Family<TierLabels, Counter<f64, AtomicU64>>,
    pub domain_checks: Family<CheckLabels, Counter>,
    pub intent_checks: Family<CheckLabels, Counter>,
}

/// The labels of the domain and intent checks' counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    /// `kept` (the checked label is the first model's) or `changed`.
    pub outcome: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Chat completion requests answered, by tier and HTTP status",
            requests.clone(),
        );
        let request_duration: Family<TierLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from request to the end of the response (the last byte of a stream)",
            request_duration.clone(),
        );
        let ttft: Family<TierLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "time_to_first_token_seconds",
            "Time from request to the first byte of the answer (the whole body when not streaming)",
            ttft.clone(),
        );
        let overhead = overhead_histogram();
        registry.register(
            "router_overhead_seconds",
            "Time spent in the router itself, upstream waiting excluded",
            overhead.clone(),
        );
        let upstream_attempts = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "upstream_attempts",
            "Upstream calls made, by target and outcome",
            upstream_attempts.clone(),
        );
        let retries = Family::<TargetLabels, Counter>::default();
        registry.register("retries", "Retries of the same target", retries.clone());
        let failovers = Family::<TierLabels, Counter>::default();
        registry.register(
            "failovers",
            "Moves to the next target after a failure",
            failovers.clone(),
        );
        let tier_fallbacks = Family::<TierLabels, Counter>::default();
        registry.register(
            "tier_fallbacks",
            "Whole tiers that failed and fell back to their fallback tier",
            tier_fallbacks.clone(),
        );
        let hedges = Family::<TierLabels, Counter>::default();
        registry.register(
            "hedges",
            "Hedged requests started after hedge_after",
            hedges.clone(),
        );
        let target_health = Family::<TargetLabels, FloatGauge>::default();
        registry.register(
            "target_health",
            "Target health: 1 healthy, 0.5 probing, 0 unhealthy (skipped)",
            target_health.clone(),
        );
        let health_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "health_transitions",
            "Target health state changes",
            health_transitions.clone(),
        );
        let stream_errors = Family::<TargetLabels, Counter>::default();
        registry.register(
            "stream_errors",
            "Streams that failed after their first byte reached the client",
            stream_errors.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "shed",
            "Requests refused with 429 because the router was at capacity",
            shed.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Chat completion requests being handled",
            in_flight.clone(),
        );
        let cascade = Family::<CascadeLabels, Counter>::default();
        registry.register(
            "cascade",
            "Cascade checks by tier and verdict (accepted, rejected, skipped, failed) and reason",
            cascade.clone(),
        );
        let cost = Family::<TierLabels, Counter<f64, AtomicU64>>::default();
        registry.register(
            "cost_usd",
            "Upstream cost in US dollars of answered requests (every call made), by the tier that answered",
            cost.clone(),
        );
        let domain_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "domain_checks",
            "Prompts whose domain the second model (routing.domain_check) re-scored, by whether it kept or changed the first model's domain",
            domain_checks.clone(),
        );
        let intent_checks = Family::<CheckLabels, Counter>::default();
        registry.register(
            "intent_checks",
            "Prompts whose intent the second model (routing.intent_check_below) re-read, by whether the pooled intent kept or changed the first model's",
            intent_checks.clone(),
        );
        Metrics {
            registry,
            cascade,
            cost,
            domain_checks,
            intent_checks,
            requests,
            request_duration,
            ttft,
            overhead,
            upstream_attempts,
            retries,
            failovers,
            tier_fallbacks,
            hedges,
            target_health,
            health_transitions,
            stream_errors,
            shed,
            in_flight,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
