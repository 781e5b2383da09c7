//! The log's single writer: stages a batch of entries (hashing, tiles, index keys) and
//! commits it with its signed checkpoint in one synced RocksDB write, once the tiles it fills
//! are synced to their files.

use super::bloom::Probe;
use super::hash_index::prefix_of;
use super::tile::{Frontier, TileAddr};
use super::{identity, packages};
use super::{
    InjectedFailure, Store, StoreError, CF_CHECKPOINTS, CF_DIGESTS, CF_ENTRIES, CF_IDENTITIES,
    CF_IDENTITY_FILTERS, CF_LEAVES, CF_META, CF_PACKAGES, CF_PACKAGE_FILTERS, CF_TILES, META_SIZE,
};
use btlog_core::entry::{Entry, Kind};
use btlog_core::merkle::{leaf_hash, Hash};
use rocksdb::{WriteBatch, WriteOptions};

/// An entry to append, with the index keys the log layer derived from it and its leaf hash.
#[derive(Clone, Debug)]
pub struct NewEntry {
    data: Vec<u8>,
    leaf_hash: Hash,
    identity: Option<Hash>,
    package: Option<String>,
    digest: Option<Hash>,
}

impl NewEntry {
    /// An entry of exactly `data` (the leaf data), claiming the identity key `identity` if
    /// any and listed under `package` if any. Its leaf hash is computed here, once, by whoever
    /// builds it, not by the single writer that stages it.
    pub fn new(data: Vec<u8>, identity: Option<Hash>, package: Option<String>) -> NewEntry {
        NewEntry {
            leaf_hash: leaf_hash(&data),
            data,
            identity,
            package,
            digest: None,
        }
    }

    /// A log entry with the index keys the log keeps for it: its identity key when it is a
    /// publish (the claim `btlog` enforces, PROTOCOL.md §2), its package, and its artifact
    /// digest unless it is an owner event (whose digest is of an account id, not an artifact).
    pub fn for_entry(entry: &Entry) -> NewEntry {
        let identity = (entry.kind == Kind::Publish).then(|| entry.identity_key());
        let new = NewEntry::new(entry.encode(), identity, Some(entry.package.clone()));
        if entry.kind.is_owner() {
            new
        } else {
            new.with_digest(entry.sha256)
        }
    }

    /// Also lists the entry under the artifact digest `sha256` (the explorer's search).
    pub fn with_digest(mut self, sha256: Hash) -> NewEntry {
        self.digest = Some(sha256);
        self
    }

    /// The entry bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The RFC 6962 leaf hash of the entry bytes.
    pub fn leaf_hash(&self) -> Hash {
        self.leaf_hash
    }
}

/// A batch prepared but not yet written: the tree it would make, and its write.
pub struct Staged {
    frontier: Frontier,
    batch: WriteBatch,
    start: u64,
    root: Hash,
    leaves: Vec<Hash>,
    /// The identities the batch claims, with their indexes, for the identity filters.
    claimed: Vec<(Probe, u64)>,
    /// The packages the batch lists, with the index of the first entry listing each in a run
    /// of entries of one package, for the package filters.
    listed: Vec<(Probe, u64)>,
    /// The tiles the batch makes full, for their files.
    full_tiles: Vec<(TileAddr, Vec<u8>)>,
}

impl Staged {
    /// Index of the first staged entry.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Tree size once committed.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Tree root once committed: what the checkpoint for this batch signs.
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Leaf hashes of the staged entries, in order.
    pub fn leaf_hashes(&self) -> &[Hash] {
        &self.leaves
    }
}

/// The single writer of a [`Store`]; obtained with [`Store::appender`].
pub struct Appender {
    store: Store,
    frontier: Frontier,
}

impl Appender {
    pub(super) fn new(store: Store, frontier: Frontier) -> Self {
        Appender { store, frontier }
    }

    /// The store this writer appends to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tree size as this writer sees it (equal to the store's after every commit).
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current root.
    pub fn root(&self) -> Result<Hash, StoreError> {
        self.frontier
            .root()
            .ok_or_else(|| StoreError::Corrupt("right edge of the tree incomplete".into()))
    }

