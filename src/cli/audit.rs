//! `btlog audit <lockfile>`: is every locked artifact logged under the digest the lockfile pins,
//! and not yanked or deleted since (PROTOCOL.md §11)? Each is verified online like
//! `btlog verify` (proof, checkpoint consistent with the stored state, witness policy when
//! given). Lockfiles: `Cargo.lock` (crates.io packages with a `checksum`) and pip
//! requirements files pinned with `==` and `--hash=sha256:` (any file of that version with one
//! of those digests), `uv.lock` and `poetry.lock` (the same, with the files' hashes they list),
//! and npm `package-lock.json` (the `integrity` SHA-512 of each package).

use std::path::{Path, PathBuf};

use super::{api, block_on, CliError, Exit};
use btlog_client::api::state::CheckpointState;
use btlog_client::api::verify::{verify_online, VerifyError};
use btlog_client::api::{withdrawn_in, ApiError, Withdrawn};
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
    /// Base URL of the log, to audit online.
    #[arg(long, required_unless_present = "offline", conflicts_with = "offline")]
    pub log: Option<String>,
    /// Audit offline against the `.tlog-proof` files in DIR (kept next to the artifacts):
    /// proofs only, so a later yank or delete is not seen.
    #[arg(long, value_name = "DIR")]
    pub offline: Option<PathBuf>,
    /// The log's key and the witness policy.
    #[command(flatten)]
    pub trust: super::verify::TrustArgs,
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
    package: String,
    version: String,
    pinned: Pinned,
}

/// What the lockfile pins.
enum Pinned {
    /// One file with its digest (Cargo.lock).
    File { file: String, sha256: [u8; 32] },
    /// Any file of the version with one of these digests (pip `--hash`).
    AnyFile(Vec<[u8; 32]>),
    /// The file of the version with this SHA-512 (npm `integrity`).
    Sha512([u8; 64]),
    /// Nothing usable: why.
    Unpinned(String),
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
    let trust = args.trust.load()?;
    let vkey = trust.vkey.clone();
    // Told apart by content: uv/poetry locks list files with hashes, a Cargo.lock is other TOML
    // with [[package]] tables, a package-lock.json is JSON with `packages`; else requirements.
    let lockfile = args.lockfile.as_path();
    let locked = match python_lock(lockfile)? {
        Some(locked) => locked,
        None => match cargo_lock(lockfile)? {
            Some(locked) => locked,
            None => match package_lock(lockfile)? {
                Some(locked) => locked,
                None => requirements(lockfile)?,
            },
        },
    };
    let state = CheckpointState::new(match args.state.clone() {
        Some(dir) => dir,
        None => CheckpointState::default_dir().map_err(|e| CliError::usage(e.to_string()))?,
    });
    if locked.is_empty() {
        return Err(CliError::usage(format!(
            "{}: no registry artifacts to audit",
            args.lockfile.display()
        )));
    }
    let accept = |note: &str| trust.accept(note);
    let results = match (&args.offline, &args.log) {
        (Some(dir), _) => offline(dir, &vkey, &accept, locked)?,
        (None, Some(url)) => online(&api(url)?, &vkey, &state, &accept, locked)?,
        (None, None) => return Err(CliError::usage("give --log URL or --offline DIR")),
    };
    report(&args, &results)
}

type Audited = Vec<(Locked, Result<Finding, CliError>)>;

