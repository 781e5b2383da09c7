//! The binary transparency claims of PROTOCOL.md §2, checked on every entry, and the identity index
//! they need, rebuilt by the monitor from the entries themselves.
//!
//! The index is a small RocksDB database (`index/` in the log's state directory): it grows with
//! the log (one record per artifact, one per package) and must not be held in memory or
//! rewritten, and RocksDB is already a dependency. Records carry the leaf index that created
//! them, and only records below the committed audit position are trusted. Only records of
//! entries proven part of a signed tree are committed (see `audit`): a log serving entries that
//! do not match its signed root cannot plant records.
//!
//! It is laid out as the log's own identity index is (`btlog_store`'s `identity` module): a
//! record's key is the epoch of the entry that created it (2^20 entries, big-endian u32) and
//! a 32-byte digest, and each epoch has a bloom filter held in memory
//! ([`btlog_store::epoch_filters`]) that sends a lookup only to the epochs that may hold its
//! key. Keyed by digest alone, as it first was, every compaction that moved new records down
//! a level rewrote the older ones there, more of them as the log grew: at 10M entries
//! compaction took a fifth of a catch-up's CPU, and a catch-up of 30M entries spent 1.5 times
//! the CPU per entry of one of 1M (BENCHMARKS.md, "Tenth pass"). Epoch first, compactions stay
//! inside the newest epoch, and each full epoch is compacted once, as the log's are
//! ([`btlog_store::epoch_compaction`]).
//!
//! Column families:
//! - `identities`: epoch, identity key → artifact sha256 and big-endian u64 leaf index of its
//!   first publish.
//! - `packages`: epoch, SHA-256 of the purl → big-endian u64 leaf index of its first publish.
//! - `identity_filters`, `package_filters`: big-endian u32 epoch → the sealed filter of that
//!   full epoch.
//! - `meta`: `format` → big-endian u32 ([`FORMAT`]); `epoch_bits` → one byte; `written` →
//!   big-endian u64, the audit position the stored records reach.
//!
//! Records at or beyond the committed position (committed by a run that crashed before saving
//! its state, or of a history the audit went back on) are deleted before the position can
//! pass them: at open when `written` is beyond the state's position, and at the next commit
//! after a [`Index::rollback`]. Were one left, it would be trusted once the audit passed its
//! index. An index of the first layout (records in the default family, keyed by `i` or `p` and
//! the digest) is moved into this one at open.
//!
//! The rules themselves are `btlog_core::claims`, the same code the log's sequencer runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, DB};
use sha2::{Digest, Sha256};

use btlog_core::claims::{self, Published, Verdict};
use btlog_core::entry::{Entry, Kind};
use btlog_store::bloom::{Probe, BITS_PER_KEY};
use btlog_store::epoch_compaction::EpochCompaction;
use btlog_store::epoch_filters::{digest_record_probe, EpochFilters, Family, IDENTITY_GROUP};
use btlog_store::{Epochs, StoreError, DEFAULT_EPOCH_BITS, IDENTITY_BITS_PER_KEY};

use super::alert::AlertKind;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// RocksDB failed.
    #[error("identity index: {0}")]
    Db(#[from] rocksdb::Error),
    /// The epoch filters failed, or an epoch was out of range.
    #[error("identity index: {0}")]
    Filters(#[from] StoreError),
    /// The compaction thread could not start.
    #[error("identity index: compaction thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A stored record or meta value is malformed.
    #[error("identity index: {0}")]
    Corrupt(String),
}

/// A claim violation found in one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which claim.
    pub kind: AlertKind,
    /// What was found, for a person.
    pub details: String,
}

/// The layout of the index this build writes (see the module docs).
const FORMAT: u32 = 2;
const CF_META: &str = "meta";
const META_FORMAT: &[u8] = b"format";
const META_EPOCH_BITS: &[u8] = b"epoch_bits";
const META_WRITTEN: &[u8] = b"written";

/// The column families of the records, in [`Table::slot`] order.
const RECORDS: [&str; 2] = ["identities", "packages"];

/// The two record families: what a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Table {
    /// An artifact identity (package, version, file): its first publish.
    Identity,
    /// A package: its first publish.
    Package,
}

impl Table {
    const ALL: [Table; 2] = [Table::Identity, Table::Package];

