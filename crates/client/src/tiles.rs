//! The C2SP tlog-tiles read API (PROTOCOL.md §4): the signed checkpoint, hash tiles and entry bundles
//! of any tlog-tiles log, fetched over [`Http`] and checked for shape. Nothing here trusts the
//! log: a checkpoint is returned only once its signature verifies, and tiles and bundles are only
//! checked for length and framing; the caller compares their contents against a signed root.

use std::collections::{BTreeSet, HashMap};

use btlog_core::bundle;
use btlog_core::checkpoint::{Checkpoint, CheckpointError};
use btlog_core::entry::MAX_ENTRY_BYTES;
use btlog_core::merkle::tiles::{self, width_at, Tile, TileKind, MAX_LEVEL, TILE_WIDTH};
use btlog_core::merkle::{
    balanced_root, consistency_plan, consistency_proof, inclusion_plan, inclusion_proof, root,
    subtree_nodes, verify_consistency, Hash, HashReader, NodeId, ProofError,
};
use btlog_core::note::{Verifier, MAX_NOTE_BYTES};

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
    /// Fetched tiles do not hash to the signed root: the log served a forged hash.
    #[error("tiles do not match the signed tree: {0}")]
    Unverified(String),
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
        let body = self.fetch("/checkpoint", MAX_NOTE_BYTES).await?;
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
        let entries = bundle::parse(&data, usize::from(tile.width))
            .map_err(|e| malformed(&tile, e.to_string()))?;
        Ok(entries.into_iter().map(<[u8]>::to_vec).collect())
    }

    /// Entry `index` of the tree of `size` leaves, from its entry bundle (unverified: the
    /// caller checks it against the signed root, e.g. with [`tile_inclusion_proof`]).
    pub async fn entry(&self, index: u64, size: u64) -> Result<Vec<u8>, TilesError> {
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size }.into());
        }
        let bundle = index / TILE_WIDTH;
        let mut entries = self.entry_bundle(bundle, size).await?;
        let at = (index % TILE_WIDTH) as usize;
        if at >= entries.len() {
            let tile = self.tile_at(TileKind::Entries, bundle, size)?;
            return Err(malformed(&tile, format!("no entry {index} in the bundle")));
        }
        Ok(entries.swap_remove(at))
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
    /// read from the full tile instead, cut to the width. A body longer than the tile can be
    /// ([`max_tile_bytes`]) is malformed, and is not read past that length.
    async fn fetch_tile(&self, tile: Tile) -> Result<Vec<u8>, TilesError> {
        let path = format!("/{}", tile.path());
        if let Some(data) = self
            .capped(self.http.get_limited(&path, max_tile_bytes(&tile)), &tile)
            .await?
        {
            return Ok(data);
        }
        if tile.is_full() {
            return Err(TilesError::Missing(self.http.url(&path)));
        }
        let full = Tile {
            width: TILE_WIDTH as u16,
            ..tile
        };
        let path = format!("/{}", full.path());
        let data = self
            .capped(self.http.get_limited(&path, max_tile_bytes(&full)), &full)
            .await?
            .ok_or_else(|| TilesError::Missing(self.http.url(&path)))?;
        match tile.kind {
            TileKind::Hashes { .. } => Ok(data
                .get(..usize::from(tile.width) * 32)
                .ok_or_else(|| malformed(&full, "full tile is short".into()))?
                .to_vec()),
            TileKind::Entries => {
                let end = bundle::prefix_len(&data, usize::from(tile.width))
                    .map_err(|e| malformed(&full, e.to_string()))?;
                Ok(data[..end].to_vec())
            }
        }
    }

    /// The result of fetching `tile`, a body over its cap being malformed.
    async fn capped(
        &self,
        fetched: impl std::future::Future<Output = Result<Option<Vec<u8>>, FetchError>>,
        tile: &Tile,
    ) -> Result<Option<Vec<u8>>, TilesError> {
        match fetched.await {
            Err(FetchError::TooLarge { limit, .. }) => Err(malformed(
                tile,
                format!("too large: more than the {limit} bytes a tile of its width can be"),
            )),
            other => Ok(other?),
        }
    }

    async fn fetch(&self, path: &str, limit: usize) -> Result<Vec<u8>, TilesError> {
        self.http
            .get_limited(path, limit)
            .await?
            .ok_or_else(|| TilesError::Missing(self.http.url(path)))
    }
}

/// The most bytes `tile` can hold (tlog-tiles): 32 per hash, or per entry its two-byte length
/// and at most [`MAX_ENTRY_BYTES`] (a full bundle: 256 × 65,537 bytes, about 16 MiB).
pub fn max_tile_bytes(tile: &Tile) -> usize {
    let per_item = match tile.kind {
        TileKind::Hashes { .. } => 32,
        TileKind::Entries => 2 + MAX_ENTRY_BYTES,
    };
    usize::from(tile.width) * per_item
}

