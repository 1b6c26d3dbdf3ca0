//! Configuration.
//!
//! Two layers, so a config can never be half-understood: the `Raw*` serde types reject unknown
//! keys (`deny_unknown_fields`) and carry the file's shape; [`RawConfig::validate`] turns them into a
//! [`Config`] whose invariants hold (every reference resolves, every list that must be non-empty
//! is, every deadline fits inside its budget). Every error names the key path it is about, e.g.
//! `tiers.cheap.targets[1].provider`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A configuration error: the key path and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        path: path.into(),
        message: message.into(),
    }
}

/// A duration written in human units in the config (`"250ms"`, `"1s"`, `"2m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write e.g. \"250ms\" or \"2s\""
                ))
            })
    }
}

/// A secret read from the environment. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that must send it (the upstream `Authorization` header).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// ---------------------------------------------------------------------------------------------
// The file's shape.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub routing: RawRouting,
    #[serde(default)]
    pub auth: RawAuth,
    pub providers: BTreeMap<String, RawProvider>,
    pub tiers: BTreeMap<String, RawTier>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on; `--listen` overrides it.
    pub listen: Option<String>,
    /// Largest request body accepted, in bytes (413 above it).
    pub max_body_bytes: Option<usize>,
    /// Requests handled at once; more are shed with 429.
    pub max_concurrency: Option<usize>,
    /// How long a client may take to send its request headers (the connection is closed after).
    pub header_read_timeout: Option<HumanDuration>,
    /// How long a client may take to send its request body (408 after).
    pub body_read_timeout: Option<HumanDuration>,
    /// Largest non-streaming answer accepted from an upstream, in bytes.
    pub max_upstream_response_bytes: Option<usize>,
    /// A JSON-lines file to append one record per answered request to (the evaluation dataset
    /// format). Off by default.
    pub decision_log: Option<std::path::PathBuf>,
    /// Also write each request's prompt text into the decision log. Off by default.
    pub decision_log_prompts: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    /// The tier used for the model `switchyard` when nothing else decides (and the cheap tier
    /// of the complexity policy).
    pub default_tier: String,
    /// `embedded` (the model compiled into the binary, the default), `none`, or a model folder.
    pub classifier: Option<String>,
    /// A second model folder (a full-encoder model) that re-scores the domain of prompts the
    /// classifier is unsure of. Off by default.
    pub domain_check: Option<std::path::PathBuf>,
    /// The check runs when the classifier's probability of `general` is below this (0.9).
    pub domain_check_below: Option<f64>,
    /// The domain check's model also re-reads the intent when the classifier's probability of
    /// its intent is below this. Off by default.
    pub intent_check_below: Option<f64>,
    /// Offsets added to the classifier's domain log-probabilities, by label, in place of those
    /// the model was trained with (its `config.json` `domain_offsets`), e.g. `{ legal = 0.0 }`
    /// or `{}` for none. Default: the model's.
    pub domain_offsets: Option<BTreeMap<String, f64>>,
    /// The tier for prompts whose complexity is above the threshold.
    pub strong_tier: Option<String>,
    /// Route by the classifier's complexity score for this recorded pair of models (e.g.
    /// "llmrouter"; `switchyard train --complexity-pair`) instead of the head's, which weighs
    /// every recorded pair at once. Off by default.
    pub complexity_pair: Option<String>,
    /// Complexity above this goes to `strong_tier`; the per-request knob overrides it.
    pub complexity_threshold: Option<f64>,
    /// Per-intent thresholds, e.g. `{ coding = 0.3 }`.
    #[serde(default)]
    pub intent_thresholds: BTreeMap<String, f64>,
    /// A confident non-general domain goes to its tier, e.g. `{ legal = "legal" }`.
    #[serde(default)]
    pub domain_tiers: BTreeMap<String, String>,
    /// The domain probability needed for `domain_tiers`.
    pub domain_min_confidence: Option<f64>,
    /// Explicit rules, checked in order before the classifier.
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub tier: String,
    /// Case-insensitive words or phrases; any one matches.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// A regular expression over the prompt text.
    pub regex: Option<String>,
    /// Request `metadata` fields that must all equal these values.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// Router API keys, stored as SHA-256 hex digests. Empty: no key is required.
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub name: String,
    pub sha256: String,
    /// Tiers this key may use (by routing, pinning or a target's model name); empty: all.
    #[serde(default)]
    pub tiers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    /// Wire protocol; only `openai` (OpenAI-compatible chat completions) for now.
    #[serde(default)]
    pub kind: ProviderKind,
    /// e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Name of the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// Extra headers sent with every request (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub connect_timeout: Option<HumanDuration>,
    /// Speak HTTP/2 without TLS negotiation (h2c), e.g. to a local vLLM behind an h2 proxy.
    /// Over https, HTTP/2 is negotiated automatically.
    #[serde(default)]
    pub http2_prior_knowledge: bool,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Openai,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub targets: Vec<RawTarget>,
    #[serde(default)]
    pub slo: RawSlo,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub health: RawHealth,
    /// Upstream statuses that move on to the next target (timeouts and connection errors always do).
    pub fallback_on: Option<Vec<u16>>,
    /// Tier tried when every target of this one failed.
    pub fallback_tier: Option<String>,
    /// Start the next target in parallel when the current one has not answered by then.
    pub hedge_after: Option<HumanDuration>,
    /// Check this tier's answers and escalate the failures to a stronger tier.
    pub cascade: Option<RawCascade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCascade {
    /// The tier a rejected answer escalates to (default `reasoning`).
    pub escalate_to: Option<String>,
    /// Checks to run, cheapest first: `schema`, `tool_calls`, `completion`, `confidence`,
    /// `arithmetic`. Default: all but `arithmetic`.
    pub checks: Option<Vec<Check>>,
    /// Reject when the mean token log-probability is below this.
    pub min_mean_logprob: Option<f64>,
    /// Reject when any token's log-probability is below this.
    pub min_token_logprob: Option<f64>,
    /// Case-insensitive phrases that mark a refusal near the start of an answer.
    pub refusal_patterns: Option<Vec<String>>,
    /// Streaming requests: `buffer` (check, then stream) or `bypass` (stream unchecked).
    pub stream: Option<StreamMode>,
    /// Return 502 instead of the last tier's answer when it still fails the checks.
    pub strict: Option<bool>,
    /// Escalate only if at least this much of the request's deadline is left.
    pub min_escalation_time: Option<HumanDuration>,
    /// With too little time left to escalate: `accept` the answer or `fail` the request.
    pub on_short_deadline: Option<ShortDeadline>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Schema,
    ToolCalls,
    Completion,
    Confidence,
    Arithmetic,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    Buffer,
    Bypass,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ShortDeadline {
    Accept,
    Fail,
}

/// Prices in US dollars per million tokens.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub provider: String,
    pub model: String,
    /// Lower is tried first; defaults to the position in the list.
    pub priority: Option<i64>,
    /// `false`: used only when it is the highest-priority healthy target, never as a fallback.
    pub fallback: Option<bool>,
    #[serde(default)]
    pub slo: RawSlo,
    #[serde(default)]
    pub retry: RawRetry,
    /// For cost accounting: $ per million input and output tokens.
    pub price: Option<Price>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSlo {
    /// Time to the first byte of the answer (the whole body when not streaming).
    pub ttft: Option<HumanDuration>,
    /// The whole request, every attempt and fallback included.
    pub total: Option<HumanDuration>,
    /// Longest silence between two chunks of a stream once it has started.
    pub idle: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    /// Retries of the same target after the first call.
    pub max_retries: Option<u32>,
    /// First backoff delay; doubles each retry, with jitter.
    pub backoff: Option<HumanDuration>,
    pub max_backoff: Option<HumanDuration>,
    /// Upstream statuses that are retried on the same target.
    pub on_status: Option<Vec<u16>>,
    /// Longest `Retry-After` honoured; a longer one moves on to the next target instead.
    pub retry_after_cap: Option<HumanDuration>,
    /// Retries allowed as a share of recent calls to the target (tower's retry budget), 0..=1.
    pub budget_ratio: Option<f32>,
}

#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Failures within `window` that make a target unhealthy.
    pub failures: Option<u32>,
    pub window: Option<HumanDuration>,
    /// Time an unhealthy target is skipped before one probe request is let through.
    pub cooldown: Option<HumanDuration>,
}