    fn records(self) -> &'static str {
        RECORDS[self.slot()]
    }

    fn filters(self) -> &'static str {
        match self {
            Table::Identity => "identity_filters",
            Table::Package => "package_filters",
        }
    }

    /// The filters' bits a key: as the log's own indexes (16 for identities, probed for
    /// every publish, 12 for packages).
    fn family(self) -> &'static Family {
        static IDENTITY: Family = Family {
            name: "monitor identity",
            bits_per_key: IDENTITY_BITS_PER_KEY,
            probe_of_record: digest_record_probe,
            group: IDENTITY_GROUP,
        };
        static PACKAGE: Family = Family {
            name: "monitor package",
            bits_per_key: BITS_PER_KEY,
            probe_of_record: digest_record_probe,
            group: 1,
        };
        match self {
            Table::Identity => &IDENTITY,
            Table::Package => &PACKAGE,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// A record: the artifact's sha256 (zero for a package) and the leaf index that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    sha256: [u8; 32],
    index: u64,
}

impl Record {
    fn encode(&self, table: Table) -> Vec<u8> {
        match table {
            Table::Identity => [self.sha256.as_slice(), &self.index.to_be_bytes()].concat(),
            Table::Package => self.index.to_be_bytes().to_vec(),
        }
    }

    fn decode(table: Table, v: &[u8]) -> Option<Record> {
        let (sha256, index) = match table {
            Table::Identity if v.len() == 40 => (v[..32].try_into().ok()?, &v[32..]),
            Table::Package if v.len() == 8 => ([0; 32], v),
            _ => return None,
        };
        Some(Record {
            sha256,
            index: u64::from_be_bytes(index.try_into().ok()?),
        })
    }
}

/// A key of one table: the digest it is filed under.
type Key = (Table, [u8; 32]);

/// Trusted stored records of the keys a batch of claims reads.
type Fetched = HashMap<Key, Record>;

/// Block cache of the index. Lookups go through the epoch filters first, so the cache holds
/// only the index blocks and the few data blocks of keys the filters let through.
const INDEX_CACHE_BYTES: usize = 16 << 20;
/// Write-ahead log kept before RocksDB flushes the families holding its oldest file. The
/// filter and meta families take a few bytes a commit and would otherwise hold every WAL
/// file written since their last flush (811 MB of them after a catch-up of 10M entries).
const INDEX_MAX_WAL_BYTES: u64 = 64 << 20;
/// Memtable size of each record family. The monitor inserts a whole chunk (65k entries) in key
/// order (see [`Index::commit`]), which keeps inserts cheap in a larger memtable than the log's.
const INDEX_WRITE_BUFFER_BYTES: usize = 16 << 20;

/// The identity index: identity → (sha256, index), package → first publish index.
pub struct Index {
    db: Arc<DB>,
    /// Compacts each full epoch of the records once.
    compaction: EpochCompaction,
    epochs: Epochs,
    /// Records below this leaf index are trusted.
    committed: u64,
    /// The audit position the stored records reach; beyond `committed` after a rollback.
    written: u64,
    /// Records checked, not yet committed.
    pending: HashMap<Key, Record>,
    /// One filter an epoch for each table, in [`Table::slot`] order.
    filters: [EpochFilters; 2],
}

impl Index {
    /// Opens (or creates) the index in `dir`; records at or beyond `committed` are deleted.
    /// An index that reaches less far than `committed` (deleted, or restored from an older
    /// copy) is committed only as far as it reaches: [`Index::committed`] says where.
    pub fn open(dir: &Path, committed: u64) -> Result<Index, IndexError> {
        Index::open_with_epoch_bits(dir, committed, DEFAULT_EPOCH_BITS)
    }

