//! Full tiles, each written once into a file of its tile level (layout 5); the `tiles` column
//! family keeps the partial tiles of the right edge, and the tiles full before the store came
//! to this layout.
//!
//! A full tile never changes (tlog-tiles: a full tile is immutable), so it gains nothing from
//! an LSM tree and paid for being in one: each compaction of the tiles rewrote the newest full
//! ones (73 bytes written an entry over 30M entries, BENCHMARKS.md, "Eighth pass"), and every
//! read of a full level-0 tile past a few million entries missed the block cache and paid a
//! block read, its checksum, an insert and an eviction there. Here full tile `N` of tile level
//! `L` is a record of [`STRIDE`] bytes at `(N − first(L)) · STRIDE` in the file `tiles/L`:
//! the stored tile ([`crate::tile`], [`TILE_BYTES`] bytes), then the CRC-32 of those bytes,
//! then zeros. `first(L)` is the first tile of level `L` that was not full at the size the
//! store had when it came to this layout (`meta` `tile_files_from`; 0 for a new store).
//!
//! The writer writes a commit's newly full tiles and syncs their files before the synced
//! RocksDB write that publishes the new size ([`crate::Appender`]): a published full tile is
//! always on disk. A crash in between leaves records past the stored size, which readers never
//! ask for and a later append overwrites.

use super::tile::TileAddr;
use btlog_core::merkle::tiles::{self, TILE_HEIGHT, TILE_WIDTH};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes of a full stored tile: its width, then its rows of 256, 128, …, 2 hashes.
pub(crate) const TILE_BYTES: usize = 2 + (2 * TILE_WIDTH as usize - 2) * 32;

/// Bytes of a record as read: the tile and its CRC-32.
pub(crate) const TILE_RECORD: usize = TILE_BYTES + 4;

/// A record as read.
pub(crate) type Record = [u8; TILE_RECORD];

/// Bytes of a record: the tile and its CRC-32, padded to 16 KiB.
const STRIDE: u64 = 16 << 10;

/// Tile levels that can have full tiles: a full tile of level 7 would span 2^64 leaves.
const LEVELS: usize = 7;

/// The directory of the files, inside the store's.
const DIR: &str = "tiles";

/// The open files of full tiles, one a tile level.
pub(crate) struct TileFiles {
    files: Vec<File>,
    /// The log size at which the store came to layout 5; tiles full then are not here.
    from: u64,
}

