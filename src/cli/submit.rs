//! `btlog submit`: log one artifact or a JSON Lines batch, print each entry's index and status,
//! and keep a verified `.tlog-proof` per published artifact.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{api, block_on, hash_file, read_vkey, CliError, Exit, EXIT_CODES};
use btlog_client::api::{Api, SubmitReply, SubmitStatus};
use btlog_client::file::Access;
use btlog_core::entry::{parse_hex, EntryFields, Kind};
use btlog_core::note::Verifier;
use btlog_core::proof_bundle::ArtifactClaim;

/// Entries per request; below the server's default limit of 1000.
const CHUNK: usize = 500;
/// Stands in for the registry when checking entries locally; the server writes the real one.
const CHECK_REGISTRY: &str = "local.check";

/// Log artifacts. One: --package --version --file and --artifact PATH (sha256 and size are
/// computed) or --sha256 HEX. Many: --batch FILE, one PROTOCOL.md §6 entry JSON object per line.
/// Prints `<index> <status> <package> <version> <file> [<proof file>]` per entry.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct SubmitArgs {
    /// Base URL of the log (http://host:port).
    #[arg(long)]
    pub log: String,
    /// The submitter token.
    #[command(flatten)]
    pub auth: TokenArgs,
    /// Or the registry's own metadata files, as `btlog import` takes them (a publish hook).
    #[command(flatten)]
    pub registry_files: super::import::RegistryFiles,
    /// JSON Lines file of entries, e.g. {"kind":"publish","package":"pkg:npm/x","version":"1.0.0","file":"x-1.0.0.tgz","sha256":"<hex>"}.
    #[arg(long, conflicts_with_all = ["package", "version", "file", "artifact", "sha256", "size", "publisher", "provenance", "time", "kind"])]
    pub batch: Option<PathBuf>,
    /// Package URL (purl, without version).
    #[arg(long, required_unless_present_any = ["batch", "registry_files"])]
    pub package: Option<String>,
    /// The registry's version string.
    #[arg(long, required_unless_present_any = ["batch", "registry_files"])]
    pub version: Option<String>,
    /// The registry's file name.
    #[arg(long, required_unless_present_any = ["batch", "registry_files"])]
    pub file: Option<String>,
    /// The artifact file: its SHA-256 and size are computed here.
    #[arg(long, required_unless_present_any = ["batch", "sha256", "registry_files"], conflicts_with = "sha256")]
    pub artifact: Option<PathBuf>,
    /// SHA-256 of the artifact, 64 lowercase hex (instead of --artifact).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Artifact size in bytes (with --sha256; --artifact computes it).
    #[arg(long, conflicts_with = "artifact")]
    pub size: Option<u64>,
    /// Publisher identity (e.g. a CI workflow).
    #[arg(long)]
    pub publisher: Option<String>,
    /// Provenance attestation digest, `sha256:<hex>`.
    #[arg(long)]
    pub provenance: Option<String>,
    /// Time, `YYYY-MM-DDTHH:MM:SSZ`.
    #[arg(long)]
    pub time: Option<String>,
    /// Entry kind: publish, yank, unyank, delete, owner-add, owner-remove.
    #[arg(long, default_value = "publish")]
    pub kind: String,
    /// Write each published artifact's proof to DIR/<file>.tlog-proof.
    #[arg(long, value_name = "DIR", requires = "vkey")]
    pub proof_dir: Option<PathBuf>,
    /// Write the proof next to the artifact, as <ARTIFACT>.tlog-proof.
    #[arg(long, requires_all = ["artifact", "vkey"], conflicts_with = "proof_dir")]
    pub proof_next_to_artifact: bool,
    /// The log's vkey (text or file); proofs are verified with it before they are written.
    #[arg(long)]
    pub vkey: Option<String>,
}

/// Where the submitter token comes from.
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// Submitter token (from `btlog token`). Prefer BTLOG_TOKEN or --token-file: a command
    /// line is visible to every user of the machine (`ps`).
    #[arg(
        long,
        env = "BTLOG_TOKEN",
        hide_env_values = true,
        required_unless_present = "token_file"
    )]
    pub token: Option<String>,
    /// File holding the submitter token (a final newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

/// Entries labelled for error messages (`entry`, `FILE line N`).
type Labelled = Vec<(String, EntryFields)>;