    /// [`Index::open`], with epochs of 2^`bits` entries if the index is new (tests use small
    /// ones); an existing index keeps its own.
    fn open_with_epoch_bits(dir: &Path, committed: u64, bits: u8) -> Result<Index, IndexError> {
        let cache = rocksdb::Cache::new_hyper_clock_cache(INDEX_CACHE_BYTES, 0);
        // Level 0 keeps an epoch's flushes until `compaction` compacts the epoch once.
        let mut records = btlog_store::epoch_keyed_index_options(&cache)?;
        records.set_write_buffer_size(INDEX_WRITE_BUFFER_BYTES);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_total_wal_size(INDEX_MAX_WAL_BYTES);
        let mut families = vec![
            ColumnFamilyDescriptor::new(rocksdb::DEFAULT_COLUMN_FAMILY_NAME, Options::default()),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        for table in Table::ALL {
            families.push(ColumnFamilyDescriptor::new(
                table.records(),
                records.clone(),
            ));
            families.push(ColumnFamilyDescriptor::new(
                table.filters(),
                Options::default(),
            ));
        }
        // A new index holds no records, whatever the position of the state beside it.
        let existed = dir.join("CURRENT").exists();
        let db = DB::open_cf_descriptors(&opts, dir, families)?;
        let meta = cf(&db, CF_META)?;
        let epochs = match db.get_cf(meta, META_EPOCH_BITS)? {
            Some(b) => b
                .first()
                .and_then(|b| Epochs::new(*b))
                .filter(|_| b.len() == 1)
                .ok_or_else(|| IndexError::Corrupt("malformed epoch_bits".into()))?,
            None => Epochs::new(bits)
                .ok_or_else(|| IndexError::Corrupt(format!("no epochs of {bits} bits")))?,
        };
        let written = match db.get_cf(meta, META_FORMAT)? {
            Some(f) if f.as_slice() == FORMAT.to_be_bytes() => {
                match db.get_cf(meta, META_WRITTEN)? {
                    Some(w) => u64::from_be_bytes(
                        w.as_slice()
                            .try_into()
                            .map_err(|_| IndexError::Corrupt("malformed written".into()))?,
                    ),
                    None => 0,
                }
            }
            Some(f) => {
                return Err(IndexError::Corrupt(format!(
                    "layout {f:?} is not one this build reads"
                )))
            }
            None => first_layout_moved(&db, epochs, if existed { committed } else { 0 })?,
        };
        let db = Arc::new(db);
        // Of the records kept: none if some are deleted below (which loads them again).
        let kept = if written > committed { 0 } else { written };
        let filters = [
            load_filters(&db, epochs, Table::Identity, kept)?,
            load_filters(&db, epochs, Table::Package, kept)?,
        ];
        let compaction = EpochCompaction::start(db.clone(), &RECORDS)?;
        // An epoch completed just before a crash may not have been compacted yet.
        if let Some(last_full) = epochs.epoch(written).checked_sub(1) {
            compaction.epoch_full(last_full);
        }
        let mut index = Index {
            filters,
            db,
            compaction,
            epochs,
            committed: committed.min(written),
            written,
            pending: HashMap::new(),
        };
        if index.written > committed {
            index.forget_from(committed)?;
        }
        Ok(index)
    }

    /// Checks consecutive claims against the index, in order, and records what they
    /// establish. The stored records they need are read in one batched lookup a table, of
    /// the epochs whose filters may hold them.
    pub fn check_all(&mut self, claims: &[Claim]) -> Result<Vec<(u64, Violation)>, IndexError> {
        let mut fetched = Fetched::new();
        for table in Table::ALL {
            let mut keys: Vec<[u8; 32]> = claims
                .iter()
                .filter_map(|c| c.reads(table))
                .filter(|k| !self.pending.contains_key(&(table, *k)))
                .collect();
            keys.sort_unstable();
            keys.dedup();
            self.fetch(table, &keys, &mut fetched)?;
        }
        let mut violations = Vec::new();
        for claim in claims {
            if let Some(v) = self.check(claim, &fetched) {
                violations.push((claim.index, v));
            }
        }
        Ok(violations)
    }

    /// Reads into `fetched` the trusted records of `keys`, from the epochs whose filter may
    /// hold each.
    fn fetch(
        &self,
        table: Table,
        keys: &[[u8; 32]],
        fetched: &mut Fetched,
    ) -> Result<(), IndexError> {
        let probes: Vec<Probe> = keys.iter().map(|k| Probe::of(k)).collect();
        let owners = self.filters[table.slot()].holding_each(&probes);
        let stored = owners
            .iter()
            .map(|(i, epoch)| Ok(record_key(Epochs::number(*epoch)?, &keys[*i])))
            .collect::<Result<Vec<_>, IndexError>>()?;
        let cf = cf(&self.db, table.records())?;
        let values = self.db.batched_multi_get_cf(cf, &stored, false);
        for ((i, _), value) in owners.into_iter().zip(values) {
            let Some(value) = value? else { continue };
            let record = Record::decode(table, &value)
                .ok_or_else(|| IndexError::Corrupt(format!("malformed {table:?} record")))?;
            if record.index >= self.committed {
                continue;
            }
            // One trusted record a key, but should there be two, the first publish counts.
            let slot = fetched.entry((table, keys[i])).or_insert(record);
            if record.index < slot.index {
                *slot = record;
            }
        }
        Ok(())
    }

    /// Checks one claim against the index (with the stored records it needs in `fetched`)
    /// and records what it establishes.
    fn check(&mut self, claim: &Claim, fetched: &Fetched) -> Option<Violation> {
        let Claim {
            index,
            entry,
            id_key,
            pkg_key,
        } = claim;
        let index = *index;
        let get = |key: &Key| self.pending.get(key).or_else(|| fetched.get(key)).copied();
        let published = claim
            .reads(Table::Identity)
            .and_then(|_| get(&(Table::Identity, *id_key)))
            .map(|r| Published {
                index: r.index,
                sha256: r.sha256,
            });
        let package_published =
            claim.reads(Table::Package).is_some() && get(&(Table::Package, *pkg_key)).is_some();
        let verdict = claims::judge(entry, published, package_published);
        if verdict.is_new() && entry.kind == Kind::Publish {
            self.pending.insert(
                (Table::Identity, *id_key),
                Record {
                    sha256: entry.sha256,
                    index,
                },
            );
            if !package_published {
                self.pending.insert(
                    (Table::Package, *pkg_key),
                    Record {
                        sha256: [0; 32],
                        index,
                    },
                );
            }
        }
        let kind = match verdict {
            Verdict::New | Verdict::Duplicate(_) => None,
            Verdict::Conflict(_) => Some(AlertKind::Conflict),
            Verdict::UnknownArtifact => Some(AlertKind::UnknownArtifact),
            Verdict::DigestMismatch(_) => Some(AlertKind::DigestMismatch),
            Verdict::UnknownPackage => Some(AlertKind::UnknownPackage),
        };
        kind.map(|kind| Violation {
            kind,
            details: verdict.reason(entry).unwrap_or_default(),
        })
    }

    /// Writes the records of the checked entries (of leaf indexes below `position`) durably,
    /// with the filters of the epochs they complete; `position` becomes the committed audit
    /// position once the caller saved its state.
    pub fn commit(&mut self, position: u64) -> Result<(), IndexError> {
        if self.written > self.committed {
            self.forget_from(self.committed)?;
        }
        let mut batch = WriteBatch::default();
        let mut pending: Vec<(Key, Record)> = self.pending.drain().collect();
        // In key order: each memtable insert then starts from where the previous one ended
        // in the skiplist, instead of a fresh descent with a cache miss per level.
        pending
            .sort_unstable_by_key(|((table, key), r)| (*table, self.epochs.epoch(r.index), *key));
        for table in Table::ALL {
            let records = cf(&self.db, table.records())?;
            let mut probes = Vec::new();
            for ((_, key), record) in pending.iter().filter(|((t, _), _)| *t == table) {
                let (epoch, _) = self.epochs.split(record.index)?;
                batch.put_cf(records, record_key(epoch, key), record.encode(table));
                probes.push((Probe::of(key), record.index));
            }
            let stored = cf(&self.db, table.filters())?;
            self.filters[table.slot()].add(&probes, self.written, position, stored, &mut batch)?;
        }
        batch.put_cf(cf(&self.db, CF_META)?, META_WRITTEN, position.to_be_bytes());
        self.write_synced(batch)?;
        for filters in &self.filters {
            filters.written(position);
        }
        for epoch in self.epochs.epoch(self.written)..self.epochs.epoch(position) {
            self.compaction.epoch_full(epoch);
        }
        self.committed = position;
        self.written = position;
        Ok(())
    }

    /// The committed audit position: records at or beyond it are not trusted.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Forgets records not yet committed and any beyond `position` (a reset audit position):
    /// the stored ones are no longer trusted, and are deleted at the next commit.
    pub fn rollback(&mut self, position: u64) {
        self.pending.clear();
        self.committed = position.min(self.committed);
    }

    /// Deletes every stored record of a leaf index at or beyond `position`, and the stored
    /// filters of the epochs from `position`'s on, and rebuilds the filters.
    fn forget_from(&mut self, position: u64) -> Result<(), IndexError> {
        let epoch = Epochs::number(self.epochs.epoch(position))?;
        let mut batch = WriteBatch::default();
        for table in Table::ALL {
            let records = cf(&self.db, table.records())?;
            let prefix = epoch.to_be_bytes();
            let mut iter = self.db.raw_iterator_cf(records);
            iter.seek(prefix);
            while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
                if !k.starts_with(&prefix) {
                    break;
                }
                let record = Record::decode(table, v)
                    .ok_or_else(|| IndexError::Corrupt(format!("malformed {table:?} record")))?;
                if record.index >= position {
                    batch.delete_cf(records, k);
                }
                iter.next();
            }
            iter.status()?;
            if let Some(next) = epoch.checked_add(1) {
                batch.delete_range_cf(records, &next.to_be_bytes()[..], &[0xff; 37][..]);
            }
            let filters = cf(&self.db, table.filters())?;
            batch.delete_range_cf(filters, &prefix[..], &[0xff; 5][..]);
        }
        batch.put_cf(cf(&self.db, CF_META)?, META_WRITTEN, position.to_be_bytes());
        self.write_synced(batch)?;
        self.written = position;
        self.committed = position;
        tracing::info!(
            position,
            "identity index: records past the audit position deleted"
        );
        self.reload_filters()
    }

