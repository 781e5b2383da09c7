//! Restoring a log from its bucket (PROTOCOL.md §12.2): the bucket's checkpoint, verified with
//! the log's key, and every entry bundle up to its size, each entry checked against the
//! bucket's level-0 hash tile, appended to an empty store that recomputes every tile and index
//! itself; the restored tree must then have the signed root. Nothing the bucket serves is
//! trusted: a bucket that does not verify restores nothing usable.

use crate::bucket::{Bucket, BucketError};
use btlog_core::bundle;
use btlog_core::checkpoint::Checkpoint;
use btlog_core::entry::{Entry, MAX_ENTRY_BYTES};
use btlog_core::merkle::tiles::{width_at, Tile, TileKind, TILE_WIDTH};
use btlog_core::merkle::Hash;
use btlog_core::note::{Verifier, MAX_NOTE_BYTES};
use btlog_store::{Appender, NewEntry, Store, StoreError};
use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use std::io::Read as _;

/// Bundles fetched ahead of the one being appended. Many: a store may answer each request late
/// (Garage's endpoints answer a request on a reused connection ~40 ms late), so throughput
/// comes from requests in flight (with 16, a 300k-entry restore from Garage took 1.73x the
/// time). A hostile bucket serving bundles of maximal entries (~16 MiB each) could make this
/// ~1 GiB; bounding it by bytes needs a reservation per response size, not yet done.
const READ_AHEAD: usize = 64;
/// Bundles appended per synced write, at most.
const BUNDLES_PER_WRITE: usize = 64;
/// Entry bytes appended per synced write, at most: with maximal entries, 64 bundles would be
/// 1 GiB in one write.
const BYTES_PER_WRITE: usize = 32 << 20;

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The bucket failed.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// The store being restored into failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket has no checkpoint.
    #[error("{0}/checkpoint: not found; nothing was published there")]
    NoCheckpoint(String),
    /// The bucket's checkpoint is not one the given key signed.
    #[error("{url}/checkpoint: {reason}")]
    Checkpoint {
        /// The bucket.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The store to restore into is not empty.
    #[error("the store to restore into already holds {0} entries")]
    NotEmpty(u64),
    /// A tile or bundle the checkpoint implies is missing.
    #[error("{0}: not found, but the bucket's checkpoint covers it")]
    Missing(String),
    /// What the bucket holds does not verify.
    #[error("{0}; nothing restored is usable")]
    Unverified(String),
}

/// A restored log.
#[derive(Debug)]
pub struct Restored {
    /// Its tree size.
    pub size: u64,
    /// The bucket's checkpoint, now the newest in the store.
    pub checkpoint: String,
}

