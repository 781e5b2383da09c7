//! Catching up with a new checkpoint: read the new entry bundles and level-0 hash tiles, check
//! every entry against its tile hash, the claims and the watch rules, fold the new leaves into
//! the stored frontier, and compare the result with the signed root. Matching proves both that
//! the new tree extends the verified one and that the entries read are the log's.

use futures_util::stream::{self, StreamExt as _};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::tiles::{SignedCheckpoint, TileClient, TilesError};
use crate::entry::Entry;
use crate::merkle::tiles::TILE_WIDTH;
use crate::merkle::{leaf_hash, Hash};

use super::alert::AlertKind;
use super::{LogMonitor, MonitorError};

/// Entry bundles read (and committed to the state) per step.
const CHUNK_BUNDLES: u64 = 64;
/// Tiles fetched concurrently.
const CONCURRENCY: usize = 8;

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

type Fetched = Result<(u64, Vec<Vec<u8>>, Vec<Hash>), TilesError>;

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
        let client = self.sources[src].clone();
        let mut bundle = start / TILE_WIDTH;
        let end = n.div_ceil(TILE_WIDTH);
        while bundle < end {
            let last = (bundle + CHUNK_BUNDLES).min(end);
            let fetched: Vec<Fetched> = stream::iter(bundle..last)
                .map(|b| fetch_pair(&client, b, n))
                .buffered(CONCURRENCY)
                .collect()
                .await;
            let saved = self.state.progress.clone();
            let before = saved.size();
            for item in fetched {
                let ok = match item {
                    Ok((b, entries, tile)) => self.check_bundle(b, &entries, &tile).await?,
                    Err(TilesError::Malformed { path, reason }) => {
                        let details = format!("{}/{path}: {reason}", client.base());
                        self.alert(AlertKind::TileMismatch, None, details).await;
                        false
                    }
                    Err(e) => {
                        self.restore(&saved);
                        return Err(e.into());
                    }
                };
                if !ok {
                    self.restore(&saved);
                    bar.abandon();
                    return Ok(Outcome::BadData);
                }
            }
            self.index.commit(self.state.progress.size())?;
            self.save()?;
            let done = self.state.progress.size() - before;
            self.sink.add_checked(&self.origin, done);
            bar.inc(done);
            if bar.is_hidden() {
                tracing::info!(log = %self.origin, position = self.state.progress.size(), target = n, "audited");
            }
            bundle = last;
        }
        bar.finish_and_clear();
        if self.state.progress.root() != cp.checkpoint.root {
            self.reset_progress();
            self.save()?;
            return Ok(Outcome::RootMismatch);
        }
        self.state.checkpoint = cp.clone();
        self.state.verified = self.state.progress.clone();
        self.save()?;
        self.sink.set_verified(&self.origin, n);
        Ok(Outcome::Verified)
    }

    /// Checks one bundle against its level-0 tile and audits the entries past the position.
    /// False when the bundle and the tile disagree (alerted).
    async fn check_bundle(
        &mut self,
        b: u64,
        entries: &[Vec<u8>],
        tile: &[Hash],
    ) -> Result<bool, MonitorError> {
        let first = b * TILE_WIDTH;
        let mut ok = true;
        for ((i, bytes), want) in (first..).zip(entries).zip(tile) {
            let leaf = leaf_hash(bytes);
            if &leaf != want {
                let details =
                    format!("entry {i} in bundle {b} does not hash to its level-0 tile hash");
                self.alert(AlertKind::TileMismatch, Some(i), details).await;
                ok = false;
                continue;
            }
            if !ok || i < self.state.progress.size() {
                continue;
            }
            self.state.progress.push(leaf);
            self.check_entry(i, bytes).await?;
        }
        Ok(ok)
    }

    /// The claims and watch rules on one entry.
    async fn check_entry(&mut self, i: u64, bytes: &[u8]) -> Result<(), MonitorError> {
        let entry = match Entry::parse(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.alert(AlertKind::BadEntry, Some(i), e.to_string())
                    .await;
                return Ok(());
            }
        };
        if let Some(v) = self.index.check(i, &entry)? {
            self.alert(v.kind, Some(i), v.details).await;
        }
        if let Some((kind, details)) = self.watcher.check(&entry) {
            self.alert(kind, Some(i), details).await;
        }
        Ok(())
    }

    /// Drops unconfirmed progress: back to the verified checkpoint.
    pub(super) fn reset_progress(&mut self) {
        self.state.progress = self.state.verified.clone();
        self.index.rollback(self.state.progress.size());
    }

    /// Drops the progress of an unfinished step, back to the frontier it started from.
    fn restore(&mut self, saved: &crate::monitor::state::Frontier) {
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

async fn fetch_pair(client: &TileClient, b: u64, n: u64) -> Fetched {
    let (entries, tile) = tokio::join!(client.entry_bundle(b, n), client.hash_tile(0, b, n));
    Ok((b, entries?, tile?))
}
