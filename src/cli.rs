//! The command line. Doc comments here are the `--help` text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// switchyard: a classifier-driven, cascading LLM router with an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// `train`'s flags make its variant the largest by far; the command is parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the router with a config file (the main job).
    Serve {
        /// TOML config file (see examples/local.toml).
        #[arg(long, short)]
        config: PathBuf,
        /// Address to listen on; overrides server.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Run the router in front of built-in SIMULATED upstreams, to try it with no keys.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate a config file without serving; errors name the offending key.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Train the embedded router model from labelled data (writes models/router by default).
    Train {
        /// The public data directory, in its publishers' formats.
        #[arg(long, default_value = "../shared/data")]
        data: PathBuf,
        /// The project's hand-written examples.
        #[arg(long, default_value = "training-data")]
        training_data: PathBuf,
        /// The sentence encoder: a local directory (all-MiniLM-L6-v2; scripts/fetch-encoder gets
        /// it), or a Hugging Face name (from its cache, or downloaded when online).
        #[arg(long, default_value = "target/encoders/all-minilm-l6-v2")]
        encoder: PathBuf,
        /// static: distil the encoder into token embeddings (microseconds per prompt; the
        /// default model). encoder: run the whole encoder per prompt (milliseconds).
        #[arg(long, value_enum, default_value = "static")]
        backbone: Backbone,
        /// Markdown reports to include in the model card, e.g. `eval compare` of the backbones.
        #[arg(long)]
        compare_report: Vec<PathBuf>,
        #[arg(long, default_value = "models/router")]
        out: PathBuf,
        /// Dimension of the static token embeddings.
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Bits per stored embedding value: 8, or 4 (two values packed in a byte, half the size).
        #[arg(long, default_value_t = 4)]
        embedding_bits: u32,
        /// Hidden units of the intent and domain heads, the window's head and the throw-away
        /// heads that tune the table.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        hidden: usize,
        /// Hidden units of the complexity head.
        #[arg(long, default_value_t = 32, value_parser = at_least_one)]
        complexity_hidden: usize,
        /// The first and last this many tokens of a prompt are also pooled on their own (0: off).
        #[arg(long, default_value_t = 8)]
        edge_tokens: usize,
        /// A wider span of first and last tokens pooled the same way (0: off): the request
        /// around a long pasted text, which the narrow span cuts short.
        #[arg(long, default_value_t = 24)]
        wide_edge_tokens: usize,
        /// The complexity head reads only this many leading dimensions of the pooled embedding
        /// (its top principal components) besides the surface features, the complexity
        /// lexicon and the intent probabilities: more of them fit the training subjects, not
        /// difficulty (0: every feature).
        #[arg(long, default_value_t = 8)]
        complexity_dims: usize,
        /// Smoothing of the domain lexicon, a naive-Bayes table of which tokens each domain's
        /// prompts hold, read by the heads beside the pooled embedding (0: no lexicon).
        #[arg(long, default_value_t = 0.1)]
        lexicon_alpha: f64,
        /// Also fit an intent lexicon, the same kind of table over the intent labels, read by
        /// the heads after the domain lexicon (needs --lexicon-alpha above 0).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        intent_lexicon: bool,
        /// The weight of the intent bag in the intent the model reports: a multinomial logistic
        /// regression over the prompt's TF-IDF bag of tokens, whose probabilities are pooled with
        /// the intent heads' (p ∝ heads^(1 - w) · bag^w). 0: no bag.
        #[arg(long, default_value_t = 0.5)]
        intent_bag: f32,
        /// The same for the domain: the weight of a domain bag pooled with the domain heads'
        /// probabilities. 0: no bag.
        #[arg(long, default_value_t = 0.5)]
        domain_bag: f32,
        /// The domain bag's full weight from this many distinct tokens in a prompt's bag; a
        /// prompt with fewer gets that share of it (one token: 1/16), since one token would
        /// otherwise speak in the L2-normalised bag as loudly as a paragraph. 0: the full weight.
        #[arg(long, default_value_t = 16)]
        domain_bag_tokens: usize,
        /// Filters of the window: an intent head that also reads a convolution of width three
        /// over the prompt's token rows (each filter's strongest response), so that it sees
        /// neighbouring tokens together; its probabilities are pooled with the intent's after
        /// the bag (--intent-window). 0: no window.
        #[arg(long, default_value_t = 64)]
        window_filters: usize,
        /// The window's weight in the intent the model reports, 0..1 (p ∝ intent^(1 - w) ·
        /// window^w).
        #[arg(long, default_value_t = 0.25, value_parser = unit_interval)]
        intent_window: f32,
        /// Epochs of the window's training.
        #[arg(long, default_value_t = 8)]
        window_epochs: usize,
        /// Offsets added to the log-probability of domains in the domain the model reports,
        /// comma-separated LABEL=OFFSET ("none" for none): legal=1 multiplies the odds of legal
        /// against every other domain by e. The default was chosen on the hand-written
        /// development sets (eval/router-development.md).
        #[arg(long, default_value = crate::classifier::train::DEFAULT_DOMAIN_OFFSETS, value_delimiter = ',')]
        domain_offset: Vec<String>,
        /// Intent and domain heads to train, each from its own seed (--seed, --seed + 1, …); the
        /// model averages their probabilities, so that no single seed decides a borderline
        /// prompt.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        ensemble: usize,
        /// Complexity lexicons to fit, comma-separated: a ridge regression over the prompts'
        /// TF-IDF bags of tokens per family of complexity labels, read by the complexity head
        /// ("outcomes": recorded outcomes of cheaper and stronger models; "levels": difficulty
        /// ratings such as MATH levels). "none" for no lexicon.
        #[arg(long, default_value = "outcomes,levels", value_delimiter = ',')]
        complexity_lexicon: Vec<String>,
        /// How LLMRouter's per-model scores become complexity labels: "pair", what escalating
        /// from its cheapest model (by price) to its most accurate one (mean score) buys; or
        /// "groups", the mean score of its models of 40B parameters and up against the smaller
        /// ones' (the label before 2026-12-06).
        #[arg(long, value_enum, default_value_t = crate::eval::datasets::LlmrouterLabel::Pair)]
        llmrouter_label: crate::eval::datasets::LlmrouterLabel,
        /// Recorded pairs of models to fit a complexity score of their own for,
        /// comma-separated, beside the head's complexity that weighs every family of labels:
        /// "llmrouter", LLMRouter's cheap and strong model (see --llmrouter-label). A ridge over
        /// the prompts' TF-IDF bags of tokens fitted on the pair's labels, calibrated to the
        /// cheap model's errors and pooled with the head's complexity (--complexity-pair-pool);
        /// routing uses it when routing.complexity_pair names it. "none" for none.
        #[arg(long, default_value = "llmrouter", value_delimiter = ',')]
        complexity_pair: Vec<String>,
        /// The pair's own score's weight, 0..1, in a logarithmic pool with the head's
        /// complexity (1: the pair's score alone). 0.75 was chosen on two validation splits: the
        /// pair's score alone routed LLMRouter tasks never trained on worse than the head.
        #[arg(long, default_value_t = 0.75)]
        complexity_pair_pool: f32,
        /// The complexity families whose ridge also reads the prompt's pairs of adjacent
        /// tokens (hashed into 2^16 buckets) and its surface features, fitted with its tokens
        /// at once. "none" for none.
        #[arg(long, default_value = "levels", value_delimiter = ',')]
        complexity_wide: Vec<String>,
        /// Whether the complexity head also reads the intent head's probabilities.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        complexity_intent: bool,
        /// A topic prior over the sources whose names start with one of these, e.g.
        /// mmlu/,math/,routellm-gsm8k: a softmax over the pooled embedding guesses which of them
        /// (an MMLU or MATH subject) a prompt is like, and averages their mean complexity labels
        /// under it, per complexity family. Unless --complexity-expert says otherwise, its
        /// outcomes score then speaks as an expert for the intents with many recorded outcomes
        /// (open QA): a cheap model's weak spot is often a whole subject. Needs a complexity
        /// lexicon. Opt-in: on one validation split it raised held-out MMLU APGR by 0.01 to
        /// 0.02, on the default split by nothing (eval/router-development.md). "none": no prior.
        #[arg(long, default_value = "none", value_delimiter = ',')]
        topic_prior: Vec<String>,
        /// A complexity expert, FAMILY:INTENT[+INTENT…]: for prompts of those intents, that
        /// lexicon family's score is added to the complexity head's logit again, in proportion
        /// to the intent head's probability of them, with a slope fitted on the training prompts
        /// of those intents with recorded outcomes. Repeat the flag for more experts (no intent
        /// in two); "none" for none; topic.FAMILY for the --topic-prior's score of a family.
        /// Default: levels for maths and for every intent with fewer than 1,000 training
        /// prompts with recorded outcomes, when a levels lexicon is fitted and at least 200 of
        /// those prompts carry outcomes, and with a topic prior topic.outcomes for the other
        /// intents (an outcomes expert, e.g. outcomes:coding+reasoning+open_qa, is opt-in).
        #[arg(long)]
        complexity_expert: Vec<String>,
        #[arg(long, default_value_t = 40)]
        epochs: usize,
        /// Whole-word rows for the words the tokenizer splits into pieces that occur at least
        /// this often in the training prompts, each run through the encoder whole (0: none).
        #[arg(long, default_value_t = 0)]
        word_vectors: u32,
        /// Epochs that tune the static token embeddings end to end with the intent and domain
        /// losses before the heads are trained on the tuned table (0: the table stays as
        /// distilled).
        #[arg(long, default_value_t = 0)]
        tune_epochs: usize,
        /// The learning rate of the embedding tuning; its weight decay pulls every token back
        /// towards its distilled vector.
        #[arg(long, default_value_t = 1e-3)]
        tune_lr: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Seeds only which sources and rows are held out for validation (default: --seed). Fix
        /// it and vary --seed to measure how much the heads' random start alone moves a figure.
        #[arg(long)]
        split_seed: Option<u64>,
        /// Hold out hand-written groups for validation too, like the public sources. By default
        /// every hand-written group is trained on: they are the only examples of the everyday
        /// voice and of the thin intents, and the sets in eval/prompts/ validate those.
        #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
        hold_out_handwritten: bool,
        /// At most this many examples from one source (file, task or subject).
        #[arg(long, default_value_t = 2500)]
        cap_per_source: usize,
        /// The loss weight of a hand-written example against a public one, for intent and
        /// domain: the hand-written examples are few but the only everyday-voice prompts.
        #[arg(long, default_value_t = 20.0)]
        handwritten_weight: f32,
        /// How many times a hand-written prompt with a 1–5 difficulty rating counts in the fit
        /// of the complexity lexicon's "levels" family, against once for a MATH problem.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        rated_weight: u32,
        /// The share of the intent and domain heads' inputs zeroed at random at each training
        /// step (seeded): the heads learn not to hang a decision on one input.
        #[arg(long, default_value_t = 0.3, value_parser = unit_interval)]
        dropout: f32,
        /// The AdamW weight decay of the heads.
        #[arg(long, default_value_t = 1e-4)]
        weight_decay: f64,
        /// Dataset files (eval/dataset.schema.json) with more labelled prompts to train on.
        #[arg(long)]
        extra: Vec<PathBuf>,
        /// Dataset files whose prompts must stay out of training, e.g. an evaluation split.
        #[arg(long)]
        exclude: Vec<PathBuf>,
    },
    /// Score prompts with the router model: one prompt as an argument, or JSON lines on stdin.
    Classify {
        /// A prompt to classify; omit it with --jsonl.
        prompt: Option<String>,
        /// Read JSON lines ({"prompt": …} or {"messages": […]}) from stdin, write one JSON object per line.
        #[arg(long)]
        jsonl: bool,
        /// A model folder; default: the model embedded in the binary.
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        domain_check: DomainCheckArgs,
        /// The router config whose policy picks the tier; default: examples/local.toml's policy.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Report (and route by) the model's complexity score for this recorded pair
        /// (`train --complexity-pair`, e.g. llmrouter) instead of the head's. Default: the config's routing.complexity_pair.
        #[arg(long)]
        complexity_pair: Option<String>,
    },
    /// Find the complexity threshold that sends a given share of prompts to the strong tier.
    Calibrate {
        /// Share of prompts that should go to the strong tier, 0..1.
        #[arg(long)]
        strong_share: f64,
        /// JSON lines with a "prompt" (or "messages") per line.
        #[arg(long)]
        prompts: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        /// Report (and route by) the model's complexity score for this recorded pair
        /// (`train --complexity-pair`, e.g. llmrouter) instead of the head's.
        #[arg(long)]
        complexity_pair: Option<String>,
    },
    /// Offline evaluations over recorded outcomes.
    Eval {
        #[command(subcommand)]
        what: EvalCommand,
    },
    /// Run one simulated OpenAI-compatible upstream (for local trials and benchmarks).
    Sim {
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        /// Model name it reports.
        #[arg(long, default_value = "sim")]
        model: String,
        /// Delay before each response's headers, e.g. "20ms".
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        latency: std::time::Duration,
        /// Delay between streamed chunks.
        #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
        chunk_delay: std::time::Duration,
        /// Share of requests answered with a 500, 0..1.
        #[arg(long, default_value_t = 0.0)]
        failure_rate: f64,
        /// Words per answer.
        #[arg(long, default_value_t = 12)]
        words: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backbone {
    Static,
    Encoder,
}

/// Which prompts of the data an evaluation keeps: those a model held out of its training.
#[derive(Debug, clap::Args)]
pub struct HeldOutArgs {
    /// Keep only the prompts this model folder held out of training (its metrics.json): whole
    /// sources, and rows of the sources it trained on.
    #[arg(long)]
    pub held_out_of: Option<PathBuf>,
    /// Which of them: all, sources (subjects, tasks and files it never saw) or rows (held out of
    /// the sources it trained on).
    #[arg(long, value_enum, default_value = "all", requires = "held_out_of")]
    pub held_out_split: crate::eval::commands::Split,
}

impl HeldOutArgs {
    pub fn get(&self) -> Option<crate::eval::commands::HeldOut<'_>> {
        self.held_out_of
            .as_deref()
            .map(|dir| crate::eval::commands::HeldOut {
                dir,
                split: self.held_out_split,
            })
    }
}

/// How a model reports domains: a second model that re-scores the domain (and, when asked, the
/// intent) of prompts the first is unsure of, and the offsets that move its prior.
#[derive(Debug, Clone, clap::Args)]
pub struct DomainCheckArgs {
    /// A model folder (the full-encoder model of `train --encoder`) that re-scores the domain
    /// of every prompt whose probability of `general` is below --domain-check-below.
    #[arg(long)]
    pub domain_check: Option<PathBuf>,
    #[arg(long, default_value_t = crate::classifier::DEFAULT_DOMAIN_CHECK_BELOW, requires = "domain_check")]
    pub domain_check_below: f32,
    /// The --domain-check model also re-reads the intent of every prompt whose intent's
    /// probability is below this (0..1; 0.8 was chosen on the development sets), pooling its
    /// intent with the first model's. Off unless given; --domain-check-below 0 checks intents
    /// only.
    #[arg(long, requires = "domain_check")]
    pub intent_check_below: Option<f32>,
    /// Domain offsets in place of the model's (its config.json `domain_offsets`), for the model
    /// and its domain check: comma-separated LABEL=OFFSET, or "none" for none. legal=1
    /// multiplies the odds of legal against every other domain by e.
    #[arg(long, value_delimiter = ',')]
    pub domain_offset: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Read a public source in its publisher's format and write it in the dataset format
    /// (eval/dataset.schema.json), de-duplicated, minus prompts in --exclude files.
    Import {
        /// routellm-mmlu, routellm-gsm8k, llmrouter, math, gsm8k, legalbench, pubmedqa,
        /// headlines, ifeval or handwritten.
        #[arg(long)]
        source: String,
        /// The source's file or directory.
        #[arg(long)]
        input: PathBuf,
        /// The dataset file to write (JSON lines).
        #[arg(long)]
        out: PathBuf,
        /// Dataset files whose prompts (normalised text) must not appear in this one, e.g. the
        /// training split when writing an evaluation split.
        #[arg(long)]
        exclude: Vec<PathBuf>,
    },
    /// The router model against labelled prompts: accuracy, macro-F1, per-label precision and
    /// recall, confusion, calibration, complexity correlation, latency.
    Classify {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        held_out: HeldOutArgs,
        /// A model folder; default: the embedded model.
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        domain_check: DomainCheckArgs,
        /// Report (and route by) the model's complexity score for this recorded pair
        /// (`train --complexity-pair`, e.g. llmrouter) instead of the head's.
        #[arg(long)]
        complexity_pair: Option<String>,
        /// How to read a record's `messages` when there are turns before the last user turn:
        /// both (whole and its last turn alone, pooled, the domain the whole reading's: what the
        /// router does), whole, or last-turn. Prompts are read once either way.
        #[arg(long, value_enum, default_value_t)]
        chat_reading: crate::classifier::ChatReading,
        /// Also write report.md, report.json and SVG plots here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Routing between a cheap and a strong model on recorded outcomes: the threshold sweep,
    /// APGR, CPT, cost saved at 95% quality and AIQ, with every baseline.
    Route {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        held_out: HeldOutArgs,
        /// The recorded model that stands for the cheap tier (default: from --config).
        #[arg(long)]
        cheap: Option<String>,
        /// The recorded model that stands for the strong tier (default: from --config).
        #[arg(long)]
        strong: Option<String>,
        /// A router config: the default and strong tiers' first targets name the models and prices.
        #[arg(long)]
        config: Option<PathBuf>,
        /// $ per million tokens in,out, for outcomes with token counts but no cost.
        #[arg(long)]
        cheap_price: Option<String>,
        #[arg(long)]
        strong_price: Option<String>,
        /// Complexity threshold of the operating point to report (default: the config's).
        #[arg(long)]
        threshold: Option<f64>,
        #[arg(long)]
        model: Option<PathBuf>,
        /// Report (and route by) the model's complexity score for this recorded pair
        /// (`train --complexity-pair`, e.g. llmrouter) instead of the head's. Default: the --config's routing.complexity_pair.
        #[arg(long)]
        complexity_pair: Option<String>,
        /// Random-routing seeds to average.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fit the domain offsets (routing.domain_offsets) to labelled prompts of a deployment's
    /// own: the model scores them without offsets, and a search finds the offsets that find the
    /// most domain prompts for the fewest general prompts called a domain, cross-validated.
    DomainOffsets {
        /// A dataset file (eval/dataset.schema.json) whose prompts carry a `domain`.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        held_out: HeldOutArgs,
        /// A model folder; default: the embedded model.
        #[arg(long)]
        model: Option<PathBuf>,
        /// What a general prompt called a domain costs, in domain prompts found (1: accuracy).
        #[arg(long, default_value_t = 1.0)]
        false_alarm_cost: f64,
        /// Call a domain only at this probability or more, as routing.domain_min_confidence
        /// routes (0: the most probable label).
        #[arg(long, default_value_t = 0.0)]
        min_confidence: f32,
        /// Parts for the cross-validated count.
        #[arg(long, default_value_t = 5)]
        folds: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Two models side by side on the same data, with paired bootstrap intervals.
    Compare {
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        held_out: HeldOutArgs,
        /// A model folder, or "embedded".
        a: String,
        /// A model folder, or "embedded".
        b: String,
        /// Model A's complexity for this recorded pair instead of its head's.
        #[arg(long)]
        complexity_pair_a: Option<String>,
        /// Model B's complexity for this recorded pair instead of its head's.
        #[arg(long)]
        complexity_pair_b: Option<String>,
        /// Model B with this model folder as its second model, as `classify --domain-check`
        /// (e.g. A and B the same folder, to measure what the checks change).
        #[arg(long)]
        domain_check_b: Option<PathBuf>,
        #[arg(long, default_value_t = crate::classifier::DEFAULT_DOMAIN_CHECK_BELOW, requires = "domain_check_b")]
        domain_check_below_b: f32,
        /// Model B's second model also re-reads the intents below this probability, as
        /// `classify --intent-check-below`.
        #[arg(long, requires = "domain_check_b")]
        intent_check_below_b: Option<f32>,
        /// With --strong, also compare APGR on the recorded outcomes.
        #[arg(long)]
        cheap: Option<String>,
        #[arg(long)]
        strong: Option<String>,
        #[arg(long, default_value_t = 1000)]
        resamples: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replay recorded cheap-model answers through the cascade's checks (the server's own code)
    /// and compare with always-cheap, always-strong, the oracle and routing alone.
    Cascade {
        /// A RouteLLM responses CSV (prompt, a True/False column per model, <model>_response),
        /// e.g. ../shared/data/routing-outcomes/routellm-gsm8k-half.csv, or a dataset .jsonl
        /// whose outcomes carry answers.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "mistralai/Mixtral-8x7B-Instruct-v0.1")]
        cheap_model: String,
        #[arg(long, default_value = "gpt-4-1106-preview")]
        strong_model: String,
        /// Checks to run, comma-separated: completion, schema, tool_calls, confidence, arithmetic.
        #[arg(long, default_value = "completion,arithmetic", value_delimiter = ',')]
        checks: Vec<String>,
        /// Cheap model's price, $ per million tokens in,out.
        #[arg(long, default_value = "0.6,0.6")]
        cheap_price: String,
        /// Strong model's price, $ per million tokens in,out.
        #[arg(long, default_value = "10,30")]
        strong_price: String,
        /// Also write report.md and report.json to this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A count of at least one: a head with no hidden units has nothing to train.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(v) => Ok(v),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// A share in [0, 1): dropout of 1 would zero every input.
fn unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not in [0, 1)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn train_hidden(args: &[&str]) -> Result<(usize, usize), String> {
        let cli = Cli::try_parse_from(["switchyard", "train"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Train {
                hidden,
                complexity_hidden,
                ..
            } => Ok((hidden, complexity_hidden)),
            _ => Err("not train".to_string()),
        }
    }

    #[test]
    fn train_hidden_units_and_heads_default_and_refuse_zero() {
        assert_eq!(train_hidden(&[]), Ok((32, 32)));
        assert_eq!(
            train_hidden(&["--hidden", "64", "--complexity-hidden", "16"]),
            Ok((64, 16))
        );
        for flag in ["--hidden", "--complexity-hidden", "--ensemble"] {
            let err = train_hidden(&[flag, "0"]).unwrap_err();
            assert!(err.contains(flag) && err.contains("at least 1"), "{err}");
        }
    }
}