/// Restores the log that `log` signs from `bucket` into the empty `store`, reporting
/// (entries restored, entries to restore) to `progress` after each write. On success the store
/// holds the tree of the bucket's checkpoint, that checkpoint, and the bucket as published up
/// to it.
pub async fn restore(
    bucket: &Bucket,
    store: &Store,
    log: &Verifier,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Restored, RestoreError> {
    let url = bucket.url();
    let (note, _) = bucket
        .get("checkpoint", MAX_NOTE_BYTES as u64)
        .await?
        .ok_or_else(|| RestoreError::NoCheckpoint(url.to_owned()))?;
    let (checkpoint, _) = Checkpoint::verify(&note, log).map_err(|e| RestoreError::Checkpoint {
        url: url.to_owned(),
        reason: format!("{e} (expected a checkpoint signed by {})", log.name()),
    })?;
    let note = String::from_utf8(note.to_vec()).map_err(|_| RestoreError::Checkpoint {
        url: url.to_owned(),
        reason: "not UTF-8".into(),
    })?;
    if store.size() != 0 {
        return Err(RestoreError::NotEmpty(store.size()));
    }
    let size = checkpoint.size;
    let mut appender = store.appender()?;
    let mut pending: Vec<NewEntry> = Vec::new();
    let mut bundles = futures_util::stream::iter(0..size.div_ceil(TILE_WIDTH))
        .map(|index| fetch_bundle(bucket, index, size))
        .buffered(READ_AHEAD);
    let (mut in_batch, mut batch_bytes) = (0, 0);
    while let Some((index, entries, leaves)) = bundles.try_next().await? {
        for (i, (data, leaf)) in entries.iter().zip(&leaves).enumerate() {
            let at = index * TILE_WIDTH + i as u64;
            let entry = Entry::parse(data)
                .map_err(|e| RestoreError::Unverified(format!("entry {at}: {e}")))?;
            let new = NewEntry::for_entry(&entry);
            if new.leaf_hash() != *leaf {
                return Err(RestoreError::Unverified(format!(
                    "entry {at} does not hash to its leaf in hash tile 0/{index}"
                )));
            }
            pending.push(new);
            batch_bytes += data.len();
        }
        in_batch += 1;
        if in_batch == BUNDLES_PER_WRITE || batch_bytes >= BYTES_PER_WRITE {
            appender = append(appender, std::mem::take(&mut pending)).await?;
            (in_batch, batch_bytes) = (0, 0);
            progress(appender.size(), size);
        }
    }
    appender = append(appender, pending).await?;
    progress(appender.size(), size);
    if appender.size() != size || appender.root()? != checkpoint.root {
        return Err(RestoreError::Unverified(format!(
            "the bucket's entries do not hash to the root its checkpoint signs for tree size \
             {size}"
        )));
    }
    appender.put_checkpoint(&note)?;
    store.set_published_size(url, size)?;
    Ok(Restored {
        size,
        checkpoint: note,
    })
}

/// Appends `entries` in one synced write, off the async threads (so fetching goes on).
async fn append(mut appender: Appender, entries: Vec<NewEntry>) -> Result<Appender, RestoreError> {
    if entries.is_empty() {
        return Ok(appender);
    }
    tokio::task::spawn_blocking(move || {
        let staged = appender.stage(&entries)?;
        appender.commit_restored(staged)?;
        Ok(appender)
    })
    .await
    .map_err(|e| RestoreError::Store(StoreError::Corrupt(format!("store task: {e}"))))?
}

/// Bundle `index` of the tree of `size` and its level-0 hash tile, checked for shape.
async fn fetch_bundle(
    bucket: &Bucket,
    index: u64,
    size: u64,
) -> Result<(u64, Vec<Vec<u8>>, Vec<Hash>), RestoreError> {
    let width = width_at(0, index, size)
        .ok_or_else(|| RestoreError::Unverified(format!("bundle {index} beyond the tree")))?;
    let bundle_tile = Tile {
        kind: TileKind::Entries,
        index,
        width,
    };
    let hash_tile = Tile {
        kind: TileKind::Hashes { level: 0 },
        ..bundle_tile
    };
    let (data, hashes) = futures_util::try_join!(
        fetch(bucket, bundle_tile, 2 + MAX_ENTRY_BYTES as u64),
        fetch(bucket, hash_tile, 32)
    )?;
    let entries = bundle::parse(&data, usize::from(width))
        .map_err(|e| RestoreError::Unverified(format!("{}: {e}", bundle_tile.path())))?
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    if hashes.len() != usize::from(width) * 32 {
        return Err(RestoreError::Unverified(format!(
            "{}: {} bytes, expected {}",
            hash_tile.path(),
            hashes.len(),
            usize::from(width) * 32
        )));
    }
    let leaves = hashes
        .chunks_exact(32)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect();
    Ok((index, entries, leaves))
}

/// A tile or bundle at its width: the partial object, or when a wider tree replaced it, the
/// full one cut to the width. `per_item` bounds each item's bytes.
async fn fetch(bucket: &Bucket, tile: Tile, per_item: u64) -> Result<Vec<u8>, RestoreError> {
    let limit = u64::from(tile.width) * per_item;
    if let Some(found) = bucket.get(&tile.path(), limit).await? {
        return decode(found, limit, &tile);
    }
    let full = Tile {
        width: TILE_WIDTH as u16,
        ..tile
    };
    let missing = || RestoreError::Missing(format!("{}/{}", bucket.url(), tile.path()));
    if tile.is_full() {
        return Err(missing());
    }
    let data = decode(
        bucket
            .get(&full.path(), TILE_WIDTH * per_item)
            .await?
            .ok_or_else(missing)?,
        TILE_WIDTH * per_item,
        &full,
    )?;
    let end = match tile.kind {
        TileKind::Entries => bundle::prefix_len(&data, usize::from(tile.width))
            .map_err(|e| RestoreError::Unverified(format!("{}: {e}", full.path())))?,
        TileKind::Hashes { .. } => usize::from(tile.width) * 32,
    };
    data.get(..end)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| RestoreError::Unverified(format!("{}: short", full.path())))
}

/// The object's bytes, un-gzipped (bounded by `limit`) when it is stored gzip-encoded and the
/// client did not already decode it.
fn decode((data, gzip): (Bytes, bool), limit: u64, tile: &Tile) -> Result<Vec<u8>, RestoreError> {
    if !(gzip && data.starts_with(&[0x1f, 0x8b])) {
        return Ok(data.to_vec());
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&data[..])
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| RestoreError::Unverified(format!("{}: gzip: {e}", tile.path())))?;
    if out.len() as u64 > limit {
        return Err(RestoreError::Unverified(format!(
            "{}: more than the {limit} bytes it can hold",
            tile.path()
        )));
    }
    Ok(out)
}
