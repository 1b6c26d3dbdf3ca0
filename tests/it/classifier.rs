//! The router model: golden outputs from an independent Python reference, the tokenizer pinned
//! to the `tokenizers` crate, the plain-Rust heads pinned to candle, and the `classify`
//! command's interface.

use std::path::PathBuf;
use std::process::Stdio;

use candle_core::{DType, Device, Module, Tensor};
use serde_json::{json, Value};
use switchyard::classifier::Classifier;
use tokio::io::AsyncWriteExt;

fn model_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/router")
}

fn model() -> Classifier {
    Classifier::load(&model_dir()).unwrap()
}

#[test]
fn matches_the_independent_python_reference() {
    let golden: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/router.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(golden.len() >= 5);
    let c = model();
    for g in golden {
        let prompt = g["prompt"].as_str().unwrap();
        let ids: Vec<u32> = g["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(c.tokens(prompt), ids, "token ids of {prompt:?}");
        let s = c.classify(prompt);
        for (label, p) in &s.intent_scores {
            let want = g["intent"][label].as_f64().unwrap();
            assert!(
                (*p as f64 - want).abs() < 1e-4,
                "{prompt:?} intent {label}: {p} vs {want}"
            );
        }
        for (label, p) in &s.domain_scores {
            let want = g["domain"][label].as_f64().unwrap();
            assert!(
                (*p as f64 - want).abs() < 1e-4,
                "{prompt:?} domain {label}: {p} vs {want}"
            );
        }
        let want = g["complexity"].as_f64().unwrap();
        assert!(
            (s.complexity as f64 - want).abs() < 1e-4,
            "{prompt:?} complexity {} vs {want}",
            s.complexity
        );
        let pairs = g["complexity_pairs"].as_object().unwrap();
        assert_eq!(pairs.len(), s.complexity_pairs.len(), "{prompt:?} pairs");
        for (name, p) in &s.complexity_pairs {
            let want = pairs[name].as_f64().unwrap();
            assert!(
                (*p as f64 - want).abs() < 1e-4,
                "{prompt:?} complexity for the pair {name}: {p} vs {want}"
            );
        }
    }
}

/// `metrics.json`'s `complexity_spearman_math_level` ranks against MATH levels only: a
/// hand-written prompt's rating, which training now reads as a difficulty too, stays out of it.
#[test]
fn validation_complexity_ranks_against_math_levels_only() {
    use switchyard::eval::datasets::Example;
    let c = model();
    let example = |prompt: &str, difficulty: f32, handwritten: bool| Example {
        prompt: prompt.into(),
        intent: Some("math".into()),
        domain: Some("general".into()),
        complexity: None,
        difficulty: Some(difficulty),
        cheap_error: None,
        source: "math/Algebra".into(),
        handwritten,
    };
    let maths = vec![
        example("What is 2 + 3?", 1.0, false),
        example("Solve 3x + 7 = 22 for x.", 2.0, false),
        example(
            "Prove that there are infinitely many primes p for which p + 2 is composite, and find the smallest three.",
            4.0,
            false,
        ),
    ];
    let mut with_rated = maths.clone();
    with_rated.push(example("hi", 5.0, true));
    let (_, _, alone, _) = switchyard::classifier::train::evaluate(&c, &maths);
    let (_, _, mixed, _) = switchyard::classifier::train::evaluate(&c, &with_rated);
    assert!(alone.is_some());
    assert_eq!(alone, mixed);
}

#[test]
fn the_embedded_model_is_the_committed_one() {
    let embedded = Classifier::embedded()
        .expect("the binary embeds models/router")
        .unwrap();
    let c = model();
    for p in [
        "hello",
        "Summarise the following lease clause for a tenant.",
    ] {
        assert_eq!(embedded.classify(p).complexity, c.classify(p).complexity);
    }
}

#[test]
fn the_tokenizer_matches_the_tokenizers_crate() {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    let vocab = model_dir().join("vocab.txt");
    let wp = WordPiece::from_file(vocab.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tk = tokenizers::Tokenizer::new(wp);
    tk.with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .unwrap();
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    let c = model();
    let texts = [
        "Hello, World!",
        "Don't stop—believin'… (1990s) #rock",
        "naïve café São Paulo Zürich ÅÄÖ",
        "fn main() { println!(\"{}\", x[0] >= 3); } // ok?",
        "数学の問題を解いて 你好世界",
        "e = mc² and ½ + ¼ ≈ 0.75 — 100% sure; €5,000.00",
        "tabs\tand\nnewlines\r\nand   spaces",
        "unbelievably antidisestablishmentarianism supercalifragilisticexpialidocious",
        "emoji 👍🏽 and zero\u{200b}width and soft\u{00ad}hyphen",
        "İstanbul ŞEHİR ﬁnancial ℌ",
        "",
    ];
    for t in texts {
        let want: Vec<u32> = tk.encode(t, false).unwrap().get_ids().to_vec();
        assert_eq!(c.tokenizer().encode(t, 10_000), want, "{t:?}");
    }
}

#[test]
fn the_plain_heads_match_candle() {
    let bytes = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    let vb =
        candle_nn::VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu).unwrap();
    let c = model();
    assert_eq!(c.intent.len(), c.config.ensemble);
    assert_eq!(c.domain.len(), c.config.ensemble);
    // Every member of the ensembles ("intent", "intent.1", …), then the complexity head.
    let member = switchyard::classifier::member_name;
    let heads = c
        .intent
        .iter()
        .enumerate()
        .map(|(m, h)| (member("intent", m), h))
        .chain(
            c.domain
                .iter()
                .enumerate()
                .map(|(m, h)| (member("domain", m), h)),
        )
        .chain([("complexity".to_string(), &c.complexity)]);
    for (name, head) in heads {
        let l1 = candle_nn::Linear::new(
            vb.get((head.hidden, head.inputs), &format!("{name}.w1"))
                .unwrap(),
            Some(vb.get(head.hidden, &format!("{name}.b1")).unwrap()),
        );
        let l2 = candle_nn::Linear::new(
            vb.get((head.outputs, head.hidden), &format!("{name}.w2"))
                .unwrap(),
            Some(vb.get(head.outputs, &format!("{name}.b2")).unwrap()),
        );
        for p in [
            "hi there",
            "Prove that the square root of 2 is irrational.",
            "Extract the dates: 3 May, 9 June.",
        ] {
            let (features, _) = c.features(p);
            // Intent and domain read a prefix of the features; complexity its own input.
            let features = if name == "complexity" {
                let intent = c.classify(p).intent_scores;
                c.complexity_input(&features, intent.iter().map(|(_, p)| *p))
            } else {
                features
            };
            let f = &features[..head.inputs];
            let x = Tensor::from_vec(f.to_vec(), (1, f.len()), &Device::Cpu).unwrap();
            let want: Vec<f32> = l2
                .forward(&l1.forward(&x).unwrap().relu().unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let (mut hidden, mut got) = (Vec::new(), Vec::new());
            head.forward(&features, &mut hidden, &mut got);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-4, "{name} {p:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn long_prompts_keep_their_head_and_tail() {
    let c = model();
    let long = format!("{} THE END", "word ".repeat(5_000));
    let ids = c.tokens(&long);
    assert_eq!(ids.len(), c.config.head_tokens + c.config.tail_tokens);
    let end = c.tokenizer().encode("THE END", 10);
    assert_eq!(&ids[ids.len() - end.len()..], &end[..]);
}

#[tokio::test]
async fn classify_jsonl_keeps_its_interface_and_survives_bad_lines() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["classify", "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // A byte-order mark before the first line, a line that is not UTF-8 (Latin-1) and one that
    // ends in CRLF.
    let input = concat!(
        "\u{feff}{\"prompt\": \"write me a haiku about autumn\"}\n",
        "this is not json\n",
        "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"What is 17 * 23?\"}]}\n",
        "{\"prompt\": 42}\n",
        "{\"other\": true}\n",
        "{\"messages\": [{\"role\": \"user\", \"content\": \"solve x^2 = 4\"}, {\"role\": \"assistant\", \"content\": \"x = 2 or x = -2.\"}, {\"role\": \"user\", \"content\": \"now write that as a little poem\"}]}\n",
    );
    let mut input = input.as_bytes().to_vec();
    input.extend_from_slice(b"{\"prompt\": \"caf\xe9 au lait\"}\n");
    input.extend_from_slice(b"{\"prompt\": \"write me a haiku about spring\"}\r\n");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    for i in [0, 2, 5, 7] {
        let l = &lines[i];
        for k in ["intent", "domain", "tier"] {
            assert!(l[k].is_string(), "{k} in {l}");
        }
        for k in ["intent_scores", "domain_scores"] {
            let m = l[k].as_object().unwrap();
            let sum: f64 = m.values().map(|v| v.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-3, "{k} sums to {sum}");
        }
        assert!((0.0..=1.0).contains(&l["complexity"].as_f64().unwrap()));
        assert!(l["latency_us"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(lines[0]["intent"], "creative_writing");
    // A follow-up is read with its context and alone: the poem, not the sum.
    assert_eq!(lines[5]["intent"], "creative_writing");
    assert_eq!(lines[7]["intent"], "creative_writing");
    for i in [1, 3, 4, 6] {
        assert!(lines[i]["error"]["message"].is_string(), "{}", lines[i]);
        assert_eq!(lines[i]["error"]["line"], i + 1);
    }
    assert!(
        lines[6]["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid UTF-8"),
        "{}",
        lines[6]
    );
}

/// `classify --domain-check DIR`: each line says whether the second model re-scored it; a
/// folder that is not a model is refused by name.
/// `switchyard ARGS` with one JSON line asking `prompt` on stdin.
fn run_with_prompt(args: &[&str], prompt: &str) -> std::process::Output {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = format!("{}\n", serde_json::json!({ "prompt": prompt }));
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), line.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn classify_takes_a_domain_check() {
    let run = |args: &[&str]| {
        run_with_prompt(
            args,
            "Can my landlord keep my deposit for a stain on the carpet?",
        )
    };
    let dir = model_dir();
    let dir = dir.to_str().unwrap();
    // The domain checked below 1 and not below 0; with the intent check, the same second
    // model re-reads the intent, here of every prompt.
    for (below, intent, checked) in [
        ("1", None, (true, false)),
        ("0", None, (false, false)),
        ("0", Some("1"), (false, true)),
    ] {
        let mut args = vec!["classify", "--jsonl", "--domain-check", dir];
        args.extend(["--domain-check-below", below]);
        if let Some(i) = intent {
            args.extend(["--intent-check-below", i]);
        }
        let out = run(&args);
        assert!(out.status.success(), "{out:?}");
        let line: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (&line["domain_checked"], &line["intent_checked"]),
            (&json!(checked.0), &json!(checked.1)),
            "{line}"
        );
        assert_eq!(line["domain"], "legal");
    }
    for (args, says) in [
        (vec!["--intent-check-below", "0.8"], "--domain-check"),
        (
            vec!["--domain-check", dir, "--intent-check-below", "1.5"],
            "--intent-check-below",
        ),
    ] {
        let out = run(&[&["classify", "--jsonl"], &args[..]].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = run(&["classify", "--jsonl", "--domain-check", "no/such/model"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/model"), "{err}");
}

/// `classify --complexity-pair NAME` reports that recorded pair's score as the complexity the
/// policy reads; every line carries each pair's score; an unknown pair is refused by name.
#[test]
fn classify_reports_and_can_route_by_a_recorded_pair() {
    let run = |args: &[&str]| {
        run_with_prompt(
            args,
            "Implement Dijkstra's algorithm in Rust with a binary heap.",
        )
    };
    let line = |out: &std::process::Output| -> Value {
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let head = line(&run(&["classify", "--jsonl"]));
    let pair = head["complexity_pairs"]["llmrouter"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&pair), "{head}");
    assert!(head["complexity_pair"].is_null(), "{head}");
    let routed = line(&run(&[
        "classify",
        "--jsonl",
        "--complexity-pair",
        "llmrouter",
    ]));
    assert_eq!(routed["complexity"].as_f64().unwrap(), pair);
    assert_eq!(routed["complexity_pair"], "llmrouter");
    assert!(
        routed["reason"]
            .as_str()
            .unwrap()
            .starts_with("complexity (llmrouter) "),
        "{routed}"
    );
    assert_eq!(routed["intent"], head["intent"]);
    let out = run(&["classify", "--jsonl", "--complexity-pair", "no-such-pair"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-pair") && err.contains("llmrouter"),
        "{err}"
    );
    // A config's routing.complexity_pair routes too; classify calls no provider, so a key the
    // machine lacks is not asked for.
    let config = std::env::temp_dir().join(format!("sy-pair-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         api_key_env = \"SWITCHYARD_TEST_KEY_THAT_IS_NOT_SET\"\n\
         [routing]\ndefault_tier = \"cheap\"\nstrong_tier = \"strong\"\n\
         complexity_pair = \"llmrouter\"\n\
         [tiers.cheap]\ntargets = [{ provider = \"p\", model = \"small\" }]\n\
         [tiers.strong]\ntargets = [{ provider = \"p\", model = \"big\" }]\n",
    )
    .unwrap();
    let by_config = line(&run(&[
        "classify",
        "--jsonl",
        "--config",
        config.to_str().unwrap(),
    ]));
    std::fs::remove_file(&config).unwrap();
    assert_eq!(by_config["complexity_pair"], "llmrouter", "{by_config}");
    assert_eq!(by_config["complexity"].as_f64().unwrap(), pair);
}

/// `classify --domain-offset` replaces the model's domain offsets, as a config's
/// `routing.domain_offsets` does; the flag wins over the config.
#[test]
fn classify_takes_domain_offsets() {
    let prompt = "My neighbour's tree fell on my fence, who pays for it?";
    let run = |args: &[&str]| {
        let out = run_with_prompt(args, prompt);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let legal = |v: &Value| v["domain_scores"]["legal"].as_f64().unwrap();
    let general = |v: &Value| v["domain_scores"]["general"].as_f64().unwrap();
    let log_odds = |v: &Value| (legal(v) / general(v)).ln();
    let trained = run(&["classify", "--jsonl"]);
    let none = run(&["classify", "--jsonl", "--domain-offset", "none"]);
    let up = run(&["classify", "--jsonl", "--domain-offset", "legal=2"]);
    // The default model's legal offset is 1: none takes it away, legal=2 adds one more.
    assert!(
        (log_odds(&trained) - log_odds(&none) - 1.0).abs() < 1e-3,
        "{trained} {none}"
    );
    assert!(
        (log_odds(&up) - log_odds(&none) - 2.0).abs() < 1e-3,
        "{up} {none}"
    );
    assert_eq!(up["intent_scores"], none["intent_scores"]);
    let config = std::env::temp_dir().join(format!("sy-offsets-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
         [routing]\ndefault_tier = \"cheap\"\ndomain_offsets = {}\n\
         [tiers.cheap]\ntargets = [{ provider = \"p\", model = \"small\" }]\n",
    )
    .unwrap();
    let path = config.to_str().unwrap();
    let by_config = run(&["classify", "--jsonl", "--config", path]);
    let flag_wins = run(&[
        "classify",
        "--jsonl",
        "--config",
        path,
        "--domain-offset",
        "legal=2",
    ]);
    std::fs::remove_file(&config).unwrap();
    assert_eq!(by_config["domain_scores"], none["domain_scores"]);
    assert_eq!(flag_wins["domain_scores"], up["domain_scores"]);
    // The readable decision names the offsets in force.
    let readable = |args: &[&str]| {
        let (ok, out, err) = crate::harness::run_switchyard(args);
        assert!(ok, "{err}");
        out
    };
    let out = readable(&["classify", prompt]);
    assert!(out.contains("; offsets finance=0.5,legal=1)"), "{out}");
    let out = readable(&["classify", "--domain-offset", "legal=2", prompt]);
    assert!(out.contains("; offsets legal=2)"), "{out}");
    let out = readable(&["classify", "--domain-offset", "none", prompt]);
    assert!(!out.contains("offsets"), "{out}");
    for (bad, says) in [
        (
            "tax=1",
            "--domain-offset tax: not one of the model's domains",
        ),
        ("legal", "LABEL=OFFSET"),
    ] {
        let out = run_with_prompt(&["classify", "--jsonl", "--domain-offset", bad], prompt);
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{bad}: {err}");
    }
}

#[tokio::test]
async fn calibrate_finds_the_threshold_for_a_strong_share() {
    let path = std::env::temp_dir().join(format!("sy-calibrate-{}.jsonl", std::process::id()));
    let prompts: String = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("training-data/mixed.jsonl"),
    )
    .unwrap();
    std::fs::write(&path, &prompts).unwrap();
    let (ok, text, err) = crate::harness::run_switchyard(&[
        "calibrate".as_ref(),
        "--strong-share".as_ref(),
        "0.25".as_ref(),
        "--prompts".as_ref(),
        path.as_os_str(),
    ]);
    assert!(ok, "{err}");
    let t: f64 = text
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("complexity_threshold = ")
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&t), "{text}");
    // 25% of the prompts above the threshold, give or take one (ties aside).
    let n = prompts.lines().count();
    let want = n / 4;
    assert!(
        (want.saturating_sub(1)..=want + 2).any(|k| text.contains(&format!("{k} of {n} prompts"))),
        "{text}"
    );
    let _ = std::fs::remove_file(path);
}

/// The prompts of every `.jsonl` file in a folder of the repo, with their file and line.
fn prompts_in(folder: &str) -> Vec<(String, usize, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        for (i, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            // A conversation is read as the classifier reads it: its last user turn, with
            // earlier turns as context.
            let text = match v["prompt"].as_str() {
                Some(p) => p.to_string(),
                None => switchyard::classifier::prompt_text(v["messages"].as_array().unwrap()),
            };
            out.push((name.clone(), i + 1, text));
        }
    }
    out
}

/// The hand-written training prompts, and those in `training-data/pending/` if it exists
/// (written and tried, not yet trained on by the default model: `train` reads the folder's top
/// level only), which keep to the same rules.
fn training_prompts() -> Vec<(String, usize, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("training-data/pending");
    let pending = if dir.is_dir() {
        prompts_in("training-data/pending")
    } else {
        Vec::new()
    };
    prompts_in("training-data")
        .into_iter()
        .chain(
            pending
                .into_iter()
                .map(|(f, l, p)| (format!("pending/{f}"), l, p)),
        )
        .collect()
}

#[test]
fn no_training_prompt_rewords_an_evaluation_prompt() {
    use switchyard::eval::dataset::{content_words, near_duplicates};
    let eval: Vec<_> = prompts_in("eval/prompts")
        .into_iter()
        .map(|(f, l, p)| (f, l, content_words(&p)))
        .collect();
    let mut found = Vec::new();
    for (file, line, prompt) in training_prompts() {
        let words = content_words(&prompt);
        for (ef, el, ew) in &eval {
            if near_duplicates(&words, ew) {
                found.push(format!(
                    "training-data/{file}:{line} ~ eval/prompts/{ef}:{el}"
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// No hand-written training prompt repeats another, up to case, spacing and punctuation: a
/// repeat would count twice in training, and could sit on both sides of the validation split.
#[test]
fn no_training_prompt_is_written_twice() {
    let mut first = std::collections::HashMap::new();
    let mut found = Vec::new();
    for (file, line, prompt) in training_prompts() {
        let key = switchyard::eval::dataset::normalise(&prompt);
        if let Some((f, l)) = first.get(&key) {
            found.push(format!("training-data/{file}:{line} repeats {f}:{l}"));
        } else {
            first.insert(key, (file, line));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The everyday test sets from test 4 on, and the difficulty sets from the second on, were
/// written under the near-duplicate rule: none of their prompts rewords another evaluation
/// prompt, in its own file or any other. (`difficulty.jsonl` was written with an exact check
/// only; its datasheet says so.)
#[test]
fn later_everyday_sets_reword_no_other_evaluation_prompt() {
    use switchyard::eval::dataset::{content_words, near_duplicates};
    // The number in a set's file name, e.g. 5 for "difficulty-5.jsonl".
    let number = |file: &str, prefix: &str| {
        file.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u32>().ok())
    };
    let checked = |file: &str| {
        number(file, "difficulty-").is_some_and(|n| n >= 2)
            || number(file, "everyday-test-").is_some_and(|n| n >= 4)
            || file.starts_with("conversations-")
            || file.starts_with("long-")
            || file.starts_with("domains-")
    };
    let eval: Vec<_> = prompts_in("eval/prompts")
        .into_iter()
        .map(|(f, l, p)| (f, l, content_words(&p)))
        .collect();
    // Difficulty sets 2 to 5 and everyday tests 12 and 13; the everyday sets before test 12
    // were retired into training-data/ on 2026-12-05.
    assert!(
        eval.iter().filter(|(f, _, _)| checked(f)).count() >= 4 * 60 + 2 * 96,
        "fewer checked prompts than difficulty sets 2 to 5 and everyday tests 12 and 13 hold: a later set is missing"
    );
    let mut found = Vec::new();
    for (i, (file, line, words)) in eval.iter().enumerate() {
        if !checked(file) {
            continue;
        }
        for (j, (other, other_line, other_words)) in eval.iter().enumerate() {
            // Each pair of checked prompts is reported once.
            if i == j || (checked(other) && j < i) {
                continue;
            }
            if near_duplicates(words, other_words) {
                found.push(format!("{file}:{line} ~ {other}:{other_line}"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// Every set `eval/prompts/SEALED` names is an evaluation set there, and none has a report yet:
/// `scripts/eval-reports` skips sealed sets, so a report means one was scored before its change.
#[test]
fn sealed_sets_exist_and_have_no_report() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let list = std::fs::read_to_string(root.join("eval/prompts/SEALED")).unwrap();
    let mut found = Vec::new();
    for name in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if !root.join("eval/prompts").join(name).is_file() {
            found.push(format!("{name} is not in eval/prompts"));
        }
        // Any report of the set: classify-<stem>, and its -encoder and -domain-check kin.
        let report = format!("classify-{}", name.strip_suffix(".jsonl").unwrap_or(name));
        for entry in std::fs::read_dir(root.join("eval/reports")).unwrap() {
            let dir = entry.unwrap().file_name().to_string_lossy().into_owned();
            if dir == report || dir.starts_with(&format!("{report}-")) {
                found.push(format!("{name} is sealed but eval/reports/{dir} exists"));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn near_duplicates_are_rewordings_not_shared_phrasing() {
    use switchyard::eval::dataset::{content_words, near_duplicates};
    let near = |a: &str, b: &str| near_duplicates(&content_words(a), &content_words(b));
    assert!(near(
        "How do I undo my last git commit but keep the changes?",
        "How do I undo the last git commit but keep my changes?"
    ));
    assert!(near(
        "What are some ways to cut my monthly bills?",
        "What are some ways I could cut my monthly bills?"
    ));
    assert!(!near(
        "What's the difference between a will and a trust?",
        "What's the difference between a cold and the flu?"
    ));
    assert!(!near("hi", "hello"));
    assert!(!near("", ""));
}
