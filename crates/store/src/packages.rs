//! The package index: package purl → the indexes of its entries, partitioned into the epochs
//! of the log ([`Epochs`]), with one bloom filter an epoch held in memory.
//!
//! A key is the epoch (big-endian u32), the purl, a 0 byte, and the index's low bits
//! (big-endian u32); the value is empty. A purl never holds a byte below `!` (its raw bytes are
//! letters, digits and `-._~%:/`, PROTOCOL.md §2), so the 0 ends it: one package's keys in an
//! epoch are consecutive, in log order. A stored filter's key is its epoch alone.
//!
//! Why epochs: keyed by purl alone, new packages land all over the key space, so every
//! compaction that moves new records down a level rewrites the older records there. Over a
//! 30M-entry series this index took 98 s of compaction, the most of any (issue 18,
//! BENCHMARKS.md "Scale"). With the epoch first, compactions stay inside the newest epoch, as
//! in the leaf and identity indexes.
//!
//! Why filters: a package's entries would then take one seek an epoch to list. The appends of
//! maintainer events ask whether their package has a publish, and the explorer lists
//! packages, so each epoch has a filter of the packages it lists ([`crate::epoch_filters`];
//! the filter key is the SHA-256 of the purl), and only the epochs whose filter may hold the
//! package are read. An epoch lists fewer packages than entries (a package has many versions
//! and files), so its sealed filter is smaller than an identity filter.
//!
//! A scan by purl prefix ([`Store::scan_package_prefix`]) cannot use the filters: it seeks
//! once per epoch.

use super::bloom::Probe;
use super::epoch_filters::Family;
use super::hash_index::Epochs;
use super::{Store, StoreError, CF_PACKAGES};
use sha2::{Digest, Sha256};

/// The package index's filters: keyed by the SHA-256 of the purl.
pub(crate) static FAMILY: Family = Family {
    name: "package",
    bits_per_key: crate::bloom::BITS_PER_KEY,
    probe_of_record: |k| parse(k).map(|(_, purl, _)| probe(purl)),
    // A full epoch's package filter folds to what its few packages need (96 KiB for 65k), and
    // these stay in the CPU's caches; grouped, they would not fold before the group is whole.
    group: 1,
};

/// The filter probe of `purl`.
pub(crate) fn probe(purl: &[u8]) -> Probe {
    Probe::of(&Sha256::digest(purl))
}

/// The key listing the entry at `index` under `purl`; an error past the last epoch a key can
/// name.
pub(crate) fn key(epochs: Epochs, purl: &str, index: u64) -> Result<Vec<u8>, StoreError> {
    let (epoch, low) = epochs.split(index)?;
    let mut k = prefix(epoch, purl.as_bytes());
    k.extend_from_slice(&low.to_be_bytes());
    Ok(k)
}

/// Epoch, purl, and the 0 byte that ends the purl: the prefix of a package's keys in an epoch.
fn prefix(epoch: u32, purl: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(4 + purl.len() + 5);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(purl);
    k.push(0);
    k
}

/// The low index bits of `k` if it is a key of the package whose keys in an epoch begin with
/// `whole` ([`prefix`]). A name asked for that holds a 0 (never a purl) may prefix another
/// package's keys; their tails are not 4 bytes.
fn low_of(k: &[u8], whole: &[u8]) -> Option<u32> {
    let low = k.strip_prefix(whole)?;
    Some(u32::from_be_bytes(low.try_into().ok()?))
}

/// The epoch, purl and low index bits of a key; None if it is malformed.
fn parse(k: &[u8]) -> Option<(u32, &[u8], u32)> {
    let (epoch, rest) = k.split_first_chunk::<4>()?;
    let (rest, low) = rest.split_last_chunk::<4>()?;
    let (0, purl) = rest.split_last()? else {
        return None;
    };
    Some((u32::from_be_bytes(*epoch), purl, u32::from_be_bytes(*low)))
}

