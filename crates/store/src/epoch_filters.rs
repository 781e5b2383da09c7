//! One bloom filter an epoch over the keys of an epoch-keyed index, held in memory, so that a
//! lookup reads only the epochs that may hold its key: the identity index ([`crate::identity`])
//! and the package index ([`crate::packages`]).
//!
//! An index keyed by epoch first ([`Epochs`]) keeps its compactions inside the newest epoch, but
//! a lookup by key would seek once per epoch. Each epoch's filter ([`Bloom`], 16 bits an
//! identity for ~0.1% false positives, 12 bits a package for ~0.5%: [`Family::bits_per_key`])
//! rules out nearly all of those seeks for one cache-line probe each. The filters replace
//! RocksDB's own, which took memory in the block cache.
//!
//! - The current epoch's filter is sized for a key an entry (2 MiB of identities or 1.5 MiB of
//!   packages an epoch of 2^20 entries). Keys go in before the append that holds them is
//!   written, so a filter always holds every key a reader can find; a failed write only
//!   leaves false positives.
//! - A full epoch's filter never changes again: the append that completes the epoch seals it
//!   ([`Bloom::sealed`]: folded down to the size its keys need, so an epoch listing 65k
//!   packages keeps 96 KiB, not 1.5 MiB) and writes it in the same atomic batch. It is
//!   loaded at open; the current epoch's is rebuilt from that epoch's records (at most
//!   2^bits).
//! - A full epoch's filter missing on disk, or of a size sealing could not give it, is
//!   rebuilt from its epoch's records and stored. A stored filter of a possible size is
//!   trusted as stored, as every other stored record is: RocksDB's block checksums guard it,
//!   and a filter that lost bits would hide keys.
//!
//! The probes (one an epoch) grow with the log. One filter for a group of 4 or 8 epochs, each
//! epoch's keys set under its own tag, was tried: one cache line a group instead of one an
//! epoch, 15–30% faster in the lookup bench at 30M, but slower in the server (its current
//! filter, 4–8 times larger, left the L2 cache that every append's inserts and probes hit) and
//! 30–64 MiB higher at peak RSS (BENCHMARKS.md, "Sixth pass").
//!
//! A static filter for full epochs, built from their records off the writer's path, was tried
//! too: a binary fuse filter with 12-bit fingerprints, 0.027% false positives at 14.4 bits a
//! key against ~0.4% at 12. Its probe reads three slots on three cache lines where the bloom
//! filter reads one, and took 75–90 ns against 13–17 ns over 29 epochs of 2^20 keys: more
//! than the false-positive reads it saved, and slower at 10M in the lookup bench
//! (BENCHMARKS.md, "Seventh pass").

use super::bloom::{Bloom, Probe};
use super::hash_index::Epochs;
use super::StoreError;
use rocksdb::{ColumnFamily, WriteBatch, DB};
use std::sync::{Arc, RwLock};

/// The largest filter of one epoch, in keys: 2^24 (32 MiB at 16 bits a key). Epochs are 2^20
/// entries unless a store was created otherwise; a filter smaller than its epoch only has more
/// false positives.
const MAX_FILTER_KEYS: u64 = 1 << 24;

/// What one index's filters hold.
pub struct Family {
    /// The index's name, for logs and errors.
    pub name: &'static str,
    /// Bits of filter a key ([`Bloom::with_bits`]). Changing this needs no new layout: a stored
    /// filter of a size an empty one could not seal to is rebuilt at open (12 to 16 bits), and
    /// one it could seal to (8 to 16: a power of two apart) holds its keys where a folded one
    /// would, so it is as good as sealed.
    pub bits_per_key: u64,
    /// The filter key of one of the index's records, given its whole key (epoch first); None
    /// if the record is malformed.
    pub probe_of_record: fn(&[u8]) -> Option<Probe>,
}

/// The filter key of a record keyed by its epoch (big-endian u32) and a 32-byte digest, as the
/// identity index's are: the digest. None for a key of another length.
pub fn digest_record_probe(key: &[u8]) -> Option<Probe> {
    (key.len() == 4 + 32).then(|| Probe::of(&key[4..]))
}

/// How many keys ahead [`EpochFilters::holding_each`] fetches the filters' blocks.
const PREFETCH_AHEAD: usize = 2;

/// The filters of one index; see the module docs.
pub struct EpochFilters {
    family: &'static Family,
    epochs: Epochs,
    /// One filter an epoch, from the first through the one holding the log's last entry.
    filters: RwLock<Vec<Arc<Bloom>>>,
}

impl EpochFilters {
    /// The filters of `index` in a store of `size` entries: those of full epochs read from
    /// `stored` (rebuilt and stored if missing or malformed), the current one built from
    /// `index`.
    pub fn load(
        db: &DB,
        index: &ColumnFamily,
        stored: &ColumnFamily,
        epochs: Epochs,
        size: u64,
        family: &'static Family,
    ) -> Result<EpochFilters, StoreError> {
        let filters = EpochFilters {
            family,
            epochs,
            filters: RwLock::new(Vec::new()),
        };
        let full = epochs.epoch(size);
        let empty = filters.empty()?;
        // Read around the block cache: 2 MiB values would only evict the blocks reads need.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        let mut loaded = Vec::new();
        for epoch in 0..epochs.count(size) {
            let stored_key = Epochs::number(epoch)?.to_be_bytes();
            let kept = match db.get_cf_opt(stored, stored_key, &read)? {
                Some(bytes) if epoch < full && empty.could_seal_to(bytes.len()) => {
                    Bloom::from_bytes(&bytes)
                }
                _ => None,
            };
            let bloom = match kept {
                Some(bloom) => bloom,
                None if epoch < full => {
                    let built = filters.build(db, index, epoch)?;
                    let bloom = built.sealed().unwrap_or(built);
                    tracing::info!(epoch, index = family.name, "filter rebuilt");
                    // Stored only to spare the next open the rebuild: on a full disk the log
                    // still opens (its reads go on), and rebuilds it again next time.
                    if let Err(e) = db.put_cf(stored, stored_key, bloom.to_bytes()) {
                        tracing::warn!(epoch, index = family.name, error = %e, "filter not stored");
                    }
                    bloom
                }
                None => filters.build(db, index, epoch)?,
            };
            loaded.push(Arc::new(bloom));
        }
        *filters.write() = loaded;
        Ok(filters)
    }

