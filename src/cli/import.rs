//! `btlog import`: backfill a registry's history from its own published metadata (PROTOCOL.md
//! §11), idempotent and resumable: publishes already logged come back `duplicate`, a yank
//! already standing in the log is not logged again, and a conflict is reported, never
//! overwritten.

use std::path::PathBuf;

use super::submit::TokenArgs;
use super::{api, block_on, CliError, Exit};
use btlog_client::api::SubmitStatus;
use btlog_core::entry::{EntryFields, Kind};
use futures_util::StreamExt as _;

/// Reads one metadata file into entries.
type Importer = fn(&str) -> Result<Vec<EntryFields>, btlog_core::import::ImportError>;

/// Entries per request (below the server's default limit of 1000).
const CHUNK: usize = 500;
/// Files imported at once.
const CONCURRENCY: usize = 8;

/// Backfill from registry metadata files: crates.io index files (one per crate, as in the
/// registry index), PyPI project JSON documents, and npm packuments with their tarballs. Prints a summary per file; conflicts on stderr (exit 5).
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Base URL of the log (http://host:port).
    #[arg(long)]
    pub log: String,
    /// The submitter token.
    #[command(flatten)]
    pub auth: TokenArgs,
    /// The metadata files.
    #[command(flatten)]
    pub files: RegistryFiles,
}

/// A registry's own metadata files.
#[derive(clap::Args, Debug)]
#[group(id = "registry_files", multiple = true)]
pub struct RegistryFiles {
    /// crates.io index files (the index's JSON-lines layout, one file per crate).
    #[arg(long = "crates-index", value_name = "FILE", required = false)]
    pub crates_index: Vec<PathBuf>,
    /// PyPI project JSON documents (`https://pypi.org/pypi/<project>/json`).
    #[arg(long = "pypi-project", value_name = "FILE")]
    pub pypi_project: Vec<PathBuf>,
    /// npm packuments (`https://registry.npmjs.org/<name>`); npm publishes no SHA-256, so each
    /// version's tarball is read from --npm-tarballs (versions without one are skipped).
    #[arg(long = "npm-packument", value_name = "FILE", requires = "npm_tarballs")]
    pub npm_packument: Vec<PathBuf>,
    /// Directory holding the npm tarballs, by their file names (`left-pad-1.3.0.tgz`).
    #[arg(long = "npm-tarballs", value_name = "DIR")]
    pub npm_tarballs: Option<PathBuf>,
}

impl RegistryFiles {
    /// Whether none was given.
    pub fn is_empty(&self) -> bool {
        self.crates_index.is_empty()
            && self.pypi_project.is_empty()
            && self.npm_packument.is_empty()
    }
}

/// Runs `btlog import`.
pub fn run(args: ImportArgs) -> Result<(), CliError> {
    if args.files.is_empty() {
        return Err(CliError::usage(
            "give --crates-index, --pypi-project or --npm-packument files",
        ));
    }
    submit_files(&args.log, &args.auth, &args.files)
}

