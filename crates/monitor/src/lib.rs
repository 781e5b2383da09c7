//! btlog-monitor: audits C2SP tlog-tiles logs through their tiles only (the library behind the
//! `btlog-monitor` binary).
//!
//! For every new checkpoint of a log it verifies the signature, recomputes the new root from the
//! entry bundles and level-0 tiles folded into the stored frontier ([`audit`]), checks the
//! binary transparency claims of every entry ([`claims`]) and the watch rules ([`watch`]), and
//! compares checkpoints from several sources (mirrors) of one origin. Any two signed
//! checkpoints that cannot both be honest are written out as [`evidence`].
//!
//! Hash tiles above level 0 that the audit covers are checked against the level below
//! ([`upper`]).
//!
//! State lives in `<state>/<origin>/`: `state.json` ([`state`]), `index/` ([`claims`]) and
//! `evidence-*.json`.

pub mod alert;
mod audit;
mod claims;
pub mod config;
pub mod evidence;
pub mod state;
mod upper;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use btlog_client::tiles::{SignedCheckpoint, TileClient, TilesError};
use btlog_client::FetchError;
use btlog_core::note::Verifier;

use alert::{Alert, AlertKind, Sink};
use audit::Outcome;
use claims::{Index, IndexError};
use evidence::{Comparison, Evidence};
use state::{State, StateError};
use watch::Watcher;