// ---------------------------------------------------------------------------------------------
// The validated configuration.

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_CONCURRENCY: usize = 1024;
pub const DEFAULT_TTFT: Duration = Duration::from_secs(30);
pub const DEFAULT_TOTAL: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_RETRIES: u32 = 1;
pub const DEFAULT_BACKOFF: Duration = Duration::from_millis(50);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_STATUSES: &[u16] = &[429, 500, 502, 503, 504];
pub const DEFAULT_FALLBACK_STATUSES: &[u16] = &[401, 403, 404, 408, 429, 500, 502, 503, 504];
pub const DEFAULT_BUDGET_RATIO: f32 = 0.2;
pub const DEFAULT_HEALTH_FAILURES: u32 = 5;
pub const DEFAULT_HEALTH_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_HEALTH_COOLDOWN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub default_tier: String,
    pub routing: Routing,
    pub api_keys: Vec<ApiKeyHash>,
    pub providers: BTreeMap<String, Provider>,
    pub tiers: BTreeMap<String, Tier>,
}

/// Which model the router classifies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassifierChoice {
    Embedded,
    None,
    Dir(std::path::PathBuf),
}

/// The validated routing policy settings.
#[derive(Debug, Clone)]
pub struct Routing {
    pub classifier: ClassifierChoice,
    /// The domain check's model folder and threshold.
    pub domain_check: Option<(std::path::PathBuf, f32)>,
    /// The intent check's threshold (its model is the domain check's).
    pub intent_check_below: Option<f32>,
    /// The domain offsets that replace the model's, if any.
    pub domain_offsets: Option<BTreeMap<String, f32>>,
    pub strong_tier: Option<String>,
    /// The recorded pair whose complexity score routes, instead of the head's.
    pub complexity_pair: Option<String>,
    pub complexity_threshold: f64,
    pub intent_thresholds: BTreeMap<String, f64>,
    pub domain_tiers: BTreeMap<String, String>,
    pub domain_min_confidence: f64,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub tier: String,
    /// Lower-case.
    pub keywords: Vec<String>,
    pub regex: Option<regex::Regex>,
    pub metadata: BTreeMap<String, String>,
}

