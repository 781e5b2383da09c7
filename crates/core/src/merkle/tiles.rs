//! C2SP tlog-tiles coordinates: which tiles a tree has, and their URL paths.
//!
//! A tile at level `L` holds up to 256 consecutive hashes of Merkle level `8·L`; tile `N` of
//! that level starts at hash `256·N`. A tile with fewer than 256 hashes is partial and is
//! addressed with a `.p/<W>` suffix. Entry bundles use the same numbering at level 0.

use std::fmt;
use std::ops::Range;

use super::NodeId;

/// Hashes (or entries) in a full tile: 2^TILE_HEIGHT.
pub const TILE_WIDTH: u64 = 256;
/// Merkle levels a tile spans.
pub const TILE_HEIGHT: u8 = 8;
/// The highest tile level this implementation addresses; 8·(MAX_LEVEL+1) > 64 bits of tree.
pub const MAX_LEVEL: u8 = 7;

/// `Content-Type` of tiles and entry bundles (PROTOCOL.md §4).
pub const TILE_CONTENT_TYPE: &str = "application/octet-stream";
/// `Content-Type` of the checkpoint.
pub const CHECKPOINT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// `Cache-Control` of a full tile or bundle: it never changes.
pub const CACHE_FULL: &str = "public, max-age=604800, immutable";
/// `Cache-Control` of the checkpoint and of partial tiles, which a newer tree replaces.
pub const CACHE_SHORT: &str = "public, max-age=2";

/// What a tile path names: a hash tile at a level, or an entry bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Hashes of Merkle level `8 · level`.
    Hashes { level: u8 },
    /// Entry bundle (`tile/entries/...`).
    Entries,
}

/// One tile: its kind, index and width (1..=256; 256 is a full tile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    /// Hash level or entry bundle.
    pub kind: TileKind,
    /// Position in its level.
    pub index: u64,
    /// Number of hashes or entries: 256 when full, fewer when partial.
    pub width: u16,
}

/// Why a tile path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    /// The path does not start with `tile/`.
    #[error("not a tile path")]
    NotTile,
    /// The level is not a decimal number from 0 to 7, or `entries`.
    #[error("bad tile level")]
    BadLevel,
    /// The index is not in canonical `x001/x234/067` form.
    #[error("bad tile index: {0}")]
    BadIndex(&'static str),
    /// The partial width is not a canonical number from 1 to 255.
    #[error("bad partial tile width")]
    BadWidth,
}

impl Tile {
    /// Its `Cache-Control` ([`CACHE_FULL`] or [`CACHE_SHORT`]), from the server or a bucket.
    pub fn cache_control(&self) -> &'static str {
        if self.is_full() {
            CACHE_FULL
        } else {
            CACHE_SHORT
        }
    }

    /// Merkle level of the hashes in this tile's row (0 for entry bundles).
    pub fn merkle_level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes { level } => level * TILE_HEIGHT,
            TileKind::Entries => 0,
        }
    }

    /// True when the tile holds all 256 hashes.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// Index range of the hashes (or entries) this tile holds within its Merkle level.
    pub fn span(&self) -> std::ops::Range<u64> {
        let start = self.index * TILE_WIDTH;
        start..start + u64::from(self.width)
    }

    /// The URL path, without a leading slash: `tile/0/x001/234`, `tile/entries/000.p/7`.
    pub fn path(&self) -> String {
        let level = match self.kind {
            TileKind::Hashes { level } => level.to_string(),
            TileKind::Entries => "entries".to_string(),
        };
        let mut p = format!("tile/{level}/{}", encode_index(self.index));
        if !self.is_full() {
            p.push_str(&format!(".p/{}", self.width));
        }
        p
    }

    /// Parses a tile path strictly (with or without a leading slash): only the canonical
    /// encoding of each tile is accepted, so every tile has exactly one path.
    pub fn parse_path(path: &str) -> Result<Tile, TilePathError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let rest = path.strip_prefix("tile/").ok_or(TilePathError::NotTile)?;
        let (level, rest) = rest.split_once('/').ok_or(TilePathError::BadLevel)?;
        let kind = match level {
            "entries" => TileKind::Entries,
            l if l.len() == 1 && l.as_bytes()[0].is_ascii_digit() => {
                let level = l.as_bytes()[0] - b'0';
                if level > MAX_LEVEL {
                    return Err(TilePathError::BadLevel);
                }
                TileKind::Hashes { level }
            }
            _ => return Err(TilePathError::BadLevel),
        };
        let (index, width) = match rest.split_once(".p/") {
            Some((index, w)) => (index, parse_width(w)?),
            None => (rest, TILE_WIDTH as u16),
        };
        Ok(Tile {
            kind,
            index: decode_index(index)?,
            width,
        })
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

