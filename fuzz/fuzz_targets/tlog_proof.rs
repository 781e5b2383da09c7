//! tlog-proof parsing and offline verification (PROTOCOL.md §5): never panics; accepted proofs are
//! canonical.
#![no_main]

use btlog_core::note::Verifier;
use btlog_core::proof_bundle::{ArtifactClaim, TlogProof};
use libfuzzer_sys::fuzz_target;

const VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

fuzz_target!(|data: &[u8]| {
    let Ok(proof) = TlogProof::parse(data) else {
        return;
    };
    assert_eq!(
        proof.format().as_bytes(),
        data,
        "accepted a non-canonical proof"
    );
    let claim = ArtifactClaim {
        package: "pkg:npm/x".into(),
        version: "1".into(),
        file: "x.tgz".into(),
        sha256: [0; 32],
    };
    if let Ok(vkey) = Verifier::parse(VKEY) {
        let _ = proof.verify_offline(&vkey, &claim);
    }
});
