//! The log publishes to a bucket (PROTOCOL.md §12.1): a task behind the sequencer takes the
//! newest served checkpoint, uploads what it covers and then the checkpoint
//! ([`btlog_bucket::Publisher`]), records the size published durably, and deletes replaced
//! partial tiles once readers of older checkpoints have had time to move on. Ingest never
//! waits for it (unless `acknowledge = "published"`); a bucket that fails is retried with
//! backoff, and one that holds another log's checkpoint stops publishing, loudly.

use super::sequencer::SignedCheckpoint;
use btlog_bucket::{PublishError, Publisher};
use btlog_core::merkle::tiles::Tile;
use btlog_store::Store;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Waits after a failed round, doubling up to the last.
const RETRY: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
];
/// Waits before checking a refused bucket again.
const REFUSED_RETRY: Duration = Duration::from_secs(10);

/// What the publisher has done, for `/metrics`, `/healthz` and acknowledgements.
pub struct PublishState {
    url: String,
    /// The newest checkpoint in the bucket (at start, the stored one of the watermark's size).
    published: watch::Sender<SignedCheckpoint>,
    /// When the oldest served checkpoint not yet in the bucket was seen.
    pending_since: Mutex<Option<Instant>>,
    /// Why publishing is refused, while it is.
    refused: Mutex<Option<String>>,
    /// The error of the last round, while rounds fail.
    last_error: Mutex<Option<String>>,
    rounds: AtomicU64,
    failures: AtomicU64,
    objects: AtomicU64,
    bytes: AtomicU64,
}

impl PublishState {
    /// The bucket's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Why publishing is refused, if it is.
    pub fn refused(&self) -> Option<String> {
        lock(&self.refused).clone()
    }

    /// Seconds since the oldest checkpoint not yet published was signed (0 when caught up).
    pub fn lag_seconds(&self) -> f64 {
        lock(&self.pending_since).map_or(0.0, |t| t.elapsed().as_secs_f64())
    }

    /// The tree size whose checkpoint is in the bucket.
    pub fn published(&self) -> u64 {
        self.published.borrow().size
    }