    /// Prepares `entries` for appending after the current tree. Nothing is written and the
    /// writer is unchanged until [`Appender::commit`]. A stopped writer stages nothing, so no
    /// root is ever handed out to sign after [`StoreError::WriterPoisoned`].
    pub fn stage(&self, entries: &[NewEntry]) -> Result<Staged, StoreError> {
        if self.store.writer_stopped() {
            return Err(StoreError::WriterPoisoned);
        }
        let start = self.frontier.size();
        let mut frontier = self.frontier.clone();
        let leaves: Vec<Hash> = entries.iter().map(NewEntry::leaf_hash).collect();
        let tiles = frontier.append(&leaves);
        let store = &self.store;
        let mut batch = WriteBatch::default();
        // The random-keyed index records are written in key order, per column family: the
        // memtable's skiplist starts each insert from where the previous one ended, so sorted
        // inserts touch a few nodes near the last one instead of a fresh path from the top of
        // the list (a cache miss per level). The records are distinct, so order changes nothing
        // else.
        let mut leaf_keys = Vec::with_capacity(entries.len());
        let mut identity_keys = Vec::with_capacity(entries.len());
        let mut claimed = Vec::with_capacity(entries.len());
        let mut package_keys = Vec::with_capacity(entries.len());
        let mut listed: Vec<(Probe, u64)> = Vec::new();
        let mut digest_keys = Vec::new();
        let epochs = store.inner.epochs;
        for (i, (e, leaf)) in entries.iter().zip(&leaves).enumerate() {
            let index = (start + i as u64).to_be_bytes();
            batch.put_cf(store.cf(CF_ENTRIES), index, &e.data);
            leaf_keys.push(epochs.key(&prefix_of(leaf), start + i as u64)?);
            if let Some(id) = &e.identity {
                claimed.push((Probe::of(id), start + i as u64));
                identity_keys.push(identity::record(epochs, id, start + i as u64)?);
            }
            if let Some(d) = &e.digest {
                digest_keys.push(epochs.key(&prefix_of(d), start + i as u64)?);
            }
            if let Some(p) = &e.package {
                let index = start + i as u64;
                // A package's files and versions usually come in a run: one filter key for it
                // an epoch.
                let run = i > 0
                    && entries[i - 1].package.as_ref() == Some(p)
                    && epochs.epoch(index - 1) == epochs.epoch(index);
                if !run {
                    listed.push((packages::probe(p.as_bytes()), index));
                }
                package_keys.push(packages::key(epochs, p, index)?);
            }
        }
        package_keys.sort_unstable();
        for k in &package_keys {
            batch.put_cf(store.cf(CF_PACKAGES), k, []);
        }
        leaf_keys.sort_unstable();
        for k in &leaf_keys {
            batch.put_cf(store.cf(CF_LEAVES), k, []);
        }
        // Stable: were an identity claimed twice in one batch, the later record still wins.
        identity_keys.sort_by_key(|k| k.0);
        for (key, low) in &identity_keys {
            batch.put_cf(store.cf(CF_IDENTITIES), key, low);
        }
        digest_keys.sort_unstable();
        for k in &digest_keys {
            batch.put_cf(store.cf(CF_DIGESTS), k, []);
        }
        // A tile that became full goes to its file at the commit ([`crate::tile_files`]); the
        // partial versions the column family held are no longer read.
        let mut full_tiles = Vec::new();
        for (addr, value) in tiles {
            if store.inner.tile_files.holds(addr, frontier.size()) {
                batch.delete_cf(store.cf(CF_TILES), addr.key());
                full_tiles.push((addr, value));
            } else {
                batch.put_cf(store.cf(CF_TILES), addr.key(), value);
            }
        }
        batch.put_cf(store.cf(CF_META), META_SIZE, frontier.size().to_be_bytes());
        let root = frontier
            .root()
            .ok_or_else(|| StoreError::Corrupt("right edge of the tree incomplete".into()))?;
        Ok(Staged {
            frontier,
            batch,
            start,
            root,
            leaves,
            claimed,
            listed,
            full_tiles,
        })
    }