/// Each locked artifact verified online, eight at a time.
fn online(
    api: &btlog_client::api::Api,
    vkey: &btlog_core::note::Verifier,
    state: &CheckpointState,
    accept: &(dyn Fn(&str) -> Result<(), String> + Sync),
    locked: Vec<Locked>,
) -> Result<Audited, CliError> {
    block_on(async {
        // Audit reads each package's entries and looks artifacts up: the log server's `/v1`
        // API, which a static tile mirror does not serve. Say so once, not per artifact.
        if let Some(first) = locked.first() {
            api.require_v1(&first.package).await.map_err(|e| match e {
                ApiError::NoApi(url) => CliError::usage(format!(
                    "audit needs the log server's /v1 API, not a static tile mirror: {url} \
                     answered 404; give the server's URL as --log (installers can verify one \
                     artifact against a tile mirror with `btlog verify --index`)"
                )),
                e => e.into(),
            })?;
        }
        let all = futures_util::stream::iter(locked)
            .map(|l| async move {
                if let Pinned::Unpinned(why) = &l.pinned {
                    let why = why.clone();
                    return (l, Err(CliError::usage(why)));
                }
                // One read of the package's entries serves both the pinned files and the
                // yank check.
                let listing = match api.package_entries(&l.package).await {
                    Ok(listing) => listing,
                    Err(e) => return (l, Err(e.into())),
                };
                let claims = match resolve(&l, &listing) {
                    Ok(claims) => claims,
                    Err(finding) => return (l, Ok(finding)),
                };
                let withdrawn = withdrawn_in(&listing);
                let mut found = Ok(Finding::NotLogged);
                for claim in &claims {
                    found = audit_one(api, vkey, state, accept, claim, &withdrawn).await;
                    if !matches!(found, Ok(Finding::Proven { .. })) {
                        break;
                    }
                }
                (l, found)
            })
            .buffered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ok::<_, CliError>(all)
    })
}

/// Verifies one artifact online, then whether it stands withdrawn (per the package's entries).
async fn audit_one(
    api: &btlog_client::api::Api,
    vkey: &btlog_core::note::Verifier,
    state: &CheckpointState,
    accept: &(dyn Fn(&str) -> Result<(), String> + Sync),
    claim: &ArtifactClaim,
    withdrawn: &Withdrawn,
) -> Result<Finding, CliError> {
    match verify_online(api, vkey, claim, state, accept).await {
        Ok((index, _)) => match withdrawn.get(&(claim.version.clone(), claim.file.clone())) {
            Some(kind) => Ok(Finding::Withdrawn {
                kind: kind.as_str(),
                index,
            }),
            None => Ok(Finding::Proven { index }),
        },
        Err(VerifyError::NotLogged { .. }) => Ok(Finding::NotLogged),
        Err(VerifyError::Proof(ProofBundleError::Mismatch {
            field: "sha256",
            logged,
            ..
        })) => Ok(Finding::OtherDigest { logged }),
        Err(e) => Err(super::verify::online_error(e, vkey)),
    }
}

