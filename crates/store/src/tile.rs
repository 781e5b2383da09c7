//! How Merkle hashes are laid out on disk: one value per tlog tile, holding every complete
//! node inside the tile, and the in-memory right edge (frontier) that appends extend.
//!
//! A stored tile at tile level `L`, index `N`, of width `W` (1..=256) holds row `j` (0..8) of
//! `⌊W / 2^j⌋` hashes of Merkle level `8L + j`, rows in order, after a 2-byte big-endian `W`.
//! Row 0 is exactly the tlog-tiles tile, so serving a tile is one read and a slice; the upper
//! rows make any proof a handful of reads (about one per tile level) with no hashing of leaves.
//! The 256-hash row 0 of a full tile hashes up to its root, which is row 0 of the parent tile.
//! This is the Go `sumdb/tlog` idea (store every complete subtree hash once, keep the right
//! edge in memory so an append reads nothing) grouped by tile, so storage sees few large
//! values: the partial tiles in RocksDB, the full ones in files ([`crate::tile_files`]).

use btlog_core::merkle::tiles::{self, TILE_HEIGHT, TILE_WIDTH};
use btlog_core::merkle::{fold, node_hash, subtree_nodes, Hash, NodeId};

/// A tile's place: tile level and index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileAddr {
    /// Tile level (its row 0 is Merkle level `8 · level`).
    pub level: u8,
    /// Index within the tile level.
    pub index: u64,
}

impl TileAddr {
    /// The RocksDB key: level byte, then the big-endian index, so a level sorts in order.
    pub fn key(&self) -> [u8; 9] {
        let mut k = [0u8; 9];
        k[0] = self.level;
        k[1..].copy_from_slice(&self.index.to_be_bytes());
        k
    }
}

/// Where a node lives ([`tiles::locate`]): its tile, its row within the tile and its offset
/// in that row.
pub fn locate(node: NodeId) -> (TileAddr, usize, usize) {
    let t = tiles::locate(node);
    let addr = TileAddr {
        level: t.level,
        index: t.index,
    };
    (addr, usize::from(t.row), t.offset as usize)
}

/// Hashes in row `row` of a tile of width `width`.
fn row_len(width: usize, row: usize) -> usize {
    width >> row
}

/// Reads node `row`/`offset` out of an encoded stored tile, or None if the tile does not
/// (yet) hold it or is malformed.
pub fn read_node(encoded: &[u8], row: usize, offset: usize) -> Option<Hash> {
    let width = usize::from(u16::from_be_bytes(encoded.get(..2)?.try_into().ok()?));
    if offset >= row_len(width, row) {
        return None;
    }
    let before: usize = (0..row).map(|r| row_len(width, r)).sum();
    let at = 2 + (before + offset) * 32;
    encoded.get(at..at + 32)?.try_into().ok()
}

/// Row 0 of an encoded stored tile: the tlog-tiles tile itself.
pub fn row0(encoded: &[u8]) -> Option<&[u8]> {
    let width = usize::from(u16::from_be_bytes(encoded.get(..2)?.try_into().ok()?));
    encoded.get(2..2 + width * 32)
}

/// One tile being filled: its rows of complete nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct OpenTile {
    index: u64,
    rows: [Vec<Hash>; TILE_HEIGHT as usize],
}

impl OpenTile {
    fn width(&self) -> usize {
        self.rows[0].len()
    }

    fn encode(&self) -> Vec<u8> {
        let n: usize = self.rows.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(2 + 32 * n);
        out.extend_from_slice(&(self.width() as u16).to_be_bytes());
        for h in self.rows.iter().flatten() {
            out.extend_from_slice(h);
        }
        out
    }

    fn decode(index: u64, encoded: &[u8]) -> Option<OpenTile> {
        let width = usize::from(u16::from_be_bytes(encoded.get(..2)?.try_into().ok()?));
        let mut tile = OpenTile {
            index,
            ..OpenTile::default()
        };
        let mut at = 2;
        for (r, row) in tile.rows.iter_mut().enumerate() {
            for _ in 0..row_len(width, r) {
                row.push(encoded.get(at..at + 32)?.try_into().ok()?);
                at += 32;
            }
        }
        (at == encoded.len() && width < TILE_WIDTH as usize).then_some(tile)
    }

    /// Adds a row-0 hash, fills the rows above it, and returns the tile root when the tile
    /// becomes full.
    fn push(&mut self, h: Hash) -> Option<Hash> {
        self.rows[0].push(h);
        let mut r = 0;
        while self.rows[r].len().is_multiple_of(2) {
            let row = &self.rows[r];
            let parent = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            if r + 1 == TILE_HEIGHT as usize {
                return Some(parent);
            }
            self.rows[r + 1].push(parent);
            r += 1;
        }
        None
    }
}

