//! Entry-bundle parsing (PROTOCOL.md §4.2): never panics; a bundle that parses re-encodes to the
//! same bytes, and its prefix lengths agree with the parse.
#![no_main]

use btlog_core::bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&count, data)) = data.split_first() else {
        return;
    };
    let count = usize::from(count);
    let _ = bundle::prefix_len(data, count);
    let Ok(entries) = bundle::parse(data, count) else {
        return;
    };
    let mut encoded = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        bundle::push(&mut encoded, entry).expect("a parsed entry fits a length prefix");
        assert_eq!(bundle::prefix_len(data, i + 1), Ok(encoded.len()));
    }
    assert_eq!(encoded, data, "accepted a bundle that does not re-encode");
});
