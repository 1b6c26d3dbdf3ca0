//! The release binary as a process: secrets never leave it, SIGTERM drains in-flight requests,
//! a bad config never starts it.

use std::time::Duration;

use serde_json::json;
use switchyard::upstream::sim::{Fault, SimSpec};
use tokio::io::AsyncReadExt;

use crate::harness::*;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn write_config(text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!(
        "switchyard-it-{}-{}.toml",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn provider_keys_never_appear_in_anything_the_server_writes() {
    const KEY: &str = "sk-leakcheck-7f3a9c2e";
    let a = sim("a").await;
    a.script([
        Fault::EchoAuth,
        Fault::Status {
            code: 500,
            retry_after: None,
        },
        Fault::Status {
            code: 401,
            retry_after: None,
        },
        Fault::Malformed,
        Fault::Reset,
    ]);
    let port = free_port();
    let cfg = write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[routing]\ndefault_tier = \"cheap\"\n[providers.a]\nbase_url = \"{}\"\napi_key_env = \"SY_LEAK_KEY\"\n[tiers.cheap]\nretry = {{ max_retries = 0 }}\nhealth = {{ failures = 100 }}\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        a.base_url()
    ));
    let mut child = spawn_router(&cfg, port, "trace", &[("SY_LEAK_KEY", KEY)], true).await;
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let mut written = String::new();
    let mut saw_redacted = false;
    for stream in [false, false, false, false, false, true] {
        let r = c
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "switchyard", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        written.push_str(&format!("{:?}\n", r.headers()));
        let body = r.text().await.unwrap();
        saw_redacted |= body.contains("<redacted>");
        written.push_str(&body);
    }
    for path in ["/metrics", "/ready", "/v1/models", "/health"] {
        written.push_str(
            &c.get(format!("{url}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // The upstream really got the key, and echoed it: the router redacted it.
    assert!(
        saw_redacted,
        "the echoing upstream's body was not redacted:\n{written}"
    );
    let _ = tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().unwrap().to_string())
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.len() > 1000,
        "expected trace logs, got {} bytes",
        logs.len()
    );
    assert!(
        !written.contains(KEY),
        "the key reached a client:\n{written}"
    );
    assert!(!logs.contains(KEY), "the key reached the logs");
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let mut spec = SimSpec::new("slow");
    spec.latency = Duration::from_millis(700);
    spec.chunk_delay = Duration::from_millis(50);
    let a = sim_with(spec).await;
    let port = free_port();
    let cfg = write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[routing]\ndefault_tier = \"cheap\"\n{}\n[tiers.cheap]\ntargets = [{{ provider = \"a\", model = \"m\" }}]\n",
        providers(&[("a", a.base_url())])
    ));
    let mut child = spawn_router(&cfg, port, "warn", &[], false).await;
    let url = format!("http://127.0.0.1:{port}");
    let c = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(format!("{url}/v1/chat/completions"))
                .json(&json!({"model": "switchyard", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        }));
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let pid = child.id().unwrap().to_string();
    assert!(tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap()
        .success());
    for t in tasks {
        let (status, body) = t.await.unwrap().expect("an in-flight request was cut");
        assert_eq!(status, 200);
        assert!(
            body.contains("[DONE]") || body.contains("\"choices\""),
            "{body}"
        );
    }
    let exit = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("did not exit")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(
        c.get(format!("{url}/health")).send().await.is_err(),
        "still accepting after shutdown"
    );
    let _ = std::fs::remove_file(cfg);
}

/// `serve` and `check` with `config` both fail, and say `says`.
async fn both_refuse(config: &str, says: &str) {
    let cfg = write_config(config);
    for cmd in ["serve", "check"] {
        let out = tokio::process::Command::new(BIN)
            .args([cmd, "--config"])
            .arg(&cfg)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{cmd}: {err}");
    }
    let _ = std::fs::remove_file(cfg);
}

#[tokio::test]
async fn a_bad_config_never_starts_and_names_the_key() {
    both_refuse(
        "[routing]\ndefault_tier = \"cheap\"\n[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[tiers.cheap]\ntargets = [{ provider = \"b\", model = \"m\" }]\n",
        "tiers.cheap.targets[0].provider: no provider named \"b\"",
    )
    .await;
    // What only the router model can check (a domain it does not have) is checked by both too.
    both_refuse(
        "[routing]\ndefault_tier = \"cheap\"\ndomain_offsets = { tax = 1.0 }\n[providers.a]\nbase_url = \"http://127.0.0.1:9/v1\"\n[tiers.cheap]\ntargets = [{ provider = \"a\", model = \"m\" }]\n",
        "routing.domain_offsets.tax: not one of the model's domains",
    )
    .await;
    let good = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local.toml");
    let (ok, out, err) = run_switchyard(&["check".as_ref(), "--config".as_ref(), good.as_os_str()]);
    assert!(ok, "{err}");
    assert!(out.contains("router model: embedded"), "{out}");
}
