//! The hash tiles above level 0, checked during catch-up. Level-0 tiles are checked against the
//! entries, and their hashes fold into the signed root; the upper tiles are what tlog-tiles
//! clients build proofs from, so each one the audit covers is checked against the level below:
//! a level-1 hash must be the root of its bundle's 256 leaves, and a level-L hash (L ≥ 2) the
//! root of the level-(L−1) tile it stands for.
//!
//! Hashes computed during one audit are kept per level for one tile at a time; when the audit
//! reaches the end of a tile, the served tile is fetched and compared, and (the tile being
//! full) its root goes one level up. At the end of the audit the partial tiles are compared at
//! the audited size. Positions before the audit's start (a resumed audit) were compared by the
//! audit that read them and are skipped.

use btlog_core::merkle::tiles::TILE_WIDTH;
use btlog_core::merkle::Hash;

/// Computed hashes of one tile: (level, tile index, one slot per hash).
pub type Row = (u8, u64, Vec<Option<Hash>>);

/// The rows being filled, one per level from 1 up.
#[derive(Default)]
pub struct UpperTiles {
    rows: Vec<Row>,
}

impl UpperTiles {
    /// Records `hash` at position `index` of `level` (for level 1: the root of bundle
    /// `index`). Returns the row it completed, if it filled a tile's last slot.
    pub fn push(&mut self, level: u8, index: u64, hash: Hash) -> Option<Row> {
        let (tile, slot) = (index / TILE_WIDTH, (index % TILE_WIDTH) as usize);
        let at = usize::from(level.saturating_sub(1));
        while self.rows.len() <= at {
            let l = self.rows.len() as u8 + 1;
            self.rows.push((l, u64::MAX, Vec::new()));
        }
        let row = &mut self.rows[at];
        if row.1 != tile {
            *row = (level, tile, vec![None; TILE_WIDTH as usize]);
        }
        row.2[slot] = Some(hash);
        (slot + 1 == TILE_WIDTH as usize)
            .then(|| std::mem::replace(row, (level, u64::MAX, Vec::new())))
    }

    /// The partial rows left at the end of an audit, lowest level first.
    pub fn finish(self) -> Vec<Row> {
        self.rows
            .into_iter()
            .filter(|(_, tile, _)| *tile != u64::MAX)
            .collect()
    }
}

/// The first position where `served` differs from what was computed, if any.
pub fn first_mismatch(computed: &[Option<Hash>], served: &[Hash]) -> Option<usize> {
    computed
        .iter()
        .enumerate()
        .find(|(i, c)| c.is_some_and(|c| served.get(*i) != Some(&c)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_complete_at_the_last_slot_and_partials_remain() {
        let mut up = UpperTiles::default();
        let h = |i: u64| [i as u8; 32];
        // A resumed audit starting at bundle 250 of tile 0.
        for b in 250..255 {
            assert!(up.push(1, b, h(b)).is_none());
        }
        let (level, tile, row) = up.push(1, 255, h(255)).expect("tile 0 complete");
        assert_eq!((level, tile), (1, 0));
        assert_eq!(row.iter().flatten().count(), 6);
        assert_eq!(row[249], None);
        assert_eq!(row[255], Some(h(255)));
        assert!(up.push(1, 256, h(1)).is_none());
        assert!(up.push(2, 0, h(2)).is_none());
        let left = up.finish();
        assert_eq!(left.len(), 2);
        assert_eq!((left[0].0, left[0].1), (1, 1));
        assert_eq!((left[1].0, left[1].1), (2, 0));
        assert_eq!(first_mismatch(&left[0].2, &[h(1)]), None);
        assert_eq!(first_mismatch(&left[0].2, &[h(9)]), Some(0));
        assert_eq!(first_mismatch(&left[0].2, &[]), Some(0));
    }
}
