//! `switchyard demo`: the real server, in front of simulated upstreams started in the same
//! process, so a newcomer can watch routing, retries, failover, health and SLO cancellation
//! with no keys and no model servers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::upstream::sim::{SimServer, SimSpec};

/// The simulated upstreams: (provider name, model, behaviour).
fn sims() -> Vec<(&'static str, SimSpec)> {
    let mut cheap_a = SimSpec::new("sim-cheap-a");
    cheap_a.latency = Duration::from_millis(20);
    cheap_a.chunk_delay = Duration::from_millis(40);
    cheap_a.failure_rate = 0.25;
    let mut cheap_b = SimSpec::new("sim-cheap-b");
    cheap_b.latency = Duration::from_millis(40);
    cheap_b.chunk_delay = Duration::from_millis(40);
    let mut reasoning_a = SimSpec::new("sim-reasoning-a");
    reasoning_a.latency = Duration::from_millis(150);
    reasoning_a.chunk_delay = Duration::from_millis(60);
    reasoning_a.words = 40;
    reasoning_a.stall_rate = 0.3;
    reasoning_a.stall = Duration::from_secs(3);
    let mut reasoning_b = SimSpec::new("sim-reasoning-b");
    reasoning_b.latency = Duration::from_millis(250);
    reasoning_b.chunk_delay = Duration::from_millis(60);
    reasoning_b.words = 40;
    let mut legal_a = SimSpec::new("sim-legal-a");
    legal_a.latency = Duration::from_millis(80);
    legal_a.chunk_delay = Duration::from_millis(50);
    legal_a.words = 25;
    vec![
        ("sim-cheap-a", cheap_a),
        ("sim-cheap-b", cheap_b),
        ("sim-reasoning-a", reasoning_a),
        ("sim-reasoning-b", reasoning_b),
        ("sim-legal-a", legal_a),
    ]
}

/// The demo's config: the same TOML a user writes, pointing at the simulated upstreams.
fn demo_config(listen: SocketAddr, urls: &[(&str, String)]) -> String {
    let mut t =
        format!("[server]\nlisten = \"{listen}\"\n\n[routing]\ndefault_tier = \"cheap\"\nstrong_tier = \"reasoning\"\ncomplexity_threshold = 0.5\ndomain_tiers = {{ legal = \"legal\" }}\n\n");
    for (name, url) in urls {
        t.push_str(&format!("[providers.{name}]\nbase_url = \"{url}\"\n\n"));
    }
    t.push_str(
        r#"[tiers.cheap]
slo = { ttft = "1s", total = "10s" }
retry = { max_retries = 1, backoff = "50ms" }
health = { failures = 3, window = "60s", cooldown = "10s" }
fallback_tier = "reasoning"
targets = [
  { provider = "sim-cheap-a", model = "sim-cheap-a", price = { input = 0.6, output = 0.6 } },
  { provider = "sim-cheap-b", model = "sim-cheap-b", price = { input = 0.6, output = 0.6 } },
]
cascade = { escalate_to = "reasoning", checks = ["completion", "schema", "tool_calls", "confidence"] }

[tiers.reasoning]
slo = { ttft = "1s", total = "10s" }
retry = { max_retries = 1 }
health = { failures = 3, window = "60s", cooldown = "10s" }
targets = [
  { provider = "sim-reasoning-a", model = "sim-reasoning-a", price = { input = 10.0, output = 30.0 } },
  { provider = "sim-reasoning-b", model = "sim-reasoning-b", price = { input = 10.0, output = 30.0 } },
]

[tiers.legal]
slo = { ttft = "1s", total = "10s" }
fallback_tier = "reasoning"
targets = [{ provider = "sim-legal-a", model = "sim-legal-a" }]
"#,
    );
    t
}

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    for (name, spec) in sims() {
        let s = SimServer::start(spec).await?;
        urls.push((name, s.base_url()));
        servers.push(s);
    }
    let config = Config::from_toml(&demo_config(listen, &urls), &|_| None)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = crate::server::start(config, listener)?;
    let url = server.url();
    println!("switchyard demo: serving on {url}");
    println!();
    println!("  !! The upstreams are SIMULATED: no real model answers. Each tier is backed by");
    println!("  !! switchyard's built-in simulated OpenAI-compatible servers on 127.0.0.1:");
    for (name, u) in &urls {
        println!("  !!   {name:<16} {u}");
    }
    println!("  !! sim-cheap-a fails 25% of requests with a 500 (watch the retries and failover);");
    println!(
        "  !! sim-reasoning-a stalls 30% of requests for 3s (watch the 1s TTFT SLO cancel it)."
    );
    println!();
    println!("Try:");
    println!("  curl -si {url}/v1/chat/completions -H 'content-type: application/json' \\");
    println!("    -d '{{\"model\":\"switchyard\",\"messages\":[{{\"role\":\"user\",\"content\":\"hello\"}}]}}'");
    println!("  curl -sN {url}/v1/chat/completions -H 'content-type: application/json' \\");
    println!("    -d '{{\"model\":\"switchyard/reasoning\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"why?\"}}]}}'");
    println!("  curl -s {url}/v1/models;  curl -s {url}/metrics | grep switchyard_");
    println!();
    println!("Ctrl-C to stop.");
    crate::server::shutdown_signal().await;
    server.shutdown().await;
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        let urls: Vec<(&str, String)> = sims()
            .iter()
            .map(|(n, _)| (*n, "http://127.0.0.1:1/v1".to_string()))
            .collect();
        let c = Config::from_toml(
            &demo_config("127.0.0.1:8080".parse().unwrap(), &urls),
            &|_| None,
        )
        .unwrap();
        assert_eq!(c.tiers.len(), 3);
    }
}
