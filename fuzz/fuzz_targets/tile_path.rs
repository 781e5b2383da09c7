//! Tile path parsing (tlog-tiles): never panics; whatever parses is the tile's one canonical path.
#![no_main]

use btlog_core::merkle::tiles::Tile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tile) = Tile::parse_path(path) {
        assert_eq!(
            tile.path(),
            path.strip_prefix('/').unwrap_or(path),
            "non-canonical path accepted"
        );
        assert!(tile.width >= 1 && tile.width <= 256);
    }
});
