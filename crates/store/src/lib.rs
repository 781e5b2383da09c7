//! btlog-store: RocksDB storage for the log: entries, Merkle tiles, the identity and package indexes, and
//! the history of signed checkpoints.
//!
//! Column families, each named for what it holds:
//! - `entries`: big-endian u64 index → entry bytes.
//! - `tiles`: [`tile::TileAddr::key`] → stored tile (see [`tile`]): the partial tiles, and
//!   the tiles full before the store came to layout 5 (the others are in `tiles/`).
//! - `identities_by_epoch`: the identity index: epoch, 32-byte identity key → low bits of the
//!   index of the entry that claimed it ([`identity`]).
//! - `identity_filters`: big-endian u32 epoch → the sealed bloom filter of that full epoch's
//!   identities ([`identity`]).
//! - `leaves_by_epoch`: the leaf index: epoch, first 8 bytes of the leaf hash, low bits of the
//!   index → empty ([`hash_index`]). A short prefix keeps this index small; candidates are
//!   confirmed against the stored leaf hash.
//! - `packages_by_epoch`: the package index: epoch, package purl, 0x00, low bits of the index
//!   → empty, one key per entry ([`packages`]).
//! - `package_filters`: big-endian u32 epoch → the sealed bloom filter of the packages that
//!   full epoch lists ([`packages`], [`epoch_filters`]).
//! - `digests_by_epoch`: the artifact digest index, keyed as the leaf index but by the
//!   artifact sha256, for entries appended with a digest ([`NewEntry::with_digest`]);
//!   candidates are confirmed against the entry. Written since `meta` `digests_from` (the log
//!   size when a build with this index first opened the store): older entries are not in it.
//! - `checkpoints`: big-endian u64 tree size → signed checkpoint note.
//! - `meta`: `format` → big-endian u32 layout version; `size` → big-endian u64 tree size;
//!   `digests_from` → big-endian u64, see `digests_by_epoch`; `epoch_bits` → one byte, the
//!   epoch size of the leaf, digest, identity and package indexes as a power of two;
//!   `tile_files_from` → big-endian u64, the log size when the store came to layout 5 from an
//!   older one (absent: 0), see [`tile_files`].
//! - outside RocksDB, `tiles/0` to `tiles/6`: the full tiles of each tile level, written once
//!   each ([`tile_files`]); `tiles` holds the others.
//!
//! Layout 5 (this one) differs from layout 4 only in where full tiles are kept ([`tile_files`]);
//! layout 4 from layout 3 only in the package index, keyed by epoch first
//! and filtered ([`epoch_filters`]); layout 3 from layout 2 only in the identity index, likewise;
//! layout 2 from layout 1 only in the keys of the leaf and digest indexes.
//! Opening a store of an older layout upgrades it in place ([`migrate`]).
//!
//! Every append is one atomic, synced `WriteBatch` holding the entries, the partial tiles they
//! changed, their index keys, the new size and the checkpoint signed for it, written after the
//! tiles it fills are synced to their files ([`tile_files`]): after a crash the store is
//! exactly the state after some completed append. Readers only ever look at indexes below
//! the published size, and everything below it is immutable, so reads never wait for writes.

mod append;
pub mod bloom;
pub mod epoch_compaction;
pub mod epoch_filters;
mod hash_index;
mod identity;
mod migrate;
mod packages;
mod tile;
mod tile_cache;
mod tile_files;

use btlog_core::merkle::tiles::TILE_WIDTH;
use btlog_core::merkle::{self, Hash, HashReader, NodeId, ProofError};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tile::TileAddr;
use tile_files::TILE_RECORD;

pub use append::{Appender, NewEntry, Staged};
pub use hash_index::{Epochs, DEFAULT_BITS as DEFAULT_EPOCH_BITS};
pub use identity::BITS_PER_KEY as IDENTITY_BITS_PER_KEY;
pub use tile_files::TileFileError;

/// The on-disk layout version this build reads and writes.
pub const FORMAT_VERSION: u32 = 5;

const CF_ENTRIES: &str = "entries";
const CF_TILES: &str = "tiles";
const CF_IDENTITIES: &str = "identities_by_epoch";
const CF_IDENTITY_FILTERS: &str = "identity_filters";
const CF_PACKAGES: &str = "packages_by_epoch";
const CF_PACKAGE_FILTERS: &str = "package_filters";
const CF_LEAVES: &str = "leaves_by_epoch";
const CF_DIGESTS: &str = "digests_by_epoch";
const CF_CHECKPOINTS: &str = "checkpoints";
const CF_META: &str = "meta";
const COLUMN_FAMILIES: [&str; 10] = [
    CF_ENTRIES,
    CF_TILES,
    CF_IDENTITIES,
    CF_IDENTITY_FILTERS,
    CF_PACKAGES,
    CF_PACKAGE_FILTERS,
    CF_LEAVES,
    CF_DIGESTS,
    CF_CHECKPOINTS,
    CF_META,
];
const META_FORMAT: &[u8] = b"format";
const META_SIZE: &[u8] = b"size";
/// Prefix of the publish watermarks in the meta column family, one per copy.
const META_PUBLISHED: &[u8] = b"published:";

