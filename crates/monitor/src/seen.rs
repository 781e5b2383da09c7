//! A blocked bloom filter of the keys the monitor's index recorded, kept while the index is
//! built from empty (a new monitor catching up on a whole log).
//!
//! Most claims a catch-up checks are of identities never seen before. The index answers those
//! from its bloom filters, but through every level of its LSM tree, and the levels grow with
//! the log: at 10M entries the lookups were most of the audit task's time, and the catch-up
//! rate fell to 0.7 of its rate at 1M (BENCHMARKS.md, "Scale"). This filter answers "never
//! recorded" with one cache line, whatever the index's size; a key it may hold goes to the
//! index as before. It holds only what this process recorded, so it is built only when the
//! index starts empty, and sized for the log being caught up on.
//!
//! One 512-bit block a key (one cache line), seven bits in it, ten bits a key: about 1% false
//! positives, each costing only the lookup the filter would have saved.

use std::hash::{Hash, Hasher};

/// Bits of filter per key.
const BITS_PER_KEY: u64 = 10;
/// Bits set per key, all in one block.
const PROBES: u32 = 7;
/// The largest filter built: 64 MiB, about 54M keys. A larger log is caught up without one,
/// to keep the monitor's memory bounded.
pub const MAX_BYTES: u64 = 64 << 20;

/// The filter; see the module docs.
pub struct Seen {
    blocks: Vec<[u64; 8]>,
    keys: u64,
    capacity: u64,
}

impl Seen {
    /// A filter for `capacity` keys, or None when that would take more than [`MAX_BYTES`].
    pub fn with_capacity(capacity: u64) -> Option<Seen> {
        let bits = capacity.checked_mul(BITS_PER_KEY)?;
        if bits / 8 > MAX_BYTES {
            return None;
        }
        let blocks = usize::try_from(bits.div_ceil(512).max(1)).ok()?;
        Some(Seen {
            blocks: vec![[0; 8]; blocks],
            keys: 0,
            capacity,
        })
    }

    /// Adds `key`; false (and nothing added) when the filter is full, after which its false
    /// positive rate would climb: the caller then stops using it.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        if self.keys >= self.capacity {
            return false;
        }
        let (block, bits) = self.locate(key);
        for (word, mask) in self.blocks[block].iter_mut().zip(bits) {
            *word |= mask;
        }
        self.keys += 1;
        true
    }

    /// False when `key` was certainly never inserted.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let (block, bits) = self.locate(key);
        self.blocks[block]
            .iter()
            .zip(bits)
            .all(|(word, mask)| word & mask == mask)
    }

    /// Keys inserted.
    pub fn len(&self) -> u64 {
        self.keys
    }

    /// The block of `key` and the bits it sets there, as masks of the block's eight words.
    fn locate(&self, key: &[u8]) -> (usize, [u64; 8]) {
        let (h1, h2) = hashes(key);
        // Multiply-shift maps h1 onto the blocks without a division's bias or cost.
        let block = ((u128::from(h1) * self.blocks.len() as u128) >> 64) as usize;
        let mut bits = [0u64; 8];
        for i in 0..PROBES {
            let bit = (h2 >> (i * 9)) & 511;
            bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        (block, bits)
    }
}

/// Two 64-bit hashes of `key`. The index's keys end in a SHA-256 digest, whose last 16 bytes
/// are already uniform; shorter keys (none today) are hashed.
fn hashes(key: &[u8]) -> (u64, u64) {
    match key.len().checked_sub(16).map(|s| &key[s..]) {
        Some(tail) => {
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(&tail[..8]);
            b.copy_from_slice(&tail[8..]);
            (u64::from_le_bytes(a), u64::from_le_bytes(b))
        }
        None => {
            let hash = |seed: u8| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (seed, key).hash(&mut h);
                h.finish()
            };
            (hash(1), hash(2))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    fn key(i: u64) -> Vec<u8> {
        [b"i".as_slice(), &Sha256::digest(i.to_be_bytes())].concat()
    }

    proptest! {
        /// No false negatives, for keys of any length.
        #[test]
        fn holds_every_key_inserted(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..200)) {
            let mut seen = Seen::with_capacity(keys.len() as u64).unwrap();
            for k in &keys {
                prop_assert!(seen.insert(k));
            }
            for k in &keys {
                prop_assert!(seen.may_contain(k));
            }
        }
    }

    #[test]
    fn rules_out_most_keys_never_inserted_and_stops_when_full() {
        let n = 100_000;
        let mut seen = Seen::with_capacity(n).unwrap();
        for i in 0..n {
            assert!(seen.insert(&key(i)));
        }
        assert!(!seen.insert(&key(n)), "full at its capacity");
        assert_eq!(seen.len(), n);
        let false_positives = (n..2 * n).filter(|i| seen.may_contain(&key(*i))).count();
        // About 1% at 10 bits a key; 2% leaves room for chance.
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in {n}"
        );
    }

    #[test]
    fn refuses_a_filter_beyond_its_memory_bound() {
        assert!(Seen::with_capacity(MAX_BYTES * 8 / BITS_PER_KEY).is_some());
        assert!(Seen::with_capacity(MAX_BYTES * 8 / BITS_PER_KEY + 1000).is_none());
        assert!(Seen::with_capacity(u64::MAX).is_none());
        assert!(Seen::with_capacity(0).is_some_and(|s| !s.may_contain(b"x")));
    }
}
