//! Reads for people (the explorer and its feeds): a package's history with the claim rules'
//! marks, entries by artifact digest, and the newest events under a purl prefix. Every read is
//! bounded (entries replayed, keys scanned, entries returned) and runs on the blocking pool,
//! reading the same indexes as `/v1`; none of them touches the writer.

use super::error::LogError;
use super::{entry_text, Log};
use btlog_core::claims::{Mark, PackageHistory};
use btlog_core::entry::{purl_has_prefix, Entry};
use btlog_core::merkle::Hash;
use btlog_store::Store;
use std::collections::BinaryHeap;

/// Entries of one package replayed at most per request to mark a page: the replay holds one
/// record per published identity, so this bounds its memory (a few MB) and time (one batched
/// read per 1,000 entries). Pages of larger packages beyond it are served without marks.
pub const MAX_REPLAY: usize = 20_000;
/// Package index keys scanned at most for a prefix feed; a broader prefix is refused.
pub const MAX_PREFIX_SCAN: usize = 50_000;
/// Entries replayed per batched read.
const CHUNK: usize = 1_000;
/// Replays and prefix scans running at once, whatever the number of page requests: with
/// [`MAX_REPLAY`], the explorer's memory stays a few MB, and the writer keeps its cores.
static SCANS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Which part of a package's history to return.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// Up to `limit` events from leaf index `from` on, in log order.
    From {
        /// First leaf index.
        from: u64,
        /// Most events.
        limit: usize,
    },
    /// The newest `limit` events, in log order.
    Newest {
        /// Most events.
        limit: usize,
    },
}

/// One event of a history.
#[derive(Clone, Debug)]
pub struct Event {
    /// Leaf index.
    pub index: u64,
    /// The entry.
    pub entry: Entry,
    /// What deserves a second look (empty when not computed, see [`History::marked`]).
    pub marks: Vec<Mark>,
}

impl Event {
    /// An event without marks.
    pub fn unmarked(index: u64, entry: Entry) -> Event {
        Event {
            index,
            entry,
            marks: Vec::new(),
        }
    }
}

/// A window of a package's history, or the newest events under a prefix.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// The events, in log order.
    pub events: Vec<Event>,
    /// The index to continue from, when more events follow (`Window::From`).
    pub next: Option<u64>,
    /// Whether the marks were computed (false past [`MAX_REPLAY`], and for prefixes, where
    /// only owner changes are marked).
    pub marked: bool,
}

/// Why a prefix feed was refused.
pub fn too_broad() -> LogError {
    LogError::bad_input(format!(
        "the prefix covers more than {MAX_PREFIX_SCAN} entries; use a narrower prefix"
    ))
}

impl Log {
    /// A window of the history of `package` in the served checkpoint, with the marks of the
    /// claim rules ([`PackageHistory`]) computed by replaying the package from its first
    /// entry (at most [`MAX_REPLAY`] entries).
    pub async fn package_history(
        &self,
        package: String,
        window: Window,
    ) -> Result<History, LogError> {
        let size = self.checkpoint().size;
        let _slot = SCANS.acquire().await.map_err(|e| LogError::internal(&e))?;
        self.blocking(move |store| replay(store, &package, window, size))
            .await
    }

    /// Entries in the served checkpoint whose artifact sha256 is `sha256` (at most `limit`),
    /// and the first index the digest index covers.
    pub async fn find_digest(
        &self,
        sha256: Hash,
        limit: usize,
    ) -> Result<(Vec<(u64, Entry)>, u64), LogError> {
        let size = self.checkpoint().size;
        self.blocking(move |store| {
            // Candidates share an 8-byte prefix; a few extra allow for rare false ones.
            let candidates = store.digest_candidates(&sha256, limit.saturating_add(8))?;
            let found = read_entries(store, &candidates, size)?
                .into_iter()
                .filter(|(_, e)| e.sha256 == sha256 && !e.kind.is_owner())
                .take(limit)
                .collect();
            Ok((found, store.digests_from()))
        })
        .await
    }

    /// The index of the entry with leaf hash `leaf` in the served checkpoint, if any.
    pub async fn find_leaf(&self, leaf: Hash) -> Result<Option<u64>, LogError> {
        let size = self.checkpoint().size;
        self.blocking(move |store| Ok(store.find_leaf(&leaf, size)?))
            .await
    }

