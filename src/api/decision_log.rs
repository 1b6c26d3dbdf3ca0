//! The opt-in decision log: one JSON line per answered request, in the evaluation dataset format
//! (`eval/dataset.schema.json`), so production traffic can become evaluation data. The prompt
//! text is written only when `server.decision_log_prompts` is on.
//!
//! Lines go through a bounded channel to a writer thread, so the request path never waits on
//! the disk; when the writer falls behind, lines are dropped and counted.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};

/// Lines buffered before new ones are dropped.
const QUEUE: usize = 8192;

#[derive(Debug)]
pub struct DecisionLog {
    tx: SyncSender<String>,
    pub prompts: bool,
    dropped: AtomicU64,
}

impl DecisionLog {
    /// Opens `path` for appending and starts the writer thread.
    pub fn open(path: &Path, prompts: bool) -> std::io::Result<DecisionLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut ok = writeln!(out, "{line}").is_ok();
                    // Drain what is queued, then flush so the file is current when idle.
                    while let Ok(more) = rx.try_recv() {
                        ok &= writeln!(out, "{more}").is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        tracing::warn!("cannot write the decision log");
                    }
                }
                let _ = out.flush();
            })?;
        Ok(DecisionLog {
            tx,
            prompts,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues one record; never blocks.
    pub fn record(&self, record: &crate::eval::dataset::Record) {
        let Ok(line) = serde_json::to_string(record) else {
            return;
        };
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("the decision log is behind: dropping lines");
                }
            }
        }
    }

    /// Lines dropped so far because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
