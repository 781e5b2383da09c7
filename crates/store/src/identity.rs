//! The identity index: identity key → index of the entry that claimed it, partitioned into the
//! epochs of the log ([`Epochs`]), with one bloom filter an epoch held in memory.
//!
//! A key is the epoch (big-endian u32) then the 32-byte identity key; the value is the index's
//! low bits (big-endian u32). A stored filter's key is its epoch alone.
//!
//! Why epochs: identity keys are hashes, so in one key space every compaction that moves new
//! records down a level rewrites all older records there; over a 30M-entry series this index
//! alone took 157 s of compaction, 603 bytes written per entry, growing with the log (issue 18,
//! BENCHMARKS.md "Scale"). With the epoch first, compactions stay inside the newest epoch, as
//! in the leaf index ([`crate::hash_index`]).
//!
//! Every append looks its identities up, and nearly all are new: one filter an epoch, and one
//! in memory for each group of 8 full epochs ([`crate::epoch_filters`]), send a lookup only to
//! the epochs that may hold the identity. The
//! filters' keys are the identity keys, whose last 16 bytes (SHA-256 output) are their hashes,
//! unseeded: a registry grinding names into one filter block only raises that block's false
//! positives, which cost reads, never a missed identity.

use super::bloom::Probe;
use super::epoch_filters::{self, EpochFilters, Family};
use super::hash_index::Epochs;
use super::{be_u32, StoreError};
use btlog_core::merkle::Hash;
use rocksdb::{ColumnFamily, DB};

/// Bytes of a key: the epoch and the identity key.
pub(crate) const KEY_LEN: usize = 4 + 32;

/// Bits of filter an identity: 16, for ~0.1% false positives where 12 bits give ~0.5%. Every
/// append asks every epoch (its filter, or its group's) for each new identity, and each false
/// positive is a read
/// of an old epoch's table: at 30M entries, 29 filters at 12 bits sent about one new identity
/// in eight to such a read, ~11 µs each. The 4 bits more cost 0.5 MiB an epoch (60 MiB of
/// filters at 30M entries instead of 45).
pub const BITS_PER_KEY: u64 = 16;

/// The identity index's filters: keyed by the identity key.
pub(crate) static FAMILY: Family = Family {
    name: "identity",
    bits_per_key: BITS_PER_KEY,
    probe_of_record: epoch_filters::digest_record_probe,
    group: epoch_filters::IDENTITY_GROUP,
};

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

/// The index of the entry that claimed each of `identities`, if any: the epochs whose filter
/// may hold it are read, newest first, all in one batched lookup.
pub(crate) fn lookup(
    filters: &EpochFilters,
    epochs: Epochs,
    db: &DB,
    index: &ColumnFamily,
    identities: &[Hash],
) -> Result<Vec<Option<u64>>, StoreError> {
    let probes: Vec<Probe> = identities.iter().map(|id| Probe::of(id)).collect();
    let owners = filters.holding_each(&probes);
    let keys = owners
        .iter()
        .map(|(i, epoch)| Ok(key(Epochs::number(*epoch)?, &identities[*i])))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut found = vec![None; identities.len()];
    for ((i, epoch), value) in owners
        .into_iter()
        .zip(db.batched_multi_get_cf(index, &keys, false))
    {
        if found[i].is_none() {
            if let Some(low) = value? {
                found[i] = Some(epochs.first(epoch) | u64::from(be_u32(&low)?));
            }
        }
    }
    Ok(found)
}