/// An entry to submit and where its proof goes, if anywhere.
struct Item {
    fields: EntryFields,
    proof_path: Option<PathBuf>,
}

/// Runs `btlog submit`.
pub fn run(args: SubmitArgs) -> Result<(), CliError> {
    if !args.registry_files.is_empty() {
        return super::import::submit_files(&args.log, &args.auth, &args.registry_files);
    }
    let token = args.auth.token()?;
    let items = items(&args)?;
    prepare_proof_dirs(&items)?;
    let vkey = args.vkey.as_deref().map(read_vkey).transpose()?;
    let api = api(&args.log)?;
    let mut conflicts = 0usize;
    block_on(async {
        for chunk in items.chunks(CHUNK) {
            let fields: Vec<EntryFields> = chunk.iter().map(|i| i.fields.clone()).collect();
            let reply = api.submit(&token, &fields).await?;
            conflicts += report(&api, vkey.as_ref(), chunk, &reply).await?;
        }
        Ok(())
    })?;
    if conflicts > 0 {
        return Err(CliError::new(
            Exit::Conflict,
            format!("{conflicts} entr{} conflict with what the log holds: the identity is already logged with another sha256",
                if conflicts == 1 { "y" } else { "ies" }),
        ));
    }
    Ok(())
}

impl TokenArgs {
    /// The token from --token (or BTLOG_TOKEN) or from --token-file.
    pub fn token(&self) -> Result<String, CliError> {
        let args = self;
        let (token, from) = match (&args.token, &args.token_file) {
            (Some(t), _) => (t.clone(), "--token"),
            (None, Some(path)) => {
                use std::io::Read as _;
                // A token is 49 bytes; reading a few KiB at most keeps a wrong path (a device, a
                // huge file) from being read whole.
                let mut text = String::new();
                std::fs::File::open(path)
                    .and_then(|f| f.take(4096).read_to_string(&mut text))
                    .map_err(|e| {
                        CliError::new(Exit::Usage, format!("--token-file {}: {e}", path.display()))
                    })?;
                (
                    text.trim_end_matches(['\n', '\r']).to_owned(),
                    "--token-file",
                )
            }
            (None, None) => {
                return Err(CliError::new(
                    Exit::Usage,
                    "give the token in BTLOG_TOKEN, --token-file or --token",
                ))
            }
        };
        if token.is_empty() || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CliError::new(
                Exit::Usage,
                format!("{from}: a token is one word without spaces or control characters"),
            ));
        }
        Ok(token)
    }
}

/// Prints one line per result and writes the proofs; returns the number of conflicts.
async fn report(
    api: &Api,
    vkey: Option<&Verifier>,
    chunk: &[Item],
    reply: &SubmitReply,
) -> Result<usize, CliError> {
    let mut conflicts = 0;
    for (item, result) in chunk.iter().zip(&reply.results) {
        let f = &item.fields;
        let mut line = format!(
            "{} {} {} {} {}",
            result.index,
            result.status.as_str(),
            f.package,
            f.version,
            f.file
        );
        if result.status == SubmitStatus::Conflict {
            conflicts += 1;
            let existing = result.existing_index.unwrap_or(result.index);
            eprintln!(
                "btlog: conflict: {} {} {} is already logged at index {existing} with another sha256 (submitted {})",
                f.package, f.version, f.file, f.sha256
            );
        } else if let (Some(path), Some(vkey)) = (&item.proof_path, vkey) {
            write_proof(api, vkey, f, result.index, &reply.checkpoint, path).await?;
            line.push(' ');
            line.push_str(&path.display().to_string());
        }
        println!("{line}");
    }
    Ok(conflicts)
}

/// Fetches, verifies and writes the proof of the publish entry `fields` at `index`.
async fn write_proof(
    api: &Api,
    vkey: &Verifier,
    fields: &EntryFields,
    index: u64,
    checkpoint: &str,
    path: &Path,
) -> Result<(), CliError> {
    let proof = api.tlog_proof(index, checkpoint).await?;
    let claim = ArtifactClaim {
        package: fields.package.clone(),
        version: fields.version.clone(),
        file: fields.file.clone(),
        sha256: parse_hex("sha256", &fields.sha256).map_err(|e| CliError::usage(e.to_string()))?,
    };
    proof.verify_offline(vkey, &claim).map_err(|e| {
        CliError::new(
            Exit::Unreachable,
            format!("the log's proof for entry {index} does not verify: {e}"),
        )
    })?;
    btlog_client::file::write_atomic(path, proof.format().as_bytes(), Access::Public)
        .map_err(|e| CliError::usage(format!("writing {}: {e}", path.display())))
}

