//! The embedded router model: scores a prompt's intent, domain and complexity on the CPU in
//! microseconds.
//!
//! Design (see the model card in `models/router/README.md`): a sentence encoder
//! (all-MiniLM-L6-v2) is distilled once, at training time, into a static embedding per
//! vocabulary token (each token run through the encoder alone, mean-pooled, reduced by PCA,
//! weighted by how rare the token is). At run time a prompt costs a WordPiece tokenisation,
//! one table lookup per token, a mean, and three small MLP heads, all in plain Rust over
//! weights read from safetensors. Training uses candle; a test pins both paths to the same
//! outputs.

pub mod bag;
pub mod encoder;
mod kernel;
pub mod train;
pub mod window;
pub mod wordpiece;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use wordpiece::WordPiece;

/// The model folder format this build reads and writes. Format 2 put the surface features
/// first, stored the embeddings as int8 and added the edge pools; a format 1 folder must be
/// retrained.
pub const MODEL_FORMAT: u32 = 2;

/// Extra features before the pooled embedding: log length, digit share, code-symbol share,
/// line count.
pub const EXTRA_FEATURES: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Load { path: String, message: String },
}

fn load_err(path: impl Into<String>, message: impl Into<String>) -> ModelError {
    ModelError::Load {
        path: path.into(),
        message: message.into(),
    }
}

/// `config.json` of a model folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub format: u32,
    /// Dimension of the static token embeddings.
    pub dim: usize,
    pub hidden: usize,
    /// Tokens read from the start of a long prompt, and from its end.
    pub head_tokens: usize,
    pub tail_tokens: usize,
    /// The first and the last this many tokens of a prompt, each pooled again on their own and
    /// unweighted: the instruction ("summarise", "classify", "why") and the closing question
    /// after a pasted text. 0 for none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edge_tokens: usize,
    /// The same again for a wider span of tokens (0: none): the request of a prompt that pastes
    /// a long text in, which the first and last `edge_tokens` cut short. A prompt shorter than
    /// the span pools whole, so the narrow pools keep the order of a short prompt's words.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wide_edge_tokens: usize,
    /// Bits per stored embedding value: 8 (one `I8` each) or 4 (two packed in each `U8`).
    #[serde(default = "eight", skip_serializing_if = "is_eight")]
    pub embedding_bits: u32,
    /// Whole-word rows (`word_embeddings`, `word_scales`, `word_pieces`) for the words the
    /// tokenizer splits into pieces that occur at least this often in the training prompts
    /// ([`WordTable`]); 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub word_vectors: u32,
    /// The complexity head reads the extra features and only the first this many dimensions
    /// of the main pool (the leading principal components); 0: every feature.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub complexity_dims: usize,
    /// Whether the model holds a domain lexicon (`domain_lexicon` in the weights): its posterior
    /// and max over a prompt's distinct tokens follow the other features.
    #[serde(default, skip_serializing_if = "is_false")]
    pub domain_lexicon: bool,
    /// Whether the model holds an intent lexicon (`intent_lexicon` in the weights), the same
    /// kind of table over the intent labels: its features follow the domain lexicon's.
    #[serde(default, skip_serializing_if = "is_false")]
    pub intent_lexicon: bool,
    /// The weight of the intent bag ([`bag::BagModel`]: `intent_bag` and `intent_bag_bias` in the
    /// weights, over the TF-IDF bag the complexity lexicon reads, with its `token_idf`) in the
    /// intent the model reports: its probabilities are
    /// pooled with the mean of the intent heads' as p ∝ heads^(1 − w) · bag^w. 0: the model has
    /// no intent bag. The complexity head and the experts read the heads' mean alone, as they
    /// were trained on it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub intent_bag: f32,
    /// The same for the domain: the weight of the domain bag (`domain_bag` and
    /// `domain_bag_bias`) pooled with the domain heads' mean. 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub domain_bag: f32,
    /// The domain bag's weight is `domain_bag` for a prompt whose bag holds at least this many
    /// distinct tokens, and that share of it for fewer: a bag is L2-normalised, so one token
    /// ("yes") speaks in it as loudly as a paragraph, where the heads also see how little was
    /// said. 0: the full weight, however short the prompt.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub domain_bag_tokens: usize,
    /// The weight of the window ([`window::Window`]: `window_taps`, `window_scales` and the head
    /// `window`) in the reported intent, pooled after the bag as the bag is pooled with the
    /// heads: p ∝ intent^(1 − w) · window^w. 0: no window. Like the bag's, it moves the reported
    /// intent only; the complexity head and the experts read the heads' mean.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub intent_window: f32,
    /// The window's filters (0 when there is no window).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub window_filters: usize,
    /// Log-prior offsets added to the reported domain's log-probabilities (after the bag),
    /// by label: `{"legal": 1.0}` multiplies the odds of legal against every other domain by
    /// e. The heads learn their prior from a training mix of public sources and hand-written
    /// prompts; these move it towards the traffic the router meets. Absent labels: 0.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub domain_offsets: std::collections::BTreeMap<String, f32>,
    /// The families of complexity labels the model holds a complexity lexicon for
    /// (`complexity_lexicon` and `token_idf` in the weights), e.g. `["outcomes", "levels"]`: one
    /// score per family follows every other feature, and only the complexity head reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complexity_lexicon: Vec<String>,
    /// The complexity families fitted on token pairs and surface features as well as tokens
    /// (`complexity_pairs`, `pair_idf` and `complexity_surface` in the weights; see
    /// [`WideLexicon`]), e.g. `["levels"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complexity_wide: Vec<String>,
    /// The token pairs of the wide families hash into `1 << complexity_pair_bits` buckets.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub complexity_pair_bits: u32,
    /// How many topics the model's topic prior holds (`topic_weight`, `topic_bias` and
    /// `topic_prior` in the weights; see [`TopicPrior`]): one more score per complexity lexicon
    /// family follows the lexicon's, and only the complexity experts read them (as
    /// "topic.FAMILY"). 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub complexity_topics: usize,
    /// Whether the complexity head reads the intent head's probabilities after its other
    /// inputs: the kind of prompt tells which of them to trust (a maths problem's difficulty
    /// lexicon, an exam question's outcome lexicon).
    #[serde(default, skip_serializing_if = "is_false")]
    pub complexity_intent: bool,
    /// `[a, b]`: the complexity head's logit z becomes sigmoid(a·z + b), calibrated at training
    /// to how often the cheap side of recorded outcomes was wrong (Platt scaling). The head
    /// ranks prompts by what escalating buys; the calibration gives the score the meaning "how
    /// likely the cheap model gets this wrong" without changing that order (a > 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complexity_calibration: Option<[f32; 2]>,
    /// Complexity experts, each for the prompts of its own intents (see [`ComplexityExpert`]).
    /// Models trained with a single expert wrote it as the object `complexity_expert`; both
    /// spellings load.
    #[serde(
        default,
        alias = "complexity_expert",
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub complexity_experts: Vec<ComplexityExpert>,
    /// Complexity for single recorded pairs of models (`pair_lexicon` in the weights, one
    /// column per pair, over the TF-IDF bag with its `token_idf`; see [`ComplexityPair`]). The
    /// head weighs every family of labels at once; a deployment whose cheap and strong models
    /// are like one recorded pair can route by that pair's score instead
    /// (`routing.complexity_pair`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complexity_pairs: Vec<ComplexityPair>,
    pub intent_labels: Vec<String>,
    pub domain_labels: Vec<String>,
    /// Where the static embeddings came from.
    pub encoder: String,
    /// The full-encoder backbone, if this model uses one instead of static embeddings: a
    /// directory (relative to the model folder or the working directory) or a Hugging Face name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backbone_encoder: Option<String>,
    /// How many intent and domain heads the model averages (`intent`, `intent.1`, …): members
    /// trained from different seeds, whose average depends less on any one seed.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub ensemble: usize,
}

/// A complexity expert: one complexity lexicon family's score, read again for the prompts of
/// some intents. The head weighs every family for every prompt and gives no family's prompts
/// all of that family's ranking: the levels lexicon alone ranks maths problems by difficulty
/// better than the head does. The expert adds the family's evidence to the head's calibrated
/// logit, slope · (score − centre), in proportion to the intent head's probability of the
/// expert's intents; the other prompts keep the head's complexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexityExpert {
    /// The complexity lexicon family whose score the expert reads, e.g. `levels`.
    pub family: String,
    /// The intents the expert speaks for, e.g. `["math"]`.
    pub intents: Vec<String>,
    /// The logit slope of the score: Platt scaling of the score against the cheap model's
    /// recorded errors on training prompts of those intents, fitted at training.
    pub slope: f32,
    /// The mean score of those prompts: a typical prompt of the intents gets no evidence either
    /// way, so the expert moves prompts apart without moving their mean.
    pub centre: f32,
}

impl ComplexityExpert {
    /// What the expert adds to the head's calibrated logit for a prompt with the family's
    /// lexicon score `score` and probability `gate` of the expert's intents.
    pub fn evidence(&self, score: f32, gate: f32) -> f32 {
        gate.clamp(0.0, 1.0) * self.slope * (score - self.centre)
    }
}

/// A complexity score for one recorded pair of models: the head's complexity pooled with a
/// score of the pair's own, a ridge fit over the TF-IDF bags of the training prompts with that
/// pair's outcomes (what escalating from its cheap model to its strong one bought), calibrated.
/// Two recorded pairs gain on different prompts (Mixtral → GPT-4 on hard exam subjects;
/// LLMRouter's gemma-2-9b → nemotron-51b on code and science questions, not on competition maths
/// both fail), and the head, which weighs them together, follows neither fully. The pair's own
/// score alone knows its pair's tasks and little beyond them; pooled with the head, it keeps the
/// head's ranking of prompts unlike them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComplexityPair {
    /// What `routing.complexity_pair` and `--complexity-pair` call it, e.g. `llmrouter`.
    pub name: String,
    /// The cheap model of the recorded outcomes.
    pub cheap: String,
    /// The strong model of the recorded outcomes.
    pub strong: String,
    /// `[a, b]`: the pair's lexicon score s becomes the logit a·s + b, calibrated at training to
    /// how often the cheap model was wrong (Platt scaling; a > 0 keeps the score's order).
    pub calibration: [f32; 2],
    /// The pair's weight w in a logarithmic pool with the head's complexity, 0..1: the pair's
    /// complexity is sigmoid((1 − w)·z + w·(a·s + b)), z the head's logit (experts included), as
    /// the intent bag is pooled with the heads. 1: the pair's own score alone.
    pub pool: f32,
}

impl ComplexityPair {
    /// The pair's complexity for the head's logit `z` and the pair's lexicon score `s`.
    pub fn complexity(&self, z: f32, s: f32) -> f32 {
        let [a, b] = self.calibration;
        let w = self.pool;
        1.0 / (1.0 + (-((1.0 - w) * z + w * (a * s + b))).exp())
    }
}

/// `config`'s complexity pairs, or what in them does not fit, naming the key.
fn check_pairs(config: &ModelConfig) -> Result<(), String> {
    for (n, pair) in config.complexity_pairs.iter().enumerate() {
        let key = format!("complexity_pairs[{n}]");
        if pair.name.trim().is_empty() {
            return Err(format!("{key}.name: empty"));
        }
        if let Some(m) = config.complexity_pairs[..n]
            .iter()
            .position(|p| p.name == pair.name)
        {
            return Err(format!(
                "{key}.name: {:?} is already complexity_pairs[{m}]'s",
                pair.name
            ));
        }
        let [a, b] = pair.calibration;
        if !(a.is_finite() && b.is_finite() && a > 0.0) {
            return Err(format!(
                "{key}.calibration: [{a}, {b}], but both must be finite and the first positive"
            ));
        }
        if !(0.0..=1.0).contains(&pair.pool) {
            return Err(format!("{key}.pool: {}, but it must be 0 to 1", pair.pool));
        }
    }
    Ok(())
}

/// `complexity_experts` as a list, or as the single object older models wrote. Read through a
/// JSON value rather than an untagged enum, whose error would hide what is wrong inside.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ComplexityExpert>, D::Error> {
    use serde::de::Error;
    let value = serde_json::Value::deserialize(d)?;
    if value.is_array() {
        serde_json::from_value(value).map_err(D::Error::custom)
    } else {
        serde_json::from_value(value)
            .map(|e| vec![e])
            .map_err(D::Error::custom)
    }
}

/// A [`ComplexityExpert`] resolved against its model: the family's column among the lexicon
/// scores and the intents' indices among the intent labels.
#[derive(Debug, Clone)]
struct Expert {
    family: usize,
    intents: Vec<usize>,
}

fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The weights name of member `member` of an ensemble of `head`s: the first keeps the plain name.
pub fn member_name(head: &str, member: usize) -> String {
    if member == 0 {
        head.to_string()
    } else {
        format!("{head}.{member}")
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn eight() -> u32 {
    8
}

fn is_eight(n: &u32) -> bool {
    *n == 8
}

/// The spans of tokens at each end of a prompt that are pooled again on their own, unweighted:
/// `narrow` (a model's `edge_tokens`) and `wide` (`wide_edge_tokens`); 0 turns a span off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Edges {
    pub narrow: usize,
    pub wide: usize,
}

impl Edges {
    /// The spans that are on, narrow first: each adds a pool of a prompt's first tokens and one
    /// of its last.
    pub fn spans(self) -> impl Iterator<Item = usize> {
        [self.narrow, self.wide].into_iter().filter(|&n| n > 0)
    }
}

/// How many pooled vectors the features hold: the weighted mean, and two per edge span.
pub(crate) fn pools(edges: Edges) -> usize {
    1 + 2 * edges.spans().count()
}

impl ModelConfig {
    /// The length of the feature vector the heads read.
    pub fn inputs(&self) -> usize {
        self.dim * pools(self.edges()) + EXTRA_FEATURES + self.lexicon_inputs()
    }

    /// The edge spans the features pool.
    pub fn edges(&self) -> Edges {
        Edges {
            narrow: self.edge_tokens,
            wide: self.wide_edge_tokens,
        }
    }

    /// The lexicons' features: a posterior and a max per domain label, then per intent label,
    /// for each lexicon the model holds.
    pub fn lexicon_inputs(&self) -> usize {
        let mut n = 0;
        if self.domain_lexicon {
            n += 2 * self.domain_labels.len();
        }
        if self.intent_lexicon {
            n += 2 * self.intent_labels.len();
        }
        n
    }

    /// The length of the feature prefix the complexity head reads before the complexity
    /// lexicon's scores.
    pub fn complexity_prefix(&self) -> usize {
        match self.complexity_dims {
            0 => self.inputs(),
            d => EXTRA_FEATURES + d.min(self.dim),
        }
    }

    /// The number of features the complexity head reads: the prefix, the complexity lexicon's
    /// scores, then the intent probabilities if it reads them.
    pub fn complexity_inputs(&self) -> usize {
        self.complexity_prefix()
            + self.complexity_lexicon.len()
            + if self.complexity_intent {
                self.intent_labels.len()
            } else {
                0
            }
    }

    /// Where a family's score is among the scores after the heads' inputs
    /// ([`ModelConfig::lexicon_scores`]): a complexity lexicon family ("outcomes"), or the topic
    /// prior's score of one ("topic.outcomes").
    pub fn score_index(&self, family: &str) -> Option<usize> {
        let of = |name: &str| self.complexity_lexicon.iter().position(|f| f == name);
        match family.strip_prefix(TOPIC_PREFIX) {
            Some(name) if self.complexity_topics > 0 => {
                of(name).map(|j| self.complexity_lexicon.len() + j)
            }
            Some(_) => None,
            None => of(family),
        }
    }

    /// The complexity head's logit `z`, calibrated.
    pub fn calibrated_logit(&self, z: f32) -> f32 {
        match self.complexity_calibration {
            Some([a, b]) => a * z + b,
            None => z,
        }
    }

    /// The complexity lexicon's scores in a full feature vector, then the topic prior's: they
    /// follow the heads' inputs. Experts find a family's score by [`ModelConfig::score_index`].
    pub fn lexicon_scores<'a>(&self, features: &'a [f32]) -> &'a [f32] {
        features.get(self.inputs()..).unwrap_or_default()
    }

    /// What the complexity head reads of a full feature vector (the heads' inputs followed by
    /// the complexity lexicon's scores and the topic prior's), before the intent
    /// probabilities: the prefix and the lexicon's scores.
    pub fn complexity_view(&self, features: &[f32]) -> Vec<f32> {
        let prefix = self.complexity_prefix().min(features.len());
        let mut v = features[..prefix].to_vec();
        let scores = self.lexicon_scores(features);
        v.extend_from_slice(&scores[..self.complexity_lexicon.len().min(scores.len())]);
        v
    }
}

/// One MLP head: `out = W2 · relu(W1 · x + b1) + b2`, row-major weights. `W1`, the bulk of
/// a classification's arithmetic, is read as bf16, packed two to a word ([`kernel::pack_bf16`]):
/// `hidden` rows of `inputs.div_ceil(2)` words. `train` writes it as bf16, which is read in the
/// model file's bytes where they lie ([`Packed::InPlace`]); a model file with an f32 `W1` (one
/// written before) is rounded as it loads.
#[derive(Debug, Clone)]
pub struct Head {
    pub w1: Packed,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
    pub inputs: usize,
    pub hidden: usize,
    pub outputs: usize,
}

/// What a classification's heads reuse: the hidden and output buffers, and the split of the
/// features that heads of as many inputs read ([`Head::halves`]) with its count of inputs.
#[derive(Default)]
struct Scratch {
    hidden: Vec<f32>,
    out: Vec<f32>,
    split: Option<(usize, kernel::Halves)>,
}

/// A file's bytes kept on an 8-byte boundary, which safetensors lays its tensors out from, so
/// that the heads' bf16 first layers are read in place ([`Packed::InPlace`]).
struct AlignedFile {
    words: Vec<u64>,
    len: usize,
}

impl AsRef<[u8]> for AlignedFile {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// The bytes of the file at `path`, on an 8-byte boundary ([`AlignedFile`]).
fn read_aligned(path: &Path) -> std::io::Result<bytes::Bytes> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let len = usize::try_from(file.metadata()?.len()).map_err(std::io::Error::other)?;
    let mut words = vec![0u64; len.div_ceil(8)];
    file.read_exact(&mut bytemuck::cast_slice_mut(&mut words)[..len])?;
    Ok(bytes::Bytes::from_owner(AlignedFile { words, len }))
}

/// A head's first layer as packed bf16 words ([`kernel::pack_bf16`]).
#[derive(Debug, Clone)]
pub enum Packed {
    /// Packed into memory of its own: from f32 values, or from a file's bf16 that cannot be
    /// read in place.
    Words(Vec<u32>),
    /// A model file's bf16 bytes, which [`kernel::bf16_words_in_place`] reads as the words.
    InPlace(bytes::Bytes),
}

impl Packed {
    /// A file's bf16 rows of `width` values, read in place where [`kernel::bf16_words_in_place`]
    /// can, packed into a copy where not.
    pub fn from_file(bytes: bytes::Bytes, width: usize) -> Packed {
        if kernel::bf16_words_in_place(&bytes, width).is_some() {
            return Packed::InPlace(bytes);
        }
        let values: Vec<f32> = bytes.chunks_exact(2).map(bf16_le).collect();
        Packed::Words(kernel::pack_bf16(&values, width))
    }

    /// The packed words. An `InPlace` value is only made of bytes that read in place.
    pub fn words(&self) -> &[u32] {
        match self {
            Packed::Words(w) => w,
            Packed::InPlace(b) => bytemuck::try_cast_slice(b).unwrap_or_default(),
        }
    }
}

impl Default for Packed {
    fn default() -> Packed {
        Packed::Words(Vec::new())
    }
}

impl Head {
    /// Runs the head on the first `inputs` features of `x`.
    pub fn forward(&self, x: &[f32], hidden: &mut Vec<f32>, out: &mut Vec<f32>) {
        self.forward_halves(&self.halves(x), hidden, out);
    }

    /// The first `inputs` features of `x` as the first layer reads them: heads with as many
    /// inputs can share them ([`Head::forward_halves`]).
    pub fn halves(&self, x: &[f32]) -> kernel::Halves {
        kernel::Halves::of(&x[..self.inputs.min(x.len())], self.inputs.div_ceil(2))
    }