    /// Loads the filters of the records below `written`.
    fn reload_filters(&mut self) -> Result<(), IndexError> {
        for table in Table::ALL {
            self.filters[table.slot()] = load_filters(&self.db, self.epochs, table, self.written)?;
        }
        Ok(())
    }

    fn write_synced(&self, batch: WriteBatch) -> Result<(), IndexError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> Result<&'a rocksdb::ColumnFamily, IndexError> {
    db.cf_handle(name)
        .ok_or_else(|| IndexError::Corrupt(format!("no column family {name}")))
}

/// The key of `digest`'s record in `epoch`.
fn record_key(epoch: u32, digest: &[u8; 32]) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..4].copy_from_slice(&epoch.to_be_bytes());
    k[4..].copy_from_slice(digest);
    k
}

/// The filters of `table` over its records below `size`.
fn load_filters(
    db: &Arc<DB>,
    epochs: Epochs,
    table: Table,
    size: u64,
) -> Result<EpochFilters, IndexError> {
    Ok(EpochFilters::load(
        db,
        table.records(),
        table.filters(),
        epochs,
        size,
        table.family(),
    )?)
}

/// Moves the records of an index of the first layout (the default family, keys `i` or `p`
/// and the digest, values the sha256 and the leaf index) into this one, dropping those not
/// below `committed`, and marks the index as of this layout; returns the position the records
/// now reach. A new index is only marked.
fn first_layout_moved(db: &DB, epochs: Epochs, committed: u64) -> Result<u64, IndexError> {
    let old = cf(db, rocksdb::DEFAULT_COLUMN_FAMILY_NAME)?;
    let mut batch = WriteBatch::default();
    let mut moved = 0u64;
    let mut iter = db.raw_iterator_cf(old);
    iter.seek_to_first();
    while let (Some(k), Some(v)) = (iter.key(), iter.value()) {
        let malformed = || IndexError::Corrupt("malformed record of the first layout".into());
        let (table, digest) = match k.split_first() {
            Some((b'i', d)) => (Table::Identity, d),
            Some((b'p', d)) => (Table::Package, d),
            _ => return Err(malformed()),
        };
        let digest: [u8; 32] = digest.try_into().map_err(|_| malformed())?;
        let record = Record::decode(Table::Identity, v).ok_or_else(malformed)?;
        if record.index < committed {
            let (epoch, _) = epochs.split(record.index)?;
            batch.put_cf(
                cf(db, table.records())?,
                record_key(epoch, &digest),
                record.encode(table),
            );
            moved += 1;
        }
        if batch.len() >= 1 << 16 {
            db.write(std::mem::take(&mut batch))?;
        }
        iter.next();
    }
    iter.status()?;
    drop(iter);
    if moved > 0 {
        tracing::info!(records = moved, "identity index moved to its epoch layout");
    }
    batch.delete_range_cf(old, &[][..], &[0xff][..]);
    let meta = cf(db, CF_META)?;
    batch.put_cf(meta, META_EPOCH_BITS, [epochs.bits()]);
    batch.put_cf(meta, META_WRITTEN, committed.to_be_bytes());
    batch.put_cf(meta, META_FORMAT, FORMAT.to_be_bytes());
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(batch, &opts)?;
    Ok(committed)
}