pub const DEFAULT_COMPLEXITY_THRESHOLD: f64 = 0.5;
pub const DEFAULT_DOMAIN_MIN_CONFIDENCE: f64 = 0.6;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_concurrency: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_upstream_response_bytes: usize,
    pub decision_log: Option<std::path::PathBuf>,
    pub decision_log_prompts: bool,
}

#[derive(Debug, Clone)]
pub struct ApiKeyHash {
    pub name: String,
    pub sha256: [u8; 32],
    /// Empty: every tier.
    pub tiers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash.
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub connect_timeout: Duration,
    pub http2_prior_knowledge: bool,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    /// In the order they are tried.
    pub targets: Vec<Target>,
    pub fallback_tier: Option<String>,
    pub hedge_after: Option<Duration>,
    pub total: Duration,
    pub cascade: Option<Cascade>,
}

pub const DEFAULT_REFUSALS: &[&str] = &[
    "i'm sorry, but i can",
    "i am sorry, but i can",
    "i'm sorry, i can't",
    "i cannot help with",
    "i can't help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm unable to help",
    "i am unable to help",
    "i'm not able to help",
    "i won't be able to help",
    "as an ai language model, i cannot",
];

/// A tier's cascade: which checks its answers must pass, and where failures go.
#[derive(Debug, Clone, PartialEq)]
pub struct Cascade {
    pub escalate_to: String,
    /// Sorted, cheapest first.
    pub checks: Vec<Check>,
    pub min_mean_logprob: f64,
    pub min_token_logprob: f64,
    /// Lower-case.
    pub refusal_patterns: Vec<String>,
    pub stream: StreamMode,
    pub strict: bool,
    pub min_escalation_time: Duration,
    pub on_short_deadline: ShortDeadline,
}

impl Cascade {
    pub fn has(&self, c: Check) -> bool {
        self.checks.contains(&c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slo {
    pub ttft: Duration,
    pub total: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub on_status: Vec<u16>,
    pub retry_after_cap: Duration,
    pub budget_ratio: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    pub failures: u32,
    pub window: Duration,
    pub cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct Target {
    /// `provider/model`: the name in headers, metrics and health.
    pub id: String,
    pub provider: String,
    pub model: String,
    pub fallback: bool,
    pub slo: Slo,
    pub retry: RetryPolicy,
    pub health: HealthPolicy,
    pub fallback_on: Vec<u16>,
    pub price: Option<Price>,
}

impl Config {
    /// Parses and validates a TOML config; `env` looks up environment variables (API keys).
    pub fn from_toml(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| err("(file)", e.to_string()))?;
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            err(
                if path == "." {
                    "(file)".to_string()
                } else {
                    path
                },
                inner.message().to_string(),
            )
        })?;
        raw.validate(env)
    }

    /// Reads, parses and validates a config file, taking API keys from the process environment.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_config(path)?, &|k| std::env::var(k).ok())
    }

    /// [`Config::load`] for the commands that call no provider (`classify`, `eval`): provider
    /// keys are not looked up, so a config whose keys this machine lacks still gives its policy.
    pub fn load_offline(path: &std::path::Path) -> Result<Config, ConfigError> {
        Config::from_toml(&read_config(path)?, &|_| Some("offline".into()))
    }

    /// The tier a target model name belongs to (the first tier listing it) and its index there.
    pub fn find_target_model(&self, model: &str) -> Option<(&Tier, usize)> {
        self.tiers.values().find_map(|t| {
            t.targets
                .iter()
                .position(|x| x.model == model)
                .map(|i| (t, i))
        })
    }
}

fn check_status_list(path: &str, codes: &[u16]) -> Result<(), ConfigError> {
    for (i, c) in codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            return Err(err(
                format!("{path}[{i}]"),
                format!("{c} is not an HTTP status code"),
            ));
        }
    }
    Ok(())
}

fn valid_name(path: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(err(
            path,
            format!(
                "name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.'"
            ),
        ))
    }
}

fn slo_of(path: &str, raw: &RawSlo, base: Slo) -> Result<Slo, ConfigError> {
    let ttft = raw.ttft.map_or(base.ttft, |d| d.0);
    let total = raw.total.map_or(base.total, |d| d.0);
    let idle = raw
        .idle
        .map_or(if raw.ttft.is_some() { ttft } else { base.idle }, |d| d.0);
    for (k, v) in [("ttft", ttft), ("total", total), ("idle", idle)] {
        if v.is_zero() {
            return Err(err(format!("{path}.{k}"), "must be greater than zero"));
        }
    }
    if ttft > total {
        return Err(err(
            format!("{path}.ttft"),
            format!("{ttft:?} is longer than slo.total {total:?}"),
        ));
    }
    Ok(Slo { ttft, total, idle })
}