/// Why a monitoring round could not be completed (as opposed to problems found in the log,
/// which are alerts).
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// A source could not be read.
    #[error(transparent)]
    Tiles(#[from] TilesError),
    /// A source URL is unusable.
    #[error(transparent)]
    Url(#[from] FetchError),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The identity index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// One log to monitor: its key and the URLs serving it (mirrors of one origin).
#[derive(Clone, Debug)]
pub struct LogSpec {
    /// Base URLs of the tlog-tiles API.
    pub urls: Vec<String>,
    /// The log's verifier key; its name is the origin.
    pub vkey: Verifier,
    /// What the log's entries are.
    pub entries: EntryFormat,
    /// The witness policy its checkpoints must meet, if any.
    pub witness: Option<Arc<WitnessRule>>,
}

/// A witness policy a log's served checkpoints must meet (PROTOCOL.md §10.2).
#[derive(Clone, Debug)]
pub struct WitnessRule {
    /// The policy (its logs, witnesses and quorum).
    pub policy: btlog_core::policy::Policy,
    /// The quorum must be met by cosignatures at most this old, in seconds.
    pub max_age: Option<u64>,
}

/// What a log's entries are, which decides how far the monitor checks them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EntryFormat {
    /// btlog entries (PROTOCOL.md §2): the tree, the claims of every entry and the watch rules.
    #[default]
    Btlog,
    /// Entries of another format, from any tlog-tiles log: the tree only (every entry hashes
    /// to its tile, the tiles reproduce the signed roots, checkpoints are consistent).
    Opaque,
}

/// The monitor of one log.
pub struct LogMonitor {
    origin: String,
    vkey: Verifier,
    sources: Vec<TileClient>,
    dir: PathBuf,
    state: State,
    index: Index,
    watcher: Arc<Watcher>,
    sink: Arc<Sink>,
    show_progress: bool,
    parse_entries: bool,
    witness: Option<Arc<WitnessRule>>,
    /// The witness problem last alerted, so one that lasts is alerted once.
    witness_problem: Option<String>,
}

impl LogMonitor {
    /// Opens the state of `spec` under `state_root`, creating it on first use.
    pub fn open(
        spec: &LogSpec,
        state_root: &Path,
        watcher: Arc<Watcher>,
        sink: Arc<Sink>,
        show_progress: bool,
    ) -> Result<LogMonitor, MonitorError> {
        let origin = spec.vkey.name().to_owned();
        let dir = state_root.join(btlog_client::api::state::origin_file_name(&origin));
        std::fs::create_dir_all(&dir).map_err(|source| StateError::Io {
            path: dir.clone(),
            source,
        })?;
        let state = State::load(&dir, &spec.vkey)?;
        let index = Index::open(&dir.join("index"), state.progress.size())?;
        let sources = spec
            .urls
            .iter()
            .map(|u| TileClient::new(u))
            .collect::<Result<_, _>>()?;
        sink.set_verified(&origin, state.checkpoint.checkpoint.size);
        let mut monitor = LogMonitor {
            origin,
            vkey: spec.vkey.clone(),
            sources,
            dir,
            state,
            index,
            watcher,
            sink,
            show_progress,
            parse_entries: spec.entries == EntryFormat::Btlog,
            witness: spec.witness.clone(),
            witness_problem: None,
        };
        let (reaches, position) = (monitor.index.committed(), monitor.state.progress.size());
        if reaches < position {
            // Without the records of the entries before the position, claims about them
            // would go unchecked (a conflict missed, a yank of a known artifact alerted):
            // the entries are read again to rebuild them.
            monitor.reset_progress();
            tracing::warn!(
                log = %monitor.origin,
                index = reaches,
                position,
                from = monitor.state.progress.size(),
                "the claim index reaches less far than the audit position (index/ deleted \
                 or restored from an older copy?): reading the log again to rebuild it"
            );
        }
        Ok(monitor)
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The last verified checkpoint.
    pub fn verified(&self) -> &SignedCheckpoint {
        &self.state.checkpoint
    }

    /// One round: fetch every source's checkpoint, compare them, and audit up to the newest.
    /// Problems found are alerts; an error means the round could not be completed.
    pub async fn poll(&mut self) -> Result<(), MonitorError> {
        let mut error = None;
        let mut seen: Vec<(usize, SignedCheckpoint)> = Vec::new();
        for (src, client) in self.sources.iter().enumerate() {
            match client.checkpoint(&self.vkey).await {
                Ok(cp) => seen.push((src, cp)),
                Err(e @ TilesError::Checkpoint { .. }) => {
                    self.sink
                        .alert(self.make_alert(AlertKind::CheckpointInvalid, None, e.to_string()))
                        .await;
                }
                Err(e) => error = Some(e),
            }
        }
        seen.sort_by_key(|(_, cp)| cp.checkpoint.size);
        for (i, (src_a, a)) in seen.iter().enumerate() {
            for (src_b, b) in &seen[i + 1..] {
                let reason = format!(
                    "{} and {} serve different trees of size {}",
                    self.sources[*src_a].base(),
                    self.sources[*src_b].base(),
                    a.checkpoint.size
                );
                if let Some(e) = evidence::same_size(&self.vkey, a, b, reason) {
                    self.fork(e).await?;
                }
            }
        }
        self.check_witnesses(&seen).await;
        for (src, cp) in &seen {
            self.check(*src, cp).await?;
        }
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Checks the served checkpoints against the witness policy; a problem is alerted once
    /// (again only when it changes), and its end is logged.
    async fn check_witnesses(&mut self, seen: &[(usize, SignedCheckpoint)]) {
        let Some(rule) = self.witness.clone() else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let problems: Vec<String> = seen
            .iter()
            .filter_map(|(src, cp)| {
                let e = rule.policy.check(&cp.note, now, rule.max_age).err()?;
                Some(format!(
                    "{}: checkpoint of size {}: {e}",
                    self.sources[*src].base(),
                    cp.checkpoint.size
                ))
            })
            .collect();
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        if problem == self.witness_problem {
            return;
        }
        match &problem {
            Some(details) => self.alert(AlertKind::Witness, None, details.clone()).await,
            None => tracing::info!(log = self.origin, "the witness policy is met again"),
        }
        self.witness_problem = problem;
    }

    /// Checks one source's checkpoint against the verified state, auditing when it is newer.
    async fn check(&mut self, src: usize, cp: &SignedCheckpoint) -> Result<(), MonitorError> {
        let verified = self.state.checkpoint.clone();
        let (size, have) = (cp.checkpoint.size, verified.checkpoint.size);
        let base = self.sources[src].base().to_owned();
        if self.state.progress.size() < have && size >= have {
            // The claim index is being rebuilt: first up to the verified tree again, whose
            // root the entries read must reproduce.
            match self.audit(src, &verified).await? {
                Outcome::Verified => {}
                Outcome::BadData => return Ok(()),
                Outcome::RootMismatch => {
                    let details = format!(
                        "{base}: the entries served do not reproduce the verified root of size \
                         {have}; the claim index cannot be rebuilt from them"
                    );
                    self.alert(AlertKind::TileMismatch, None, details).await;
                    return Ok(());
                }
            }
        }
        if size > have {
            let outcome = self.audit(src, cp).await?;
            if outcome != Outcome::RootMismatch {
                return Ok(());
            }
            let reason = format!(
                "{base} served size {size}, whose entries do not extend the verified size {have}"
            );
            let client = self.sources[src].clone();
            let found = evidence::compare(&self.vkey, &verified, cp, &client, reason).await;
            return self.conclude(found, &base, size).await;
        }
        if size == have && cp.checkpoint.root == verified.checkpoint.root {
            return Ok(());
        }
        // An older or equal-size checkpoint: show it is a prefix of the verified tree, from the
        // tiles of any source that still reproduce the verified root.
        let reason =
            format!("{base} served size {size}, which is not a prefix of the verified size {have}");
        let mut found = Comparison::Unknown(format!(
            "no source reproduces the verified tree of size {have}"
        ));
        for client in self.sources.clone() {
            found = evidence::compare(&self.vkey, cp, &verified, &client, reason.clone()).await;
            if !matches!(found, Comparison::Unknown(_)) {
                break;
            }
        }
        if matches!(found, Comparison::Consistent) {
            // A prefix of the verified tree: a mirror or cache that lags behind, not a problem.
            return Ok(());
        }
        self.conclude(found, &base, size).await
    }

    async fn conclude(
        &mut self,
        found: Comparison,
        base: &str,
        size: u64,
    ) -> Result<(), MonitorError> {
        let (kind, details) = match found {
            Comparison::Fork(e) => return self.fork(*e).await,
            Comparison::Consistent => (
                AlertKind::TileMismatch,
                format!(
                    "{base}: the entries at size {size} do not produce the signed root, \
                     though the hash tiles are consistent with it"
                ),
            ),
            Comparison::Unknown(why) => (
                AlertKind::Inconsistent,
                format!("{base}: checkpoint of size {size}: {why}"),
            ),
        };
        self.alert(kind, None, details).await;
        Ok(())
    }

    /// Writes evidence of a split view and alerts.
    async fn fork(&mut self, evidence: Evidence) -> Result<(), MonitorError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = self.dir.join(format!("evidence-{stamp}.json"));
        state::write_atomic(&path, evidence.to_json().as_bytes())?;
        let details = format!("{}; evidence: {}", evidence.reason, path.display());
        self.alert(AlertKind::Fork, None, details).await;
        if let Some(rule) = self.witness.clone() {
            let keys: Vec<&Verifier> = rule.policy.witnesses().map(|(_, v)| v).collect();
            let both = evidence.cosigned_by_both(&keys);
            if !both.is_empty() {
                let names: Vec<&str> = both.iter().map(|v| v.name()).collect();
                let details = format!(
                    "witness {} cosigned both checkpoints of this split view; evidence: {} \
                     (btlog-monitor verify-evidence FILE --witness VKEY shows it)",
                    names.join(", "),
                    path.display()
                );
                self.alert(AlertKind::Witness, None, details).await;
            }
        }
        Ok(())
    }

    fn make_alert(&self, kind: AlertKind, index: Option<u64>, details: String) -> Alert {
        Alert {
            kind,
            log: self.origin.clone(),
            index,
            details,
        }
    }

    async fn alert(&self, kind: AlertKind, index: Option<u64>, details: String) {
        self.sink.alert(self.make_alert(kind, index, details)).await;
    }

    fn save(&self) -> Result<(), MonitorError> {
        Ok(self.state.save(&self.dir, &self.vkey)?)
    }
}
