//! The identity index: identity key → index of the entry that claimed it, partitioned into the
//! epochs of the log ([`Epochs`]), with one bloom filter an epoch held in memory.
//!
//! A key is the epoch (big-endian u32) then the 32-byte identity key; the value is the index's
//! low bits (big-endian u32). A stored filter's key is its epoch alone. Every append looks its identities up, and nearly all are new.
//!
//! Why epochs: identity keys are hashes, so in one key space every compaction that moves new
//! records down a level rewrites all older records there; over a 30M-entry series this index
//! alone took 157 s of compaction, 603 bytes written per entry, growing with the log (issue 18,
//! BENCHMARKS.md "Scale"). With the epoch first, compactions stay inside the newest epoch, as
//! in the leaf index ([`crate::hash_index`]).
//!
//! Why filters: a lookup would then seek once per epoch. Instead each epoch has a bloom filter
//! of its identities ([`Bloom`], 10 bits a key: 1.25 MiB an epoch of 2^20 entries), and only
//! the epochs whose filter may hold the key are read, newest first: a new identity costs one
//! filter probe an epoch and, with ~1% false positives each, a read for about one epoch in a
//! hundred. The filters replace the index's RocksDB bloom filters, which took the same memory
//! in the block cache. A full epoch's filter never changes: it is written in the append that
//! completes the epoch (the same atomic batch), and loaded at open; the current epoch's is
//! rebuilt at open from that epoch's records (at most 2^bits). A filter missing on disk, or not
//! of its size (a store upgraded from layout 2), is rebuilt from its epoch's records and
//! stored. A stored filter of the right size is trusted as it is, as every other stored record
//! is: RocksDB's block checksums guard it, and a filter that lost bits would hide identities.
//!
//! The filters' hashes are the identity keys' own last 16 bytes (SHA-256 output), unseeded: a
//! registry grinding names into one filter block only raises that block's false positives,
//! which cost reads, never a missed identity.
//!
//! Past ~100M entries the probes (one an epoch) and false-positive reads would start to count;
//! merging old epochs' filters into one over their records is then the next step.

use super::bloom::{Bloom, Probe};
use super::hash_index::Epochs;
use super::{be_u32, StoreError};
use btlog_core::merkle::Hash;
use rocksdb::{ColumnFamily, WriteBatch, DB};
use std::sync::{Arc, RwLock};

/// Bytes of a key: the epoch and the identity key.
pub(crate) const KEY_LEN: usize = 4 + 32;
/// The largest filter of one epoch, in keys: 2^24 (20 MiB). Epochs are 2^20 entries unless a
/// store was created otherwise; a filter smaller than its epoch only has more false positives.
const MAX_FILTER_KEYS: u64 = 1 << 24;

/// The filters of a store's identity index; see the module docs.
pub(crate) struct Filters {
    epochs: Epochs,
    /// One filter an epoch, from the first through the one holding the log's last entry.
    filters: RwLock<Vec<Arc<Bloom>>>,
}

/// The key of `identity` claimed by the entry at `index`, and its value.
pub(crate) fn record(
    epochs: Epochs,
    identity: &Hash,
    index: u64,
) -> Result<([u8; KEY_LEN], [u8; 4]), StoreError> {
    let (epoch, low) = epochs.split(index)?;
    Ok((key(epoch, identity), low.to_be_bytes()))
}

/// The key of `identity` in `epoch`.
fn key(epoch: u32, identity: &Hash) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..4].copy_from_slice(&epoch.to_be_bytes());
    k[4..].copy_from_slice(identity);
    k
}

impl Filters {
    /// The filters of a store of `size` entries: those of full epochs read from `stored`
    /// (rebuilt and stored if missing or malformed), the current one built from `index`.
    pub(crate) fn load(
        db: &DB,
        index: &ColumnFamily,
        stored: &ColumnFamily,
        epochs: Epochs,
        size: u64,
    ) -> Result<Filters, StoreError> {
        let filters = Filters {
            epochs,
            filters: RwLock::new(Vec::new()),
        };
        let full = epochs.epoch(size);
        let current = if size == 0 {
            0
        } else {
            epochs.epoch(size - 1) + 1
        };
        let expected = filters.empty()?.byte_len();
        // Read around the block cache: 1.25 MiB values would only evict the blocks reads need.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        let mut loaded = Vec::new();
        for epoch in 0..current {
            let stored_key = Epochs::number(epoch)?.to_be_bytes();
            let kept = match db.get_cf_opt(stored, stored_key, &read)? {
                Some(bytes) if epoch < full && bytes.len() == expected => Bloom::from_bytes(&bytes),
                _ => None,
            };
            let bloom = match kept {
                Some(bloom) => bloom,
                None => {
                    let bloom = filters.build(db, index, epoch)?;
                    if epoch < full {
                        tracing::info!(epoch, "identity filter rebuilt");
                        // Stored only to spare the next open the rebuild: on a full disk the
                        // log still opens (its reads go on), and rebuilds it again next time.
                        if let Err(e) = db.put_cf(stored, stored_key, bloom.to_bytes()) {
                            tracing::warn!(epoch, error = %e, "identity filter not stored");
                        }
                    }
                    bloom
                }
            };
            loaded.push(Arc::new(bloom));
        }
        *filters.write() = loaded;
        Ok(filters)
    }

