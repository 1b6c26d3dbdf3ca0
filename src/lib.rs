//! switchyard: a classifier-driven, cascading LLM router with an OpenAI-compatible API.
//!
//! Data flows one way: `api -> routing -> resilience -> upstream`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cascade;
pub mod chaos;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod eval;
pub mod resilience;
pub mod routing;
pub mod server;
pub mod telemetry;
pub mod upstream;

use std::process::ExitCode;

use cli::{Cli, Command, EvalCommand};

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
        Command::Eval { what } => return run_eval(what),
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

fn parse_price(flag: &str, text: &str) -> anyhow::Result<config::Price> {
    let parts: Vec<f64> = text
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("{flag}: expected two numbers, \"in,out\", got {text:?}"))?;
    match parts.as_slice() {
        [i, o] if *i >= 0.0 && *o >= 0.0 => Ok(config::Price {
            input: *i,
            output: *o,
        }),
        _ => anyhow::bail!("{flag}: expected two prices, \"in,out\", got {text:?}"),
    }
}

fn parse_check(name: &str) -> anyhow::Result<config::Check> {
    use config::Check;
    Ok(match name.trim() {
        "completion" => Check::Completion,
        "schema" => Check::Schema,
        "tool_calls" => Check::ToolCalls,
        "confidence" => Check::Confidence,
        "arithmetic" => Check::Arithmetic,
        other => anyhow::bail!(
            "--checks: unknown check {other:?} (completion, schema, tool_calls, confidence, arithmetic)"
        ),
    })
}

fn run_eval(what: EvalCommand) -> anyhow::Result<ExitCode> {
    match what {
        EvalCommand::Cascade {
            data,
            cheap_model,
            strong_model,
            checks,
            cheap_price,
            strong_price,
            out,
        } => {
            let cheap = parse_price("--cheap-price", &cheap_price)?;
            let strong = parse_price("--strong-price", &strong_price)?;
            let checks = checks
                .iter()
                .map(|c| parse_check(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let rows = eval::data::read_routellm_answers(&data, &cheap_model, &strong_model)?;
            let cfg = config::cascade_for_eval(checks);
            let report = eval::cascade::evaluate(&rows, &cfg, cheap, strong);
            let md = report.markdown(&data.display().to_string());
            print!("{md}");
            if let Some(dir) = out {
                let write = |name: &str, text: String| {
                    let p = dir.join(name);
                    std::fs::write(&p, text).map_err(|e| eval::EvalError::Write {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })
                };
                std::fs::create_dir_all(&dir).map_err(|e| eval::EvalError::Write {
                    path: dir.display().to_string(),
                    message: e.to_string(),
                })?;
                write("report.md", md)?;
                write("report.json", serde_json::to_string_pretty(&report)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