    /// The newest checkpoint in the bucket.
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.published.borrow().clone()
    }

    /// A receiver that sees every checkpoint published.
    pub fn watch(&self) -> watch::Receiver<SignedCheckpoint> {
        self.published.subscribe()
    }

    /// Waits until the bucket holds a checkpoint for `size` or more; false after `timeout`.
    pub async fn wait_for(&self, size: u64, timeout: Duration) -> bool {
        let mut rx = self.published.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| p.size >= size))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The `/healthz` line.
    pub fn health(&self, served: u64) -> String {
        let published = self.published();
        match self.refused() {
            Some(why) => format!("publish {}: REFUSED: {why}\n", self.url),
            None => format!(
                "publish {}: size {published}, lag {} entries, {:.1} s{}\n",
                self.url,
                served.saturating_sub(published),
                self.lag_seconds(),
                lock(&self.last_error)
                    .as_ref()
                    .map(|e| format!(", failing: {e}"))
                    .unwrap_or_default()
            ),
        }
    }

    /// Prometheus text.
    pub fn render(&self, served: u64, out: &mut String) {
        let published = self.published();
        let refused = u8::from(self.refused().is_some());
        let _ = write!(
            out,
            "# HELP btlog_publish_size Tree size whose checkpoint is in the bucket.\n\
             # TYPE btlog_publish_size gauge\nbtlog_publish_size {published}\n\
             # HELP btlog_publish_lag_entries Entries served but not yet in the bucket.\n\
             # TYPE btlog_publish_lag_entries gauge\nbtlog_publish_lag_entries {}\n\
             # HELP btlog_publish_lag_seconds Age of the oldest checkpoint not yet in the bucket.\n\
             # TYPE btlog_publish_lag_seconds gauge\nbtlog_publish_lag_seconds {:.3}\n\
             # HELP btlog_publish_refused 1 while the bucket holds what this log must not overwrite.\n\
             # TYPE btlog_publish_refused gauge\nbtlog_publish_refused {refused}\n\
             # HELP btlog_publish_rounds_total Checkpoints published.\n\
             # TYPE btlog_publish_rounds_total counter\nbtlog_publish_rounds_total {}\n\
             # HELP btlog_publish_failures_total Publishing rounds that failed.\n\
             # TYPE btlog_publish_failures_total counter\nbtlog_publish_failures_total {}\n\
             # HELP btlog_publish_objects_total Objects written to the bucket.\n\
             # TYPE btlog_publish_objects_total counter\nbtlog_publish_objects_total {}\n\
             # HELP btlog_publish_bytes_total Bytes written to the bucket.\n\
             # TYPE btlog_publish_bytes_total counter\nbtlog_publish_bytes_total {}\n",
            served.saturating_sub(published),
            self.lag_seconds(),
            self.rounds.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.objects.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts publishing every checkpoint `served` sees; returns the shared state.
pub fn spawn(
    publisher: Publisher,
    store: Store,
    served: watch::Receiver<SignedCheckpoint>,
    grace: Duration,
) -> Result<Arc<PublishState>, btlog_store::StoreError> {
    let url = publisher.bucket().url().to_owned();
    let size = store.published_size(&url)?;
    // Until a round publishes, the bucket's checkpoint is taken to be the one this log
    // signed for the watermark's size (or, before any, the one it serves).
    let published = match store.checkpoint(size)? {
        Some(note) => SignedCheckpoint {
            size,
            note,
            signed_at: None,
        },
        None => served.borrow().clone(),
    };
    let state = Arc::new(PublishState {
        url,
        published: watch::Sender::new(published),
        pending_since: Mutex::new(None),
        refused: Mutex::new(None),
        last_error: Mutex::new(None),
        rounds: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        objects: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
    });
    let task = Task {
        publisher,
        store,
        state: state.clone(),
        grace,
        deletions: VecDeque::new(),
    };
    tokio::spawn(task.run(served));
    Ok(state)
}

struct Task {
    publisher: Publisher,
    store: Store,
    state: Arc<PublishState>,
    grace: Duration,
    /// Replaced partial tiles, with when they may go.
    deletions: VecDeque<(Instant, Vec<Tile>)>,
}

impl Task {
    async fn run(mut self, mut served: watch::Receiver<SignedCheckpoint>) {
        let mut done: Option<String> = None;
        let mut failed = 0;
        loop {
            let target = served.borrow_and_update().clone();
            if done.as_deref() != Some(target.note.as_str()) {
                lock(&self.state.pending_since).get_or_insert_with(Instant::now);
                let started = Instant::now();
                match self.publisher.publish(&target.note).await {
                    Ok(p) => {
                        failed = 0;
                        done = Some(target.note.clone());
                        self.published(p, target, started, &served).await;
                        continue;
                    }
                    Err(e) => {
                        let wait = self.failed(e, failed);
                        failed += 1;
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                }
            }
            self.delete_due().await;
            let next_deletion = self.deletions.front().map(|(due, _)| *due);
            tokio::select! {
                changed = served.changed() => if changed.is_err() { return },
                () = sleep_until(next_deletion) => {}
            }
        }
    }

    async fn published(
        &mut self,
        p: btlog_bucket::Published,
        target: SignedCheckpoint,
        started: Instant,
        served: &watch::Receiver<SignedCheckpoint>,
    ) {
        let s = &self.state;
        *lock(&s.refused) = None;
        *lock(&s.last_error) = None;
        s.rounds.fetch_add(1, Ordering::Relaxed);
        s.objects.fetch_add(p.objects, Ordering::Relaxed);
        s.bytes.fetch_add(p.bytes, Ordering::Relaxed);
        // A newer checkpoint arrived during the round: it has waited at most this long.
        *lock(&s.pending_since) = (served.borrow().size > p.size).then_some(started);
        let (store, url, size) = (self.store.clone(), s.url.clone(), p.size);
        let saved = tokio::task::spawn_blocking(move || store.set_published_size(&url, size)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(size, "could not record the published size");
        }
        s.published.send_if_modified(|v| {
            let newer = target.size == p.size && target.size >= v.size && target.note != v.note;
            if newer {
                *v = target;
            }
            newer
        });
        tracing::debug!(size = p.size, objects = p.objects, "published");
        if !p.replaced.is_empty() {
            self.deletions
                .push_back((Instant::now() + self.grace, p.replaced));
        }
    }

    /// Records a failed round; returns how long to wait before the next.
    fn failed(&self, e: PublishError, failed: usize) -> Duration {
        self.state.failures.fetch_add(1, Ordering::Relaxed);
        *lock(&self.state.last_error) = Some(e.to_string());
        if let PublishError::Refused { reason, .. } = &e {
            if lock(&self.state.refused).replace(reason.clone()).is_none() {
                tracing::error!(error = %e, "publishing stopped");
            }
            return REFUSED_RETRY;
        }
        tracing::warn!(error = %e, "publishing failed; retrying");
        RETRY[failed.min(RETRY.len() - 1)]
    }

    async fn delete_due(&mut self) {
        let now = Instant::now();
        while self.deletions.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, tiles)) = self.deletions.pop_front() {
                if let Err(e) = self.publisher.delete(&tiles).await {
                    tracing::warn!(error = %e, "could not delete replaced partial tiles");
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
