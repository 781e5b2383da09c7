//! The sequencer: the log's single writer thread. Submissions queue on a bounded channel; the
//! thread gathers them into a group commit (bounded by entry count and a short delay),
//! deduplicates each against the identity index and the batch itself, stages the new entries,
//! signs the checkpoint for the staged tree and commits both in one synced write, and only then
//! answers every submitter of the batch. Once a write failed after it may have landed, the
//! writer is stopped: later submissions are refused (503) without being planned or signed, until
//! a restart reloads the tree from disk.

use super::error::{ErrorKind, LogError};
use super::metrics::Metrics;
use btlog_core::checkpoint::Checkpoint;
use btlog_core::claims::{self, Published, Verdict};
use btlog_core::entry::{Entry, Kind};
use btlog_core::merkle::{self, Hash};
use btlog_core::note::Signer;
use btlog_core::wire::Status;
use btlog_store::{Appender, NewEntry, Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// A checkpoint the log signed, with its tree size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The tree size it commits to.
    pub size: u64,
    /// The signed note text.
    pub note: String,
    /// When this process signed it (Unix seconds); None for one signed before it started.
    pub signed_at: Option<u64>,
}

/// The result for one submitted entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryResult {
    /// Index of the entry in the log (the existing one for duplicates and conflicts).
    pub index: u64,
    /// Leaf hash of the entry at `index`.
    pub leaf_hash: Hash,
    /// New, duplicate or conflict.
    pub status: Status,
    /// For conflicts: the index holding the identity's logged digest.
    pub existing_index: Option<u64>,
}

/// The reply to a submission: per-entry results and the checkpoint that covers them.
#[derive(Clone, Debug)]
pub struct SubmitOutcome {
    /// The signed checkpoint covering every result.
    pub checkpoint: SignedCheckpoint,
    /// One result per submitted entry, in order.
    pub results: Vec<EntryResult>,
}

type Reply = oneshot::Sender<Result<SubmitOutcome, LogError>>;

/// A validated entry with what the writer needs of it, computed by the submitting task so
/// that the single writer thread does not: its encoding, leaf hash and identity key.
pub struct Submission {
    entry: Entry,
    key: Hash,
    new: NewEntry,
}

impl Submission {
    /// Encodes and hashes `entry`: what the store appends if it is new.
    pub fn new(entry: Entry) -> Submission {
        let key = entry.identity_key();
        let new = NewEntry::for_entry(&entry);
        Submission { entry, key, new }
    }

    /// Its canonical encoding (the leaf data).
    pub fn data(&self) -> &[u8] {
        self.new.data()
    }
}

struct Job {
    entries: Vec<Submission>,
    reply: Reply,
}

enum Msg {
    Job(Job),
    Stop,
}

/// Batching bounds of the sequencer.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Entries that close a batch early.
    pub max_entries: usize,
    /// How long to wait for more submissions after the first.
    pub delay: Duration,
    /// Submissions that may wait in the queue.
    pub queue_depth: usize,
}

/// Handle on the writer thread.
pub struct Sequencer {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
}

impl Sequencer {
    /// Starts the writer thread; it owns the appender and the signing key.
    pub fn start(
        appender: Appender,
        signer: Signer,
        limits: BatchLimits,
        metrics: Arc<Metrics>,
        latest: watch::Sender<SignedCheckpoint>,
    ) -> std::io::Result<Sequencer> {
        let (tx, rx) = sync_channel(limits.queue_depth);
        let writer = Writer {
            appender,
            signer,
            metrics: metrics.clone(),
            latest,
        };
        let thread = std::thread::Builder::new()
            .name("btlog-sequencer".into())
            .spawn(move || writer.run(rx, limits))?;
        Ok(Sequencer {
            tx,
            thread: Mutex::new(Some(thread)),
            metrics,
        })
    }