fn parse_width(w: &str) -> Result<u16, TilePathError> {
    let canonical = !w.is_empty()
        && w.len() <= 3
        && w.bytes().all(|b| b.is_ascii_digit())
        && !w.starts_with('0');
    let width: u16 = w
        .parse()
        .ok()
        .filter(|_| canonical)
        .ok_or(TilePathError::BadWidth)?;
    if (1..TILE_WIDTH as u16).contains(&width) {
        Ok(width)
    } else {
        Err(TilePathError::BadWidth)
    }
}

/// Encodes a tile index in 3-digit groups, all but the last prefixed with `x`: 1234067 →
/// `x001/x234/067`.
pub fn encode_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// Parses the canonical 3-digit-group encoding of a tile index; rejects leading zero groups,
/// missing `x` prefixes, groups of the wrong length and values beyond 64 bits.
pub fn decode_index(s: &str) -> Result<u64, TilePathError> {
    let groups: Vec<&str> = s.split('/').collect();
    if groups.len() > 7 {
        return Err(TilePathError::BadIndex("too many groups"));
    }
    let mut n: u64 = 0;
    for (i, g) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            g
        } else {
            g.strip_prefix('x')
                .ok_or(TilePathError::BadIndex("group without x prefix"))?
        };
        let v = group(digits)?;
        if i == 0 && !last && v == 0 {
            return Err(TilePathError::BadIndex("leading zero group"));
        }
        n = n
            .checked_mul(1000)
            .and_then(|n| n.checked_add(v))
            .ok_or(TilePathError::BadIndex("out of range"))?;
    }
    Ok(n)
}

fn group(g: &str) -> Result<u64, TilePathError> {
    if g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()) {
        Ok(g.bytes().fold(0, |n, b| n * 10 + u64::from(b - b'0')))
    } else {
        Err(TilePathError::BadIndex("group is not three digits"))
    }
}

/// Every tile of a tree of `size` leaves, per level, full tiles and the partial tile at the
/// right edge (if any). Entry bundles are the level-0 tiles with kind `Entries`.
pub fn tiles_for_size(size: u64) -> impl Iterator<Item = Tile> {
    (0..=MAX_LEVEL).flat_map(move |level| {
        let count = size >> (u32::from(level) * u32::from(TILE_HEIGHT));
        let full = count / TILE_WIDTH;
        let partial = (count % TILE_WIDTH) as u16;
        let kind = TileKind::Hashes { level };
        (0..full)
            .map(move |index| Tile {
                kind,
                index,
                width: TILE_WIDTH as u16,
            })
            .chain((partial > 0).then_some(Tile {
                kind,
                index: full,
                width: partial,
            }))
    })
}