fn published_key(target: &str) -> Vec<u8> {
    [META_PUBLISHED, target.as_bytes()].concat()
}
const META_DIGESTS_FROM: &[u8] = b"digests_from";
const META_EPOCH_BITS: &[u8] = b"epoch_bits";
const META_TILE_FILES_FROM: &[u8] = b"tile_files_from";

/// RocksDB's memory and compaction debt ([`Store::engine_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Bytes in memtables, active and awaiting flush.
    pub memtable_bytes: u64,
    /// Bytes held by open table readers outside the block cache.
    pub table_reader_bytes: u64,
    /// Bytes in the shared block cache (data, index and filter blocks).
    pub block_cache_bytes: u64,
    /// Of those, bytes pinned (not evictable).
    pub block_cache_pinned_bytes: u64,
    /// Bytes RocksDB estimates it must still rewrite to bring every level within its target.
    pub pending_compaction_bytes: u64,
    /// Bytes of the identity index's bloom filters, held outside RocksDB ([`identity`]).
    pub identity_filter_bytes: u64,
    /// Bytes of the package index's bloom filters, held outside RocksDB ([`packages`]).
    pub package_filter_bytes: u64,
}

/// What can go wrong reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed (I/O, corruption it detected, ...).
    #[error("storage: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The data directory was written by another layout version.
    #[error(
        "data directory has layout version {found}, this build reads version {FORMAT_VERSION}"
    )]
    Format {
        /// The version found on disk.
        found: u32,
    },
    /// Stored data is not what this layout says it must be.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A proof or root was asked for sizes or indexes the tree does not have.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A tree size beyond what the log holds was asked for.
    #[error("tree size {asked} is beyond the log size {size}")]
    BeyondLog {
        /// The size asked for.
        asked: u64,
        /// The log size.
        size: u64,
    },
    /// An epoch size outside 1..=32 bits was asked for ([`Store::open_with_epoch_bits`]).
    #[error("epoch bits {0} outside 1..=32")]
    EpochBits(u8),
    /// A second writer was requested; the log has exactly one.
    #[error("the store already has a writer")]
    WriterTaken,
    /// An append failed, or an earlier one did: after a failed write the disk state is
    /// unknown (RocksDB turns read-only, and WAL replay at the next open may bring the batch
    /// back), so the writer refuses to append until the store is reopened (a restart reloads
    /// the tree from disk).
    #[error("the writer stopped after a failed append; restart the log")]
    WriterPoisoned,
    /// The files of full tiles failed or hold a damaged record ([`tile_files`]).
    #[error(transparent)]
    TileFile(#[from] TileFileError),
    /// The files of full tiles could not be opened ([`tile_files`]).
    #[error("cannot open the files of full tiles: {0}")]
    TileFilesOpen(std::io::Error),
    /// The store's compaction thread could not be started ([`epoch_compaction`]).
    #[error("cannot start the store's compaction thread: {0}")]
    Thread(std::io::Error),
}

/// Where an injected write failure strikes; see [`Store::inject_write_failures`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFailure {
    /// The batch is written, then the write reports an error (as a failed fsync after the data
    /// reached the disk would): the stored size moved, and the writer stops.
    AfterWrite,
    /// The synced write stalls this long (a disk that stopped answering for a while), then
    /// succeeds.
    Stall(std::time::Duration),
}

