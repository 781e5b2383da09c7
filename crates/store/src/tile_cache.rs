//! A small, fixed-size cache of the stored tiles every proof climbs through: the upper-level
//! tiles (tile level ≥ 1) and the partial tiles of the right edge.
//!
//! Stored tiles only grow: a node once in a tile never changes, so a cached copy is right for
//! every node it holds, and the reader goes to RocksDB only for nodes newer than the copy. The
//! cache is direct-mapped: a tile has one slot, a newer tile for that slot replaces it, and
//! memory is bounded by the slot count (each tile is at most 16 KiB), not by the log.

use super::tile::TileAddr;
use std::sync::{Arc, RwLock};

/// Slots in the cache: up to 16 MiB of tiles, which covers every level-1 tile of a 67M-entry log.
pub const SLOTS: usize = 1024;

/// One slot: the tile it holds, if any, with its address.
type Slot = RwLock<Option<(TileAddr, Arc<[u8]>)>>;

/// The cache; shared by every reader of a store.
pub struct TileCache {
    slots: Vec<Slot>,
}

impl TileCache {
    /// An empty cache of `slots` slots (at least one).
    pub fn new(slots: usize) -> TileCache {
        TileCache {
            slots: (0..slots.max(1)).map(|_| RwLock::new(None)).collect(),
        }
    }

    fn slot(&self, addr: TileAddr) -> &Slot {
        let h = addr.index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(addr.level);
        &self.slots[(h % self.slots.len() as u64) as usize]
    }

    /// The stored tile at `addr`, if cached.
    pub fn get(&self, addr: TileAddr) -> Option<Arc<[u8]>> {
        let slot = self.slot(addr).read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|(a, _)| *a == addr)
            .map(|(_, v)| v.clone())
    }

    /// Caches the stored tile at `addr` (any prefix of its final content).
    pub fn put(&self, addr: TileAddr, tile: Arc<[u8]>) {
        *self.slot(addr).write().unwrap_or_else(|p| p.into_inner()) = Some((addr, tile));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_one_tile_per_slot() {
        let cache = TileCache::new(2);
        let a = TileAddr { level: 1, index: 0 };
        let b = TileAddr { level: 1, index: 1 };
        cache.put(a, Arc::from(&b"a"[..]));
        assert_eq!(cache.get(a).as_deref(), Some(&b"a"[..]));
        cache.put(b, Arc::from(&b"b"[..]));
        assert_eq!(cache.get(b).as_deref(), Some(&b"b"[..]));
        // Whether or not a and b share a slot, a lookup never returns another tile's bytes.
        assert!(cache.get(a).is_none_or(|v| &*v == b"a"));
        assert!(cache.get(TileAddr { level: 2, index: 0 }).is_none());
    }
}
