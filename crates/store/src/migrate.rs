//! Upgrades of older on-disk layouts, run when [`Store::open`](super::Store::open) finds one.
//! Each step rewrites indexes into new column families, so two layouts never share one, and
//! ends by recording its layout in one synced write; a step cut short starts over.
//!
//! - Layout 1 keyed the leaf and digest indexes by the 8-byte hash prefix, then the big-endian
//!   u64 index, in the column families `leaves` and `digests`. Layout 2 keys them by epoch
//!   first ([`super::hash_index`]).
//! - Layouts 1 and 2 keyed the identity index by the 32-byte identity key alone, with the
//!   big-endian u64 index as value, in `identities`. Layout 3 keys it by epoch first and
//!   filters it ([`super::identity`]); the filters are built right after, in the same open.
//! - Layouts 1 to 3 keyed the package index by purl, 0x00, big-endian u64 index, in
//!   `packages`. Layout 4 keys it by epoch first and filters it ([`super::packages`]); the
//!   filters are built right after, in the same open.
//! - Layouts 1 to 4 kept every tile in the `tiles` column family. Layout 5 writes each tile
//!   that becomes full into a file of its tile level ([`super::tile_files`]); the upgrade
//!   moves nothing: it records the size from which full tiles are in the files.

use super::hash_index::{Epochs, PREFIX};
use super::{
    be_u64, cf, identity, meta_u64, packages, put_layout_synced, put_meta_synced, StoreError,
    CF_DIGESTS, CF_IDENTITIES, CF_LEAVES, CF_PACKAGES, CF_PACKAGE_FILTERS, FORMAT_VERSION,
    META_SIZE, META_TILE_FILES_FROM,
};
use rocksdb::{ColumnFamily, WriteBatch, DB};
use std::path::Path;

/// Layout 1's leaf index.
const V1_LEAVES: &str = "leaves";
/// Layout 1's digest index.
const V1_DIGESTS: &str = "digests";
/// Layouts 1 and 2's identity index.
const V2_IDENTITIES: &str = "identities";
/// Layouts 1 to 3's package index.
const V3_PACKAGES: &str = "packages";
/// Records rewritten per write.
const BATCH: usize = 100_000;

/// The column families of older layouts that this one replaced and the store in `dir` still
/// has (none for a new store): they must be opened to open the database, and are dropped once
/// the store is at this layout.
pub(crate) fn old_families(dir: &Path) -> Result<Vec<&'static str>, StoreError> {
    if !dir.join("CURRENT").exists() {
        return Ok(Vec::new());
    }
    let names = DB::list_cf(&rocksdb::Options::default(), dir)?;
    Ok([V1_LEAVES, V1_DIGESTS, V2_IDENTITIES, V3_PACKAGES]
        .into_iter()
        .filter(|v1| names.iter().any(|n| n == v1))
        .collect())
}

/// Upgrades a store of layout `from` (1 up to this build's), whose epochs are `epochs`, one
/// step at a time.
pub(crate) fn upgrade(db: &DB, from: u32, epochs: Epochs) -> Result<(), StoreError> {
    type Step = fn(&DB, Epochs) -> Result<(), StoreError>;
    // Step i upgrades layout i + 1.
    const STEPS: [Step; 4] = [from_v1, from_v2, from_v3, from_v4];
    const _: () = assert!(STEPS.len() + 1 == FORMAT_VERSION as usize);
    for layout in from..FORMAT_VERSION {
        let step = layout
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| STEPS.get(i))
            .ok_or_else(|| StoreError::Corrupt(format!("no upgrade from layout {layout}")))?;
        step(db, epochs)?;
    }
    Ok(())
}

/// Layout 1 → 2: rewrites the leaf and digest indexes under epoch-first keys, then records
/// layout 2 and the epoch size in one synced write. A run cut short leaves the store at
/// layout 1, and the next run starts by clearing what it had written.
fn from_v1(db: &DB, epochs: Epochs) -> Result<(), StoreError> {
    tracing::info!(
        epoch_bits = epochs.bits(),
        "upgrading the store's layout from 1 to 2"
    );
    for (old, new) in [(V1_LEAVES, CF_LEAVES), (V1_DIGESTS, CF_DIGESTS)] {
        let new = cf(db, new);
        clear(db, new)?;
        // Every layout 1 store has a leaf index; a digest index only if a build with it
        // opened the store (`digests_from` then says where it starts).
        let Some(old) = db.cf_handle(old) else {
            if old == V1_LEAVES {
                return Err(StoreError::Corrupt(
                    "layout 1 store without a leaf index".into(),
                ));
            }
            continue;
        };
        let rewritten = rewrite(db, old, new, |k, _| {
            let (prefix, index) = k
                .split_first_chunk::<PREFIX>()
                .filter(|(_, index)| index.len() == 8)
                .ok_or_else(|| StoreError::Corrupt("malformed layout 1 index key".into()))?;
            Ok((epochs.key(prefix, be_u64(index)?)?.to_vec(), Vec::new()))
        })?;
        tracing::info!(rewritten, "index rewritten");
    }
    completed(db, 2, epochs)
}

