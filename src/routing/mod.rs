//! From a request to a plan: which tier answers, and which of its targets goes first.
//!
//! Model names the router understands:
//! - `switchyard`: the router chooses (the configured default tier);
//! - `switchyard/<tier>`: that tier, pinned;
//! - a target's own model name: that target's tier, starting with that target, failing over
//!   inside the tier.

use crate::classifier::Scores;
use crate::config::{Config, Routing, Rule};
use crate::error::ApiError;
use crate::resilience::Plan;

/// The virtual model that lets the router choose.
pub const ROUTER_MODEL: &str = "switchyard";

/// Why the plan's tier was chosen, for the decision headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// The router chooses (rules, then the classifier), with the client's threshold if any.
    Router {
        threshold: Option<f64>,
    },
    Pinned,
    TargetModel,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Router { .. } => "default",
            Reason::Pinned => "pinned",
            Reason::TargetModel => "target-model",
        }
    }
}

/// Parses the cost/quality knob: a complexity threshold in 0..=1.
pub fn parse_threshold(text: &str, param: &str) -> Result<f64, ApiError> {
    match text.trim().parse::<f64>() {
        Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
        _ => Err(ApiError::bad_request(
            format!("the threshold {text:?} must be a number between 0 and 1 (lower sends more to the strong tier)"),
            Some(param),
        )),
    }
}

pub fn plan(config: &Config, model: &str) -> Result<(Plan, Reason), ApiError> {
    let knob = model.strip_prefix("switchyard:");
    if model == ROUTER_MODEL || knob.is_some() {
        let threshold = knob.map(|k| parse_threshold(k, "model")).transpose()?;
        return Ok((
            Plan {
                tier: config.default_tier.clone(),
                first: None,
            },
            Reason::Router { threshold },
        ));
    }
    if let Some(tier) = model.strip_prefix("switchyard/") {
        if config.tiers.contains_key(tier) {
            return Ok((
                Plan {
                    tier: tier.to_string(),
                    first: None,
                },
                Reason::Pinned,
            ));
        }
        return Err(ApiError::ModelNotFound(model.to_string()));
    }
    match config.find_target_model(model) {
        Some((tier, i)) => Ok((
            Plan {
                tier: tier.name.clone(),
                first: Some(i),
            },
            Reason::TargetModel,
        )),
        None => Err(ApiError::ModelNotFound(model.to_string())),
    }
}

/// The routing policy for the model `switchyard`: rules first, then the classifier's scores.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default_tier: String,
    pub routing: Routing,
}

/// The default config's policy (`examples/local.toml`), for `switchyard classify`.
const DEFAULT_CONFIG: &str = include_str!("../../examples/local.toml");

impl Policy {
    pub fn new(config: &Config) -> Policy {
        Policy {
            default_tier: config.default_tier.clone(),
            routing: config.routing.clone(),
        }
    }

    /// The policy of `examples/local.toml`, compiled in.
    pub fn default_for_classify() -> Policy {
        match Config::from_toml(DEFAULT_CONFIG, &|_| None) {
            Ok(c) => Policy::new(&c),
            Err(_) => Policy {
                default_tier: "cheap".into(),
                routing: Routing {
                    classifier: crate::config::ClassifierChoice::Embedded,
                    domain_check: None,
                    intent_check_below: None,
                    domain_offsets: None,
                    strong_tier: Some("reasoning".into()),
                    complexity_pair: None,
                    complexity_threshold: crate::config::DEFAULT_COMPLEXITY_THRESHOLD,
                    intent_thresholds: Default::default(),
                    domain_tiers: Default::default(),
                    domain_min_confidence: crate::config::DEFAULT_DOMAIN_MIN_CONFIDENCE,
                    rules: Vec::new(),
                },
            },
        }
    }

    /// The first rule that matches the prompt text or the request's metadata.
    pub fn rule_for(&self, text: &str, metadata: Option<&serde_json::Value>) -> Option<&Rule> {
        // Lower-case the prompt only if some rule has keywords to look for.
        let lower = if self.routing.rules.iter().any(|r| !r.keywords.is_empty()) {
            text.to_lowercase()
        } else {
            String::new()
        };
        self.routing.rules.iter().find(|r| {
            let meta_ok = r.metadata.iter().all(|(k, v)| {
                metadata
                    .and_then(|m| m.get(k))
                    .and_then(|x| x.as_str())
                    .is_some_and(|x| x == v)
            });
            let text_rule = !r.keywords.is_empty() || r.regex.is_some();
            let text_ok = r.keywords.iter().any(|k| lower.contains(k.as_str()))
                || r.regex.as_ref().is_some_and(|re| re.is_match(text));
            meta_ok && (!text_rule || text_ok)
        })
    }

