//! Catching up with a new checkpoint: read the new entry bundles and level-0 hash tiles, check
//! every entry against its tile hash, the claims and the watch rules, fold the new leaves into
//! the stored frontier, and compare the result with the signed root. Matching proves both that
//! the new tree extends the verified one and that the entries read are the log's.
//!
//! Nothing unverified reaches the identity index or raises a claim or watch alert: the records
//! and alerts of a chunk are staged until the leaves read so far are proven part of the signed
//! tree — at the end by the signed root itself, between chunks by an RFC 6962 consistency proof
//! (§2.1.2) from the audited prefix to the signed root, built from hash tiles checked against
//! that root. A log serving entries that do not match what it signed therefore cannot plant
//! records in the index (false `conflict`, missed `unknown-artifact` later) or raise alerts.
//!
//! The work is a pipeline: up to [`CONCURRENCY`] bundles are fetched, hashed, parsed and matched
//! against the watch rules by tasks of their own (on every core), while this task takes them in
//! order and does what must be sequential: the frontier, the identity index and the alerts.

use futures_util::stream::{self, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};

use btlog_client::tiles::{SignedCheckpoint, TileClient, TilesError};
use btlog_core::entry::Entry;
use btlog_core::merkle::tiles::{MAX_LEVEL, TILE_HEIGHT, TILE_WIDTH};
use btlog_core::merkle::{balanced_root, leaf_hash, Hash};

use super::alert::AlertKind;
use super::claims::Claim;
use super::evidence::prefix_proof;
use super::upper::{first_mismatch, UpperTiles};
use super::watch::Watcher;
use super::{LogMonitor, MonitorError};
use btlog_core::merkle::Frontier;

/// An alert found in an entry, held until the entry is proven part of the signed tree.
type Staged = (u64, AlertKind, String);

/// Entry bundles checked between commits of the state.
const CHUNK_BUNDLES: u64 = 256;
/// Bundles fetched and prepared concurrently.
const CONCURRENCY: usize = 16;

/// How an audit towards a checkpoint ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The new leaves fold into the signed root; the checkpoint is now the verified one.
    Verified,
    /// The leaves read do not produce the signed root.
    RootMismatch,
    /// A tile or bundle was malformed or did not match; alerted, nothing committed.
    BadData,
}

/// How reading the bundles up to a checkpoint ended.
enum Read {
    /// Every bundle was read and checked; the index records and alerts of the last chunk are
    /// staged, waiting for the signed root.
    Done,
    /// A tile or bundle was malformed or did not match (alerted); back to the last commit.
    Bad,
    /// The leaves read are not a prefix of the signed tree.
    Mismatch,
}

/// One entry bundle, fetched and checked as far as it can be on its own.
struct Bundle {
    /// Bundle index.
    index: u64,
    /// Leaf hashes of all its entries.
    leaves: Vec<Hash>,
    /// For a full bundle, the root of its 256 leaves: its hash in the level-1 tile.
    root: Option<Hash>,
    /// Alerts found in it, by leaf index: tile mismatches, unparsable entries, watch rules.
    alerts: Vec<(u64, AlertKind, String)>,
    /// Whether an entry did not hash to its level-0 tile hash.
    mismatch: bool,
    /// The parsed entries at or past the audit start.
    claims: Vec<Claim>,
}

/// What a bundle's entries are checked for.
#[derive(Clone)]
struct Checks {
    /// Leaf index the audit starts at: entries before it were audited already.
    start: u64,
    /// Parse entries as btlog entries (false for logs of other entry formats).
    entries: bool,
    watcher: std::sync::Arc<Watcher>,
}

