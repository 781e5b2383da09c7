//! tlog-policy files (PROTOCOL.md §10.2): parsing and checking a checkpoint never panic.
#![no_main]

use btlog_core::policy::Policy;
use libfuzzer_sys::fuzz_target;

const CHECKPOINT: &str = "example.com/foo\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.com/foo UwOQOgAA\n";

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = Policy::parse(data) {
        let _ = policy.check(CHECKPOINT, 1_800_000_000, Some(3600));
    }
});
