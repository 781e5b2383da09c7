//! The registry and installer subcommands of `btlog` (PROTOCOL.md §7): `submit`, `get`, `prove` and
//! `verify`. Each returns a [`CliError`] that carries its [`Exit`] code; [`exit`] prints it
//! and ends the process, so scripts can rely on the codes in [`EXIT_CODES`].

pub mod audit;
pub mod fetch;
pub mod import;
pub mod restore;
pub mod submit;
pub mod verify;

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use btlog_client::api::{Api, ApiError};
use btlog_client::keyfile;
use btlog_client::FetchError;
use btlog_core::note::Verifier;

/// Exit codes of the registry and installer subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Verification failed: the artifact is not proven logged (or what was asked for is not
    /// in the log).
    NotProven = 1,
    /// Bad usage or input: flags, local files, a request the log refused as bad (400, 401, 413).
    Usage = 2,
    /// The log is unreachable, overloaded, failed, sent a malformed reply, or did not prove its
    /// checkpoint consistent with the one verified before (without signed evidence of a fork).
    Unreachable = 3,
    /// The log signed a checkpoint provably inconsistent with one verified before (signed
    /// evidence of a fork or rollback).
    Inconsistent = 4,
    /// A submitted identity is already logged with another digest.
    Conflict = 5,
}

/// The exit code table shown by `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  ok
  1  verification failed: the artifact is not proven logged (or not in the log)
  2  bad usage or input (flags, files, a request the log refused as bad)
  3  log unreachable, overloaded, failing, sending malformed replies, or not proving
     its consistency with the checkpoint verified before
  4  inconsistent log: it signed a checkpoint provably inconsistent with one verified
     before (both are printed)
  5  conflict: an identity is already logged with another sha256 (submit)";

/// A failed subcommand: its exit code, a one-line message, and any evidence to print after it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The exit code.
    pub code: Exit,
    /// What went wrong, on one line a person can act on.
    pub message: String,
    /// Extra lines to print (e.g. two inconsistent checkpoints).
    pub evidence: Option<String>,
}

impl CliError {
    /// An error with `code` and `message`, without evidence.
    pub fn new(code: Exit, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
            evidence: None,
        }
    }

    /// A usage or input error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Fetch(FetchError::BadUrl(_)) => Exit::Usage,
            _ => match e.status() {
                Some(404) => Exit::NotProven,
                Some(400 | 401 | 413) => Exit::Usage,
                _ => Exit::Unreachable,
            },
        };
        let prefix = match code {
            Exit::Unreachable => "log unavailable: ",
            Exit::Usage => "the log refused the request: ",
            _ => "",
        };
        CliError::new(code, format!("{prefix}{e}"))
    }
}

/// Prints a failure (`btlog: <message>` and any evidence) on stderr and exits with its code.
pub fn exit(result: Result<(), CliError>) -> ! {
    match result {
        Ok(()) => std::process::exit(Exit::Ok as i32),
        Err(e) => {
            eprintln!("btlog: {}", e.message);
            if let Some(evidence) = &e.evidence {
                eprint!("{evidence}");
            }
            std::process::exit(e.code as i32)
        }
    }
}

/// Runs `fut` on a single-threaded runtime.
fn block_on<T>(fut: impl std::future::Future<Output = Result<T, CliError>>) -> Result<T, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CliError::new(
                Exit::Unreachable,
                format!("starting the async runtime: {e}"),
            )
        })?
        .block_on(fut)
}

/// A `/v1` client for `--log URL`.
fn api(url: &str) -> Result<Api, CliError> {
    Api::new(url).map_err(|e| CliError::usage(format!("--log: {e}")))
}

/// Reads `--vkey`: the vkey text itself, or the path of a file holding it.
pub fn read_vkey(arg: &str) -> Result<Verifier, CliError> {
    keyfile::vkey_arg(arg).map_err(|e| {
        CliError::usage(format!(
            "--vkey: neither a vkey nor a readable vkey file: {e}"
        ))
    })
}

/// The SHA-256 and size of the file at `path`, streamed.
pub fn hash_file(path: &Path) -> Result<([u8; 32], u64), CliError> {
    let fail = |e: std::io::Error| CliError::usage(format!("{}: {e}", path.display()));
    let mut file = File::open(path).map_err(fail)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hasher.finalize().into(), size))
}
