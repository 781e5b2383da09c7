//! A blocked bloom filter: one 512-bit block a key (one cache line), seven bits set in it,
//! twelve bits of filter a key unless sized otherwise, for about 0.5% false positives (ten
//! bits gave ~1%, and cost a third more per new identity at 30M entries: BENCHMARKS.md,
//! "Fifth pass"; sixteen give ~0.1%, [`Bloom::with_bits`]). It answers
//! "certainly never inserted" with one cache-line read, whatever the number of keys; it never
//! says that of a key it holds.
//!
//! Used for the identity and package indexes of the log and of the monitor (one filter an
//! epoch, [`crate::epoch_filters`]). Keys end in a SHA-256 digest, whose last 16 bytes are
//! already uniform and are used as the filter's two hashes; shorter keys are hashed (in
//! memory only: that hash is not stable across Rust releases, so a stored filter's keys are
//! digests).
//! Words are atomic so that one writer may insert while readers look up, without a lock.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of filter per key a filter is sized for, unless sized otherwise.
pub const BITS_PER_KEY: u64 = 12;
/// Bits set per key, all in one block.
const PROBES: u32 = 7;
/// Bytes of a block, as stored filters lay them out.
const BLOCK_BYTES: usize = 64;
const _: () = assert!(std::mem::size_of::<Block>() == BLOCK_BYTES);

/// One block: a cache line, aligned as one, so that a probe touches one line, not two.
#[repr(C, align(64))]
#[derive(Default)]
struct Block([AtomicU64; 8]);

/// The filter; see the module docs.
pub struct Bloom {
    blocks: Box<[Block]>,
}

impl Bloom {
    /// An empty filter sized for `keys` keys at [`BITS_PER_KEY`], or None when that is more
    /// than `max_bytes`. More keys may be inserted; the false-positive rate then climbs.
    pub fn with_capacity(keys: u64, max_bytes: u64) -> Option<Bloom> {
        Bloom::with_bits(keys, BITS_PER_KEY, max_bytes)
    }

    /// As [`Bloom::with_capacity`], at `bits_per_key` bits of filter a key.
    pub fn with_bits(keys: u64, bits_per_key: u64, max_bytes: u64) -> Option<Bloom> {
        let bytes = keys.checked_mul(bits_per_key)?.div_ceil(8);
        if bytes > max_bytes {
            return None;
        }
        let blocks = usize::try_from(bytes.div_ceil(BLOCK_BYTES as u64).max(1)).ok()?;
        Some(Bloom {
            blocks: (0..blocks).map(|_| Block::default()).collect(),
        })
    }

    /// The filter [`Bloom::to_bytes`] wrote, or None if `bytes` is not whole blocks.
    pub fn from_bytes(bytes: &[u8]) -> Option<Bloom> {
        if bytes.is_empty() || !bytes.len().is_multiple_of(BLOCK_BYTES) {
            return None;
        }
        let words = bytes.chunks_exact(8).map(|w| {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            u64::from_le_bytes(b)
        });
        Some(Bloom::of_words(words))
    }

    /// A filter of the words `words`, eight a block (a multiple of eight of them).
    fn of_words(words: impl IntoIterator<Item = u64>) -> Bloom {
        let mut words = words.into_iter();
        let mut blocks = Vec::new();
        while let Some(first) = words.next() {
            let mut block = [first; 8];
            for w in &mut block[1..] {
                *w = words.next().unwrap_or(0);
            }
            blocks.push(Block(block.map(AtomicU64::new)));
        }
        Bloom {
            blocks: blocks.into(),
        }
    }