/// The tiles and entry bundles a tree of `to` leaves has that a tree of `from` ≤ `to` leaves
/// does not have at the same width: what a copy of the smaller tree's tiles needs to become a
/// copy of the larger one's. Nothing when `from >= to`.
pub fn tiles_added(from: u64, to: u64) -> impl Iterator<Item = Tile> {
    let changed = move |level: u8| {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        let first = from.checked_shr(shift).unwrap_or(0) / TILE_WIDTH;
        let end = to.checked_shr(shift).unwrap_or(0).div_ceil(TILE_WIDTH);
        (first..end).filter_map(move |index| {
            let width = width_at(level, index, to)?;
            (from < to && width_at(level, index, from) != Some(width)).then_some((index, width))
        })
    };
    let bundles = changed(0).map(|(index, width)| Tile {
        kind: TileKind::Entries,
        index,
        width,
    });
    let hashes = (0..=MAX_LEVEL).flat_map(move |level| {
        changed(level).map(move |(index, width)| Tile {
            kind: TileKind::Hashes { level },
            index,
            width,
        })
    });
    bundles.chain(hashes)
}

/// The partial tiles and bundles of a tree of `from` leaves that a tree of `to` > `from`
/// leaves replaced with wider ones: what a copy may delete once no reader needs the smaller
/// tree.
pub fn partials_replaced(from: u64, to: u64) -> impl Iterator<Item = Tile> {
    (0..=MAX_LEVEL).flat_map(move |level| {
        let count = from >> (u32::from(level) * u32::from(TILE_HEIGHT));
        let (index, width) = (count / TILE_WIDTH, (count % TILE_WIDTH) as u16);
        let replaced = width > 0 && to > from && width_at(level, index, to) != Some(width);
        let bundle = (level == 0).then_some(TileKind::Entries);
        [Some(TileKind::Hashes { level }), bundle]
            .into_iter()
            .flatten()
            .filter(move |_| replaced)
            .map(move |kind| Tile { kind, index, width })
    })
}

/// The width tile `index` at `level` has in a tree of `size` leaves, or None when the tree
/// has no such tile.
pub fn width_at(level: u8, index: u64, size: u64) -> Option<u16> {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    let count = size.checked_shr(shift).unwrap_or(0);
    let start = index.checked_mul(TILE_WIDTH)?;
    if start >= count {
        return None;
    }
    Some((count - start).min(TILE_WIDTH) as u16)
}

/// Where a node's hash is found in the tiles: tile level `L` holds Merkle levels `8·L` to
/// `8·L + 7`, the upper ones as subtrees of its row 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeTile {
    /// The tile level (its row 0 is Merkle level `8 · level`).
    pub level: u8,
    /// The tile's index within its level.
    pub index: u64,
    /// How far above the tile's row 0 the node is (0..8).
    pub row: u8,
    /// The node's position among the nodes of its row in this tile.
    pub offset: u64,
}

impl NodeTile {
    /// The row-0 hashes of the tile that the node is the subtree of.
    pub fn span(&self) -> Range<usize> {
        let start = (self.offset << self.row) as usize;
        start..start + (1 << self.row)
    }
}

/// The tile holding `node` (its Merkle level must be below `8 · (MAX_LEVEL + 1)`).
pub fn locate(node: NodeId) -> NodeTile {
    let row = node.level % TILE_HEIGHT;
    let per_tile = TILE_WIDTH >> row;
    NodeTile {
        level: node.level / TILE_HEIGHT,
        index: node.index / per_tile,
        row,
        offset: node.index % per_tile,
    }
}

#[cfg(test)]
mod tests {
    /// Every tile and bundle of a tree of `size`, by brute force.
    fn all_tiles(size: u64) -> std::collections::HashSet<Tile> {
        tiles_for_size(size)
            .flat_map(|t| {
                let bundle = (t.kind == TileKind::Hashes { level: 0 }).then_some(Tile {
                    kind: TileKind::Entries,
                    ..t
                });
                [Some(t), bundle]
            })
            .flatten()
            .collect()
    }

