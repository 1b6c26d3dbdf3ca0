//! The routing policy over real HTTP with the embedded model: rules, the classifier's scores,
//! domain tiers, the per-request threshold, and the decision headers.

use serde_json::json;

use crate::harness::*;

async fn setup() -> (Harness, [switchyard::upstream::sim::SimServer; 4]) {
    setup_with("").await
}

/// The policy of [`setup`], with `extra` added to its `[routing]` table.
async fn setup_with(extra: &str) -> (Harness, [switchyard::upstream::sim::SimServer; 4]) {
    let (c, r, l, e) = (
        sim("cheap").await,
        sim("strong").await,
        sim("lawyer").await,
        sim("eu").await,
    );
    let toml = format!(
        r#"[routing]
default_tier = "cheap"
strong_tier = "reasoning"
complexity_threshold = 0.5
domain_tiers = {{ legal = "legal" }}
domain_min_confidence = 0.6
{extra}
[[routing.rules]]
name = "eu-residency"
tier = "eu"
metadata = {{ region = "eu" }}
[[routing.rules]]
name = "ssn"
tier = "legal"
regex = "\\b\\d{{3}}-\\d{{2}}-\\d{{4}}\\b"
[[routing.rules]]
name = "escalate-word"
tier = "reasoning"
keywords = ["think very carefully"]
{}
[tiers.cheap]
targets = [{{ provider = "c", model = "small" }}]
[tiers.reasoning]
targets = [{{ provider = "r", model = "large" }}]
[tiers.legal]
targets = [{{ provider = "l", model = "legal-model" }}]
[tiers.eu]
targets = [{{ provider = "e", model = "eu-model" }}]
"#,
        providers(&[
            ("c", c.base_url()),
            ("r", r.base_url()),
            ("l", l.base_url()),
            ("e", e.base_url())
        ])
    );
    (router(&toml).await, [c, r, l, e])
}

