//! Measures streamed chat completions one at a time, for `benches/load/run`: time to first
//! token (the first body bytes carrying an SSE event), and when each event arrives, to show
//! whether a proxy forwards chunks as they come or coalesces them.
//!
//!   cargo run --release --example stream_probe -- URL MODEL N [PROMPT]
//!
//! URL is the server's base (`http://127.0.0.1:9100`); `PROBE_KEY` in the environment, when set,
//! is sent as a bearer key. Prints one JSON object.

use std::time::{Duration, Instant};

fn pct(xs: &mut [f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (xs.len() - 1) as f64).round() as usize;
    xs[i.min(xs.len() - 1)]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, model, n, rest @ ..] = args.as_slice() else {
        return Err("usage: stream_probe URL MODEL N [PROMPT]".into());
    };
    let n: usize = n.parse()?;
    let prompt = rest.first().map_or(
        "Summarise the plot of Hamlet in two sentences, then list three themes.",
        String::as_str,
    );
    switchyard::upstream::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        .build()?;
    let body = serde_json::json!({
        "model": model, "stream": true,
        "messages": [{"role": "user", "content": prompt}],
    })
    .to_string();
    let endpoint = format!("{}/v1/chat/completions", url.trim_end_matches('/'));
    let key = std::env::var("PROBE_KEY").ok();
    let warmup = (n / 10).max(5);
    let (mut ttft, mut total, mut gaps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut events, mut reads, mut max_per_read, mut failed) = (0usize, 0usize, 0usize, 0usize);
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let mut req = client
            .post(&endpoint)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(k) = &key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await;
        let mut resp = match resp {
            Ok(r) if r.status().is_success() => r,
            _ => {
                failed += 1;
                continue;
            }
        };
        let (mut first, mut last) = (None, None);
        let mut done = false;
        while let Ok(Some(chunk)) = resp.chunk().await {
            let at = Instant::now();
            let text = String::from_utf8_lossy(&chunk);
            let k = text.matches("data:").count();
            if i < warmup || k == 0 {
                done |= text.contains("[DONE]");
                continue;
            }
            done |= text.contains("[DONE]");
            reads += 1;
            events += k;
            max_per_read = max_per_read.max(k);
            if first.is_none() {
                first = Some(at);
            }
            if let Some(prev) = last {
                gaps.push(at.duration_since(prev).as_secs_f64() * 1e6);
            }
            last = Some(at);
        }
        if i < warmup {
            continue;
        }
        match (first, done) {
            (Some(f), true) => {
                ttft.push(f.duration_since(t0).as_secs_f64() * 1e6);
                total.push(t0.elapsed().as_secs_f64() * 1e6);
            }
            _ => failed += 1,
        }
    }
    let out = serde_json::json!({
        "n": n, "failed": failed,
        "ttft_us": {"p50": pct(&mut ttft, 50.0), "p90": pct(&mut ttft, 90.0), "p99": pct(&mut ttft, 99.0)},
        "total_us": {"p50": pct(&mut total, 50.0), "p99": pct(&mut total, 99.0)},
        "events": events, "reads": reads, "max_events_per_read": max_per_read,
        "gap_us": {"min": pct(&mut gaps, 0.0), "p50": pct(&mut gaps, 50.0)},
    });
    println!("{out}");
    Ok(())
}
