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
    let classifier = load_classifier(&config.routing.classifier)?;
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
    // Without TCP_NODELAY, the small last writes of a stream wait for the client's delayed ACK
    // (about 40 ms on Linux) under Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        state,
        stop: Some(stop),
        task: Some(task),
    })
}

/// The model the config asks for: the embedded one (if the binary has it), a folder, or none.
pub fn load_classifier(choice: &ClassifierChoice) -> anyhow::Result<Option<Arc<Classifier>>> {
    Ok(match choice {
        ClassifierChoice::None => None,
        ClassifierChoice::Dir(d) => Some(Arc::new(Classifier::load(d)?)),
        ClassifierChoice::Embedded => match Classifier::embedded() {
            Some(m) => Some(Arc::new(m?)),
            None => {
                tracing::warn!("this binary has no embedded router model: the model `switchyard` uses routing.default_tier");
                None
            }
        },
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
