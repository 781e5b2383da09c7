//! `btlog audit <lockfile>`: is every locked artifact logged under the digest the lockfile pins,
//! and not yanked or deleted since (PROTOCOL.md §11)? Each is verified online like
//! `btlog verify` (proof, checkpoint consistent with the stored state, witness policy when
//! given). Lockfiles: `Cargo.lock` (crates.io packages with a `checksum`).

use std::path::{Path, PathBuf};

use super::{api, block_on, read_vkey, CliError, Exit};
use btlog_client::api::state::CheckpointState;
use btlog_client::api::verify::{verify_online, VerifyError};
use btlog_core::import::{cargo_purl, crate_file};
use btlog_core::proof_bundle::{ArtifactClaim, ProofBundleError};
use futures_util::StreamExt as _;

/// Lookups in flight at once.
const CONCURRENCY: usize = 8;

/// Audit a lockfile against the log: exit 0 when every locked artifact is proven logged with
/// its pinned digest and not withdrawn; 1 when any is not (each named); 3 log unreachable;
/// 4 inconsistent log.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The lockfile (Cargo.lock).
    pub lockfile: PathBuf,
    /// Base URL of the log.
    #[arg(long)]
    pub log: String,
    /// The log's vkey, or a file holding it.
    #[arg(long)]
    pub vkey: String,
    /// Directory keeping the newest verified checkpoint of each log (as for `btlog verify`).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// One JSON object per artifact instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One locked artifact.
struct Locked {
    name: String,
    claim: ArtifactClaim,
}

/// What the audit found for one artifact.
enum Finding {
    Proven { index: u64 },
    NotLogged,
    OtherDigest { logged: String },
    Withdrawn { kind: &'static str, index: u64 },
}

/// Runs `btlog audit`.
pub fn run(args: AuditArgs) -> Result<(), CliError> {
    let vkey = read_vkey(&args.vkey)?;
    let locked = cargo_lock(&args.lockfile)?;
    let state = CheckpointState::new(match args.state.clone() {
        Some(dir) => dir,
        None => CheckpointState::default_dir().map_err(|e| CliError::usage(e.to_string()))?,
    });
    let api = api(&args.log)?;
    let accept = |_: &str| Ok(());
    let results: Vec<(Locked, Result<Finding, CliError>)> = block_on(async {
        let all = futures_util::stream::iter(locked)
            .map(|l| {
                let (api, vkey, state, accept) = (&api, &vkey, &state, &accept);
                async move {
                    let found = match verify_online(api, vkey, &l.claim, state, accept).await {
                        Ok((index, _)) => match api
                            .withdrawn(&l.claim.package, &l.claim.version, &l.claim.file)
                            .await
                        {
                            Ok(Some(kind)) => Ok(Finding::Withdrawn {
                                kind: kind.as_str(),
                                index,
                            }),
                            Ok(None) => Ok(Finding::Proven { index }),
                            Err(e) => Err(e.into()),
                        },
                        Err(VerifyError::NotLogged { .. }) => Ok(Finding::NotLogged),
                        Err(VerifyError::Proof(ProofBundleError::Mismatch {
                            field: "sha256",
                            logged,
                            ..
                        })) => Ok(Finding::OtherDigest { logged }),
                        Err(e) => Err(super::verify::online_error(e, vkey)),
                    };
                    (l, found)
                }
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ok::<_, CliError>(all)
    })?;
    let mut worst: Option<CliError> = None;
    let mut failed = 0;
    for (l, found) in &results {
        let claim = &l.claim;
        let digest = hex::encode(claim.sha256);
        let (ok, line, json) = match found {
            Ok(Finding::Proven { index }) => (
                true,
                format!("ok          {} {} (index {index})", l.name, claim.version),
                serde_json::json!({"status": "ok", "index": index}),
            ),
            Ok(Finding::NotLogged) => (
                false,
                format!(
                    "NOT LOGGED  {} {}: no publish of {} in the log",
                    l.name, claim.version, claim.file
                ),
                serde_json::json!({"status": "not-logged"}),
            ),
            Ok(Finding::OtherDigest { logged }) => (
                false,
                format!(
                    "DIGEST      {} {}: the lockfile pins sha256 {digest}, the log has {logged}",
                    l.name, claim.version
                ),
                serde_json::json!({"status": "other-digest", "logged": logged}),
            ),
            Ok(Finding::Withdrawn { kind, index }) => (
                false,
                format!(
                    "WITHDRAWN   {} {}: logged at index {index}, then {kind}",
                    l.name, claim.version
                ),
                serde_json::json!({"status": kind, "index": index}),
            ),
            Err(e) => (
                false,
                format!("ERROR       {} {}: {}", l.name, claim.version, e.message),
                serde_json::json!({"status": "error", "error": e.message}),
            ),
        };
        if args.json {
            let mut j = json;
            j["package"] = claim.package.clone().into();
            j["version"] = claim.version.clone().into();
            j["file"] = claim.file.clone().into();
            j["sha256"] = digest.into();
            println!("{j}");
        } else {
            println!("{line}");
        }
        if !ok {
            failed += 1;
        }
        if let Err(e) = found {
            // The most severe error decides the exit code: inconsistent, then unreachable.
            if worst
                .as_ref()
                .is_none_or(|w| (e.code as i32) > (w.code as i32))
            {
                worst = Some(CliError::new(e.code, e.message.clone()));
            }
        }
    }
    if let Some(e) = worst.filter(|e| matches!(e.code, Exit::Inconsistent | Exit::Unreachable)) {
        return Err(e);
    }
    if failed > 0 {
        return Err(CliError::new(
            Exit::NotProven,
            format!(
                "{failed} of {} locked artifacts are not proven logged as pinned",
                results.len()
            ),
        ));
    }
    Ok(())
}

/// The crates.io packages of a Cargo.lock that carry a checksum.
fn cargo_lock(path: &Path) -> Result<Vec<Locked>, CliError> {
    #[derive(serde::Deserialize)]
    struct Lock {
        #[serde(default)]
        package: Vec<Package>,
    }
    #[derive(serde::Deserialize)]
    struct Package {
        name: String,
        version: String,
        source: Option<String>,
        checksum: Option<String>,
    }
    let fail = |e: String| CliError::usage(format!("{}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let lock: Lock = toml::from_str(&text).map_err(|e| fail(e.message().to_owned()))?;
    lock.package
        .into_iter()
        .filter(|p| {
            p.source.as_deref() == Some("registry+https://github.com/rust-lang/crates.io-index")
        })
        .filter_map(|p| Some((p.checksum.clone()?, p)))
        .map(|(sum, p)| {
            let sha256 = btlog_core::entry::parse_hex::<32>("checksum", &sum)
                .map_err(|e| fail(format!("{} {}: {e}", p.name, p.version)))?;
            Ok(Locked {
                claim: ArtifactClaim {
                    package: cargo_purl(&p.name),
                    version: p.version.clone(),
                    file: crate_file(&p.name, &p.version),
                    sha256,
                },
                name: p.name,
            })
        })
        .collect()
}
