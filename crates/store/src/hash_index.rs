//! The leaf and digest indexes: a short hash prefix → the indexes of the entries with that
//! hash, partitioned into epochs of the log.
//!
//! A key is the epoch (`index >> bits`, big-endian u32), the first [`PREFIX`] bytes of the
//! hash, and the index's low `bits` bits (big-endian u32); the value is empty. Keys are
//! 16 bytes, as long as the first layout's (prefix and full index).
//!
//! Why epochs: hashes are random, so in one key space every compaction that moves new records
//! down a level rewrites all the older records there, and each level the index grows adds one
//! more rewrite of every record (issue 18: these two indexes took a third of the compaction of
//! a 30M-entry series). With the epoch first, new records sort after every older epoch's:
//! compactions stay inside the newest epoch, and a full epoch's tables move down the levels
//! without being rewritten. The cost moves to reads, which seek once per epoch: a lookup by
//! hash in a log of `n` entries makes `n >> bits` seeks (30 at 30M with the default 2^20
//! entries an epoch). Those reads (proof by leaf hash, search by artifact digest) are the
//! rare ones; the append path never reads these indexes. The identity index is partitioned
//! into the same epochs ([`crate::identity`]).

use super::StoreError;
use btlog_core::merkle::Hash;
use rocksdb::{ColumnFamily, DB};

/// Bytes of the hash in a key.
pub(crate) const PREFIX: usize = 8;
/// Bytes of a key.
pub(crate) const KEY_LEN: usize = 4 + PREFIX + 4;
/// Epoch size of a store created by this build: 2^20 entries. Larger epochs make lookups
/// cheaper and appends dearer; within an epoch the index costs what the first million entries
/// of the log cost.
pub const DEFAULT_BITS: u8 = 20;

/// The epoch size of one store, as a power of two (1..=32 bits; see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epochs {
    bits: u8,
}

impl Epochs {
    /// Epochs of 2^`bits` entries, if `bits` is in 1..=32.
    pub fn new(bits: u8) -> Option<Epochs> {
        (1..=32).contains(&bits).then_some(Epochs { bits })
    }

    pub fn bits(self) -> u8 {
        self.bits
    }

    /// The epoch of the entry at `index`.
    pub fn epoch(self, index: u64) -> u64 {
        index >> self.bits
    }

    /// How many epochs hold the entries of a log of `size` entries (the last one maybe in
    /// part).
    pub fn count(self, size: u64) -> u64 {
        size.div_ceil(1u64 << self.bits)
    }

    /// The first index of `epoch`.
    pub fn first(self, epoch: u64) -> u64 {
        epoch << self.bits
    }

    /// The epoch of the entry at `index` and its place in it, as they are written in keys;
    /// an error past the last epoch a key can name (2^(32 + bits) entries).
    pub fn split(self, index: u64) -> Result<(u32, u32), StoreError> {
        let epoch = Epochs::number(self.epoch(index))?;
        Ok((epoch, (index & ((1u64 << self.bits) - 1)) as u32))
    }

    /// `epoch` as keys write it; an error past the last one they can name.
    pub fn number(epoch: u64) -> Result<u32, StoreError> {
        u32::try_from(epoch).map_err(|_| {
            StoreError::Corrupt(format!(
                "epoch {epoch} is past the last epoch of the indexes"
            ))
        })
    }

    /// The key of the entry at `index` whose hash starts with `prefix`; an error past the
    /// last epoch a key can name.
    pub(crate) fn key(
        self,
        prefix: &[u8; PREFIX],
        index: u64,
    ) -> Result<[u8; KEY_LEN], StoreError> {
        let (epoch, low) = self.split(index)?;
        let mut k = [0u8; KEY_LEN];
        k[..4].copy_from_slice(&epoch.to_be_bytes());
        k[4..4 + PREFIX].copy_from_slice(prefix);
        k[4 + PREFIX..].copy_from_slice(&low.to_be_bytes());
        Ok(k)
    }

    /// Calls `f` with every index in `from..size` whose hash starts with `hash`'s prefix, in
    /// log order, while `f` returns true: one seek per epoch of that range.
    pub(crate) fn scan(
        self,
        db: &DB,
        cf: &ColumnFamily,
        hash: &Hash,
        from: u64,
        size: u64,
        mut f: impl FnMut(u64) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if from >= size {
            return Ok(());
        }
        let prefix = prefix_of(hash);
        let mut iter = db.raw_iterator_cf(cf);
        for epoch in self.epoch(from)..self.count(size) {
            let start = self.key(&prefix, self.first(epoch))?;
            iter.seek(start);
            while let Some(k) = iter.key() {
                if k.len() != KEY_LEN || k[..4 + PREFIX] != start[..4 + PREFIX] {
                    break;
                }
                let mut low = [0u8; 4];
                low.copy_from_slice(&k[4 + PREFIX..]);
                let index = self.first(epoch) | u64::from(u32::from_be_bytes(low));
                if index >= size {
                    return Ok(());
                }
                if index >= from && !f(index)? {
                    return Ok(());
                }
                iter.next();
            }
            iter.status()?;
        }
        Ok(())
    }
}

/// The first [`PREFIX`] bytes of `hash`.
pub(crate) fn prefix_of(hash: &Hash) -> [u8; PREFIX] {
    let mut p = [0u8; PREFIX];
    p.copy_from_slice(&hash[..PREFIX]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_epoch_then_prefix_then_index() {
        let e = Epochs::new(4).unwrap();
        let (a, b) = ([0xffu8; PREFIX], [0u8; PREFIX]);
        // A later epoch sorts after every key of an earlier one, whatever the hash.
        assert!(e.key(&a, 15).unwrap() < e.key(&b, 16).unwrap());
        assert!(e.key(&b, 16).unwrap() < e.key(&b, 17).unwrap());
        assert!(e.key(&b, 17).unwrap() < e.key(&a, 16).unwrap());
        let k = e.key(&a, (7 << 4) | 9).unwrap();
        assert_eq!(&k[..4], &7u32.to_be_bytes());
        assert_eq!(&k[12..], &9u32.to_be_bytes());
    }

    #[test]
    fn bits_and_epochs_are_bounded() {
        assert!(Epochs::new(0).is_none());
        assert!(Epochs::new(33).is_none());
        let e = Epochs::new(32).unwrap();
        assert!(e.key(&[0; PREFIX], u64::MAX).is_ok());
        let e = Epochs::new(1).unwrap();
        assert!(e.key(&[0; PREFIX], 1 << 33).is_err());
        assert!(e.key(&[0; PREFIX], (1 << 33) - 1).is_ok());
    }

    #[test]
    fn epochs_holding_a_log_are_counted_with_the_partial_one() {
        let e = Epochs::new(4).unwrap();
        assert_eq!(
            [0, 1, 16, 17, 32, 33].map(|n| e.count(n)),
            [0, 1, 1, 2, 2, 3]
        );
        assert_eq!(Epochs::new(32).unwrap().count(u64::MAX), 1 << 32);
    }
}
