//! Registry metadata (PROTOCOL.md §11): crates.io index files and PyPI project JSON never make
//! the importers panic, and whatever they accept maps to entries that are valid or refused
//! cleanly.
#![no_main]

use btlog_core::import::{crates_index, pypi_project};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for entries in [crates_index(text), pypi_project(text)]
        .into_iter()
        .flatten()
    {
        for e in entries {
            let _ = e.into_entry("fuzz.example");
        }
    }
});
