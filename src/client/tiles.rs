//! The C2SP tlog-tiles read API (SPEC §4): the signed checkpoint, hash tiles and entry bundles
//! of any tlog-tiles log, fetched over [`Http`] and checked for shape. Nothing here trusts the
//! log: a checkpoint is returned only once its signature verifies, and tiles and bundles are only
//! checked for length and framing; the caller compares their contents against a signed root.

use std::collections::HashMap;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::merkle::tiles::{width_at, Tile, TileKind, TILE_HEIGHT, TILE_WIDTH};
use crate::merkle::{balanced_root, Hash, HashReader, NodeId, ProofError};
use crate::note::Verifier;

use super::{FetchError, Http};

/// Why reading a log through its tiles failed.
#[derive(Debug, thiserror::Error)]
pub enum TilesError {
    /// The transfer failed or the log answered with an error status.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The log does not serve a resource a served checkpoint implies.
    #[error("{0}: not found")]
    Missing(String),
    /// The checkpoint is malformed or its signature does not verify.
    #[error("checkpoint from {url}: {source}")]
    Checkpoint {
        /// Where it came from.
        url: String,
        /// What is wrong with it.
        source: CheckpointError,
    },
    /// A tile or bundle has the wrong shape.
    #[error("{path}: {reason}")]
    Malformed {
        /// The tile path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A hash needed for a proof is outside the fetched tiles or the tree.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// A hash needed for a proof was not fetched.
    #[error("hash at level {level} index {index} is not in the fetched tiles")]
    NotFetched {
        /// Merkle level.
        level: u8,
        /// Index in that level.
        index: u64,
    },
}

/// A checkpoint whose signature verified, with the signed note text exactly as served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed tree head.
    pub checkpoint: Checkpoint,
    /// The full signed note.
    pub note: String,
}

/// A tlog-tiles log at one base URL.
#[derive(Clone, Debug)]
pub struct TileClient {
    http: Http,
}

impl TileClient {
    /// A client for the log at `base`.
    pub fn new(base: &str) -> Result<TileClient, FetchError> {
        Ok(TileClient {
            http: Http::new(base)?,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.http.base()
    }

    /// Fetches `/checkpoint` and verifies it with the log's key.
    pub async fn checkpoint(&self, vkey: &Verifier) -> Result<SignedCheckpoint, TilesError> {
        let body = self.fetch("/checkpoint").await?;
        let (checkpoint, _) =
            Checkpoint::verify(&body, vkey).map_err(|source| TilesError::Checkpoint {
                url: self.http.url("/checkpoint"),
                source,
            })?;
        let note = String::from_utf8(body).map_err(|_| TilesError::Malformed {
            path: "checkpoint".into(),
            reason: "not UTF-8".into(),
        })?;
        Ok(SignedCheckpoint { checkpoint, note })
    }

    /// The hashes of tile `index` at `level` as it is in a tree of `size` leaves.
    pub async fn hash_tile(
        &self,
        level: u8,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, TilesError> {
        let tile = self.tile_at(TileKind::Hashes { level }, index, size)?;
        let data = self.fetch_tile(tile).await?;
        if data.len() != usize::from(tile.width) * 32 {
            return Err(malformed(
                &tile,
                format!(
                    "{} bytes, expected {}",
                    data.len(),
                    usize::from(tile.width) * 32
                ),
            ));
        }
        Ok(data
            .chunks_exact(32)
            .filter_map(|c| Hash::try_from(c).ok())
            .collect())
    }

    /// The entries of bundle `index` as it is in a tree of `size` leaves.
    pub async fn entry_bundle(&self, index: u64, size: u64) -> Result<Vec<Vec<u8>>, TilesError> {
        let tile = self.tile_at(TileKind::Entries, index, size)?;
        let data = self.fetch_tile(tile).await?;
        parse_bundle(&data, usize::from(tile.width)).map_err(|reason| malformed(&tile, reason))
    }

    fn tile_at(&self, kind: TileKind, index: u64, size: u64) -> Result<Tile, TilesError> {
        let level = match kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        };
        let width = width_at(level, index, size).ok_or(ProofError::IndexOutOfRange {
            index: index.saturating_mul(TILE_WIDTH),
            size,
        })?;
        Ok(Tile { kind, index, width })
    }

    /// Fetches a tile at its width; a partial tile that is gone (the tree grew past it) is
    /// read from the full tile instead, cut to the width.
    async fn fetch_tile(&self, tile: Tile) -> Result<Vec<u8>, TilesError> {
        if let Some(data) = self.http.get(&format!("/{}", tile.path())).await? {
            return Ok(data);
        }
        if tile.is_full() {
            return Err(TilesError::Missing(
                self.http.url(&format!("/{}", tile.path())),
            ));
        }
        let full = Tile {
            width: TILE_WIDTH as u16,
            ..tile
        };
        let data = self.fetch(&format!("/{}", full.path())).await?;
        match tile.kind {
            TileKind::Hashes { .. } => Ok(data
                .get(..usize::from(tile.width) * 32)
                .ok_or_else(|| malformed(&full, "full tile is short".into()))?
                .to_vec()),
            TileKind::Entries => {
                let end = bundle_prefix_len(&data, usize::from(tile.width))
                    .map_err(|reason| malformed(&full, reason))?;
                Ok(data[..end].to_vec())
            }
        }
    }

    async fn fetch(&self, path: &str) -> Result<Vec<u8>, TilesError> {
        self.http
            .get(path)
            .await?
            .ok_or_else(|| TilesError::Missing(self.http.url(path)))
    }
}

fn malformed(tile: &Tile, reason: String) -> TilesError {
    TilesError::Malformed {
        path: tile.path(),
        reason,
    }
}

/// Splits an entry bundle (big-endian u16 length-prefixed entries) that must hold exactly
/// `count` entries and nothing after them.
pub fn parse_bundle(data: &[u8], count: usize) -> Result<Vec<Vec<u8>>, String> {
    let mut entries = Vec::with_capacity(count);
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = match rest {
            [a, b, tail @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), tail),
            _ => return Err("truncated length prefix".into()),
        };
        let entry = tail
            .get(..len)
            .ok_or_else(|| format!("entry {} is truncated", entries.len()))?;
        entries.push(entry.to_vec());
        rest = &tail[len..];
    }
    if entries.len() != count {
        return Err(format!("{} entries, expected {count}", entries.len()));
    }
    Ok(entries)
}