impl From<tile::BadTile> for StoreError {
    fn from(e: tile::BadTile) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// A handle on an open store; cheap to clone and shared by all readers.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<DB>,
    size: AtomicU64,
    /// The first index the digest index covers; see `digests_by_epoch` in the module docs.
    digests_from: u64,
    /// The epoch size of the leaf, digest, identity and package indexes.
    epochs: hash_index::Epochs,
    /// The identity index's filters, one an epoch or one for 8 full epochs.
    identity_filters: epoch_filters::EpochFilters,
    /// The package index's filters, one an epoch.
    package_filters: epoch_filters::EpochFilters,
    writer_taken: AtomicBool,
    /// Set once an append failed after its write may have landed; see [`Store::writer_stopped`].
    writer_stopped: AtomicBool,
    /// Appends still to fail on purpose, and where; see [`Store::inject_write_failures`].
    failures: Mutex<Option<(InjectedFailure, u32)>>,
    /// Full upper-level tiles, for proofs.
    tile_cache: tile_cache::TileCache,
    /// Full tiles, outside RocksDB.
    tile_files: tile_files::TileFiles,
    /// Compacts each full epoch of the identity, leaf and digest indexes once.
    epoch_compaction: epoch_compaction::EpochCompaction,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`, refusing data of another layout version
    /// and upgrading older layouts ([`migrate`]).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_epoch_bits(dir, hash_index::DEFAULT_BITS)
    }

    /// As [`Store::open`]; a store created or upgraded from layout 1 here gets epochs of
    /// 2^`epoch_bits` entries in its leaf, digest, identity and package indexes ([`hash_index`]), where
    /// an existing store keeps its own. Tests use small epochs to cross many; a log should not,
    /// since lookups cost one filter probe or seek an epoch (see [`identity`]).
    pub fn open_with_epoch_bits(dir: &Path, epoch_bits: u8) -> Result<Store, StoreError> {
        let wanted =
            hash_index::Epochs::new(epoch_bits).ok_or(StoreError::EpochBits(epoch_bits))?;
        let old = migrate::old_families(dir)?;
        let mut descriptors = cf_descriptors()?;
        descriptors.extend(
            old.iter()
                .map(|name| ColumnFamilyDescriptor::new(*name, Options::default())),
        );
        let mut db = DB::open_cf_descriptors(&db_options(), dir, descriptors)?;
        let format = db
            .get_cf(cf(&db, CF_META), META_FORMAT)?
            .map(|v| be_u32(&v))
            .transpose()?;
        let stored_epochs = || -> Result<hash_index::Epochs, StoreError> {
            let bits = db.get_cf(cf(&db, CF_META), META_EPOCH_BITS)?;
            bits.as_deref()
                .and_then(|b| <[u8; 1]>::try_from(b).ok())
                .and_then(|[b]| hash_index::Epochs::new(b))
                .ok_or_else(|| StoreError::Corrupt("epoch size missing or malformed".into()))
        };
        let epochs = match format {
            Some(FORMAT_VERSION) => stored_epochs()?,
            Some(found @ 1..FORMAT_VERSION) => {
                // Layout 1 had no epochs: its upgrade gives it the size asked for.
                let epochs = if found == 1 { wanted } else { stored_epochs()? };
                migrate::upgrade(&db, found, epochs)?;
                epochs
            }
            Some(found) => return Err(StoreError::Format { found }),
            None => {
                if db
                    .iterator_cf(cf(&db, CF_ENTRIES), rocksdb::IteratorMode::Start)
                    .next()
                    .is_some()
                {
                    return Err(StoreError::Corrupt(
                        "entries without a format marker".into(),
                    ));
                }
                put_layout_synced(&db, FORMAT_VERSION, wanted)?;
                wanted
            }
        };
        // Only now is the store at this layout on disk, with nothing left to read in these.
        for name in old {
            db.drop_cf(name)?;
        }
        let size = meta_u64(&db, META_SIZE)?.unwrap_or(0);
        let digests_from = match meta_u64(&db, META_DIGESTS_FROM)? {
            Some(from) => from,
            None => {
                put_meta_synced(&db, META_DIGESTS_FROM, &size.to_be_bytes())?;
                size
            }
        };
        // Absent in a store created at layout 5: every full tile is in the files.
        let tile_files_from = meta_u64(&db, META_TILE_FILES_FROM)?.unwrap_or(0);
        let tile_files =
            tile_files::TileFiles::open(dir, tile_files_from).map_err(StoreError::TileFilesOpen)?;
        tile_files.check(size)?;
        let db = Arc::new(db);
        let identity_filters = epoch_filters::EpochFilters::load(
            &db,
            CF_IDENTITIES,
            CF_IDENTITY_FILTERS,
            epochs,
            size,
            &identity::FAMILY,
        )?;
        let package_filters = epoch_filters::EpochFilters::load(
            &db,
            CF_PACKAGES,
            CF_PACKAGE_FILTERS,
            epochs,
            size,
            &packages::FAMILY,
        )?;
        let epoch_compaction = epoch_compaction::EpochCompaction::start(
            db.clone(),
            &[CF_IDENTITIES, CF_LEAVES, CF_DIGESTS],
        )
        .map_err(StoreError::Thread)?;
        // An epoch completed just before a crash may not have been compacted yet.
        if let Some(last_full) = epochs.epoch(size).checked_sub(1) {
            epoch_compaction.epoch_full(last_full);
        }
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                size: AtomicU64::new(size),
                digests_from,
                epochs,
                identity_filters,
                package_filters,
                writer_taken: AtomicBool::new(false),
                writer_stopped: AtomicBool::new(false),
                failures: Mutex::new(None),
                tile_cache: tile_cache::TileCache::new(tile_cache::SLOTS),
                tile_files,
                epoch_compaction,
            }),
        })
    }

    /// The log's single writer. Loads the right edge of the tree; a second call fails.
    pub fn appender(&self) -> Result<Appender, StoreError> {
        if self.inner.writer_taken.swap(true, Ordering::SeqCst) {
            return Err(StoreError::WriterTaken);
        }
        let size = self.size();
        let frontier = tile::Frontier::load(size, |addr| {
            if self.inner.tile_files.holds(addr, size) {
                let mut record = [0; TILE_RECORD];
                let tile = self.inner.tile_files.read(addr, &mut record);
                tile.ok().map(<[u8]>::to_vec)
            } else {
                self.inner
                    .db
                    .get_cf(self.cf(CF_TILES), addr.key())
                    .ok()
                    .flatten()
            }
        })?;
        Ok(Appender::new(self.clone(), frontier))
    }

    /// The number of entries durably in the log.
    pub fn size(&self) -> u64 {
        self.inner.size.load(Ordering::Acquire)
    }

    /// Whether the writer stopped after an append failed ([`StoreError::WriterPoisoned`]):
    /// reads go on, appends are refused until the store is reopened.
    pub fn writer_stopped(&self) -> bool {
        self.inner.writer_stopped.load(Ordering::Acquire)
    }

    /// What RocksDB holds in memory and owes in compaction, for the server's metrics: each
    /// figure summed over the column families (each block cache read once).
    pub fn engine_stats(&self) -> EngineStats {
        let property = |name: &str, property: &str| {
            self.db()
                .property_int_value_cf(self.cf(name), property)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let sum = |p: &str| COLUMN_FAMILIES.iter().map(|name| property(name, p)).sum();
        // Every column family shares one block cache: read it through any.
        EngineStats {
            memtable_bytes: sum("rocksdb.cur-size-all-mem-tables"),
            table_reader_bytes: sum("rocksdb.estimate-table-readers-mem"),
            block_cache_bytes: property(CF_ENTRIES, "rocksdb.block-cache-usage"),
            block_cache_pinned_bytes: property(CF_ENTRIES, "rocksdb.block-cache-pinned-usage"),
            pending_compaction_bytes: sum("rocksdb.estimate-pending-compaction-bytes"),
            identity_filter_bytes: self.inner.identity_filters.bytes(),
            package_filter_bytes: self.inner.package_filters.bytes(),
        }
    }

    fn stop_writer(&self) {
        self.inner.writer_stopped.store(true, Ordering::Release);
    }

    /// Test and operations hook: the next `n` appends fail at the storage boundary, as a
    /// failing disk would make them, either in place of their synced write or after it landed
    /// (`at`). It exercises the failure paths of the writer on a live log; a runtime call rather
    /// than a cargo feature so the binary under test is the one that ships, at the cost of one
    /// uncontended lock per batch.
    pub fn inject_write_failures(&self, at: InjectedFailure, n: u32) {
        *self.failures() = (n > 0).then_some((at, n));
    }

    /// Takes one injected failure, if any are pending.
    fn take_injected_failure(&self) -> Option<InjectedFailure> {
        let mut failures = self.failures();
        let (at, n) = (*failures)?;
        *failures = (n > 1).then_some((at, n - 1));
        Some(at)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Option<(InjectedFailure, u32)>> {
        self.inner
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn publish_size(&self, size: u64) {
        self.inner.size.store(size, Ordering::Release);
    }

    fn db(&self) -> &DB {
        &self.inner.db
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        cf(self.db(), name)
    }

    /// The entry at `index`, if the log has it.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if index >= self.size() {
            return Ok(None);
        }
        Ok(self.db().get_cf(self.cf(CF_ENTRIES), index.to_be_bytes())?)
    }

    /// Entries `start..end` (clamped to the log size), in order.
    pub fn entries(&self, start: u64, end: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        self.for_each_entry(start, end, |e| {
            out.push(e.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with entries `start..end` (clamped to the log size) in order, straight from
    /// RocksDB's iterator without copying each entry first.
    fn for_each_entry(
        &self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let end = end.min(self.size());
        if start >= end {
            return Ok(());
        }
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(end.to_be_bytes().to_vec());
        let mut iter = self.db().raw_iterator_cf_opt(self.cf(CF_ENTRIES), opts);
        iter.seek(start.to_be_bytes());
        let mut next = start;
        while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
            if be_u64(k)? != next {
                return Err(StoreError::Corrupt(format!("entry {next} missing")));
            }
            f(v)?;
            next += 1;
            iter.next();
        }
        iter.status()?;
        if next != end {
            return Err(StoreError::Corrupt(format!(
                "entries {start}..{end} incomplete"
            )));
        }
        Ok(())
    }

    /// The tlog-tiles entry bundle `index` with `width` entries: each entry prefixed by its
    /// big-endian u16 length. None when the log does not hold that many entries.
    pub fn entry_bundle(&self, index: u64, width: u16) -> Result<Option<Vec<u8>>, StoreError> {
        // Level 0 of the tree holds one hash per entry: the bundle exists exactly when that
        // tile does, and `width_at` does the (checked) index arithmetic for both.
        if merkle::tiles::width_at(0, index, self.size()).is_none_or(|have| have < width) {
            return Ok(None);
        }
        let start = index * TILE_WIDTH;
        let end = start + u64::from(width);
        let mut out = Vec::new();
        self.for_each_entry(start, end, |e| {
            let len = u16::try_from(e.len())
                .map_err(|_| StoreError::Corrupt("entry longer than 65535 bytes".into()))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(e);
            Ok(())
        })?;
        Ok(Some(out))
    }

    /// The tlog-tiles hash tile at `level`, `index` with `width` hashes (row 0 of the stored
    /// tile, cut to `width`). None when the tree does not hold that many hashes there.
    pub fn hash_tile(
        &self,
        level: u8,
        index: u64,
        width: u16,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let size = self.size();
        let have = merkle::tiles::width_at(level, index, size);
        if have.is_none_or(|h| h < width) {
            return Ok(None);
        }
        let addr = TileAddr { level, index };
        let cut = |stored: &[u8]| {
            tile::row0(stored)
                .filter(|r| r.len() >= usize::from(width) * 32)
                .map(|r| Some(r[..usize::from(width) * 32].to_vec()))
                .ok_or_else(|| StoreError::Corrupt(format!("tile {level}/{index} malformed")))
        };
        if self.inner.tile_files.holds(addr, size) {
            let mut record = [0; TILE_RECORD];
            return cut(self.inner.tile_files.read(addr, &mut record)?);
        }
        let stored = self
            .db()
            .get_pinned_cf(self.cf(CF_TILES), addr.key())?
            .ok_or_else(|| StoreError::Corrupt(format!("tile {level}/{index} missing")))?;
        cut(&stored)
    }

    /// The index of the entry that claimed `identity`, if any.
    pub fn identity_index(&self, identity: &Hash) -> Result<Option<u64>, StoreError> {
        Ok(self.identity_indexes(&[*identity])?.pop().flatten())
    }

    /// Waits until the filters built beside the writer (the identity filters' groups,
    /// [`epoch_filters`]) are in place. Lookups are right without it; benches and tests
    /// call it to measure or check the grouped filters.
    pub fn settle_filters(&self) {
        self.inner.identity_filters.settle();
        self.inner.package_filters.settle();
    }

    /// The index of the entry that claimed each of `identities`, if any, in one batched
    /// lookup of the epochs whose filters may hold them ([`identity`]). An index may be of an
    /// append written but not yet published: callers other than the writer bound what they
    /// use by a size they have seen published (a checkpoint), as the lookup endpoint does.
    pub fn identity_indexes(&self, identities: &[Hash]) -> Result<Vec<Option<u64>>, StoreError> {
        identity::lookup(
            &self.inner.identity_filters,
            self.inner.epochs,
            self.db(),
            self.cf(CF_IDENTITIES),
            identities,
        )
    }

    /// The lowest index below `size` whose leaf hash is `leaf`, if any: a prefix scan of the
    /// leaf index (one seek per epoch), each candidate confirmed against the tree.
    pub fn find_leaf(&self, leaf: &Hash, size: u64) -> Result<Option<u64>, StoreError> {
        let size = size.min(self.size());
        let mut found = None;
        self.inner
            .epochs
            .scan(self.db(), self.cf(CF_LEAVES), leaf, 0, size, |index| {
                if self.read_hashes(&[NodeId::new(0, index)])?[0] == *leaf {
                    found = Some(index);
                }
                Ok(found.is_none())
            })?;
        Ok(found)
    }

    /// The entries at `indexes` (None for any the log does not hold), in one batched read.
    pub fn entries_at(&self, indexes: &[u64]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let size = self.size();
        let keys: Vec<[u8; 8]> = indexes.iter().map(|i| i.to_be_bytes()).collect();
        self.db()
            .batched_multi_get_cf(self.cf(CF_ENTRIES), &keys, false)
            .into_iter()
            .zip(indexes)
            .map(|(v, i)| Ok(v?.filter(|_| *i < size).map(|v| v.to_vec())))
            .collect()
    }

    /// Candidate indexes (below the log size, in log order, at most `limit`) of entries
    /// appended with the artifact digest `sha256`: a prefix scan of the digest index (one seek
    /// per epoch from [`Store::digests_from`]). Keyed by a short prefix, so a caller confirms
    /// each against its entry. Entries below [`Store::digests_from`] are not indexed.
    pub fn digest_candidates(&self, sha256: &Hash, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.inner.epochs.scan(
            self.db(),
            self.cf(CF_DIGESTS),
            sha256,
            self.digests_from(),
            self.size(),
            |index| {
                out.push(index);
                Ok(out.len() < limit)
            },
        )?;
        Ok(out)
    }

    /// The first index the digest index covers: the log size when a build with the index
    /// first opened this store (0 for a store it created).
    pub fn digests_from(&self) -> u64 {
        self.inner.digests_from
    }

    /// The checkpoint signed for tree size `size`, if one was.
    pub fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        self.db()
            .get_cf(self.cf(CF_CHECKPOINTS), size.to_be_bytes())?
            .map(|v| {
                String::from_utf8(v).map_err(|_| StoreError::Corrupt("checkpoint not UTF-8".into()))
            })
            .transpose()
    }

    /// The tree size last published to the copy named `target` (0 if none): the durable
    /// watermark of a publisher, so it resumes where it stopped.
    pub fn published_size(&self, target: &str) -> Result<u64, StoreError> {
        self.db()
            .get_cf(self.cf(CF_META), published_key(target))?
            .map_or(Ok(0), |v| be_u64(&v))
    }

    /// Records, synced, that the copy named `target` holds the tree of `size` and its
    /// checkpoint.
    pub fn set_published_size(&self, target: &str, size: u64) -> Result<(), StoreError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db().put_cf_opt(
            self.cf(CF_META),
            published_key(target),
            size.to_be_bytes(),
            &opts,
        )?;
        Ok(())
    }

    /// The newest signed checkpoint and its size.
    pub fn latest_checkpoint(&self) -> Result<Option<(u64, String)>, StoreError> {
        let mut iter = self
            .db()
            .iterator_cf(self.cf(CF_CHECKPOINTS), rocksdb::IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item?;
                let note = String::from_utf8(v.into_vec())
                    .map_err(|_| StoreError::Corrupt("checkpoint not UTF-8".into()))?;
                Ok(Some((be_u64(&k)?, note)))
            }
        }
    }

    /// The root of the tree at `size` (≤ the log size).
    pub fn root(&self, size: u64) -> Result<Hash, StoreError> {
        self.check_size(size)?;
        merkle::root(size, self)
    }

    /// Inclusion proof of `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(size)?;
        merkle::inclusion_proof(index, size, self)
    }

    /// Consistency proof from `size1` to `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, StoreError> {
        self.check_size(size2)?;
        merkle::consistency_proof(size1, size2, self)
    }

    /// The leaf hash of entry `index` and its inclusion proof in the tree of `size` leaves, in
    /// one read: both mostly come from the leaf's level-0 tile, which is then read once.
    pub fn leaf_and_inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>), StoreError> {
        self.check_size(size)?;
        // The leaf itself first: a one-leaf range whose "subtree hash" is the leaf hash.
        let plan: Vec<_> = std::iter::once(index..index + 1)
            .chain(merkle::inclusion_plan(index, size)?)
            .collect();
        let mut hashes = merkle::prove(&plan, self)?;
        let leaf = hashes.remove(0);
        Ok((leaf, hashes))
    }

    fn check_size(&self, size: u64) -> Result<(), StoreError> {
        let have = self.size();
        if size > have {
            return Err(StoreError::BeyondLog {
                asked: size,
                size: have,
            });
        }
        Ok(())
    }
}

