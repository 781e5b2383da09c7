//! The binary transparency claims of PROTOCOL.md §2, checked on every entry, and the identity index
//! they need, rebuilt by the monitor from the entries themselves.
//!
//! The index is a small RocksDB database (`index/` in the log's state directory): it grows with
//! the log (one record per artifact) and must not be held in memory or rewritten, and RocksDB
//! is already a dependency. Records carry the leaf index that created them; a record at or
//! beyond the committed audit position (left by a run that crashed before saving its state) is
//! ignored and overwritten, so the index always agrees with `state.json` without a shared
//! transaction. Only records of entries proven part of a signed tree are committed (see
//! `audit`): a log serving entries that do not match its signed root cannot plant records.
//!
//! The rules themselves are `btlog_core::claims`, the same code the log's sequencer runs.

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use btlog_core::claims::{self, Published, Verdict};
use btlog_core::entry::{Entry, Kind};

use super::alert::AlertKind;
use super::seen::Seen;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
#[error("identity index: {0}")]
pub struct IndexError(#[from] rocksdb::Error);

/// A claim violation found in one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Which claim.
    pub kind: AlertKind,
    /// What was found, for a person.
    pub details: String,
}

/// The identity index: identity → (sha256, index), package → first publish index.
pub struct Index {
    db: rocksdb::DB,
    committed: u64,
    pending: HashMap<Vec<u8>, Vec<u8>>,
    /// Every key recorded since the index last held no trusted record, while that fits (see
    /// [`Index::prepare`]): a key it rules out has no record, and is not looked up.
    seen: Option<Seen>,
}

/// Stored records of the keys of a batch of claims, read in one `MultiGet`.
type Fetched = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// Block cache of the monitor's index: bounded, whatever the log size. Most lookups are of
/// identities not yet recorded, answered by the bloom filter partitions alone: at 10 bits a
/// key these take ~1.2 MiB per million entries, so 64 MiB keeps them, with the index
/// partitions, in memory to about 30M entries. A HyperClockCache: its lookups take no lock,
/// and a catch-up to 10M ran at 0.97x the CPU of an LRU cache (BENCHMARKS.md, "Scale").
const INDEX_CACHE_BYTES: usize = 64 << 20;
/// Memtable size of the index. Keys are random, so every compaction of level 0 rewrites the
/// whole first level below it: the more each flush carries, the fewer such rewrites per
/// entry as the index grows. The log keeps 4 MiB because its single writer inserts each
/// batch as it comes; the monitor inserts a whole chunk (65k entries) in key order (see
/// [`Index::commit`]), which keeps inserts cheap in a larger memtable.
const INDEX_WRITE_BUFFER_BYTES: usize = 16 << 20;

impl Index {
    /// Opens (or creates) the index in `dir`; records at or beyond `committed` are ignored.
    pub fn open(dir: &Path, committed: u64) -> Result<Index, IndexError> {
        let cache = rocksdb::Cache::new_hyper_clock_cache(INDEX_CACHE_BYTES, 0);
        let mut opts = btlog_store::random_key_index_options(&cache);
        // Larger memtables than the log's (see INDEX_WRITE_BUFFER_BYTES).
        opts.set_write_buffer_size(INDEX_WRITE_BUFFER_BYTES);
        // The filter of a catch-up answers most lookups, so the extra level-0 files are
        // probed by few.
        btlog_store::compact_level0_late(&mut opts);
        opts.create_if_missing(true);
        Ok(Index {
            // The default family is named so that `check_all` can use batched lookups on it.
            db: rocksdb::DB::open_cf_descriptors(
                &opts,
                dir,
                [rocksdb::ColumnFamilyDescriptor::new(
                    rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
                    opts.clone(),
                )],
            )?,
            committed,
            pending: HashMap::new(),
            seen: None,
        })
    }

