//! The long fault-injection run: `scripts/chaos` (or
//! `cargo run --release --example chaos -- --requests 20000 --concurrency 64`).
//!
//! Starts the chaos upstreams in this process and the release `switchyard` binary as a child
//! process (so its memory and open files can be read from /proc), runs the load, prints the
//! table, and exits non-zero if any guarantee was broken.

use std::process::{ExitCode, Stdio};
use std::time::Duration;

use switchyard::chaos::{self, Outcome, Upstreams, TOTAL_SLO};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// (resident memory in KiB, open file descriptors) of a process.
fn resources(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let requests: usize = arg("--requests", "20000").parse()?;
    let concurrency: usize = arg("--concurrency", "64").parse()?;
    let bin = arg("--bin", "target/release/switchyard");
    switchyard::upstream::ensure_crypto_provider();

    let ups = Upstreams::start().await?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let dir = std::env::temp_dir().join(format!("switchyard-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("chaos.toml");
    std::fs::write(&cfg, ups.config(&format!("127.0.0.1:{port}")))?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot start {bin}: {e} (build it with cargo build --release)")
        })?;
    let pid = child.id().unwrap_or(0);
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client
            .get(format!("{url}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::ensure!(ready, "the router did not become ready");

    let (rss0, fds0) = resources(pid);
    let warm = chaos::load(&url, 2_000.min(requests), concurrency).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_warm, fds_warm) = resources(pid);
    let report = chaos::load(&url, requests, concurrency).await;
    let (rss_peak, fds_peak) = resources(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_end, fds_end) = resources(pid);
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let transitions = chaos::transitions(&metrics);

    println!(
        "# Chaos run: {requests} requests at concurrency {concurrency} (+ {} warm-up)\n",
        warm.requests
    );
    println!(
        "{}",
        chaos::render(&report, &ups.injected(), &ups.calls(), &transitions)
    );
    println!("| router process | resident memory | open files |\n|---|---|---|");
    println!("| at start | {:.1} MB | {fds0} |", rss0 as f64 / 1024.0);
    println!(
        "| after warm-up (baseline) | {:.1} MB | {fds_warm} |",
        rss_warm as f64 / 1024.0
    );
    println!(
        "| end of load | {:.1} MB | {fds_peak} |",
        rss_peak as f64 / 1024.0
    );
    println!(
        "| 1 s after | {:.1} MB | {fds_end} |",
        rss_end as f64 / 1024.0
    );

    let mut broken = Vec::new();
    let violations = report.count(|o| matches!(o, Outcome::Violation(_)));
    if violations > 0 {
        broken.push(format!(
            "{violations} responses were neither a complete answer nor a well-formed error"
        ));
    }
    let errors = report.count(|o| matches!(o, Outcome::HttpError(_)));
    if errors > 0 {
        broken.push(format!(
            "{errors} requests failed although a healthy target was available"
        ));
    }
    let limit = (TOTAL_SLO + Duration::from_millis(100)).as_millis() as f64;
    if report.max_ms() > limit {
        broken.push(format!(
            "slowest response {:.0} ms > SLO + 100 ms",
            report.max_ms()
        ));
    }
    if rss_end > rss_warm + 20 * 1024 {
        broken.push(format!("memory grew from {rss_warm} KiB to {rss_end} KiB"));
    }
    if fds_end > fds_warm + concurrency {
        broken.push(format!("open files grew from {fds_warm} to {fds_end}"));
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    if broken.is_empty() {
        println!("\nall guarantees held");
        Ok(ExitCode::SUCCESS)
    } else {
        for b in &broken {
            println!("BROKEN: {b}");
        }
        Ok(ExitCode::FAILURE)
    }
}
