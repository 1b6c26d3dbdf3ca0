//! From a request to a plan: which tier answers, and which of its targets goes first.
//!
//! Model names the router understands:
//! - `switchyard`: the router chooses (the configured default tier);
//! - `switchyard/<tier>`: that tier, pinned;
//! - a target's own model name: that target's tier, starting with that target, failing over
//!   inside the tier.

use crate::config::Config;
use crate::error::ApiError;
use crate::resilience::Plan;

/// The virtual model that lets the router choose.
pub const ROUTER_MODEL: &str = "switchyard";

/// Why the plan's tier was chosen, for the decision headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Default,
    Pinned,
    TargetModel,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Default => "default",
            Reason::Pinned => "pinned",
            Reason::TargetModel => "target-model",
        }
    }
}

pub fn plan(config: &Config, model: &str) -> Result<(Plan, Reason), ApiError> {
    if model == ROUTER_MODEL {
        return Ok((
            Plan {
                tier: config.default_tier.clone(),
                first: None,
            },
            Reason::Default,
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
            ("cheap", None, Reason::Default)
        );
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
}
