//! Checkpoint parsing (PROTOCOL.md §3): never panics; accepted bodies and notes are canonical.
#![no_main]

use btlog_core::checkpoint::Checkpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = std::str::from_utf8(data) {
        if let Ok(cp) = Checkpoint::parse_body(body) {
            assert_eq!(cp.body(), body, "accepted a non-canonical body");
        }
    }
    if let Ok((cp, note)) = Checkpoint::parse(data) {
        assert_eq!(
            note.format().as_bytes(),
            data,
            "accepted a non-canonical note"
        );
        assert_eq!(cp.body(), note.text());
    }
});