impl HashReader for Store {
    type Error = StoreError;

    /// Reads each stored tile once, however many of the nodes it holds. Upper-level tiles and
    /// the right edge, which every proof climbs through, come from the tile cache when it holds
    /// all the nodes asked for (a cached partial tile may predate newer nodes).
    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, StoreError> {
        let located: Vec<_> = nodes.iter().map(|n| tile::locate(*n)).collect();
        let mut addrs: Vec<TileAddr> = located.iter().map(|l| l.0).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let size = self.size();
        let cacheable = |a: &TileAddr| {
            a.level >= 1
                || merkle::tiles::width_at(a.level, a.index, size) != Some(TILE_WIDTH as u16)
        };
        let holds_all = |addr: &TileAddr, t: &[u8]| {
            located
                .iter()
                .filter(|l| l.0 == *addr)
                .all(|(_, row, offset)| tile::read_node(t, *row, *offset).is_some())
        };
        let mut tiles: HashMap<TileAddr, Arc<[u8]>> = HashMap::with_capacity(addrs.len());
        let mut missing = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let cached = cacheable(&addr)
                .then(|| self.inner.tile_cache.get(addr))
                .flatten()
                .filter(|t| holds_all(&addr, t));
            match cached {
                Some(t) => {
                    tiles.insert(addr, t);
                }
                None => missing.push(addr),
            }
        }
        // Full tiles in the files, read once each: upper ones into the cache; of level-0 ones
        // (one a proof, too many to cache), only the nodes asked for are kept.
        let (in_files, missing): (Vec<_>, Vec<_>) = missing
            .into_iter()
            .partition(|a| self.inner.tile_files.holds(*a, size));
        let mut read_out: HashMap<usize, Hash> = HashMap::new();
        let mut record = [0; TILE_RECORD];
        for addr in in_files {
            let tile = self.inner.tile_files.read(addr, &mut record)?;
            if cacheable(&addr) {
                let tile: Arc<[u8]> = Arc::from(tile);
                self.inner.tile_cache.put(addr, tile.clone());
                tiles.insert(addr, tile);
                continue;
            }
            for (i, (a, row, offset)) in located.iter().enumerate() {
                if *a == addr {
                    if let Some(hash) = tile::read_node(tile, *row, *offset) {
                        read_out.insert(i, hash);
                    }
                }
            }
        }
        let keys: Vec<[u8; 9]> = missing.iter().map(TileAddr::key).collect();
        let values =
            self.db()
                .batched_multi_get_cf(self.cf(CF_TILES), keys.iter().map(|k| &k[..]), true);
        let mut pinned = HashMap::with_capacity(missing.len());
        for (addr, value) in missing.iter().zip(values) {
            if let Some(v) = value? {
                if cacheable(addr) {
                    let v: Arc<[u8]> = Arc::from(&v[..]);
                    self.inner.tile_cache.put(*addr, v.clone());
                    tiles.insert(*addr, v);
                } else {
                    pinned.insert(*addr, v);
                }
            }
        }
        located
            .iter()
            .zip(nodes)
            .enumerate()
            .map(|(i, ((addr, row, offset), node))| {
                let tile = tiles.get(addr).map(|t| &t[..]);
                tile.or_else(|| pinned.get(addr).map(|t| &t[..]))
                    .and_then(|t| tile::read_node(t, *row, *offset))
                    .or_else(|| read_out.get(&i).copied())
                    .ok_or_else(|| StoreError::Corrupt(format!("node {node:?} not stored")))
            })
            .collect()
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    // Every column family is created at open; a missing one is a bug, not bad input.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} was not opened"))
}