/// Logs the entries of registry metadata files (`btlog import`, and `btlog submit` with them).
pub fn submit_files(
    log: &str,
    auth: &TokenArgs,
    files_args: &RegistryFiles,
) -> Result<(), CliError> {
    let args = files_args;
    let token = auth.token()?;
    let api = api(log)?;
    // Everything is read and checked before anything is sent.
    let mut files = Vec::new();
    let crates = args
        .crates_index
        .iter()
        .map(|p| (p, btlog_core::import::crates_index as Importer));
    let pypi = args
        .pypi_project
        .iter()
        .map(|p| (p, btlog_core::import::pypi_project as Importer));
    for (path, importer) in crates.chain(pypi) {
        let entries = importer(&read(path)?)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        files.push((path, checked(path, entries)?));
    }
    for path in &args.npm_packument {
        let text = read(path)?;
        let dir = args.npm_tarballs.clone().unwrap_or_default();
        let tarball = |file: &str| std::fs::read(dir.join(file)).ok();
        let (entries, missing) = btlog_core::import::npm_packument(&text, &tarball)
            .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        if !missing.is_empty() {
            eprintln!(
                "btlog: {}: {} versions skipped, their tarballs are not in {} (e.g. {})",
                path.display(),
                missing.len(),
                dir.display(),
                missing[0]
            );
        }
        files.push((path, checked(path, entries)?));
    }
    let mut conflicts = 0;
    block_on(async {
        let (api, token) = (&api, &token);
        // Files go in concurrently (each in its own order: a yank after its publish).
        let mut done = futures_util::stream::iter(files.into_iter().map(|(path, entries)| async move {
            let entries = standing_yanks_dropped(api, entries).await?;
            let mut counts = [0usize; 3];
            for chunk in entries.chunks(CHUNK) {
                let reply = submit_paced(api, token, chunk).await?;
                for (e, r) in chunk.iter().zip(&reply.results) {
                    match r.status {
                        SubmitStatus::New => counts[0] += 1,
                        SubmitStatus::Duplicate => counts[1] += 1,
                        SubmitStatus::Conflict => {
                            counts[2] += 1;
                            eprintln!(
                                "btlog: conflict: {} {} {} is logged at index {} with another sha256 (the metadata says {})",
                                e.package,
                                e.version,
                                e.file,
                                r.existing_index.unwrap_or(r.index),
                                e.sha256
                            );
                        }
                    }
                }
            }
            Ok::<_, CliError>((path, counts))
        }))
        .buffered(CONCURRENCY);
        while let Some(file) = done.next().await {
            let (path, counts) = file?;
            conflicts += counts[2];
            println!(
                "{}: {} new, {} already logged, {} conflicts",
                path.display(),
                counts[0],
                counts[1],
                counts[2]
            );
        }
        Ok::<(), CliError>(())
    })?;
    if conflicts > 0 {
        return Err(CliError::new(
            Exit::Conflict,
            format!("{conflicts} entries conflict with what the log holds"),
        ));
    }
    Ok(())
}

/// Drops the yank events whose artifact already stands yanked (or deleted) in the log, so a
/// re-run does not log them again (a yank is an event, not an identity).
async fn standing_yanks_dropped(
    api: &btlog_client::api::Api,
    entries: Vec<EntryFields>,
) -> Result<Vec<EntryFields>, CliError> {
    // One read of each package's entries, however many yanks it has.
    let mut standing = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.kind == Kind::Yank {
            if !standing.contains_key(&e.package) {
                let all = api.withdrawn_all(&e.package).await?;
                standing.insert(e.package.clone(), all);
            }
            let key = (e.version.clone(), e.file.clone());
            if standing[&e.package].contains_key(&key) {
                continue;
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Submits a chunk, waiting out the token's rate limit: a 429 is refused before anything is
/// read, so sending the chunk again is safe (up to 20 times, 0.2 s doubling to 5 s).
async fn submit_paced(
    api: &btlog_client::api::Api,
    token: &str,
    chunk: &[EntryFields],
) -> Result<btlog_client::api::SubmitReply, CliError> {
    let mut wait = std::time::Duration::from_millis(200);
    for _ in 0..20 {
        match api.submit(token, chunk).await {
            Err(e) if e.status() == Some(429) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(5));
            }
            other => return Ok(other?),
        }
    }
    Ok(api.submit(token, chunk).await?)
}

fn read(path: &std::path::Path) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

/// `entries` once each is a valid entry (PROTOCOL.md §2), so nothing is sent otherwise.
fn checked(
    path: &std::path::Path,
    entries: Vec<EntryFields>,
) -> Result<Vec<EntryFields>, CliError> {
    for e in &entries {
        e.clone().into_entry("local.check").map_err(|err| {
            CliError::usage(format!(
                "{}: {} {}: {err}",
                path.display(),
                e.package,
                e.version
            ))
        })?;
    }
    Ok(entries)
}