    /// The filter's words, in order.
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks
            .iter()
            .flat_map(|b| b.0.iter().map(|w| w.load(Ordering::Relaxed)))
    }

    /// The filter's bits, little-endian words.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words().flat_map(u64::to_le_bytes).collect()
    }

    /// Bytes of filter.
    pub fn byte_len(&self) -> usize {
        self.blocks.len() * BLOCK_BYTES
    }

    /// Adds `key`. A reader that learns of the insert through a synchronising event (a lock,
    /// a channel, an atomic with release/acquire) sees it.
    pub fn insert(&self, key: &[u8]) {
        self.insert_probe(&Probe::of(key));
    }

    /// As [`Bloom::insert`], for a key already hashed.
    pub fn insert_probe(&self, probe: &Probe) {
        for (word, mask) in self.block(probe).0.iter().zip(probe.masks) {
            if mask != 0 {
                word.fetch_or(mask, Ordering::Relaxed);
            }
        }
    }

    /// As [`Bloom::insert_probe`], into a filter no other thread holds yet (one being built):
    /// plain stores, so that the cache misses of consecutive inserts overlap, where each
    /// locked OR of [`Bloom::insert_probe`] waits for its own.
    pub fn insert_owned(&mut self, probe: &Probe) {
        let i = self.index(probe);
        for (word, mask) in self.blocks[i].0.iter_mut().zip(probe.masks) {
            *word.get_mut() |= mask;
        }
    }

    /// False when `key` was certainly never inserted.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_hold(&Probe::of(key))
    }

    /// As [`Bloom::may_contain`], for a key already hashed: one key asked of many filters is
    /// hashed once.
    pub fn may_hold(&self, probe: &Probe) -> bool {
        self.block(probe)
            .0
            .iter()
            .zip(probe.masks)
            .all(|(word, mask)| word.load(Ordering::Relaxed) & mask == mask)
    }

    /// Asks the CPU to bring `probe`'s block into its cache, so that a [`Bloom::may_hold`]
    /// of it a little later does not wait for memory. A hint only: it reads nothing.
    #[inline]
    pub fn prefetch(&self, probe: &Probe) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let block: *const Block = self.block(probe);
            // SAFETY: a prefetch neither reads into the program nor faults, whatever the
            // address; this one is of a block of this filter.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(block.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = probe;
    }

    /// This filter folded in half as often as it stays at most half set: the smallest that
    /// holds its keys at about the rate it was sized for (~1% false positives at half the bits
    /// set). A filter sized for more keys than it got, such as that of an epoch listing one
    /// package many times, shrinks so; a full one stays as it is, and then None is returned
    /// without a copy made.
    ///
    /// Folding ORs block 2j + 1 into block 2j: a key's block is ⌊h·n / 2^64⌋ of n blocks, and
    /// with n / 2 blocks it is ⌊h·(n/2) / 2^64⌋, half that rounded down, so every key
    /// inserted is still held. Only a filter of an even number of blocks folds.
    pub fn sealed(&self) -> Option<Bloom> {
        // Whether it folds once is read in place: a full filter, such as an epoch's identities,
        // does not, and is not copied.
        let blocks = &self.blocks;
        if !folds(blocks.len() * 8, |i| {
            blocks[i / 8].0[i % 8].load(Ordering::Relaxed)
        }) {
            return None;
        }
        let mut words: Vec<u64> = self.words().collect();
        loop {
            words = words
                .chunks_exact(16)
                .flat_map(|pair| {
                    let (a, b) = pair.split_at(8);
                    std::array::from_fn::<u64, 8, _>(|i| a[i] | b[i])
                })
                .collect();
            if !folds(words.len(), |i| words[i]) {
                return Some(Bloom::of_words(words));
            }
        }
    }

    /// Whether `bytes` could be this filter, sealed ([`Bloom::sealed`]): whole blocks, its
    /// size halved some number of times.
    pub fn could_seal_to(&self, bytes: usize) -> bool {
        bytes.is_multiple_of(BLOCK_BYTES)
            && bytes > 0
            && self.byte_len().is_multiple_of(bytes)
            && (self.byte_len() / bytes).is_power_of_two()
    }

    /// The block of `probe`'s key.
    fn block(&self, probe: &Probe) -> &Block {
        &self.blocks[self.index(probe)]
    }

    /// The position of `probe`'s block.
    fn index(&self, probe: &Probe) -> usize {
        // Multiply-shift maps the hash onto the blocks without a division's bias or cost.
        ((u128::from(probe.block_hash) * self.blocks.len() as u128) >> 64) as usize
    }
}

