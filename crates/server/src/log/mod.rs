//! The log service: the one core behind the HTTP and gRPC front ends. It owns the store, the
//! sequencer, credentials, limits and metrics; every rule (validation, auth, limits, errors)
//! lives here, and the front ends only translate requests and replies.

pub mod auth;
pub mod error;
pub mod history;
pub mod limits;
pub mod metrics;
pub mod publishing;
pub mod sequencer;
mod startup;
pub mod witnessing;

use crate::config::{Acknowledge, Config, Limits};
use auth::Tokens;
use btlog_core::entry::{EntryFields, Identity, Kind};
use btlog_core::merkle::tiles::{TileKind, MAX_LEVEL, TILE_WIDTH};
use btlog_core::merkle::Hash;
use btlog_core::note::Verifier;
use btlog_core::proof_bundle::TlogProof;
use btlog_store::Store;
use error::{ErrorKind, LogError};
use limits::RateLimiter;
use metrics::Metrics;
use sequencer::{BatchLimits, Sequencer, Submission};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

pub use sequencer::{EntryResult, SignedCheckpoint, SubmitOutcome};
pub use startup::OpenError;

/// Which leaf an inclusion proof is for.
#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    /// By index.
    Index(u64),
    /// By RFC 6962 leaf hash.
    Hash(Hash),
}

/// An inclusion proof and what it proves.
#[derive(Clone, Debug)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
    /// Leaf hash.
    pub leaf_hash: Hash,
    /// Audit path, leaf sibling first.
    pub proof: Vec<Hash>,
}

/// A looked-up publish entry with its offline proof.
#[derive(Clone, Debug)]
pub struct Lookup {
    /// Index in the log.
    pub index: u64,
    /// The entry text.
    pub entry: String,
    /// A C2SP tlog-proof against the latest checkpoint.
    pub proof: String,
}

/// A submitter admitted by [`Log::admit`]: its credential, and its slot among the
/// submissions being read and decoded, held until its entries are checked.
pub struct Admission {
    credential: auth::Credential,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// The log service; cheap to clone.
#[derive(Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    verifier: Verifier,
    tokens: RwLock<Arc<Tokens>>,
    tokens_path: PathBuf,
    limiter: RateLimiter,
    submissions: Arc<tokio::sync::Semaphore>,
    sequencer: Sequencer,
    /// The checkpoint served: the latest, or with witnesses the newest with a quorum.
    served: watch::Receiver<SignedCheckpoint>,
    metrics: Arc<Metrics>,
    witness_metrics: witnessing::WitnessMetrics,
    engine_readings: metrics::EngineReadings,
    /// Publishing to a bucket, if configured, and when submissions are acknowledged.
    publishing: Option<(Arc<publishing::PublishState>, Acknowledge)>,
    limits: Limits,
}

impl Log {
    /// Opens the log in the configured data directory: key (created on first start), store,
    /// the checkpoint for the current tree, credentials, and the sequencer thread.
    pub fn open(config: &Config) -> Result<Log, OpenError> {
        config.validate()?;
        let opened = startup::open(config)?;
        let metrics = Arc::new(Metrics::default());
        let verifier = opened.signer.verifier();
        let (tx, latest) = watch::channel(opened.checkpoint);
        let limits = &config.limits;
        let batch = BatchLimits {
            max_entries: limits.batch_max_entries,
            delay: limits.batch_delay(),
            queue_depth: limits.queue_depth,
        };
        let store = opened.appender.store().clone();
        let endpoints = witnessing::endpoints(&config.witnesses, &verifier)
            .map_err(|e| OpenError::Config(crate::config::ConfigError::Invalid(e)))?;
        let sequencer =
            Sequencer::start(opened.appender, opened.signer, batch, metrics.clone(), tx).map_err(
                |source| OpenError::Io {
                    path: config.data.clone(),
                    source,
                },
            )?;
        let (served, witness_metrics) = if endpoints.is_empty() {
            (latest, witnessing::WitnessMetrics::default())
        } else {
            // Until the witnesses answer, the log-signed checkpoint is served.
            let (tx, served) = watch::channel(latest.borrow().clone());
            let quorum = config.witness_quorum;
            let m = witnessing::spawn(store.clone(), endpoints, quorum, latest, tx);
            (served, m)
        };
        let publishing = match &config.publish {
            None => None,
            Some(p) => {
                let invalid = |e: String| OpenError::Config(crate::config::ConfigError::Invalid(e));
                let bucket = btlog_bucket::Bucket::open(&p.bucket)
                    .map_err(|e| invalid(format!("[publish]: {e}")))?;
                let publisher = btlog_bucket::Publisher::new(
                    bucket,
                    store.clone(),
                    verifier.clone(),
                    p.gzip_bundles,
                );
                let state =
                    publishing::spawn(publisher, store.clone(), served.clone(), p.partial_grace())?;
                Some((state, p.acknowledge))
            }
        };
        Ok(Log {
            inner: Arc::new(Inner {
                store,
                verifier,
                tokens: RwLock::new(Arc::new(opened.tokens)),
                tokens_path: config.tokens_path(),
                limiter: RateLimiter::new(limits.rate_per_second, limits.rate_burst),
                submissions: Arc::new(tokio::sync::Semaphore::new(
                    limits.max_concurrent_submissions,
                )),
                sequencer,
                served,
                metrics,
                witness_metrics,
                engine_readings: metrics::EngineReadings::default(),
                publishing,
                limits: limits.clone(),
            }),
        })
    }