/// Records layout `version` and the store's epoch size, synced, in one write.
fn put_layout_synced(db: &DB, version: u32, epochs: hash_index::Epochs) -> Result<(), StoreError> {
    let mut batch = rocksdb::WriteBatch::default();
    batch.put_cf(cf(db, CF_META), META_FORMAT, version.to_be_bytes());
    batch.put_cf(cf(db, CF_META), META_EPOCH_BITS, [epochs.bits()]);
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    Ok(db.write_opt(batch, &opts)?)
}

/// The big-endian u64 stored under the `meta` key `key`, if any.
fn meta_u64(db: &DB, key: &[u8]) -> Result<Option<u64>, StoreError> {
    db.get_cf(cf(db, CF_META), key)?
        .map(|v| be_u64(&v))
        .transpose()
}

/// Writes one `meta` key, synced (at open, before any append).
fn put_meta_synced(db: &DB, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    Ok(db.put_cf_opt(cf(db, CF_META), key, value, &opts)?)
}

fn be_u64(b: &[u8]) -> Result<u64, StoreError> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("expected an 8-byte number".into()))
}

fn be_u32(b: &[u8]) -> Result<u32, StoreError> {
    b.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Corrupt("expected a 4-byte number".into()))
}

/// Memory is bounded by these, not by the log size: one block cache for every column family
/// and one write-buffer budget across them. The identity filters come on top, 2 MiB per
/// million entries (16 MiB more while a group of 8 epochs is built), and the package filters
/// 1.5 MiB at most ([`epoch_filters`]: the current
/// epoch's is 1.5 MiB, a full one is sealed to the packages it lists); they replaced the
/// identity index's RocksDB filters, which
/// had a 40 MiB cache of their own beside a 24 MiB shared one. A 64 MiB write budget was
/// tried: with it, level 0 piled up, writes stalled 162 times over a 30M series, and 7.4 GB
/// of compaction was owed at 28M.
const BLOCK_CACHE_BYTES: usize = 32 << 20;
/// Block size of the column families read in runs (entries, packages, tiles, checkpoints):
/// four times the default, so their index partitions, which share the cache with the data
/// they locate, are a quarter of the size. A bundle is 256 entries (~53 KB), so its reads
/// are no more. The identity, leaf and digest indexes keep 4 KiB: they are read one key at a
/// time.
const RUN_BLOCK_BYTES: usize = 16 << 10;
const WRITE_BUFFER_BYTES: usize = 96 << 20;
/// Table file size of the tiles (RocksDB's default is 64 MiB). Their keys grow in order within
/// each tile level, but a flush holds the right edge's partial tiles too, whose keys the newest
/// last-level file of each level already holds: every compaction of level 0 rewrote that file
/// whole, up to 64 MiB of level-0 tiles (`4@0 + 3@6` in RocksDB's log). With 16 MiB files, the
/// tiles' compaction wrote 76 bytes an entry over the last ten millions of a 30M series instead
/// of 158 (BENCHMARKS.md, "Eighth pass"). The log then has ~210 files of tiles at 30M entries
/// instead of ~35, 566 table files in all against [`MAX_OPEN_FILES`] table readers: what is
/// read together, a proof's tiles, the newest epoch's indexes or a compaction's inputs, is far
/// fewer, and reads at 30M were no slower.
const TILE_FILE_BYTES: u64 = 16 << 20;
const MAX_OPEN_FILES: i32 = 512;