    /// The entry at `index` in the served checkpoint, as text.
    pub async fn entry(&self, index: u64) -> Result<String, LogError> {
        let size = self.checkpoint().size;
        if index >= size {
            return Err(LogError::not_found(format!(
                "no entry {index}: the latest checkpoint has {size} entries"
            )));
        }
        self.blocking(move |store| {
            let bytes = store
                .entry(index)?
                .ok_or_else(|| LogError::internal(&format!("entry {index} missing")))?;
            entry_text(bytes)
        })
        .await
    }

    /// The newest `limit` events of all packages under the purl prefix `prefix` (whole
    /// segments), from one bounded scan of the package index's keys (a seek an epoch): refused when the
    /// prefix covers more than [`MAX_PREFIX_SCAN`] entries. Only owner changes are marked.
    pub async fn prefix_events(&self, prefix: String, limit: usize) -> Result<History, LogError> {
        let size = self.checkpoint().size;
        let _slot = SCANS.acquire().await.map_err(|e| LogError::internal(&e))?;
        self.blocking(move |store| {
            let mut newest = BinaryHeap::new();
            let complete =
                store.scan_package_prefix(prefix.as_bytes(), MAX_PREFIX_SCAN, |p, i| {
                    if i < size && purl_has_prefix(p, &prefix) {
                        newest.push(std::cmp::Reverse(i));
                        if newest.len() > limit {
                            newest.pop();
                        }
                    }
                })?;
            if !complete {
                return Err(too_broad());
            }
            let mut indexes: Vec<u64> = newest.into_iter().map(|r| r.0).collect();
            indexes.sort_unstable();
            let events = read_entries(store, &indexes, size)?
                .into_iter()
                .map(|(index, entry)| {
                    let mut event = Event::unmarked(index, entry);
                    if event.entry.kind.is_owner() {
                        event.marks.push(Mark::OwnerChange);
                    }
                    event
                })
                .collect();
            Ok(History {
                events,
                next: None,
                marked: false,
            })
        })
        .await
    }
}

/// Reads and parses the entries at `indexes` (those below `size`).
fn read_entries(store: &Store, indexes: &[u64], size: u64) -> Result<Vec<(u64, Entry)>, LogError> {
    let indexes: Vec<u64> = indexes.iter().copied().filter(|i| *i < size).collect();
    store
        .entries_at(&indexes)?
        .into_iter()
        .zip(indexes)
        .map(|(bytes, i)| {
            let bytes = bytes.ok_or_else(|| LogError::internal(&format!("entry {i} missing")))?;
            let entry = Entry::parse(&bytes)
                .map_err(|e| LogError::internal(&format!("entry {i} does not parse: {e}")))?;
            Ok((i, entry))
        })
        .collect()
}

fn replay(store: &Store, package: &str, window: Window, size: u64) -> Result<History, LogError> {
    let (from, limit) = match window {
        Window::From { from, limit } => (from, limit),
        Window::Newest { limit } => (0, limit),
    };
    let mut history = PackageHistory::new();
    let mut out = std::collections::VecDeque::new();
    let mut next = None;
    let mut cursor = 0u64;
    let mut replayed = 0usize;
    'scan: loop {
        let indexes = store.package_indexes(package, cursor, CHUNK)?;
        let done = indexes.len() < CHUNK;
        for (index, entry) in read_entries(store, &indexes, size)? {
            let marks = history.observe(index, &entry);
            replayed += 1;
            if index >= from {
                if matches!(window, Window::From { .. }) && out.len() == limit {
                    next = Some(index);
                    break 'scan;
                }
                out.push_back(Event {
                    index,
                    entry,
                    marks,
                });
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        match indexes.last() {
            Some(last) if !done && *last + 1 < size => cursor = last + 1,
            _ => break,
        }
        if replayed >= MAX_REPLAY {
            return unmarked(store, package, window, size);
        }
    }
    Ok(History {
        events: out.into(),
        next,
        marked: true,
    })
}

/// The window without marks, for a package too long to replay.
fn unmarked(store: &Store, package: &str, window: Window, size: u64) -> Result<History, LogError> {
    let (indexes, next) = match window {
        Window::From { from, limit } => {
            let mut ix = store.package_indexes(package, from, limit.saturating_add(1))?;
            let next = (ix.len() > limit).then(|| ix[limit]);
            ix.truncate(limit);
            (ix, next)
        }
        Window::Newest { limit } => {
            let mut ix = store.package_indexes_rev(package, size, limit)?;
            ix.reverse();
            (ix, None)
        }
    };
    let events = read_entries(store, &indexes, size)?
        .into_iter()
        .map(|(index, entry)| Event::unmarked(index, entry))
        .collect();
    Ok(History {
        events,
        next,
        marked: false,
    })
}