    /// Adds the keys of an append of the entries `start..size` (each with the index of its
    /// entry) to the filters, before it is written, and puts into `batch` the sealed filters
    /// of the epochs it completes (see the module docs).
    pub fn add(
        &self,
        keys: &[(Probe, u64)],
        start: u64,
        size: u64,
        stored: &ColumnFamily,
        batch: &mut WriteBatch,
    ) -> Result<(), StoreError> {
        // The write lock only when the append reaches a new epoch; bits go in under the read
        // lock, beside the readers, since the words are atomic.
        let wanted = self.epochs.count(size);
        if (self.read().len() as u64) < wanted {
            let mut filters = self.write();
            while (filters.len() as u64) < wanted {
                filters.push(Arc::new(self.empty()?));
            }
        }
        {
            let filters = self.read();
            for (probe, index) in keys {
                filter(&filters, self.epochs.epoch(*index))?.insert_probe(probe);
            }
        }
        // Sealed beside the readers, under the read lock; the write lock only to swap. The
        // sealed filter holds every key the unsealed one did, and its epoch gets no more.
        for epoch in self.epochs.epoch(start)..self.epochs.epoch(size) {
            let key = Epochs::number(epoch)?.to_be_bytes();
            let sealed = {
                let filters = self.read();
                let full = filter(&filters, epoch)?;
                match full.sealed() {
                    Some(sealed) => sealed,
                    None => {
                        // Full as it is: stored as it is, and kept.
                        batch.put_cf(stored, key, full.to_bytes());
                        continue;
                    }
                }
            };
            batch.put_cf(stored, key, sealed.to_bytes());
            let mut filters = self.write();
            let slot = usize::try_from(epoch)
                .ok()
                .and_then(|e| filters.get_mut(e))
                .ok_or_else(|| StoreError::Corrupt(format!("no filter for epoch {epoch}")))?;
            *slot = Arc::new(sealed);
        }
        Ok(())
    }

    /// The epochs whose filter may hold the key of `probe`, oldest first.
    pub(crate) fn holding(&self, probe: &Probe) -> Vec<u64> {
        let mut epochs: Vec<u64> = self
            .holding_each(std::slice::from_ref(probe))
            .into_iter()
            .map(|(_, epoch)| epoch)
            .collect();
        epochs.reverse();
        epochs
    }

    /// For each of `probes` in turn, the epochs whose filter may hold its key, newest first:
    /// (position in `probes`, epoch) pairs, under one read lock.
    pub fn holding_each(&self, probes: &[Probe]) -> Vec<(usize, u64)> {
        let filters = self.read();
        // Each filter's block is a cache miss (an epoch's filter is megabytes): the blocks of
        // the keys ahead are fetched while this key's are tested.
        let prefetch = |probe: &Probe| filters.iter().for_each(|bloom| bloom.prefetch(probe));
        probes.iter().take(PREFETCH_AHEAD).for_each(prefetch);
        let mut out = Vec::new();
        for (i, probe) in probes.iter().enumerate() {
            if let Some(ahead) = probes.get(i + PREFETCH_AHEAD) {
                prefetch(ahead);
            }
            for (epoch, bloom) in filters.iter().enumerate().rev() {
                if bloom.may_hold(probe) {
                    out.push((i, epoch as u64));
                }
            }
        }
        out
    }

    /// A filter of the keys recorded in `epoch`, unsealed.
    fn build(&self, db: &DB, index: &ColumnFamily, epoch: u64) -> Result<Bloom, StoreError> {
        let bloom = self.empty()?;
        let prefix = Epochs::number(epoch)?.to_be_bytes();
        let mut iter = db.raw_iterator_cf(index);
        iter.seek(prefix);
        while let Some(k) = iter.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            let probe = (self.family.probe_of_record)(k).ok_or_else(|| {
                StoreError::Corrupt(format!("malformed {} index key", self.family.name))
            })?;
            bloom.insert_probe(&probe);
            iter.next();
        }
        iter.status()?;
        Ok(bloom)
    }

    fn empty(&self) -> Result<Bloom, StoreError> {
        let keys = (1u64 << self.epochs.bits()).min(MAX_FILTER_KEYS);
        Bloom::with_bits(keys, self.family.bits_per_key, u64::MAX)
            .ok_or_else(|| StoreError::Corrupt(format!("{} filter too large", self.family.name)))
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

/// The filter of `epoch`, which the log must have by now.
fn filter(filters: &[Arc<Bloom>], epoch: u64) -> Result<&Bloom, StoreError> {
    usize::try_from(epoch)
        .ok()
        .and_then(|e| filters.get(e))
        .map(|b| &**b)
        .ok_or_else(|| StoreError::Corrupt(format!("no filter for epoch {epoch}")))
}
