//! `btlog restore`: rebuild a log's data directory from the bucket it published to
//! (PROTOCOL.md §12.2), verifying everything against the log's key.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{read_vkey, CliError, Exit};
use btlog_bucket::{Bucket, BucketConfig, RestoreError};
use btlog_client::file;
use btlog_server::config::Config;
use btlog_store::Store;

/// Restore a log's data directory from its bucket: entries, tiles, indexes and checkpoint,
/// each entry checked against the tiles and the tree against the signed checkpoint.
/// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The bucket the log published to: s3://bucket[/prefix].
    #[arg(long, value_name = "URL")]
    pub from: String,
    /// The S3 endpoint (default: AWS_ENDPOINT_URL, or AWS).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The S3 region (default: AWS_REGION; Garage's is usually `garage`).
    #[arg(long)]
    pub region: Option<String>,
    /// The data directory to create; it must not exist yet, or be empty.
    #[arg(long)]
    pub data: PathBuf,
    /// The log's vkey, or a file holding it: the checkpoint must be signed by it.
    #[arg(long)]
    pub vkey: String,
}

/// Runs `btlog restore`.
pub fn run(args: RestoreArgs) -> Result<(), CliError> {
    let vkey = read_vkey(&args.vkey)?;
    let bucket = Bucket::open(&BucketConfig {
        url: args.from.clone(),
        endpoint: args.endpoint.clone(),
        region: args.region.clone(),
        ..BucketConfig::default()
    })
    .map_err(|e| CliError::usage(e.to_string()))?;
    let target = &args.data;
    let is_empty_dir = |p: &Path| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none());
    if target.exists() && !is_empty_dir(target) {
        return Err(CliError::usage(format!(
            "--data {}: exists and is not empty; restore into a new directory",
            target.display()
        )));
    }
    // Built beside the target and renamed into place only once it verifies, so a failed or
    // interrupted restore never leaves a data directory a server would start on.
    let partial = target.with_extension("restoring");
    std::fs::create_dir(&partial).map_err(|e| {
        CliError::usage(format!(
            "{}: {e} (a previous restore's leftover? delete it)",
            partial.display()
        ))
    })?;
    let config = Config {
        data: partial.clone(),
        ..Config::default()
    };
    let started = Instant::now();
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::new(Exit::Unreachable, format!("async runtime: {e}")))?;
    let restored = runtime.block_on(async {
        let store = Store::open(&config.store_path()).map_err(|e| restore_error(e.into()))?;
        let mut last = 0;
        let progress = |done: u64, total: u64| {
            if done >= last + 1_000_000 || done == total {
                eprintln!("btlog restore: {done} of {total} entries");
                last = done;
            }
        };
        let progress = std::sync::Mutex::new(progress);
        btlog_bucket::restore(&bucket, &store, &vkey, &|d, t| {
            if let Ok(mut p) = progress.lock() {
                p(d, t)
            }
        })
        .await
        .map_err(restore_error)
    });
    let restored = match restored {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    let io =
        |e: std::io::Error| CliError::new(Exit::Unreachable, format!("{}: {e}", target.display()));
    btlog_client::keyfile::write_vkey(&config.vkey_path(), &vkey)
        .map_err(|e| CliError::usage(e.to_string()))?;
    if target.exists() {
        std::fs::remove_dir(target).map_err(io)?;
    }
    std::fs::rename(&partial, target).map_err(io)?;
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        file::sync_dir(parent).map_err(io)?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "restored {} entries from {} in {secs:.1} s ({:.0} entries/s); start the log with: \
         btlog serve --data {} --key <the log's private key file>",
        restored.size,
        bucket.url(),
        restored.size as f64 / secs.max(1e-9),
        target.display()
    );
    Ok(())
}

fn restore_error(e: RestoreError) -> CliError {
    let code = match &e {
        RestoreError::Bucket(_) => Exit::Unreachable,
        RestoreError::Store(_) | RestoreError::NotEmpty(_) => Exit::Usage,
        RestoreError::NoCheckpoint(_)
        | RestoreError::Checkpoint { .. }
        | RestoreError::Missing(_)
        | RestoreError::Unverified(_) => Exit::NotProven,
    };
    CliError::new(code, format!("restore failed: {e}"))
}
