//! tlog-witness add-checkpoint request bodies (PROTOCOL.md §10): parsing never panics, accepted
//! bodies are canonical, and judging one against any held state never panics.
#![no_main]

use btlog_core::checkpoint::Checkpoint;
use btlog_core::witness::{judge, AddCheckpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = AddCheckpoint::parse(data) else {
        return;
    };
    assert_eq!(
        request.format().as_bytes(),
        data,
        "accepted a non-canonical body"
    );
    if let Ok((checkpoint, _)) = Checkpoint::parse(request.checkpoint.as_bytes()) {
        for held in [None, Some((request.old, [7u8; 32])), Some((0, [0u8; 32]))] {
            let _ = judge(held, request.old, &request.proof, &checkpoint);
        }
    }
});
