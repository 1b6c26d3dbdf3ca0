//! The official `openai` Python SDK against the router: a plain call, a streaming call and a
//! models list. `scripts/test` installs the SDK in `.venv` and sets `SWITCHYARD_TEST_PYTHON`;
//! without it the test says it was skipped and passes, so `cargo test` alone still works offline.

use std::process::Stdio;

use crate::harness::*;

const CLIENT: &str = r#"
import sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
r = client.chat.completions.create(model="switchyard", messages=[{"role": "user", "content": "hello"}])
assert r.choices[0].message.content.startswith("a answers"), r
assert r.model == "a", r.model
raw = client.chat.completions.with_raw_response.create(model="switchyard/cheap", messages=[{"role": "user", "content": "hi"}])
assert raw.headers["x-switchyard-tier"] == "cheap"
parts = []
for chunk in client.chat.completions.create(model="switchyard", messages=[{"role": "user", "content": "stream please"}], stream=True, stream_options={"include_usage": True}):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts).startswith("a answers"), parts
assert usage.completion_tokens > 0
ids = [m.id for m in client.models.list()]
assert "switchyard" in ids and "switchyard/cheap" in ids and "a-model" in ids, ids
try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected NotFoundError")
except Exception as e:
    assert type(e).__name__ == "NotFoundError", repr(e)
print("sdk ok")
"#;

#[tokio::test]
async fn the_official_openai_python_sdk_works() {
    let Ok(python) = std::env::var("SWITCHYARD_TEST_PYTHON") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must run the SDK test: use scripts/test, which sets SWITCHYARD_TEST_PYTHON"
        );
        eprintln!(
            "SKIPPED: set SWITCHYARD_TEST_PYTHON (scripts/test does) to run the openai SDK test"
        );
        return;
    };
    let a = sim("a").await;
    let h = one_tier(&[("a", a.base_url())], "").await;
    let url = h.router.url();
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(CLIENT)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "openai SDK client failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk ok"));
    assert_eq!(a.calls(), 3);
}