    /// [`Head::forward`] on an input that [`Head::halves`] of a head with as many inputs split.
    pub fn forward_halves(&self, x: &kernel::Halves, hidden: &mut Vec<f32>, out: &mut Vec<f32>) {
        hidden.resize(self.hidden, 0.0);
        kernel::affine_bf16(self.w1.words(), &self.b1, x, hidden);
        for h in hidden.iter_mut() {
            *h = h.max(0.0);
        }
        out.resize(self.outputs, 0.0);
        kernel::affine(&self.w2, &self.b2, hidden, out);
    }
}

/// The scores for one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Scores {
    pub intent: String,
    pub intent_scores: Vec<(String, f32)>,
    pub domain: String,
    pub domain_scores: Vec<(String, f32)>,
    /// 0..1: how likely a cheap model gets this wrong where a stronger one gets it right.
    pub complexity: f32,
    /// Each of the model's recorded pairs' complexity ([`ComplexityPair`]), by name.
    pub complexity_pairs: Vec<(String, f32)>,
    /// The pair whose score `complexity` is, when the classifier routes by one
    /// ([`Classifier::with_complexity_pair`]); `None`: the head's.
    pub complexity_pair: Option<String>,
    pub tokens: usize,
    /// When a second model re-scored the domain ([`Classifier::with_domain_check`]): the first
    /// model's domain.
    pub unchecked_domain: Option<String>,
    /// When a second model re-read the intent ([`Classifier::with_intent_check`]): the first
    /// model's intent.
    pub unchecked_intent: Option<String>,
}

impl Scores {
    /// Whether a second model re-scored the domain.
    pub fn domain_checked(&self) -> bool {
        self.unchecked_domain.is_some()
    }

    /// Whether a second model re-read the intent.
    pub fn intent_checked(&self) -> bool {
        self.unchecked_intent.is_some()
    }

    pub fn intent_confidence(&self) -> f32 {
        probability_of(&self.intent_scores, &self.intent)
    }

    pub fn domain_confidence(&self) -> f32 {
        probability_of(&self.domain_scores, &self.domain)
    }
}

#[derive(Debug)]
pub struct Classifier {
    pub config: ModelConfig,
    tokenizer: WordPiece,
    /// The static token embeddings (empty with an encoder backbone).
    table: StaticTable,
    /// The full-encoder backbone, when the model has one.
    encoder: Option<encoder::Encoder>,
    domain_lexicon: Option<Lexicon>,
    intent_lexicon: Option<Lexicon>,
    intent_bag: Option<bag::BagModel>,
    domain_bag: Option<bag::BagModel>,
    window: Option<window::Window>,
    /// `config.domain_offsets` by label index.
    domain_offsets: Vec<(usize, f32)>,
    /// `token_idf` for the bags of a model without a complexity lexicon (empty otherwise: the
    /// complexity lexicon holds it; [`Classifier::token_idf`]).
    bag_idf: Vec<f32>,
    complexity_lexicon: Option<ComplexityLexicon>,
    topic_prior: Option<TopicPrior>,
    /// The lexicon of `config.complexity_pairs`, one family per pair (its idf is the bag's).
    pair_lexicon: Option<ComplexityLexicon>,
    /// The index of the pair whose score is the reported complexity, if any.
    complexity_pair: Option<usize>,
    /// The intent heads of the ensemble (one, for most models), then the domain heads.
    pub intent: Vec<Head>,
    pub domain: Vec<Head>,
    pub complexity: Head,
    /// The experts of `config.complexity_experts`, in the same order.
    experts: Vec<Expert>,
    /// A second model for the domain (and, when asked, the intent) of prompts this one is
    /// unsure of.
    domain_check: Option<Box<DomainCheck>>,
}

/// A second model that re-scores a prompt's domain when the first is unsure of it, and, with
/// `intent_below`, re-reads its intent when the first is unsure of that. Static embeddings miss
/// domains that only context gives away ("can my ex stop me taking the kids abroad?" is legal
/// though none of its words is) and the request around a long pasted text; the full-encoder
/// model reads the context, at milliseconds a prompt, so it runs only on the prompts that need
/// it. One reading of the second model serves both checks.
#[derive(Debug)]
pub struct DomainCheck {
    pub model: Classifier,
    /// The domain is re-scored when the first model's probability of `general` is below this.
    pub below: f32,
    /// The intent is re-read when the first model's probability of its intent is below this
    /// (`None`: never).
    pub intent_below: Option<f32>,
}

/// `offsets` by index in `labels`, each label one of them and each offset finite; an error
/// starts with the label at fault.
fn resolve_domain_offsets(
    labels: &[String],
    offsets: &std::collections::BTreeMap<String, f32>,
) -> Result<Vec<(usize, f32)>, String> {
    offsets
        .iter()
        .map(|(label, &offset)| {
            let i = labels.iter().position(|l| l == label).ok_or_else(|| {
                format!(
                    "{label}: not one of the model's domains ({})",
                    labels.join(", ")
                )
            })?;
            if offset.is_finite() {
                Ok((i, offset))
            } else {
                Err(format!("{label}: not a finite number"))
            }
        })
        .collect()
}

/// `offsets` as `--domain-offset` takes them: `finance=0.5,legal=1`, or `none`.
pub fn offsets_text(offsets: &std::collections::BTreeMap<String, f32>) -> String {
    if offsets.is_empty() {
        return "none".to_string();
    }
    let entries: Vec<String> = offsets.iter().map(|(l, o)| format!("{l}={o}")).collect();
    entries.join(",")
}

/// Domain offsets as `--domain-offset` takes them: `LABEL=OFFSET` entries (the flag splits
/// them at commas), or `none` alone for none. The labels are checked against a model's
/// domains where the offsets are used.
pub fn parse_domain_offsets(
    texts: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, f32>> {
    let mut offsets = std::collections::BTreeMap::new();
    if texts.iter().any(|t| t.trim() == "none") {
        if texts.len() > 1 {
            anyhow::bail!("--domain-offset none: give it alone, not with offsets");
        }
        return Ok(offsets);
    }
    for text in texts {
        let text = text.trim();
        let (label, offset) = text.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("--domain-offset {text:?}: write LABEL=OFFSET, e.g. legal=1, or none")
        })?;
        let label = label.trim();
        let offset: f32 = offset
            .trim()
            .parse()
            .ok()
            .filter(|o: &f32| o.is_finite())
            .ok_or_else(|| {
                anyhow::anyhow!("--domain-offset {text:?}: the offset is not a number")
            })?;
        if offsets.insert(label.to_string(), offset).is_some() {
            anyhow::bail!("--domain-offset: {label} is given twice");
        }
    }
    Ok(offsets)
}

/// `config`'s complexity experts resolved against it, or what in them does not fit, naming
/// the key. No two experts speak for the same intent: their evidence would add up.
fn resolve_experts(config: &ModelConfig) -> Result<Vec<Expert>, String> {
    let mut experts: Vec<Expert> = Vec::new();
    for (n, spec) in config.complexity_experts.iter().enumerate() {
        let key = format!("complexity_experts[{n}]");
        let expert = resolve_expert(spec, config, &key)?;
        for &i in &expert.intents {
            if let Some(m) = experts.iter().position(|e| e.intents.contains(&i)) {
                return Err(format!(
                    "{key}.intents: {:?} is already complexity_experts[{m}]'s",
                    config.intent_labels[i]
                ));
            }
        }
        experts.push(expert);
    }
    Ok(experts)
}

/// `spec` resolved against `config`, or what in it does not fit, naming the key under `key`.
fn resolve_expert(
    spec: &ComplexityExpert,
    config: &ModelConfig,
    key: &str,
) -> Result<Expert, String> {
    let family = config.score_index(&spec.family).ok_or_else(|| {
        format!(
            "{key}.family: {:?} is not one of complexity_lexicon ({}){}",
            spec.family,
            config.complexity_lexicon.join(", "),
            if config.complexity_topics > 0 {
                ", nor one of them after \"topic.\""
            } else {
                ""
            }
        )
    })?;
    if spec.intents.is_empty() {
        return Err(format!("{key}.intents: name at least one intent"));
    }
    let mut intents: Vec<usize> = Vec::new();
    for i in &spec.intents {
        let at = config
            .intent_labels
            .iter()
            .position(|l| l == i)
            .ok_or_else(|| format!("{key}.intents: {i:?} is not one of intent_labels"))?;
        if intents.contains(&at) {
            return Err(format!("{key}.intents: {i:?} is named twice"));
        }
        intents.push(at);
    }
    if !(spec.slope.is_finite() && spec.slope >= 0.0) {
        return Err(format!(
            "{key}.slope: {}, but it must be finite and not negative",
            spec.slope
        ));
    }
    if !spec.centre.is_finite() {
        return Err(format!(
            "{key}.centre: {}, but it must be finite",
            spec.centre
        ));
    }
    Ok(Expert { family, intents })
}

/// How an expert names the topic prior's score of a complexity family: "topic.outcomes".
pub const TOPIC_PREFIX: &str = "topic.";

/// The domain label of prompts in no particular domain.
pub const GENERAL: &str = "general";

/// The default of `below`: chosen on everyday tests 1 to 7 (see the README).
pub const DEFAULT_DOMAIN_CHECK_BELOW: f32 = 0.9;

/// The second model's weight in the intent of a checked prompt, pooled with the first's as
/// p ∝ first^(1 − w) · second^w: together they read more prompts right than either alone.
/// Chosen with the threshold the README suggests (`routing.intent_check_below = 0.8`) on the
/// development sets (`eval/router-development.md`).
pub const INTENT_CHECK_WEIGHT: f32 = 0.5;

/// The floor of a probability whose logarithm is taken: a head's softmax can round to 0.
const MIN_PROB: f32 = 1e-12;

fn softmax(v: &mut [f32]) {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The text of one chat message: its `content` string, or its text parts joined.
pub fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// What the router reads of a chat: its last user turn, after up to [`CONTEXT_CHARS`] of the
/// turns before it as context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChatText {
    /// The context (older turns first, one a line), then the last user turn.
    pub text: String,
    /// Where the last user turn starts in `text`: 0 when there is no context.
    pub last_turn: usize,
}

impl ChatText {
    /// A prompt with no earlier turns.
    pub fn prompt(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            last_turn: 0,
        }
    }

    /// The last user turn alone.
    pub fn last_turn(&self) -> &str {
        &self.text[self.last_turn..]
    }

    pub fn has_context(&self) -> bool {
        self.last_turn > 0
    }
}

/// How a chat with earlier turns is read ([`Classifier::classify_chat_as`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChatReading {
    /// Whole and by its last user turn alone, the two readings pooled for intent and
    /// complexity, the domain the whole reading's: what the router does.
    #[default]
    Both,
    /// Context and last turn as one text.
    Whole,
    /// The last user turn alone.
    LastTurn,
}

/// How many characters of earlier turns a chat's text keeps as context, the last user turn's
/// own length included.
pub const CONTEXT_CHARS: usize = 600;

/// The text the router classifies: the last user turn, with earlier turns (system messages
/// aside) as context up to [`CONTEXT_CHARS`] characters; the last message when no turn is the
/// user's.
pub fn chat_text(messages: &[Value]) -> ChatText {
    let last_user = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
    let Some(i) = last_user else {
        return ChatText::prompt(messages.last().map(message_text).unwrap_or_default());
    };
    let last = message_text(&messages[i]);
    let mut budget = CONTEXT_CHARS.saturating_sub(last.chars().count());
    let mut context: Vec<String> = Vec::new();
    for m in messages[..i].iter().rev() {
        if budget == 0 {
            break;
        }
        if m.get("role").and_then(Value::as_str) == Some("system") {
            continue;
        }
        let t = message_text(m);
        let skip = t.chars().count().saturating_sub(budget);
        let take: String = t.chars().skip(skip).collect();
        budget -= take.chars().count();
        context.push(take);
    }
    let mut text = String::new();
    for t in context.iter().rev() {
        text.push_str(t);
        text.push('\n');
    }
    let last_turn = text.len();
    text.push_str(&last);
    ChatText { text, last_turn }
}

/// The text of [`chat_text`], context and last user turn together.
pub fn prompt_text(messages: &[Value]) -> String {
    chat_text(messages).text
}

/// The extra features of a text, from its characters and token count.
pub fn extra_features(text: &str, tokens: usize) -> [f32; EXTRA_FEATURES] {
    let mut digits = 0usize;
    let mut code = 0usize;
    let mut visible = 0usize;
    let mut lines = 1usize;
    for c in text.chars() {
        if c == '\n' {
            lines += 1;
        }
        if c.is_whitespace() {
            continue;
        }
        visible += 1;
        if c.is_ascii_digit() {
            digits += 1;
        }
        if matches!(
            c,
            '{' | '}'
                | '['
                | ']'
                | '('
                | ')'
                | ';'
                | '='
                | '<'
                | '>'
                | '_'
                | '\\'
                | '$'
                | '^'
                | '|'
                | '#'
                | '*'
        ) {
            code += 1;
        }
    }
    let v = visible.max(1) as f32;
    [
        ((tokens as f32) + 1.0).ln() / 512f32.ln(),
        digits as f32 / v,
        code as f32 / v,
        ((lines as f32).ln() / 5.0).min(1.0),
    ]
}

/// The tokens of a text, or of a long text its first `head` and last `tail` tokens: the head
/// and tail of a long prompt carry most of its routing signal. Only the two ends are tokenised,
/// so a huge prompt costs no more than a long one.
pub fn select_tokens(tokenizer: &WordPiece, text: &str, head: usize, tail: usize) -> Vec<u32> {
    let ids = tokenizer.encode(text, head + tail + 1);
    if ids.len() <= head + tail {
        return ids;
    }
    let mut out = ids[..head].to_vec();
    // The end of the text, from a white-space boundary, generously sized for `tail` tokens.
    let budget = tail * 24;
    // A byte offset can fall inside a multi-byte character: move to the next boundary first.
    let start = (text.len().saturating_sub(budget)..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    let start = text[start..]
        .char_indices()
        .find(|(_, c)| c.is_whitespace())
        .map_or(start, |(i, _)| start + i);
    let end_ids = tokenizer.encode(&text[start..], usize::MAX);
    out.extend_from_slice(&end_ids[end_ids.len().saturating_sub(tail)..]);
    out
}

/// The static token embeddings: one row per vocabulary token, stored as int8 with a scale per
/// row, and a weight per token (its rarity) for the main pool.
#[derive(Debug, Clone, Default)]
pub struct StaticTable {
    pub dim: usize,
    /// `[vocab, dim]`.
    pub rows: QuantRows,
    /// A row's values are `rows × scale`.
    pub scales: Vec<f32>,
    /// The weight of a token in the main pool (the edge pools are unweighted).
    pub weights: Vec<f32>,
    /// Whole-word rows for words of several pieces (empty: none).
    pub words: WordTable,
}

/// The most pieces a word of the word table has.
pub const MAX_WORD_PIECES: usize = 8;

/// Whole-word rows for words the tokenizer splits into pieces ("tort" → `to ##rt`, "juror" →
/// `ju ##ror`): each was run through the encoder as a whole and reduced like the tokens. A
/// piece's own row says little ("##rt"), so a word found here lends its row to each of its
/// pieces, which keep their weights.
#[derive(Debug, Clone, Default)]
pub struct WordTable {
    /// A word's piece ids to its row.
    pub index: HashMap<Vec<u32>, u32>,
    /// `[words, dim]`, quantised as the token rows are.
    pub rows: QuantRows,
    pub scales: Vec<f32>,
    /// Per vocabulary token: whether it continues a word (a `##` piece).
    pub continues: Vec<bool>,
}

impl WordTable {
    /// For each position of `ids`, the row of the whole word it is a piece of, if the table has
    /// that word; empty when the table is.
    pub fn rows_of(&self, ids: &[u32]) -> Vec<Option<u32>> {
        if self.index.is_empty() {
            return Vec::new();
        }
        let mut out = vec![None; ids.len()];
        for span in word_spans(ids, &self.continues) {
            if span.len() >= 2 {
                if let Some(&row) = self.index.get(&ids[span.clone()]) {
                    out[span].fill(Some(row));
                }
            }
        }
        out
    }

    /// Which vocabulary tokens continue a word, from the vocabulary's text.
    pub fn continuations(vocab: &str) -> Vec<bool> {
        vocab.lines().map(|l| l.starts_with("##")).collect()
    }
}

/// The spans of `ids` that are words: a token and the `##` pieces after it (`continues`, per
/// vocabulary token). A span that starts with a `##` piece (a prompt cut mid-word) is one too;
/// no word of a word table starts so.
pub fn word_spans<'a>(
    ids: &'a [u32],
    continues: &'a [bool],
) -> impl Iterator<Item = std::ops::Range<usize>> + 'a {
    let cont = |id: u32| continues.get(id as usize).copied().unwrap_or(false);
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= ids.len() {
            return None;
        }
        let mut end = start + 1;
        while end < ids.len() && cont(ids[end]) {
            end += 1;
        }
        let span = start..end;
        start = end;
        Some(span)
    })
}

/// Rows of `dim` small integers in a model file's layout ([`embedding_layout`]): 4-bit values
/// packed two to a byte (the even column in the low nibble, the odd one in the high nibble,
/// each a 4-bit two's complement), else one `i8` a byte. A loaded model's rows stay in its
/// file's bytes, which for the embedded model are the binary's own: unpacked to a byte each
/// they would take twice the memory, and a copy once more.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantRows {
    dim: usize,
    packed: bool,
    bytes: bytes::Bytes,
}

impl QuantRows {
    /// Rows of `dim` values each (`values.len()` a multiple of it), laid out for `bits`.
    pub fn new(dim: usize, values: &[i8], bits: u32) -> QuantRows {
        let packed = packs_nibbles(bits, dim);
        let bytes = if packed {
            values
                .chunks(2)
                .map(|p| {
                    let lo = p[0] as u8 & 0x0f;
                    let hi = p.get(1).map_or(0, |v| *v as u8 & 0x0f);
                    lo | (hi << 4)
                })
                .collect::<Vec<u8>>()
        } else {
            values.iter().map(|x| *x as u8).collect()
        };
        QuantRows {
            dim,
            packed,
            bytes: bytes.into(),
        }
    }

    /// Rows from a file's bytes, laid out for `bits` (the caller checked their size).
    pub fn from_file(dim: usize, bits: u32, bytes: bytes::Bytes) -> QuantRows {
        QuantRows {
            dim,
            packed: packs_nibbles(bits, dim),
            bytes,
        }
    }

    /// The rows' bytes, as a model file stores them.
    pub fn file_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn row_bytes(&self) -> usize {
        if self.packed {
            self.dim / 2
        } else {
            self.dim
        }
    }

    /// How many rows there are.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.row_bytes().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `r`'s bytes as stored.
    pub fn row_file_bytes(&self, r: usize) -> Option<&[u8]> {
        let width = self.row_bytes();
        self.bytes.get(r * width..(r + 1) * width)
    }

    /// Row `r`'s values (for tests: a pool reads the bytes in place).
    #[cfg(test)]
    pub fn row(&self, r: usize) -> Option<Vec<i8>> {
        let bytes = self.row_file_bytes(r)?;
        Some(if self.packed {
            bytes.iter().flat_map(|&b| unpack_nibble_pair(b)).collect()
        } else {
            bytes.iter().map(|&b| b as i8).collect()
        })
    }

    /// Adds row `r` times `k` into `out` (`dim` long); false, adding nothing, for a row the
    /// table lacks.
    pub fn add_scaled(&self, r: usize, k: f32, out: &mut [f32]) -> bool {
        let Some(bytes) = self.row_file_bytes(r) else {
            return false;
        };
        if self.packed {
            // Unpacked a block at a time into a buffer, then summed as a row of bytes is.
            const BLOCK: usize = 64;
            let mut values = [0i8; 2 * BLOCK];
            for (block, out) in bytes.chunks(BLOCK).zip(out.chunks_mut(2 * BLOCK)) {
                let values = &mut values[..2 * block.len()];
                for (pair, &b) in values.chunks_exact_mut(2).zip(block) {
                    pair.copy_from_slice(&unpack_nibble_pair(b));
                }
                for (a, v) in out.iter_mut().zip(values.iter()) {
                    *a += k * f32::from(*v);
                }
            }
        } else {
            for (a, b) in out.iter_mut().zip(bytes) {
                *a += k * f32::from(*b as i8);
            }
        }
        true
    }
}

