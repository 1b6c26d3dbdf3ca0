//! Starting and stopping the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{app, AppState};
use crate::classifier::Classifier;
use crate::config::{ClassifierChoice, Config};
use crate::telemetry::Metrics;

/// A server running in the background; stops gracefully on `shutdown` or when dropped.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets in-flight requests finish, and waits for them.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Builds the application and starts serving on `listener`.
pub fn start(config: Config, listener: TcpListener) -> anyhow::Result<RunningServer> {
    let addr = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let classifier = load_classifier(&config.routing)?;
    let log = match &config.server.decision_log {
        Some(path) => Some(
            crate::api::decision_log::DecisionLog::open(path, config.server.decision_log_prompts)
                .map_err(|e| {
                anyhow::anyhow!("server.decision_log: cannot open {}: {e}", path.display())
            })?,
        ),
        None => None,
    };
    let mut state = AppState::new(Arc::new(config), metrics, classifier)?;
    if let Some(log) = log {
        state = state.with_decision_log(log);
    }
    let state = Arc::new(state);
    let router = app(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let header_timeout = state.config.server.header_read_timeout;
    let task = tokio::spawn(serve(listener, router, header_timeout, stopped));
    Ok(RunningServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Accepts connections until `stopped`, then lets every open connection finish its requests.
///
/// hyper directly rather than `axum::serve`, for two settings that one does not expose: a
/// deadline for a client to send its request headers (slow-header clients hold a connection and
/// a task each), and TCP_NODELAY (without it, a stream's small last writes wait for the client's
/// delayed ACK, about 40 ms on Linux).
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: std::time::Duration,
    mut stopped: oneshot::Receiver<()>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
                let svc = hyper_util::service::TowerToHyperService::new(router.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The model the routing config asks for: the embedded one (if the binary has it), a folder,
/// or none; routing by its complexity score for `complexity_pair` if one is named, with the
/// model folder of `domain_check` re-scoring the domains it is unsure of (and the intents, with
/// `intent_check_below`).
pub fn load_classifier(
    routing: &crate::config::Routing,
) -> anyhow::Result<Option<Arc<Classifier>>> {
    let check = &routing.domain_check;
    let model = match &routing.classifier {
        ClassifierChoice::None => None,
        ClassifierChoice::Dir(d) => Some(Classifier::load(d)?),
        ClassifierChoice::Embedded => match Classifier::embedded() {
            Some(m) => Some(m?),
            None => {
                tracing::warn!("this binary has no embedded router model: the model `switchyard` uses routing.default_tier");
                None
            }
        },
    };
    let model = match (model, routing.complexity_pair.as_deref()) {
        (Some(m), Some(pair)) => {
            let m = m
                .with_complexity_pair(Some(pair))
                .map_err(|e| anyhow::anyhow!("routing.complexity_pair: {e}"))?;
            tracing::info!(pair = %pair, "routing by the complexity score of this recorded pair");
            Some(m)
        }
        (m, _) => m,
    };
    let model = match (model, check) {
        (Some(m), Some((dir, below))) => {
            let m = m
                .with_domain_check_from(dir, *below)
                .map_err(|e| anyhow::anyhow!("routing.domain_check: {e}"))?;
            tracing::info!(
                model = %dir.display(),
                below = %below,
                "domain check on: this model re-scores the domain of prompts whose probability of general is below the threshold"
            );
            Some(m)
        }
        (m, _) => m,
    };
    let model = match (model, routing.intent_check_below) {
        (Some(m), Some(below)) => {
            let m = m
                .with_intent_check(below)
                .map_err(|e| anyhow::anyhow!("routing.intent_check_below: {e}"))?;
            tracing::info!(
                below = %below,
                "intent check on: the domain check's model also re-reads the intent of prompts whose intent's probability is below the threshold"
            );
            Some(m)
        }
        (m, _) => m,
    };
    Ok(match (model, &routing.domain_offsets) {
        (Some(m), Some(offsets)) => {
            let trained = crate::classifier::offsets_text(&m.config.domain_offsets);
            let m = m
                .with_domain_offsets(offsets)
                .map_err(|e| anyhow::anyhow!("routing.domain_offsets.{e}"))?;
            tracing::info!(
                offsets = %crate::classifier::offsets_text(offsets),
                trained = %trained,
                "domain offsets from routing.domain_offsets, in place of the model's"
            );
            Some(Arc::new(m))
        }
        (m, _) => m.map(Arc::new),
    })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Serves until a shutdown signal, then drains in-flight requests. `started` is when the
/// process started, for the start-up time in the ready log line.
pub async fn serve_forever(config: Config, started: std::time::Instant) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let server = start(config, listener)?;
    tracing::info!(
        addr = %server.addr,
        startup_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0),
        "switchyard ready"
    );
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    server.shutdown().await;
    Ok(())
}
