//! A bounded fault-injection run under load (the long one is `scripts/chaos`).

use std::time::Duration;

use switchyard::chaos::{self, Outcome, Upstreams, TOTAL_SLO};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_under_load_lose_nothing() {
    // The router runs as its own process, so its open files can be counted apart from the
    // other tests running in this one.
    let ups = Upstreams::start().await.unwrap();
    let port = crate::harness::free_port();
    let cfg = std::env::temp_dir().join(format!("switchyard-chaos-it-{}.toml", std::process::id()));
    std::fs::write(&cfg, ups.config(&format!("127.0.0.1:{port}"))).unwrap();
    let mut router = crate::harness::spawn_router(&cfg, port, "error", &[], false).await;
    let pid = router.id().unwrap();
    switchyard::upstream::ensure_crypto_provider();
    let url = format!("http://127.0.0.1:{port}");

    // Warm up to the steady state of the connection pools (the same load), then take the baseline.
    let warm = chaos::load(&url, 2_000, 32).await;
    assert_eq!(
        warm.count(|o| matches!(o, Outcome::Violation(_))),
        0,
        "{:?}",
        warm.outcomes
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_before = open_fds(pid);

    let report = chaos::load(&url, 2_000, 32).await;
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let transitions = chaos::transitions(&metrics);
    eprintln!(
        "{}",
        chaos::render(&report, &ups.injected(), &ups.calls(), &transitions)
    );

    assert_eq!(report.requests, 2_000);
    // Every request got exactly one complete answer or one well-formed error.
    assert_eq!(
        report.count(|o| matches!(o, Outcome::Violation(_))),
        0,
        "{:?}",
        report.outcomes
    );
    // A healthy target is always there: no request fails, except streams broken after their
    // first byte (which cannot fail over and must end with an error event).
    assert_eq!(
        report.count(|o| matches!(o, Outcome::HttpError(_))),
        0,
        "{:?}",
        report.outcomes
    );
    assert!(
        report.count(|o| *o == Outcome::Ok) >= 1_900,
        "{:?}",
        report.outcomes
    );
    // No response later than the total SLO plus 100 ms.
    assert!(
        report.max_ms() <= (TOTAL_SLO + Duration::from_millis(100)).as_millis() as f64,
        "max {} ms",
        report.max_ms()
    );
    // Faults of every kind were injected (and connection refused, from the dead target).
    assert!(ups.injected().len() >= 11, "{:?}", ups.injected());
    // Breakers opened on the failing targets and let them back after their cooldown.
    let n = |t: &str, to: &str| {
        transitions
            .get(&(t.to_string(), to.to_string()))
            .copied()
            .unwrap_or(0)
    };
    assert!(n("dead/dead", "unhealthy") >= 1, "{transitions:?}");
    assert!(n("faulty-a/faulty-a", "unhealthy") >= 1, "{transitions:?}");
    assert!(n("faulty-a/faulty-a", "healthy") >= 1, "{transitions:?}");
    // Nothing leaks: open files stay at the warmed-up baseline. Idle pooled connections come
    // and go with the mix of targets in use, at most one per concurrent request; a leak of one
    // descriptor per failed call would be hundreds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_after = open_fds(pid);
    assert!(
        fds_after <= fds_before + 32,
        "fds {fds_before} -> {fds_after}"
    );
    let _ = router.start_kill();
    let _ = router.wait().await;
    let _ = std::fs::remove_file(cfg);
}