/// Prints the findings and decides the exit code.
fn report(args: &AuditArgs, results: &Audited) -> Result<(), CliError> {
    let mut worst: Option<CliError> = None;
    let mut failed = 0;
    for (l, found) in results {
        let digest = match &l.pinned {
            Pinned::File { sha256, .. } => format!("sha256 {}", hex::encode(sha256)),
            Pinned::AnyFile(hashes) => format!(
                "sha256 {}",
                hashes.iter().map(hex::encode).collect::<Vec<_>>().join(",")
            ),
            Pinned::Sha512(sha512) => format!("sha512 {}", hex::encode(sha512)),
            Pinned::Unpinned(_) => String::new(),
        };
        let (ok, line, json) = match found {
            Ok(Finding::Proven { index }) => (
                true,
                format!("ok          {} {} (index {index})", l.name, l.version),
                serde_json::json!({"status": "ok", "index": index}),
            ),
            Ok(Finding::NotLogged) => (
                false,
                format!(
                    "NOT LOGGED  {} {}: no publish of it in the log",
                    l.name, l.version
                ),
                serde_json::json!({"status": "not-logged"}),
            ),
            Ok(Finding::OtherDigest { logged }) => (
                false,
                format!(
                    "DIGEST      {} {}: the lockfile pins {digest}, the log has {logged}",
                    l.name, l.version
                ),
                serde_json::json!({"status": "other-digest", "logged": logged}),
            ),
            Ok(Finding::Withdrawn { kind, index }) => (
                false,
                format!(
                    "WITHDRAWN   {} {}: logged at index {index}, then {kind}",
                    l.name, l.version
                ),
                serde_json::json!({"status": kind, "index": index}),
            ),
            Err(e) => (
                false,
                format!("ERROR       {} {}: {}", l.name, l.version, e.message),
                serde_json::json!({"status": "error", "error": e.message}),
            ),
        };
        if args.json {
            let mut j = json;
            j["package"] = l.package.clone().into();
            j["version"] = l.version.clone().into();
            j["pinned"] = digest.into();
            println!("{j}");
        } else {
            println!("{line}");
        }
        if !ok {
            failed += 1;
        }
        if let Err(e) = found {
            // Inconsistent (4) outranks unreachable (3); other errors count as not proven.
            let rank = |c: Exit| match c {
                Exit::Inconsistent => 2,
                Exit::Unreachable => 1,
                _ => 0,
            };
            if rank(e.code) > worst.as_ref().map_or(0, |w: &CliError| rank(w.code)) {
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

/// The crates.io packages of a Cargo.lock that carry a checksum; None when the file is not a
/// Cargo.lock (not TOML with `[[package]]` tables).
fn cargo_lock(path: &Path) -> Result<Option<Vec<Locked>>, CliError> {
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
    let Ok(lock) = toml::from_str::<Lock>(&text) else {
        return Ok(None);
    };
    if lock.package.is_empty() {
        return Ok(None);
    }
    lock.package
        .into_iter()
        .filter(|p| {
            p.source.as_deref() == Some("registry+https://github.com/rust-lang/crates.io-index")
        })
        .map(|p| {
            // A crates.io package without a checksum (a v1 lockfile keeps them apart) cannot
            // be audited: it is reported, never skipped.
            let pinned = match &p.checksum {
                Some(sum) => Pinned::File {
                    file: crate_file(&p.name, &p.version),
                    sha256: btlog_core::entry::parse_hex::<32>("checksum", sum)
                        .map_err(|e| fail(format!("{} {}: {e}", p.name, p.version)))?,
                },
                None => Pinned::Unpinned(format!("{} {}: no checksum", p.name, p.version)),
            };
            Ok(Locked {
                package: cargo_purl(&p.name),
                pinned,
                version: p.version,
                name: p.name,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The claims to verify for `l`, given its package's entries: its pinned file, or every
/// logged file of its version with a digest it pins; else what the log shows instead. (An
/// unpinned `l` never gets here: the caller reports it.)
fn resolve(l: &Locked, listing: &[(u64, String)]) -> Result<Vec<ArtifactClaim>, Finding> {
    let claim = |file: &str, sha256: [u8; 32]| ArtifactClaim {
        package: l.package.clone(),
        version: l.version.clone(),
        file: file.to_owned(),
        sha256,
    };
    let wanted = match &l.pinned {
        Pinned::File { file, sha256 } => return Ok(vec![claim(file, *sha256)]),
        Pinned::Unpinned(_) => return Err(Finding::NotLogged),
        Pinned::AnyFile(hashes) => hashes.len(),
        Pinned::Sha512(_) => 1,
    };
    // Every pinned digest must be a logged file of the version: the installer may fetch any.
    let (mut found, mut other) = (Vec::new(), None);
    for (_, text) in listing {
        let Ok(entry) = btlog_core::entry::Entry::parse(text.as_bytes()) else {
            continue;
        };
        let d = entry.data();
        if d.kind != btlog_core::entry::Kind::Publish || d.version != l.version {
            continue;
        }
        if pins(&l.pinned, d) {
            if !found.iter().any(|c: &ArtifactClaim| c.sha256 == d.sha256) {
                found.push(claim(&d.file, d.sha256));
            }
            continue;
        }
        other.get_or_insert_with(|| match (&l.pinned, &d.sha512) {
            (Pinned::Sha512(_), Some(sha512)) => {
                format!("sha512 {} for {}", hex::encode(sha512), d.file)
            }
            _ => format!("{} for {}", hex::encode(d.sha256), d.file),
        });
    }
    if found.len() == wanted {
        return Ok(found);
    }
    Err(match (&l.pinned, found.is_empty(), other) {
        (Pinned::AnyFile(hashes), false, _) => {
            let missing: Vec<String> = hashes
                .iter()
                .filter(|h| !found.iter().any(|c| c.sha256 == **h))
                .map(hex::encode)
                .collect();
            Finding::OtherDigest {
                logged: format!("no file with sha256 {}", missing.join(",")),
            }
        }
        (_, _, Some(logged)) => Finding::OtherDigest { logged },
        _ => Finding::NotLogged,
    })
}

/// The requirements of a pip requirements file: `name==version` with `--hash=sha256:` options
/// (continuation lines joined, comments and other options skipped).
fn requirements(path: &Path) -> Result<Vec<Locked>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let line = line.find(" #").map_or(line, |i| &line[..i]).trim();
        if ["-r ", "-c ", "--requirement", "--constraint"]
            .iter()
            .any(|o| line.starts_with(o))
        {
            // An included file is not followed: say so rather than pass without it.
            out.push(Locked {
                package: String::new(),
                version: String::new(),
                pinned: Pinned::Unpinned(format!("{line}: audit the included file itself")),
                name: line.to_owned(),
            });
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with('-') {
            continue;
        }
        let spec = line.split([' ', ';']).next().unwrap_or_default();
        let (name, version) = spec.split_once("==").unwrap_or((spec, ""));
        let name = name.split('[').next().unwrap_or(name).to_owned();
        let hashes: Vec<[u8; 32]> = line
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("--hash=sha256:"))
            .filter_map(|h| {
                btlog_core::entry::parse_hex::<32>("hash", &h.to_ascii_lowercase()).ok()
            })
            .collect();
        let pinned = if version.is_empty() {
            Pinned::Unpinned(format!("{spec}: not pinned with =="))
        } else if hashes.is_empty() {
            Pinned::Unpinned(format!("{spec}: no --hash=sha256:"))
        } else {
            Pinned::AnyFile(hashes)
        };
        out.push(Locked {
            package: btlog_core::import::pypi_purl(&name),
            version: version.to_owned(),
            pinned,
            name,
        });
    }
    Ok(out)
}

/// The registry packages of an npm `package-lock.json` (lockfile version 2 or 3: `packages`)
/// with a SHA-512 `integrity`; None when the file is not one.
fn package_lock(path: &Path) -> Result<Option<Vec<Locked>>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok(None);
    };
    let Some(packages) = doc.get("packages").and_then(|p| p.as_object()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (key, p) in packages {
        let Some((_, name)) = key.rsplit_once("node_modules/") else {
            continue; // the project itself
        };
        let version = p
            .get("version")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        let integrity = p.get("integrity").and_then(|v| v.as_str());
        let pinned = match integrity.and_then(btlog_core::import::npm_sha512) {
            Some(sha512) => Pinned::Sha512(sha512),
            None => Pinned::Unpinned(format!("{name}: no sha512 integrity")),
        };
        out.push(Locked {
            package: btlog_core::import::npm_purl(name),
            version: version.to_owned(),
            pinned,
            name: name.to_owned(),
        });
    }
    Ok(Some(out))
}

/// The packages of a `uv.lock` or `poetry.lock`: TOML `[[package]]` tables with `name`,
/// `version` and `sha256:` hashes of their files (uv: `sdist.hash`, `wheels[].hash`; poetry:
/// `files[].hash`). None when the file is not such a lockfile.
fn python_lock(path: &Path) -> Result<Option<Vec<Locked>>, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let Ok(doc) = toml::from_str::<toml::Table>(&text) else {
        return Ok(None);
    };
    let Some(packages) = doc.get("package").and_then(|p| p.as_array()) else {
        return Ok(None);
    };
    let hash = |v: &toml::Value| {
        let h = v.get("hash")?.as_str()?.strip_prefix("sha256:")?;
        btlog_core::entry::parse_hex::<32>("hash", &h.to_ascii_lowercase()).ok()
    };
    let mut out = Vec::new();
    let mut python = false;
    for p in packages {
        let (Some(name), Some(version)) = (
            p.get("name").and_then(|v| v.as_str()),
            p.get("version").and_then(|v| v.as_str()),
        ) else {
            continue;
        };
        let files = ["wheels", "files"]
            .iter()
            .filter_map(|k| p.get(*k).and_then(|v| v.as_array()))
            .flatten()
            .chain(p.get("sdist"));
        let hashes: Vec<[u8; 32]> = files.filter_map(hash).collect();
        python |= p.get("sdist").is_some() || p.get("wheels").is_some() || p.get("files").is_some();
        if hashes.is_empty() {
            continue; // the project itself, or a path or git dependency
        }
        out.push(Locked {
            package: btlog_core::import::pypi_purl(name),
            version: version.to_owned(),
            pinned: Pinned::AnyFile(hashes),
            name: name.to_owned(),
        });
    }
    Ok(python.then_some(out))
}

/// Whether the logged publish `d` is the artifact `pinned` pins.
fn pins(pinned: &Pinned, d: &btlog_core::entry::EntryData) -> bool {
    match pinned {
        Pinned::File { file, sha256 } => d.file == *file && d.sha256 == *sha256,
        Pinned::AnyFile(hashes) => hashes.contains(&d.sha256),
        Pinned::Sha512(sha512) => d.sha512.as_ref() == Some(sha512),
        Pinned::Unpinned(_) => false,
    }
}

/// Each locked artifact against the proofs in `dir` (every `*.tlog-proof`): the proof of a
/// publish of its package and version that it pins, verified offline (PROTOCOL.md §5).
fn offline(
    dir: &Path,
    vkey: &btlog_core::note::Verifier,
    accept: &dyn Fn(&str) -> Result<(), String>,
    locked: Vec<Locked>,
) -> Result<Audited, CliError> {
    use btlog_core::proof_bundle::{TlogProof, MAX_PROOF_BYTES};
    use std::io::Read as _;
    let fail = |e: std::io::Error| CliError::usage(format!("--offline {}: {e}", dir.display()));
    let mut proofs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(fail)? {
        let path = entry.map_err(fail)?.path();
        if !path.to_string_lossy().ends_with(".tlog-proof") {
            continue;
        }
        let mut bytes = Vec::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_PROOF_BYTES as u64).read_to_end(&mut bytes))
            .map_err(fail)?;
        let Ok(proof) = TlogProof::parse(&bytes) else {
            continue;
        };
        if let Ok(entry) = btlog_core::entry::Entry::parse(&proof.entry) {
            proofs.push((entry, proof));
        }
    }
    Ok(locked
        .into_iter()
        .map(|l| {
            let of_version: Vec<_> = proofs
                .iter()
                .filter(|(e, _)| {
                    let d = e.data();
                    d.kind == btlog_core::entry::Kind::Publish
                        && d.package == l.package
                        && d.version == l.version
                })
                .collect();
            let matching: Vec<_> = of_version
                .iter()
                .filter(|(e, _)| pins(&l.pinned, e.data()))
                .collect();
            // Every pinned digest needs its proof: the installer may fetch any of the files.
            let unproven: Vec<String> = match &l.pinned {
                Pinned::AnyFile(hashes) => hashes
                    .iter()
                    .filter(|h| !matching.iter().any(|(e, _)| e.data().sha256 == **h))
                    .map(hex::encode)
                    .collect(),
                _ => Vec::new(),
            };
            let found = if matching.is_empty() {
                Ok(match of_version.first() {
                    Some((e, _)) => Finding::OtherDigest {
                        logged: format!("{} for {}", hex::encode(e.data().sha256), e.data().file),
                    },
                    None => Finding::NotLogged,
                })
            } else if !unproven.is_empty() {
                Ok(Finding::OtherDigest {
                    logged: format!("no proof for sha256 {}", unproven.join(",")),
                })
            } else {
                matching
                    .iter()
                    .map(|(e, proof)| {
                        let d = e.data();
                        let claim = ArtifactClaim {
                            package: d.package.clone(),
                            version: d.version.clone(),
                            file: d.file.clone(),
                            sha256: d.sha256,
                        };
                        proof
                            .verify_offline(vkey, &claim)
                            .map_err(|e| e.to_string())
                            .and_then(|_| accept(&proof.checkpoint))
                            .map(|()| Finding::Proven { index: proof.index })
                            .map_err(|e| {
                                CliError::new(
                                    Exit::NotProven,
                                    format!("{}.tlog-proof: {e}", d.file),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(|mut all| all.remove(0))
            };
            (l, found)
        })
        .collect())
}
