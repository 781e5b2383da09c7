//! Signed-note parsing and verification (PROTOCOL.md §3): never panics; whatever parses is canonical.
#![no_main]

use btlog_core::note::{Note, Verifier};
use libfuzzer_sys::fuzz_target;

const C2SP_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const C2SP_TEXT: &str = "This is an example message.\n";

fuzz_target!(|data: &[u8]| {
    let Ok(note) = Note::parse(data) else { return };
    assert_eq!(
        note.format().as_bytes(),
        data,
        "accepted a non-canonical note"
    );
    if let Ok(vkey) = Verifier::parse(C2SP_VKEY) {
        if note.verify(&[&vkey]).is_ok() {
            assert_eq!(note.text(), C2SP_TEXT, "forged a signature");
        }
    }
});