fn retry_of(path: &str, raw: &RawRetry, base: &RetryPolicy) -> Result<RetryPolicy, ConfigError> {
    let on_status = raw
        .on_status
        .clone()
        .unwrap_or_else(|| base.on_status.clone());
    check_status_list(&format!("{path}.on_status"), &on_status)?;
    let budget_ratio = raw.budget_ratio.unwrap_or(base.budget_ratio);
    if !(0.0..=1.0).contains(&budget_ratio) {
        return Err(err(
            format!("{path}.budget_ratio"),
            "must be between 0 and 1",
        ));
    }
    Ok(RetryPolicy {
        max_retries: raw.max_retries.unwrap_or(base.max_retries),
        backoff: raw.backoff.map_or(base.backoff, |d| d.0),
        max_backoff: raw.max_backoff.map_or(base.max_backoff, |d| d.0),
        on_status,
        retry_after_cap: raw.retry_after_cap.map_or(base.retry_after_cap, |d| d.0),
        budget_ratio,
    })
}

/// `target`, named at `path` by tier `this`, must be another existing tier.
fn other_tier(
    path: &str,
    target: &str,
    this: &str,
    tiers: &BTreeSet<String>,
) -> Result<(), ConfigError> {
    if !tiers.contains(target) {
        return Err(err(path, format!("no tier named {target:?}")));
    }
    if target == this {
        return Err(err(path, "a tier cannot name itself here"));
    }
    Ok(())
}

/// Following `next` from every tier must end: escalation and fallback chains may not loop.
fn check_chains(
    tiers: &BTreeMap<String, Tier>,
    key: &str,
    what: &str,
    next: impl Fn(&Tier) -> Option<String>,
) -> Result<(), ConfigError> {
    for name in tiers.keys() {
        let mut seen = BTreeSet::new();
        let mut cur = Some(name.clone());
        while let Some(c) = cur {
            if !seen.insert(c.clone()) {
                return Err(err(
                    format!("tiers.{name}.{key}"),
                    format!("{what} form a cycle"),
                ));
            }
            cur = tiers.get(&c).and_then(&next);
        }
    }
    Ok(())
}

fn cascade_of(
    path: &str,
    raw: &RawCascade,
    tier: &str,
    tiers: &BTreeSet<String>,
) -> Result<Cascade, ConfigError> {
    let escalate_to = raw
        .escalate_to
        .clone()
        .unwrap_or_else(|| "reasoning".to_string());
    other_tier(&format!("{path}.escalate_to"), &escalate_to, tier, tiers)?;
    for (k, v) in [
        ("min_mean_logprob", raw.min_mean_logprob),
        ("min_token_logprob", raw.min_token_logprob),
    ] {
        if v.is_some_and(|v| v.is_nan() || v > 0.0) {
            return Err(err(
                format!("{path}.{k}"),
                "a log-probability threshold must be zero or less",
            ));
        }
    }
    Ok(build_cascade(raw, escalate_to))
}

/// Applies the defaults to a cascade table that has been validated.
fn build_cascade(raw: &RawCascade, escalate_to: String) -> Cascade {
    let mut checks = raw.checks.clone().unwrap_or_else(|| {
        vec![
            Check::Schema,
            Check::ToolCalls,
            Check::Completion,
            Check::Confidence,
        ]
    });
    checks.sort();
    checks.dedup();
    let refusal_patterns = match &raw.refusal_patterns {
        Some(p) => p
            .iter()
            .map(|x| x.to_lowercase())
            .filter(|x| !x.trim().is_empty())
            .collect(),
        None => DEFAULT_REFUSALS.iter().map(|x| x.to_string()).collect(),
    };
    Cascade {
        escalate_to,
        checks,
        min_mean_logprob: raw.min_mean_logprob.unwrap_or(-1.0),
        min_token_logprob: raw.min_token_logprob.unwrap_or(-10.0),
        refusal_patterns,
        stream: raw.stream.unwrap_or(StreamMode::Buffer),
        strict: raw.strict.unwrap_or(false),
        min_escalation_time: raw
            .min_escalation_time
            .map_or(Duration::from_secs(1), |d| d.0),
        on_short_deadline: raw.on_short_deadline.unwrap_or(ShortDeadline::Accept),
    }
}

/// Cascade settings with the config's defaults and the given checks, for offline replay.
pub fn cascade_for_eval(checks: Vec<Check>) -> Cascade {
    let raw = RawCascade {
        escalate_to: None,
        checks: Some(checks),
        min_mean_logprob: None,
        min_token_logprob: None,
        refusal_patterns: None,
        stream: None,
        strict: None,
        min_escalation_time: None,
        on_short_deadline: None,
    };
    build_cascade(&raw, "reasoning".to_string())
}