/// Write-ahead log kept before RocksDB flushes the column families that hold its oldest
/// file. A WAL file is deleted only once every column family written in it has flushed; the
/// checkpoints, meta and filter families take a few hundred bytes an append and would hold
/// theirs until RocksDB's default bound, four times all write buffers (~1.9 GiB). While the
/// full tiles went through RocksDB, the shared write budget flushed them often enough; once
/// they went to files, a 30M series kept ~1 GiB of WAL (100 files) and 600 bytes an entry on
/// disk over the first 4M entries (BENCHMARKS.md, "Ninth pass"). It is also what a restart
/// after a crash replays.
const MAX_WAL_BYTES: u64 = 256 << 20;

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_db_write_buffer_size(WRITE_BUFFER_BYTES);
    o.set_max_background_jobs(2);
    // Open table files are cached up to this many descriptors, so the server's descriptor
    // count is bounded however many SST files the log grows to.
    o.set_max_open_files(MAX_OPEN_FILES);
    o.set_bytes_per_sync(1 << 20);
    o.set_max_total_wal_size(MAX_WAL_BYTES);
    o
}

/// Table options for a column family reading through `cache`, with a whole-key bloom filter
/// when `filter` (column families read by point lookups).
fn table_options(cache: &Cache, filter: bool) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if filter {
        table.set_bloom_filter(10.0, false);
    }
    // Index and filter blocks live in the bounded block cache, partitioned so a lookup loads one
    // small partition, not a filter of megabytes for a large table (whole filters were re-read
    // and checksummed on every dedup lookup past ~300k entries).
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table
}