/// Makes sure every proof can be written before anything is sent: a missing `--proof-dir` is
/// created, and each directory must take a new file. Otherwise a batch would be logged with
/// its proofs lost and its later chunks never sent.
fn prepare_proof_dirs(items: &[Item]) -> Result<(), CliError> {
    let dirs: HashSet<&Path> = items
        .iter()
        .filter_map(|i| i.proof_path.as_deref()?.parent())
        .map(|d| {
            if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            }
        })
        .collect();
    for dir in dirs {
        let fail =
            |e: std::io::Error| CliError::usage(format!("proof directory {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let probe = dir.join(format!(".btlog-probe.{}", std::process::id()));
        btlog_client::file::create_new(&probe, b"", Access::Public).map_err(fail)?;
        std::fs::remove_file(&probe).map_err(fail)?;
    }
    Ok(())
}

/// The entries to submit, checked locally (so no chunk is sent when any entry is malformed),
/// with their proof paths.
fn items(args: &SubmitArgs) -> Result<Vec<Item>, CliError> {
    let (labelled, artifact) = match &args.batch {
        Some(path) => (read_batch(path)?, None),
        None => single(args)?,
    };
    let mut seen = HashSet::new();
    labelled
        .into_iter()
        .map(|(label, f)| {
            f.clone()
                .into_entry(CHECK_REGISTRY)
                .map_err(|e| CliError::usage(format!("{label}: {e}")))?;
            let proof_path = proof_path(args, artifact, &f);
            if let Some(p) = &proof_path {
                if !seen.insert(p.clone()) {
                    return Err(CliError::usage(format!(
                        "{label}: proof file {} would be written twice; use distinct file names",
                        p.display()
                    )));
                }
            }
            Ok(Item {
                fields: f,
                proof_path,
            })
        })
        .collect()
}

/// Where the proof of `f` goes: only publish entries get one.
fn proof_path(args: &SubmitArgs, artifact: Option<&Path>, f: &EntryFields) -> Option<PathBuf> {
    if f.kind != Kind::Publish {
        return None;
    }
    if args.proof_next_to_artifact {
        let mut name = artifact?.as_os_str().to_owned();
        name.push(".tlog-proof");
        return Some(PathBuf::from(name));
    }
    let safe: String = f
        .file
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    Some(args.proof_dir.as_ref()?.join(format!("{safe}.tlog-proof")))
}

/// The one entry described by flags, and its artifact path.
fn single(args: &SubmitArgs) -> Result<(Labelled, Option<&Path>), CliError> {
    let required = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| CliError::usage(format!("{flag} is required without --batch")))
    };
    let (sha256, size) = match (&args.artifact, &args.sha256) {
        (Some(path), _) => {
            let (digest, size) = hash_file(path)?;
            (hex::encode(digest), Some(size))
        }
        (None, Some(hex)) => (hex.clone(), args.size),
        (None, None) => return Err(CliError::usage("give --artifact PATH or --sha256 HEX")),
    };
    let fields = EntryFields {
        kind: args
            .kind
            .parse()
            .map_err(|e| CliError::usage(format!("--kind: {e}")))?,
        package: required(&args.package, "--package")?,
        version: required(&args.version, "--version")?,
        file: required(&args.file, "--file")?,
        sha256,
        sha512: None,
        size,
        publisher: args.publisher.clone(),
        provenance: args.provenance.clone(),
        time: args.time.clone(),
    };
    Ok((vec![("entry".to_owned(), fields)], args.artifact.as_deref()))
}

/// Reads a JSON Lines batch, each entry labelled with its line; blank lines are skipped.
fn read_batch(path: &Path) -> Result<Labelled, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("--batch {}: {e}", path.display())))?;
    let entries: Labelled = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let label = format!("{} line {}", path.display(), n + 1);
            match serde_json::from_str(l) {
                Ok(f) => Ok((label, f)),
                Err(e) => Err(CliError::usage(format!("{label}: {e}"))),
            }
        })
        .collect::<Result<_, _>>()?;
    if entries.is_empty() {
        return Err(CliError::usage(format!(
            "--batch {}: no entries",
            path.display()
        )));
    }
    Ok(entries)
}