/// The right edge of the tree: the open (partial) tile of every tile level.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    open: Vec<OpenTile>,
}

/// Why a frontier could not be rebuilt from stored tiles.
#[derive(Debug, thiserror::Error)]
#[error("stored tile {level}/{index} is missing or malformed")]
pub struct BadTile {
    /// Tile level.
    pub level: u8,
    /// Tile index.
    pub index: u64,
}

impl Frontier {
    /// Rebuilds the frontier of a tree of `size` leaves from its stored partial tiles.
    pub fn load(
        size: u64,
        mut read: impl FnMut(TileAddr) -> Option<Vec<u8>>,
    ) -> Result<Frontier, BadTile> {
        let mut open = Vec::new();
        for level in 0..=btlog_core::merkle::tiles::MAX_LEVEL {
            let count = size
                .checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
                .unwrap_or(0);
            if level > 0 && count == 0 {
                break;
            }
            let addr = TileAddr {
                level,
                index: count / TILE_WIDTH,
            };
            let width = (count % TILE_WIDTH) as usize;
            let tile = if width == 0 {
                Some(OpenTile {
                    index: addr.index,
                    ..OpenTile::default()
                })
            } else {
                read(addr).and_then(|v| OpenTile::decode(addr.index, &v))
            };
            match tile {
                Some(t) if t.width() == width => open.push(t),
                _ => {
                    return Err(BadTile {
                        level,
                        index: addr.index,
                    })
                }
            }
        }
        Ok(Frontier { size, open })
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends leaf hashes. Returns the tiles the append changed, encoded for storage: tiles
    /// that became full and the final state of every open tile that grew.
    pub fn append(&mut self, leaves: &[Hash]) -> Vec<(TileAddr, Vec<u8>)> {
        let mut changed = std::collections::BTreeMap::new();
        let mut dirty = std::collections::BTreeSet::new();
        for leaf in leaves {
            let mut h = *leaf;
            let mut level = 0usize;
            loop {
                if self.open.len() == level {
                    self.open.push(OpenTile::default());
                }
                let tile = &mut self.open[level];
                dirty.insert(level);
                match tile.push(h) {
                    None => break,
                    Some(root) => {
                        let addr = TileAddr {
                            level: level as u8,
                            index: tile.index,
                        };
                        changed.insert(addr, tile.encode());
                        *tile = OpenTile {
                            index: tile.index + 1,
                            ..OpenTile::default()
                        };
                        h = root;
                        level += 1;
                    }
                }
            }
            self.size += 1;
        }
        for level in dirty {
            let tile = &self.open[level];
            if tile.width() > 0 {
                let addr = TileAddr {
                    level: level as u8,
                    index: tile.index,
                };
                changed.insert(addr, tile.encode());
            }
        }
        changed.into_iter().collect()
    }

    /// The root of the tree, from the open tiles alone (they hold every node of the root's
    /// decomposition into complete subtrees).
    pub fn root(&self) -> Option<Hash> {
        let nodes: Option<Vec<Hash>> = subtree_nodes(0..self.size)
            .into_iter()
            .map(|n| self.node(n))
            .collect();
        nodes.map(|h| fold(&h))
    }

    /// A node of the right edge, if it is held in an open tile.
    pub fn node(&self, node: NodeId) -> Option<Hash> {
        let (addr, row, offset) = locate(node);
        let tile = self.open.get(usize::from(addr.level))?;
        (tile.index == addr.index)
            .then(|| tile.rows[row].get(offset).copied())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use btlog_core::merkle::leaf_hash;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn frontier_survives_encode_and_reload() {
        let mut f = Frontier::default();
        let mut stored = std::collections::HashMap::new();
        for chunk in leaves(70_000).chunks(999) {
            stored.extend(f.append(chunk));
        }
        let reloaded = Frontier::load(f.size(), |a| stored.get(&a).cloned()).unwrap();
        assert_eq!(reloaded, f);
        // Every node of the root's decomposition is on the frontier.
        for n in subtree_nodes(0..f.size()) {
            assert!(f.node(n).is_some(), "{n:?}");
        }
    }

    #[test]
    fn load_refuses_missing_tiles() {
        assert!(Frontier::load(300, |_| None).is_err());
        assert!(Frontier::load(0, |_| None).is_ok());
    }
}
