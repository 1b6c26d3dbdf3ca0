//! switchyard: a classifier-driven, cascading LLM router with an OpenAI-compatible API.
//!
//! Data flows one way: `api -> routing -> resilience -> upstream`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cascade;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod upstream;

use std::process::ExitCode;

use cli::{Cli, Command};

/// Runs the parsed command line; `started` is when the process started.
pub async fn run(cli: Cli, started: std::time::Instant) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, listen } => {
            let mut cfg = config::Config::load(&config)?;
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            server::serve_forever(cfg, started).await?;
        }
        Command::Demo { listen } => demo::run(listen).await?,
        Command::Check { config } => {
            let cfg = config::Config::load(&config)?;
            let targets: usize = cfg.tiers.values().map(|t| t.targets.len()).sum();
            println!(
                "{}: ok ({} providers, {} tiers, {} targets)",
                config.display(),
                cfg.providers.len(),
                cfg.tiers.len(),
                targets
            );
        }
        Command::Sim {
            listen,
            model,
            latency,
            chunk_delay,
            failure_rate,
            words,
        } => {
            let mut spec = upstream::sim::SimSpec::new(model);
            spec.latency = latency;
            spec.chunk_delay = chunk_delay;
            spec.failure_rate = failure_rate;
            spec.words = words;
            let s = upstream::sim::SimServer::start_on(listen, spec).await?;
            println!("simulated upstream (not a real model) on {}", s.base_url());
            server::shutdown_signal().await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
