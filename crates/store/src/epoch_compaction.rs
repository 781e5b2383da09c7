//! Compacts each epoch of the identity, leaf and digest indexes once, when it is full (and
//! of any index laid out as they are: the monitor's claim index).
//!
//! Their keys begin with the epoch ([`crate::hash_index::Epochs`]) and are random within it,
//! and their table files are cut at each epoch ([`crate::partitioned`]). Left to RocksDB, level
//! 0 was compacted whenever it held 8 files: about twice an epoch, each time rewriting all of
//! the newest epoch compacted so far, and once more for the flush that straddles the next
//! epoch. Over 8M entries the identity index wrote 88 bytes an entry for records of 40
//! (BENCHMARKS.md, "Eighth pass"). Here level 0 keeps the newest epoch's flushes (up to 19 of
//! the identity index, 14 of the others, in that series), and the append that completes an
//! epoch asks this thread to compact that epoch's key range: each record is rewritten once,
//! into one file of the last level (48 bytes an entry in the same series). RocksDB still
//! compacts level 0 on its own past [`LEVEL0_FALLBACK`] files, should a store have larger
//! epochs or this thread fall behind.
//!
//! The thread only waits for RocksDB's own compaction threads (their CPU time is theirs); it
//! runs beside the writer, which never waits for it. A crash before it finishes leaves the
//! epoch in level 0, and the next open asks for it again. Closing the store waits for every
//! epoch already handed over: an epoch takes ~1–2 s to compact, and ~10 s to fill at this
//! machine's ingest rate (~20 s in a restore, BENCHMARKS.md), so at most one is ever waiting.

use super::hash_index::Epochs;
use rocksdb::{BottommostLevelCompaction, CompactOptions, FlushOptions, DB};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Level-0 files at which RocksDB compacts the three indexes itself (see the module docs):
/// twice the 19 flushes an epoch of 2^20 entries made at most, since the shared write budget
/// can force flushes early.
pub const LEVEL0_FALLBACK: i32 = 40;

/// The compacting thread; dropping this waits for it to finish the epoch it is on.
pub struct EpochCompaction {
    full: Option<mpsc::Sender<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochCompaction {
    /// Starts the thread for the epoch-keyed column families `families` of `db` (created
    /// with [`crate::epoch_keyed_index_options`]).
    pub fn start(
        db: Arc<DB>,
        families: &'static [&'static str],
    ) -> std::io::Result<EpochCompaction> {
        let (full, epochs) = mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("btlog-compact".into())
            .spawn(move || {
                for epoch in epochs {
                    compact(&db, families, epoch);
                }
            })?;
        Ok(EpochCompaction {
            full: Some(full),
            thread: Some(thread),
        })
    }

    /// Asks for `epoch`, now full, to be compacted; returns at once.
    pub fn epoch_full(&self, epoch: u64) {
        if let Some(full) = &self.full {
            // The thread ends only when this sender is dropped.
            let _ = full.send(epoch);
        }
    }
}

impl Drop for EpochCompaction {
    fn drop(&mut self) {
        self.full.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Compacts `epoch`'s key range in each of `families` whose level 0 holds part of it,
/// down to the last level, beside RocksDB's own compactions.
///
/// The last level is compacted too, but only its files older than this compaction
/// (`ForceOptimized`): RocksDB moves a lone level-0 file that overlaps nothing below straight
/// to the last level without the partitioner cutting it (it consults the partitioner before a
/// move to any other level), so a flush that held this epoch and the next would stay one file
/// there. Rewritten in the last level, it is cut at each epoch. Files this compaction wrote
/// are not rewritten, and an epoch no longer in level 0 (asked for again at open, already
/// compacted) is skipped, so each record is still written once.
fn compact(db: &DB, families: &[&'static str], epoch: u64) {
    let (Ok(start), Ok(end)) = (Epochs::number(epoch), Epochs::number(epoch + 1)) else {
        // The last epoch a u32 can number is never full: the log's size is below 2^64.
        return;
    };
    let began = std::time::Instant::now();
    let families = match level0_holding(db, families, start, end) {
        Ok(families) => families,
        Err(error) => {
            // Left in level 0, the epoch is compacted by RocksDB past LEVEL0_FALLBACK files.
            tracing::warn!(epoch, %error, "epoch not compacted");
            return;
        }
    };
    let mut options = CompactOptions::default();
    options.set_exclusive_manual_compaction(false);
    options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
    for family in families.iter().filter_map(|name| db.cf_handle(name)) {
        db.compact_range_cf_opt(
            family,
            Some(start.to_be_bytes()),
            Some(end.to_be_bytes()),
            &options,
        );
    }
    tracing::debug!(
        epoch,
        ?families,
        seconds = began.elapsed().as_secs_f64(),
        "epoch compacted"
    );
}

/// Those of `families` whose level 0 holds keys of the epoch numbered `start` (those from
/// `start`'s four bytes to below `end`'s), once their memtables are flushed into it.
fn level0_holding(
    db: &DB,
    families: &[&'static str],
    start: u32,
    end: u32,
) -> Result<Vec<&'static str>, rocksdb::Error> {
    // A family not open in `db` holds nothing to compact.
    let handles: Vec<_> = families
        .iter()
        .filter_map(|name| db.cf_handle(name))
        .collect();
    db.flush_cfs_opt(&handles, &FlushOptions::default())?;
    let files = db.live_files()?;
    let (start, end) = (start.to_be_bytes(), end.to_be_bytes());
    Ok(families
        .iter()
        .copied()
        .filter(|name| {
            files.iter().any(|f| {
                f.level == 0
                    && f.column_family_name == *name
                    && f.start_key.as_deref().is_some_and(|k| k < &end[..])
                    && f.end_key.as_deref().is_some_and(|k| k >= &start[..])
            })
        })
        .collect())
}