/// Whether a filter of `len` words (eight a block), word `i` read by `word(i)`, folds in half
/// ([`Bloom::sealed`]) and stays at most half set: an even number of blocks, and at most half
/// the bits of the folded filter set.
fn folds(len: usize, word: impl Fn(usize) -> u64) -> bool {
    let blocks = len / 8;
    if blocks == 0 || !blocks.is_multiple_of(2) {
        return false;
    }
    // Word w of block 2j + 1 is ORed into word w of block 2j.
    let set: u64 = (0..len / 2)
        .map(|i| {
            let (pair, w) = (i / 8, i % 8);
            u64::from((word(pair * 16 + w) | word(pair * 16 + 8 + w)).count_ones())
        })
        .sum();
    set * 2 <= (len / 2) as u64 * 64
}

/// A key hashed for the filters: which block (of any number) it falls in, and the bits it sets
/// there, as masks of the block's eight words.
#[derive(Clone, Copy)]
pub struct Probe {
    block_hash: u64,
    masks: [u64; 8],
}

/// The tags [`Probe::tagged`] tells apart.
pub const TAGS: u32 = 8;

impl Probe {
    /// `key`, hashed: a key of 16 bytes or more must end in a digest (see the module docs).
    pub fn of(key: &[u8]) -> Probe {
        let (h1, h2) = hashes(key);
        let mut masks = [0u64; 8];
        for i in 0..PROBES {
            let bit = (h2 >> (i * 9)) & 511;
            masks[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        Probe {
            block_hash: h1,
            masks,
        }
    }

    /// The same key under tag `tag` (below [`TAGS`]): the same block, each word's bits
    /// rotated by 8·`tag`. One filter then holds several sets, each under its own tag, and a
    /// key is asked of all of them in one cache line, each at the false-positive rate of a
    /// filter of its own (measured in the tests). Tag 0 is the key itself.
    pub fn tagged(&self, tag: u32) -> Probe {
        debug_assert!(tag < TAGS);
        Probe {
            block_hash: self.block_hash,
            masks: self.masks.map(|m| m.rotate_left(8 * tag)),
        }
    }
}

/// Two 64-bit hashes of `key`: the last 16 bytes of a key of at least 16 (they end in a
/// digest), a hash of a shorter one.
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
        /// No false negatives, for keys of any length, and none after a round trip through
        /// bytes.
        #[test]
        fn holds_every_key_inserted(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..200)) {
            let bloom = Bloom::with_capacity(keys.len() as u64, u64::MAX).unwrap();
            for k in &keys {
                bloom.insert(k);
            }
            let copy = Bloom::from_bytes(&bloom.to_bytes()).unwrap();
            for k in &keys {
                prop_assert!(bloom.may_contain(k));
                prop_assert!(copy.may_contain(k));
            }
        }
    }

    #[test]
    fn rules_out_most_keys_never_inserted() {
        let n = 100_000;
        // About 0.5% false positives at 12 bits a key and 0.1% at 16; the bounds leave room
        // for chance.
        for (bloom, bits, most) in [
            (
                Bloom::with_capacity(n, u64::MAX).unwrap(),
                BITS_PER_KEY,
                2_000,
            ),
            (Bloom::with_bits(n, 16, u64::MAX).unwrap(), 16, 250),
        ] {
            assert_eq!(bloom.byte_len() as u64, (n * bits / 8).div_ceil(64) * 64);
            for i in 0..n {
                bloom.insert(&key(i));
            }
            let false_positives = (n..2 * n).filter(|i| bloom.may_contain(&key(*i))).count();
            assert!(
                false_positives < most,
                "{false_positives} false positives in {n} at {bits} bits a key"
            );
        }
    }

    #[test]
    fn tags_hold_sets_apart_at_the_rate_of_filters_of_their_own() {
        // 8 sets of 20k keys under 8 tags in one filter of 16 bits a key, as a group of
        // epochs' identities: about 0.1% false positives a tag, for keys of another tag as
        // for keys of none; the bounds leave room for chance.
        let (n, tags) = (20_000u64, u64::from(TAGS));
        let bloom = Bloom::with_bits(n * tags, 16, u64::MAX).unwrap();
        let set_of = |i: u64| (i % tags) as u32;
        for i in 0..n * tags {
            bloom.insert_probe(&Probe::of(&key(i)).tagged(set_of(i)));
        }
        let (mut other_tags, mut absent) = (0, 0);
        for i in 0..n * tags {
            let probe = Probe::of(&key(i));
            assert!(bloom.may_hold(&probe.tagged(set_of(i))), "key {i} lost");
            other_tags += (0..TAGS)
                .filter(|t| *t != set_of(i) && bloom.may_hold(&probe.tagged(*t)))
                .count();
            let never = Probe::of(&key(i + n * tags));
            absent += (0..TAGS)
                .filter(|t| bloom.may_hold(&never.tagged(*t)))
                .count();
        }
        let asked = (n * tags * tags) as usize;
        assert!(other_tags * 1000 < asked * 2, "{other_tags} of {asked}");
        assert!(absent * 1000 < asked * 2, "{absent} of {asked}");
        assert_eq!(Probe::of(&key(1)).tagged(0).masks, Probe::of(&key(1)).masks);
    }

    #[test]
    fn sealing_folds_a_sparse_filter_and_keeps_its_keys() {
        let bloom = Bloom::with_capacity(1 << 14, u64::MAX).unwrap();
        for i in 0..1000 {
            bloom.insert(&key(i));
        }
        let sealed = bloom.sealed().expect("a sparse filter folds");
        // Sized for 16384 keys, holding 1000: folded at least 3 times (to 2048 keys' worth),
        // and not below half of 1000 keys' worth.
        assert!(
            sealed.byte_len() <= bloom.byte_len() / 8,
            "{}",
            sealed.byte_len()
        );
        assert!(sealed.byte_len() >= 1000 * BITS_PER_KEY as usize / 8 / 2);
        assert!(bloom.could_seal_to(sealed.byte_len()));
        assert!((0..1000).all(|i| sealed.may_contain(&key(i))));
        let false_positives = (1000..101_000)
            .filter(|i| sealed.may_contain(&key(*i)))
            .count();
        assert!(false_positives < 2_500, "{false_positives} in 100000");
        // A filter holding as many keys as it was sized for stays whole.
        let full = Bloom::with_capacity(1000, u64::MAX).unwrap();
        for i in 0..1000 {
            full.insert(&key(i));
        }
        assert!(full.sealed().is_none());
        // Halved k times, never by 3, nor to a part block, nor grown.
        let len = bloom.byte_len();
        assert!(bloom.could_seal_to(len));
        assert!(bloom.could_seal_to(len / 4));
        assert!(!bloom.could_seal_to(len / 3));
        assert!(!bloom.could_seal_to(len * 2));
        assert!(!bloom.could_seal_to(len / 4 + 32));
        assert!(!bloom.could_seal_to(0));
    }

    #[test]
    fn sizes_are_bounded_and_bytes_checked() {
        let bytes = 1000 * BITS_PER_KEY / 8;
        assert!(Bloom::with_capacity(1000, bytes).is_some());
        assert!(Bloom::with_capacity(1001, bytes).is_none());
        assert!(Bloom::with_capacity(u64::MAX, u64::MAX).is_none());
        assert!(Bloom::with_capacity(0, 64).is_some_and(|b| !b.may_contain(b"x")));
        assert!(Bloom::from_bytes(&[]).is_none());
        assert!(Bloom::from_bytes(&[0; 65]).is_none());
        assert!(Bloom::from_bytes(&[0; 128]).is_some_and(|b| b.byte_len() == 128));
    }
}
