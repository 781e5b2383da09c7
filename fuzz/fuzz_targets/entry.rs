//! Entry parsing (PROTOCOL.md §2): never panics; whatever parses is canonical.
#![no_main]

use btlog_core::entry::Entry;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entry) = Entry::parse(data) {
        assert_eq!(entry.encode(), data, "accepted a non-canonical entry");
        assert_eq!(entry.identity_key(), entry.identity().key());
    }
});
