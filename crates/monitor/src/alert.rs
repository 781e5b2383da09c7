//! Alerts: JSON lines on stdout (`{"kind":…,"log":…,"index":…,"details":…}`), optionally POSTed
//! to a webhook, and counted for `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::Serialize;

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
    webhook: Option<(reqwest::Client, String)>,
    problem: AtomicBool,
    counters: Mutex<Counters>,
}

#[derive(Default)]
struct Counters {
    verified_size: BTreeMap<String, u64>,
    entries_checked: BTreeMap<String, u64>,
    alerts: BTreeMap<(String, AlertKind), u64>,
}

impl Sink {
    /// A sink writing to stdout and, when given, POSTing each alert to `webhook`.
    pub fn new(webhook: Option<String>) -> Sink {
        Sink {
            webhook: webhook.map(|url| (reqwest::Client::new(), url)),
            ..Sink::default()
        }
    }

    /// Emits an alert.
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
        if let Some((client, url)) = &self.webhook {
            let sent = client
                .post(url)
                .header("content-type", "application/json")
                .body(line)
                .send()
                .await
                .and_then(|r| r.error_for_status());
            if let Err(e) = sent {
                tracing::warn!(%url, error = %e, "webhook failed");
            }
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

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
