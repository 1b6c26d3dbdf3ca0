//! Shared test plumbing: simulated upstreams, a router configured over them, and a client.

use std::time::Duration;

use serde_json::{json, Value};
use switchyard::config::Config;
use switchyard::server::RunningServer;
use switchyard::upstream::sim::{SimServer, SimSpec};

pub struct Harness {
    pub router: RunningServer,
    pub client: reqwest::Client,
}

pub async fn sim(model: &str) -> SimServer {
    SimServer::start(SimSpec::new(model)).await.unwrap()
}

pub async fn sim_with(spec: SimSpec) -> SimServer {
    SimServer::start(spec).await.unwrap()
}

/// A base URL where nothing listens (connection refused).
pub async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1")
}

/// A provider block for each (name, url).
pub fn providers(list: &[(&str, String)]) -> String {
    list.iter()
        .map(|(n, u)| format!("[providers.{n}]\nbase_url = \"{u}\"\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Starts a router on an ephemeral port with the given TOML (its `[server]` listen is ignored).
pub async fn router(toml: &str) -> Harness {
    let config = Config::from_toml(toml, &|_| None)
        .unwrap_or_else(|e| panic!("bad test config: {e}\n{toml}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = switchyard::server::start(config, listener).unwrap();
    switchyard::upstream::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    Harness { router, client }
}

/// A router with one tier `cheap` over the given sims, and `extra` appended to the tier table.
pub async fn one_tier(sims: &[(&str, String)], tier_extra: &str) -> Harness {
    let targets = sims
        .iter()
        .map(|(n, _)| format!("{{ provider = \"{n}\", model = \"{n}-model\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    let toml = format!(
        "[routing]\ndefault_tier = \"cheap\"\n\n{}\n[tiers.cheap]\n{tier_extra}\ntargets = [{targets}]\n",
        providers(sims)
    );
    router(&toml).await
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "What is the capital of France?"}]})
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub elapsed: Duration,
}

impl Reply {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.router.url())
    }

    pub async fn post(&self, body: &Value) -> Reply {
        self.post_raw(body.to_string()).await
    }

    pub async fn post_raw(&self, body: String) -> Reply {
        let start = std::time::Instant::now();
        let r = self
            .client
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).to_string()));
        Reply {
            status,
            headers,
            body,
            elapsed: start.elapsed(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

/// Asserts the OpenAI error shape and returns the message.
pub fn error_message(body: &Value) -> String {
    let e = &body["error"];
    assert!(e["type"].is_string(), "not an OpenAI error body: {body}");
    assert!(
        e.get("param").is_some() && e.get("code").is_some(),
        "{body}"
    );
    e["message"].as_str().unwrap().to_string()
}

/// A free port on 127.0.0.1 (for a router started as a process).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until a router answers `/ready`.
pub async fn wait_ready(url: &str) {
    switchyard::upstream::ensure_crypto_provider();
    let c = reqwest::Client::new();
    for _ in 0..200 {
        if c.get(format!("{url}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("router at {url} never became ready");
}

/// Starts the `switchyard` binary serving `config` on `port`, with `RUST_LOG` and extra
/// environment; its output is captured when `capture`, else dropped. Waits until it is ready.
pub async fn spawn_router(
    config: &std::path::Path,
    port: u16,
    rust_log: &str,
    env: &[(&str, &str)],
    capture: bool,
) -> tokio::process::Child {
    let out = || {
        if capture {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        }
    };
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", rust_log)
        .envs(env.iter().copied())
        .stdout(out())
        .stderr(out())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_ready(&format!("http://127.0.0.1:{port}")).await;
    child
}

/// Runs the `switchyard` binary to completion: (success, stdout, stderr).
pub fn run_switchyard<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