    /// Called before checking the claims of a log of `size` entries. When the index holds no
    /// trusted record (nothing committed, nothing pending: a new monitor, or one reset to the
    /// start), every record it will hold is recorded in this process, so a filter of those
    /// ([`Seen`]) can rule out the lookups of keys never recorded. It is sized for `size`
    /// entries plus a quarter: a publish records its identity, and the first of a package the
    /// package too. Should more be recorded, or the log be too large for its memory bound, the
    /// index is read as without it.
    ///
    /// Records the database may still hold then (from chunks of a history since reset, or
    /// committed by a run that crashed before saving its state) are all untrusted, and are
    /// deleted here: were one left, it would be trusted again once the audit position passed
    /// its index, which the filter would not know.
    pub fn prepare(&mut self, size: u64) -> Result<(), IndexError> {
        if self.committed == 0 && self.pending.is_empty() {
            let stale = self
                .db
                .iterator(rocksdb::IteratorMode::Start)
                .next()
                .transpose()?
                .is_some();
            // Opened with the default family named (see `open`), so it is there.
            if let Some(cf) = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME) {
                if stale {
                    // Keys are b"i" or b"p" and a digest, all below 0xff.
                    self.db.delete_range_cf(cf, &[][..], &[0xffu8][..])?;
                }
            }
            self.seen = Seen::with_capacity(size.saturating_add(size / 4));
        }
        Ok(())
    }

    /// Checks consecutive claims against the index, in order, and records what they
    /// establish. The stored records they need are read in one batched lookup, which costs a
    /// fraction of one lookup per key.
    pub fn check_all(&mut self, claims: &[Claim]) -> Result<Vec<(u64, Violation)>, IndexError> {
        let mut keys: Vec<&[u8]> = claims
            .iter()
            .flat_map(|c| {
                let (id_read, pkg_read) = c.reads();
                [
                    id_read.then_some(c.id_key.as_slice()),
                    pkg_read.then_some(c.pkg_key.as_slice()),
                ]
            })
            .flatten()
            .filter(|k| !self.pending.contains_key(*k) && self.may_be_stored(k))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let cf = self.db.cf_handle(rocksdb::DEFAULT_COLUMN_FAMILY_NAME);
        // Opened with the default family named, so `cf` is there; without it `get` would
        // read each key on its own, correctly but slower.
        let values = match cf {
            Some(cf) => self.db.batched_multi_get_cf(cf, &keys, true),
            None => Vec::new(),
        };
        let mut fetched = Fetched::with_capacity(keys.len());
        for (key, value) in keys.into_iter().zip(values) {
            fetched.insert(key.to_vec(), value?.map(|v| v.to_vec()));
        }
        let mut violations = Vec::new();
        for claim in claims {
            if let Some(v) = self.check(claim, &fetched)? {
                violations.push((claim.index, v));
            }
        }
        Ok(violations)
    }

    /// Checks one claim against the index (with the stored records in `fetched`, or read
    /// now) and records what it establishes.
    fn check(&mut self, claim: &Claim, fetched: &Fetched) -> Result<Option<Violation>, IndexError> {
        let Claim {
            index,
            entry,
            id_key,
            pkg_key,
        } = claim;
        let index = *index;
        let (id_read, pkg_read) = claim.reads();
        let published = match id_read {
            true => self
                .get(id_key, fetched)?
                .map(|(sha256, index)| Published { index, sha256 }),
            false => None,
        };
        let package_published = pkg_read && self.get(pkg_key, fetched)?.is_some();
        let verdict = claims::judge(entry, published, package_published);
        if verdict.is_new() && entry.kind == Kind::Publish {
            self.put(id_key.clone(), entry.sha256, index);
            if !package_published {
                self.put(pkg_key.clone(), [0; 32], index);
            }
        }
        let kind = match verdict {
            Verdict::New | Verdict::Duplicate(_) => None,
            Verdict::Conflict(_) => Some(AlertKind::Conflict),
            Verdict::UnknownArtifact => Some(AlertKind::UnknownArtifact),
            Verdict::DigestMismatch(_) => Some(AlertKind::DigestMismatch),
            Verdict::UnknownPackage => Some(AlertKind::UnknownPackage),
        };
        let violation = kind.map(|kind| Violation {
            kind,
            details: verdict.reason(entry).unwrap_or_default(),
        });
        Ok(violation)
    }

    /// Writes the records of the checked entries durably; `position` becomes the committed
    /// audit position once the caller saved its state.
    pub fn commit(&mut self, position: u64) -> Result<(), IndexError> {
        // In key order: each memtable insert then starts from where the previous one ended
        // in the skiplist, instead of a fresh descent with a cache miss per level.
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = self.pending.drain().collect();
        records.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut batch = rocksdb::WriteBatch::default();
        for (k, v) in records {
            batch.put(k, v);
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        self.committed = position;
        Ok(())
    }

    /// The committed audit position: records at or beyond it are not trusted.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Forgets records not yet committed and any beyond `position` (a reset audit position).
    pub fn rollback(&mut self, position: u64) {
        self.pending.clear();
        self.committed = position;
    }

    /// The record under `key`: pending, else stored and committed.
    fn get(&self, key: &[u8], fetched: &Fetched) -> Result<Option<([u8; 32], u64)>, IndexError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(decode(v));
        }
        if !self.may_be_stored(key) {
            return Ok(None);
        }
        let stored = match fetched.get(key) {
            Some(v) => v.clone(),
            None => self.db.get(key)?,
        };
        Ok(stored
            .and_then(|v| decode(&v))
            .filter(|(_, index)| *index < self.committed))
    }

    /// False when `key` certainly has no stored record.
    fn may_be_stored(&self, key: &[u8]) -> bool {
        self.seen.as_ref().is_none_or(|s| s.may_contain(key))
    }

    /// Records `key` (which has no record) as established at `index`.
    fn put(&mut self, key: Vec<u8>, digest: [u8; 32], index: u64) {
        if let Some(seen) = &mut self.seen {
            if !seen.insert(&key) {
                tracing::debug!(keys = seen.len(), "identity filter full; reading the index");
                self.seen = None;
            }
        }
        self.pending
            .insert(key, [digest.as_slice(), &index.to_be_bytes()].concat());
    }
}