    /// Writes a staged batch of a log being restored from a copy (`btlog restore`): as
    /// [`Appender::commit`], but without a checkpoint, since only the copy's newest
    /// checkpoint exists; it is stored with [`Appender::put_checkpoint`] once the restored
    /// tree reaches its size and root.
    pub fn commit_restored(&mut self, staged: Staged) -> Result<(), StoreError> {
        self.write(staged, None)
    }

    /// Writes a staged batch together with the checkpoint signed for it, synced, in one
    /// atomic write; only then does the new size become visible to readers. On any error the
    /// readable log is unchanged and the writer stops ([`Store::writer_stopped`]), refusing
    /// every later append ([`StoreError::WriterPoisoned`]): whether the batch reached the disk
    /// is unknown (a failed fsync may leave it in the WAL, and RocksDB replays it at the next
    /// open), so the log must not sign another tree at that size. A restart reloads the tree
    /// from disk, with the batch if it landed.
    pub fn commit(&mut self, staged: Staged, checkpoint: &str) -> Result<(), StoreError> {
        self.write(staged, Some(checkpoint))
    }

    fn write(&mut self, mut staged: Staged, checkpoint: Option<&str>) -> Result<(), StoreError> {
        if self.store.writer_stopped() {
            return Err(StoreError::WriterPoisoned);
        }
        if staged.start != self.frontier.size() {
            return Err(StoreError::Corrupt(
                "staged batch does not follow the tree".into(),
            ));
        }
        let size = staged.frontier.size();
        // Into the filters before the write, so that they hold every key a reader can find (a
        // failed write only leaves a few false positives).
        let inner = &self.store.inner;
        inner.identity_filters.add(
            &staged.claimed,
            staged.start,
            size,
            self.store.cf(CF_IDENTITY_FILTERS),
            &mut staged.batch,
        )?;
        inner.package_filters.add(
            &staged.listed,
            staged.start,
            size,
            self.store.cf(CF_PACKAGE_FILTERS),
            &mut staged.batch,
        )?;
        if let Some(checkpoint) = checkpoint {
            staged.batch.put_cf(
                self.store.cf(CF_CHECKPOINTS),
                size.to_be_bytes(),
                checkpoint,
            );
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        // The tiles made full are on disk before the write that publishes them.
        let full_tiles = std::mem::take(&mut staged.full_tiles);
        let write = |batch| {
            self.store
                .inner
                .tile_files
                .write(&full_tiles)
                .map_err(|e| e.to_string())?;
            self.store
                .db()
                .write_opt(batch, &opts)
                .map_err(|e| e.to_string())
        };
        let written = match self.store.take_injected_failure() {
            None => write(staged.batch),
            Some(InjectedFailure::AfterWrite) => {
                write(staged.batch).and(Err("injected failure after the write".to_owned()))
            }
            Some(InjectedFailure::Stall(pause)) => {
                std::thread::sleep(pause);
                write(staged.batch)
            }
        };
        if let Err(reason) = written {
            self.store.stop_writer();
            tracing::error!(
                %reason,
                stored_size = ?self.stored_size(),
                tree_size = staged.start,
                "append failed; writer stopped until restart"
            );
            return Err(StoreError::WriterPoisoned);
        }
        self.frontier = staged.frontier;
        self.store.publish_size(size);
        inner.identity_filters.written(size);
        inner.package_filters.written(size);
        let epochs = inner.epochs;
        for epoch in epochs.epoch(staged.start)..epochs.epoch(size) {
            inner.epoch_compaction.epoch_full(epoch);
        }
        Ok(())
    }

    /// The tree size recorded on disk, or None if it cannot be read.
    fn stored_size(&self) -> Option<u64> {
        let v = self
            .store
            .db()
            .get_cf(self.store.cf(CF_META), META_SIZE)
            .ok()?;
        match v {
            None => Some(0),
            Some(v) => v.try_into().ok().map(u64::from_be_bytes),
        }
    }

    /// Stores a checkpoint signed for the current size without appending (at start-up, when
    /// the newest stored checkpoint was signed with another key or is missing).
    pub fn put_checkpoint(&mut self, checkpoint: &str) -> Result<(), StoreError> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.store.db().put_cf_opt(
            self.store.cf(CF_CHECKPOINTS),
            self.size().to_be_bytes(),
            checkpoint,
            &opts,
        )?;
        Ok(())
    }
}
