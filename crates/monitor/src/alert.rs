//! Alerts: JSON lines on stdout (`{"kind":…,"log":…,"index":…,"details":…}`), optionally POSTed
//! to a webhook, and counted for `/metrics`.
//!
//! Webhook deliveries never hold up an audit: an alert is put on a bounded queue
//! ([`WEBHOOK_QUEUE`]; when it is full the alert is dropped from the webhook, counted and
//! logged, but still printed) and a task of its own POSTs them in order, each attempt with a
//! timeout ([`WEBHOOK_TIMEOUT`]), retried with backoff up to [`WEBHOOK_ATTEMPTS`] times.
//! [`Sink::finish`] gives pending deliveries a bounded time before the process exits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Alerts waiting for the webhook at most; more are dropped from it (still printed).
pub const WEBHOOK_QUEUE: usize = 1024;
/// How long one webhook request may take, connecting included.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per alert (waiting 500 ms, then 1 s, between them).
pub const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// A checkpoint is malformed or its signature does not verify.
    CheckpointInvalid,
    /// Two signed checkpoints that cannot both be honest; an evidence file was written.
    Fork,
    /// A checkpoint could not be shown consistent with the verified one, without proof of a fork
    /// (e.g. the log serves tiles that do not match its own checkpoints).
    Inconsistent,
    /// A tile or entry bundle is malformed or does not match the entries or the signed root.
    TileMismatch,
    /// An entry is not a canonical btlog entry.
    BadEntry,
    /// One identity (package, version, file) was published with a second digest.
    Conflict,
    /// A yank, unyank or delete names an artifact that was never published.
    UnknownArtifact,
    /// A yank, unyank or delete names an artifact with a digest other than the published one.
    DigestMismatch,
    /// An owner entry names a package with no earlier publish.
    UnknownPackage,
    /// An entry for a watched package (informational).
    Watch,
    /// A publish of a watched package by a publisher not in the rule's list.
    UnexpectedPublisher,
    /// The checkpoint served does not meet the witness policy: the quorum is lost, or its
    /// cosignatures are older than the maximum age (PROTOCOL.md §10.2).
    Witness,
}

impl AlertKind {
    /// Whether the alert means something is wrong (`--once` then exits 1); only `watch` is not.
    pub fn is_problem(self) -> bool {
        self != AlertKind::Watch
    }

    fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

/// One alert.
#[derive(Clone, Debug, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// The log's origin.
    pub log: String,
    /// The entry index, when the alert is about one entry.
    pub index: Option<u64>,
    /// What was found, for a person.
    pub details: String,
}

/// Where alerts go, and the counters `/metrics` shows.
#[derive(Default)]
pub struct Sink {
    webhook: Option<Webhook>,
    problem: AtomicBool,
    counters: Mutex<Counters>,
    /// Alerts not delivered to the webhook: queue full, or every attempt failed.
    webhook_failed: std::sync::Arc<AtomicU64>,
}