/// Options for the epoch-keyed indexes: the leaf and digest indexes, only ever scanned by
/// prefix (`find_leaf`, `digest_candidates`), and the identity index, read only where its own
/// filters send it ([`identity`]). They have no RocksDB bloom filters, in their tables or their
/// memtables: a whole-key filter cannot serve a seek, and the identity index has its own, so
/// none is built at each flush and compaction, and none takes block cache. Level 0 holds
/// an epoch's flushes until the epoch is full, then that epoch is compacted once
/// ([`epoch_compaction`]). Their memtables stay at 4 MiB: 16 MiB (for all three, or for the
/// leaf and digest indexes) cut their compaction CPU by 30–39% over 8M entries, and the
/// writer's inserts into the larger skiplists took as much again, on the writer's thread: the
/// ingest was 5–7% slower (BENCHMARKS.md, "Seventh pass").
fn unfiltered_index_options(cache: &Cache) -> Result<Options, StoreError> {
    let mut o = epoch_keyed_index_options(cache)?;
    o.set_write_buffer_size(4 << 20);
    Ok(o)
}

/// Options for an index in the shape of this store's identity index, here or elsewhere (the
/// monitor's claim index): keys begin with a big-endian u32 epoch, lookups go where
/// [`epoch_filters::EpochFilters`] send them, so its tables have no RocksDB bloom filters and
/// are cut at each epoch ([`partitioned`]). Level 0 keeps the newest epoch's flushes until
/// [`epoch_compaction::EpochCompaction`] compacts the full epoch once (RocksDB compacts it
/// itself past [`epoch_compaction::LEVEL0_FALLBACK`] files): compactions stay inside the
/// newest epoch however large the index grows.
pub fn epoch_keyed_index_options(cache: &Cache) -> Result<Options, StoreError> {
    let mut o = Options::default();
    o.set_block_based_table_factory(&table_options(cache, false));
    o.set_compression_type(rocksdb::DBCompressionType::None);
    let fallback = epoch_compaction::LEVEL0_FALLBACK;
    o.set_level_zero_file_num_compaction_trigger(fallback);
    o.set_level_zero_slowdown_writes_trigger(fallback + 16);
    o.set_level_zero_stop_writes_trigger(fallback + 32);
    partitioned(o, EPOCH_PREFIX)
}

