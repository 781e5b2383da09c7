//! `btlog verify`: is this artifact file proven logged under this identity by this log?
//! Online (`--log`, by the `/v1` API, or with `--index` from the log's tiles alone, which a
//! static tile mirror serves too) or offline (`--proof`); see [`btlog_client::api::verify`]
//! for the checkpoint policy of online verification.

use std::io::Read as _;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::path::{Path, PathBuf};

use super::{api, block_on, hash_file, read_vkey, CliError, Exit, EXIT_CODES};
use btlog_client::api::state::CheckpointState;
use btlog_client::api::verify::{verify_online, verify_tiles, VerifyError};
use btlog_client::api::ApiError;
use btlog_client::tiles::{TileClient, TilesError};
use btlog_core::checkpoint::CheckpointError;
use btlog_core::note::{NoteError, Verifier};
use btlog_core::policy::Policy;
use btlog_core::proof_bundle::{
    ArtifactClaim, ProofBundleError, TlogProof, VerifiedProof, MAX_PROOF_BYTES,
};

/// Verify that an artifact file is logged under exactly this package, version and file,
/// online (--log) or offline (--proof). Exit 0 only when it is.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct VerifyArgs {
    /// Base URL of the log, to verify online.
    #[arg(long, required_unless_present = "proof", conflicts_with = "proof")]
    pub log: Option<String>,
    /// The entry's index in the log (from the registry's submission receipt): verify from the
    /// log's tiles alone (checkpoint, hash tiles, entry bundle), so --log may be a static
    /// tlog-tiles mirror (bucket or CDN) without the /v1 API.
    #[arg(long, requires = "log")]
    pub index: Option<u64>,
    /// A .tlog-proof file, to verify offline.
    #[arg(long)]
    pub proof: Option<PathBuf>,
    /// What is trusted: the log's key, and the witness policy.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Package URL (purl, without version).
    #[arg(long)]
    pub package: String,
    /// The registry's version string.
    #[arg(long)]
    pub version: String,
    /// The registry's file name.
    #[arg(long)]
    pub file: String,
    /// The artifact file; its SHA-256 is computed here.
    #[arg(long)]
    pub artifact: PathBuf,
    /// Directory keeping the newest verified checkpoint of each log (online only)
    /// [default: $XDG_STATE_HOME/btlog or ~/.local/state/btlog].
    #[arg(long, conflicts_with = "proof")]
    pub state: Option<PathBuf>,
}

/// The log key and witness policy a checkpoint is checked against (`verify`, `audit`).
#[derive(clap::Args, Debug)]
pub struct TrustArgs {
    /// The log's vkey, or a file holding it (optional with a --policy naming one log).
    #[arg(long, required_unless_present = "policy")]
    pub vkey: Option<String>,
    /// A C2SP tlog-policy file: the checkpoint must be signed by one of its logs and cosigned
    /// by witnesses meeting its quorum.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// With --policy: the quorum must be met by cosignatures at most this old (e.g. 3600s,
    /// 90m, 24h, 7d), so a log cannot freeze this installer on an old checkpoint.
    #[arg(long, value_name = "DURATION", requires = "policy")]
    pub max_age: Option<String>,
}

/// [`TrustArgs`] loaded: the log key, and the policy check for a checkpoint note.
pub struct Trust {
    /// The log's key.
    pub vkey: Verifier,
    policy: Option<Policy>,
    max_age: Option<u64>,
}

impl TrustArgs {
    /// Loads the key and the policy.
    pub fn load(&self) -> Result<Trust, CliError> {
        let policy = self.policy.as_deref().map(read_policy).transpose()?;
        let max_age = self.max_age.as_deref().map(parse_duration).transpose()?;
        let vkey = log_key(self.vkey.as_deref(), policy.as_ref())?;
        Ok(Trust {
            vkey,
            policy,
            max_age,
        })
    }
}