fn ask(model: &str, text: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn the_classifier_picks_the_tier_and_says_why() {
    let (h, _sims) = setup().await;
    let r = h
        .post(&ask("switchyard", "hey, how's your day going?"))
        .await;
    assert_eq!(r.status, 200, "{:?} {:?}", r.body, r.headers);
    assert_eq!(r.header("x-switchyard-tier"), "cheap");
    assert_eq!(r.header("x-switchyard-decision"), "classifier");
    assert_eq!(r.header("x-switchyard-intent"), "chat");
    assert_eq!(r.header("x-switchyard-domain"), "general");
    let c: f64 = r.header("x-switchyard-complexity").parse().unwrap();
    assert!((0.0..0.5).contains(&c), "{c}");
    assert!(r.header("x-switchyard-policy").starts_with("complexity "));

    let r = h
        .post(&ask(
            "switchyard",
            "Does the following clause contain an anti-assignment provision? Clause: Neither party may assign this Agreement without the prior written consent of the other party.",
        ))
        .await;
    assert_eq!(r.header("x-switchyard-domain"), "legal");
    assert_eq!(r.header("x-switchyard-tier"), "legal");
    assert!(r.header("x-switchyard-policy").starts_with("domain legal"));
}

/// `routing.complexity_pair`: the classifier's score for that recorded pair routes, and the
/// policy header names it.
#[tokio::test]
async fn a_recorded_pairs_complexity_can_route() {
    let (h, _sims) = setup_with("complexity_pair = \"llmrouter\"").await;
    let text = "Write a Python function that checks whether a string is a palindrome.";
    let model = switchyard::classifier::Classifier::embedded()
        .unwrap()
        .unwrap();
    let scores = model.classify(text);
    let want = scores
        .complexity_pairs
        .iter()
        .find(|(p, _)| p == "llmrouter")
        .unwrap()
        .1;
    let r = h.post(&ask("switchyard", text)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-switchyard-decision"), "classifier");
    let c: f64 = r.header("x-switchyard-complexity").parse().unwrap();
    assert!((c - f64::from(want)).abs() < 1e-3, "{c} vs {want}");
    assert!(
        r.header("x-switchyard-policy")
            .starts_with("complexity (llmrouter) "),
        "{}",
        r.header("x-switchyard-policy")
    );
    let tier = if f64::from(want) > 0.5 {
        "reasoning"
    } else {
        "cheap"
    };
    assert_eq!(r.header("x-switchyard-tier"), tier);
}

/// `routing.domain_offsets` replaces the model's domain offsets: a deployment that sees fewer
/// legal prompts than the training mix can lower legal's prior, down to never.
#[tokio::test]
async fn domain_offsets_in_the_config_move_the_domain() {
    let clause = "Does the following clause contain an anti-assignment provision? Clause: Neither party may assign this Agreement without the prior written consent of the other party.";
    let (h, _sims) = setup_with("domain_offsets = { legal = -30.0 }").await;
    let r = h.post(&ask("switchyard", clause)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_ne!(r.header("x-switchyard-domain"), "legal");
    assert_ne!(r.header("x-switchyard-tier"), "legal");
    // An empty table removes the model's offsets; the clause is legal without them.
    let (h, _sims) = setup_with("domain_offsets = {}").await;
    let r = h.post(&ask("switchyard", clause)).await;
    assert_eq!(r.header("x-switchyard-domain"), "legal");
    assert_eq!(r.header("x-switchyard-tier"), "legal");
    // A domain the model does not have stops the server from starting, by name.
    let toml = "[routing]\ndefault_tier = \"cheap\"\ndomain_offsets = { tax = 1.0 }\n\
                [providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                [tiers.cheap]\ntargets = [{ provider = \"p\", model = \"m\" }]\n";
    let config = switchyard::config::Config::from_toml(toml, &|_| None).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = switchyard::server::start(config, listener)
        .err()
        .expect("an unknown domain must not start")
        .to_string();
    assert!(
        err.starts_with("routing.domain_offsets.tax: not one of the model's domains"),
        "{err}"
    );
}

#[tokio::test]
async fn the_threshold_knob_moves_the_decision() {
    let (h, _sims) = setup().await;
    let text = "What is the capital of France?";
    let r = h.post(&ask("switchyard:0", text)).await;
    assert_eq!(r.header("x-switchyard-tier"), "reasoning");
    let r = h.post(&ask("switchyard:1", text)).await;
    assert_eq!(r.header("x-switchyard-tier"), "cheap");
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-switchyard-threshold", "0")
        .json(&ask("switchyard", text))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-switchyard-tier"], "reasoning");
    let r = h.post(&ask("switchyard:lots", text)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["param"], "model");
    let r = h
        .client
        .post(h.url("/v1/chat/completions"))
        .header("x-switchyard-threshold", "1.5")
        .json(&ask("switchyard", text))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn rules_come_first() {
    let (h, [_c, _r, lawyer, eu]) = setup().await;
    let mut body = ask("switchyard", "hello there");
    body["metadata"] = json!({"region": "eu"});
    let r = h.post(&body).await;
    assert_eq!(r.header("x-switchyard-tier"), "eu");
    assert_eq!(r.header("x-switchyard-rule"), "eu-residency");
    assert_eq!(r.header("x-switchyard-decision"), "rule");
    assert!(
        r.header("x-switchyard-intent").is_empty(),
        "a rule decides without the classifier"
    );
    let r = h
        .post(&ask(
            "switchyard",
            "my SSN is 123-45-6789, fill in the form",
        ))
        .await;
    assert_eq!(
        (
            r.header("x-switchyard-tier").as_str(),
            r.header("x-switchyard-rule").as_str()
        ),
        ("legal", "ssn")
    );
    let r = h
        .post(&ask(
            "switchyard",
            "Please THINK VERY CAREFULLY about this riddle",
        ))
        .await;
    assert_eq!(r.header("x-switchyard-rule"), "escalate-word");
    assert_eq!((lawyer.calls(), eu.calls()), (1, 1));
    // Pinned tiers skip both rules and the classifier.
    let mut body = ask("switchyard/cheap", "my SSN is 123-45-6789");
    body["metadata"] = json!({"region": "eu"});
    let r = h.post(&body).await;
    assert_eq!(r.header("x-switchyard-tier"), "cheap");
    assert_eq!(r.header("x-switchyard-decision"), "pinned");
}

#[tokio::test]
async fn the_last_user_turn_is_what_gets_classified() {
    let (h, _sims) = setup().await;
    let body = json!({"model": "switchyard", "messages": [
        {"role": "system", "content": "You are a contracts lawyer. Always cite the clause."},
        {"role": "user", "content": "Write a Python function that parses a CSV file"},
    ]});
    let r = h.post(&body).await;
    assert_eq!(r.header("x-switchyard-intent"), "coding");
}

/// A conversation is read whole and by its last user turn alone, pooled: a follow-up that asks
/// for something new is classified by what it asks, with the turns before it still counted.
#[tokio::test]
async fn a_follow_up_is_classified_by_what_it_asks_now() {
    let (h, _sims) = setup().await;
    let sum = [
        json!({"role": "user", "content": "solve x^2 = 4"}),
        json!({"role": "assistant", "content": "x = 2 or x = -2."}),
    ];
    let r = h
        .post(&json!({"model": "switchyard", "messages": [sum[0].clone()]}))
        .await;
    assert_eq!(r.header("x-switchyard-intent"), "math");
    let mut messages = sum.to_vec();
    messages.push(json!({"role": "user", "content": "now write that as a little poem"}));
    let r = h
        .post(&json!({"model": "switchyard", "messages": messages}))
        .await;
    assert_eq!(r.header("x-switchyard-intent"), "creative_writing");
}

/// `routing.domain_check`: a second model re-scores the domain of the prompts the first is
/// unsure of, and the answer says so (the first model's domain in
/// `x-switchyard-domain-checked`) and the metrics count it; with `intent_check_below`, the same
/// model re-reads the intent (`x-switchyard-intent-checked`). Here the second model is the
/// committed one again, with thresholds of 1, so every prompt not certain to be general is
/// checked, every intent is re-read, and the checks keep the domain and the intent (the model
/// pooled with itself reads as itself).
#[tokio::test]
async fn a_domain_check_says_what_it_rescored() {
    let c = sim("cheap").await;
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router");
    let toml = format!(
        r#"[routing]
default_tier = "cheap"
domain_check = {model:?}
domain_check_below = 1.0
intent_check_below = 1.0
{}
[tiers.cheap]
targets = [{{ provider = "c", model = "small" }}]
"#,
        providers(&[("c", c.base_url())])
    );
    let h = router(&toml).await;
    let r = h
        .post(&ask(
            "switchyard",
            "Can my landlord keep my deposit for a stain on the carpet?",
        ))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.header("x-switchyard-domain"), "legal");
    assert_eq!(r.header("x-switchyard-domain-checked"), "legal");
    let intent = r.header("x-switchyard-intent");
    assert!(!intent.is_empty());
    assert_eq!(r.header("x-switchyard-intent-checked"), intent);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("switchyard_domain_checks_total{outcome=\"kept\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_intent_checks_total{outcome=\"kept\"} 1"),
        "{metrics}"
    );
    // Without a check there is no such header (the setup of the other tests has none).
    let (h, _sims) = setup().await;
    let r = h
        .post(&ask(
            "switchyard",
            "Can my landlord keep my deposit for a stain on the carpet?",
        ))
        .await;
    assert_eq!(r.header("x-switchyard-domain"), "legal");
    assert!(r.header("x-switchyard-domain-checked").is_empty());
    assert!(r.header("x-switchyard-intent-checked").is_empty());
}

/// A request with no text for the classifier to read (an empty message, only whitespace, or
/// only an image) carries no evidence of intent, domain or difficulty: it takes the default
/// tier, and the policy header says why. Before, the model's bias for an empty input read
/// such a request as legal at 0.98 and sent it to the legal tier.
#[tokio::test]
async fn a_request_with_no_text_takes_the_default_tier() {
    let (h, _sims) = setup().await;
    let image = json!([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]);
    for content in [json!(""), json!("  \n\t "), image] {
        let body =
            json!({"model": "switchyard", "messages": [{"role": "user", "content": content}]});
        let r = h.post(&body).await;
        assert_eq!(r.status, 200, "{content}: {:?}", r.body);
        assert_eq!(r.header("x-switchyard-tier"), "cheap", "{content}");
        assert_eq!(r.header("x-switchyard-domain"), "general", "{content}");
        assert_eq!(
            r.header("x-switchyard-policy"),
            "no text to classify",
            "{content}"
        );
    }
    // An empty last turn after a conversation is read by the conversation.
    let body = json!({"model": "switchyard", "messages": [
        {"role": "user", "content": "Can my landlord keep my deposit for a stain on the carpet?"},
        {"role": "assistant", "content": "It depends on your tenancy agreement."},
        {"role": "user", "content": ""},
    ]});
    let r = h.post(&body).await;
    assert_eq!(r.header("x-switchyard-domain"), "legal");
    assert_eq!(r.header("x-switchyard-tier"), "legal");
}
