//! An installer's offline check with the core crate alone (PROTOCOL.md §5): the sample proof of
//! the protocol document, signed by a real Ed25519 key, verifies for its artifact and for
//! nothing else; the `verify_offline` example does the same as a program.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use btlog_core::keys::parse_vkey;
use btlog_core::proof_bundle::{ArtifactClaim, ProofBundleError, TlogProof};

fn vectors() -> PathBuf {
    common::package_dir().join("tests/vectors/tlog-proof")
}

const SHA256: &str = "49a03749e552ba2c353f356c8101655dc3e55b5acd8ebcd1d0dea4d6063da3e5";

fn claim() -> ArtifactClaim {
    ArtifactClaim {
        package: "pkg:npm/%40acme/widget".into(),
        version: "2.0.2".into(),
        file: "widget-2.0.2.tgz".into(),
        sha256: hex::decode(SHA256)
            .expect("hex")
            .try_into()
            .expect("32 bytes"),
    }
}

fn load() -> (TlogProof, btlog_core::note::Verifier) {
    let proof = std::fs::read(vectors().join("widget-2.0.2.tgz.tlog-proof")).expect("proof");
    let vkey = std::fs::read_to_string(vectors().join("example.com-btlog.vkey")).expect("vkey");
    (
        TlogProof::parse(&proof).expect("parse"),
        parse_vkey(&vkey).expect("vkey"),
    )
}

/// A proof saved with `jq -r .proof > FILE` ends with an extra newline: refused, saying so and
/// how to save it instead (it used to say "note has no signatures").
#[test]
fn a_final_blank_line_is_refused_with_the_fix() {
    let mut proof = std::fs::read(vectors().join("widget-2.0.2.tgz.tlog-proof")).expect("proof");
    proof.push(b'\n');
    let e = TlogProof::parse(&proof).expect_err("trailing newline");
    assert!(e.to_string().contains("extra blank line at the end"), "{e}");
    assert!(e.to_string().contains("jq -j"), "{e}");
}

#[test]
fn the_protocol_sample_proof_verifies_offline() {
    let (proof, log) = load();
    let verified = proof.verify_offline(&log, &claim()).expect("proven");
    assert_eq!(verified.checkpoint.size, 3);
    assert_eq!(verified.checkpoint.origin, "example.com/btlog");
    assert_eq!(verified.entry.version, "2.0.2");
    // The document shows the same proof byte for byte.
    let doc = std::fs::read_to_string(common::package_dir().join("../../docs/PROTOCOL.md"))
        .expect("PROTOCOL.md");
    assert!(
        doc.contains(&proof.format()),
        "docs/PROTOCOL.md §5 sample changed"
    );
}

#[test]
fn anything_else_is_refused() {
    let (proof, log) = load();
    let mut other = claim();
    other.sha256[0] ^= 1;
    assert!(matches!(
        proof.verify_offline(&log, &other),
        Err(ProofBundleError::Mismatch { .. })
    ));
    let mut other = claim();
    other.version = "2.0.1".into();
    assert!(proof.verify_offline(&log, &other).is_err());
    let stranger = btlog_core::keys::generate("example.com/btlog").expect("key");
    assert!(proof
        .verify_offline(&stranger.verifier(), &claim())
        .is_err());
    let mut moved = proof.clone();
    moved.index = 0;
    assert!(moved.verify_offline(&log, &claim()).is_err());
}

/// The example, which `cargo test` builds beside the test binaries (`target/<profile>/examples`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let profile = exe.parent().and_then(Path::parent).expect("target dir");
    profile
        .join("examples")
        .join(format!("verify_offline{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn the_example_program_verifies_and_refuses() {
    let run = |artifact: &str| {
        Command::new(example())
            .arg(vectors().join("widget-2.0.2.tgz.tlog-proof"))
            .arg(vectors().join("example.com-btlog.vkey"))
            .args([
                "pkg:npm/%40acme/widget",
                "2.0.2",
                "widget-2.0.2.tgz",
                artifact,
            ])
            .output()
            .expect("run the verify_offline example")
    };
    let ok = run(&format!("sha256:{SHA256}"));
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("proven"));
    let bad = run(&format!("sha256:{}", "0".repeat(64)));
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
}