fn routing_of(raw: &RawRouting, tiers: &BTreeMap<String, Tier>) -> Result<Routing, ConfigError> {
    let tier_ok = |path: String, t: &str| {
        if tiers.contains_key(t) {
            Ok(())
        } else {
            Err(err(path, format!("no tier named {t:?}")))
        }
    };
    let classifier = match raw.classifier.as_deref() {
        None | Some("embedded") => ClassifierChoice::Embedded,
        Some("none") => ClassifierChoice::None,
        Some(dir) => ClassifierChoice::Dir(dir.into()),
    };
    if let Some(t) = &raw.strong_tier {
        tier_ok("routing.strong_tier".into(), t)?;
    }
    let unit = |path: String, v: f64| {
        if (0.0..=1.0).contains(&v) {
            Ok(v)
        } else {
            Err(err(path, "must be between 0 and 1"))
        }
    };
    let complexity_threshold = unit(
        "routing.complexity_threshold".into(),
        raw.complexity_threshold
            .unwrap_or(DEFAULT_COMPLEXITY_THRESHOLD),
    )?;
    for (k, v) in &raw.intent_thresholds {
        unit(format!("routing.intent_thresholds.{k}"), *v)?;
    }
    for (d, t) in &raw.domain_tiers {
        tier_ok(format!("routing.domain_tiers.{d}"), t)?;
    }
    let domain_check = match (&raw.domain_check, raw.domain_check_below) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(err(
                "routing.domain_check_below",
                "needs routing.domain_check (the model folder that checks)",
            ))
        }
        (Some(_), _) if classifier == ClassifierChoice::None => {
            return Err(err(
                "routing.domain_check",
                "needs a classifier to check (routing.classifier is \"none\")",
            ))
        }
        (Some(dir), below) => Some((
            dir.clone(),
            unit(
                "routing.domain_check_below".into(),
                below.unwrap_or(f64::from(crate::classifier::DEFAULT_DOMAIN_CHECK_BELOW)),
            )? as f32,
        )),
    };
    let intent_check_below = match raw.intent_check_below {
        Some(_) if domain_check.is_none() => {
            return Err(err(
                "routing.intent_check_below",
                "needs routing.domain_check (the model folder that checks)",
            ))
        }
        Some(below) => Some(unit("routing.intent_check_below".into(), below)? as f32),
        None => None,
    };
    let domain_offsets = match &raw.domain_offsets {
        Some(_) if classifier == ClassifierChoice::None => {
            return Err(err(
                "routing.domain_offsets",
                "needs a classifier (routing.classifier is \"none\")",
            ))
        }
        Some(offsets) => Some(
            offsets
                .iter()
                .map(|(label, &offset)| match offset as f32 {
                    o if o.is_finite() => Ok((label.clone(), o)),
                    _ => Err(err(
                        format!("routing.domain_offsets.{label}"),
                        "must be a finite number",
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
        None => None,
    };
    let complexity_pair = match &raw.complexity_pair {
        Some(_) if classifier == ClassifierChoice::None => {
            return Err(err(
                "routing.complexity_pair",
                "needs a classifier (routing.classifier is \"none\")",
            ))
        }
        Some(p) if p.trim().is_empty() => {
            return Err(err(
                "routing.complexity_pair",
                "empty: name a recorded pair",
            ))
        }
        p => p.clone(),
    };
    let domain_min_confidence = unit(
        "routing.domain_min_confidence".into(),
        raw.domain_min_confidence
            .unwrap_or(DEFAULT_DOMAIN_MIN_CONFIDENCE),
    )?;
    let mut rules = Vec::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let path = format!("routing.rules[{i}]");
        tier_ok(format!("{path}.tier"), &r.tier)?;
        let regex = match &r.regex {
            None => None,
            Some(re) => Some(
                regex::RegexBuilder::new(re)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| err(format!("{path}.regex"), e.to_string()))?,
            ),
        };
        if r.keywords.is_empty() && regex.is_none() && r.metadata.is_empty() {
            return Err(err(
                path,
                "a rule needs keywords, a regex or metadata to match",
            ));
        }
        rules.push(Rule {
            name: r.name.clone(),
            tier: r.tier.clone(),
            keywords: r.keywords.iter().map(|k| k.to_lowercase()).collect(),
            regex,
            metadata: r.metadata.clone(),
        });
    }
    Ok(Routing {
        classifier,
        domain_check,
        intent_check_below,
        domain_offsets,
        strong_tier: raw.strong_tier.clone(),
        complexity_pair,
        complexity_threshold,
        intent_thresholds: raw.intent_thresholds.clone(),
        domain_tiers: raw.domain_tiers.clone(),
        domain_min_confidence,
        rules,
    })
}

/// The text of the config file at `path`.
fn read_config(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        err(
            path.display().to_string(),
            format!("cannot read config: {e}"),
        )
    })
}

fn parse_sha256(path: &str, hex_digest: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(hex_digest.trim())
        .map_err(|_| err(path, "must be a hex SHA-256 digest (64 hex characters)"))?;
    bytes
        .try_into()
        .map_err(|_| err(path, "must be a hex SHA-256 digest (64 hex characters)"))
}