/// Whether rows of `bits`-bit values with `dim` columns are packed two to a byte.
fn packs_nibbles(bits: u32, dim: usize) -> bool {
    bits == 4 && dim % 2 == 0
}

/// A packed byte's two values: the low nibble's, then the high nibble's.
fn unpack_nibble_pair(b: u8) -> [i8; 2] {
    [((b << 4) as i8) >> 4, (b as i8) >> 4]
}

/// Quantises f32 rows of `dim` values to `bits`-bit integers with a scale per row.
pub fn quantise_rows(dim: usize, values: &[f32], bits: u32) -> (QuantRows, Vec<f32>) {
    let levels = ((1i32 << (bits.clamp(2, 8) - 1)) - 1) as f32;
    let mut rows = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / dim.max(1));
    for row in values.chunks_exact(dim.max(1)) {
        let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / levels } else { 1.0 };
        scales.push(scale);
        rows.extend(
            row.iter()
                .map(|x| (x / scale).round().clamp(-levels, levels) as i8),
        );
    }
    (QuantRows::new(dim, &rows, bits), scales)
}

impl StaticTable {
    /// Quantises f32 rows (`[vocab, dim]`) to `bits`-bit integers (8, or 4 packed two to a
    /// byte) with a scale per row.
    pub fn quantise(dim: usize, values: &[f32], weights: Vec<f32>, bits: u32) -> StaticTable {
        let (rows, scales) = quantise_rows(dim, values, bits);
        StaticTable {
            dim,
            rows,
            scales,
            weights,
            words: WordTable::default(),
        }
    }

    /// Adds each token's row, times its scale and (when `weighted`) its weight, into `out`, then
    /// L2-normalises the sum. A token with a whole word's row in `words` (by position; empty:
    /// none) adds that row instead, with its own weight.
    fn pool_into(&self, ids: &[u32], words: &[Option<u32>], weighted: bool, out: &mut [f32]) {
        for (pos, &id) in ids.iter().enumerate() {
            let t = id as usize;
            let word = if words.is_empty() {
                None
            } else {
                words.get(pos).copied().flatten()
            };
            let (rows, r, scale) = match word {
                Some(w) => (
                    &self.words.rows,
                    w as usize,
                    self.words.scales.get(w as usize),
                ),
                None => (&self.rows, t, self.scales.get(t)),
            };
            let Some(scale) = scale else {
                continue;
            };
            let k = if weighted {
                scale * self.weights.get(t).copied().unwrap_or(1.0)
            } else {
                *scale
            };
            rows.add_scaled(r, k, out);
        }
        let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in out.iter_mut() {
                *x /= norm;
            }
        }
    }

    /// The features the heads read: the extra features, the L2-normalised weighted mean of the
    /// tokens' rows, then for each edge span (narrow first) the unweighted means of the first
    /// and of the last that many tokens' rows. Shared by training and inference.
    pub fn features(&self, ids: &[u32], edges: Edges, extra: [f32; EXTRA_FEATURES]) -> Vec<f32> {
        let dim = self.dim;
        let mut f = vec![0f32; EXTRA_FEATURES + dim * pools(edges)];
        f[..EXTRA_FEATURES].copy_from_slice(&extra);
        let mut chunks = f[EXTRA_FEATURES..].chunks_exact_mut(dim);
        // Whole words are found over the whole prompt, so that an edge span that cuts a word
        // does not read its first pieces as another word.
        let words = self.words.rows_of(ids);
        if let Some(main) = chunks.next() {
            self.pool_into(ids, &words, true, main);
        }
        let n = ids.len();
        let ranges = edges
            .spans()
            .flat_map(|e| [0..n.min(e), n.saturating_sub(e)..n]);
        for (out, range) in chunks.zip(ranges) {
            let w = words.get(range.clone()).unwrap_or(&[]);
            self.pool_into(&ids[range], w, false, out);
        }
        f
    }
}

/// A table of numbers read as `f32`: computed in memory (by training), or stored as f16 in a
/// model file's bytes and read in place (a loaded model's lexicons and bags), which takes a
/// quarter of what a copy in `f32` beside the file would.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    /// Little-endian f16, two bytes a value.
    F16(bytes::Bytes),
}

impl Default for Values {
    fn default() -> Values {
        Values::F32(Vec::new())
    }
}

impl From<Vec<f32>> for Values {
    fn from(v: Vec<f32>) -> Values {
        Values::F32(v)
    }
}

/// An f16's bits as f32, exactly (zeros, subnormals, infinities and NaNs included), in a few
/// integer operations the compiler inlines: `half`'s conversion checks the CPU's features on
/// every call, which costs more than the lexicons' sums it feeds.
#[inline]
fn f16_to_f32(h: u16) -> f32 {
    const SHIFTED_EXP: u32 = 0x7c00 << 13;
    let mut o = u32::from(h & 0x7fff) << 13;
    let exp = o & SHIFTED_EXP;
    o += (127 - 15) << 23;
    if exp == SHIFTED_EXP {
        o += (128 - 16) << 23;
    } else if exp == 0 {
        // A zero or a subnormal: renormalised by a float subtraction.
        o += 1 << 23;
        o = (f32::from_bits(o) - f32::from_bits(113 << 23)).to_bits();
    }
    f32::from_bits(o | u32::from(h & 0x8000) << 16)
}

/// The f16 in a value's two little-endian bytes, as f32.
#[inline]
fn f16_le(b: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// The bf16 in a value's two little-endian bytes, as f32 (exactly: the top half of its bits).
fn bf16_le(b: &[u8]) -> f32 {
    kernel::bf16_value(u32::from(u16::from_le_bytes([b[0], b[1]])))
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F16(b) => b.len() / 2,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `n` values from `at`, borrowed, or for f16 converted into `buf`; `None` past the
    /// end. A slice rather than an iterator, so that the sums over it vectorise: read through an
    /// iterator, the lexicons and bags took about four times as long (`eval/router-development.md`).
    #[inline]
    pub fn row_in<'a>(&'a self, at: usize, n: usize, buf: &'a mut Vec<f32>) -> Option<&'a [f32]> {
        match self {
            Values::F32(v) => v.get(at..at + n),
            Values::F16(b) => {
                let bytes = b.get(2 * at..2 * (at + n))?;
                buf.clear();
                buf.extend(bytes.chunks_exact(2).map(f16_le));
                Some(buf)
            }
        }
    }

    pub fn get(&self, i: usize) -> Option<f32> {
        match self {
            Values::F32(v) => v.get(i).copied(),
            Values::F16(b) => b.get(2 * i..2 * i + 2).map(f16_le),
        }
    }

    pub fn to_vec(&self) -> Vec<f32> {
        match self {
            Values::F32(v) => v.clone(),
            Values::F16(b) => b.chunks_exact(2).map(f16_le).collect(),
        }
    }
}

/// A domain or intent lexicon: for every token, how much likelier a prompt holding it is under
/// each label (naive-Bayes log-likelihoods over which tokens a prompt holds, each row centred on
/// its mean). Pooled vectors blur one "dividend" or "limerick" among a prompt's other words; the
/// lexicon's max over the prompt keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lexicon {
    pub labels: usize,
    /// `[vocab, labels]`, row-major.
    pub rows: Values,
}

/// A prompt's token ids, sorted, each once.
pub fn distinct_ids(ids: &[u32]) -> Vec<u32> {
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
}

impl Lexicon {
    /// Appends the naive-Bayes posterior over the labels (the softmax of the sum of the rows of
    /// the distinct tokens in `ids`), then those rows' max (zeros for a prompt with none).
    pub fn features_into(&self, ids: &[u32], out: &mut Vec<f32>) {
        self.features_of_distinct(&distinct_ids(ids), out);
    }

    /// [`Lexicon::features_into`] for ids already sorted and deduplicated ([`distinct_ids`]), so
    /// that a model's lexicons share one pass over a prompt's tokens.
    pub fn features_of_distinct(&self, distinct: &[u32], out: &mut Vec<f32>) {
        let n = self.labels;
        let start = out.len();
        out.resize(start + 2 * n, 0.0);
        let (post, max) = out[start..].split_at_mut(n);
        let mut seen = 0usize;
        let mut buf = Vec::with_capacity(n);
        for &id in distinct {
            let at = id as usize * n;
            let Some(row) = self.rows.row_in(at, n, &mut buf) else {
                continue;
            };
            for ((p, x), &v) in post.iter_mut().zip(max.iter_mut()).zip(row) {
                *p += v;
                *x = if seen == 0 { v } else { x.max(v) };
            }
            seen += 1;
        }
        if seen > 0 {
            let top = post.iter().copied().fold(f32::MIN, f32::max);
            let mut z = 0.0;
            for p in post.iter_mut() {
                *p = (*p - top).exp();
                z += *p;
            }
            for p in post {
                *p /= z;
            }
        }
    }
}

/// The complexity lexicon: for every token, a weight per family of complexity labels (recorded
/// outcomes, difficulty ratings), fitted by ridge regression on the training prompts' TF-IDF
/// bags of tokens, and the token's idf. A pooled embedding blurs what makes a prompt hard for a
/// cheap model (the rare words of a subject the cheap model is weak in, the kind of problem);
/// a linear model over the tokens themselves keeps it, at the cost of one lookup per token.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComplexityLexicon {
    pub families: usize,
    /// Per token: its idf, 0 for a token too rare in training to carry a weight.
    pub idf: Vec<f32>,
    /// `[vocab, families]`, row-major.
    pub rows: Values,
    /// Token pairs and surface features, for the families fitted on them too (none: unigrams).
    pub wide: Option<WideLexicon>,
}

/// The topic prior: which source of labelled prompts a prompt looks like (a softmax over the
/// prompt's main pooled embedding, over the sources named at training, e.g. MMLU and MATH
/// subjects), and each complexity family's mean label over each source's training prompts,
/// averaged under that softmax. The lexicon weighs tokens one by one; many a cheap model's weak spot is a whole
/// subject, which the pooled embedding tells apart as a topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicPrior {
    pub topics: usize,
    /// `[topics, dim]`, row-major: the softmax's weights over the main pool.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    /// `[topics, families]`, row-major: each topic's mean label per family.
    pub prior: Vec<f32>,
}

impl TopicPrior {
    /// The topics' probabilities for a prompt's main pool.
    pub fn probabilities(&self, pooled: &[f32]) -> Vec<f32> {
        let dim = self.weight.len() / self.topics.max(1);
        let mut p = vec![0.0; self.topics];
        kernel::affine(
            &self.weight,
            &self.bias,
            &pooled[..dim.min(pooled.len())],
            &mut p,
        );
        softmax(&mut p);
        p
    }

    /// Each family's prior for a prompt's main pool.
    pub fn scores(&self, pooled: &[f32]) -> Vec<f32> {
        self.expected(&self.probabilities(pooled))
    }

    /// Each family's prior under the topics' probabilities `p`.
    pub fn expected(&self, p: &[f32]) -> Vec<f32> {
        let families = self.prior.len() / self.topics.max(1);
        (0..families)
            .map(|j| {
                p.iter()
                    .enumerate()
                    .map(|(t, pt)| pt * self.prior[t * families + j])
                    .sum()
            })
            .collect()
    }
}

/// What a "wide" complexity family reads besides single tokens: the prompt's pairs of adjacent
/// tokens, hashed into `1 << bits` buckets ([`pair_bucket`]) and weighed as a second TF-IDF bag,
/// and its surface features ([`extra_features`]) with an intercept. What makes a maths
/// question hard can take two tokens to say ("how many", "prime factor"), and a longer problem
/// tends to be a harder one; one ridge over all of them weighs each against the others.
/// Families fitted on tokens alone have zero weights here.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WideLexicon {
    pub bits: u32,
    /// Per bucket: its idf, 0 for a bucket too rare in training to carry a weight.
    pub idf: Vec<f32>,
    /// `[1 << bits, families]`, row-major.
    pub rows: Values,
    /// `[families, EXTRA_FEATURES + 1]`: each family's weights of the surface features, then
    /// its intercept.
    pub surface: Vec<f32>,
}

/// The bucket of the token pair `(a, b)` among `1 << bits` (1..=32): the top bits of a
/// multiplicative hash of both ids.
pub fn pair_bucket(a: u32, b: u32, bits: u32) -> u32 {
    let key = (u64::from(a) << 32) | u64::from(b);
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits.clamp(1, 32))) as u32
}

/// The sorted buckets of a prompt's adjacent token pairs.
pub fn sorted_pairs(ids: &[u32], bits: u32) -> Vec<u32> {
    let mut pairs: Vec<u32> = ids
        .windows(2)
        .map(|w| pair_bucket(w[0], w[1], bits))
        .collect();
    pairs.sort_unstable();
    pairs
}

impl ComplexityLexicon {
    /// The prompt's TF-IDF bag: each distinct token with a nonzero idf and its weight
    /// (1 + ln tf) · idf, L2-normalised (as scikit-learn's `TfidfVectorizer(sublinear_tf=True)`).
    pub fn bag(idf: &[f32], ids: &[u32]) -> Vec<(u32, f32)> {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        Self::bag_of_sorted(idf, &sorted)
    }

    /// [`ComplexityLexicon::bag`] of ids already sorted, so that the classifier sorts a prompt's
    /// ids once for all its lexicons.
    pub fn bag_of_sorted(idf: &[f32], sorted: &[u32]) -> Vec<(u32, f32)> {
        let mut bag: Vec<(u32, f32)> = Vec::new();
        for run in sorted.chunk_by(|a, b| a == b) {
            let t = run[0];
            let w = idf.get(t as usize).copied().unwrap_or(0.0);
            if w > 0.0 {
                bag.push((t, (1.0 + (run.len() as f32).ln()) * w));
            }
        }
        let norm = bag.iter().map(|(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            for (_, w) in &mut bag {
                *w /= norm;
            }
        }
        bag
    }

    /// Appends one score per family: the prompt's TF-IDF bag times the family's weights, plus
    /// for a wide lexicon its bag of token pairs and its surface features (`surface`, the first
    /// [`EXTRA_FEATURES`] of the prompt's features) times theirs.
    pub fn features_into(&self, ids: &[u32], surface: &[f32], out: &mut Vec<f32>) {
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        self.features_of_sorted(ids, &sorted, surface, out);
    }

    /// [`ComplexityLexicon::features_into`] with the prompt's ids also given sorted.
    pub fn features_of_sorted(
        &self,
        ids: &[u32],
        sorted: &[u32],
        surface: &[f32],
        out: &mut Vec<f32>,
    ) {
        self.features_of_bag(ids, &Self::bag_of_sorted(&self.idf, sorted), surface, out);
    }

    /// [`ComplexityLexicon::features_of_sorted`] with the prompt's TF-IDF bag of tokens already
    /// made ([`ComplexityLexicon::bag`], with this lexicon's idf), which the bags share.
    pub fn features_of_bag(
        &self,
        ids: &[u32],
        bag: &[(u32, f32)],
        surface: &[f32],
        out: &mut Vec<f32>,
    ) {
        let n = self.families;
        let start = out.len();
        out.resize(start + n, 0.0);
        let scores = &mut out[start..];
        let mut buf = Vec::with_capacity(n);
        let mut add = |bag: &[(u32, f32)], rows: &Values| {
            for &(t, w) in bag {
                let at = t as usize * n;
                if let Some(row) = rows.row_in(at, n, &mut buf) {
                    for (o, v) in scores.iter_mut().zip(row) {
                        *o += w * v;
                    }
                }
            }
        };
        add(bag, &self.rows);
        if let Some(wide) = &self.wide {
            let pairs = sorted_pairs(ids, wide.bits);
            add(&Self::bag_of_sorted(&wide.idf, &pairs), &wide.rows);
            for (o, w) in scores
                .iter_mut()
                .zip(wide.surface.chunks_exact(EXTRA_FEATURES + 1))
            {
                *o += w[EXTRA_FEATURES] + w.iter().zip(surface).map(|(a, b)| a * b).sum::<f32>();
            }
        }
    }
}

fn tensor_f32(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    path: &str,
) -> Result<(Vec<f32>, Vec<usize>), ModelError> {
    let t = st
        .tensor(name)
        .map_err(|e| load_err(path, format!("tensor {name}: {e}")))?;
    let shape = t.shape().to_vec();
    let data = t.data();
    let v = match t.dtype() {
        safetensors::Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        safetensors::Dtype::F16 => data.chunks_exact(2).map(f16_le).collect(),
        safetensors::Dtype::BF16 => data.chunks_exact(2).map(bf16_le).collect(),
        other => {
            return Err(load_err(
                path,
                format!("tensor {name}: unsupported dtype {other:?}"),
            ))
        }
    };
    Ok((v, shape))
}

/// Tensor `name` as [`Values`]: f16 read in place from the file's bytes, f32 copied.
fn tensor_values(
    (st, blob): Weights<'_>,
    name: &str,
    path: &str,
) -> Result<(Values, Vec<usize>), ModelError> {
    let t = st
        .tensor(name)
        .map_err(|e| load_err(path, format!("tensor {name}: {e}")))?;
    if t.dtype() == safetensors::Dtype::F16 {
        return Ok((Values::F16(blob.slice_ref(t.data())), t.shape().to_vec()));
    }
    let (v, shape) = tensor_f32(st, name, path)?;
    Ok((v.into(), shape))
}

/// How a table of `bits`-bit values with `dim` columns is stored: its dtype and the columns of
/// its `embeddings` tensor. 8 bits: one `I8` per value; 4 bits: two values packed in each `U8`.
/// `None` for any other layout.
pub fn embedding_layout(bits: u32, dim: usize) -> Option<(safetensors::Dtype, usize)> {
    match bits {
        8 => Some((safetensors::Dtype::I8, dim)),
        4 if dim % 2 == 0 => Some((safetensors::Dtype::U8, dim / 2)),
        _ => None,
    }
}

/// A model file's tensors, and the bytes they were read from (which a table's rows share).
type Weights<'a> = (&'a safetensors::SafeTensors<'a>, &'a bytes::Bytes);

/// The rows of tensor `name`: `rows` rows of `dim` values stored as `embedding_bits` says
/// ([`embedding_layout`]), or what in it does not fit, naming it.
fn quantised_rows(
    (st, blob): Weights<'_>,
    name: &str,
    path: &str,
    rows: usize,
    dim: usize,
    bits: u32,
) -> Result<QuantRows, ModelError> {
    let t = st
        .tensor(name)
        .map_err(|e| load_err(path, format!("tensor {name}: {e}")))?;
    let (dtype, columns) = embedding_layout(bits, dim).ok_or_else(|| {
        load_err(
            path,
            format!("embedding_bits {bits} with dim {dim}: use 8, or 4 with an even dim"),
        )
    })?;
    if t.shape() != [rows, columns] {
        return Err(load_err(
            path,
            format!(
                "{name} shape {:?} is not [{rows}, {columns}] (rows, dim and embedding_bits)",
                t.shape()
            ),
        ));
    }
    if t.dtype() != dtype {
        return Err(load_err(
            path,
            format!("{name} are {:?}, not {dtype:?} ({bits}-bit)", t.dtype()),
        ));
    }
    Ok(QuantRows::from_file(dim, bits, blob.slice_ref(t.data())))
}

/// The static table of a model file: `embeddings` as int8 (or int4 packed two to a byte), with
/// `embedding_scales` and `token_weights`.
fn static_table(
    (st, blob): Weights<'_>,
    path: &str,
    vocab: usize,
    dim: usize,
    bits: u32,
) -> Result<StaticTable, ModelError> {
    let rows = quantised_rows((st, blob), "embeddings", path, vocab, dim, bits)?;
    let (scales, s1) = tensor_f32(st, "embedding_scales", path)?;
    let (weights, s2) = tensor_f32(st, "token_weights", path)?;
    if s1 != [vocab] || s2 != [vocab] {
        return Err(load_err(
            path,
            "embedding_scales and token_weights must have one value per token",
        ));
    }
    Ok(StaticTable {
        dim,
        rows,
        scales,
        weights,
        words: WordTable::default(),
    })
}