/// An entry to check, with its leaf index and the index keys it reads or writes.
pub struct Claim {
    /// Leaf index of the entry.
    pub index: u64,
    /// The entry.
    pub entry: Entry,
    id_key: Vec<u8>,
    pkg_key: Vec<u8>,
}

impl Claim {
    /// The claim of `entry` at leaf `index`; hashing its keys here lets callers do it off the
    /// thread that owns the index.
    pub fn new(index: u64, entry: Entry) -> Claim {
        let id_key = [b"i".as_slice(), &entry.identity_key()].concat();
        let pkg_key = [b"p".as_slice(), &Sha256::digest(entry.package.as_bytes())].concat();
        Claim {
            index,
            entry,
            id_key,
            pkg_key,
        }
    }

    /// Which records checking it reads: its identity's (to judge it), its package's (to
    /// judge an owner event, or to record a package's first publish).
    fn reads(&self) -> (bool, bool) {
        let kind = self.entry.kind;
        (
            claims::needs_identity(kind),
            !claims::needs_identity(kind) || kind == Kind::Publish,
        )
    }
}

fn decode(v: &[u8]) -> Option<([u8; 32], u64)> {
    let digest = v.get(..32)?.try_into().ok()?;
    let index = u64::from_be_bytes(v.get(32..40)?.try_into().ok()?);
    Some((digest, index))
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

    #[test]
    fn claims_are_enforced_and_survive_commit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(dir.path(), 0).expect("open");
        let kind = |v: Option<Violation>| v.map(|v| v.kind);
        let pkg = "pkg:npm/a";
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(0, entry(Kind::OwnerAdd, pkg, "-", 9)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            Some(AlertKind::UnknownPackage)
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(1, entry(Kind::Publish, pkg, "1", 1)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            None
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(2, entry(Kind::Publish, pkg, "1", 1)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            None
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(3, entry(Kind::Publish, pkg, "1", 2)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            Some(AlertKind::Conflict)
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(4, entry(Kind::Yank, pkg, "2", 1)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            Some(AlertKind::UnknownArtifact)
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(5, entry(Kind::Delete, pkg, "1", 3)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            Some(AlertKind::DigestMismatch)
        );
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(6, entry(Kind::OwnerAdd, pkg, "-", 9)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            None
        );
        idx.commit(7).expect("commit");
        drop(idx);
        // Reopened at a committed position below the records: they are not trusted.
        let mut idx = Index::open(dir.path(), 1).expect("reopen");
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(1, entry(Kind::Publish, pkg, "1", 5)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            None
        );
        idx.rollback(1);
        drop(idx);
        let mut idx = Index::open(dir.path(), 7).expect("reopen");
        assert_eq!(
            kind(
                idx.check(
                    &Claim::new(7, entry(Kind::Publish, pkg, "1", 2)),
                    &Fetched::new()
                )
                .unwrap()
            ),
            Some(AlertKind::Conflict)
        );
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

    /// The violations found checking `claims` in chunks of 50, committing after each.
    fn violations(idx: &mut Index, claims: &[Claim]) -> Vec<(u64, AlertKind)> {
        let mut out = Vec::new();
        for chunk in claims.chunks(50) {
            let found = idx.check_all(chunk).expect("check");
            out.extend(found.into_iter().map(|(i, v)| (i, v.kind)));
            idx.commit(chunk.last().expect("chunk").index + 1)
                .expect("commit");
        }
        out
    }

    #[test]
    fn the_filter_of_a_new_index_changes_no_verdict() {
        let claims = history(0, 600);
        let plain_dir = tempfile::tempdir().expect("tempdir");
        let mut plain = Index::open(plain_dir.path(), 0).expect("open");
        let expected = violations(&mut plain, &claims);
        for kind in [
            AlertKind::Conflict,
            AlertKind::UnknownPackage,
            AlertKind::UnknownArtifact,
            AlertKind::DigestMismatch,
        ] {
            assert!(expected.iter().any(|v| v.1 == kind), "{kind:?} never found");
        }

        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(dir.path(), 0).expect("open");
        idx.prepare(600).expect("prepare");
        assert!(idx.seen.is_some(), "an empty index gets the filter");
        assert_eq!(violations(&mut idx, &claims), expected);

        // Full: the filter is dropped and the index read as without it.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(dir.path(), 0).expect("open");
        idx.prepare(40).expect("prepare");
        assert_eq!(violations(&mut idx, &claims), expected);
        assert!(idx.seen.is_none(), "a full filter is dropped");

        // Reopened with committed records, the index gets no filter: one holding only what
        // this process records would rule out the records stored before.
        let more = history(600, 300);
        let expected_more = violations(&mut plain, &more);
        drop(idx);
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let mut idx = Index::open(dir.path(), 0).expect("open");
            violations(&mut idx, &claims);
        }
        let mut idx = Index::open(dir.path(), 600).expect("reopen");
        idx.prepare(900).expect("prepare");
        assert!(idx.seen.is_none());
        assert!(expected_more.iter().any(|v| v.1 == AlertKind::Conflict));
        assert_eq!(violations(&mut idx, &more), expected_more);
    }

    #[test]
    fn records_of_a_history_since_reset_are_not_trusted_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(dir.path(), 0).expect("open");
        let pkg = "pkg:npm/a";
        idx.prepare(100).expect("prepare");
        let first = [
            Claim::new(0, entry(Kind::Publish, pkg, "1", 1)),
            Claim::new(1, entry(Kind::Publish, "pkg:npm/b", "1", 1)),
        ];
        assert!(violations(&mut idx, &first).is_empty());
        // The audit goes back to the start (another view of the log): the records committed
        // so far are untrusted, and a new catch-up must not find them once it passes their
        // indexes. A filter of no capacity is dropped at the first record, so the lookups
        // below go to the database.
        idx.rollback(0);
        idx.prepare(0).expect("prepare");
        let other = [
            Claim::new(0, entry(Kind::Publish, "pkg:npm/c", "1", 1)),
            Claim::new(1, entry(Kind::Publish, "pkg:npm/d", "1", 1)),
            Claim::new(2, entry(Kind::Publish, pkg, "1", 2)),
        ];
        assert_eq!(violations(&mut idx, &other[..2]), vec![]);
        assert!(idx.seen.is_none());
        // Committed to 2: a record left from the first history at index 0 would now count.
        assert_eq!(violations(&mut idx, &other[2..]), vec![]);
    }
}