impl RawConfig {
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen_text = self.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            err(
                "server.listen",
                format!("{listen_text:?} is not an address like 127.0.0.1:8080"),
            )
        })?;
        let max_body_bytes = self.server.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes < 1024 {
            return Err(err("server.max_body_bytes", "must be at least 1024"));
        }
        let max_concurrency = self
            .server
            .max_concurrency
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            return Err(err("server.max_concurrency", "must be at least 1"));
        }

        let mut api_keys = Vec::new();
        for (i, k) in self.auth.keys.iter().enumerate() {
            for (j, t) in k.tiers.iter().enumerate() {
                if !self.tiers.contains_key(t) {
                    return Err(err(
                        format!("auth.keys[{i}].tiers[{j}]"),
                        format!("no tier named {t:?}"),
                    ));
                }
            }
            api_keys.push(ApiKeyHash {
                name: k.name.clone(),
                sha256: parse_sha256(&format!("auth.keys[{i}].sha256"), &k.sha256)?,
                tiers: k.tiers.clone(),
            });
        }

        let mut providers = BTreeMap::new();
        for (name, p) in self.providers {
            let path = format!("providers.{name}");
            valid_name(&path, &name)?;
            let base_url = p.base_url.trim_end_matches('/').to_string();
            let parsed: http::Uri = base_url.parse().map_err(|_| {
                err(
                    format!("{path}.base_url"),
                    format!("{:?} is not a URL", p.base_url),
                )
            })?;
            if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
                return Err(err(
                    format!("{path}.base_url"),
                    "must be an http:// or https:// URL with a host",
                ));
            }
            let api_key = match &p.api_key_env {
                None => None,
                Some(var) => match env(var) {
                    Some(v) if !v.is_empty() => Some(Secret::new(v)),
                    _ => {
                        return Err(err(
                            format!("{path}.api_key_env"),
                            format!("environment variable {var} is not set"),
                        ))
                    }
                },
            };
            let mut headers = Vec::new();
            for (k, v) in &p.headers {
                let hn = http::HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                    err(format!("{path}.headers.{k}"), "is not a valid header name")
                })?;
                let mut hv = http::HeaderValue::from_str(v).map_err(|_| {
                    err(format!("{path}.headers.{k}"), "is not a valid header value")
                })?;
                hv.set_sensitive(true);
                headers.push((hn, hv));
            }
            providers.insert(
                name.clone(),
                Provider {
                    name,
                    kind: p.kind,
                    base_url,
                    api_key,
                    headers,
                    connect_timeout: p.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
                    http2_prior_knowledge: p.http2_prior_knowledge,
                },
            );
        }
        if providers.is_empty() {
            return Err(err("providers", "at least one provider is required"));
        }

        let base_slo = Slo {
            ttft: DEFAULT_TTFT,
            total: DEFAULT_TOTAL,
            idle: DEFAULT_TTFT,
        };
        let base_retry = RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            on_status: DEFAULT_RETRY_STATUSES.to_vec(),
            retry_after_cap: DEFAULT_RETRY_AFTER_CAP,
            budget_ratio: DEFAULT_BUDGET_RATIO,
        };

        let tier_names: BTreeSet<String> = self.tiers.keys().cloned().collect();
        let mut tiers = BTreeMap::new();
        for (name, t) in &self.tiers {
            let path = format!("tiers.{name}");
            valid_name(&path, name)?;
            if t.targets.is_empty() {
                return Err(err(
                    format!("{path}.targets"),
                    "a tier needs at least one target",
                ));
            }
            let tier_slo = slo_of(&format!("{path}.slo"), &t.slo, base_slo)?;
            let tier_retry = retry_of(&format!("{path}.retry"), &t.retry, &base_retry)?;
            let health = HealthPolicy {
                failures: t.health.failures.unwrap_or(DEFAULT_HEALTH_FAILURES),
                window: t.health.window.map_or(DEFAULT_HEALTH_WINDOW, |d| d.0),
                cooldown: t.health.cooldown.map_or(DEFAULT_HEALTH_COOLDOWN, |d| d.0),
            };
            if health.failures == 0 {
                return Err(err(format!("{path}.health.failures"), "must be at least 1"));
            }
            let fallback_on = t
                .fallback_on
                .clone()
                .unwrap_or_else(|| DEFAULT_FALLBACK_STATUSES.to_vec());
            check_status_list(&format!("{path}.fallback_on"), &fallback_on)?;
            if let Some(ft) = &t.fallback_tier {
                other_tier(&format!("{path}.fallback_tier"), ft, name, &tier_names)?;
            }
            if let Some(h) = t.hedge_after {
                if h.0.is_zero() || h.0 >= tier_slo.ttft {
                    return Err(err(
                        format!("{path}.hedge_after"),
                        "must be greater than zero and shorter than slo.ttft",
                    ));
                }
            }
            let mut targets = Vec::new();
            let mut seen = BTreeSet::new();
            for (i, rt) in t.targets.iter().enumerate() {
                let tpath = format!("{path}.targets[{i}]");
                if !providers.contains_key(&rt.provider) {
                    return Err(err(
                        format!("{tpath}.provider"),
                        format!("no provider named {:?}", rt.provider),
                    ));
                }
                if rt.model.trim().is_empty() {
                    return Err(err(format!("{tpath}.model"), "must not be empty"));
                }
                let id = format!("{}/{}", rt.provider, rt.model);
                if !seen.insert(id.clone()) {
                    return Err(err(
                        tpath,
                        format!("target {id} is listed twice in this tier"),
                    ));
                }
                let slo = slo_of(&format!("{tpath}.slo"), &rt.slo, tier_slo)?;
                if slo.total > tier_slo.total {
                    return Err(err(
                        format!("{tpath}.slo.total"),
                        "cannot be longer than the tier's slo.total",
                    ));
                }
                targets.push((
                    rt.priority.unwrap_or(i as i64),
                    Target {
                        id,
                        provider: rt.provider.clone(),
                        model: rt.model.clone(),
                        fallback: rt.fallback.unwrap_or(true),
                        slo,
                        retry: retry_of(&format!("{tpath}.retry"), &rt.retry, &tier_retry)?,
                        health,
                        fallback_on: fallback_on.clone(),
                        price: match rt.price {
                            Some(p)
                                if p.input.is_nan()
                                    || p.output.is_nan()
                                    || p.input < 0.0
                                    || p.output < 0.0 =>
                            {
                                return Err(err(
                                    format!("{tpath}.price"),
                                    "prices must be zero or more",
                                ))
                            }
                            p => p,
                        },
                    },
                ));
            }
            targets.sort_by_key(|(p, _)| *p);
            tiers.insert(
                name.clone(),
                Tier {
                    name: name.clone(),
                    targets: targets.into_iter().map(|(_, t)| t).collect(),
                    fallback_tier: t.fallback_tier.clone(),
                    hedge_after: t.hedge_after.map(|d| d.0),
                    total: tier_slo.total,
                    cascade: match &t.cascade {
                        None => None,
                        Some(c) => Some(cascade_of(
                            &format!("{path}.cascade"),
                            c,
                            name,
                            &tier_names,
                        )?),
                    },
                },
            );
        }
        if tiers.is_empty() {
            return Err(err("tiers", "at least one tier is required"));
        }
        check_chains(&tiers, "cascade.escalate_to", "cascade escalations", |t| {
            t.cascade.as_ref().map(|c| c.escalate_to.clone())
        })?;
        check_chains(&tiers, "fallback_tier", "fallback tiers", |t| {
            t.fallback_tier.clone()
        })?;
        if !tiers.contains_key(&self.routing.default_tier) {
            return Err(err(
                "routing.default_tier",
                format!("no tier named {:?}", self.routing.default_tier),
            ));
        }
        let routing = routing_of(&self.routing, &tiers)?;
        for (key, d) in [
            (
                "server.header_read_timeout",
                &self.server.header_read_timeout,
            ),
            ("server.body_read_timeout", &self.server.body_read_timeout),
        ] {
            if d.as_ref().is_some_and(|d| d.0.is_zero()) {
                return Err(err(key, "must be greater than zero"));
            }
        }
        Ok(Config {
            server: ServerConfig {
                listen,
                max_body_bytes,
                max_concurrency,
                header_read_timeout: self
                    .server
                    .header_read_timeout
                    .map_or(Duration::from_secs(10), |d| d.0),
                body_read_timeout: self
                    .server
                    .body_read_timeout
                    .map_or(Duration::from_secs(30), |d| d.0),
                max_upstream_response_bytes: self
                    .server
                    .max_upstream_response_bytes
                    .unwrap_or(32 * 1024 * 1024),
                decision_log: self.server.decision_log,
                decision_log_prompts: self.server.decision_log_prompts.unwrap_or(false),
            },
            default_tier: self.routing.default_tier,
            routing,
            api_keys,
            providers,
            tiers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[routing]
default_tier = "cheap"
[providers.a]
base_url = "http://127.0.0.1:9101/v1/"
[providers.b]
base_url = "http://127.0.0.1:9111/v1"
api_key_env = "B_KEY"
[tiers.cheap]
slo = { ttft = "1s", total = "10s" }
retry = { max_retries = 1, on_status = [429, 500] }
health = { failures = 3, window = "60s", cooldown = "30s" }
fallback_tier = "strong"
targets = [
  { provider = "b", model = "m2", priority = 1 },
  { provider = "a", model = "m1", priority = 0 },
]
[tiers.strong]
targets = [{ provider = "a", model = "big" }]
"#;

    fn env(k: &str) -> Option<String> {
        (k == "B_KEY").then(|| "sk-secret-123".to_string())
    }

    #[test]
    fn parses_and_orders_by_priority() {
        let c = Config::from_toml(GOOD, &env).unwrap();
        let cheap = &c.tiers["cheap"];
        assert_eq!(cheap.targets[0].id, "a/m1");
        assert_eq!(cheap.targets[1].id, "b/m2");
        assert_eq!(cheap.targets[0].slo.ttft, Duration::from_secs(1));
        assert_eq!(cheap.targets[0].slo.idle, Duration::from_secs(1));
        assert_eq!(cheap.targets[0].retry.on_status, vec![429, 500]);
        assert_eq!(cheap.targets[0].health.failures, 3);
        assert_eq!(c.providers["a"].base_url, "http://127.0.0.1:9101/v1");
        assert_eq!(c.tiers["strong"].targets[0].slo.total, DEFAULT_TOTAL);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config::from_toml(GOOD, &env).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-secret-123"), "{dbg}");
        assert!(dbg.contains("redacted"));
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text, &env).unwrap_err().to_string()
    }

    #[test]
    fn unknown_key_names_its_path() {
        let bad = GOOD.replace(
            "{ provider = \"a\", model = \"m1\", priority = 0 }",
            "{ provider = \"a\", modle = \"m1\" }",
        );
        let e = error_of(&bad);
        assert!(e.starts_with("tiers.cheap.targets[1]"), "{e}");
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn bad_references_name_their_path() {
        let e = error_of(&GOOD.replace(
            "provider = \"b\", model = \"m2\"",
            "provider = \"zz\", model = \"m2\"",
        ));
        assert!(e.starts_with("tiers.cheap.targets[0].provider"), "{e}");
        let e = error_of(&GOOD.replace("default_tier = \"cheap\"", "default_tier = \"nope\""));
        assert!(e.starts_with("routing.default_tier"), "{e}");
        let e = error_of(&GOOD.replace("fallback_tier = \"strong\"", "fallback_tier = \"cheap\""));
        assert!(e.starts_with("tiers.cheap.fallback_tier"), "{e}");
        let e = error_of(&GOOD.replace("ttft = \"1s\"", "ttft = \"1 parsec\""));
        assert!(e.starts_with("tiers.cheap.slo.ttft"), "{e}");
        let e = error_of(&GOOD.replace("ttft = \"1s\"", "ttft = \"20s\""));
        assert!(e.starts_with("tiers.cheap.slo.ttft"), "{e}");
        let e = error_of(&GOOD.replace("on_status = [429, 500]", "on_status = [429, 900]"));
        assert!(e.starts_with("tiers.cheap.retry.on_status[1]"), "{e}");
    }

    #[test]
    fn a_domain_check_is_validated_by_key() {
        let with = |extra: &str| {
            GOOD.replace(
                "default_tier = \"cheap\"",
                &format!("default_tier = \"cheap\"\n{extra}"),
            )
        };
        let c = Config::from_toml(&with("domain_check = \"target/router-encoder\""), &env).unwrap();
        assert_eq!(
            c.routing.domain_check,
            Some(("target/router-encoder".into(), 0.9))
        );
        let e = error_of(&with("domain_check_below = 0.5"));
        assert!(e.starts_with("routing.domain_check_below"), "{e}");
        let e = error_of(&with("domain_check = \"enc\"\ndomain_check_below = 2.0"));
        assert!(e.starts_with("routing.domain_check_below"), "{e}");
        let e = error_of(&with("classifier = \"none\"\ndomain_check = \"enc\""));
        assert!(e.starts_with("routing.domain_check"), "{e}");
        // The intent check reads with the domain check's model, between 0 and 1.
        assert_eq!(c.routing.intent_check_below, None);
        let c = Config::from_toml(
            &with("domain_check = \"enc\"\ndomain_check_below = 0\nintent_check_below = 0.8"),
            &env,
        )
        .unwrap();
        assert_eq!(c.routing.domain_check, Some(("enc".into(), 0.0)));
        assert_eq!(c.routing.intent_check_below, Some(0.8));
        let e = error_of(&with("intent_check_below = 0.8"));
        assert!(e.starts_with("routing.intent_check_below"), "{e}");
        assert!(e.contains("routing.domain_check"), "{e}");
        let e = error_of(&with("domain_check = \"enc\"\nintent_check_below = -0.1"));
        assert!(e.starts_with("routing.intent_check_below"), "{e}");
    }

    #[test]
    fn domain_offsets_are_validated_by_key() {
        let with = |extra: &str| {
            GOOD.replace(
                "default_tier = \"cheap\"",
                &format!("default_tier = \"cheap\"\n{extra}"),
            )
        };
        let c = Config::from_toml(
            &with("domain_offsets = { legal = 0.0, finance = -0.5 }"),
            &env,
        )
        .unwrap();
        assert_eq!(
            c.routing.domain_offsets,
            Some([("finance".into(), -0.5), ("legal".into(), 0.0)].into())
        );
        let c = Config::from_toml(&with("domain_offsets = {}"), &env).unwrap();
        assert_eq!(c.routing.domain_offsets, Some(BTreeMap::new()));
        assert_eq!(
            Config::from_toml(GOOD, &env)
                .unwrap()
                .routing
                .domain_offsets,
            None
        );
        let e = error_of(&with("domain_offsets = { legal = inf }"));
        assert!(e.starts_with("routing.domain_offsets.legal"), "{e}");
        let e = error_of(&with("domain_offsets = { legal = \"lots\" }"));
        assert!(e.starts_with("routing"), "{e}");
        let e = error_of(&with(
            "classifier = \"none\"\ndomain_offsets = { legal = 1.0 }",
        ));
        assert!(e.starts_with("routing.domain_offsets"), "{e}");
    }

    #[test]
    fn a_complexity_pair_is_validated_by_key() {
        let with = |extra: &str| {
            GOOD.replace(
                "default_tier = \"cheap\"",
                &format!("default_tier = \"cheap\"\n{extra}"),
            )
        };
        let c = Config::from_toml(&with("complexity_pair = \"llmrouter\""), &env).unwrap();
        assert_eq!(c.routing.complexity_pair.as_deref(), Some("llmrouter"));
        let c = Config::from_toml(GOOD, &env).unwrap();
        assert_eq!(c.routing.complexity_pair, None);
        let e = error_of(&with("complexity_pair = \"\""));
        assert!(e.starts_with("routing.complexity_pair"), "{e}");
        let e = error_of(&with(
            "classifier = \"none\"\ncomplexity_pair = \"llmrouter\"",
        ));
        assert!(e.starts_with("routing.complexity_pair"), "{e}");
    }

    #[test]
    fn missing_key_env_is_an_error_without_the_value() {
        let e = Config::from_toml(GOOD, &|_| None).unwrap_err().to_string();
        assert!(e.starts_with("providers.b.api_key_env"), "{e}");
        assert!(e.contains("B_KEY"));
    }

    #[test]
    fn fallback_cycle_is_rejected() {
        let text = GOOD.replace(
            "targets = [{ provider = \"a\", model = \"big\" }]",
            "fallback_tier = \"cheap\"\ntargets = [{ provider = \"a\", model = \"big\" }]",
        );
        assert!(error_of(&text).contains("cycle"));
    }
}
