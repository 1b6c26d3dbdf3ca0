//! switchyard: a classifier-driven, cascading LLM router with an OpenAI-compatible API.
//!
//! Data flows one way: `api -> routing -> resilience -> upstream`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cascade;
pub mod chaos;
pub mod classifier;
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

/// Cases per property-based test: `PROPTEST_CASES` (scripts/fuzz sets a large number), else 2,000.
#[cfg(test)]
pub(crate) fn proptest_cases() -> proptest::prelude::ProptestConfig {
    proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000),
    )
}

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
            // The router model as the server would load it: its folder, its domain check, its
            // complexity pair and its domain offsets are checked against the model itself.
            let model = server::load_classifier(&cfg.routing)?;
            let targets: usize = cfg.tiers.values().map(|t| t.targets.len()).sum();
            println!(
                "{}: ok ({} providers, {} tiers, {} targets; router model: {})",
                config.display(),
                cfg.providers.len(),
                cfg.tiers.len(),
                targets,
                match (&model, &cfg.routing.classifier) {
                    (None, _) => "none".to_string(),
                    (Some(_), config::ClassifierChoice::Dir(d)) => format!("{}", d.display()),
                    (Some(_), _) => "embedded".to_string(),
                }
            );
        }
        Command::Eval { what } => return run_eval(what),
        Command::Train {
            data,
            training_data,
            encoder,
            out,
            dim,
            embedding_bits,
            hidden,
            complexity_hidden,
            edge_tokens,
            wide_edge_tokens,
            complexity_dims,
            lexicon_alpha,
            intent_lexicon,
            intent_bag,
            domain_bag,
            domain_bag_tokens,
            window_filters,
            intent_window,
            window_epochs,
            domain_offset,
            ensemble,
            complexity_lexicon,
            llmrouter_label,
            complexity_pair,
            complexity_pair_pool,
            complexity_wide,
            complexity_intent,
            topic_prior,
            complexity_expert,
            epochs,
            word_vectors,
            tune_epochs,
            tune_lr,
            seed,
            split_seed,
            hold_out_handwritten,
            cap_per_source,
            handwritten_weight,
            rated_weight,
            dropout,
            weight_decay,
            extra,
            exclude,
            backbone,
            compare_report,
        } => {
            let complexity_lexicon = named(complexity_lexicon);
            let complexity_experts = classifier::train::parse_experts(&complexity_expert)?;
            let domain_offsets = classifier::train::parse_domain_offsets(&domain_offset)?;
            let args = classifier::train::TrainArgs {
                data,
                handwritten: training_data,
                encoder,
                out: out.clone(),
                dim,
                embedding_bits,
                hidden,
                complexity_hidden,
                edge_tokens,
                wide_edge_tokens,
                complexity_dims,
                lexicon_alpha,
                intent_lexicon,
                intent_bag,
                domain_bag,
                domain_bag_tokens,
                window_filters,
                intent_window,
                window_epochs,
                domain_offsets,
                ensemble,
                complexity_lexicon,
                llmrouter_label,
                complexity_pairs: named(complexity_pair),
                complexity_pair_pool,
                complexity_wide: named(complexity_wide),
                complexity_intent,
                topic_prior: named(topic_prior),
                complexity_experts,
                epochs,
                word_vectors,
                tune_epochs,
                tune_lr,
                seed,
                split_seed,
                hold_out_handwritten,
                cap_per_source,
                handwritten_weight,
                rated_weight,
                dropout,
                weight_decay,
                extra,
                exclude,
                encoder_backbone: backbone == cli::Backbone::Encoder,
                compare_report,
            };
            let m = tokio::task::spawn_blocking(move || classifier::train::run(&args)).await??;
            println!("{}", serde_json::to_string_pretty(&m)?);
            println!("wrote {}", out.display());
        }
        Command::Classify {
            prompt,
            jsonl,
            model,
            domain_check,
            config,
            complexity_pair,
        } => return classify_cmd(prompt, jsonl, model, &domain_check, config, complexity_pair),
        Command::Calibrate {
            strong_share,
            prompts,
            model,
            complexity_pair,
        } => {
            let m = with_pair(
                load_model(model)?,
                complexity_pair.as_deref(),
                "--complexity-pair",
            )?;
            return calibrate_cmd(strong_share, &prompts, &m);
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

fn model_arg(name: &str) -> anyhow::Result<classifier::Classifier> {
    if name == "embedded" {
        load_model(None)
    } else {
        load_model(Some(name.into()))
    }
}

fn model_name(dir: &Option<std::path::PathBuf>) -> String {
    dir.as_ref().map_or("the embedded model".into(), |d| {
        format!("`{}`", d.display())
    })
}

fn checked_model_name(dir: &Option<std::path::PathBuf>, check: &cli::DomainCheckArgs) -> String {
    let name = match &check.domain_check {
        Some(d) => format!(
            "{}, its domain checked by `{}` below {}",
            model_name(dir),
            d.display(),
            check.domain_check_below
        ),
        None => model_name(dir),
    };
    let name = match check.intent_check_below {
        Some(below) => format!("{name}, and its intent below {below}"),
        None => name,
    };
    match check.domain_offset.as_slice() {
        [] => name,
        offsets => format!("{name}, domain offsets {}", offsets.join(",")),
    }
}

fn run_eval(what: EvalCommand) -> anyhow::Result<ExitCode> {
    use eval::commands;
    match what {
        EvalCommand::Import {
            source,
            input,
            out,
            exclude,
        } => eprint!("{}", commands::import_cmd(&source, &input, &out, &exclude)?),
        EvalCommand::Classify {
            data,
            held_out,
            model,
            domain_check,
            complexity_pair,
            chat_reading,
            out,
        } => {
            let m = with_pair(
                checked_model(model.clone(), &domain_check, None)?,
                complexity_pair.as_deref(),
                "--complexity-pair",
            )?;
            print!(
                "{}",
                commands::classify_cmd(
                    &data,
                    held_out.get(),
                    &m,
                    &checked_model_name(&model, &domain_check),
                    chat_reading,
                    out.as_deref()
                )?
            );
        }
        EvalCommand::Route {
            data,
            held_out,
            cheap,
            strong,
            config,
            cheap_price,
            strong_price,
            threshold,
            model,
            complexity_pair,
            seeds,
            out,
        } => {
            let price =
                |flag: &str, v: Option<String>| v.map(|t| parse_price(flag, &t)).transpose();
            let tm = commands::tier_models(
                config.as_deref(),
                cheap,
                strong,
                price("--cheap-price", cheap_price)?,
                price("--strong-price", strong_price)?,
                threshold,
            )?;
            let (pair, key) = flag_or_config_pair(complexity_pair, tm.complexity_pair.clone());
            let m = with_pair(load_model(model.clone())?, pair.as_deref(), key)?;
            let name = match &pair {
                Some(p) => format!("{}, its complexity for the pair {p}", model_name(&model)),
                None => model_name(&model),
            };
            print!(
                "{}",
                commands::route_cmd(&data, held_out.get(), &tm, &m, &name, seeds, out.as_deref())?
            );
        }
        EvalCommand::DomainOffsets {
            data,
            held_out,
            model,
            false_alarm_cost,
            min_confidence,
            folds,
            out,
        } => {
            if !(false_alarm_cost.is_finite() && false_alarm_cost >= 0.0) {
                anyhow::bail!("--false-alarm-cost {false_alarm_cost}: give a number of 0 or more");
            }
            if !(0.0..1.0).contains(&min_confidence) {
                anyhow::bail!("--min-confidence {min_confidence}: give a probability below 1");
            }
            if folds < 2 {
                anyhow::bail!("--folds {folds}: give 2 or more");
            }
            let settings = eval::offsets::FitSettings {
                false_alarm_cost,
                min_confidence,
            };
            print!(
                "{}",
                commands::domain_offsets_cmd(
                    &data,
                    held_out.get(),
                    load_model(model.clone())?,
                    &model_name(&model),
                    settings,
                    folds,
                    out.as_deref()
                )?
            );
        }
        EvalCommand::Compare {
            data,
            held_out,
            a,
            b,
            complexity_pair_a,
            complexity_pair_b,
            domain_check_b,
            domain_check_below_b,
            intent_check_below_b,
            cheap,
            strong,
            resamples,
            seed,
            out,
        } => {
            let checks_b = cli::DomainCheckArgs {
                domain_check: domain_check_b,
                domain_check_below: domain_check_below_b,
                intent_check_below: intent_check_below_b,
                domain_offset: Vec::new(),
            };
            let ma = with_pair(
                model_arg(&a)?,
                complexity_pair_a.as_deref(),
                "--complexity-pair-a",
            )?;
            let mb = with_pair(
                with_checks(model_arg(&b)?, &checks_b, "-b")?,
                complexity_pair_b.as_deref(),
                "--complexity-pair-b",
            )?;
            let name = |m: &str, pair: &Option<String>| match pair {
                Some(p) => format!("{m} (complexity pair {p})"),
                None => m.to_string(),
            };
            let a = name(&a, &complexity_pair_a);
            let b = match &checks_b.domain_check {
                Some(_) => checked_model_name(&Some(b.clone().into()), &checks_b),
                None => b,
            };
            let b = name(&b, &complexity_pair_b);
            let tm = match (cheap, strong) {
                (Some(c), Some(s)) => Some(commands::tier_models(
                    None,
                    Some(c),
                    Some(s),
                    None,
                    None,
                    None,
                )?),
                (None, None) => None,
                _ => anyhow::bail!("--cheap and --strong go together"),
            };
            print!(
                "{}",
                commands::compare_cmd(
                    &data,
                    held_out.get(),
                    (&a, &ma),
                    (&b, &mb),
                    tm.as_ref(),
                    resamples,
                    seed,
                    out.as_deref()
                )?
            );
        }
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
            let rows = if data.extension().is_some_and(|e| e == "jsonl") {
                let records = eval::dataset::read(&data)?;
                eval::data::answer_pairs(&records, &cheap_model, &strong_model)
            } else {
                eval::data::read_routellm_answers(&data, &cheap_model, &strong_model)?
            };
            if rows.is_empty() {
                anyhow::bail!(
                    "{}: no prompt has answers from both {cheap_model:?} and {strong_model:?}",
                    data.display()
                );
            }
            let cfg = config::cascade_for_eval(checks);
            let report = eval::cascade::evaluate(&rows, &cfg, cheap, strong);
            let md = report.markdown(&data.display().to_string());
            print!("{md}");
            if let Some(dir) = out {
                eval::commands::write_report(&dir, &md, &serde_json::to_value(&report)?)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn load_model(dir: Option<std::path::PathBuf>) -> anyhow::Result<classifier::Classifier> {
    match dir {
        Some(d) => Ok(classifier::Classifier::load(&d)?),
        None => classifier::Classifier::embedded()
            .ok_or_else(|| anyhow::anyhow!("this binary has no embedded model; pass --model DIR"))?
            .map_err(Into::into),
    }
}

/// `m`, reporting its complexity score for the recorded pair `pair` when one is named; an
/// error names `key`, where the pair was named.
fn with_pair(
    m: classifier::Classifier,
    pair: Option<&str>,
    key: &str,
) -> anyhow::Result<classifier::Classifier> {
    m.with_complexity_pair(pair)
        .map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

/// The pair a `--complexity-pair` flag names, else the one a config's `routing.complexity_pair`
/// names, with the key to blame if the model lacks it.
fn flag_or_config_pair(
    flag: Option<String>,
    config: Option<String>,
) -> (Option<String>, &'static str) {
    match (flag, config) {
        (Some(p), _) => (Some(p), "--complexity-pair"),
        (None, p) => (p, "routing.complexity_pair"),
    }
}

/// `m` with the second model `check` asks for, if any, checking its domains and, when asked, its
/// intents; `suffix` ends the intent flag's name in an error (`-b` for `eval compare`'s).
fn with_checks(
    m: classifier::Classifier,
    check: &cli::DomainCheckArgs,
    suffix: &str,
) -> anyhow::Result<classifier::Classifier> {
    let m = match &check.domain_check {
        Some(d) => m.with_domain_check_from(d, check.domain_check_below)?,
        None => m,
    };
    Ok(match check.intent_check_below {
        Some(below) => m
            .with_intent_check(below)
            .map_err(|e| anyhow::anyhow!("--intent-check-below{suffix}: {e}"))?,
        None => m,
    })
}

/// `load_model`, with its domain check when one is asked for, and its domain offsets from
/// `--domain-offset` if given, else from `config_offsets` (`routing.domain_offsets`) if any.
fn checked_model(
    dir: Option<std::path::PathBuf>,
    check: &cli::DomainCheckArgs,
    config_offsets: Option<&std::collections::BTreeMap<String, f32>>,
) -> anyhow::Result<classifier::Classifier> {
    let m = with_checks(load_model(dir)?, check, "")?;
    if !check.domain_offset.is_empty() {
        let offsets = classifier::parse_domain_offsets(&check.domain_offset)?;
        return m
            .with_domain_offsets(&offsets)
            .map_err(|e| anyhow::anyhow!("--domain-offset {e}"));
    }
    Ok(match config_offsets {
        Some(offsets) => m
            .with_domain_offsets(offsets)
            .map_err(|e| anyhow::anyhow!("routing.domain_offsets.{e}"))?,
        None => m,
    })
}

/// What the classifier reads of a JSON line: `prompt`, or the last user turn of `messages` and
/// its context.
fn line_prompt(v: &serde_json::Value) -> Result<classifier::ChatText, String> {
    if let Some(p) = v.get("prompt") {
        return p
            .as_str()
            .map(classifier::ChatText::prompt)
            .ok_or_else(|| "\"prompt\" must be a string".to_string());
    }
    match v.get("messages").and_then(|m| m.as_array()) {
        Some(m) => Ok(classifier::chat_text(m)),
        None => Err("expected a \"prompt\" string or a \"messages\" array".to_string()),
    }
}

fn classify_cmd(
    prompt: Option<String>,
    jsonl: bool,
    model: Option<std::path::PathBuf>,
    domain_check: &cli::DomainCheckArgs,
    config: Option<std::path::PathBuf>,
    complexity_pair: Option<String>,
) -> anyhow::Result<ExitCode> {
    use std::io::{BufRead, Write};
    let (policy, config_pair, config_offsets) = match config {
        Some(p) => {
            let cfg = config::Config::load_offline(&p)?;
            let routing = &cfg.routing;
            let (pair, offsets) = (
                routing.complexity_pair.clone(),
                routing.domain_offsets.clone(),
            );
            (routing::Policy::new(&cfg), pair, offsets)
        }
        None => (routing::Policy::default_for_classify(), None, None),
    };
    let (pair, key) = flag_or_config_pair(complexity_pair, config_pair);
    let m = checked_model(model, domain_check, config_offsets.as_ref())?;
    let c = with_pair(m, pair.as_deref(), key)?;
    let describe = |chat: &classifier::ChatText| {
        let t = std::time::Instant::now();
        let s = c.classify_chat(chat);
        let us = t.elapsed().as_secs_f64() * 1e6;
        let tier = match policy.rule_for(&chat.text, None) {
            Some(r) => (r.tier.clone(), format!("rule {}", r.name)),
            None => policy.tier_for_scores(&s, None),
        };
        (s, tier, us)
    };
    if !jsonl {
        let Some(p) = prompt else {
            anyhow::bail!("give a prompt, or --jsonl to read JSON lines from stdin");
        };
        let (s, tier, us) = describe(&classifier::ChatText::prompt(p));
        let top = |v: &[(String, f32)]| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.iter()
                .take(3)
                .map(|(l, p)| format!("{l} {:.2}", p))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let checked = |asked: bool, checked: bool| match (asked, checked) {
            (true, true) => "; checked by the second model",
            (true, false) => "; the second model was not needed",
            (false, _) => "",
        };
        let asked = c.domain_check();
        let intent_checked = checked(
            asked.is_some_and(|a| a.intent_below.is_some()),
            s.intent_checked(),
        );
        println!(
            "intent:     {} ({}{intent_checked})",
            s.intent,
            top(&s.intent_scores)
        );
        let checked = checked(asked.is_some(), s.domain_checked());
        let offsets = match &c.config.domain_offsets {
            o if o.is_empty() => String::new(),
            o => format!("; offsets {}", classifier::offsets_text(o)),
        };
        println!(
            "domain:     {} ({}{checked}{offsets})",
            s.domain,
            top(&s.domain_scores)
        );
        match &s.complexity_pair {
            Some(p) => println!("complexity: {:.3} (recorded pair {p})", s.complexity),
            None => println!("complexity: {:.3}", s.complexity),
        }
        for (p, v) in s
            .complexity_pairs
            .iter()
            .filter(|(p, _)| Some(p) != s.complexity_pair.as_ref())
        {
            println!("            {v:.3} for the recorded pair {p}");
        }
        println!("tier:       {} ({})", tier.0, tier.1);
        println!("tokens:     {}; {us:.0} µs", s.tokens);
        return Ok(ExitCode::SUCCESS);
    }
    let stdin = std::io::stdin();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Lines are read as bytes, so a line that is not UTF-8 gets its own error object, not the
    // end of the stream. A CR before the newline and a byte-order mark on the first line go.
    for (i, line) in stdin.lock().split(b'\n').enumerate() {
        let mut bytes = line?;
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        if i == 0 && bytes.starts_with(b"\xEF\xBB\xBF") {
            bytes.drain(..3);
        }
        let text =
            String::from_utf8(bytes).map_err(|e| format!("invalid UTF-8: {}", e.utf8_error()));
        if text.as_deref().is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        let obj = match text
            .and_then(|t| {
                serde_json::from_str::<serde_json::Value>(&t)
                    .map_err(|e| format!("invalid JSON: {e}"))
            })
            .and_then(|v| line_prompt(&v))
        {
            Ok(chat) => {
                let (s, tier, us) = describe(&chat);
                let scores = |v: &[(String, f32)]| {
                    v.iter()
                        .map(|(l, p)| (l.clone(), serde_json::json!(p)))
                        .collect::<serde_json::Map<_, _>>()
                };
                serde_json::json!({
                    "intent": s.intent, "intent_scores": scores(&s.intent_scores),
                    "domain": s.domain, "domain_scores": scores(&s.domain_scores),
                    "complexity": s.complexity,
                    "complexity_pairs": scores(&s.complexity_pairs),
                    "complexity_pair": s.complexity_pair,
                    "tier": tier.0, "reason": tier.1,
                    "tokens": s.tokens, "latency_us": us,
                    "domain_checked": s.domain_checked(),
                    "intent_checked": s.intent_checked(),
                })
            }
            Err(e) => serde_json::json!({"error": {"line": i + 1, "message": e}}),
        };
        writeln!(out, "{obj}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn calibrate_cmd(
    share: f64,
    prompts: &std::path::Path,
    c: &classifier::Classifier,
) -> anyhow::Result<ExitCode> {
    use std::io::BufRead;
    anyhow::ensure!(
        (0.0..=1.0).contains(&share),
        "--strong-share must be between 0 and 1"
    );
    let f =
        std::fs::File::open(prompts).map_err(|e| anyhow::anyhow!("{}: {e}", prompts.display()))?;
    let mut scores = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}:{}: {e}", prompts.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|e| anyhow::anyhow!("{}:{}: invalid JSON: {e}", prompts.display(), i + 1))?;
        let chat =
            line_prompt(&v).map_err(|e| anyhow::anyhow!("{}:{}: {e}", prompts.display(), i + 1))?;
        scores.push(c.classify_chat(&chat).complexity as f64);
    }
    anyhow::ensure!(!scores.is_empty(), "{}: no prompts", prompts.display());
    scores.sort_by(f64::total_cmp);
    // Prompts with complexity above the threshold go strong: take the (1 - share) quantile.
    let k = ((1.0 - share) * scores.len() as f64).floor() as usize;
    let threshold = if k >= scores.len() { 1.0 } else { scores[k] };
    let above = scores.iter().filter(|s| **s > threshold).count();
    println!("complexity_threshold = {threshold:.4}");
    println!(
        "# {above} of {} prompts ({:.1}%) score above it and go to the strong tier",
        scores.len(),
        100.0 * above as f64 / scores.len() as f64
    );
    Ok(ExitCode::SUCCESS)
}

/// A comma-separated flag's names, without "none" (the word for an empty list) and empty ones.
fn named(list: Vec<String>) -> Vec<String> {
    list.into_iter()
        .filter(|f| f != "none" && !f.is_empty())
        .collect()
}
