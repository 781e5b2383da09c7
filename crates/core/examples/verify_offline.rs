//! Verifies a `.tlog-proof` offline with nothing but `btlog-core`, as an installer embedding the
//! crate would (PROTOCOL.md §5): no network, no RocksDB, no async runtime.
//!
//! ```text
//! cargo run -p btlog-core --example verify_offline -- PROOF VKEY PACKAGE VERSION FILE ARTIFACT
//! ```
//!
//! `ARTIFACT` is the artifact's path, or `sha256:<hex>` when only its digest is at hand. Exits 0
//! when the artifact is proven logged under that identity, 1 when it is not, 2 on bad usage.

use std::process::ExitCode;

use btlog_core::entry::parse_hex;
use btlog_core::keys::parse_vkey;
use btlog_core::proof_bundle::{ArtifactClaim, TlogProof};
use sha2::{Digest, Sha256};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [proof, vkey, package, version, file, artifact] = args.as_slice() else {
        eprintln!("usage: verify_offline PROOF VKEY PACKAGE VERSION FILE ARTIFACT|sha256:HEX");
        return ExitCode::from(2);
    };
    match run(proof, vkey, package, version, file, artifact) {
        Ok(Ok(message)) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Err(reason)) => {
            eprintln!("NOT PROVEN: {reason}");
            ExitCode::from(1)
        }
        Err(usage) => {
            eprintln!("verify_offline: {usage}");
            ExitCode::from(2)
        }
    }
}

/// The outcome of the check, or why it could not be made.
fn run(
    proof: &str,
    vkey: &str,
    package: &str,
    version: &str,
    file: &str,
    artifact: &str,
) -> Result<Result<String, String>, String> {
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("{path}: {e}"));
    let vkey_text = String::from_utf8(read(vkey)?).map_err(|_| format!("{vkey}: not UTF-8"))?;
    let log = parse_vkey(&vkey_text).map_err(|e| format!("{vkey}: {e}"))?;
    let sha256 = match artifact.strip_prefix("sha256:") {
        Some(hex) => parse_hex("sha256", hex).map_err(|e| e.to_string())?,
        None => Sha256::digest(read(artifact)?).into(),
    };
    let claim = ArtifactClaim {
        package: package.into(),
        version: version.into(),
        file: file.into(),
        sha256,
    };
    let proof = match TlogProof::parse(&read(proof)?) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e.to_string())),
    };
    Ok(proof
        .verify_offline(&log, &claim)
        .map(|v| {
            format!(
                "proven: {package} {version} {file} is entry {} of {} at size {}",
                proof.index, v.checkpoint.origin, v.checkpoint.size
            )
        })
        .map_err(|e| e.to_string()))
}
