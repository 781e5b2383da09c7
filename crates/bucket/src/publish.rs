//! Publishing (PROTOCOL.md §12.1): after each checkpoint, the bundles and tiles it covers that
//! the bucket lacks, then the checkpoint itself, so a reader of the bucket's checkpoint always
//! finds every tile it implies.
//!
//! Two publishers must not interleave in one bucket, and S3-compatible stores do not all honour
//! conditional writes (Garage ignores `If-None-Match` on PutObject). So before it writes
//! anything and again before the checkpoint, a publisher reads the bucket's checkpoint and goes
//! on only if it is one this log signed for a prefix of its own tree ([`Publisher::check`]).
//! That narrows a race between two publishers to the moments between the read and the write;
//! it does not close it, and PROTOCOL.md says so.

use crate::bucket::{Bucket, BucketError};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle::tiles::{self, Tile, TileKind};
use btlog_core::note::{Verifier, MAX_NOTE_BYTES};
use btlog_store::{Store, StoreError};
use flate2::write::GzEncoder;
use futures_util::{StreamExt as _, TryStreamExt as _};
use object_store::Attribute;
use std::io::Write as _;

/// Uploads in flight at once.
const CONCURRENCY: usize = 32;

/// Why a round of publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bucket holds what this log must not overwrite: another log's checkpoint, or one of
    /// this log's key for a tree this log does not have. Publishing stops until that changes.
    #[error("refusing to publish to {url}: {reason}")]
    Refused {
        /// The bucket.
        url: String,
        /// What is there.
        reason: String,
    },
    /// The bucket failed; the round can be retried.
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// The log's own store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint to publish is not one this log signed for its tree.
    #[error("checkpoint to publish: {0}")]
    Checkpoint(String),
}

/// What one round uploaded.
#[derive(Debug, Default)]
pub struct Published {
    /// The tree size whose checkpoint is now in the bucket.
    pub size: u64,
    /// Objects written, the checkpoint included.
    pub objects: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Partial tiles and bundles of the previous tree that wider ones replaced: to delete
    /// once readers of the previous checkpoint are done with them.
    pub replaced: Vec<Tile>,
}

/// Publishes one log's tiles to one bucket.
#[derive(Clone)]
pub struct Publisher {
    bucket: Bucket,
    store: Store,
    log: Verifier,
    gzip: bool,
}

impl Publisher {
    /// A publisher of the log in `store`, signed by `log`, to `bucket`; `gzip` stores entry
    /// bundles gzip-compressed with `Content-Encoding: gzip`.
    pub fn new(bucket: Bucket, store: Store, log: Verifier, gzip: bool) -> Publisher {
        Publisher {
            bucket,
            store,
            log,
            gzip,
        }
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The size of the bucket's checkpoint, None without one, after checking that it is a
    /// checkpoint this log signed for a prefix of its tree; anything else is
    /// [`PublishError::Refused`].
    pub async fn check(&self) -> Result<Option<u64>, PublishError> {
        let refuse = |reason: String| PublishError::Refused {
            url: self.bucket.url().to_owned(),
            reason,
        };
        let Some((note, _)) = self.bucket.get("checkpoint", MAX_NOTE_BYTES as u64).await? else {
            return Ok(None);
        };
        let (theirs, _) = Checkpoint::verify(&note, &self.log).map_err(|e| {
            refuse(format!(
                "its checkpoint is not one this log ({}) signed ({e}): another log publishes there",
                self.log.name()
            ))
        })?;
        let size = self.store.size();
        if theirs.size > size {
            return Err(refuse(format!(
                "its checkpoint is for tree size {}, larger than this log's {size}: another \
                 server publishes this log there, or this log lost entries (restore it from the \
                 bucket with `btlog restore`)",
                theirs.size
            )));
        }
        let store = self.store.clone();
        let ours = blocking(move || store.root(theirs.size)).await??;
        if ours != theirs.root {
            return Err(refuse(format!(
                "its checkpoint for tree size {} has another root than this log's tree: a \
                 fork of this log publishes there",
                theirs.size
            )));
        }
        Ok(Some(theirs.size))
    }

    /// Publishes the signed checkpoint `note` of this log: every bundle and tile its tree has
    /// that the tree of the bucket's checkpoint lacks (all of them without one), then, after
    /// checking the bucket again, the checkpoint. A bucket already holding a larger tree of
    /// this log is left as it is.
    pub async fn publish(&self, note: &str) -> Result<Published, PublishError> {
        let (checkpoint, _) = Checkpoint::verify(note.as_bytes(), &self.log)
            .map_err(|e| PublishError::Checkpoint(e.to_string()))?;
        let size = checkpoint.size;
        if size > self.store.size() {
            return Err(PublishError::Checkpoint(format!(
                "for tree size {size}, beyond the stored {}",
                self.store.size()
            )));
        }
        let from = self.check().await?.unwrap_or(0);
        if from > size {
            return Ok(Published {
                size: from,
                ..Published::default()
            });
        }
        let (objects, bytes) = futures_util::stream::iter(tiles::tiles_added(from, size))
            .map(|tile| self.upload(tile))
            .buffer_unordered(CONCURRENCY)
            .try_fold(
                (0u64, 0u64),
                |(n, b), len| async move { Ok((n + 1, b + len)) },
            )
            .await?;
        self.check().await?;
        self.bucket
            .put(
                "checkpoint",
                note.as_bytes().to_vec(),
                &[
                    (Attribute::ContentType, tiles::CHECKPOINT_CONTENT_TYPE),
                    (Attribute::CacheControl, tiles::CACHE_SHORT),
                ],
            )
            .await?;
        Ok(Published {
            size,
            objects: objects + 1,
            bytes: bytes + note.len() as u64,
            replaced: tiles::partials_replaced(from, size).collect(),
        })
    }

    /// Deletes replaced partial tiles and bundles.
    pub async fn delete(&self, replaced: &[Tile]) -> Result<(), PublishError> {
        let paths: Vec<String> = replaced.iter().map(Tile::path).collect();
        futures_util::stream::iter(paths)
            .map(|path| self.bucket.delete(path))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Reads one tile or bundle from the store and writes it to the bucket; returns its size.
    async fn upload(&self, tile: Tile) -> Result<u64, PublishError> {
        let store = self.store.clone();
        let gzip = self.gzip && tile.kind == TileKind::Entries;
        let data = blocking(move || -> Result<Vec<u8>, PublishError> {
            let data = match tile.kind {
                TileKind::Entries => store.entry_bundle(tile.index, tile.width)?,
                TileKind::Hashes { level } => store.hash_tile(level, tile.index, tile.width)?,
            }
            .ok_or_else(|| {
                PublishError::Store(StoreError::Corrupt(format!(
                    "{} is not in the store",
                    tile.path()
                )))
            })?;
            if !gzip {
                return Ok(data);
            }
            let mut z = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(&data)
                .and_then(|()| z.finish())
                .map_err(|e| PublishError::Store(StoreError::Corrupt(format!("gzip: {e}"))))
        })
        .await??;
        let len = data.len() as u64;
        let mut headers = vec![
            (Attribute::ContentType, tiles::TILE_CONTENT_TYPE),
            (Attribute::CacheControl, tile.cache_control()),
        ];
        if gzip {
            headers.push((Attribute::ContentEncoding, "gzip"));
        }
        self.bucket.put(&tile.path(), data, &headers).await?;
        Ok(len)
    }
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PublishError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| PublishError::Store(StoreError::Corrupt(format!("store task: {e}"))))
}