    /// Queues validated entries and waits for their durable, checkpointed results. A full
    /// queue is refused at once (503) rather than buffered.
    pub async fn submit(&self, entries: Vec<Submission>) -> Result<SubmitOutcome, LogError> {
        let (reply, rx) = oneshot::channel();
        self.metrics.queued();
        if let Err(e) = self.tx.try_send(Msg::Job(Job { entries, reply })) {
            self.metrics.dequeued();
            let reason = match e {
                TrySendError::Full(_) => "submission queue is full; retry later",
                TrySendError::Disconnected(_) => "log is shutting down",
            };
            return Err(LogError::new(ErrorKind::Overloaded, reason));
        }
        rx.await
            .map_err(|_| LogError::new(ErrorKind::Overloaded, "log is shutting down"))?
    }

    /// Finishes every queued submission, then stops the thread and waits for it (blocking).
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("sequencer thread panicked");
            }
        }
    }
}

struct Writer {
    appender: Appender,
    signer: Signer,
    metrics: Arc<Metrics>,
    latest: watch::Sender<SignedCheckpoint>,
}

/// An identity already claimed: its first publish, and that entry's leaf hash.
#[derive(Clone, Copy)]
struct Claim {
    published: Published,
    leaf_hash: Hash,
}

/// The new entries and identity claims of the batch being built.
#[derive(Default)]
struct Pending {
    claims: HashMap<Hash, Claim>,
    /// Packages published by an entry of this batch.
    published: HashSet<String>,
    entries: Vec<NewEntry>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>, limits: BatchLimits) {
        let mut stopping = false;
        while !stopping {
            let first = match rx.recv() {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Stop) | Err(_) => break,
            };
            self.metrics.dequeued();
            let mut count = first.entries.len();
            let mut jobs = vec![first];
            let deadline = Instant::now() + limits.delay;
            while count < limits.max_entries {
                let next = if stopping {
                    rx.try_recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                };
                match next {
                    Ok(Msg::Job(job)) => {
                        self.metrics.dequeued();
                        count += job.entries.len();
                        jobs.push(job);
                    }
                    Ok(Msg::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            self.process(jobs);
        }
        tracing::info!(size = self.appender.size(), "sequencer stopped");
    }

    /// Plans every job against the log and the batch so far, commits the new entries with a
    /// freshly signed checkpoint, and answers each job.
    fn process(&mut self, jobs: Vec<Job>) {
        // A stopped writer's indexes may hold a batch that landed but was never published, so
        // planning against them would misreport; every job is refused before anything else.
        if self.appender.store().writer_stopped() {
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::WriterPoisoned.into()));
            }
            return;
        }
        let started = Instant::now();
        let stored = match self.stored_identities(&jobs) {
            Ok(found) => found,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        let mut pending = Pending::default();
        let mut accepted = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.plan(job.entries, &stored, &mut pending) {
                Ok(results) => accepted.push((job.reply, results)),
                Err(e) => {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
        if accepted.is_empty() {
            return;
        }
        let appended = pending.entries.len();
        let checkpoint = match self.commit(&pending.entries) {
            Ok(c) => c,
            Err(e) => {
                for (reply, _) in accepted {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
        };
        if appended > 0 {
            self.metrics.record_batch(appended, started.elapsed());
            tracing::debug!(appended, size = checkpoint.size, "batch committed");
        }
        for (reply, results) in accepted {
            let _ = reply.send(Ok(SubmitOutcome {
                checkpoint: checkpoint.clone(),
                results,
            }));
        }
    }

    /// Decides the fate of each entry of one job. On error nothing of the job is kept.
    fn plan(
        &self,
        entries: Vec<Submission>,
        stored: &HashMap<Hash, u64>,
        pending: &mut Pending,
    ) -> Result<Vec<EntryResult>, LogError> {
        let base = self.appender.size();
        let mut local = Pending::default();
        let mut results = Vec::with_capacity(entries.len());
        for (i, submission) in entries.into_iter().enumerate() {
            let Submission { entry, key, new } = submission;
            let leaf_hash = new.leaf_hash();
            let claim = match local.claims.get(&key).or_else(|| pending.claims.get(&key)) {
                _ if !claims::needs_identity(entry.kind) => None,
                Some(c) => Some(*c),
                None => stored
                    .get(&key)
                    .map(|index| self.stored_claim(*index))
                    .transpose()?,
            };
            let package_published = !claims::needs_identity(entry.kind)
                && self.published(&entry.package, &[&local, pending])?;
            let verdict = claims::judge(&entry, claim.map(|c| c.published), package_published);
            let result = match (verdict, claim) {
                (Verdict::New, _) => {
                    let index = base + (pending.entries.len() + local.entries.len()) as u64;
                    if entry.kind == Kind::Publish {
                        local.published.insert(entry.package.clone());
                        let published = Published {
                            index,
                            sha256: entry.sha256,
                        };
                        local.claims.insert(
                            key,
                            Claim {
                                published,
                                leaf_hash,
                            },
                        );
                    }
                    local.entries.push(new);
                    EntryResult {
                        index,
                        leaf_hash,
                        status: Status::New,
                        existing_index: None,
                    }
                }
                (Verdict::Duplicate(first), Some(c)) => EntryResult {
                    index: first.index,
                    leaf_hash: c.leaf_hash,
                    status: Status::Duplicate,
                    existing_index: None,
                },
                (Verdict::Conflict(first), Some(c)) => EntryResult {
                    index: first.index,
                    leaf_hash: c.leaf_hash,
                    status: Status::Conflict,
                    existing_index: Some(first.index),
                },
                (verdict, _) => {
                    let reason = verdict.reason(&entry).unwrap_or_default();
                    return Err(LogError::bad_input(format!("entry {i}: {reason}")));
                }
            };
            results.push(result);
        }
        pending.claims.extend(local.claims);
        pending.published.extend(local.published);
        pending.entries.extend(local.entries);
        Ok(results)
    }

    /// Whether `package` has a publish in the log or in the batches being built. Every entry
    /// of a package is refused until it has a publish, so any logged entry implies one.
    fn published(&self, package: &str, batches: &[&Pending]) -> Result<bool, LogError> {
        if batches.iter().any(|b| b.published.contains(package)) {
            return Ok(true);
        }
        let store: &Store = self.appender.store();
        Ok(!store.package_indexes(package, 0, 1)?.is_empty())
    }

    /// Where the identities the jobs claim are logged, read in one batched lookup (which costs
    /// a fraction of a lookup per identity).
    fn stored_identities(&self, jobs: &[Job]) -> Result<HashMap<Hash, u64>, LogError> {
        let keys: Vec<Hash> = jobs
            .iter()
            .flat_map(|j| &j.entries)
            .filter(|s| claims::needs_identity(s.entry.kind))
            .map(|s| s.key)
            .collect();
        let found = self.appender.store().identity_indexes(&keys)?;
        Ok(keys
            .into_iter()
            .zip(found)
            .filter_map(|(key, index)| Some((key, index?)))
            .collect())
    }

    /// The logged claim of the entry at `index`.
    fn stored_claim(&self, index: u64) -> Result<Claim, LogError> {
        let store: &Store = self.appender.store();
        let bytes = store.entry(index)?.ok_or_else(|| {
            LogError::internal(&format!("identity points at missing entry {index}"))
        })?;
        let entry = Entry::parse(&bytes)
            .map_err(|e| LogError::internal(&format!("stored entry {index}: {e}")))?;
        Ok(Claim {
            published: Published {
                index,
                sha256: entry.sha256,
            },
            leaf_hash: merkle::leaf_hash(&bytes),
        })
    }

    /// Appends `entries` with the checkpoint signed for the resulting tree, in one synced
    /// write, and publishes that checkpoint. With nothing new, the current checkpoint covers
    /// every result.
    fn commit(&mut self, entries: &[NewEntry]) -> Result<SignedCheckpoint, LogError> {
        if entries.is_empty() {
            return Ok(self.latest.borrow().clone());
        }
        let staged = self.appender.stage(entries)?;
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size: staged.size(),
            root: staged.root(),
        };
        let note = checkpoint
            .sign(&self.signer)
            .map_err(|e| LogError::internal(&e))?;
        self.appender.commit(staged, &note)?;
        let signed = SignedCheckpoint {
            size: checkpoint.size,
            note,
            signed_at: Some(unix_now()),
        };
        self.latest.send_replace(signed.clone());
        Ok(signed)
    }
}

/// The current Unix time in seconds (0 before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