impl Store {
    /// Indexes of the entries for `package` in the log, in log order, from `from` on, at most
    /// `limit`: read from the epochs whose filter may hold the package.
    pub fn package_indexes(
        &self,
        package: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let size = self.size();
        let epochs = self.inner.epochs;
        let mut out = Vec::new();
        if limit == 0 || from >= size {
            return Ok(out);
        }
        let holding = self
            .inner
            .package_filters
            .holding(&probe(package.as_bytes()));
        let mut iter = self.db().raw_iterator_cf(self.cf(CF_PACKAGES));
        for epoch in holding.into_iter().filter(|e| *e >= epochs.epoch(from)) {
            let start = epochs.first(epoch).max(from);
            let whole = prefix(Epochs::number(epoch)?, package.as_bytes());
            iter.seek(key(epochs, package, start)?);
            while let Some(k) = iter.key() {
                let Some(low) = low_of(k, &whole) else {
                    break;
                };
                let index = epochs.first(epoch) | u64::from(low);
                // Keys of a batch written but not (yet, or ever) published are not in the log.
                if index >= size {
                    return Ok(out);
                }
                out.push(index);
                if out.len() >= limit {
                    return Ok(out);
                }
                iter.next();
            }
            iter.status()?;
        }
        Ok(out)
    }

    /// Indexes of the entries for `package` below `before`, newest first, at most `limit`.
    pub fn package_indexes_rev(
        &self,
        package: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let before = before.min(self.size());
        let epochs = self.inner.epochs;
        let mut out = Vec::new();
        if limit == 0 || before == 0 {
            return Ok(out);
        }
        let last = epochs.epoch(before - 1);
        let holding = self
            .inner
            .package_filters
            .holding(&probe(package.as_bytes()));
        for epoch in holding.into_iter().rev().filter(|e| *e <= last) {
            let whole = prefix(Epochs::number(epoch)?, package.as_bytes());
            // Past the package's keys in the epoch: its ending 0 raised to 1 (no purl holds a
            // byte below `!`, so no other package's key falls in between).
            let upper = if epochs.epoch(before) == epoch {
                key(epochs, package, before)?
            } else {
                let mut past = whole.clone();
                past.pop();
                past.push(1);
                past
            };
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_iterate_lower_bound(whole.clone());
            opts.set_iterate_upper_bound(upper);
            let mut iter = self.db().raw_iterator_cf_opt(self.cf(CF_PACKAGES), opts);
            iter.seek_to_last();
            while let Some(k) = iter.key() {
                let Some(low) = low_of(k, &whole) else {
                    break;
                };
                out.push(epochs.first(epoch) | u64::from(low));
                if out.len() >= limit {
                    return Ok(out);
                }
                iter.prev();
            }
            iter.status()?;
        }
        Ok(out)
    }

    /// Calls `f(package, index)` for every package index key whose purl starts with the
    /// bytes `prefix` (any package whose purl starts so), epoch by epoch and in key order
    /// within one, scanning at most `max_keys` keys; false when it stopped there with keys
    /// left. Keys of entries not yet published may be among them: callers bound the indexes by
    /// a size they have seen published.
    pub fn scan_package_prefix(
        &self,
        prefix: &[u8],
        max_keys: usize,
        mut f: impl FnMut(&str, u64),
    ) -> Result<bool, StoreError> {
        let size = self.size();
        let epochs = self.inner.epochs;
        let mut scanned = 0usize;
        let mut iter = self.db().raw_iterator_cf(self.cf(CF_PACKAGES));
        for epoch in 0..epochs.count(size) {
            let mut start = Epochs::number(epoch)?.to_be_bytes().to_vec();
            start.extend_from_slice(prefix);
            iter.seek(&start);
            while let Some(k) = iter.key() {
                if !k.starts_with(&start) {
                    break;
                }
                if scanned >= max_keys {
                    return Ok(false);
                }
                scanned += 1;
                let (_, purl, low) = parse(k)
                    .ok_or_else(|| StoreError::Corrupt("malformed package index key".into()))?;
                let package = std::str::from_utf8(purl)
                    .map_err(|_| StoreError::Corrupt("package index key not UTF-8".into()))?;
                f(package, epochs.first(epoch) | u64::from(low));
                iter.next();
            }
            iter.status()?;
        }
        Ok(true)
    }
}