    /// The verifier key of the log.
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// The store this log reads and (through its sequencer) writes.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The configured limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The Prometheus text of all metrics.
    pub fn render_metrics(&self) -> String {
        let store = &self.inner.store;
        let mut out = self
            .inner
            .metrics
            .render(store.size(), store.writer_stopped());
        self.inner.witness_metrics.render(&mut out);
        let engine = self
            .inner
            .engine_readings
            .get(std::time::Instant::now(), || store.engine_stats());
        metrics::render_engine(&engine, &mut out);
        if let Some((p, _)) = &self.inner.publishing {
            p.render(self.inner.served.borrow().size, &mut out);
        }
        out
    }

    /// Publishing to a bucket, if configured.
    pub fn publishing(&self) -> Option<&publishing::PublishState> {
        self.inner.publishing.as_ref().map(|(p, _)| &**p)
    }

    /// Whether the log can append: an error once the writer stopped after a storage failure
    /// (reads are still served; a restart is needed to append again).
    /// With publishing configured, also an error while the bucket is refused, and the
    /// publishing lag in the detail returned.
    pub fn health(&self) -> Result<String, LogError> {
        if self.inner.store.writer_stopped() {
            return Err(LogError::new(
                ErrorKind::Overloaded,
                "the writer stopped after a storage failure; restart the log",
            ));
        }
        let Some(p) = self.publishing() else {
            return Ok(String::new());
        };
        if let Some(why) = p.refused() {
            return Err(LogError::new(
                ErrorKind::Overloaded,
                format!("publishing to {} stopped: {why}", p.url()),
            ));
        }
        Ok(p.health(self.inner.served.borrow().size))
    }

    /// Re-reads the tokens file (on SIGHUP); on error the old credentials stay in force.
    pub fn reload_tokens(&self) -> Result<usize, auth::AuthError> {
        let tokens = Tokens::load(&self.inner.tokens_path)?;
        let n = tokens.len();
        *self.inner.tokens.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(tokens);
        Ok(n)
    }

    /// The checkpoint served: the latest signed one, or, with witnesses configured, the
    /// newest that a quorum of them cosigned, with their cosignatures.
    ///
    /// With `acknowledge = "published"`, the newest checkpoint in the bucket instead: nothing
    /// the server shows is then beyond what a restore from the bucket brings back, so no
    /// reader holds a checkpoint a restored log would contradict (PROTOCOL.md §13.3).
    pub fn checkpoint(&self) -> SignedCheckpoint {
        match &self.inner.publishing {
            Some((p, Acknowledge::Published)) => p.checkpoint(),
            _ => self.inner.served.borrow().clone(),
        }
    }

    /// A receiver that sees every newly served checkpoint ([`Log::checkpoint`]).
    pub fn watch(&self) -> watch::Receiver<SignedCheckpoint> {
        match &self.inner.publishing {
            Some((p, Acknowledge::Published)) => p.watch(),
            _ => self.inner.served.clone(),
        }
    }

