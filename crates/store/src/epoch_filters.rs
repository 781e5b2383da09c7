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
//! The probes (one an epoch) grow with the log: at 30M entries they were 12% of the writer's
//! time, each a cache miss. So the identities of each group of [`IDENTITY_GROUP`] full epochs
//! are also held in one filter ([`Family::group`]), each epoch's keys under its own tag
//! ([`Probe::tagged`]): one cache line answers for the whole group, each epoch at the rate of
//! a filter of its own. A thread builds a group from its records once its last epoch is full
//! (told by [`EpochFilters::written`] after the write), and at open for the groups already
//! full, then puts it in place of its epochs' filters; until then those answer. Groups live
//! only in memory: the stored filters stay one an epoch, so the layout is unchanged and a
//! group is rebuilt from records at each open (~2 s of the builder's time for 8M records).
//! The current epoch keeps its own small filter, which every append inserts into and probes.
//! (An earlier try put the current epoch in its group, sized for the whole group and filled
//! by the writer: that filter left the L2 cache and every append's inserts and probes missed
//! it, and the group's bytes went into the write batch at its end, 30–64 MiB more at peak:
//! BENCHMARKS.md, "Sixth pass".)
//!
//! A static filter for full epochs, built from their records off the writer's path, was tried
//! too: a binary fuse filter with 12-bit fingerprints, 0.027% false positives at 14.4 bits a
//! key against ~0.4% at 12. Its probe reads three slots on three cache lines where the bloom
//! filter reads one, and took 75–90 ns against 13–17 ns over 29 epochs of 2^20 keys: more
//! than the false-positive reads it saved, and slower at 10M in the lookup bench
//! (BENCHMARKS.md, "Seventh pass").

use super::bloom::{Bloom, Probe, TAGS};
use super::hash_index::Epochs;
use super::StoreError;
use rocksdb::{ColumnFamily, WriteBatch, DB};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

/// The largest filter of one epoch, in keys: 2^24 (32 MiB at 16 bits a key). Epochs are 2^20
/// entries unless a store was created otherwise; a filter smaller than its epoch only has more
/// false positives. A group's filter holds at most this many keys too.
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
    /// Full epochs whose keys one filter holds in memory, each under its own tag, so that a
    /// lookup reads one cache line for all of them: 1 (a filter an epoch) to [`TAGS`]. See
    /// the module docs.
    pub group: u32,
}

/// The filter key of a record keyed by its epoch (big-endian u32) and a 32-byte digest, as the
/// identity index's are: the digest. None for a key of another length.
pub fn digest_record_probe(key: &[u8]) -> Option<Probe> {
    (key.len() == 4 + 32).then(|| Probe::of(&key[4..]))
}

/// Epochs a group filter of identities holds ([`Family::group`]): at 30M entries (28 full
/// epochs), 8 cache lines a lookup instead of 29, and at most the groups plus 8.
pub const IDENTITY_GROUP: u32 = 8;

/// How many keys ahead [`EpochFilters::holding_each`] fetches the filters' blocks.
const PREFETCH_AHEAD: usize = 2;

/// Records whose blocks are fetched together when a filter is built from them.
const FILL_BATCH: usize = 32;

/// Records read between two looks at whether the filters were dropped.
const STOP_EVERY: u32 = 1 << 16;

/// The filters of one index; see the module docs.
pub struct EpochFilters {
    shared: Arc<Shared>,
    /// The thread that builds the group filters, for a family grouping epochs.
    builder: Option<Builder>,
}

/// What the filters and their builder share.
struct Shared {
    family: &'static Family,
    epochs: Epochs,
    /// Epochs a group filter holds: the family's, fewer if its epochs are so large that a
    /// group would pass [`MAX_FILTER_KEYS`]; 1 for none.
    group: u64,
    filters: RwLock<Filters>,
    /// Groups asked of the builder and groups it is done with, for [`EpochFilters::settle`].
    progress: Mutex<Progress>,
    done: Condvar,
    /// Set when the filters are dropped, so that a build under way stops.
    stop: AtomicBool,
}

/// The filters held, oldest first.
struct Filters {
    /// Group `n` holds epochs `n·group` to `(n+1)·group - 1`, epoch `e`'s keys under tag
    /// `e mod group` ([`Probe::tagged`]).
    groups: Vec<Arc<Bloom>>,
    /// One filter an epoch, from the first epoch in no group through the one holding the
    /// log's last entry.
    epochs: Vec<Arc<Bloom>>,
}