    /// The tier for a prompt's scores, and why, e.g. `("reasoning", "complexity 0.81 > 0.50")`.
    pub fn tier_for_scores(&self, s: &Scores, threshold: Option<f64>) -> (String, String) {
        // Nothing was read (an empty or image-only message): no score says anything.
        if s.tokens == 0 {
            return (self.default_tier.clone(), "no text to classify".to_string());
        }
        // A domain with a tier of its own whose probability falls short: the reason says so,
        // so that `x-switchyard-domain: legal` beside a complexity decision is not a puzzle.
        let mut short = String::new();
        if s.domain != crate::classifier::GENERAL {
            if let Some(t) = self.routing.domain_tiers.get(&s.domain) {
                let p = s.domain_confidence();
                let min = self.routing.domain_min_confidence;
                if confident_domain(&s.domain, p, min) {
                    return (t.clone(), format!("domain {} {p:.2}", s.domain));
                }
                short = format!(" (domain {} {p:.2} < {min:.2})", s.domain);
            }
        }
        let threshold = threshold
            .or_else(|| self.routing.intent_thresholds.get(&s.intent).copied())
            .unwrap_or(self.routing.complexity_threshold);
        let c = s.complexity as f64;
        // The score of a recorded pair says so: "complexity (llmrouter) 0.81 > 0.50".
        let name = match &s.complexity_pair {
            Some(p) => format!("complexity ({p})"),
            None => "complexity".to_string(),
        };
        match &self.routing.strong_tier {
            Some(strong) if c > threshold => (
                strong.clone(),
                format!("{name} {c:.2} > {threshold:.2}{short}"),
            ),
            _ => (
                self.default_tier.clone(),
                format!("{name} {c:.2} <= {threshold:.2}{short}"),
            ),
        }
    }
}

/// Whether a reported domain of probability `p` is confident enough for its domain tier: not
/// general, and `p` at least `domain_min_confidence`.
pub fn confident_domain(domain: &str, p: f32, min_confidence: f64) -> bool {
    domain != crate::classifier::GENERAL && f64::from(p) >= min_confidence
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_toml(
            r#"
[routing]
default_tier = "cheap"
[providers.p]
base_url = "http://127.0.0.1:1/v1"
[tiers.cheap]
targets = [{ provider = "p", model = "small-a" }, { provider = "p", model = "small-b" }]
[tiers.reasoning]
targets = [{ provider = "p", model = "big" }]
"#,
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn model_names_resolve() {
        let c = config();
        let (p, r) = plan(&c, "switchyard").unwrap();
        assert_eq!(
            (p.tier.as_str(), p.first, r),
            ("cheap", None, Reason::Router { threshold: None })
        );
        let (_, r) = plan(&c, "switchyard:0.3").unwrap();
        assert_eq!(
            r,
            Reason::Router {
                threshold: Some(0.3)
            }
        );
        assert!(matches!(
            plan(&c, "switchyard:2"),
            Err(ApiError::BadRequest { .. })
        ));
        let (p, r) = plan(&c, "switchyard/reasoning").unwrap();
        assert_eq!(
            (p.tier.as_str(), p.first, r),
            ("reasoning", None, Reason::Pinned)
        );
        let (p, r) = plan(&c, "small-b").unwrap();
        assert_eq!(
            (p.tier.as_str(), p.first, r),
            ("cheap", Some(1), Reason::TargetModel)
        );
        assert!(matches!(plan(&c, "gpt-9"), Err(ApiError::ModelNotFound(_))));
        assert!(matches!(
            plan(&c, "switchyard/legal"),
            Err(ApiError::ModelNotFound(_))
        ));
    }

    #[test]
    fn a_domain_short_of_its_confidence_is_named_in_the_reason() {
        let c = Config::from_toml(
            r#"
[routing]
default_tier = "cheap"
strong_tier = "reasoning"
domain_tiers = { legal = "legal" }
domain_min_confidence = 0.6
[providers.p]
base_url = "http://127.0.0.1:1/v1"
[tiers.cheap]
targets = [{ provider = "p", model = "small" }]
[tiers.reasoning]
targets = [{ provider = "p", model = "big" }]
[tiers.legal]
targets = [{ provider = "p", model = "lawyer" }]
"#,
            &|_| None,
        )
        .unwrap();
        let policy = Policy::new(&c);
        let scores = |domain: &str, p: f32, complexity: f32| Scores {
            intent: "open_qa".into(),
            intent_scores: vec![("open_qa".into(), 1.0)],
            domain: domain.into(),
            domain_scores: vec![("general".into(), 1.0 - p), (domain.into(), p)],
            complexity,
            complexity_pairs: Vec::new(),
            complexity_pair: None,
            tokens: 10,
            unchecked_domain: None,
            unchecked_intent: None,
        };
        let decide = |s: &Scores| policy.tier_for_scores(s, None);
        assert_eq!(
            decide(&scores("legal", 0.7, 0.2)),
            ("legal".into(), "domain legal 0.70".into())
        );
        assert_eq!(
            decide(&scores("legal", 0.55, 0.2)),
            (
                "cheap".into(),
                "complexity 0.20 <= 0.50 (domain legal 0.55 < 0.60)".into()
            )
        );
        assert_eq!(
            decide(&scores("legal", 0.55, 0.8)),
            (
                "reasoning".into(),
                "complexity 0.80 > 0.50 (domain legal 0.55 < 0.60)".into()
            )
        );
        // A domain without a tier of its own routes by complexity with nothing to add.
        assert_eq!(
            decide(&scores("medical", 0.55, 0.2)),
            ("cheap".into(), "complexity 0.20 <= 0.50".into())
        );
        // Nothing read: the default tier, whatever the scores say, and a threshold of 0 too.
        let empty = Scores {
            tokens: 0,
            ..scores("legal", 0.98, 0.9)
        };
        let nothing = ("cheap".to_string(), "no text to classify".to_string());
        assert_eq!(decide(&empty), nothing);
        assert_eq!(policy.tier_for_scores(&empty, Some(0.0)), nothing);
    }
}