/// An entry to check, with its leaf index and the index keys it reads or writes.
pub struct Claim {
    /// Leaf index of the entry.
    pub index: u64,
    /// The entry.
    pub entry: Entry,
    id_key: [u8; 32],
    pkg_key: [u8; 32],
}

impl Claim {
    /// The claim of `entry` at leaf `index`; hashing its keys here lets callers do it off the
    /// thread that owns the index.
    pub fn new(index: u64, entry: Entry) -> Claim {
        let id_key = entry.identity_key();
        let pkg_key = Sha256::digest(entry.package.as_bytes()).into();
        Claim {
            index,
            entry,
            id_key,
            pkg_key,
        }
    }

    /// The key of `table` checking it reads, if any: its identity's (to judge it), its
    /// package's (to judge an owner event, or to record a package's first publish).
    fn reads(&self, table: Table) -> Option<[u8; 32]> {
        let kind = self.entry.kind;
        match table {
            Table::Identity => claims::needs_identity(kind).then_some(self.id_key),
            Table::Package => {
                (!claims::needs_identity(kind) || kind == Kind::Publish).then_some(self.pkg_key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btlog_core::entry::EntryData;

    fn entry(kind: Kind, package: &str, version: &str, digest: u8) -> Entry {
        let owner = kind.is_owner();
        Entry::new(EntryData {
            kind,
            registry: "registry.example".into(),
            package: package.into(),
            version: if owner { "-".into() } else { version.into() },
            file: if owner {
                "-".into()
            } else {
                format!("{version}.tgz")
            },
            sha256: [digest; 32],
            sha512: None,
            size: None,
            publisher: None,
            provenance: None,
            time: None,
        })
        .expect("valid entry")
    }

    /// The violation checking `claim` alone finds.
    fn one(idx: &mut Index, claim: Claim) -> Option<AlertKind> {
        let found = idx.check_all(&[claim]).expect("check");
        assert!(found.len() <= 1);
        found.into_iter().next().map(|(_, v)| v.kind)
    }

    #[test]
    fn claims_are_enforced_and_survive_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(dir.path(), 0).expect("open");
        let pkg = "pkg:npm/a";
        let claim = |i, kind, version, digest| Claim::new(i, entry(kind, pkg, version, digest));
        let found = |idx: &mut Index, c| one(idx, c);
        assert_eq!(
            found(&mut idx, claim(0, Kind::OwnerAdd, "-", 9)),
            Some(AlertKind::UnknownPackage)
        );
        assert_eq!(found(&mut idx, claim(1, Kind::Publish, "1", 1)), None);
        assert_eq!(found(&mut idx, claim(2, Kind::Publish, "1", 1)), None);
        assert_eq!(
            found(&mut idx, claim(3, Kind::Publish, "1", 2)),
            Some(AlertKind::Conflict)
        );
        assert_eq!(
            found(&mut idx, claim(4, Kind::Yank, "2", 1)),
            Some(AlertKind::UnknownArtifact)
        );
        assert_eq!(
            found(&mut idx, claim(5, Kind::Delete, "1", 3)),
            Some(AlertKind::DigestMismatch)
        );
        assert_eq!(found(&mut idx, claim(6, Kind::OwnerAdd, "-", 9)), None);
        idx.commit(7).expect("commit");
        drop(idx);
        // Reopened at a committed position below the records (a crash before the state was
        // saved): they are deleted, so the same publish is new again...
        let mut idx = Index::open(dir.path(), 1).expect("reopen");
        assert_eq!(found(&mut idx, claim(1, Kind::Publish, "1", 5)), None);
        idx.commit(2).expect("commit");
        drop(idx);
        // ... and what was recorded instead survives.
        let mut idx = Index::open(dir.path(), 2).expect("reopen");
        assert_eq!(
            found(&mut idx, claim(7, Kind::Publish, "1", 2)),
            Some(AlertKind::Conflict)
        );
        assert_eq!(found(&mut idx, claim(8, Kind::Publish, "1", 5)), None);
        drop(idx);
        // Opened at a position beyond what it holds (restored from an older copy), or new
        // (deleted): committed only as far as its records reach.
        assert_eq!(Index::open(dir.path(), 9).expect("behind").committed(), 2);
        let new = tempfile::tempdir().expect("tempdir");
        assert_eq!(Index::open(new.path(), 9).expect("new").committed(), 0);
    }

    /// A history of every kind of claim, including each violation, over 40 packages.
    fn history(from: u64, n: u64) -> Vec<Claim> {
        (from..from + n)
            .map(|i| {
                let pkg = format!("pkg:npm/p{}", i % 40);
                let version = (i / 40 % 3).to_string();
                let e = match i % 7 {
                    0 => entry(Kind::OwnerAdd, &pkg, "-", 9),
                    1 => entry(Kind::Yank, &pkg, &version, (i % 3) as u8),
                    2 => entry(Kind::Publish, &pkg, &version, (i % 2) as u8),
                    _ => entry(Kind::Publish, &pkg, &version, 1),
                };
                Claim::new(i, e)
            })
            .collect()
    }

    /// The violations found checking `claims` in chunks of `chunk`, committing after each.
    fn violations(idx: &mut Index, claims: &[Claim], chunk: usize) -> Vec<(u64, AlertKind)> {
        let mut out = Vec::new();
        for chunk in claims.chunks(chunk) {
            let found = idx.check_all(chunk).expect("check");
            out.extend(found.into_iter().map(|(i, v)| (i, v.kind)));
            idx.commit(chunk.last().expect("chunk").index + 1)
                .expect("commit");
            // The groups of full epochs in place, so that the next chunk reads them.
            idx.filters.iter().for_each(EpochFilters::settle);
        }
        out
    }

    #[test]
    fn verdicts_do_not_depend_on_epochs_or_reopening() {
        let claims = history(0, 900);
        let one_epoch = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(one_epoch.path(), 0).expect("open");
        let expected = violations(&mut idx, &claims, 50);
        for kind in [
            AlertKind::Conflict,
            AlertKind::UnknownPackage,
            AlertKind::UnknownArtifact,
            AlertKind::DigestMismatch,
        ] {
            assert!(expected.iter().any(|v| v.1 == kind), "{kind:?} never found");
        }
        // Epochs of 8 entries: 113 of them, chunks that cross them, and a reopen midway, so
        // that the first 75 epochs' filters are the sealed ones read back.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open_with_epoch_bits(dir.path(), 0, 3).expect("open");
        let mut found = violations(&mut idx, &claims[..600], 37);
        drop(idx);
        let mut idx = Index::open_with_epoch_bits(dir.path(), 600, 20).expect("reopen");
        assert_eq!(idx.epochs.bits(), 3, "an index keeps its epochs");
        found.extend(violations(&mut idx, &claims[600..], 37));
        assert_eq!(found, expected);
        // 14 groups of 8 epochs answered for them: a group's filter is 2 blocks of 64 bytes
        // where its 8 epochs' were 8.
        let epochs = idx.epochs.count(idx.written);
        assert_eq!(epochs, 113);
        let bytes = idx.filters[Table::Identity.slot()].bytes();
        assert!(
            bytes <= 14 * 2 * 64 + 64,
            "{bytes} bytes of identity filters"
        );
    }

    #[test]
    fn records_of_a_history_since_reset_are_not_trusted_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Epochs of two entries: a reset to 1 deletes a record of its own epoch (index 1)
        // and one of a later epoch (index 2).
        let mut idx = Index::open_with_epoch_bits(dir.path(), 0, 1).expect("open");
        let publish = |i, pkg, digest| Claim::new(i, entry(Kind::Publish, pkg, "1", digest));
        let first = [
            publish(0, "pkg:npm/a", 1),
            publish(1, "pkg:npm/b", 1),
            publish(2, "pkg:npm/c", 1),
        ];
        assert!(violations(&mut idx, &first, 3).is_empty());
        // The audit goes back to 1 (another view of the log): the records of 1 and 2 are no
        // longer trusted, and must not be found once the new history passes their indexes.
        idx.rollback(1);
        let other = [
            publish(1, "pkg:npm/d", 1),
            publish(2, "pkg:npm/e", 1),
            publish(3, "pkg:npm/b", 2),
            publish(4, "pkg:npm/c", 2),
            publish(5, "pkg:npm/a", 2),
        ];
        assert_eq!(
            violations(&mut idx, &other, 2),
            vec![(5, AlertKind::Conflict)],
            "only the record below the reset stays"
        );
        // Back to the start: nothing is trusted, and nothing is found.
        idx.rollback(0);
        assert!(violations(&mut idx, &[publish(0, "pkg:npm/a", 3)], 1).is_empty());
        drop(idx);
        let mut idx = Index::open(dir.path(), 1).expect("reopen");
        assert_eq!(
            one(&mut idx, publish(1, "pkg:npm/a", 1)),
            Some(AlertKind::Conflict)
        );
    }

    #[test]
    fn each_full_epoch_is_compacted_once_into_the_last_level() {
        let dir = tempfile::tempdir().expect("tempdir");
        let epoch = 1024u64;
        // Publishes of distinct packages: one identity and one package record each. Three
        // commits, the second completing the first epoch, the third the second and more.
        let claims: Vec<Claim> = (0..2 * epoch + 100)
            .map(|i| {
                let pkg = format!("pkg:npm/p{i}");
                Claim::new(i, entry(Kind::Publish, &pkg, "1", 1))
            })
            .collect();
        {
            let mut idx = Index::open_with_epoch_bits(dir.path(), 0, 10).expect("open");
            for range in [0..700, 700..1500, 1500..claims.len()] {
                assert!(idx
                    .check_all(&claims[range.clone()])
                    .expect("check")
                    .is_empty());
                idx.commit(range.end as u64).expect("commit");
            }
            // Dropped, the index waits for the compaction of the two full epochs.
        }
        let db = DB::open_cf_for_read_only(
            &Options::default(),
            dir.path(),
            [
                "default",
                CF_META,
                "identities",
                "identity_filters",
                "packages",
                "package_filters",
            ],
            false,
        )
        .expect("read the index");
        let files = db.live_files().expect("files");
        for family in RECORDS {
            for e in 0..2u32 {
                let holding: Vec<_> = files
                    .iter()
                    .filter(|f| f.column_family_name == family)
                    .filter(|f| {
                        let start = f.start_key.as_deref().expect("start");
                        let end = f.end_key.as_deref().expect("end");
                        start[..4] <= e.to_be_bytes()[..] && e.to_be_bytes()[..] <= end[..4]
                    })
                    .map(|f| (f.level, f.num_entries))
                    .collect();
                assert_eq!(holding, [(6, epoch)], "{family}, epoch {e}");
            }
        }
    }

    #[test]
    fn an_index_of_the_first_layout_is_moved_into_epochs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = Claim::new(3, entry(Kind::Publish, "pkg:npm/a", "1", 1));
        let dropped = Claim::new(9, entry(Kind::Publish, "pkg:npm/b", "1", 1));
        {
            // The first layout: the default family, `i` or `p` and the digest → the sha256
            // and the leaf index.
            let mut opts = Options::default();
            opts.create_if_missing(true);
            let db = DB::open(&opts, dir.path()).expect("old index");
            for c in [&kept, &dropped] {
                let index = c.index.to_be_bytes();
                let sha = c.entry.sha256;
                db.put([&b"i"[..], &c.id_key].concat(), [&sha[..], &index].concat())
                    .expect("put");
                db.put(
                    [&b"p"[..], &c.pkg_key].concat(),
                    [&[0; 32][..], &index].concat(),
                )
                .expect("put");
            }
        }
        let mut idx = Index::open(dir.path(), 5).expect("moved");
        let old = cf(&idx.db, rocksdb::DEFAULT_COLUMN_FAMILY_NAME).expect("default");
        assert!(idx
            .db
            .iterator_cf(old, rocksdb::IteratorMode::Start)
            .next()
            .is_none());
        let conflict = Claim::new(5, entry(Kind::Publish, "pkg:npm/a", "1", 2));
        assert_eq!(one(&mut idx, conflict), Some(AlertKind::Conflict));
        // b's record was at 9, beyond the committed 5: not trusted, so not moved.
        let owner = Claim::new(6, entry(Kind::OwnerAdd, "pkg:npm/b", "-", 0));
        assert_eq!(one(&mut idx, owner), Some(AlertKind::UnknownPackage));
        let owner = Claim::new(7, entry(Kind::OwnerAdd, "pkg:npm/a", "-", 0));
        assert_eq!(one(&mut idx, owner), None);
        drop(idx);
        let idx = Index::open(dir.path(), 5).expect("reopen");
        assert_eq!(idx.written, 5);
    }
}