fn malformed(tile: &Tile, reason: String) -> TilesError {
    TilesError::Malformed {
        path: tile.path(),
        reason,
    }
}

/// The root at size `m` of the signed tree `big` (size ≥ `m`), with an RFC 6962 consistency
/// proof (§2.1.2) from it to `big`'s root, built from `client`'s hash tiles checked against that
/// root ([`TileHashes`]), never from a server-made proof. The proof is verified here, so the
/// root is what the signed tree `big` holds at size `m`: when it differs from a signed
/// checkpoint of size `m`, the two checkpoints are evidence of a fork.
pub async fn prefix_proof(
    client: &TileClient,
    m: u64,
    big: &Checkpoint,
) -> Result<(Hash, Vec<Hash>), TilesError> {
    let n = big.size;
    let mut nodes = subtree_nodes(0..m);
    for range in consistency_plan(m, n)? {
        nodes.extend(subtree_nodes(range));
    }
    let tiles = TileHashes::fetch(client, big, &nodes).await?;
    let prefix = root(m, &tiles)?;
    let proof = consistency_proof(m, n, &tiles)?;
    verify_consistency(m, n, &proof, &prefix, &big.root)?;
    Ok((prefix, proof))
}

/// The RFC 6962 inclusion proof (§2.1.1) of leaf `index` in the signed tree `big`, built from
/// `client`'s hash tiles checked against its root ([`TileHashes`]), never from a server-made
/// proof. The caller verifies it with the entry's leaf hash (e.g. [`TlogProof::verify_offline`]).
///
/// [`TlogProof::verify_offline`]: btlog_core::proof_bundle::TlogProof::verify_offline
pub async fn tile_inclusion_proof(
    client: &TileClient,
    index: u64,
    big: &Checkpoint,
) -> Result<Vec<Hash>, TilesError> {
    let nodes: Vec<NodeId> = inclusion_plan(index, big.size)?
        .into_iter()
        .flat_map(subtree_nodes)
        .collect();
    let tiles = TileHashes::fetch(client, big, &nodes).await?;
    inclusion_proof(index, big.size, &tiles)
}

/// Hash tiles of one signed tree held in memory, read as a [`HashReader`] so the `merkle`
/// proof code can build roots and proofs from a log's tiles.
///
/// As Go's `sumdb/tlog` tile reader, it answers only from tiles checked against the signed
/// root: [`TileHashes::new`] also holds the parent of every full tile (up to a partial one)
/// and the right-edge tiles, and checks that each full tile hashes to its entry in its parent
/// and that the right edge folds to the root. A log that serves one forged hash is caught
/// there, before any proof is built from it.
#[derive(Clone, Debug, Default)]
pub struct TileHashes {
    size: u64,
    tiles: HashMap<(u8, u64), Vec<Hash>>,
}

impl TileHashes {
    /// The (tile level, tile index) of every tile needed to read `nodes` from a tree of `size`
    /// leaves and to check them against its root.
    pub fn tiles_for(size: u64, nodes: &[NodeId]) -> BTreeSet<(u8, u64)> {
        let mut tiles = BTreeSet::new();
        let edge = subtree_nodes(0..size);
        let mut next: Vec<(u8, u64)> = nodes
            .iter()
            .chain(&edge)
            .map(|n| tiles::locate(*n))
            .map(|t| (t.level, t.index))
            .collect();
        while let Some((level, index)) = next.pop() {
            let full = width_at(level, index, size) == Some(TILE_WIDTH as u16);
            if tiles.insert((level, index)) && full && level < MAX_LEVEL {
                next.push((level + 1, index / TILE_WIDTH));
            }
        }
        tiles
    }

    /// Checks fetched `tiles` (tile level, tile index → hashes) of the tree of `checkpoint`,
    /// which must include [`TileHashes::tiles_for`] the nodes the caller will read.
    pub fn new(
        checkpoint: &Checkpoint,
        tiles: HashMap<(u8, u64), Vec<Hash>>,
    ) -> Result<TileHashes, TilesError> {
        let hashes = TileHashes {
            size: checkpoint.size,
            tiles,
        };
        for (&(level, index), row) in &hashes.tiles {
            if row.len() as u64 != TILE_WIDTH || level >= MAX_LEVEL {
                continue;
            }
            let parent = hashes.tiles.get(&(level + 1, index / TILE_WIDTH));
            let expected = parent.and_then(|p| p.get((index % TILE_WIDTH) as usize));
            if expected != Some(&balanced_root(row)) {
                return Err(TilesError::Unverified(format!(
                    "tile {level}/{index} does not hash to its entry in tile {}/{}",
                    level + 1,
                    index / TILE_WIDTH
                )));
            }
        }
        if root(hashes.size, &hashes)? != checkpoint.root {
            return Err(TilesError::Unverified(format!(
                "the right-edge tiles do not hash to the root of the signed tree of size {}",
                hashes.size
            )));
        }
        Ok(hashes)
    }