    /// Admits a submitter before its request body is read: checks the bearer token of the
    /// `Authorization` header value and its rate, then waits for one of the
    /// `max_concurrent_submissions` slots. A request without a valid token thus costs no
    /// memory for its body, and the bodies being read and decoded at once are bounded.
    pub async fn admit(&self, authorization: Option<&str>) -> Result<Admission, LogError> {
        let tokens = self
            .inner
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let credential = tokens.authenticate(auth::bearer(authorization))?;
        self.inner.limiter.check(&credential.id)?;
        let slot = self
            .inner
            .submissions
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| LogError::internal(&e))?;
        Ok(Admission {
            credential,
            _slot: slot,
        })
    }

    /// Submits a batch for an admitted submitter. `entries` is the batch as the front end
    /// decoded it, or why it could not. Returns once the new entries are durable and covered
    /// by the returned checkpoint. A batch with any malformed or refused entry is refused
    /// whole and changes nothing.
    pub async fn submit(
        &self,
        admission: Admission,
        entries: Result<Vec<EntryFields>, LogError>,
    ) -> Result<SubmitOutcome, LogError> {
        let credential = &admission.credential;
        let entries = entries?;
        let limits = &self.inner.limits;
        if entries.is_empty() {
            return Err(LogError::bad_input("the batch has no entries"));
        }
        self.check_entry_count(entries.len())?;
        let mut checked = Vec::with_capacity(entries.len());
        for (i, fields) in entries.into_iter().enumerate() {
            let entry = fields
                .into_entry(&credential.registry)
                .map_err(|e| LogError::bad_input(format!("entry {i}: {e}")))?;
            credential
                .check_package(&entry.package)
                .map_err(|e| LogError::bad_input(format!("entry {i}: {}", e.message)))?;
            let submission = Submission::new(entry);
            let len = submission.data().len();
            if len > limits.max_entry_bytes {
                return Err(LogError::new(
                    ErrorKind::TooLarge,
                    format!(
                        "entry {i} is {len} bytes, at most {} allowed",
                        limits.max_entry_bytes
                    ),
                ));
            }
            checked.push(submission);
        }
        // The decoded request is gone; the slot goes to the next body.
        drop(admission);
        let submit = self.inner.sequencer.submit(checked);
        let started = tokio::time::Instant::now();
        let outcome = tokio::time::timeout(limits.request_timeout(), submit)
            .await
            .map_err(|_| LogError::new(ErrorKind::Overloaded, "timed out waiting for the log"))??;
        if let Some((p, Acknowledge::Published)) = &self.inner.publishing {
            let left = limits.request_timeout().saturating_sub(started.elapsed());
            if !p.wait_for(outcome.checkpoint.size, left).await {
                return Err(LogError::new(
                    ErrorKind::Overloaded,
                    format!(
                        "the entries are logged but not yet published to {}, so not \
                         acknowledged; submit them again (resubmitting is idempotent)",
                        p.url()
                    ),
                ));
            }
        }
        Ok(outcome)
    }

    /// Refuses a request of more than `max_entries_per_request` entries (413).
    pub fn check_entry_count(&self, count: usize) -> Result<(), LogError> {
        let max = self.inner.limits.max_entries_per_request;
        if count > max {
            return Err(LogError::new(
                ErrorKind::TooLarge,
                format!("{count} entries in one request, at most {max} allowed"),
            ));
        }
        Ok(())
    }

    /// Inclusion proof of `leaf` in the tree of `size` leaves (default: the latest checkpoint).
    pub async fn inclusion_proof(
        &self,
        leaf: Leaf,
        size: Option<u64>,
    ) -> Result<InclusionProof, LogError> {
        let size = size.unwrap_or_else(|| self.checkpoint().size);
        self.point_read(|store| {
            let index = match leaf {
                Leaf::Index(i) => i,
                Leaf::Hash(h) => store
                    .find_leaf(&h, size)?
                    .ok_or_else(|| LogError::not_found("no entry with that leaf hash"))?,
            };
            if index >= size {
                return Err(LogError::bad_input(format!(
                    "index {index} is not below tree size {size}"
                )));
            }
            let (leaf_hash, proof) = store.leaf_and_inclusion_proof(index, size)?;
            Ok(InclusionProof {
                index,
                size,
                leaf_hash,
                proof,
            })
        })
    }

    /// Consistency proof from tree size `from` to `to`.
    pub async fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, LogError> {
        if from > to {
            return Err(LogError::bad_input("from must not exceed to"));
        }
        self.point_read(|store| Ok(store.consistency_proof(from, to)?))
    }

    /// Entries `start..end` (end exclusive), at most one page.
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<(u64, String)>, LogError> {
        if start >= end {
            return Err(LogError::bad_input("start must be below end"));
        }
        let end = end.min(start.saturating_add(self.inner.limits.max_page));
        self.blocking(move |store| {
            let size = store.size();
            if start >= size {
                return Err(LogError::not_found(format!(
                    "start {start} is not below the log size {size}"
                )));
            }
            store
                .entries(start, end)?
                .into_iter()
                .zip(start..)
                .map(|(bytes, i)| Ok((i, entry_text(bytes)?)))
                .collect()
        })
        .await
    }

    /// The publish entry of an identity, with a tlog-proof against the latest checkpoint.
    pub async fn lookup(&self, identity: Identity) -> Result<Lookup, LogError> {
        let checkpoint = self.checkpoint();
        self.blocking(move |store| {
            let index = store
                .identity_index(&identity.key())?
                .filter(|i| *i < checkpoint.size)
                .ok_or_else(|| LogError::not_found("no publish entry for that identity"))?;
            let bytes = store
                .entry(index)?
                .ok_or_else(|| LogError::internal(&format!("entry {index} missing")))?;
            let proof = TlogProof {
                proof: store.inclusion_proof(index, checkpoint.size)?,
                entry: bytes.clone(),
                index,
                checkpoint: checkpoint.note,
            };
            Ok(Lookup {
                index,
                entry: entry_text(bytes)?,
                proof: proof.format(),
            })
        })
        .await
    }

    /// Entries of `package` in log order from index `from`, at most one page.
    pub async fn list_package(
        &self,
        package: String,
        from: u64,
    ) -> Result<Vec<(u64, String)>, LogError> {
        let limit = usize::try_from(self.inner.limits.max_page).unwrap_or(usize::MAX);
        self.blocking(move |store| {
            store
                .package_indexes(&package, from, limit)?
                .into_iter()
                .map(|i| {
                    let bytes = store
                        .entry(i)?
                        .ok_or_else(|| LogError::internal(&format!("entry {i} missing")))?;
                    Ok((i, entry_text(bytes)?))
                })
                .collect()
        })
        .await
    }

    /// A tlog-tiles hash tile or entry bundle; `width` 0 means a full tile.
    pub async fn tile(&self, kind: TileKind, index: u64, width: u32) -> Result<Vec<u8>, LogError> {
        let width = match width {
            0 => TILE_WIDTH as u16,
            w if u64::from(w) <= TILE_WIDTH => w as u16,
            _ => return Err(LogError::bad_input("tile width must be 1..=256")),
        };
        if matches!(kind, TileKind::Hashes { level } if level > MAX_LEVEL) {
            return Err(LogError::bad_input("tile level must be 0..=7"));
        }
        let tile = match kind {
            TileKind::Hashes { level } => {
                self.point_read(|store| Ok(store.hash_tile(level, index, width)?))?
            }
            TileKind::Entries => {
                self.blocking(move |store| Ok(store.entry_bundle(index, width)?))
                    .await?
            }
        };
        tile.ok_or_else(|| LogError::not_found("no such tile"))
    }

    /// Finishes queued submissions and stops the writer. Call after the front ends stopped.
    pub async fn shutdown(&self) {
        let log = self.clone();
        let _ = tokio::task::spawn_blocking(move || log.inner.sequencer.stop()).await;
    }

    /// Runs a bounded point read on the calling task: a proof or a hash tile, a few reads of
    /// mostly cached tiles (microseconds). Handing these to the blocking pool cost more than
    /// the reads themselves: its two thread wake-ups per request were 31% of the server's CPU
    /// when serving proofs. A read that misses the page cache holds this worker for one disk
    /// read.
    fn point_read<T>(&self, f: impl FnOnce(&Store) -> Result<T, LogError>) -> Result<T, LogError> {
        f(&self.inner.store)
    }

    /// Runs a scan (a page of entries, an entry bundle, a lookup with its entry) on the
    /// blocking pool, so it never holds an async worker for long.
    async fn blocking<T, F>(&self, f: F) -> Result<T, LogError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, LogError> + Send + 'static,
    {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| LogError::internal(&e))?
    }
}

/// Parses a `kind` wire name (for front ends whose schema carries it as a string).
pub fn parse_kind(s: &str) -> Result<Kind, LogError> {
    s.parse()
        .map_err(|e: btlog_core::entry::EntryError| LogError::bad_input(e.to_string()))
}

/// Parses a lowercase hex leaf hash.
pub fn parse_hex_hash(s: &str) -> Result<Hash, LogError> {
    btlog_core::entry::parse_hex::<32>("leaf_hash", s)
        .map_err(|e| LogError::bad_input(e.to_string()))
}

/// Parses a raw 32-byte hash.
pub fn hash_from_bytes(b: &[u8]) -> Result<Hash, LogError> {
    b.try_into()
        .map_err(|_| LogError::bad_input("a hash must be 32 bytes"))
}

fn entry_text(bytes: Vec<u8>) -> Result<String, LogError> {
    String::from_utf8(bytes).map_err(|_| LogError::internal(&"stored entry is not UTF-8"))
}