/// The word table of a model file: `word_embeddings` laid out as `embeddings` are, with
/// `word_scales`, and `word_pieces` (`I32`, `[words, MAX_WORD_PIECES]`, each word's piece ids
/// padded with −1).
fn word_table(
    (st, blob): Weights<'_>,
    path: &str,
    vocab: &str,
    dim: usize,
    bits: u32,
) -> Result<WordTable, ModelError> {
    let pieces = st
        .tensor("word_pieces")
        .map_err(|e| load_err(path, format!("tensor word_pieces: {e}")))?;
    let n = match pieces.shape() {
        [n, MAX_WORD_PIECES] if pieces.dtype() == safetensors::Dtype::I32 => *n,
        shape => {
            return Err(load_err(
                path,
                format!(
                    "word_pieces is {:?} {shape:?}, not I32 [words, {MAX_WORD_PIECES}]",
                    pieces.dtype()
                ),
            ))
        }
    };
    let rows = quantised_rows((st, blob), "word_embeddings", path, n, dim, bits)?;
    let (scales, scale_shape) = tensor_f32(st, "word_scales", path)?;
    if scale_shape != [n] {
        return Err(load_err(
            path,
            format!("word_scales {scale_shape:?} does not match word_pieces' {n} words"),
        ));
    }
    let mut index = HashMap::with_capacity(n);
    for (w, row) in pieces.data().chunks_exact(4 * MAX_WORD_PIECES).enumerate() {
        let ids: Vec<u32> = row
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .take_while(|&id| id >= 0)
            .map(|id| id as u32)
            .collect();
        index.insert(ids, w as u32);
    }
    Ok(WordTable {
        index,
        rows,
        scales,
        continues: WordTable::continuations(vocab),
    })
}

fn head((st, blob): Weights<'_>, name: &str, path: &str) -> Result<Head, ModelError> {
    let w1_name = format!("{name}.w1");
    let t = st
        .tensor(&w1_name)
        .map_err(|e| load_err(path, format!("tensor {w1_name}: {e}")))?;
    let s1 = t.shape().to_vec();
    let width = s1.get(1).copied().unwrap_or(0);
    let w1 = if t.dtype() == safetensors::Dtype::BF16 {
        Packed::from_file(blob.slice_ref(t.data()), width)
    } else {
        Packed::Words(kernel::pack_bf16(&tensor_f32(st, &w1_name, path)?.0, width))
    };
    let (b1, _) = tensor_f32(st, &format!("{name}.b1"), path)?;
    let (w2, s2) = tensor_f32(st, &format!("{name}.w2"), path)?;
    let (b2, _) = tensor_f32(st, &format!("{name}.b2"), path)?;
    if s1.len() != 2 || s2.len() != 2 || s2[1] != s1[0] || b1.len() != s1[0] || b2.len() != s2[0] {
        return Err(load_err(
            path,
            format!("head {name}: inconsistent shapes {s1:?} {s2:?}"),
        ));
    }
    Ok(Head {
        w1,
        b1,
        w2,
        b2,
        inputs: s1[1],
        hidden: s1[0],
        outputs: s2[0],
    })
}

/// The window of a model file ([`window::Window`]), when `intent_window` asks for one: `window_taps`
/// (`I8`, `[vocab, TAPS · window_filters]`), `window_scales` (one per token) and the head
/// `window`, which reads the heads' inputs and the filters.
fn window_of(
    config: &ModelConfig,
    (st, blob): Weights<'_>,
    origin: &str,
    vocab: usize,
) -> Result<Option<window::Window>, ModelError> {
    let w = config.intent_window;
    let config_path = format!("{origin}/config.json");
    if w == 0.0 {
        return Ok(None);
    }
    if !(0.0..=1.0).contains(&w) {
        return Err(load_err(
            config_path,
            format!("intent_window: {w}, but it must be 0 to 1"),
        ));
    }
    let filters = config.window_filters;
    if filters == 0 {
        return Err(load_err(
            config_path,
            "window_filters: 0, but intent_window asks for a window",
        ));
    }
    if config.backbone_encoder.is_some() {
        return Err(load_err(
            config_path,
            "intent_window: the window reads the static table's token rows, which a full-encoder backbone has not",
        ));
    }
    let path = format!("{origin}/model.safetensors");
    let taps = quantised_rows(
        (st, blob),
        "window_taps",
        &path,
        vocab,
        window::TAPS * filters,
        8,
    )?;
    let (scales, shape) = tensor_f32(st, "window_scales", &path)?;
    if shape != [vocab] {
        return Err(load_err(
            &path,
            format!("window_scales shape {shape:?} must have one value per token"),
        ));
    }
    let head = head((st, blob), "window", &path)?;
    if head.inputs != config.inputs() + filters || head.outputs != config.intent_labels.len() {
        return Err(load_err(
            &path,
            format!(
                "head window reads {} inputs into {} labels, not the heads' {} inputs and {} filters into the {} intents",
                head.inputs,
                head.outputs,
                config.inputs(),
                filters,
                config.intent_labels.len()
            ),
        ));
    }
    Ok(Some(window::Window {
        filters,
        taps,
        scales,
        head,
    }))
}