/// Layout 2 → 3: rewrites the identity index under epoch-first keys, then records layout 3.
fn from_v2(db: &DB, epochs: Epochs) -> Result<(), StoreError> {
    tracing::info!("upgrading the store's layout from 2 to 3");
    let new = cf(db, CF_IDENTITIES);
    clear(db, new)?;
    // A store created at layout 1 or 2 always has the family, empty or not.
    let old = db
        .cf_handle(V2_IDENTITIES)
        .ok_or_else(|| StoreError::Corrupt("layout 2 store without an identity index".into()))?;
    let rewritten = rewrite(db, old, new, |k, v| {
        let identity = <[u8; 32]>::try_from(k)
            .map_err(|_| StoreError::Corrupt("malformed layout 2 identity key".into()))?;
        let (key, low) = identity::record(epochs, &identity, be_u64(v)?)?;
        Ok((key.to_vec(), low.to_vec()))
    })?;
    tracing::info!(rewritten, "identity index rewritten");
    completed(db, 3, epochs)
}

/// Layout 3 → 4: rewrites the package index under epoch-first keys, then records layout 4.
fn from_v3(db: &DB, epochs: Epochs) -> Result<(), StoreError> {
    tracing::info!("upgrading the store's layout from 3 to 4");
    let new = cf(db, CF_PACKAGES);
    clear(db, new)?;
    // No filter is stored before the marker; were one there, it could hide keys.
    clear(db, cf(db, CF_PACKAGE_FILTERS))?;
    // A store created at layouts 1 to 3 always has the family, empty or not.
    let old = db
        .cf_handle(V3_PACKAGES)
        .ok_or_else(|| StoreError::Corrupt("layout 3 store without a package index".into()))?;
    let rewritten = rewrite(db, old, new, |k, _| {
        let malformed = || StoreError::Corrupt("malformed layout 3 package key".into());
        let (rest, index) = k.split_last_chunk::<8>().ok_or_else(malformed)?;
        let (0, purl) = rest.split_last().ok_or_else(malformed)? else {
            return Err(malformed());
        };
        let purl = std::str::from_utf8(purl).map_err(|_| malformed())?;
        Ok((
            packages::key(epochs, purl, u64::from_be_bytes(*index))?,
            Vec::new(),
        ))
    })?;
    tracing::info!(rewritten, "package index rewritten");
    completed(db, 4, epochs)
}

/// Layout 4 → 5: records the log's size as where the files of full tiles begin (the tiles
/// full at that size stay in the column family), then layout 5.
fn from_v4(db: &DB, epochs: Epochs) -> Result<(), StoreError> {
    let size = meta_u64(db, META_SIZE)?.unwrap_or(0);
    tracing::info!(size, "upgrading the store's layout from 4 to 5");
    put_meta_synced(db, META_TILE_FILES_FROM, &size.to_be_bytes())?;
    completed(db, 5, epochs)
}

/// Ends an upgrade step: the rewritten records are in the write-ahead log, which is synced
/// before the marker that says they are complete (`layout`, in one synced write).
fn completed(db: &DB, layout: u32, epochs: Epochs) -> Result<(), StoreError> {
    db.flush_wal(true)?;
    put_layout_synced(db, layout, epochs)
}

/// Deletes every record of `family`: what an upgrade cut short wrote into it.
fn clear(db: &DB, family: &ColumnFamily) -> Result<(), StoreError> {
    let mut iter = db.raw_iterator_cf(family);
    iter.seek_to_first();
    let first = iter.key().map(<[u8]>::to_vec);
    iter.seek_to_last();
    let last = iter.key().map(<[u8]>::to_vec);
    iter.status()?;
    if let (Some(first), Some(mut last)) = (first, last) {
        // The range's end is exclusive: one byte past the last key.
        last.push(0);
        db.delete_range_cf(family, first, last)?;
    }
    Ok(())
}

/// Writes into `new` the record `map` makes of each record of `old`, [`BATCH`] records a
/// write; returns how many.
fn rewrite(
    db: &DB,
    old: &ColumnFamily,
    new: &ColumnFamily,
    mut map: impl FnMut(&[u8], &[u8]) -> Result<(Vec<u8>, Vec<u8>), StoreError>,
) -> Result<u64, StoreError> {
    let mut batch = WriteBatch::default();
    let mut rewritten = 0u64;
    for item in db.iterator_cf(old, rocksdb::IteratorMode::Start) {
        let (k, v) = item?;
        let (key, value) = map(&k, &v)?;
        batch.put_cf(new, key, value);
        rewritten += 1;
        if batch.len() >= BATCH {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    db.write(batch)?;
    Ok(rewritten)
}
