//! `btlog get` (print an entry) and `btlog prove` (print its `.tlog-proof`).

use std::io::Write as _;

use super::{api, block_on, read_vkey, CliError, Exit, EXIT_CODES};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle;

/// Print the entry at an index, as the log serves it (not verified; see `prove` and `verify`).
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct GetArgs {
    /// Base URL of the log (http://host:port).
    #[arg(long)]
    pub log: String,
    /// Index of the entry.
    #[arg(long)]
    pub index: u64,
}

/// Print a .tlog-proof of the entry at an index against the log's latest checkpoint.
#[derive(clap::Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct ProveArgs {
    /// Base URL of the log (http://host:port).
    #[arg(long)]
    pub log: String,
    /// Index of the entry.
    #[arg(long)]
    pub index: u64,
    /// The log's vkey (text or file) to check the checkpoint signature with; without it only
    /// the inclusion proof is checked.
    #[arg(long)]
    pub vkey: Option<String>,
}

/// Runs `btlog get`.
pub fn get(args: GetArgs) -> Result<(), CliError> {
    let api = api(&args.log)?;
    let entry = block_on(async { Ok(api.entry(args.index).await?) })?.ok_or_else(|| {
        CliError::new(
            Exit::NotProven,
            format!("no entry {} in the log", args.index),
        )
    })?;
    write_stdout(&entry)
}

/// Runs `btlog prove`.
pub fn prove(args: ProveArgs) -> Result<(), CliError> {
    let api = api(&args.log)?;
    let vkey = args.vkey.as_deref().map(read_vkey).transpose()?;
    let proof = block_on(async {
        let note = api.checkpoint().await?;
        let checkpoint = match &vkey {
            Some(v) => Checkpoint::verify(note.as_bytes(), v).map(|(c, _)| c),
            None => Checkpoint::parse(note.as_bytes()).map(|(c, _)| c),
        }
        .map_err(|e| CliError::new(Exit::NotProven, format!("the log's checkpoint: {e}")))?;
        if args.index >= checkpoint.size {
            return Err(CliError::new(
                Exit::NotProven,
                format!(
                    "no entry {} in the log (tree size {})",
                    args.index, checkpoint.size
                ),
            ));
        }
        let proof = api.tlog_proof(args.index, &note).await?;
        let leaf = merkle::leaf_hash(&proof.entry);
        merkle::verify_inclusion(
            &leaf,
            proof.index,
            checkpoint.size,
            &proof.proof,
            &checkpoint.root,
        )
        .map_err(|e| {
            CliError::new(
                Exit::NotProven,
                format!("the log served an inclusion proof that does not verify: {e}"),
            )
        })?;
        Ok(proof)
    })?;
    write_stdout(proof.format().as_bytes())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::usage(format!("writing stdout: {e}")))
}