    /// Fetches from `client` the tiles that hold `nodes` in the tree of `checkpoint`, and
    /// checks them against its root ([`TileHashes::new`]).
    pub async fn fetch(
        client: &TileClient,
        checkpoint: &Checkpoint,
        nodes: &[NodeId],
    ) -> Result<TileHashes, TilesError> {
        let mut tiles = HashMap::new();
        for (level, index) in Self::tiles_for(checkpoint.size, nodes) {
            let hashes = client.hash_tile(level, index, checkpoint.size).await?;
            tiles.insert((level, index), hashes);
        }
        TileHashes::new(checkpoint, tiles)
    }

    /// The hash of one complete subtree, from the tile row at or below its level.
    fn node(&self, n: NodeId) -> Result<Hash, TilesError> {
        let end = (n.index + 1).checked_shl(u32::from(n.level));
        if end.is_none_or(|end| end > self.size) {
            return Err(ProofError::IndexOutOfRange {
                index: n.index,
                size: self.size,
            }
            .into());
        }
        let t = tiles::locate(n);
        let row = self
            .tiles
            .get(&(t.level, t.index))
            .and_then(|hashes| hashes.get(t.span()))
            .ok_or(TilesError::NotFetched {
                level: n.level,
                index: n.index,
            })?;
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
    use btlog_core::merkle::{leaf_hash, verify_inclusion};

    /// Every tile of a tree of `size` leaves, and its checkpoint.
    fn tree(size: u64) -> (Checkpoint, HashMap<(u8, u64), Vec<Hash>>) {
        let mut row: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut tiles = HashMap::new();
        let mut level = 0;
        while !row.is_empty() {
            for (t, chunk) in row.chunks(256).enumerate() {
                tiles.insert((level, t as u64), chunk.to_vec());
            }
            row = row.chunks_exact(256).map(balanced_root).collect();
            level += 1;
        }
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let checkpoint = Checkpoint {
            origin: "example.com/log".into(),
            size,
            root: btlog_core::merkle::fold(
                &subtree_nodes(0..size)
                    .iter()
                    .map(|n| {
                        let s = (n.index << n.level) as usize;
                        balanced_root(&leaves[s..s + (1 << n.level)])
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        (checkpoint, tiles)
    }

    #[test]
    fn tile_hashes_are_checked_against_the_signed_root() {
        let size = 600u64;
        let (checkpoint, all) = tree(size);
        let leaf = NodeId::new(0, 5);
        let needed = TileHashes::tiles_for(size, &[leaf]);
        // The leaf's full tile, its parent (partial), and the right edge's partial tile.
        assert_eq!(
            needed.into_iter().collect::<Vec<_>>(),
            [(0, 0), (0, 2), (1, 0)]
        );
        let pick = |all: &HashMap<(u8, u64), Vec<Hash>>| -> HashMap<(u8, u64), Vec<Hash>> {
            TileHashes::tiles_for(size, &[leaf])
                .into_iter()
                .map(|k| (k, all[&k].clone()))
                .collect()
        };
        let reader = TileHashes::new(&checkpoint, pick(&all)).expect("honest tiles");
        let proof = inclusion_proof(5, size, &reader).expect("proof");
        let hash = leaf_hash(&5u64.to_be_bytes());
        assert!(verify_inclusion(&hash, 5, size, &proof, &checkpoint.root).is_ok());
        assert!(reader.read_hashes(&[NodeId::new(0, 600)]).is_err());
        assert!(matches!(
            reader.read_hashes(&[NodeId::new(0, 300)]),
            Err(TilesError::NotFetched { .. })
        ));

        // One forged hash anywhere (a full tile, the parent, the right edge) is caught.
        for (key, at) in [((0, 0), 7), ((1, 0), 1), ((0, 2), 3)] {
            let mut forged = all.clone();
            forged.get_mut(&key).expect("tile")[at][0] ^= 1;
            let err = TileHashes::new(&checkpoint, pick(&forged)).expect_err("forged");
            assert!(matches!(err, TilesError::Unverified(_)), "{key:?}: {err}");
        }
        // A parent left out cannot vouch for its child.
        let mut partial = pick(&all);
        partial.remove(&(1, 0));
        assert!(TileHashes::new(&checkpoint, partial).is_err());
        // Another root: nothing verifies.
        let other = Checkpoint {
            root: [0; 32],
            ..checkpoint
        };
        assert!(TileHashes::new(&other, pick(&all)).is_err());
    }
}