/// The byte length of the first `count` entries of a bundle.
fn bundle_prefix_len(data: &[u8], count: usize) -> Result<usize, String> {
    let mut at = 0;
    for i in 0..count {
        let len = match data.get(at..at + 2) {
            Some([a, b]) => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return Err(format!("bundle has fewer than {count} entries")),
        };
        at += 2 + len;
        if at > data.len() {
            return Err(format!("entry {i} is truncated"));
        }
    }
    Ok(at)
}

/// Hash tiles of one tree size held in memory, read as a [`HashReader`] so the `merkle` proof
/// code can build roots and proofs from a log's tiles: [`TileHashes::tiles_for`] says which
/// tiles to fetch, [`TileHashes::fetch`] fetches them.
#[derive(Clone, Debug, Default)]
pub struct TileHashes {
    size: u64,
    tiles: HashMap<(u8, u64), Vec<Hash>>,
}

impl TileHashes {
    /// The (tile level, tile index) pairs holding the hashes of `nodes`.
    pub fn tiles_for(nodes: &[NodeId]) -> Vec<(u8, u64)> {
        let mut tiles: Vec<(u8, u64)> = nodes
            .iter()
            .map(|n| {
                let (level, rest) = (n.level / TILE_HEIGHT, n.level % TILE_HEIGHT);
                (level, (n.index << rest) / TILE_WIDTH)
            })
            .collect();
        tiles.sort_unstable();
        tiles.dedup();
        tiles
    }

    /// Fetches the tiles holding `nodes` in the tree of `size` leaves from `client`.
    pub async fn fetch(
        client: &TileClient,
        size: u64,
        nodes: &[NodeId],
    ) -> Result<TileHashes, TilesError> {
        let mut tiles = HashMap::new();
        for (level, index) in Self::tiles_for(nodes) {
            tiles.insert((level, index), client.hash_tile(level, index, size).await?);
        }
        Ok(TileHashes { size, tiles })
    }

    /// The hash of one complete subtree, from the tile row at or below its level.
    fn node(&self, n: NodeId) -> Result<Hash, TilesError> {
        let (level, rest) = (n.level / TILE_HEIGHT, n.level % TILE_HEIGHT);
        let first = n.index << rest;
        let count = 1u64 << rest;
        let (tile, at) = (first / TILE_WIDTH, (first % TILE_WIDTH) as usize);
        let not_fetched = TilesError::NotFetched {
            level: n.level,
            index: n.index,
        };
        let end = (n.index + 1).checked_shl(u32::from(n.level));
        if end.is_none_or(|end| end > self.size) {
            return Err(ProofError::IndexOutOfRange {
                index: n.index,
                size: self.size,
            }
            .into());
        }
        let row = self
            .tiles
            .get(&(level, tile))
            .and_then(|t| t.get(at..at + count as usize))
            .ok_or(not_fetched)?;
        Ok(balanced_root(row))
    }
}

impl HashReader for TileHashes {
    type Error = TilesError;

    fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, TilesError> {
        nodes.iter().map(|n| self.node(*n)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root, subtree_nodes};

    #[test]
    fn bundles_are_parsed_strictly() {
        let bundle = [0, 1, b'a', 0, 2, b'b', b'c'];
        assert_eq!(
            parse_bundle(&bundle, 2),
            Ok(vec![b"a".to_vec(), b"bc".to_vec()])
        );
        assert!(parse_bundle(&bundle, 3).is_err());
        assert!(parse_bundle(&bundle[..6], 2).is_err());
        assert!(parse_bundle(&[0, 1, b'a', 0], 1).is_err());
        assert_eq!(bundle_prefix_len(&bundle, 1), Ok(3));
        assert!(bundle_prefix_len(&bundle, 3).is_err());
    }

    #[test]
    fn tile_hashes_rebuild_roots() {
        let size = 600u64;
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tiles = HashMap::new();
        for (t, chunk) in leaves.chunks(256).enumerate() {
            tiles.insert((0u8, t as u64), chunk.to_vec());
        }
        tiles.insert(
            (1u8, 0u64),
            vec![
                balanced_root(&leaves[..256]),
                balanced_root(&leaves[256..512]),
            ],
        );
        let reader = TileHashes { size, tiles };
        let want = crate::merkle::fold(
            &subtree_nodes(0..size)
                .iter()
                .map(|n| {
                    let s = (n.index << n.level) as usize;
                    balanced_root(&leaves[s..s + (1 << n.level)])
                })
                .collect::<Vec<_>>(),
        );
        assert_eq!(root(size, &reader).ok(), Some(want));
        assert!(reader.read_hashes(&[NodeId::new(0, 600)]).is_err());
    }
}