impl LogMonitor {
    /// Audits from the stored position up to `cp`, served by source `src`.
    pub(super) async fn audit(
        &mut self,
        src: usize,
        cp: &SignedCheckpoint,
    ) -> Result<Outcome, MonitorError> {
        let n = cp.checkpoint.size;
        if self.state.progress.size() > n {
            self.reset_progress();
        }
        let start = self.state.progress.size();
        let bar = self.progress_bar(n - start);
        let mut staged = Vec::new();
        let read = self.read_bundles(src, cp, &bar, &mut staged).await;
        match read {
            Ok(Read::Done) => {}
            Ok(Read::Bad) => {
                bar.abandon();
                return Ok(Outcome::BadData);
            }
            Ok(Read::Mismatch) => {
                bar.abandon();
                self.reset_progress();
                self.save()?;
                return Ok(Outcome::RootMismatch);
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
        bar.finish_and_clear();
        if self.state.progress.root() != cp.checkpoint.root {
            // The staged records and alerts of the last chunk go with the progress.
            self.reset_progress();
            self.save()?;
            return Ok(Outcome::RootMismatch);
        }
        let done = n - self.index.committed();
        if let Err(e) = self.index.commit(n) {
            // The staged alerts are dropped with the progress: the next audit reads it again.
            self.reset_progress();
            return Err(e.into());
        }
        // Alerts before the state moves: a crash in between repeats them, never loses them.
        self.emit(staged).await;
        self.state.checkpoint = cp.clone();
        self.state.verified = self.state.progress.clone();
        self.save()?;
        self.sink.add_checked(&self.origin, done);
        self.sink.set_verified(&self.origin, n);
        Ok(Outcome::Verified)
    }

    /// Reads and checks every bundle from the position up to the size of `cp`, committing the
    /// index, the staged alerts and the state every [`CHUNK_BUNDLES`] once the leaves read are
    /// proven a prefix of `cp`'s tree. The last chunk stays staged for [`LogMonitor::audit`] to
    /// check against the signed root. On anything but [`Read::Done`] the progress goes back to
    /// the last commit, so only the unfinished chunk is read again.
    async fn read_bundles(
        &mut self,
        src: usize,
        cp: &SignedCheckpoint,
        bar: &ProgressBar,
        staged: &mut Vec<Staged>,
    ) -> Result<Read, MonitorError> {
        let n = cp.checkpoint.size;
        let client = self.sources[src].clone();
        let checks = Checks {
            start: self.state.progress.size(),
            entries: self.parse_entries,
            watcher: self.watcher.clone(),
        };
        let mut bundles = stream::iter(checks.start / TILE_WIDTH..n.div_ceil(TILE_WIDTH))
            .map(|b| tokio::spawn(prepare(client.clone(), b, n, checks.clone())))
            .buffered(CONCURRENCY);
        let mut saved = self.state.progress.clone();
        let mut upper = UpperTiles::default();
        while let Some(joined) = bundles.next().await {
            let fetched = match joined {
                Ok(fetched) => fetched,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            let outcome = match self.take(fetched, &client, n, &mut upper, staged).await {
                Ok(true) => {
                    self.commit_if_due(&client, cp, &mut saved, bar, staged)
                        .await
                }
                Ok(false) => Ok(Read::Bad),
                Err(e) => Err(e),
            };
            if !matches!(outcome, Ok(Read::Done)) {
                self.restore(&saved);
                staged.clear();
                return outcome;
            }
        }
        for (level, tile, computed) in upper.finish() {
            if let Err(e) = self.compare_tile(&client, n, level, tile, &computed).await {
                // As above: the unfinished chunk (and its staged alerts) is read again.
                self.restore(&saved);
                staged.clear();
                return Err(e);
            }
        }
        Ok(Read::Done)
    }

    /// Checks one fetched bundle, and the upper tiles it completes; false when the bundle was
    /// bad (alerted).
    async fn take(
        &mut self,
        fetched: Result<Bundle, TilesError>,
        client: &TileClient,
        n: u64,
        upper: &mut UpperTiles,
        staged: &mut Vec<Staged>,
    ) -> Result<bool, MonitorError> {
        let Some(bundle) = self.served(client, fetched).await? else {
            return Ok(false);
        };
        let root = bundle.root.map(|r| (bundle.index, r));
        let ok = self.check_bundle(bundle, staged).await?;
        if let (true, Some((b, root))) = (ok, root) {
            self.check_upper(client, n, upper, b, root).await?;
        }
        Ok(ok)
    }

    /// Records the root of full bundle `b` in the level-1 row and compares every tile that
    /// completes, climbing while full tiles match.
    async fn check_upper(
        &mut self,
        client: &TileClient,
        n: u64,
        upper: &mut UpperTiles,
        b: u64,
        root: Hash,
    ) -> Result<(), MonitorError> {
        let mut next = Some((1, b, root));
        while let Some((level, index, hash)) = next.take() {
            let Some((level, tile, computed)) = upper.push(level, index, hash) else {
                break;
            };
            next = self
                .compare_tile(client, n, level, tile, &computed)
                .await?
                .filter(|_| level < MAX_LEVEL)
                .map(|root| (level + 1, tile, root));
        }
        Ok(())
    }

    /// What a source served: a malformed tile or bundle is alerted and gives None; a failed
    /// transfer is an error.
    async fn served<T>(
        &mut self,
        client: &TileClient,
        fetched: Result<T, TilesError>,
    ) -> Result<Option<T>, MonitorError> {
        match fetched {
            Ok(value) => Ok(Some(value)),
            Err(TilesError::Malformed { path, reason }) => {
                let details = format!("{}/{path}: {reason}", client.base());
                self.alert(AlertKind::TileMismatch, None, details).await;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Compares the served hash tile `level`/`tile` (at size `n`) with the hashes computed for
    /// it, alerting on a difference. Returns the tile's root when it is full and matches, for
    /// the level above.
    async fn compare_tile(
        &mut self,
        client: &TileClient,
        n: u64,
        level: u8,
        tile: u64,
        computed: &[Option<Hash>],
    ) -> Result<Option<Hash>, MonitorError> {
        let fetched = client.hash_tile(level, tile, n).await;
        let Some(served) = self.served(client, fetched).await? else {
            return Ok(None);
        };
        if let Some(i) = first_mismatch(computed, &served) {
            let details = format!(
                "{}: hash {i} of level-{level} tile {tile} is not the root of the tree below it",
                client.base()
            );
            self.alert(AlertKind::TileMismatch, None, details).await;
            return Ok(None);
        }
        Ok((served.len() == TILE_WIDTH as usize).then(|| balanced_root(&served)))
    }

    /// Once a chunk is done (short of the checkpoint), proves the leaves read a prefix of the
    /// signed tree of `cp`, then commits the index, raises the staged alerts, saves the state
    /// and moves `saved` there. The chunk that reaches the checkpoint is left to the caller.
    async fn commit_if_due(
        &mut self,
        client: &TileClient,
        cp: &SignedCheckpoint,
        saved: &mut Frontier,
        bar: &ProgressBar,
        staged: &mut Vec<Staged>,
    ) -> Result<Read, MonitorError> {
        let n = cp.checkpoint.size;
        let position = self.state.progress.size();
        let done = position - saved.size();
        if done < CHUNK_BUNDLES * TILE_WIDTH || position >= n {
            return Ok(Read::Done);
        }
        match prefix_proof(client, position, &cp.checkpoint).await {
            Ok((prefix, _)) if prefix == self.state.progress.root() => {}
            Ok(_) => return Ok(Read::Mismatch),
            Err(e @ (TilesError::Fetch(_) | TilesError::Missing(_))) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(log = %self.origin, position, error = %e, "prefix not proven");
                return Ok(Read::Mismatch);
            }
        }
        self.index.commit(position)?;
        self.emit(std::mem::take(staged)).await;
        self.save()?;
        self.sink.add_checked(&self.origin, done);
        bar.inc(done);
        if bar.is_hidden() {
            tracing::info!(log = %self.origin, position, target = n, "audited");
        }
        *saved = self.state.progress.clone();
        Ok(Read::Done)
    }

    /// Raises alerts found in entries now proven part of the signed tree.
    async fn emit(&mut self, staged: Vec<Staged>) {
        for (i, kind, details) in staged {
            self.alert(kind, Some(i), details).await;
        }
    }

    /// Folds a prepared bundle into the frontier, checks its entries' claims, and stages the
    /// records and alerts they give. False when the bundle and its tile disagree (alerted now:
    /// that is about what the source served, not about the log's entries).
    async fn check_bundle(
        &mut self,
        bundle: Bundle,
        staged: &mut Vec<Staged>,
    ) -> Result<bool, MonitorError> {
        if bundle.mismatch {
            for (i, kind, details) in bundle.alerts {
                self.alert(kind, Some(i), details).await;
            }
            return Ok(false);
        }
        let first = bundle.index * TILE_WIDTH;
        let skip = self.state.progress.size().saturating_sub(first);
        // A full bundle not yet started: its root, already hashed by the worker (on its
        // boundary, as bundles come in order); else its leaves from the position.
        let whole = skip == 0
            && bundle
                .root
                .is_some_and(|root| self.state.progress.push_subtree(TILE_HEIGHT, root).is_ok());
        if !whole {
            for leaf in bundle.leaves.iter().skip(skip as usize) {
                self.state.progress.push(*leaf);
            }
        }
        // Per entry: its claim violations, then what the bundle's own checks found.
        let mut alerts: Vec<Staged> = self
            .index
            .check_all(&bundle.claims)?
            .into_iter()
            .map(|(i, v)| (i, v.kind, v.details))
            .collect();
        alerts.extend(bundle.alerts);
        alerts.sort_by_key(|(i, ..)| *i);
        staged.extend(alerts);
        Ok(true)
    }

    /// Drops unconfirmed progress: back to the verified checkpoint, or to the empty tree when
    /// the claim index does not reach the checkpoint (it is being rebuilt, and no frontier
    /// below the checkpoint is known).
    pub(super) fn reset_progress(&mut self) {
        self.state.progress = if self.index.committed() < self.state.verified.size() {
            Frontier::default()
        } else {
            self.state.verified.clone()
        };
        self.index.rollback(self.state.progress.size());
    }

    /// Drops the progress of an unfinished step, back to the frontier it started from.
    fn restore(&mut self, saved: &Frontier) {
        self.index.rollback(saved.size());
        self.state.progress = saved.clone();
    }

    fn progress_bar(&self, len: u64) -> ProgressBar {
        if !self.show_progress || len == 0 {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} entries ({per_sec}, eta {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(self.origin.clone());
        bar
    }
}

/// Fetches bundle `b` of the tree of size `n` and its level-0 tile, checks every entry against
/// its tile hash, and parses and watches the entries at or past the audit start.
async fn prepare(client: TileClient, b: u64, n: u64, checks: Checks) -> Result<Bundle, TilesError> {
    let (raw, tile) = tokio::join!(client.entry_bundle(b, n), client.hash_tile(0, b, n));
    let (raw, tile) = (raw?, tile?);
    let first = b * TILE_WIDTH;
    let leaves: Vec<Hash> = raw.iter().map(|e| leaf_hash(e)).collect();
    let mut alerts = Vec::new();
    for ((i, leaf), want) in (first..).zip(&leaves).zip(&tile) {
        if leaf != want {
            let details = format!("entry {i} in bundle {b} does not hash to its level-0 tile hash");
            alerts.push((i, AlertKind::TileMismatch, details));
        }
    }
    let mismatch = !alerts.is_empty();
    let mut claims = Vec::new();
    if checks.entries && !mismatch {
        let skip = checks.start.saturating_sub(first) as usize;
        for (i, bytes) in (first..).zip(&raw).skip(skip) {
            match Entry::parse(bytes) {
                Ok(entry) => {
                    if let Some((kind, details)) = checks.watcher.check(&entry) {
                        alerts.push((i, kind, details));
                    }
                    claims.push(Claim::new(i, entry));
                }
                Err(e) => alerts.push((i, AlertKind::BadEntry, e.to_string())),
            }
        }
    }
    let root = (leaves.len() == TILE_WIDTH as usize).then(|| balanced_root(&leaves));
    Ok(Bundle {
        index: b,
        leaves,
        root,
        alerts,
        mismatch,
        claims,
    })
}