impl TileFiles {
    /// Opens (creating as needed) the files under `store_dir`, for a store that came to this
    /// layout at size `from`. Call [`TileFiles::check`] before serving from them.
    pub(crate) fn open(store_dir: &Path, from: u64) -> io::Result<TileFiles> {
        let dir = store_dir.join(DIR);
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)?;
        let files = (0..LEVELS)
            .map(|level| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(dir.join(level.to_string()))
            })
            .collect::<io::Result<Vec<_>>>()?;
        if created {
            // The new directory and its files must survive a crash with the first tile.
            File::open(&dir)?.sync_all()?;
            File::open(store_dir)?.sync_all()?;
        }
        Ok(TileFiles { files, from })
    }

    /// Checks that each file is long enough to hold every tile full in a tree of `size`
    /// leaves: a store copied or restored without its `tiles/` directory, or with a file cut
    /// short, is refused when it opens, not at the first read of a missing tile. Longer is
    /// fine: a crash between the tiles' write and the size's leaves records past it.
    pub(crate) fn check(&self, size: u64) -> Result<(), TileFileError> {
        for (level, file) in self.files.iter().enumerate() {
            let need = full_tiles(level, size).saturating_sub(full_tiles(level, self.from));
            let have = file
                .metadata()
                .map_err(|e| TileFileError::Metadata(level, e))?
                .len()
                / STRIDE;
            if have < need {
                return Err(TileFileError::Short { level, have, need });
            }
        }
        Ok(())
    }

    /// Whether the tile at `addr` is full in a tree of `size` leaves and kept here.
    pub(crate) fn holds(&self, addr: TileAddr, size: u64) -> bool {
        tiles::width_at(addr.level, addr.index, size) == Some(TILE_WIDTH as u16)
            && self.place(addr).is_some()
    }

    /// The file and byte offset of the record of `addr`, if it is kept here.
    fn place(&self, addr: TileAddr) -> Option<(&File, u64)> {
        let file = self.files.get(usize::from(addr.level))?;
        // The first record is the tile after those full at `from`.
        let first = full_tiles(usize::from(addr.level), self.from);
        let offset = addr.index.checked_sub(first)?.checked_mul(STRIDE)?;
        Some((file, offset))
    }

    /// Reads the stored tile at `addr`, which [`TileFiles::holds`] says is here, into
    /// `record`, checking it against its CRC; returns the tile's bytes. The caller's buffer,
    /// on its stack, spares the reads of a busy server a heap allocation each (16 KiB, from
    /// glibc's large bins, which after an ingest took more time than the read itself).
    pub(crate) fn read<'a>(
        &self,
        addr: TileAddr,
        record: &'a mut Record,
    ) -> Result<&'a [u8], TileFileError> {
        let (file, offset) = self.place(addr).ok_or(TileFileError::NotHere(addr))?;
        file.read_exact_at(record, offset)
            .map_err(|e| TileFileError::Io(addr, e))?;
        let (tile, crc) = record.split_at(TILE_BYTES);
        if crc32fast::hash(tile).to_be_bytes()[..] != crc[..]
            || tile[..2] != (TILE_WIDTH as u16).to_be_bytes()
        {
            return Err(TileFileError::Corrupt(addr));
        }
        Ok(tile)
    }

    /// Writes newly full tiles, each [`TILE_BYTES`] long, and syncs the files written to.
    pub(crate) fn write(&self, full: &[(TileAddr, Vec<u8>)]) -> Result<(), TileFileError> {
        let mut written = [false; LEVELS];
        for (addr, tile) in full {
            let (file, offset) = self.place(*addr).ok_or(TileFileError::NotHere(*addr))?;
            if tile.len() != TILE_BYTES {
                return Err(TileFileError::Corrupt(*addr));
            }
            let mut record = Vec::with_capacity(STRIDE as usize);
            record.extend_from_slice(tile);
            record.extend_from_slice(&crc32fast::hash(tile).to_be_bytes());
            record.resize(STRIDE as usize, 0);
            file.write_all_at(&record, offset)
                .map_err(|e| TileFileError::Io(*addr, e))?;
            written[usize::from(addr.level)] = true;
        }
        for (level, file) in self.files.iter().enumerate() {
            if written[level] {
                file.sync_data()
                    .map_err(|e| TileFileError::Sync(level, e))?;
            }
        }
        Ok(())
    }
}

/// How many tiles of `level` are full in a tree of `size` leaves.
fn full_tiles(level: usize, size: u64) -> u64 {
    size.checked_shr(u32::from(TILE_HEIGHT) * (level as u32 + 1))
        .unwrap_or(0)
}

/// What can go wrong with the files of full tiles.
#[derive(Debug, thiserror::Error)]
pub enum TileFileError {
    /// Reading or writing a tile's record failed.
    #[error("full tile {}/{}: {}", .0.level, .0.index, .1)]
    Io(TileAddr, io::Error),
    /// Syncing the file of a tile level failed.
    #[error("syncing the full tiles of level {0}: {1}")]
    Sync(usize, io::Error),
    /// A record's CRC or width does not match: the file was damaged.
    #[error("full tile {}/{} is damaged on disk", .0.level, .0.index)]
    Corrupt(TileAddr),
    /// The tile was full before the store came to this layout: it is in the column family.
    #[error("full tile {}/{} is not kept in the tile files", .0.level, .0.index)]
    NotHere(TileAddr),
    /// The size of a tile level's file could not be read.
    #[error("reading the size of the file of full tiles of level {0}: {1}")]
    Metadata(usize, io::Error),
    /// A tile level's file holds fewer full tiles than the log has: the store's `tiles/`
    /// directory is missing or was cut short.
    #[error(
        "the file of full tiles of level {level} (tiles/{level} in the store's directory) holds \
         {have} tiles where the log has {need}: was the store copied without its tiles/ \
         directory?"
    )]
    Short {
        /// The tile level.
        level: usize,
        /// Whole records in its file.
        have: u64,
        /// Records the log's size needs.
        need: u64,
    },
}