    #[test]
    fn tiles_added_and_replaced_are_the_set_differences() {
        let sizes = [
            0, 1, 2, 255, 256, 257, 511, 512, 65535, 65536, 65537, 70000, 131072,
        ];
        for &from in &sizes {
            for &to in &sizes {
                let (old, new) = (all_tiles(from), all_tiles(to));
                let added: std::collections::HashSet<Tile> = tiles_added(from, to).collect();
                let replaced: std::collections::HashSet<Tile> =
                    partials_replaced(from, to).collect();
                if to <= from {
                    assert!(added.is_empty() && replaced.is_empty(), "{from}->{to}");
                    continue;
                }
                let expected: std::collections::HashSet<Tile> =
                    new.difference(&old).copied().collect();
                assert_eq!(added, expected, "added {from}->{to}");
                let gone: std::collections::HashSet<Tile> = old.difference(&new).copied().collect();
                assert_eq!(replaced, gone, "replaced {from}->{to}");
                assert!(replaced.iter().all(|t| !t.is_full()));
            }
        }
    }

    use super::*;

    #[test]
    fn index_encoding_matches_spec_example() {
        assert_eq!(encode_index(1234067), "x001/x234/067");
        assert_eq!(decode_index("x001/x234/067"), Ok(1234067));
        assert_eq!(encode_index(0), "000");
        assert_eq!(decode_index("000"), Ok(0));
        assert_eq!(decode_index(&encode_index(u64::MAX)), Ok(u64::MAX));
    }

    #[test]
    fn non_canonical_indexes_are_refused() {
        for bad in [
            "",
            "1",
            "01",
            "0000",
            "x000/001",
            "001/002",
            "x1/002",
            "x001/x002",
            "x001/",
            "/001",
            "x018/x446/x744/x073/x709/x551/616",
            "x019/x000/x000/x000/x000/x000/000",
            "-01",
            "+01",
            "0x1",
        ] {
            assert!(decode_index(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn paths_round_trip_and_are_strict() {
        let t = Tile {
            kind: TileKind::Hashes { level: 2 },
            index: 1234067,
            width: 7,
        };
        assert_eq!(t.path(), "tile/2/x001/x234/067.p/7");
        assert_eq!(Tile::parse_path(&t.path()), Ok(t));
        let e = Tile::parse_path("/tile/entries/001").unwrap();
        assert_eq!((e.kind, e.index, e.width), (TileKind::Entries, 1, 256));
        for bad in [
            "tile/8/000",
            "tile/00/000",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/07",
            "tile/0/000.p/",
            "tile/0/000.p/1/",
            "tile//000",
            "tiles/0/000",
            "tile/0/000/",
            "tile/entry/000",
            "tile/0/../000",
        ] {
            assert!(Tile::parse_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tiles_for_size_lists_full_and_partial() {
        let tiles: Vec<Tile> = tiles_for_size(256 * 3 + 5).collect();
        assert_eq!(tiles.len(), 5);
        assert_eq!(tiles[3].width, 5);
        assert_eq!(tiles[4].kind, TileKind::Hashes { level: 1 });
        assert_eq!(tiles[4].width, 3);
        assert_eq!(width_at(0, 3, 256 * 3 + 5), Some(5));
        assert_eq!(width_at(0, 4, 256 * 3 + 5), None);
        assert_eq!(width_at(1, 0, 256 * 3 + 5), Some(3));
        assert_eq!(width_at(7, u64::MAX, u64::MAX), None);
        assert_eq!(tiles_for_size(0).count(), 0);
    }

    #[test]
    fn nodes_are_located_in_their_tiles() {
        let t = locate(NodeId::new(0, 300));
        assert_eq!((t.level, t.index, t.row, t.offset), (0, 1, 0, 44));
        assert_eq!(t.span(), 44..45);
        let t = locate(NodeId::new(3, 33));
        assert_eq!((t.level, t.index, t.row, t.offset), (0, 1, 3, 1));
        assert_eq!(t.span(), 8..16);
        let t = locate(NodeId::new(8, 5));
        assert_eq!((t.level, t.index, t.row, t.offset), (1, 0, 0, 5));
        let t = locate(NodeId::new(17, 129));
        assert_eq!((t.level, t.index, t.row, t.offset), (2, 1, 1, 1));
        assert_eq!(t.span(), 2..4);
    }
}