/// The queue to the webhook's delivery task, and the task.
struct Webhook {
    queue: Mutex<Option<mpsc::Sender<String>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct Counters {
    verified_size: BTreeMap<String, u64>,
    entries_checked: BTreeMap<String, u64>,
    alerts: BTreeMap<(String, AlertKind), u64>,
}

impl Sink {
    /// A sink writing to stdout and, when given, POSTing each alert to `webhook` from a task of
    /// its own on the current Tokio runtime (without one, the webhook is disabled and logged).
    pub fn new(webhook: Option<String>) -> Sink {
        let failed = std::sync::Arc::new(AtomicU64::new(0));
        let webhook = webhook.and_then(|url| {
            let client = reqwest::Client::builder()
                .timeout(WEBHOOK_TIMEOUT)
                .connect_timeout(WEBHOOK_TIMEOUT)
                .build();
            let client = match client {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%url, error = %e, "webhook disabled");
                    return None;
                }
            };
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                tracing::warn!(%url, "webhook disabled: no async runtime to deliver from");
                return None;
            };
            let (tx, rx) = mpsc::channel(WEBHOOK_QUEUE);
            let worker = runtime.spawn(deliver(client, url, rx, failed.clone()));
            Some(Webhook {
                queue: Mutex::new(Some(tx)),
                worker: Mutex::new(Some(worker)),
            })
        });
        Sink {
            webhook,
            webhook_failed: failed,
            ..Sink::default()
        }
    }

    /// Emits an alert: stdout and the counters now, the webhook queued (never waited for).
    pub async fn alert(&self, alert: Alert) {
        if alert.kind.is_problem() {
            self.problem.store(true, Ordering::SeqCst);
        }
        if let Ok(mut c) = self.counters.lock() {
            *c.alerts.entry((alert.log.clone(), alert.kind)).or_default() += 1;
        }
        let line = serde_json::to_string(&alert).unwrap_or_default();
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
        let Some(webhook) = &self.webhook else {
            return;
        };
        let queued = match webhook.queue.lock() {
            Ok(q) => q.as_ref().map(|tx| tx.try_send(line)),
            Err(_) => None,
        };
        if !matches!(queued, Some(Ok(()))) {
            self.webhook_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("webhook queue full or closed: alert not sent to the webhook");
        }
    }

    /// Stops taking webhook deliveries and waits up to `within` for the queued ones; those
    /// still pending then are abandoned (and logged). Returns at once without a webhook.
    pub async fn finish(&self, within: Duration) {
        let Some(webhook) = &self.webhook else {
            return;
        };
        if let Ok(mut q) = webhook.queue.lock() {
            q.take();
        }
        let worker = webhook.worker.lock().ok().and_then(|mut w| w.take());
        let Some(mut worker) = worker else {
            return;
        };
        if tokio::time::timeout(within, &mut worker).await.is_err() {
            worker.abort();
            tracing::warn!(
                "webhook deliveries still pending after {within:?}: abandoned (alerts are on stdout)"
            );
        }
    }

    /// Whether any problem alert was emitted.
    pub fn found_problem(&self) -> bool {
        self.problem.load(Ordering::SeqCst)
    }

    /// Records the verified tree size of `log`.
    pub fn set_verified(&self, log: &str, size: u64) {
        if let Ok(mut c) = self.counters.lock() {
            c.verified_size.insert(log.to_owned(), size);
        }
    }

    /// Counts entries checked in `log`.
    pub fn add_checked(&self, log: &str, n: u64) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entries_checked.entry(log.to_owned()).or_default() += n;
        }
    }

    /// The counters in the Prometheus text format.
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let Ok(c) = self.counters.lock() else {
            return out;
        };
        let _ = writeln!(out, "# TYPE btlog_monitor_verified_size gauge");
        for (log, v) in &c.verified_size {
            let _ = writeln!(
                out,
                "btlog_monitor_verified_size{{log=\"{}\"}} {v}",
                esc(log)
            );
        }
        let _ = writeln!(out, "# TYPE btlog_monitor_entries_checked_total counter");
        for (log, v) in &c.entries_checked {
            let _ = writeln!(
                out,
                "btlog_monitor_entries_checked_total{{log=\"{}\"}} {v}",
                esc(log)
            );
        }
        let _ = writeln!(out, "# TYPE btlog_monitor_webhook_failures_total counter");
        let _ = writeln!(
            out,
            "btlog_monitor_webhook_failures_total {}",
            self.webhook_failed.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# TYPE btlog_monitor_alerts_total counter");
        for ((log, kind), v) in &c.alerts {
            let _ = writeln!(
                out,
                "btlog_monitor_alerts_total{{log=\"{}\",kind=\"{}\"}} {v}",
                esc(log),
                kind.name()
            );
        }
        out
    }
}

/// POSTs queued alerts to `url` in order, each with up to [`WEBHOOK_ATTEMPTS`] attempts; ends
/// when the queue is closed and drained.
async fn deliver(
    client: reqwest::Client,
    url: String,
    mut queue: mpsc::Receiver<String>,
    failed: std::sync::Arc<AtomicU64>,
) {
    while let Some(line) = queue.recv().await {
        let mut wait = WEBHOOK_BACKOFF;
        for attempt in 1..=WEBHOOK_ATTEMPTS {
            let sent = client
                .post(&url)
                .header("content-type", "application/json")
                .body(line.clone())
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match sent {
                Ok(_) => break,
                Err(e) if attempt < WEBHOOK_ATTEMPTS => {
                    tracing::warn!(%url, attempt, error = %e, "webhook failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%url, error = %e, "webhook failed; alert not delivered");
                }
            }
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