/// Bytes of the epoch that begins every key of the epoch-keyed indexes (big-endian u32,
/// [`hash_index::Epochs::number`]).
const EPOCH_PREFIX: usize = std::mem::size_of::<u32>();

/// Cuts a column family's table files where the first `prefix` bytes of its keys change, so
/// that no file holds two epochs of an epoch-keyed index (or two levels of the tiles).
///
/// Without it, a compaction's output files are cut by size alone (64 MiB), and one file of an
/// index could hold the last part of one epoch and several before it (2.8M keys in one file
/// of the digest index at 30M entries): every compaction of the newest epoch into that file
/// rewrote the older epochs in it too, and moving it down a level rewrote the files it
/// overlapped there. Cut at each epoch, a compaction of the newest epoch's records overlaps
/// only that epoch's files, and a full epoch's files move down without being rewritten.
fn partitioned(mut o: Options, prefix: usize) -> Result<Options, StoreError> {
    // The Rust bindings do not expose RocksDB's fixed-prefix partitioner; its options string
    // does. The options it returns hold the block cache through the table factory's own
    // reference to it (RocksDB copies the cache's shared pointer into it), not through the
    // bindings' bookkeeping, which the copy does not carry over.
    Ok(o.get_options_from_string(format!(
        "sst_partitioner_factory={{id=SstPartitionerFixedPrefixFactory;length={prefix}}}"
    ))?)
}

fn cf_descriptors() -> Result<Vec<ColumnFamilyDescriptor>, StoreError> {
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    COLUMN_FAMILIES
        .iter()
        .map(|name| {
            let o = if [CF_IDENTITIES, CF_LEAVES, CF_DIGESTS].contains(name) {
                unfiltered_index_options(&cache)?
            } else {
                let mut o = Options::default();
                // No bloom filters: entries, tiles and checkpoints are read by keys the log
                // has (an index below its size), packages by prefix scans (behind their own
                // filters, [`packages`]), so a filter never saves a read. Their filters were built at every flush and compaction, and
                // the level-0 pins kept them in the block cache for as long as each table
                // stayed open: 25.8 MiB at 10M entries, 49.5 MiB at 30M, growing with the log.
                let mut table = table_options(&cache, false);
                table.set_block_size(RUN_BLOCK_BYTES);
                o.set_block_based_table_factory(&table);
                o.set_write_buffer_size(32 << 20);
                // Tiles are hashes and filters half-set bits, which do not compress;
                // entries and notes do.
                o.set_compression_type(
                    if [CF_TILES, CF_IDENTITY_FILTERS, CF_PACKAGE_FILTERS].contains(name) {
                        rocksdb::DBCompressionType::None
                    } else {
                        rocksdb::DBCompressionType::Lz4
                    },
                );
                o
            };
            let o = match *name {
                // (The identity, leaf and digest indexes are cut by their options.)
                CF_PACKAGES => partitioned(o, EPOCH_PREFIX)?,
                // Tile keys begin with the tile's level byte.
                CF_TILES => {
                    let mut o = o;
                    o.set_target_file_size_base(TILE_FILE_BYTES);
                    partitioned(o, 1)?
                }
                _ => o,
            };
            Ok(ColumnFamilyDescriptor::new(*name, o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compaction output is cut wherever the partitioned prefix changes: no table file holds
    /// keys of two epochs, however small they are.
    #[test]
    fn table_files_are_cut_at_each_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        let cache = Cache::new_lru_cache(1 << 20);
        let family =
            ColumnFamilyDescriptor::new(CF_LEAVES, unfiltered_index_options(&cache).unwrap());
        let db = DB::open_cf_descriptors(&db_opts, dir.path(), vec![family]).unwrap();
        let leaves = cf(&db, CF_LEAVES);
        // Three flushes, each across the same five epochs, then one compaction of them all.
        for flush in 0..3u32 {
            for epoch in 0..5u32 {
                for i in 0..100u32 {
                    let key = [epoch.to_be_bytes(), (i * 3 + flush).to_be_bytes()].concat();
                    db.put_cf(leaves, key, []).unwrap();
                }
            }
            db.flush_cf(leaves).unwrap();
        }
        db.compact_range_cf(leaves, None::<&[u8]>, None::<&[u8]>);
        let files = db.live_files().unwrap();
        assert_eq!(files.len(), 5, "one file an epoch");
        for f in files {
            let (start, end) = (f.start_key.unwrap(), f.end_key.unwrap());
            assert_eq!(start[..4], end[..4]);
            assert_eq!(f.num_entries, 300);
        }
    }
}
