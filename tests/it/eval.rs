//! The eval harness through the binary, on small hand-written datasets, and the server's
//! decision log read back through the same dataset reader.

use serde_json::{json, Value};

use crate::harness::{chat_body, providers, router, sim};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-eval-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> (bool, String, String) {
    crate::harness::run_switchyard(args)
}

/// The four prompts of the metrics' hand-worked example, with prices per prompt.
fn four_prompts(dir: &std::path::Path) -> std::path::PathBuf {
    let rows = [
        (
            "Say hello to my team for me, please, and thank them.",
            1.0,
            1.0,
        ),
        ("Thanks!", 1.0, 0.0),
        (
            "Prove that there are infinitely many primes p with p ≡ 3 (mod 4), in full detail.",
            0.0,
            1.0,
        ),
        (
            "Derive the closed form of the sum of k^3 for k = 1..n and prove it by induction.",
            0.0,
            1.0,
        ),
    ];
    let text: String = rows
        .iter()
        .enumerate()
        .map(|(i, (p, w, s))| {
            json!({"id": format!("t/{i}"), "prompt": p, "outcomes": {
                "small": {"quality": w, "cost_usd": 0.001},
                "big": {"quality": s, "cost_usd": 0.01}}})
            .to_string()
                + "\n"
        })
        .collect();
    let p = dir.join("four.jsonl");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn route_reports_the_hand_computed_baselines() {
    let dir = tmpdir("route");
    let data = four_prompts(&dir);
    let out = dir.join("report");
    let (ok, md, err) = run(&[
        "eval",
        "route",
        "--data",
        data.to_str().unwrap(),
        "--cheap",
        "small",
        "--strong",
        "big",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(md.contains("| always-cheap | 50.0% | 0.0% |"), "{md}");
    assert!(md.contains("| always-strong | 75.0% | 100.0% |"), "{md}");
    // Oracle: strong on the two proofs only → 100% at half the prompts.
    assert!(md.contains("| oracle | 100.0% | 50.0% |"), "{md}");
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let names: Vec<&str> = j["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[..2], ["router (complexity)", "prompt length"]);
    assert!(names[2].starts_with("random"));
    // The embedded model's complexity lexicon families alone, as diagnostics after the baselines.
    assert_eq!(
        names[3..],
        [
            "complexity lexicon: outcomes (diagnostic)",
            "complexity lexicon: levels (diagnostic)"
        ]
    );
    // Prompt length sends the two long proofs first: the best possible order here, APGR 1.375.
    let length_apgr = j["strategies"][1]["apgr"].as_f64().unwrap();
    assert!((length_apgr - 1.375).abs() < 1e-9, "{length_apgr}");
    let svg = std::fs::read_to_string(out.join("cost_quality.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("prompt length"));
}

/// `eval route --config`: the config's tiers name the models, and its `routing.complexity_pair`
/// the complexity that routes; a provider key the machine does not have is not needed offline.
#[test]
fn route_follows_a_configs_complexity_pair() {
    let dir = tmpdir("route-pair");
    let data = four_prompts(&dir);
    let config = dir.join("router.toml");
    std::fs::write(
        &config,
        r#"[providers.p]
base_url = "http://127.0.0.1:9/v1"
api_key_env = "SWITCHYARD_TEST_KEY_THAT_IS_NOT_SET"
[routing]
default_tier = "cheap"
strong_tier = "strong"
complexity_pair = "llmrouter"
[tiers.cheap]
targets = [{ provider = "p", model = "small" }]
[tiers.strong]
targets = [{ provider = "p", model = "big" }]
"#,
    )
    .unwrap();
    let route = |pair: &[&str]| {
        let mut args = vec!["eval", "route", "--data", data.to_str().unwrap()];
        args.extend(["--config", config.to_str().unwrap()]);
        args.extend(pair);
        run(&args)
    };
    let (ok, md, err) = route(&[]);
    assert!(ok, "{err}");
    assert!(md.contains("its complexity for the pair llmrouter"), "{md}");
    assert!(md.contains("| always-cheap | 50.0% | 0.0% |"), "{md}");
    // The flag wins over the config, and an error names where the pair was named.
    let (ok, _, err) = route(&["--complexity-pair", "no-such-pair"]);
    assert!(!ok);
    assert!(
        err.contains("--complexity-pair: ") && err.contains("no-such-pair"),
        "{err}"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"llmrouter\"", "\"no-such-pair\"")).unwrap();
    let (ok, _, err) = route(&[]);
    assert!(!ok);
    assert!(err.contains("routing.complexity_pair: "), "{err}");
}

#[test]
fn classify_reports_heads_calibration_and_plots() {
    let dir = tmpdir("classify");
    let data = dir.join("labelled.jsonl");
    let rows = [
        json!({"prompt": "Write a Python function that reverses a linked list.", "intent": "coding", "domain": "general"}),
        json!({"prompt": "Solve for x: 3x + 7 = 22.", "intent": "math", "domain": "general", "difficulty": 1}),
        json!({"prompt": "Find all real solutions of x^4 - 5x^2 + 4 = 0 and prove there are no others.", "intent": "math", "difficulty": 4}),
        json!({"prompt": "Is a non-compete clause enforceable in California?", "domain": "legal", "difficulty": 3}),
        json!({"messages": [{"role": "user", "content": "hey, how are you doing today?"}], "intent": "chat"}),
    ];
    std::fs::write(
        &data,
        rows.iter()
            .map(|r| r.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out = dir.join("report");
    let (ok, md, err) = run(&[
        "eval",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        md.contains("## intent head") && md.contains("## domain head"),
        "{md}"
    );
    assert!(md.contains("| difficulty | 3 |"), "{md}");
    for f in [
        "report.md",
        "report.json",
        "confusion_intent.svg",
        "confusion_domain.svg",
        "calibration.svg",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    let j: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(j["heads"][0]["n"], 4);
    assert!(j["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    // Each complexity lexicon family's correlation alone, beside the model's and length's.
    let difficulty = &j["complexity"][0];
    assert_eq!(difficulty["against"], "difficulty");
    for family in ["outcomes", "levels"] {
        assert!(difficulty["lexicon"][family].is_f64(), "{difficulty}");
    }
    assert!(md.contains("| complexity lexicon: levels |"), "{md}");
}

/// `eval classify --chat-reading`: a conversation read whole, by its last turn, or both pooled
/// (the router's way, the default).
#[test]
fn classify_reads_a_conversation_the_way_it_is_told() {
    let dir = tmpdir("chat-reading");
    let data = dir.join("chats.jsonl");
    let row = json!({"messages": [
        {"role": "user", "content": "solve x^2 = 4"},
        {"role": "assistant", "content": "x = 2 or x = -2."},
        {"role": "user", "content": "now write that as a little poem"},
    ], "intent": "creative_writing"});
    std::fs::write(&data, format!("{row}\n")).unwrap();
    let accuracy = |reading: Option<&str>| {
        let mut args = vec!["eval", "classify", "--data", data.to_str().unwrap()];
        if let Some(r) = reading {
            args.extend(["--chat-reading", r]);
        }
        let (ok, md, err) = run(&args);
        assert!(ok, "{err}");
        md.lines()
            .find(|l| l.contains("labelled prompts: accuracy"))
            .map(str::to_string)
            .unwrap()
    };
    assert!(accuracy(None).contains("**100.0%**"));
    assert!(accuracy(Some("both")).contains("**100.0%**"));
    assert!(accuracy(Some("last-turn")).contains("**100.0%**"));
    assert!(accuracy(Some("whole")).contains("**0.0%**"));
    let (ok, _, err) = run(&[
        "eval",
        "classify",
        "--data",
        data.to_str().unwrap(),
        "--chat-reading",
        "sideways",
    ]);
    assert!(!ok);
    assert!(err.contains("--chat-reading"), "{err}");
}

#[test]
fn malformed_data_names_file_line_and_field() {
    let dir = tmpdir("bad");
    let data = dir.join("bad.jsonl");
    std::fs::write(&data, "{\"prompt\": \"ok\"}\n{\"prompt\": \"x\", \"outcomes\": {\"m\": {\"quality\": \"good\"}}}\n").unwrap();
    let (ok, _, err) = run(&[
        "eval",
        "route",
        "--data",
        data.to_str().unwrap(),
        "--cheap",
        "m",
        "--strong",
        "n",
    ]);
    assert!(!ok);
    assert!(
        err.contains("bad.jsonl:2:") && err.contains("outcomes.m.quality"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "eval", "import", "--source", "nope", "--input", ".", "--out", "x.jsonl",
    ]);
    assert!(!ok && err.contains("unknown source"), "{err}");
}

#[test]
fn import_dedupes_and_excludes_another_split() {
    let dir = tmpdir("import");
    let src = dir.join("gsm8k.jsonl");
    std::fs::write(
        &src,
        "{\"question\": \"Tom has 3 apples. How many?\"}\n{\"question\": \"tom has 3 apples, how many\"}\n{\"question\": \"Ann runs 5 km a day. How far in a week?\"}\n{\"question\": \"A train leaves at 3pm.\"}\n",
    )
    .unwrap();
    let held = dir.join("held.jsonl");
    std::fs::write(&held, "{\"prompt\": \"A train leaves at 3PM!\"}\n").unwrap();
    let out = dir.join("out.jsonl");
    let (ok, _, err) = run(&[
        "eval",
        "import",
        "--source",
        "gsm8k",
        "--input",
        src.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--exclude",
        held.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        err.contains("dropped 1 also in --exclude files and 1 duplicates"),
        "{err}"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["intent"], "math");
    assert_eq!(lines[0]["source"], "gsm8k");
}

/// `eval compare` of the embedded model against itself on `data` (50 resamples): its report.
fn compare_embedded_with_itself(data: &std::path::Path, flags: &[&str]) -> String {
    let data = data.to_str().unwrap();
    let mut args = vec!["eval", "compare", "--data", data, "embedded", "embedded"];
    args.extend(["--resamples", "50"]);
    args.extend(flags);
    let (ok, md, err) = run(&args);
    assert!(ok, "{err}");
    md
}

#[test]
fn compare_gives_a_paired_interval() {
    let dir = tmpdir("compare");
    let data = four_prompts(&dir);
    let md = compare_embedded_with_itself(&data, &["--cheap", "small", "--strong", "big"]);
    // The same model on both sides: no difference, and an interval of exactly zero.
    assert!(md.contains("| +0.000 | [+0.000, +0.000] |"), "{md}");
}

#[test]
fn compare_ranks_complexity_against_difficulty_ratings() {
    let dir = tmpdir("compare-difficulty");
    let data = dir.join("rated.jsonl");
    let rows = [
        ("hiya, you awake?", Some(1)),
        ("What is 7 times 8?", Some(1)),
        (
            "Prove that there are infinitely many primes of the form 4k + 3.",
            Some(5),
        ),
        (
            "Design a lock-free multi-producer multi-consumer queue in C++.",
            Some(5),
        ),
        ("Suggest names for a grey kitten", None),
    ];
    let text: String = rows
        .iter()
        .map(|(p, d)| format!("{}\n", json!({"prompt": p, "difficulty": d})))
        .collect();
    std::fs::write(&data, text).unwrap();
    let md = compare_embedded_with_itself(&data, &[]);
    // Only the four rated prompts count; the same model on both sides differs by nothing.
    let row = md
        .lines()
        .find(|l| l.starts_with("| complexity Spearman with difficulty | 4 |"))
        .unwrap_or_else(|| panic!("no difficulty row in {md}"));
    assert!(row.ends_with("| +0.000 | [+0.000, +0.000] |"), "{row}");
}

#[tokio::test]
async fn decision_log_records_answers_in_the_dataset_format() {
    let dir = tmpdir("log");
    for prompts in [false, true] {
        let log = dir.join(format!("decisions-{prompts}.jsonl"));
        let up = sim("up").await;
        let h = router(&format!(
            "[server]\ndecision_log = {log:?}\ndecision_log_prompts = {prompts}\n[routing]\ndefault_tier = \"cheap\"\nstrong_tier = \"strong\"\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"up\", model = \"small\" }}]\n[tiers.strong]\ntargets = [{{ provider = \"up\", model = \"big\" }}]\n",
            providers(&[("up", up.base_url())])
        ))
        .await;
        let r = h.post(&chat_body("switchyard")).await;
        assert_eq!(r.status, 200);
        let id = r.header("x-switchyard-request-id");
        let mut records = Vec::new();
        for _ in 0..200 {
            if let Ok(rs) = switchyard::eval::dataset::read(&log) {
                if !rs.is_empty() {
                    records = rs;
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(records.len(), 1, "no record in {}", log.display());
        let rec = &records[0];
        assert_eq!(rec.id.as_deref(), Some(id.as_str()));
        assert_eq!(rec.prompt.is_some(), prompts);
        let d = rec.decision.as_ref().unwrap();
        assert_eq!(d["reason"], "classifier");
        assert!(d["scores"]["complexity"].as_f64().is_some());
        assert_eq!(d["tier"], r.header("x-switchyard-tier").as_str());
        assert!(rec.outcomes.values().all(|o| o.latency_ms.is_some()));
        if prompts {
            assert_eq!(
                rec.prompt.as_deref(),
                Some("What is the capital of France?")
            );
        } else {
            let raw = std::fs::read_to_string(&log).unwrap();
            assert!(!raw.contains("capital of France"), "{raw}");
        }
    }
}

#[test]
fn a_handwritten_rating_sets_complexity_and_a_bad_one_is_named() {
    let dir = tmpdir("rated");
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    std::fs::write(
        good.join("rated.jsonl"),
        "{\"prompt\": \"Prove it\", \"intent\": \"math\", \"domain\": \"general\", \"difficulty\": 4, \"source\": \"handwritten-rated-0\"}\n{\"prompt\": \"hi\", \"intent\": \"chat\", \"domain\": \"general\", \"source\": \"handwritten-rated-1\"}\n{\"prompt\": \"2+2\", \"intent\": \"math\", \"domain\": \"general\", \"source\": \"handwritten-rated-2\"}\n",
    )
    .unwrap();
    let out = dir.join("out.jsonl");
    let import = |input: &std::path::Path| {
        run(&[
            "eval",
            "import",
            "--source",
            "handwritten",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
    };
    let (ok, _, err) = import(&good);
    assert!(ok, "{err}");
    let lines: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // A rating maps like a MATH level (4 → 0.7); chat keeps its prior; maths unrated has none.
    assert!((lines[0]["complexity"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert!((lines[1]["complexity"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    assert!(lines[2].get("complexity").is_none_or(Value::is_null));
    // The rating itself is kept too: it is what makes the prompt a "levels" label in training
    // (and what `eval classify` ranks complexity against).
    assert_eq!(lines[0]["difficulty"].as_f64(), Some(4.0));
    assert!(lines[1].get("difficulty").is_none_or(Value::is_null));
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("rated.jsonl"),
        "{\"prompt\": \"x\", \"intent\": \"math\", \"domain\": \"general\", \"difficulty\": 7, \"source\": \"handwritten-rated-0\"}\n",
    )
    .unwrap();
    let (ok, _, err) = import(&bad);
    assert!(!ok);
    assert!(
        err.contains("rated.jsonl:1") && err.contains("difficulty") && err.contains("1 to 5"),
        "{err}"
    );
}

/// `eval domain-offsets` against `classify`: each row's counts are what `classify
/// --domain-offset` reports with that row's offsets, the fitted ones included, over a
/// hand-written labelled set.
#[test]
fn domain_offsets_fit_what_classify_then_reports() {
    let data =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eval/prompts/domains-test-1.jsonl");
    let dir = tmpdir("offsets");
    let out = dir.join("report");
    let data_arg = data.to_str().unwrap();
    let (ok, md, err) = run(&[
        "eval",
        "domain-offsets",
        "--data",
        data_arg,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert!(md.contains(report["toml"].as_str().unwrap()), "{md}");
    let labels: Vec<String> = serde_json::from_value(report["labels"].clone()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "none, the model's, fitted, cross-validated");
    let text = std::fs::read_to_string(&data).unwrap();
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for row in &rows[..3] {
        let flag = match row["offsets"].as_object() {
            None => "none".to_string(),
            Some(o) if o.is_empty() => "none".to_string(),
            Some(o) => o
                .iter()
                .map(|(l, v)| format!("{l}={v}"))
                .collect::<Vec<_>>()
                .join(","),
        };
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["classify", "--jsonl", "--domain-offset", &flag])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success());
        let mut right = vec![0u64; labels.len()];
        let mut false_alarms = 0;
        for (line, record) in String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .zip(&records)
        {
            let called: Value = serde_json::from_str(line).unwrap();
            let (truth, called) = (
                record["domain"].as_str().unwrap(),
                called["domain"].as_str().unwrap(),
            );
            if truth == called {
                right[labels.iter().position(|l| l == truth).unwrap()] += 1;
            } else if truth == "general" {
                false_alarms += 1;
            }
        }
        let counts = &row["counts"];
        assert_eq!(counts["right"], json!(right), "{flag}: {row}");
        assert_eq!(counts["false_alarms"], json!(false_alarms), "{flag}: {row}");
    }
    // The model's own offsets are a row; bad settings are refused by flag.
    assert_eq!(rows[1]["offsets"], json!({"finance": 0.5, "legal": 1.0}));
    for (flag, value) in [
        ("--folds", "1"),
        ("--min-confidence", "1.5"),
        ("--false-alarm-cost", "-1"),
    ] {
        let arg = format!("{flag}={value}");
        let (ok, _, err) = run(&["eval", "domain-offsets", "--data", data_arg, &arg]);
        assert!(!ok && err.contains(flag), "{flag}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