#[derive(Default)]
struct Progress {
    asked: u64,
    done: u64,
}

struct Builder {
    asked: Option<mpsc::Sender<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochFilters {
    /// The filters of the column family `index` of `db`, in a store of `size` entries: those
    /// of full epochs read from the column family `stored` (rebuilt and stored if missing or
    /// malformed), the current one built from `index`. The groups of full epochs are then
    /// built beside the caller, which meanwhile reads the epochs' own filters.
    pub fn load(
        db: &Arc<DB>,
        index: &'static str,
        stored: &'static str,
        epochs: Epochs,
        size: u64,
        family: &'static Family,
    ) -> Result<EpochFilters, StoreError> {
        let group =
            u64::from(family.group.clamp(1, TAGS)).min(MAX_FILTER_KEYS / epoch_keys(epochs));
        let shared = Arc::new(Shared {
            family,
            epochs,
            group,
            filters: RwLock::new(Filters {
                groups: Vec::new(),
                epochs: Vec::new(),
            }),
            progress: Mutex::new(Progress::default()),
            done: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let (index_cf, stored_cf) = (column(db, index)?, column(db, stored)?);
        let full = epochs.epoch(size);
        let empty = shared.empty(1)?;
        // Read around the block cache: 2 MiB values would only evict the blocks reads need.
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        let mut loaded = Vec::new();
        for epoch in 0..epochs.count(size) {
            let stored_key = Epochs::number(epoch)?.to_be_bytes();
            let kept = match db.get_cf_opt(stored_cf, stored_key, &read)? {
                Some(bytes) if epoch < full && empty.could_seal_to(bytes.len()) => {
                    Bloom::from_bytes(&bytes)
                }
                _ => None,
            };
            let bloom = match kept {
                Some(bloom) => bloom,
                None if epoch < full => {
                    let built = shared.built(db, index_cf, epoch)?;
                    let bloom = built.sealed().unwrap_or(built);
                    tracing::info!(epoch, index = family.name, "filter rebuilt");
                    // Stored only to spare the next open the rebuild: on a full disk the log
                    // still opens (its reads go on), and rebuilds it again next time.
                    if let Err(e) = db.put_cf(stored_cf, stored_key, bloom.to_bytes()) {
                        tracing::warn!(epoch, index = family.name, error = %e, "filter not stored");
                    }
                    bloom
                }
                None => shared.built(db, index_cf, epoch)?,
            };
            loaded.push(Arc::new(bloom));
        }
        shared.write().epochs = loaded;
        let builder = (group > 1)
            .then(|| Builder::start(shared.clone(), db.clone(), index))
            .transpose()
            .map_err(StoreError::Thread)?;
        let filters = EpochFilters { shared, builder };
        filters.written(size);
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
        let shared = &*self.shared;
        // The write lock only when the append reaches a new epoch; bits go in under the read
        // lock, beside the readers, since the words are atomic.
        let wanted = shared.epochs.count(size);
        if shared.read().count(shared.group) < wanted {
            let mut filters = shared.write();
            while filters.count(shared.group) < wanted {
                filters.epochs.push(Arc::new(shared.empty(1)?));
            }
        }
        {
            let filters = shared.read();
            for (probe, index) in keys {
                filters
                    .epoch(shared.group, shared.epochs.epoch(*index))?
                    .insert_probe(probe);
            }
        }
        // Sealed beside the readers, under the read lock; the write lock only to swap. The
        // sealed filter holds every key the unsealed one did, and its epoch gets no more.
        for epoch in shared.epochs.epoch(start)..shared.epochs.epoch(size) {
            let key = Epochs::number(epoch)?.to_be_bytes();
            let sealed = {
                let filters = shared.read();
                let full = filters.epoch(shared.group, epoch)?;
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
            let mut filters = shared.write();
            let slot = filters.slot(shared.group, epoch)?;
            filters.epochs[slot] = Arc::new(sealed);
        }
        Ok(())
    }

    /// Says that the log (or index) now holds `size` entries durably: the groups of epochs
    /// full by then are built, beside the caller. Called after each write that may complete
    /// an epoch; the group is built from the records that write stored.
    pub fn written(&self, size: u64) {
        let Some(asked) = self.builder.as_ref().and_then(|b| b.asked.as_ref()) else {
            return;
        };
        let complete = self.shared.epochs.epoch(size) / self.shared.group;
        let mut progress = self.shared.progress();
        while progress.asked < complete {
            if asked.send(progress.asked).is_err() {
                return;
            }
            progress.asked += 1;
        }
    }

    /// Waits until every group asked for is built (or given up: its epochs keep their own
    /// filters). For benches and tests, which measure or check the grouped filters.
    pub fn settle(&self) {
        let Some(thread) = self.builder.as_ref().and_then(|b| b.thread.as_ref()) else {
            return;
        };
        let mut progress = self.shared.progress();
        // A builder that ended (it panicked) answers no more.
        while progress.done < progress.asked && !thread.is_finished() {
            let tick = std::time::Duration::from_millis(100);
            progress = match self.shared.done.wait_timeout(progress, tick) {
                Ok((progress, _)) => progress,
                Err(e) => e.into_inner().0,
            };
        }
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
        let group = self.shared.group;
        let filters = self.shared.read();
        let first = filters.first_epoch(group);
        // Each filter's block is a cache miss (an epoch's filter is megabytes): the blocks of
        // the keys ahead are fetched while this key's are tested.
        let prefetch = |probe: &Probe| filters.all().for_each(|bloom| bloom.prefetch(probe));
        probes.iter().take(PREFETCH_AHEAD).for_each(prefetch);
        let mut out = Vec::new();
        for (i, probe) in probes.iter().enumerate() {
            if let Some(ahead) = probes.get(i + PREFETCH_AHEAD) {
                prefetch(ahead);
            }
            for (j, bloom) in filters.epochs.iter().enumerate().rev() {
                if bloom.may_hold(probe) {
                    out.push((i, first + j as u64));
                }
            }
            if filters.groups.is_empty() {
                continue;
            }
            let tagged: [Probe; TAGS as usize] = std::array::from_fn(|t| probe.tagged(t as u32));
            for (n, bloom) in filters.groups.iter().enumerate().rev() {
                for (tag, probe) in tagged.iter().enumerate().take(group as usize).rev() {
                    if bloom.may_hold(probe) {
                        out.push((i, n as u64 * group + tag as u64));
                    }
                }
            }
        }
        out
    }

    /// Bytes of filter held.
    pub fn bytes(&self) -> u64 {
        let filters = self.shared.read();
        filters.all().map(|b| b.byte_len() as u64).sum()
    }
}

impl Drop for EpochFilters {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(builder) = &mut self.builder {
            builder.asked.take();
            if let Some(thread) = builder.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Builder {
    /// The thread building each group asked of it from the records of `index` in `db`, in
    /// order, and putting it in place of its epochs' filters.
    fn start(shared: Arc<Shared>, db: Arc<DB>, index: &'static str) -> std::io::Result<Builder> {
        let (asked, groups) = mpsc::channel::<u64>();
        let thread = std::thread::Builder::new()
            .name("btlog-filters".into())
            .spawn(move || {
                // A group not built leaves its epochs' own filters, which stay right, if slower,
                // and the groups after it nowhere to go: none is built until the next open.
                let mut failed = false;
                for group in groups {
                    if !failed && !shared.stop.load(Ordering::Relaxed) {
                        if let Err(error) = shared.build_group(&db, index, group) {
                            let index = shared.family.name;
                            tracing::warn!(group, index, %error, "group filters not built");
                            failed = true;
                        }
                    }
                    shared.progress().done += 1;
                    shared.done.notify_all();
                }
            })?;
        Ok(Builder {
            asked: Some(asked),
            thread: Some(thread),
        })
    }
}

impl Shared {
    /// Builds group `group` from the records of its epochs, sealed, and puts it in place of
    /// their filters; nothing if the filters were dropped meanwhile.
    fn build_group(&self, db: &DB, index: &str, group: u64) -> Result<(), StoreError> {
        let began = std::time::Instant::now();
        let out_of_order = |filters: &Filters| {
            // Groups are asked for in order, once their epochs are full, one at a time.
            (filters.groups.len() as u64 != group || (filters.epochs.len() as u64) < self.group)
                .then(|| {
                    StoreError::Corrupt(format!("{} group {group} out of order", self.family.name))
                })
        };
        if let Some(error) = out_of_order(&self.read()) {
            return Err(error);
        }
        let index_cf = column(db, index)?;
        let mut bloom = self.empty(self.group)?;
        for tag in 0..self.group {
            let epoch = group * self.group + tag;
            if !self.fill(db, index_cf, epoch, &mut bloom, tag as u32)? {
                return Ok(());
            }
        }
        let bloom = Arc::new(bloom.sealed().unwrap_or(bloom));
        let mut filters = self.write();
        if let Some(error) = out_of_order(&filters) {
            return Err(error);
        }
        filters.epochs.drain(..self.group as usize);
        filters.groups.push(bloom);
        drop(filters);
        tracing::debug!(
            group,
            index = self.family.name,
            seconds = began.elapsed().as_secs_f64(),
            "group filter built"
        );
        Ok(())
    }

    /// A filter of the keys recorded in `epoch`, unsealed.
    fn built(&self, db: &DB, index: &ColumnFamily, epoch: u64) -> Result<Bloom, StoreError> {
        let mut bloom = self.empty(1)?;
        self.fill(db, index, epoch, &mut bloom, 0)?;
        Ok(bloom)
    }

    /// Inserts the keys recorded in `epoch` into `bloom` under tag `tag`; false if the filters
    /// were dropped first.
    fn fill(
        &self,
        db: &DB,
        index: &ColumnFamily,
        epoch: u64,
        bloom: &mut Bloom,
        tag: u32,
    ) -> Result<bool, StoreError> {
        let prefix = Epochs::number(epoch)?.to_be_bytes();
        let mut read = rocksdb::ReadOptions::default();
        read.fill_cache(false);
        let mut iter = db.raw_iterator_cf_opt(index, read);
        iter.seek(prefix);
        // Inserted a batch at a time, each batch's blocks fetched first: the blocks are
        // random, and the filter megabytes.
        let mut batch = Vec::with_capacity(FILL_BATCH);
        let mut n = 0u32;
        loop {
            let key = iter.key().filter(|k| k.starts_with(&prefix));
            if let Some(k) = key {
                let probe = (self.family.probe_of_record)(k).ok_or_else(|| {
                    StoreError::Corrupt(format!("malformed {} index key", self.family.name))
                })?;
                let probe = probe.tagged(tag);
                bloom.prefetch(&probe);
                batch.push(probe);
            }
            if key.is_none() || batch.len() == FILL_BATCH {
                batch.drain(..).for_each(|probe| bloom.insert_owned(&probe));
            }
            if key.is_none() {
                break;
            }
            n = n.wrapping_add(1);
            if n.is_multiple_of(STOP_EVERY) && self.stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            iter.next();
        }
        iter.status()?;
        Ok(true)
    }

    /// An empty filter for the keys of `epochs` epochs.
    fn empty(&self, epochs: u64) -> Result<Bloom, StoreError> {
        let keys = epoch_keys(self.epochs).saturating_mul(epochs);
        Bloom::with_bits(keys, self.family.bits_per_key, u64::MAX)
            .ok_or_else(|| StoreError::Corrupt(format!("{} filter too large", self.family.name)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Filters> {
        // The filters are only ever grown, replaced whole, or 8 of them swapped for a group
        // (a drain then a push, neither of which panics), so a panic elsewhere while the lock
        // was held leaves them whole.
        self.filters.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Filters> {
        self.filters.write().unwrap_or_else(|e| e.into_inner())
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Filters {
    /// Every filter held, groups first.
    fn all(&self) -> impl Iterator<Item = &Arc<Bloom>> {
        self.groups.iter().chain(&self.epochs)
    }

    /// The first epoch in no group.
    fn first_epoch(&self, group: u64) -> u64 {
        self.groups.len() as u64 * group
    }

    /// Epochs held, in groups or not.
    fn count(&self, group: u64) -> u64 {
        self.first_epoch(group) + self.epochs.len() as u64
    }

    /// The filter of `epoch`, which must have one of its own by now: it is the current one, or
    /// being sealed.
    fn epoch(&self, group: u64, epoch: u64) -> Result<&Bloom, StoreError> {
        Ok(&self.epochs[self.slot(group, epoch)?])
    }

    /// The position in `epochs` of `epoch`'s own filter.
    fn slot(&self, group: u64, epoch: u64) -> Result<usize, StoreError> {
        epoch
            .checked_sub(self.first_epoch(group))
            .and_then(|e| usize::try_from(e).ok())
            .filter(|e| *e < self.epochs.len())
            .ok_or_else(|| StoreError::Corrupt(format!("no filter for epoch {epoch}")))
    }
}

/// The keys an epoch's filter is sized for: one an entry, at most [`MAX_FILTER_KEYS`].
fn epoch_keys(epochs: Epochs) -> u64 {
    (1u64 << epochs.bits()).min(MAX_FILTER_KEYS)
}

/// The column family `name` of `db`.
fn column<'a>(db: &'a DB, name: &str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name)
        .ok_or_else(|| StoreError::Corrupt(format!("no column family {name}")))
}