impl Classifier {
    /// Loads a model from its three files' contents. The token rows and the f16 tables stay
    /// in `weights`' bytes ([`QuantRows`], [`Values`]).
    pub fn from_parts(
        config_json: &[u8],
        vocab: &str,
        weights: bytes::Bytes,
        origin: &str,
    ) -> Result<Classifier, ModelError> {
        let config: ModelConfig = serde_json::from_slice(config_json)
            .map_err(|e| load_err(format!("{origin}/config.json"), e.to_string()))?;
        if config.format != MODEL_FORMAT {
            return Err(load_err(
                format!("{origin}/config.json"),
                format!(
                    "format {} but this build reads format {MODEL_FORMAT}: retrain the model with `switchyard train`",
                    config.format
                ),
            ));
        }
        let tokenizer = WordPiece::from_vocab(vocab)
            .ok_or_else(|| load_err(format!("{origin}/vocab.txt"), "no [UNK] token"))?;
        let wpath = format!("{origin}/model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&weights)
            .map_err(|e| load_err(&wpath, e.to_string()))?;
        let (table, encoder) = match &config.backbone_encoder {
            Some(source) => {
                let dir = encoder::resolve(source, Some(Path::new(origin)), None)?;
                let max = config.head_tokens + config.tail_tokens + 2;
                let enc = encoder::Encoder::load(&dir, &tokenizer, max)?;
                if enc.hidden != config.dim {
                    return Err(load_err(
                        format!("{origin}/config.json"),
                        format!(
                            "dim {} but the encoder's hidden size is {}",
                            config.dim, enc.hidden
                        ),
                    ));
                }
                (StaticTable::default(), Some(enc))
            }
            None => {
                let mut table = static_table(
                    (&st, &weights),
                    &wpath,
                    tokenizer.vocab_size(),
                    config.dim,
                    config.embedding_bits,
                )?;
                if config.word_vectors > 0 {
                    table.words = word_table(
                        (&st, &weights),
                        &wpath,
                        vocab,
                        config.dim,
                        config.embedding_bits,
                    )?;
                }
                (table, None)
            }
        };
        let lexicon = |on: bool,
                       name: &str,
                       labels: usize|
         -> Result<Option<Lexicon>, ModelError> {
            if !on {
                return Ok(None);
            }
            let (rows, shape) = tensor_values((&st, &weights), name, &wpath)?;
            if shape != [tokenizer.vocab_size(), labels] {
                return Err(load_err(
                    &wpath,
                    format!("{name} shape {shape:?} does not match the vocabulary and the labels"),
                ));
            }
            Ok(Some(Lexicon { labels, rows }))
        };
        let intent_lexicon = lexicon(
            config.intent_lexicon,
            "intent_lexicon",
            config.intent_labels.len(),
        )?;
        let domain_lexicon = lexicon(
            config.domain_lexicon,
            "domain_lexicon",
            config.domain_labels.len(),
        )?;
        let bag = |name: &str, weight: f32, labels: usize| -> Result<_, ModelError> {
            if weight == 0.0 {
                return Ok(None);
            }
            if !(0.0..=1.0).contains(&weight) {
                return Err(load_err(
                    format!("{origin}/config.json"),
                    format!("{name}: {weight}, but it must be 0 to 1"),
                ));
            }
            let vocab = tokenizer.vocab_size();
            let (rows, shape) = tensor_values((&st, &weights), name, &wpath)?;
            let (bias, bias_shape) = tensor_f32(&st, &format!("{name}_bias"), &wpath)?;
            if shape != [vocab, labels] || bias_shape != [labels] {
                return Err(load_err(
                    &wpath,
                    format!(
                        "{name} shape {shape:?} and {name}_bias shape {bias_shape:?} do not match \
                         the vocabulary and the labels"
                    ),
                ));
            }
            Ok(Some(bag::BagModel { labels, rows, bias }))
        };
        let intent_bag = bag("intent_bag", config.intent_bag, config.intent_labels.len())?;
        let domain_bag = bag("domain_bag", config.domain_bag, config.domain_labels.len())?;
        let domain_offsets = resolve_domain_offsets(&config.domain_labels, &config.domain_offsets)
            .map_err(|e| {
                load_err(
                    format!("{origin}/config.json"),
                    format!("domain_offsets.{e}"),
                )
            })?;
        let complexity_lexicon = if config.complexity_lexicon.is_empty() {
            None
        } else {
            let families = config.complexity_lexicon.len();
            let vocab = tokenizer.vocab_size();
            let (rows, shape) = tensor_values((&st, &weights), "complexity_lexicon", &wpath)?;
            let (idf, idf_shape) = tensor_f32(&st, "token_idf", &wpath)?;
            if shape != [vocab, families] || idf_shape != [vocab] {
                return Err(load_err(
                    &wpath,
                    format!(
                        "complexity_lexicon shape {shape:?} and token_idf shape {idf_shape:?} do not match \
                         the vocabulary and the families in config.json"
                    ),
                ));
            }
            let wide = if config.complexity_wide.is_empty() {
                None
            } else {
                let bits = config.complexity_pair_bits;
                if !(1..=24).contains(&bits) {
                    return Err(load_err(
                        format!("{origin}/config.json"),
                        format!("complexity_pair_bits: {bits}, but it must be 1 to 24"),
                    ));
                }
                let buckets = 1usize << bits;
                let (rows, shape) = tensor_values((&st, &weights), "complexity_pairs", &wpath)?;
                let (idf, idf_shape) = tensor_f32(&st, "pair_idf", &wpath)?;
                let (surface, surface_shape) = tensor_f32(&st, "complexity_surface", &wpath)?;
                if shape != [buckets, families]
                    || idf_shape != [buckets]
                    || surface_shape != [families, EXTRA_FEATURES + 1]
                {
                    return Err(load_err(
                        &wpath,
                        format!(
                            "complexity_pairs shape {shape:?}, pair_idf shape {idf_shape:?} and \
                             complexity_surface shape {surface_shape:?} do not match the \
                             complexity_pair_bits and the families in config.json"
                        ),
                    ));
                }
                Some(WideLexicon {
                    bits,
                    idf,
                    rows,
                    surface,
                })
            };
            Some(ComplexityLexicon {
                families,
                idf,
                rows,
                wide,
            })
        };
        let topic_prior = match config.complexity_topics {
            0 => None,
            topics => {
                let families = config.complexity_lexicon.len();
                let (weight, shape) = tensor_f32(&st, "topic_weight", &wpath)?;
                let (bias, bias_shape) = tensor_f32(&st, "topic_bias", &wpath)?;
                let (prior, prior_shape) = tensor_f32(&st, "topic_prior", &wpath)?;
                if families == 0
                    || shape != [topics, config.dim]
                    || bias_shape != [topics]
                    || prior_shape != [topics, families]
                {
                    return Err(load_err(
                        &wpath,
                        format!(
                            "topic_weight shape {shape:?}, topic_bias shape {bias_shape:?} and \
                             topic_prior shape {prior_shape:?} do not match complexity_topics, \
                             dim and the complexity_lexicon families in config.json"
                        ),
                    ));
                }
                Some(TopicPrior {
                    topics,
                    weight,
                    bias,
                    prior,
                })
            }
        };
        check_pairs(&config).map_err(|e| load_err(format!("{origin}/config.json"), e))?;
        let pair_lexicon = match config.complexity_pairs.len() {
            0 => None,
            pairs => {
                let (rows, shape) = tensor_values((&st, &weights), "pair_lexicon", &wpath)?;
                if shape != [tokenizer.vocab_size(), pairs] {
                    return Err(load_err(
                        &wpath,
                        format!(
                            "pair_lexicon shape {shape:?} does not match the vocabulary and the \
                             complexity_pairs in config.json"
                        ),
                    ));
                }
                Some(ComplexityLexicon {
                    families: pairs,
                    idf: Vec::new(),
                    rows,
                    wide: None,
                })
            }
        };
        // The bags and the pairs read the complexity lexicon's TF-IDF bag; without one, its idf
        // alone.
        let bag_idf = if complexity_lexicon.is_none()
            && (intent_bag.is_some() || domain_bag.is_some() || pair_lexicon.is_some())
        {
            let (idf, shape) = tensor_f32(&st, "token_idf", &wpath)?;
            if shape != [tokenizer.vocab_size()] {
                return Err(load_err(
                    &wpath,
                    format!("token_idf shape {shape:?} does not match the vocabulary"),
                ));
            }
            idf
        } else {
            Vec::new()
        };
        if config.ensemble == 0 {
            return Err(load_err(
                format!("{origin}/config.json"),
                "ensemble: at least one head of each kind",
            ));
        }
        let members = |name: &str| -> Result<Vec<Head>, ModelError> {
            (0..config.ensemble)
                .map(|m| head((&st, &weights), &member_name(name, m), &wpath))
                .collect()
        };
        let intent = members("intent")?;
        let domain = members("domain")?;
        let complexity = head((&st, &weights), "complexity", &wpath)?;
        let inputs = config.inputs();
        if intent
            .iter()
            .any(|h| h.outputs != config.intent_labels.len())
            || domain
                .iter()
                .any(|h| h.outputs != config.domain_labels.len())
            || complexity.outputs != 1
        {
            return Err(load_err(
                &wpath,
                "head sizes do not match the labels in config.json",
            ));
        }
        if intent.iter().chain(&domain).any(|h| h.inputs != inputs)
            || complexity.inputs != config.complexity_inputs()
        {
            return Err(load_err(
                &wpath,
                "head inputs do not match dim, edge pooling, extra features and the lexicon",
            ));
        }
        let experts =
            resolve_experts(&config).map_err(|e| load_err(format!("{origin}/config.json"), e))?;
        let window = window_of(&config, (&st, &weights), origin, tokenizer.vocab_size())?;
        Ok(Classifier {
            config,
            tokenizer,
            table,
            encoder,
            domain_lexicon,
            intent_lexicon,
            intent_bag,
            domain_bag,
            window,
            domain_offsets,
            bag_idf,
            complexity_lexicon,
            topic_prior,
            pair_lexicon,
            complexity_pair: None,
            intent,
            domain,
            complexity,
            experts,
            domain_check: None,
        })
    }

    /// This model, reporting the complexity of its recorded pair `name` ([`ComplexityPair`])
    /// instead of the head's; `None` goes back to the head's.
    pub fn with_complexity_pair(mut self, name: Option<&str>) -> Result<Classifier, String> {
        self.complexity_pair = match name {
            None => None,
            Some(name) => Some(
                self.config
                    .complexity_pairs
                    .iter()
                    .position(|p| p.name == name)
                    .ok_or_else(|| {
                        let names: Vec<&str> = self
                            .config
                            .complexity_pairs
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect();
                        format!(
                            "the model has no complexity pair {name:?} ({})",
                            if names.is_empty() {
                                "it has none".to_string()
                            } else {
                                format!("it has {}", names.join(", "))
                            }
                        )
                    })?,
            ),
        };
        Ok(self)
    }

    /// This model with `offsets` as its domain offsets, in place of those it was trained with
    /// (`config.domain_offsets`; empty: none), and its domain check's too: a deployment whose
    /// traffic holds more or fewer of a domain than the training mix moves its prior. An error
    /// starts with the label at fault.
    pub fn with_domain_offsets(
        mut self,
        offsets: &std::collections::BTreeMap<String, f32>,
    ) -> Result<Classifier, String> {
        self.domain_offsets = resolve_domain_offsets(&self.config.domain_labels, offsets)?;
        self.config.domain_offsets = offsets.clone();
        if let Some(check) = self.domain_check.take() {
            let DomainCheck {
                model,
                below,
                intent_below,
            } = *check;
            self.domain_check = Some(Box::new(DomainCheck {
                model: model.with_domain_offsets(offsets)?,
                below,
                intent_below,
            }));
        }
        Ok(self)
    }

    /// This model, with `check` re-scoring the domain of every prompt whose probability of
    /// `general` is below `below`. The two models must have the same domain labels.
    pub fn with_domain_check(
        mut self,
        check: Classifier,
        below: f32,
    ) -> Result<Classifier, String> {
        if check.config.domain_labels != self.config.domain_labels {
            return Err(format!(
                "its domain labels {:?} are not the model's {:?}",
                check.config.domain_labels, self.config.domain_labels
            ));
        }
        if !self.config.domain_labels.iter().any(|l| l == GENERAL) {
            return Err(format!("the domain labels have no {GENERAL:?}"));
        }
        if !(0.0..=1.0).contains(&below) {
            return Err(format!("the threshold {below} is not between 0 and 1"));
        }
        if check.domain_check.is_some() {
            return Err("it has a domain check of its own".into());
        }
        self.domain_check = Some(Box::new(DomainCheck {
            model: check,
            below,
            intent_below: None,
        }));
        Ok(self)
    }

    /// This model, its domain check's model also re-reading the intent of every prompt whose
    /// intent's probability is below `below`: the two models' intent probabilities are pooled
    /// ([`INTENT_CHECK_WEIGHT`]). Needs a domain check ([`Self::with_domain_check`]; its
    /// threshold 0 checks intents only) whose model has the same intent labels.
    pub fn with_intent_check(mut self, below: f32) -> Result<Classifier, String> {
        if !(0.0..=1.0).contains(&below) {
            return Err(format!("the threshold {below} is not between 0 and 1"));
        }
        let labels = &self.config.intent_labels;
        let Some(check) = self.domain_check.as_mut() else {
            return Err("there is no second model to check with (a domain check)".into());
        };
        if &check.model.config.intent_labels != labels {
            return Err(format!(
                "the second model's intent labels {:?} are not the model's {labels:?}",
                check.model.config.intent_labels
            ));
        }
        check.intent_below = Some(below);
        Ok(self)
    }

    /// This model, with the model folder `dir` as its domain check ([`Self::with_domain_check`]).
    pub fn with_domain_check_from(self, dir: &Path, below: f32) -> Result<Classifier, ModelError> {
        let check = Classifier::load(dir)?;
        self.with_domain_check(check, below).map_err(|m| {
            load_err(
                dir.display().to_string(),
                format!("cannot check the model's domains: {m}"),
            )
        })
    }

    /// The domain check, if any.
    pub fn domain_check(&self) -> Option<&DomainCheck> {
        self.domain_check.as_deref()
    }

    /// Loads a model folder (`config.json`, `vocab.txt`, `model.safetensors`).
    pub fn load(dir: &Path) -> Result<Classifier, ModelError> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|e| load_err(p.display().to_string(), e.to_string()))
        };
        let vocab = String::from_utf8(read("vocab.txt")?)
            .map_err(|_| load_err(dir.join("vocab.txt").display().to_string(), "not UTF-8"))?;
        let weights = dir.join("model.safetensors");
        let weights = read_aligned(&weights)
            .map_err(|e| load_err(weights.display().to_string(), e.to_string()))?;
        Self::from_parts(
            &read("config.json")?,
            &vocab,
            weights,
            &dir.display().to_string(),
        )
    }

    /// The model compiled into the binary, if it was built with one.
    pub fn embedded() -> Option<Result<Classifier, ModelError>> {
        embedded::parts().map(|(c, v, w)| {
            Self::from_parts(
                c,
                v,
                bytes::Bytes::from_static(w),
                "(embedded models/router)",
            )
        })
    }

    /// True for static embeddings (microseconds per prompt); false with an encoder backbone
    /// (milliseconds), which callers must keep off async runtimes. Says nothing of the domain
    /// check's model: see [`Self::is_static_with_check`].
    pub fn is_static(&self) -> bool {
        self.encoder.is_none()
    }

    /// True when the domain check's model, if any, is static too: then every classification
    /// takes microseconds.
    pub fn is_static_with_check(&self) -> bool {
        self.is_static()
            && self
                .domain_check
                .as_ref()
                .is_none_or(|c| c.model.is_static())
    }

    /// The encoder backbone, if any.
    pub fn encoder(&self) -> Option<&encoder::Encoder> {
        self.encoder.as_ref()
    }

    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// Token ids the model reads: the head and tail of a long prompt.
    pub fn tokens(&self, text: &str) -> Vec<u32> {
        select_tokens(
            &self.tokenizer,
            text,
            self.config.head_tokens,
            self.config.tail_tokens,
        )
    }

    /// The feature vector of a text (what the heads read).
    pub fn features(&self, text: &str) -> (Vec<f32>, usize) {
        let ids = self.tokens(text);
        (self.features_of_ids(&ids, text), ids.len())
    }

    pub fn features_of_ids(&self, ids: &[u32], text: &str) -> Vec<f32> {
        self.features_and_bag(ids, text).0
    }

    /// The idf of the prompt's TF-IDF bag of tokens, which the complexity lexicon and the bags
    /// read (empty for a model with neither).
    fn token_idf(&self) -> &[f32] {
        match &self.complexity_lexicon {
            Some(lexicon) => &lexicon.idf,
            None => &self.bag_idf,
        }
    }

    /// [`Classifier::features_of_ids`], and the prompt's TF-IDF bag of tokens
    /// ([`ComplexityLexicon::bag`]), which the bags read too: computed once for both.
    fn features_and_bag(&self, ids: &[u32], text: &str) -> (Vec<f32>, Vec<(u32, f32)>) {
        let mut f = self.pooled_features(ids, text);
        // One sort of the prompt's ids serves every lexicon and bag: the complexity lexicon and
        // the bags count repeats, the other lexicons read each token once.
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let mut distinct = sorted.clone();
        distinct.dedup();
        for lexicon in [&self.domain_lexicon, &self.intent_lexicon]
            .into_iter()
            .flatten()
        {
            lexicon.features_of_distinct(&distinct, &mut f);
        }
        let bag = ComplexityLexicon::bag_of_sorted(self.token_idf(), &sorted);
        if let Some(lexicon) = &self.complexity_lexicon {
            let mut surface = [0f32; EXTRA_FEATURES];
            surface.copy_from_slice(&f[..EXTRA_FEATURES]);
            lexicon.features_of_bag(ids, &bag, &surface, &mut f);
        }
        if let Some(topics) = &self.topic_prior {
            let scores = topics.scores(&f[EXTRA_FEATURES..EXTRA_FEATURES + self.config.dim]);
            f.extend(scores);
        }
        (f, bag)
    }

    /// The features before the lexicon's: the surface features and the pooled embedding.
    fn pooled_features(&self, ids: &[u32], text: &str) -> Vec<f32> {
        if let Some(enc) = &self.encoder {
            let mut f = match enc.embed(&[ids]) {
                Ok(mut v) => v.pop().unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %e, "encoder backbone failed; scoring a zero vector");
                    Vec::new()
                }
            };
            f.resize(self.config.dim, 0.0);
            let mut out = extra_features(text, ids.len()).to_vec();
            out.extend_from_slice(&f);
            return out;
        }
        self.table
            .features(ids, self.config.edges(), extra_features(text, ids.len()))
    }

    /// What the complexity head reads, from a prompt's features and its intent probabilities.
    pub fn complexity_input(
        &self,
        features: &[f32],
        intent: impl Iterator<Item = f32>,
    ) -> Vec<f32> {
        let mut cf = self.config.complexity_view(features);
        if self.config.complexity_intent {
            cf.extend(intent);
        }
        cf
    }

    /// The mean of the heads' probabilities for the features `f`, by label. The scratch's split
    /// of `f` is made here if it is missing or for heads of another count of inputs: the
    /// members of an ensemble, the intent and the domain heads read the same one.
    fn head_scores(
        f: &[f32],
        heads: &[Head],
        labels: &[String],
        scratch: &mut Scratch,
    ) -> Vec<(String, f32)> {
        let mut mean = vec![0.0; labels.len()];
        let Scratch { hidden, out, split } = scratch;
        for head in heads {
            if split.as_ref().is_some_and(|(n, _)| *n != head.inputs) {
                *split = None;
            }
            let x = &split.get_or_insert_with(|| (head.inputs, head.halves(f))).1;
            head.forward_halves(x, hidden, out);
            softmax(out);
            for (m, p) in mean.iter_mut().zip(out.iter()) {
                *m += p;
            }
        }
        let n = heads.len().max(1) as f32;
        labels
            .iter()
            .cloned()
            .zip(mean.iter().map(|m| m / n))
            .collect()
    }

    /// Each complexity lexicon family's score for `text` alone, as the complexity head reads it
    /// (empty for a model without a lexicon): for analysis, e.g. how one family ranks prompts
    /// next to the complexity score that weighs them all. Not on the serving path.
    pub fn complexity_lexicon_scores(&self, text: &str) -> Vec<(String, f32)> {
        let (f, _) = self.features(text);
        let scores = self.config.lexicon_scores(&f);
        self.config
            .complexity_lexicon
            .iter()
            .cloned()
            .zip(scores.iter().copied())
            .collect()
    }

    /// The domain probabilities alone (every domain equally likely for a text with no tokens,
    /// as [`Classifier::classify`] gives them).
    pub fn domain_scores(&self, text: &str) -> Vec<(String, f32)> {
        let ids = self.tokens(text);
        if ids.is_empty() {
            return uniform(&self.config.domain_labels);
        }
        let (f, bag) = self.features_and_bag(&ids, text);
        self.domain_of(&f, &bag, &mut Scratch::default())
    }

    /// The reported domain of a prompt's features: the domain heads' mean, pooled with the
    /// domain bag, moved by the model's domain offsets.
    fn domain_of(
        &self,
        f: &[f32],
        bag: &[(u32, f32)],
        scratch: &mut Scratch,
    ) -> Vec<(String, f32)> {
        let heads = Self::head_scores(f, &self.domain, &self.config.domain_labels, scratch);
        let w = bag_weight(
            self.config.domain_bag,
            bag.len(),
            self.config.domain_bag_tokens,
        );
        let pooled = pool_bag(heads, self.domain_bag.as_ref(), w, bag);
        offset_logs(pooled, &self.domain_offsets)
    }

    /// The scores of a prompt, its domain and intent checked by the second model when they
    /// need it.
    pub fn classify(&self, text: &str) -> Scores {
        let mut s = self.classify_unchecked(text);
        if self.needs_check(&s) {
            self.check(&ChatText::prompt(text), ChatReading::Whole, &mut s);
        }
        s
    }

    /// The scores of this model alone, without the domain check.
    pub fn classify_unchecked(&self, text: &str) -> Scores {
        self.read(text, true)
    }

    /// The scores of `text`; without `domain`, the domain heads are not run and the domain is
    /// left empty (a chat's last turn alone, whose domain [`pool_readings`] does not read).
    fn read(&self, text: &str, domain: bool) -> Scores {
        let ids = self.tokens(text);
        if ids.is_empty() {
            return self.no_text(domain);
        }
        let (f, bag) = self.features_and_bag(&ids, text);
        let mut scratch = Scratch {
            hidden: Vec::with_capacity(self.config.hidden),
            out: Vec::with_capacity(16),
            split: None,
        };
        let head_intent =
            Self::head_scores(&f, &self.intent, &self.config.intent_labels, &mut scratch);
        let domain_scores = if domain {
            self.domain_of(&f, &bag, &mut scratch)
        } else {
            Vec::new()
        };
        let cf = self.complexity_input(&f, head_intent.iter().map(|(_, p)| *p));
        let Scratch { hidden, out, split } = &mut scratch;
        self.complexity.forward(&cf, hidden, out);
        let mut z = self.config.calibrated_logit(out[0]);
        let scores = self.config.lexicon_scores(&f);
        for (e, spec) in self.experts.iter().zip(&self.config.complexity_experts) {
            let score = scores.get(e.family).copied().unwrap_or(0.0);
            let gate = e.intents.iter().map(|&i| head_intent[i].1).sum();
            z += spec.evidence(score, gate);
        }
        let complexity_pairs = self.pair_scores(&ids, &bag, z);
        let complexity = match self.complexity_pair {
            Some(j) => complexity_pairs.get(j).map_or(0.0, |(_, p)| *p),
            None => 1.0 / (1.0 + (-z).exp()),
        };
        let mut intent_scores = pool_bag(
            head_intent,
            self.intent_bag.as_ref(),
            self.config.intent_bag,
            &bag,
        );
        if let Some(window) = &self.window {
            let inputs = &f[..self.config.inputs().min(f.len())];
            let split = split.as_ref().filter(|(n, _)| *n == inputs.len());
            intent_scores = log_pool(
                intent_scores,
                &window.probs(inputs, split.map(|(_, x)| x), &ids),
                self.config.intent_window,
            );
        }
        Scores {
            intent: best_label(&intent_scores),
            domain: best_label(&domain_scores),
            intent_scores,
            domain_scores,
            complexity,
            complexity_pairs,
            complexity_pair: self.complexity_pair_name(),
            tokens: ids.len(),
            unchecked_domain: None,
            unchecked_intent: None,
        }
    }

    /// The scores of a text with no tokens (empty, only whitespace, or an image-only message):
    /// no evidence for any label. Every label is equally likely; the reported intent is the
    /// first label (`chat` in the default model) and the domain `general`, complexity 0. The
    /// heads' output for an all-zero input is their training mix's bias (legal at 0.98 for the
    /// default model), not a reading of the prompt. `tokens` is 0, which the policy and the
    /// domain check read as "nothing to classify".
    fn no_text(&self, domain: bool) -> Scores {
        let labels = &self.config.domain_labels;
        let (domain, domain_scores) = if domain {
            let general = labels.iter().find(|l| *l == GENERAL).or(labels.first());
            (general.cloned().unwrap_or_default(), uniform(labels))
        } else {
            (String::new(), Vec::new())
        };
        let intents = &self.config.intent_labels;
        Scores {
            intent: intents.first().cloned().unwrap_or_default(),
            intent_scores: uniform(intents),
            domain,
            domain_scores,
            complexity: 0.0,
            complexity_pairs: self
                .config
                .complexity_pairs
                .iter()
                .map(|p| (p.name.clone(), 0.0))
                .collect(),
            complexity_pair: self.complexity_pair_name(),
            tokens: 0,
            unchecked_domain: None,
            unchecked_intent: None,
        }
    }

    /// The scores of a chat, its domain and intent checked by the second model when they need
    /// it (that model reads the chat as this one does).
    pub fn classify_chat(&self, chat: &ChatText) -> Scores {
        self.classify_chat_as(chat, ChatReading::Both)
    }

    /// [`Classifier::classify_chat`], with the chat read as `reading` says: the router's way
    /// (both readings pooled), or one of the two alone, to compare them.
    pub fn classify_chat_as(&self, chat: &ChatText, reading: ChatReading) -> Scores {
        let mut s = match reading {
            ChatReading::Both => self.classify_chat_unchecked(chat),
            ChatReading::Whole => self.classify_unchecked(&chat.text),
            ChatReading::LastTurn => self.classify_unchecked(chat.last_turn()),
        };
        if self.needs_check(&s) {
            self.check(chat, reading, &mut s);
        }
        s
    }

    /// The scores of a chat, this model alone. A chat with earlier turns is read twice: whole
    /// (context and last turn), which knows what "that" is and that a question about a deposit
    /// is legal, and its last user turn alone, which knows what is asked now ("now write it as
    /// a poem" after a sum). Intent and complexity pool the two readings with equal weight:
    /// probabilities by their normalised geometric mean, complexities by the mean of their
    /// logits. The domain is the whole reading's: the last turn alone seldom names a domain the
    /// whole chat does not, and often loses the one its context gives. A chat without context
    /// is read once, as a prompt.
    pub fn classify_chat_unchecked(&self, chat: &ChatText) -> Scores {
        let whole = self.classify_unchecked(&chat.text);
        if !chat.has_context() {
            return whole;
        }
        let last = self.read(chat.last_turn(), false);
        if last.tokens == 0 {
            // An empty last turn (or an image alone) says nothing; the chat before it does.
            return whole;
        }
        pool_readings(whole, &last)
    }

    /// The name of the recorded pair whose score is the reported complexity, if any.
    fn complexity_pair_name(&self) -> Option<String> {
        self.complexity_pair
            .map(|j| self.config.complexity_pairs[j].name.clone())
    }

    /// Each recorded pair's complexity for a prompt's ids and TF-IDF bag, and the head's logit
    /// `z` (experts included).
    fn pair_scores(&self, ids: &[u32], bag: &[(u32, f32)], z: f32) -> Vec<(String, f32)> {
        let Some(lexicon) = &self.pair_lexicon else {
            return Vec::new();
        };
        let mut raw = Vec::with_capacity(lexicon.families);
        lexicon.features_of_bag(ids, bag, &[], &mut raw);
        self.config
            .complexity_pairs
            .iter()
            .zip(raw)
            .map(|(p, s)| (p.name.clone(), p.complexity(z, s)))
            .collect()
    }

    /// Whether the domain check should re-score these scores (this model's, unchecked): it is
    /// configured, and the probability of `general` is below its threshold.
    pub fn needs_domain_check(&self, s: &Scores) -> bool {
        self.domain_check.as_ref().is_some_and(|check| {
            let general = probability_of(&s.domain_scores, GENERAL);
            general < check.below && s.unchecked_domain.is_none() && s.tokens > 0
        })
    }

    /// Whether the second model should re-read the intent of these scores (this model's,
    /// unchecked): an intent check is configured, and the intent's probability is below its
    /// threshold.
    pub fn needs_intent_check(&self, s: &Scores) -> bool {
        self.domain_check.as_ref().is_some_and(|check| {
            check.intent_below.is_some_and(|below| {
                s.intent_confidence() < below && s.unchecked_intent.is_none() && s.tokens > 0
            })
        })
    }

    /// Whether the second model should run for these scores: for the domain, the intent, or
    /// both.
    pub fn needs_check(&self, s: &Scores) -> bool {
        self.needs_domain_check(s) || self.needs_intent_check(s)
    }

    /// Runs the second model (when there is one) on `chat`, read as `reading` says, as this
    /// model read it for `s`. Where the domain needs a check, `s` takes the second model's
    /// domain and keeps the first in `unchecked_domain`; where the intent does, `s` takes the
    /// two models' pooled intent and keeps the first in `unchecked_intent`. Complexity stays
    /// this model's. Milliseconds with an encoder: keep it off async runtimes.
    pub fn check(&self, chat: &ChatText, reading: ChatReading, s: &mut Scores) {
        let Some(check) = &self.domain_check else {
            return;
        };
        let domain = self.needs_domain_check(s);
        if self.needs_intent_check(s) {
            let second = match reading {
                ChatReading::Both => check.model.classify_chat_unchecked(chat),
                ChatReading::Whole => check.model.classify_unchecked(&chat.text),
                ChatReading::LastTurn => check.model.classify_unchecked(chat.last_turn()),
            };
            let probs: Vec<f32> = second.intent_scores.iter().map(|(_, p)| *p).collect();
            let first = std::mem::take(&mut s.intent_scores);
            s.intent_scores = log_pool(first, &probs, INTENT_CHECK_WEIGHT);
            let first = std::mem::replace(&mut s.intent, best_label(&s.intent_scores));
            s.unchecked_intent = Some(first);
            if domain {
                // The second model's domain of a chat is its whole reading's, as this one's is.
                Self::take_domain(s, second.domain_scores);
            }
        } else if domain {
            // The second model reads what this one read for the domain.
            let text = match reading {
                ChatReading::LastTurn => chat.last_turn(),
                ChatReading::Both | ChatReading::Whole => &chat.text,
            };
            Self::take_domain(s, check.model.domain_scores(text));
        }
    }

    /// `s` with the second model's domain probabilities `scores`, the first model's domain kept
    /// in `unchecked_domain`.
    fn take_domain(s: &mut Scores, scores: Vec<(String, f32)>) {
        s.domain_scores = scores;
        let first = std::mem::replace(&mut s.domain, best_label(&s.domain_scores));
        s.unchecked_domain = Some(first);
    }
}

/// The probabilities a model reports: its heads' mean `heads`, pooled with a bag's
/// probabilities for the prompt's TF-IDF bag of tokens `tfidf` when it has one, with the bag's
/// weight `w`.
/// The pool is logarithmic, p ∝ heads^(1 − w) · bag^w: where the two agree the answer is surer
/// than either, and a label one of them all but rules out stays unlikely.
fn pool_bag(
    heads: Vec<(String, f32)>,
    bag: Option<&bag::BagModel>,
    w: f32,
    tfidf: &[(u32, f32)],
) -> Vec<(String, f32)> {
    match bag {
        None => heads,
        Some(bag) => log_pool(heads, &bag.probs(tfidf), w),
    }
}

/// A bag's weight `w` for a prompt whose bag holds `tokens` distinct tokens: `w` from `full`
/// tokens on, that share of it below (`full` 0: always `w`).
fn bag_weight(w: f32, tokens: usize, full: usize) -> f32 {
    if full == 0 {
        w
    } else {
        w * tokens.min(full) as f32 / full as f32
    }
}

/// Domain probabilities reported without offsets, moved by `offsets` (one per label, in the
/// labels' order) as a model with those offsets moves them, and the domain it then reports: what
/// `eval domain-offsets` tries, by the model's own code.
pub fn offset_domain(p: &[(String, f32)], offsets: &[f32]) -> (String, Vec<(String, f32)>) {
    let by_index: Vec<(usize, f32)> = offsets
        .iter()
        .enumerate()
        .filter(|(_, o)| **o != 0.0)
        .map(|(i, o)| (i, *o))
        .collect();
    let moved = offset_logs(p.to_vec(), &by_index);
    (best_label(&moved), moved)
}

/// `p` with `offset` added to the log-probability of each `(label index, offset)`,
/// renormalised; `p` itself when there are none.
fn offset_logs(p: Vec<(String, f32)>, offsets: &[(usize, f32)]) -> Vec<(String, f32)> {
    if offsets.is_empty() {
        return p;
    }
    let (labels, mut logs): (Vec<String>, Vec<f32>) = p
        .into_iter()
        .map(|(label, p)| (label, p.max(MIN_PROB).ln()))
        .unzip();
    for &(i, offset) in offsets {
        logs[i] += offset;
    }
    softmax(&mut logs);
    labels.into_iter().zip(logs).collect()
}

/// The logarithmic pool of two distributions over the same labels, p ∝ a^(1 − w) · b^w.
fn log_pool(a: Vec<(String, f32)>, b: &[f32], w: f32) -> Vec<(String, f32)> {
    let log = |x: f32| x.max(MIN_PROB).ln();
    let (labels, mut pooled): (Vec<String>, Vec<f32>) = a
        .into_iter()
        .zip(b)
        .map(|((label, p), &q)| (label, (1.0 - w) * log(p) + w * log(q)))
        .unzip();
    softmax(&mut pooled);
    labels.into_iter().zip(pooled).collect()
}

/// The weight of a chat's last user turn read alone against the whole chat read together, for
/// intent and complexity ([`Classifier::classify_chat_unchecked`]); chosen on
/// `eval/prompts/conversations-dev.jsonl`.
const LAST_TURN_WEIGHT: f32 = 0.5;

/// The scores of a chat read whole, pooled with those of its last turn read alone; the domain
/// is the whole reading's (chosen on the three conversation sets before
/// `conversations-test-3.jsonl`).
fn pool_readings(whole: Scores, last: &Scores) -> Scores {
    let w = LAST_TURN_WEIGHT;
    let probs = |v: &[(String, f32)]| v.iter().map(|(_, p)| *p).collect::<Vec<_>>();
    let logit = |p: f32| {
        let p = p.clamp(MIN_PROB, 1.0 - f32::EPSILON);
        (p / (1.0 - p)).ln()
    };
    let mean = |a: f32, b: f32| 1.0 / (1.0 + (-((1.0 - w) * logit(a) + w * logit(b))).exp());
    let intent_scores = log_pool(whole.intent_scores, &probs(&last.intent_scores), w);
    Scores {
        intent: best_label(&intent_scores),
        domain: whole.domain,
        intent_scores,
        domain_scores: whole.domain_scores,
        complexity: mean(whole.complexity, last.complexity),
        complexity_pairs: whole
            .complexity_pairs
            .into_iter()
            .zip(&last.complexity_pairs)
            .map(|((name, a), (_, b))| (name, mean(a, *b)))
            .collect(),
        complexity_pair: whole.complexity_pair,
        tokens: whole.tokens,
        unchecked_domain: None,
        unchecked_intent: None,
    }
}

