//! A bloom filter of the keys the monitor's index recorded, kept while the index is built from
//! empty (a new monitor catching up on a whole log).
//!
//! Most claims a catch-up checks are of identities never seen before. The index answers those
//! from its bloom filters, but through every level of its LSM tree, and the levels grow with
//! the log: at 10M entries the lookups were most of the audit task's time, and the catch-up
//! rate fell to 0.7 of its rate at 1M (BENCHMARKS.md, "Scale"). This filter
//! ([`btlog_store::bloom`]) answers "never recorded" with one cache line, whatever the index's
//! size; a key it may hold goes to the index as before. It holds only what this process
//! recorded, so it is built only when the index starts empty, and sized for the log being
//! caught up on; once that many keys are in it, it is dropped, since its false-positive rate
//! would climb.

use btlog_store::bloom::Bloom;

/// The largest filter built: 64 MiB, about 54M keys. A larger log is caught up without one,
/// to keep the monitor's memory bounded.
pub const MAX_BYTES: u64 = 64 << 20;

/// The filter and how many more keys it takes; see the module docs.
pub struct Seen {
    bloom: Bloom,
    keys: u64,
    capacity: u64,
}

impl Seen {
    /// A filter for `capacity` keys, or None when that would take more than [`MAX_BYTES`].
    pub fn with_capacity(capacity: u64) -> Option<Seen> {
        Some(Seen {
            bloom: Bloom::with_capacity(capacity, MAX_BYTES)?,
            keys: 0,
            capacity,
        })
    }

    /// Adds `key`; false (and nothing added) when the filter is full: the caller then stops
    /// using it.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        if self.keys >= self.capacity {
            return false;
        }
        self.bloom.insert(key);
        self.keys += 1;
        true
    }

    /// False when `key` was certainly never inserted.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.bloom.may_contain(key)
    }

    /// Keys inserted.
    pub fn len(&self) -> u64 {
        self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btlog_store::bloom::BITS_PER_KEY;

    #[test]
    fn stops_when_full() {
        let mut seen = Seen::with_capacity(3).unwrap();
        for k in [b"a", b"b", b"c"] {
            assert!(seen.insert(k));
        }
        assert!(!seen.insert(b"d"), "full at its capacity");
        assert_eq!(seen.len(), 3);
        assert!(seen.may_contain(b"a"));
    }

    #[test]
    fn refuses_a_filter_beyond_its_memory_bound() {
        assert!(Seen::with_capacity(MAX_BYTES * 8 / BITS_PER_KEY).is_some());
        assert!(Seen::with_capacity(MAX_BYTES * 8 / BITS_PER_KEY + 1000).is_none());
        assert!(Seen::with_capacity(u64::MAX).is_none());
    }
}