    /// Adds the identities of an append of the entries `start..size` to the filters, before it
    /// is written, and puts into `batch` the filters of the epochs it completes (see the
    /// module docs).
    pub(crate) fn add(
        &self,
        claimed: &[(Hash, u64)],
        start: u64,
        size: u64,
        stored: &ColumnFamily,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        if size == 0 {
            return Ok(());
        }
        // The write lock only when the append reaches a new epoch; bits go in under the read
        // lock, beside the readers, since the words are atomic.
        let last = self.epochs.epoch(size - 1);
        if self.read().len() as u64 <= last {
            let mut filters = self.write();
            while filters.len() as u64 <= last {
                filters.push(Arc::new(self.empty()?));
            }
        }
        let filters = self.read();
        for (identity, index) in claimed {
            let bloom = usize::try_from(self.epochs.epoch(*index))
                .ok()
                .and_then(|e| filters.get(e))
                .ok_or_else(|| StoreError::Corrupt(format!("identity at {index} past the log")))?;
            bloom.insert(identity);
        }
        for epoch in self.epochs.epoch(start)..self.epochs.epoch(size) {
            let bloom = usize::try_from(epoch)
                .ok()
                .and_then(|e| filters.get(e))
                .ok_or_else(|| StoreError::Corrupt(format!("no filter for epoch {epoch}")))?;
            batch.put_cf(
                stored,
                Epochs::number(epoch)?.to_be_bytes(),
                bloom.to_bytes(),
            );
        }
        Ok(())
    }

    /// The index of the entry that claimed each of `identities`, if any: the epochs whose
    /// filter may hold it are read, newest first, all in one batched lookup.
    pub(crate) fn lookup(
        &self,
        db: &DB,
        index: &ColumnFamily,
        identities: &[Hash],
    ) -> Result<Vec<Option<u64>>, StoreError> {
        let filters = self.read();
        let mut keys = Vec::new();
        let mut owners = Vec::new();
        for (i, identity) in identities.iter().enumerate() {
            let probe = Probe::of(identity);
            for (epoch, bloom) in filters.iter().enumerate().rev() {
                if bloom.may_hold(&probe) {
                    let epoch = epoch as u64;
                    keys.push(key(Epochs::number(epoch)?, identity));
                    owners.push((i, epoch));
                }
            }
        }
        drop(filters);
        let mut found = vec![None; identities.len()];
        for ((i, epoch), value) in owners
            .into_iter()
            .zip(db.batched_multi_get_cf(index, &keys, false))
        {
            if found[i].is_none() {
                if let Some(low) = value? {
                    found[i] = Some(self.epochs.first(epoch) | u64::from(be_u32(&low)?));
                }
            }
        }
        Ok(found)
    }

    /// A filter of the identities recorded in `epoch`.
    fn build(&self, db: &DB, index: &ColumnFamily, epoch: u64) -> Result<Bloom, StoreError> {
        let bloom = self.empty()?;
        let prefix = Epochs::number(epoch)?.to_be_bytes();
        let mut iter = db.raw_iterator_cf(index);
        iter.seek(prefix);
        while let Some(k) = iter.key() {
            if k.len() != KEY_LEN || k[..4] != prefix {
                break;
            }
            bloom.insert(&k[4..]);
            iter.next();
        }
        iter.status()?;
        Ok(bloom)
    }

    fn empty(&self) -> Result<Bloom, StoreError> {
        let keys = (1u64 << self.epochs.bits()).min(MAX_FILTER_KEYS);
        Bloom::with_capacity(keys, u64::MAX)
            .ok_or_else(|| StoreError::Corrupt("identity filter too large".into()))
    }

    /// Bytes of filter held.
    pub(crate) fn bytes(&self) -> u64 {
        self.read().iter().map(|b| b.byte_len() as u64).sum()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Bloom>>> {
        // The filters are only ever grown or replaced whole, so a panic elsewhere while the
        // lock was held leaves them whole.
        self.filters.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Bloom>>> {
        self.filters.write().unwrap_or_else(|e| e.into_inner())
    }
}