/// The probability of `label` in `v` (0 when it is not there).
pub fn probability_of(v: &[(String, f32)], label: &str) -> f32 {
    v.iter().find(|(l, _)| l == label).map_or(0.0, |(_, p)| *p)
}

/// Every label equally likely.
fn uniform(labels: &[String]) -> Vec<(String, f32)> {
    let p = 1.0 / labels.len().max(1) as f32;
    labels.iter().map(|l| (l.clone(), p)).collect()
}

/// The label with the highest probability.
fn best_label(v: &[(String, f32)]) -> String {
    v.iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(l, _)| l.clone())
        .unwrap_or_default()
}

/// Shared, loaded once.
pub type SharedClassifier = Arc<Classifier>;

mod embedded {
    /// Bytes on an 8-byte boundary, as safetensors lays its tensors out from: the heads' bf16
    /// first layers are then read in place as 32-bit words ([`super::Packed::InPlace`]).
    #[cfg(switchyard_embedded_model)]
    #[repr(C, align(8))]
    struct Aligned<B: ?Sized>(B);

    #[cfg(switchyard_embedded_model)]
    static WEIGHTS: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/router/model.safetensors"
    )));

    #[cfg(switchyard_embedded_model)]
    pub fn parts() -> Option<(&'static [u8], &'static str, &'static [u8])> {
        Some((
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/router/config.json"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/router/vocab.txt"
            )),
            &WEIGHTS.0,
        ))
    }

    #[cfg(not(switchyard_embedded_model))]
    pub fn parts() -> Option<(&'static [u8], &'static str, &'static [u8])> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model() -> &'static Classifier {
        static MODEL: std::sync::OnceLock<Classifier> = std::sync::OnceLock::new();
        MODEL.get_or_init(|| {
            Classifier::load(Path::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/models/router"
            )))
            .unwrap()
        })
    }

    /// Every dequantised value of a 4-wide table is within half a step of the original.
    fn assert_within_half_a_step(values: &[f32], t: &StaticTable) {
        for (row, chunk) in values.chunks(4).enumerate() {
            let stored = t.rows.row(row).unwrap();
            for (k, v) in chunk.iter().enumerate() {
                let got = f32::from(stored[k]) * t.scales[row];
                assert!(
                    (got - v).abs() <= t.scales[row] / 2.0 + 1e-6,
                    "{v} vs {got}"
                );
            }
        }
    }

    #[test]
    fn quantised_rows_stay_within_half_a_step() {
        let values = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 3.0, -0.001];
        let t = StaticTable::quantise(4, &values, vec![1.0, 1.0], 8);
        assert_within_half_a_step(&values, &t);
        // An all-zero row pools to nothing rather than dividing by zero.
        assert_eq!(
            t.features(&[1], Edges::default(), [0.0; EXTRA_FEATURES])
                .len(),
            EXTRA_FEATURES + 4
        );
    }

    /// Each edge span adds a pool of the first and one of the last tokens, narrow first; a
    /// prompt shorter than a span pools whole there.
    #[test]
    fn each_edge_span_pools_the_first_and_the_last_tokens() {
        // Token t's row is the unit vector on axis t (tokens 0 to 3, dim 4).
        let mut values = vec![0.0f32; 16];
        for t in 0..4 {
            values[t * 4 + t] = 1.0;
        }
        let t = StaticTable::quantise(4, &values, vec![1.0; 4], 8);
        let edges = Edges { narrow: 1, wide: 3 };
        let f = t.features(&[0, 1, 2, 3], edges, [0.0; EXTRA_FEATURES]);
        assert_eq!(f.len(), EXTRA_FEATURES + 5 * 4);
        let pool = |k: usize| &f[EXTRA_FEATURES + 4 * k..EXTRA_FEATURES + 4 * (k + 1)];
        let third = 1.0 / 3f32.sqrt();
        assert_eq!(pool(1), &[1.0, 0.0, 0.0, 0.0]);
        assert_eq!(pool(2), &[0.0, 0.0, 0.0, 1.0]);
        for (got, want) in pool(3).iter().zip([third, third, third, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{:?}", pool(3));
        }
        for (got, want) in pool(4).iter().zip([0.0, third, third, third]) {
            assert!((got - want).abs() < 1e-6, "{:?}", pool(4));
        }
        // Two tokens, shorter than the wide span: both wide pools are the whole prompt's mean.
        let f = t.features(&[0, 2], edges, [0.0; EXTRA_FEATURES]);
        let half = 1.0 / 2f32.sqrt();
        let whole = [half, 0.0, half, 0.0];
        for k in [3, 4] {
            let p = &f[EXTRA_FEATURES + 4 * k..EXTRA_FEATURES + 4 * (k + 1)];
            for (got, want) in p.iter().zip(whole) {
                assert!((got - want).abs() < 1e-6, "{p:?}");
            }
        }
    }

    #[test]
    fn four_bit_rows_round_trip_through_the_packed_layout() {
        let values = [0.5, -1.0, 0.25, 0.0, 0.7, -0.7, 3.0, -0.001];
        let t = StaticTable::quantise(4, &values, vec![1.0, 1.0], 4);
        assert_eq!(t.rows.len(), 2);
        for r in 0..2 {
            let row = t.rows.row(r).unwrap();
            assert!(row.iter().all(|v| (-7..=7).contains(v)), "{row:?}");
        }
        assert_within_half_a_step(&values, &t);
        assert_eq!(t.rows.file_bytes().len(), values.len() / 2);
        // Every 4-bit value, negative ones included, survives packing in either nibble, and
        // reads the same from a file's bytes.
        let all: Vec<i8> = (-8..=7).chain((-8..=7).rev()).collect();
        let rows = QuantRows::new(2, &all, 4);
        let read = QuantRows::from_file(2, 4, bytes::Bytes::copy_from_slice(rows.file_bytes()));
        assert_eq!(read, rows);
        let back: Vec<i8> = (0..rows.len()).flat_map(|r| read.row(r).unwrap()).collect();
        assert_eq!(back, all);
        assert_eq!(read.row(rows.len()), None);
    }

    /// f16 values read in place give what the same values copied out as f32 do, and nothing
    /// past the end.
    #[test]
    fn f16_values_read_in_place_match_f32_ones() {
        let v = [1.5f32, -0.25, 0.0, 65504.0, -3.0e-5];
        let bytes: Vec<u8> = v
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        let in_place = Values::F16(bytes::Bytes::from(bytes));
        let copied = Values::from(
            v.iter()
                .map(|x| half::f16::from_f32(*x).to_f32())
                .collect::<Vec<_>>(),
        );
        assert_eq!((in_place.len(), copied.len()), (5, 5));
        assert_eq!(in_place.to_vec(), copied.to_vec());
        assert_eq!(in_place.get(1), Some(-0.25));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let row = in_place.row_in(2, 3, &mut a).unwrap().to_vec();
        assert_eq!(row, copied.row_in(2, 3, &mut b).unwrap());
        assert_eq!(row, copied.to_vec()[2..]);
        assert!(in_place.row_in(3, 3, &mut a).is_none() && copied.row_in(3, 3, &mut b).is_none());
        assert_eq!(in_place.get(5), None);
    }

    /// The inlined conversion gives `half`'s f32 for every f16 bit pattern (NaNs as NaNs).
    #[test]
    fn f16_bits_convert_exactly() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            let got = f16_to_f32(h);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{h:#06x}: {got} vs {want}"
            );
        }
    }

    /// The default model keeps its f16 tables and its token rows in the file's bytes rather
    /// than in copies.
    #[test]
    fn a_loaded_model_reads_its_tables_in_place() {
        let m = model();
        let f16 = |v: &Values| matches!(v, Values::F16(_));
        for l in [&m.intent_lexicon, &m.domain_lexicon] {
            assert!(f16(&l.as_ref().unwrap().rows));
        }
        for b in [&m.intent_bag, &m.domain_bag] {
            assert!(f16(&b.as_ref().unwrap().rows));
        }
        let c = m.complexity_lexicon.as_ref().unwrap();
        assert!(f16(&c.rows) && f16(&c.wide.as_ref().unwrap().rows));
        assert!(f16(&m.pair_lexicon.as_ref().unwrap().rows));
        let bytes = default_model_file("model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            m.table.rows.file_bytes(),
            st.tensor("embeddings").unwrap().data()
        );
    }

    /// Adding a row in place, a block of packed bytes at a time, gives what adding its
    /// unpacked values does, at 4 and at 8 bits, and adds nothing for a row the table lacks.
    #[test]
    fn a_rows_scaled_sum_is_its_values_sum() {
        // 300 columns: 150 packed bytes, more than two blocks.
        let dim = 300;
        let values: Vec<i8> = (0..2 * dim).map(|i| ((i * 7) % 15) as i8 - 7).collect();
        for bits in [4, 8] {
            let rows = QuantRows::new(dim, &values, bits);
            assert_eq!(rows.len(), 2);
            let mut got = vec![1.0f32; dim];
            assert!(rows.add_scaled(1, 0.5, &mut got));
            let want: Vec<f32> = values[dim..]
                .iter()
                .map(|v| 1.0 + 0.5 * f32::from(*v))
                .collect();
            assert_eq!(got, want, "{bits} bits");
            assert!(!rows.add_scaled(2, 0.5, &mut got));
            assert_eq!(got, want);
        }
    }

    /// A file of the default model's folder.
    fn default_model_file(name: &str) -> Vec<u8> {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/router"));
        std::fs::read(dir.join(name)).unwrap()
    }

    /// Every head's first layer in `m`.
    fn first_layers(m: &Classifier) -> Vec<&Packed> {
        let heads = m.intent.iter().chain(&m.domain).chain([&m.complexity]);
        heads
            .chain(m.window.as_ref().map(|w| &w.head))
            .map(|h| &h.w1)
            .collect()
    }

    /// The embedded model reads its heads' bf16 first layers in the binary's own bytes, and a
    /// model folder in its file's; the same file one byte off a word's boundary packs them into
    /// copies, and both give the same scores.
    #[test]
    fn the_embedded_heads_read_their_first_layers_in_place() {
        let embedded = Classifier::embedded()
            .expect("the build embeds models/router")
            .unwrap();
        let layers = first_layers(&embedded);
        assert_eq!(layers.len(), 8);
        assert!(layers.iter().all(|w| matches!(w, Packed::InPlace(_))));
        // A model folder's file is read onto a word's boundary too.
        assert!(first_layers(model())
            .iter()
            .all(|w| matches!(w, Packed::InPlace(_))));
        let file = default_model_file("model.safetensors");
        let shifted = bytes::Bytes::from([&[0u8][..], &file].concat()).slice(1..);
        let copied = Classifier::from_parts(
            &default_model_file("config.json"),
            &String::from_utf8(default_model_file("vocab.txt")).unwrap(),
            shifted,
            "shifted",
        )
        .unwrap();
        assert!(first_layers(&copied)
            .iter()
            .all(|w| matches!(w, Packed::Words(_))));
        for (a, b) in layers.iter().zip(first_layers(&copied)) {
            assert_eq!(a.words(), b.words());
        }
        for text in [
            "Is a verbal contract binding?",
            "Summarise this: the meeting moved.",
        ] {
            let (a, b) = (embedded.classify(text), copied.classify(text));
            assert_eq!(
                (a.intent_scores, a.domain_scores, a.complexity),
                (b.intent_scores, b.domain_scores, b.complexity)
            );
        }
    }

    /// The default model's weights and vocabulary loaded with `config`.
    fn load_with(config: &serde_json::Value) -> Result<Classifier, String> {
        load_parts(config, &default_model_file("model.safetensors"))
    }

    /// The error of loading the default model's weights under an altered `config.json`.
    fn load_error(config: &serde_json::Value) -> String {
        match load_with(config) {
            Ok(_) => panic!("the model loaded with {config}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_short_prompts_domain_bag_weighs_its_share_of_the_tokens() {
        let m = model();
        let with = |bag: f32, tokens: usize| {
            let mut config = serde_json::to_value(&m.config).unwrap();
            config["domain_bag"] = bag.into();
            config["domain_bag_tokens"] = tokens.into();
            load_with(&config).unwrap()
        };
        let (full, ramp) = (with(0.5, 0), with(0.5, 16));
        let bag_len = |text: &str| m.features_and_bag(&m.tokens(text), text).1.len();
        let short = "yes";
        assert_eq!(bag_len(short), 1);
        // One token of the sixteen: a sixteenth of the weight.
        assert_eq!(
            ramp.domain_scores(short),
            with(0.5 / 16.0, 0).domain_scores(short)
        );
        assert_ne!(ramp.domain_scores(short), full.domain_scores(short));
        let long = "My landlord kept the whole deposit after I moved out and says the carpet was \
                    ruined, but it was already worn when I arrived; can he do that?";
        assert!(bag_len(long) >= 16);
        assert_eq!(ramp.domain_scores(long), full.domain_scores(long));
        assert_eq!(bag_weight(0.5, 4, 16), 0.125);
        assert_eq!(bag_weight(0.5, 40, 16), 0.5);
        assert_eq!(bag_weight(0.5, 1, 0), 0.5);
    }

    #[test]
    fn a_four_bit_table_with_the_wrong_shape_is_refused() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["embedding_bits"] = 3.into();
        let err = load_error(&config);
        assert!(err.contains("embedding_bits 3"), "{err}");
    }

    #[test]
    fn an_ensemble_needs_every_member_and_averages_them() {
        let m = model();
        assert!(m.config.ensemble > 1, "the default model averages heads");
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["ensemble"] = (m.config.ensemble + 1).into();
        let err = load_error(&config);
        let missing = format!("intent.{}", m.config.ensemble);
        assert!(err.contains(&missing), "{err}");
        config["ensemble"] = 0.into();
        assert!(load_error(&config).contains("ensemble"));
        // Without the domain bag and the offsets, the reported probabilities are the mean of
        // the members' softmaxes.
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["domain_bag"] = 0.0.into();
        config["domain_offsets"] = serde_json::json!({});
        let heads_only = load_with(&config).unwrap();
        let text = "Is it legal to sublet my flat without asking the landlord?";
        let (f, _) = m.features(text);
        let (mut hidden, mut out) = (Vec::new(), Vec::new());
        let mut mean = vec![0f32; m.config.domain_labels.len()];
        for head in &m.domain {
            head.forward(&f, &mut hidden, &mut out);
            softmax(&mut out);
            for (a, p) in mean.iter_mut().zip(&out) {
                *a += p / m.domain.len() as f32;
            }
        }
        let got: Vec<f32> = heads_only
            .classify(text)
            .domain_scores
            .iter()
            .map(|x| x.1)
            .collect();
        assert!(
            got.iter().zip(&mean).all(|(a, b)| (a - b).abs() < 1e-6),
            "{got:?} against {mean:?}"
        );
    }

    #[test]
    fn the_lexicon_reads_each_distinct_token_once() {
        let lex = Lexicon {
            labels: 2,
            rows: vec![1.0, -1.0, -3.0, 3.0, 0.5, -0.5].into(),
        };
        let mut f = vec![9.0];
        // Token 1 twice and an id past the table: the softmax of rows 0 + 1, their max.
        lex.features_into(&[0, 1, 1, 7], &mut f);
        let e = (-4f32).exp();
        let want = [9.0, e / (1.0 + e), 1.0 / (1.0 + e), 1.0, 3.0];
        assert!(
            f.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{f:?}"
        );
        let mut empty = Vec::new();
        lex.features_into(&[], &mut empty);
        assert_eq!(empty, vec![0.0; 4]);
    }

    #[test]
    fn a_lexicon_of_the_wrong_shape_is_refused() {
        let m = model();
        assert!(m.config.domain_lexicon, "the default model has a lexicon");
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["domain_labels"] = serde_json::json!(["general", "legal", "medical"]);
        let err = load_error(&config);
        assert!(err.contains("domain_lexicon shape"), "{err}");
        // So is an intent lexicon that does not fit the intent labels.
        assert!(
            m.config.intent_lexicon,
            "the default model has an intent lexicon"
        );
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["intent_labels"] = serde_json::json!(m.config.intent_labels[..11]);
        let err = load_error(&config);
        assert!(err.contains("intent_lexicon shape"), "{err}");
    }

    /// That `got` is the logarithmic pool of `a` and `b` with weight `w` on `b`, and sums to 1.
    fn assert_log_pooled(got: &[(String, f32)], a: &[(String, f32)], b: &[f32], w: f32) {
        let mut want: Vec<f32> = a
            .iter()
            .zip(b)
            .map(|((_, p), q)| (1.0 - w) * p.max(MIN_PROB).ln() + w * q.max(MIN_PROB).ln())
            .collect();
        softmax(&mut want);
        let probs: Vec<f32> = got.iter().map(|x| x.1).collect();
        assert!(
            probs.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
            "{probs:?} against {want:?}"
        );
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn the_intent_bag_is_pooled_with_the_heads_logarithmically() {
        let m = model();
        assert!(
            m.config.intent_bag > 0.0,
            "the default model has an intent bag"
        );
        let text = "pull out every date in this: 'the party is on 3 May, RSVP by 20 April'";
        let mut config = serde_json::to_value(&m.config).unwrap();
        // Weight 0: the heads alone (the bag is not even read); weight 1: the bag alone.
        config["intent_bag"] = 0.0.into();
        let heads = load_with(&config).unwrap().classify(text);
        config["intent_bag"] = 1.0.into();
        let bag = load_with(&config).unwrap().classify(text);
        let got = m.classify(text);
        let bag_probs: Vec<f32> = bag.intent_scores.iter().map(|x| x.1).collect();
        assert_log_pooled(
            &got.intent_scores,
            &heads.intent_scores,
            &bag_probs,
            m.config.intent_bag,
        );
        assert_ne!(heads.intent_scores, bag.intent_scores);
        // The complexity head and the experts read the heads' intent, whatever the bag says.
        assert_eq!(heads.complexity, got.complexity);
        assert_eq!(bag.complexity, got.complexity);
    }

    #[test]
    fn the_window_is_pooled_with_the_intent_after_the_bag() {
        let m = model();
        assert!(
            m.config.intent_window > 0.0,
            "the default model has a window"
        );
        let text = "below is the thread from our group chat about the trip. which of the three \
                    dates did most people actually say yes to? 'mike: 12th works' 'ana: not the \
                    12th, the 19th' 'lee: 19th or 26th'";
        let mut config = serde_json::to_value(&m.config).unwrap();
        // Weight 0: the heads and the bag alone; weight 1: the window alone.
        config["intent_window"] = 0.0.into();
        let before = load_with(&config).unwrap().classify(text);
        config["intent_window"] = 1.0.into();
        let alone = load_with(&config).unwrap().classify(text);
        let window = m.window.as_ref().unwrap();
        let (f, _) = m.features(text);
        let q = window.probs(&f[..m.config.inputs()], None, &m.tokens(text));
        let alone: Vec<f32> = alone.intent_scores.iter().map(|x| x.1).collect();
        assert!(
            alone.iter().zip(&q).all(|(a, b)| (a - b).abs() < 1e-5),
            "{alone:?} against {q:?}"
        );
        let got = m.classify(text);
        assert_log_pooled(
            &got.intent_scores,
            &before.intent_scores,
            &q,
            m.config.intent_window,
        );
        assert_ne!(before.intent_scores, got.intent_scores);
        // The window moves the reported intent only.
        assert_eq!(before.complexity, got.complexity);
        assert_eq!(before.domain_scores, got.domain_scores);
    }

    #[test]
    fn a_window_with_a_bad_weight_or_without_its_tables_is_refused() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["intent_window"] = 1.5.into();
        assert!(load_error(&config).contains("intent_window: 1.5"));
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["window_filters"] = 0.into();
        assert!(load_error(&config).contains("window_filters: 0"));
        config["window_filters"] = (m.config.window_filters + 1).into();
        let err = load_error(&config);
        assert!(err.contains("window_taps shape"), "{err}");
        let bytes = default_model_file("model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for missing in ["window_taps", "window_scales", "window.w1"] {
            let views: Vec<_> = st
                .tensors()
                .into_iter()
                .filter(|(name, _)| name != missing)
                .collect();
            let weights = safetensors::serialize(views, None).unwrap();
            let config = serde_json::to_value(&m.config).unwrap();
            let err = match load_parts(&config, &weights) {
                Ok(_) => panic!("a window without {missing} loaded"),
                Err(e) => e,
            };
            assert!(err.contains(missing), "{err}");
        }
    }

    #[test]
    fn a_bag_with_a_bad_weight_or_without_its_weights_is_refused() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["intent_bag"] = 1.5.into();
        let err = load_error(&config);
        assert!(err.contains("intent_bag: 1.5"), "{err}");
        // The default model pools a domain bag: its weights without them are refused, by name.
        assert_eq!(
            m.config.domain_bag, 0.5,
            "the default model has a domain bag"
        );
        let bytes = default_model_file("model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let views: Vec<_> = st
            .tensors()
            .into_iter()
            .filter(|(name, _)| !name.starts_with("domain_bag"))
            .collect();
        let weights = safetensors::serialize(views, None).unwrap();
        let config = serde_json::to_value(&m.config).unwrap();
        let err = match load_parts(&config, &weights) {
            Ok(_) => panic!("a domain bag without its weights loaded"),
            Err(e) => e,
        };
        assert!(err.contains("domain_bag"), "{err}");
        // A bag that does not fit the labels.
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["intent_labels"] = serde_json::json!(m.config.intent_labels[..11]);
        config["intent_lexicon"] = false.into();
        let err = load_error(&config);
        assert!(err.contains("intent_bag shape"), "{err}");
    }

    #[test]
    fn domain_offsets_move_the_odds_of_their_labels_only() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["domain_offsets"] = serde_json::json!({});
        let base = load_with(&config).unwrap();
        config["domain_offsets"] = serde_json::json!({"legal": 1.0, "finance": -0.5});
        let moved = load_with(&config).unwrap();
        let prompt = "Can my landlord keep the whole deposit because the oven was dirty?";
        let (before, after) = (base.domain_scores(prompt), moved.domain_scores(prompt));
        let p = |v: &[(String, f32)], label: &str| {
            v.iter().find(|(l, _)| l == label).map(|(_, p)| *p).unwrap()
        };
        let shift = |label: &str| {
            (p(&after, label) / p(&after, GENERAL)).ln()
                - (p(&before, label) / p(&before, GENERAL)).ln()
        };
        for (label, want) in [("legal", 1.0), ("finance", -0.5), ("medical", 0.0)] {
            assert!(
                (shift(label) - want).abs() < 1e-3,
                "{label}: {}",
                shift(label)
            );
        }
        let sum: f32 = after.iter().map(|(_, p)| p).sum();
        assert!((sum - 1.0).abs() < 1e-5, "{after:?}");
        // The full reading reports the same domain probabilities.
        assert_eq!(moved.classify(prompt).domain_scores, after);
        // An offset for a label the model does not have is refused, by name.
        config["domain_offsets"] = serde_json::json!({"tax": 1.0});
        let err = load_error(&config);
        assert!(err.contains("domain_offsets.tax"), "{err}");
    }

    #[test]
    fn domain_offsets_given_at_load_replace_the_models() {
        let m = model();
        let trained = serde_json::to_value(&m.config).unwrap();
        let owned = || load_with(&trained).unwrap();
        assert!(
            !m.config.domain_offsets.is_empty(),
            "the default model has offsets"
        );
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["domain_offsets"] = serde_json::json!({});
        let none = load_with(&config).unwrap();
        config["domain_offsets"] = serde_json::json!({"medical": 0.7});
        let medical = load_with(&config).unwrap();
        let prompt = "Is it normal for a toddler's fever to come back after three days?";
        let empty = std::collections::BTreeMap::new();
        let replaced = owned().with_domain_offsets(&empty).unwrap();
        assert_eq!(replaced.domain_scores(prompt), none.domain_scores(prompt));
        assert!(replaced.config.domain_offsets.is_empty());
        let given = [("medical".to_string(), 0.7)].into();
        let replaced = owned().with_domain_offsets(&given).unwrap();
        assert_eq!(
            replaced.domain_scores(prompt),
            medical.domain_scores(prompt)
        );
        assert_eq!(replaced.config.domain_offsets, given);
        // The domain check's model gets them too.
        let checked = owned()
            .with_domain_check(owned(), 0.9)
            .unwrap()
            .with_domain_offsets(&empty)
            .unwrap();
        let check = checked.domain_check().unwrap();
        assert!(check.model.config.domain_offsets.is_empty());
        assert_eq!(
            check.model.domain_scores(prompt),
            none.domain_scores(prompt)
        );
        // A label the model does not have, or an offset that is not a number, is named.
        let err = owned()
            .with_domain_offsets(&[("tax".to_string(), 1.0)].into())
            .unwrap_err();
        assert!(
            err.starts_with("tax: not one of the model's domains (general, legal"),
            "{err}"
        );
        let err = owned()
            .with_domain_offsets(&[("legal".to_string(), f32::NAN)].into())
            .unwrap_err();
        assert!(err.starts_with("legal: not a finite number"), "{err}");
    }

    #[test]
    fn the_domain_offset_flag_is_read_whatever_the_labels() {
        let strings = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // Any label: a model folder may have domains `train` does not write by default.
        let offsets = parse_domain_offsets(&strings(&["tax=1", " legal = -0.5"])).unwrap();
        assert_eq!(
            offsets,
            [("legal".into(), -0.5), ("tax".into(), 1.0)].into()
        );
        assert_eq!(offsets_text(&offsets), "legal=-0.5,tax=1");
        assert!(parse_domain_offsets(&strings(&["none"]))
            .unwrap()
            .is_empty());
        for (bad, says) in [
            (&["none", "legal=1"][..], "alone"),
            (&["legal"][..], "LABEL=OFFSET"),
            (&["legal=NaN"][..], "not a number"),
            (&["legal=1", "legal=2"][..], "twice"),
        ] {
            let err = parse_domain_offsets(&strings(bad)).unwrap_err().to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_complexity_lexicon_scores_a_tfidf_bag() {
        // Token 0 has no idf (too rare in training); token 2 appears twice.
        let lex = ComplexityLexicon {
            families: 2,
            idf: vec![0.0, 1.0, 2.0],
            rows: vec![5.0, 5.0, 0.5, -1.0, 0.25, 2.0].into(),
            wide: None,
        };
        let mut f = vec![9.0];
        lex.features_into(&[2, 0, 1, 2, 8], &[1.0; EXTRA_FEATURES], &mut f);
        // Weights: token 1 → 1, token 2 → (1 + ln 2) · 2; L2-normalised.
        let (a, b) = (1.0f32, (1.0 + 2f32.ln()) * 2.0);
        let n = (a * a + b * b).sqrt();
        let want = [9.0, (a * 0.5 + b * 0.25) / n, (b * 2.0 - a) / n];
        assert!(
            f.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-6),
            "{f:?} vs {want:?}"
        );
        let mut empty = Vec::new();
        lex.features_into(&[0], &[1.0; EXTRA_FEATURES], &mut empty);
        assert_eq!(empty, vec![0.0; 2]);
    }

    #[test]
    fn a_wide_complexity_lexicon_adds_token_pairs_and_surface_features() {
        let bits = 3;
        // Tokens 1 2 1 2: the pair (1, 2) twice and (2, 1) once.
        let (p12, p21) = (pair_bucket(1, 2, bits), pair_bucket(2, 1, bits));
        assert_ne!(p12, p21, "the test needs two buckets");
        assert!(![p12, p21].contains(&pair_bucket(1, 1, bits)));
        assert!(p12 < 8 && p21 < 8);
        let mut pair_idf = vec![0.0; 8];
        pair_idf[p12 as usize] = 1.0;
        pair_idf[p21 as usize] = 3.0;
        // Family 0 reads tokens only; family 1 weighs the pairs, the surface features and an
        // intercept.
        let mut pair_rows = vec![0.0; 16];
        pair_rows[p12 as usize * 2 + 1] = 2.0;
        pair_rows[p21 as usize * 2 + 1] = -1.0;
        let mut surface = vec![0.0; 2 * (EXTRA_FEATURES + 1)];
        surface[EXTRA_FEATURES + 1] = 0.5;
        surface[2 * (EXTRA_FEATURES + 1) - 1] = 0.25;
        let lex = ComplexityLexicon {
            families: 2,
            idf: vec![0.0, 1.0, 1.0],
            rows: vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0].into(),
            wide: Some(WideLexicon {
                bits,
                idf: pair_idf,
                rows: pair_rows.into(),
                surface,
            }),
        };
        let mut f = Vec::new();
        lex.features_into(&[1, 2, 1, 2], &[4.0, 0.0, 0.0, 0.0], &mut f);
        // Tokens: 1 and 2 twice each, equal weights, normalised: 2 / √2 for family 0 and
        // nothing for family 1. Pairs: (1 + ln 2) · 1 and 3, normalised.
        let (a, b) = (1.0 + 2f32.ln(), 3.0f32);
        let n = (a * a + b * b).sqrt();
        let want = [2.0 / 2f32.sqrt(), (2.0 * a - b) / n + 0.5 * 4.0 + 0.25];
        assert!(
            f.iter().zip(want).all(|(x, y)| (x - y).abs() < 1e-6),
            "{f:?} vs {want:?}"
        );
        // Pairs follow the order of the tokens, not their sorted order.
        let mut g = Vec::new();
        lex.features_into(&[2, 1, 1, 2], &[4.0, 0.0, 0.0, 0.0], &mut g);
        assert_ne!(f[1], g[1]);
        assert_eq!(f[0], g[0]);
    }

    #[test]
    fn the_complexity_head_reads_a_prefix_the_scores_and_the_intent() {
        let mut config = model().config.clone();
        config.complexity_dims = 2;
        config.complexity_lexicon = vec!["outcomes".into(), "levels".into()];
        let mut f: Vec<f32> = (0..config.inputs()).map(|i| i as f32).collect();
        f.extend([-1.0, -2.0]);
        let view = config.complexity_view(&f);
        assert_eq!(view, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0, -2.0]);
        config.complexity_intent = true;
        assert_eq!(
            config.complexity_inputs(),
            view.len() + config.intent_labels.len()
        );
        config.complexity_dims = 0;
        assert_eq!(config.complexity_view(&f), f);
    }

    #[test]
    fn the_topic_prior_averages_each_familys_prior_under_its_softmax() {
        let prior = TopicPrior {
            topics: 2,
            weight: vec![1.0, 0.0, 0.0, 1.0],
            bias: vec![0.0, 0.5],
            prior: vec![0.1, 0.2, 0.9, 0.4],
        };
        let p = prior.probabilities(&[2.0, 0.0]);
        let e = (-1.5f32).exp();
        assert!((p[0] - 1.0 / (1.0 + e)).abs() < 1e-6, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let scores = prior.scores(&[2.0, 0.0]);
        assert_eq!(scores.len(), 2);
        assert!((scores[0] - (p[0] * 0.1 + p[1] * 0.9)).abs() < 1e-6);
        assert!((scores[1] - (p[0] * 0.2 + p[1] * 0.4)).abs() < 1e-6);
    }

    #[test]
    fn the_topic_scores_follow_the_lexicons_and_only_the_experts_read_them() {
        let mut config = model().config.clone();
        config.complexity_dims = 2;
        config.complexity_lexicon = vec!["outcomes".into(), "levels".into()];
        config.complexity_topics = 0;
        assert_eq!(config.score_index("levels"), Some(1));
        assert_eq!(config.score_index("topic.outcomes"), None);
        config.complexity_topics = 3;
        assert_eq!(config.score_index("topic.outcomes"), Some(2));
        assert_eq!(config.score_index("topic.levels"), Some(3));
        assert_eq!(config.score_index("topic.votes"), None);
        assert_eq!(config.score_index("votes"), None);
        let mut f: Vec<f32> = (0..config.inputs()).map(|i| i as f32).collect();
        f.extend([-1.0, -2.0, -3.0, -4.0]);
        assert_eq!(config.lexicon_scores(&f), [-1.0, -2.0, -3.0, -4.0]);
        let view = config.complexity_view(&f);
        assert_eq!(view, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0, -2.0]);
        config.complexity_intent = false;
        assert_eq!(config.complexity_inputs(), view.len());
    }

    /// The default model with a topic prior of two topics over the first two dimensions of the
    /// main pool, and an expert for open QA that reads its outcomes score: its config and weights.
    fn with_topic_prior(prior: [f32; 4]) -> (serde_json::Value, Vec<u8>) {
        let m = model();
        let dim = m.config.dim;
        let bytes = default_model_file("model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut weight = vec![0f32; 2 * dim];
        weight[0] = 20.0;
        weight[dim + 1] = 20.0;
        let le = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let added = [
            ("topic_weight", le(&weight), vec![2, dim]),
            ("topic_bias", le(&[0.0, 0.0]), vec![2]),
            ("topic_prior", le(&prior), vec![2, 2]),
        ];
        let mut views = st.tensors();
        for (name, data, shape) in &added {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            views.push((name.to_string(), view));
        }
        let weights = safetensors::serialize(views, None).unwrap();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["complexity_topics"] = 2.into();
        config["complexity_experts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "family": "topic.outcomes",
                "intents": ["open_qa"],
                "slope": 4.0,
                "centre": 0.25
            }));
        (config, weights)
    }

    #[test]
    fn a_word_table_finds_whole_words_by_their_pieces() {
        // Tokens 0..6; 2, 3 and 5 are `##` pieces. Words: [1, 2] and [4, 5].
        let table = WordTable {
            index: [(vec![1, 2], 0), (vec![4, 5], 1)].into(),
            rows: QuantRows::new(2, &[0; 4], 8),
            scales: vec![1.0; 2],
            continues: vec![false, false, true, true, false, true],
        };
        // [1, 2, 3] is one word of three pieces the table lacks; [1, 2] alone is found.
        assert_eq!(
            table.rows_of(&[0, 1, 2, 0, 1, 2, 3, 4, 5]),
            vec![
                None,
                Some(0),
                Some(0),
                None,
                None,
                None,
                None,
                Some(1),
                Some(1)
            ]
        );
        // A span that starts mid-word starts no word; an empty table finds nothing.
        assert_eq!(table.rows_of(&[2, 0, 4]), vec![None, None, None]);
        assert!(WordTable::default().rows_of(&[1, 2]).is_empty());
        assert_eq!(
            WordTable::continuations("[PAD]\nthe\n##s\n"),
            vec![false, false, true]
        );
    }

    /// The default model with a word table of one word, `words`' pieces, whose row is
    /// `row`'s token's.
    fn with_word(word: &str, row: &str) -> (Classifier, Vec<u32>) {
        let m = model();
        let dim = m.config.dim;
        let pieces = m.tokens(word);
        assert!(pieces.len() >= 2, "{word} is one piece");
        let t = m.tokens(row)[0] as usize;
        let bytes = default_model_file("model.safetensors");
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let rows = m.table.rows.row_file_bytes(t).unwrap().to_vec();
        let scale = m.table.scales[t].to_le_bytes().to_vec();
        let padded: Vec<u8> = (0..MAX_WORD_PIECES)
            .map(|i| pieces.get(i).map_or(-1, |&p| p as i32))
            .flat_map(i32::to_le_bytes)
            .collect();
        let added = [
            (
                "word_embeddings",
                safetensors::Dtype::U8,
                rows,
                vec![1, dim / 2],
            ),
            ("word_scales", safetensors::Dtype::F32, scale, vec![1]),
            (
                "word_pieces",
                safetensors::Dtype::I32,
                padded,
                vec![1, MAX_WORD_PIECES],
            ),
        ];
        let mut views = st.tensors();
        for (name, dtype, data, shape) in &added {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap();
            views.push((name.to_string(), view));
        }
        let weights = safetensors::serialize(views, None).unwrap();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["word_vectors"] = 2.into();
        (load_parts(&config, &weights).unwrap(), pieces)
    }

    #[test]
    fn a_whole_words_row_stands_for_its_pieces_in_every_pool() {
        let m = model();
        let (w, pieces) = with_word("juror", "jury");
        let dim = m.config.dim;
        let text = "the juror";
        let ids = m.tokens(text);
        assert_eq!(ids[1..], pieces[..], "{ids:?}");
        let row = |t: usize| -> Vec<f32> {
            m.table
                .rows
                .row(t)
                .unwrap()
                .iter()
                .map(|v| f32::from(*v) * m.table.scales[t])
                .collect()
        };
        let jury = row(m.tokens("jury")[0] as usize);
        let the = row(ids[0] as usize);
        let weight = |t: u32| m.table.weights[t as usize];
        let normalised = |v: Vec<f32>| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
        };
        let pieces_weight: f32 = pieces.iter().map(|&p| weight(p)).sum();
        let main = normalised(
            the.iter()
                .zip(&jury)
                .map(|(a, b)| weight(ids[0]) * a + pieces_weight * b)
                .collect(),
        );
        let (f, _) = w.features(text);
        let got = &f[EXTRA_FEATURES..EXTRA_FEATURES + dim];
        for (a, b) in got.iter().zip(&main) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        // The edge pools (unweighted; the prompt is shorter than every span) read the word's
        // row for each of its pieces too.
        let edges = normalised(
            the.iter()
                .zip(&jury)
                .map(|(a, b)| a + pieces.len() as f32 * b)
                .collect(),
        );
        let pools = EXTRA_FEATURES + dim..EXTRA_FEATURES + dim * pools(m.config.edges());
        for edge in f[pools].chunks(dim) {
            for (a, b) in edge.iter().zip(&edges) {
                assert!((a - b).abs() < 1e-5, "{a} {b}");
            }
        }
        // Without the table the pieces' own rows are read: the features differ.
        assert_ne!(m.features(text).0, f);
        // A model that says it has a word table and has none is refused by name.
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["word_vectors"] = 2.into();
        let err = load_parts(&config, &default_model_file("model.safetensors")).unwrap_err();
        assert!(err.contains("word_pieces"), "{err}");
    }

    #[test]
    fn a_recorded_pairs_complexity_is_reported_and_can_be_the_one_that_routes() {
        let m = model();
        assert!(
            !m.config.complexity_pairs.is_empty(),
            "the default model fits a pair"
        );
        let name = m.config.complexity_pairs[0].name.clone();
        let text = "Which of these is a prime number: 21, 27, 29 or 33?";
        let head = m.classify(text);
        assert_eq!(head.complexity_pair, None);
        let names: Vec<&str> = head
            .complexity_pairs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let want: Vec<&str> = m
            .config
            .complexity_pairs
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, want);
        // By hand: the prompt's TF-IDF bag times the pair's column, calibrated, then pooled with
        // the head's logit.
        let ids = m.tokens(text);
        let lexicon = m.pair_lexicon.as_ref().unwrap();
        let raw: f32 = ComplexityLexicon::bag(m.token_idf(), &ids)
            .iter()
            .map(|&(t, w)| w * lexicon.rows.get(t as usize * lexicon.families).unwrap())
            .sum();
        let pair = &m.config.complexity_pairs[0];
        let z = (head.complexity / (1.0 - head.complexity)).ln();
        let [a, b] = pair.calibration;
        let u = (1.0 - pair.pool) * z + pair.pool * (a * raw + b);
        let by_hand = 1.0 / (1.0 + (-u).exp());
        assert!(
            (head.complexity_pairs[0].1 - by_hand).abs() < 1e-5,
            "{:?} {by_hand}",
            head.complexity_pairs
        );
        // Pooled at 0 it is the head's complexity, at 1 the pair's own score alone.
        let mut ends = pair.clone();
        ends.pool = 0.0;
        assert!((ends.complexity(z, raw) - head.complexity).abs() < 1e-5);
        ends.pool = 1.0;
        assert!((ends.complexity(z, raw) - 1.0 / (1.0 + (-(a * raw + b)).exp())).abs() < 1e-6);
        let paired = model_from_disk().with_complexity_pair(Some(&name)).unwrap();
        let s = paired.classify(text);
        assert_eq!(s.complexity, head.complexity_pairs[0].1);
        assert_eq!(s.complexity_pair.as_deref(), Some(name.as_str()));
        assert_eq!((s.intent, s.domain), (head.intent, head.domain));
        let back = paired.with_complexity_pair(None).unwrap().classify(text);
        assert_eq!(back.complexity, head.complexity);
        let err = model_from_disk()
            .with_complexity_pair(Some("no-such-pair"))
            .unwrap_err();
        assert!(err.contains("no-such-pair") && err.contains(&name), "{err}");
    }

    fn model_from_disk() -> Classifier {
        Classifier::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/models/router"
        )))
        .unwrap()
    }

    #[test]
    fn a_complexity_pair_that_does_not_fit_its_model_is_refused_by_key() {
        let config = serde_json::to_value(&model().config).unwrap();
        let pair = config["complexity_pairs"][0].clone();
        for (key, value, says) in [
            (
                "calibration",
                serde_json::json!([-1.0, 0.0]),
                "complexity_pairs[0].calibration",
            ),
            ("name", serde_json::json!(" "), "complexity_pairs[0].name"),
            ("pool", serde_json::json!(1.5), "complexity_pairs[0].pool"),
        ] {
            let mut bad = config.clone();
            bad["complexity_pairs"][0][key] = value;
            let err = load_error(&bad);
            assert!(err.contains(says), "{err}");
        }
        let mut bad = config.clone();
        bad["complexity_pairs"] = serde_json::json!([pair.clone(), pair.clone()]);
        let err = load_error(&bad);
        assert!(err.contains("complexity_pairs[1].name"), "{err}");
        let mut other = pair.clone();
        other["name"] = "other".into();
        bad["complexity_pairs"] = serde_json::json!([pair, other]);
        let err = load_error(&bad);
        assert!(err.contains("pair_lexicon shape"), "{err}");
        let mut bad = config;
        bad["complexity_pairs"][0]["weight"] = 2.into();
        assert!(load_error(&bad).contains("weight"));
    }

    fn load_parts(config: &serde_json::Value, weights: &[u8]) -> Result<Classifier, String> {
        let vocab = String::from_utf8(default_model_file("vocab.txt")).unwrap();
        Classifier::from_parts(
            config.to_string().as_bytes(),
            &vocab,
            bytes::Bytes::copy_from_slice(weights),
            "m",
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_topic_expert_adds_the_topic_priors_evidence_to_open_questions() {
        let m = model();
        assert!(
            !m.config.intent_labels.is_empty() && m.config.complexity_lexicon.len() == 2,
            "the default model has two complexity families"
        );
        let (config, weights) = with_topic_prior([0.1, 0.0, 0.6, 0.0]);
        let t = load_parts(&config, &weights).unwrap();
        let text = "Which organelle is the site of the Krebs cycle in eukaryotic cells?";
        let (f, _) = t.features(text);
        // The topic scores follow the lexicon's, one per family; the heads read none of them.
        let families = m.config.complexity_lexicon.len();
        let scores = t.config.lexicon_scores(&f);
        assert_eq!(scores.len(), 2 * families);
        let dim = m.config.dim;
        let pooled = &f[EXTRA_FEATURES..EXTRA_FEATURES + dim];
        let e = (20.0 * (pooled[1] - pooled[0])).exp();
        let p0 = 1.0 / (1.0 + e);
        let outcomes = p0 * 0.1 + (1.0 - p0) * 0.6;
        assert!((scores[families] - outcomes).abs() < 1e-5, "{scores:?}");
        assert_eq!(
            scores[..families],
            m.config.lexicon_scores(&m.features(text).0)[..]
        );
        // The complexity moves by the expert's evidence, times the intent heads' probability of
        // open QA (before the bag's, as the experts read it).
        let before = m.classify(text);
        let after = t.classify(text);
        assert_eq!(after.intent_scores, before.intent_scores);
        let heads = Classifier::head_scores(
            &f,
            &t.intent,
            &t.config.intent_labels,
            &mut Scratch::default(),
        );
        let open_qa = heads.iter().find(|(l, _)| l == "open_qa").unwrap().1;
        let logit = |c: f32| (c / (1.0 - c)).ln();
        let evidence = open_qa.clamp(0.0, 1.0) * 4.0 * (outcomes - 0.25);
        assert!(
            (logit(after.complexity) - logit(before.complexity) - evidence).abs() < 1e-3,
            "{} → {}, evidence {evidence}",
            before.complexity,
            after.complexity
        );
    }

    #[test]
    fn a_topic_prior_that_does_not_fit_its_config_is_refused() {
        let (mut config, weights) = with_topic_prior([0.1, 0.0, 0.6, 0.0]);
        config["complexity_topics"] = 3.into();
        let err = load_parts(&config, &weights).unwrap_err();
        assert!(err.contains("topic_weight shape"), "{err}");
        // Without the topic prior, an expert that reads it names what is missing.
        config["complexity_topics"] = 0.into();
        let err = load_parts(&config, &weights).unwrap_err();
        assert!(err.contains("\"topic.outcomes\" is not one of"), "{err}");
    }

    #[test]
    fn a_complexity_lexicon_of_the_wrong_shape_is_refused() {
        let m = model();
        assert!(
            m.config.complexity_lexicon.len() > 1,
            "the default model has complexity lexicons"
        );
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["complexity_lexicon"] = serde_json::json!(["outcomes"]);
        let err = load_error(&config);
        assert!(err.contains("complexity_lexicon shape"), "{err}");
    }

    #[test]
    fn a_wide_complexity_lexicon_that_does_not_fit_its_config_is_refused() {
        let m = model();
        assert!(
            !m.config.complexity_wide.is_empty(),
            "the default model has a wide complexity family"
        );
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["complexity_pair_bits"] = 12.into();
        let err = load_error(&config);
        assert!(err.contains("complexity_pairs shape"), "{err}");
        for bits in [0, 40] {
            config["complexity_pair_bits"] = bits.into();
            let err = load_error(&config);
            assert!(
                err.contains("config.json") && err.contains("complexity_pair_bits"),
                "{err}"
            );
        }
    }

    /// Each of `m`'s experts' (gate, evidence) for `text`, computed by hand: the probability of
    /// its intents (the intent heads' mean, before any bag), times slope · (its family's score −
    /// centre). Checks that `m` adds them all to the head's calibrated logit.
    fn expert_terms(m: &Classifier, text: &str) -> Vec<(f32, f32)> {
        let (f, _) = m.features(text);
        let got = m.classify(text);
        let probs: Vec<f32> = Classifier::head_scores(
            &f,
            &m.intent,
            &m.config.intent_labels,
            &mut Scratch::default(),
        )
        .iter()
        .map(|(_, p)| *p)
        .collect();
        let cf = m.complexity_input(&f, probs.iter().copied());
        let (mut hidden, mut out) = (Vec::new(), Vec::new());
        m.complexity.forward(&cf, &mut hidden, &mut out);
        let head = m.config.calibrated_logit(out[0]);
        let mut terms = Vec::new();
        for spec in &m.config.complexity_experts {
            let gate: f32 = spec
                .intents
                .iter()
                .map(|i| {
                    let at = m.config.intent_labels.iter().position(|l| l == i);
                    probs[at.unwrap()]
                })
                .sum();
            let family = m
                .config
                .complexity_lexicon
                .iter()
                .position(|f| *f == spec.family)
                .unwrap();
            let score = m.config.lexicon_scores(&f)[family];
            assert_eq!(
                m.complexity_lexicon_scores(text)[family],
                (spec.family.clone(), score)
            );
            terms.push((gate, gate * spec.slope * (score - spec.centre)));
        }
        let shift: f32 = terms.iter().map(|(_, t)| t).sum();
        let want = 1.0 / (1.0 + (-(head + shift)).exp());
        assert!(
            (got.complexity - want).abs() < 1e-6,
            "{text}: {} vs {want}",
            got.complexity
        );
        terms
    }

    const MATHS_PROMPT: &str =
        "Find all real x such that x^2 - 5x + 6 = 0, then sum the squares of the roots.";
    const NOTE_PROMPT: &str =
        "Write a short thank-you note to my neighbour for watering the plants.";
    const QUESTION_PROMPT: &str = "Why is the sky blue?";

    #[test]
    fn a_complexity_expert_adds_its_familys_evidence_for_its_intents() {
        let m = model();
        assert_eq!(
            m.experts.len(),
            m.config.complexity_experts.len(),
            "every expert resolves against its model"
        );
        let levels = m
            .config
            .complexity_experts
            .iter()
            .position(|e| e.family == "levels")
            .expect("the default model has a levels expert");
        // For maths and every intent with few recorded outcomes, not for the open QA of the
        // question below, which MMLU's outcomes speak for.
        let intents = &m.config.complexity_experts[levels].intents;
        assert!(
            intents.iter().any(|i| i == "math") && !intents.iter().any(|i| i == "open_qa"),
            "{intents:?}"
        );
        // The maths problem is the levels expert's; the question hardly is.
        let maths = expert_terms(m, MATHS_PROMPT)[levels];
        let question = expert_terms(m, QUESTION_PROMPT)[levels];
        assert!(maths.0 > 0.9 && question.0 < 0.1, "{maths:?} {question:?}");
        assert!(
            maths.1.abs() > 5.0 * question.1.abs(),
            "{maths:?} {question:?}"
        );
    }

    #[test]
    fn several_complexity_experts_add_up_each_for_its_own_intents() {
        let mut config = serde_json::to_value(&model().config).unwrap();
        config["complexity_experts"] = serde_json::json!([
            {"family": "levels", "intents": ["math"], "slope": 2.0, "centre": 0.0},
            // A note is creative writing to the model, with some doubt towards a rewrite.
            {"family": "outcomes", "intents": ["creative_writing", "rewrite", "chat"],
             "slope": 5.0, "centre": -1.0},
        ]);
        let m = load_with(&config).unwrap();
        let maths = expert_terms(&m, MATHS_PROMPT);
        let note = expert_terms(&m, NOTE_PROMPT);
        // Each prompt is one expert's and hardly the other's.
        assert!(maths[0].0 > 0.9 && maths[1].0 < 0.1, "{maths:?}");
        assert!(note[0].0 < 0.1 && note[1].0 > 0.9, "{note:?}");
        // A centre far below every score: the note's expert raises it, by a lot.
        assert!(note[1].1 > 1.0, "{note:?}");
        assert!(m.classify(NOTE_PROMPT).complexity > model().classify(NOTE_PROMPT).complexity);
    }

    #[test]
    fn a_complexity_expert_that_does_not_fit_its_model_is_refused_by_key() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        let expert = serde_json::json!({
            "family": "levels", "intents": ["math"], "slope": 1.0, "centre": 0.0
        });
        config["complexity_experts"] = serde_json::json!([expert]);
        for (key, value, named) in [
            (
                "family",
                serde_json::json!("vibes"),
                "complexity_experts[0].family",
            ),
            (
                "intents",
                serde_json::json!(["math", "poetry"]),
                "complexity_experts[0].intents",
            ),
            (
                "intents",
                serde_json::json!(["math", "math"]),
                "complexity_experts[0].intents",
            ),
            (
                "intents",
                serde_json::json!([]),
                "complexity_experts[0].intents",
            ),
            (
                "slope",
                serde_json::json!(-1.0),
                "complexity_experts[0].slope",
            ),
        ] {
            let mut bad = config.clone();
            bad["complexity_experts"][0][key] = value;
            let err = load_error(&bad);
            assert!(
                err.contains("m/config.json") && err.contains(named),
                "{err}"
            );
        }
        let mut bad = config.clone();
        bad["complexity_experts"][0]["weight"] = 2.into();
        assert!(load_error(&bad).contains("weight"));
        // Two experts for one intent would add up their evidence.
        let mut bad = config.clone();
        let mut second = expert.clone();
        second["family"] = "outcomes".into();
        second["intents"] = serde_json::json!(["coding", "math"]);
        bad["complexity_experts"] = serde_json::json!([expert, second]);
        let err = load_error(&bad);
        assert!(
            err.contains("complexity_experts[1].intents") && err.contains("complexity_experts[0]"),
            "{err}"
        );
    }

    #[test]
    fn a_single_complexity_expert_as_older_models_wrote_it_still_loads() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        let spec = m.config.complexity_experts[0].clone();
        config.as_object_mut().unwrap().remove("complexity_experts");
        config["complexity_expert"] = serde_json::to_value(&spec).unwrap();
        let older = load_with(&config).unwrap();
        assert_eq!(older.config.complexity_experts, [spec]);
    }

    #[test]
    fn a_model_of_another_format_is_refused_by_name() {
        let m = model();
        let mut config = serde_json::to_value(&m.config).unwrap();
        config["format"] = 1.into();
        let err = Classifier::from_parts(
            config.to_string().as_bytes(),
            "[UNK]\n",
            bytes::Bytes::new(),
            "old-model",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("old-model/config.json") && err.contains("format 1"),
            "{err}"
        );
    }

    #[test]
    fn long_prompts_cut_inside_a_character_are_classified() {
        // The tail window starts a fixed number of bytes before the end: with two- and
        // three-byte characters that offset falls inside one.
        for unit in ["é", "–", "日本", "a–", "😀 "] {
            for n in [300, 700, 1001, 2000] {
                let text = unit.repeat(n);
                let s = model().classify(&text);
                assert!((0.0..=1.0).contains(&s.complexity), "{unit} × {n}");
            }
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_cases())]
        #[test]
        fn classify_never_panics(text in "\\PC{0,1200}", pad in "[a-zé–日 ]{0,400}") {
            let s = model().classify(&format!("{pad}{text}{pad}"));
            prop_assert!(s.complexity.is_finite());
        }
    }

    fn turn(role: &str, content: &str) -> Value {
        serde_json::json!({"role": role, "content": content})
    }

    #[test]
    fn a_chat_keeps_its_last_user_turn_and_the_characters_of_context_before_it() {
        let chat = chat_text(&[
            turn("system", "be brief"),
            turn("user", "what's the capital of Australia?"),
            turn("assistant", "Canberra."),
            turn("user", "and how many people live there?"),
        ]);
        assert_eq!(
            chat.text,
            "what's the capital of Australia?\nCanberra.\nand how many people live there?"
        );
        assert_eq!(chat.last_turn(), "and how many people live there?");
        assert!(chat.has_context());
        // The context's budget counts characters, not bytes: 595 of "é" (two bytes each) fit
        // beside a five-character last turn.
        let chat = chat_text(&[
            turn("user", &"é".repeat(700)),
            turn("assistant", "ok"),
            turn("user", "why?!"),
        ]);
        assert_eq!(chat.text, format!("{}\nok\nwhy?!", "é".repeat(593)));
        assert_eq!(chat.text.chars().count() - 2, CONTEXT_CHARS);
        // No earlier turn, or no user turn at all: a prompt, read once.
        let alone = chat_text(&[turn("system", "be brief"), turn("user", "hi")]);
        assert_eq!(alone, ChatText::prompt("hi"));
        assert_eq!(
            chat_text(&[turn("assistant", "hello")]),
            ChatText::prompt("hello")
        );
        assert_eq!(chat_text(&[]), ChatText::default());
        // A last turn longer than the budget leaves no room for context.
        let long = "x".repeat(CONTEXT_CHARS + 5);
        let chat = chat_text(&[turn("user", "earlier"), turn("user", &long)]);
        assert_eq!(chat, ChatText::prompt(long));
    }

    #[test]
    fn a_chat_with_context_pools_its_two_readings_and_a_prompt_is_read_once() {
        let m = model();
        let prompt = ChatText::prompt("write a haiku about rain");
        let once = m.classify_unchecked(&prompt.text);
        let read = m.classify_chat_unchecked(&prompt);
        assert_eq!(read.intent_scores, once.intent_scores);
        assert_eq!(read.complexity, once.complexity);
        let chat = chat_text(&[
            turn("user", "solve x^2 = 4"),
            turn("assistant", "x = 2 or x = -2."),
            turn("user", "now write that as a little poem"),
        ]);
        let whole = m.classify_unchecked(&chat.text);
        let last = m.classify_unchecked(chat.last_turn());
        let pooled = m.classify_chat_unchecked(&chat);
        // By hand: the normalised geometric mean of the two readings' probabilities.
        let geo: Vec<f64> = whole
            .intent_scores
            .iter()
            .zip(&last.intent_scores)
            .map(|((_, a), (_, b))| (f64::from(*a) * f64::from(*b)).sqrt())
            .collect();
        let sum: f64 = geo.iter().sum();
        for ((label, p), g) in pooled.intent_scores.iter().zip(&geo) {
            assert!(
                (f64::from(*p) - g / sum).abs() < 1e-5,
                "{label}: {p} vs {}",
                g / sum
            );
        }
        let logit = |p: f32| (f64::from(p) / (1.0 - f64::from(p))).ln();
        let z = (logit(whole.complexity) + logit(last.complexity)) / 2.0;
        assert!((f64::from(pooled.complexity) - 1.0 / (1.0 + (-z).exp())).abs() < 1e-5);
        assert_eq!(pooled.complexity_pairs.len(), whole.complexity_pairs.len());
        assert_eq!(pooled.tokens, whole.tokens);
        // The domain is the whole reading's.
        assert_eq!(pooled.domain_scores, whole.domain_scores);
        assert_eq!(pooled.domain, whole.domain);
        // The sum says maths and the last turn says a poem; pooled, the poem wins, and the
        // complexity lies between the two readings'.
        assert_eq!(whole.intent, "math");
        assert_eq!(pooled.intent, "creative_writing");
        let (lo, hi) = if whole.complexity < last.complexity {
            (whole.complexity, last.complexity)
        } else {
            (last.complexity, whole.complexity)
        };
        assert!(lo <= pooled.complexity && pooled.complexity <= hi);
    }

    /// The committed model with itself as its second model, checking every prompt not surely
    /// general.
    fn self_checked_model() -> Classifier {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/router"));
        Classifier::load(dir)
            .unwrap()
            .with_domain_check_from(dir, 1.0)
            .unwrap()
    }

    /// A domain check reads what the chat reading read: the last turn alone, or the whole.
    #[test]
    fn a_domain_check_reads_a_chat_as_the_model_did() {
        let m = self_checked_model();
        let chat = chat_text(&[
            turn(
                "user",
                "my landlord says he will keep my whole deposit for a small stain on the carpet",
            ),
            turn(
                "assistant",
                "Where do you live? Deposit rules differ by country.",
            ),
            turn("user", "England. is he allowed to do that?"),
        ]);
        for (reading, text) in [
            (ChatReading::LastTurn, chat.last_turn()),
            (ChatReading::Whole, chat.text.as_str()),
        ] {
            let s = m.classify_chat_as(&chat, reading);
            assert!(s.domain_checked(), "{reading:?}");
            assert_eq!(s.domain_scores, m.domain_scores(text), "{reading:?}");
        }
    }

    /// A text with no tokens is no evidence: every label equally likely, the first intent and
    /// `general`, complexity 0, nothing for a domain check to re-score. Not the heads' bias for
    /// an all-zero input, which reads legal.
    #[test]
    fn a_text_with_no_tokens_is_no_evidence() {
        let m = self_checked_model();
        for text in ["", "   ", "\n\t\n"] {
            let s = m.classify(text);
            assert_eq!(s.tokens, 0, "{text:?}");
            assert_eq!(s.intent, "chat");
            assert_eq!(s.domain, GENERAL);
            assert!(!s.domain_checked(), "{text:?}");
            assert_eq!(s.complexity, 0.0);
            assert!(s.complexity_pairs.iter().all(|(_, p)| *p == 0.0));
            let n = m.config.intent_labels.len() as f32;
            assert!(s.intent_scores.iter().all(|(_, p)| *p == 1.0 / n));
            assert!(s.domain_scores.iter().all(|(_, p)| *p == 0.25));
            assert_eq!(m.domain_scores(text), s.domain_scores);
        }
        // The heads' own reading of an empty input, for contrast.
        let (f, bag) = m.features_and_bag(&[], "");
        let heads = m.domain_of(&f, &bag, &mut Scratch::default());
        assert_eq!(best_label(&heads), "legal");
        // An empty last turn leaves the chat to the turns before it, read whole.
        let chat = chat_text(&[
            turn(
                "user",
                "can my landlord keep my deposit for a stain on the carpet?",
            ),
            turn("assistant", "It depends on the tenancy agreement."),
            turn("user", ""),
        ]);
        let s = m.classify_chat_unchecked(&chat);
        assert_eq!(
            s.intent_scores,
            m.classify_unchecked(&chat.text).intent_scores
        );
        assert_eq!(s.domain, "legal");
    }
}