impl Trust {
    /// Checks a signed checkpoint note against the policy, if any (PROTOCOL.md §10.2).
    pub fn accept(&self, note: &str) -> Result<(), String> {
        let Some(policy) = &self.policy else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        policy
            .check(note, now, self.max_age)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Runs `btlog verify`.
pub fn run(args: VerifyArgs) -> Result<(), CliError> {
    let trust = args.trust.load()?;
    let vkey = trust.vkey.clone();
    let accept = |note: &str| trust.accept(note);
    let (sha256, _) = hash_file(&args.artifact)?;
    let claim = ArtifactClaim {
        package: args.package,
        version: args.version,
        file: args.file,
        sha256,
    };
    let (index, verified) = match (&args.log, &args.proof) {
        (_, Some(path)) => offline(path, &vkey, &claim, &accept)?,
        (Some(url), None) => {
            let state = match args.state {
                Some(dir) => CheckpointState::new(dir),
                None => CheckpointState::new(
                    CheckpointState::default_dir().map_err(|e| CliError::usage(e.to_string()))?,
                ),
            };
            match args.index {
                Some(index) => {
                    let tiles =
                        TileClient::new(url).map_err(|e| CliError::usage(format!("--log: {e}")))?;
                    let verified = block_on(async {
                        verify_tiles(&tiles, &vkey, &claim, index, &state, &accept)
                            .await
                            .map_err(|e| index_error(e, index, &vkey))
                    })?;
                    (index, verified)
                }
                None => {
                    let api = api(url)?;
                    block_on(async {
                        verify_online(&api, &vkey, &claim, &state, &accept)
                            .await
                            .map_err(|e| match e {
                                VerifyError::Api(ApiError::NoApi(probe)) => {
                                    CliError::usage(format!(
                                        "--log {url} has no /v1 API to look the artifact up \
                                         (a static tlog-tiles mirror? {probe}: HTTP 404); give \
                                         --index N, the entry's index from the registry, to \
                                         verify from the log's tiles"
                                    ))
                                }
                                e => online_error(e, &vkey),
                            })
                    })?
                }
            }
        }
        (None, None) => return Err(CliError::usage("give --log URL or --proof FILE")),
    };
    println!(
        "ok: {} {} {} (sha256 {}) is logged at index {} in {} (tree size {})",
        claim.package,
        claim.version,
        claim.file,
        hex::encode(claim.sha256),
        index,
        verified.checkpoint.origin,
        verified.checkpoint.size
    );
    Ok(())
}

/// The log key: --vkey, which must be one of the policy's logs, or the policy's only log.
fn log_key(vkey: Option<&str>, policy: Option<&Policy>) -> Result<Verifier, CliError> {
    let logs = policy.map_or(&[][..], Policy::logs);
    match vkey {
        Some(v) => {
            let v = read_vkey(v)?;
            if policy.is_some() && !logs.iter().any(|l| l.public_key() == v.public_key()) {
                return Err(CliError::usage(format!(
                    "--vkey {} is not a log of the --policy",
                    v.name()
                )));
            }
            Ok(v)
        }
        None => match logs {
            [only] => Ok(only.clone()),
            _ => Err(CliError::usage(format!(
                "the --policy lists {} logs: give --vkey to pick one",
                logs.len()
            ))),
        },
    }
}

fn read_policy(path: &Path) -> Result<Policy, CliError> {
    let fail = |e: String| CliError::usage(format!("--policy {}: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut bytes))
        .map_err(|e| fail(e.to_string()))?;
    Policy::parse(&bytes).map_err(|e| fail(e.to_string()))
}

/// `--max-age`, in seconds ([`btlog_client::parse_duration`]).
fn parse_duration(text: &str) -> Result<u64, CliError> {
    btlog_client::parse_duration(text)
        .map(|d| d.as_secs().max(1))
        .ok_or_else(|| {
            CliError::usage(format!(
                "--max-age {text:?}: expected e.g. 3600s, 90m, 24h or 7d"
            ))
        })
}

fn offline(
    path: &Path,
    vkey: &Verifier,
    claim: &ArtifactClaim,
    accept: &dyn Fn(&str) -> Result<(), String>,
) -> Result<(u64, VerifiedProof), CliError> {
    let fail = |e: std::io::Error| CliError::usage(format!("--proof {}: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(fail)?
        .take(MAX_PROOF_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    let proof = TlogProof::parse(&bytes).map_err(|e| proof_error(e, vkey))?;

    let verified = proof
        .verify_offline(vkey, claim)
        .map_err(|e| proof_error(e, vkey))?;
    accept(&proof.checkpoint).map_err(|e| {
        CliError::new(
            Exit::NotProven,
            format!("verification failed: checkpoint refused by the witness policy: {e}"),
        )
    })?;
    Ok((proof.index, verified))
}

/// Why the proof does not prove the claim, for a person.
fn proof_error(e: ProofBundleError, vkey: &Verifier) -> CliError {
    let detail = match &e {
        ProofBundleError::Mismatch {
            field: "sha256",
            expected,
            logged,
        } => format!(
            "the artifact's SHA-256 is {expected} but the log has {logged} for this identity: \
             the file is not the one that was published"
        ),
        ProofBundleError::Mismatch { .. } => format!("the proof is for another artifact: {e}"),
        ProofBundleError::Checkpoint(CheckpointError::Signature(NoteError::NoKnownSignature)) => {
            format!(
                "the checkpoint is not signed by {}+{:08x}: a proof from another log, or the wrong --vkey",
                vkey.name(),
                vkey.key_id()
            )
        }
        ProofBundleError::Checkpoint(_) => format!(
            "{e} (expected a checkpoint signed by {}+{:08x})",
            vkey.name(),
            vkey.key_id()
        ),
        _ => e.to_string(),
    };
    CliError::new(Exit::NotProven, format!("verification failed: {detail}"))
}

/// Why verification from the tiles at `--index` failed, for a person: as [`online_error`], and
/// saying so when the entry at the index is not this artifact's identity or beyond the tree.
fn index_error(e: VerifyError, index: u64, vkey: &Verifier) -> CliError {
    let detail = match &e {
        VerifyError::Proof(ProofBundleError::Mismatch {
            field: "package" | "version" | "file",
            ..
        }) => format!("entry {index} of the log is for another artifact ({e}); is --index right?"),
        VerifyError::Proof(ProofBundleError::NotPublish(kind)) => format!(
            "entry {index} of the log is a `{kind}`, not the publish of this artifact; is --index \
             right?"
        ),
        VerifyError::Proof(ProofBundleError::IndexOutOfRange { size, .. }) => format!(
            "the log has no entry {index}: its checkpoint's tree has {size} entries; is --index \
             right?"
        ),
        _ => return online_error(e, vkey),
    };
    CliError::new(Exit::NotProven, format!("verification failed: {detail}"))
}

pub(super) fn online_error(e: VerifyError, vkey: &Verifier) -> CliError {
    match e {
        VerifyError::Tiles(t) => tiles_error(t, vkey),
        VerifyError::NotLogged { .. } => {
            CliError::new(Exit::NotProven, format!("verification failed: {e}"))
        }
        VerifyError::Proof(p) => proof_error(p, vkey),
        VerifyError::Policy(_) => {
            CliError::new(Exit::NotProven, format!("verification failed: {e}"))
        }
        VerifyError::Api(a) => a.into(),
        VerifyError::State(s) => CliError::usage(s.to_string()),
        VerifyError::Unproven(_) => CliError::new(
            Exit::Unreachable,
            format!("{e}; refusing to trust this log"),
        ),
        VerifyError::Inconsistent(i) => {
            let mut evidence = format!(
                "checkpoint verified before:\n{}\ncheckpoint served now:\n{}",
                i.stored, i.served
            );
            if let Some((root, proof)) = &i.prefix {
                let b64 = |h: &[u8; 32]| B64.encode(h);
                let proof: Vec<String> = proof.iter().map(b64).collect();
                evidence.push_str(&format!(
                    "root of the larger tree at the smaller size: {}\nconsistency proof from it \
                     to the larger root: {}\n",
                    b64(root),
                    proof.join(" ")
                ));
            }
            CliError {
                code: Exit::Inconsistent,
                message: format!("{i}; refusing to trust this log"),
                evidence: Some(evidence),
            }
        }
    }
}

/// A failure reading the log's tiles: a bad checkpoint or tiles not matching it are not
/// proven (1); a missing, malformed or unreachable resource is an unavailable log (3).
fn tiles_error(e: TilesError, vkey: &Verifier) -> CliError {
    match e {
        TilesError::Checkpoint { source, .. } => {
            proof_error(ProofBundleError::Checkpoint(source), vkey)
        }
        TilesError::Fetch(f) => ApiError::Fetch(f).into(),
        TilesError::Missing(_) | TilesError::Malformed { .. } => {
            CliError::new(Exit::Unreachable, format!("log unavailable: {e}"))
        }
        TilesError::Proof(_) | TilesError::Unverified(_) | TilesError::NotFetched { .. } => {
            CliError::new(
                Exit::NotProven,
                format!("verification failed: {e}; refusing what this endpoint serves"),
            )
        }
    }
}
