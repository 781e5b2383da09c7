//! `btlog-append-bench`: sustained synced appends straight into the store, with peak RSS.
//!
//! Usage: `btlog-append-bench [--entries N] [--batch B] [--dir DIR]` (defaults 10,000,000,
//! 1000, a fresh temporary directory). Entries are 128 bytes, each claims an identity, and
//! every batch is one synced write with a checkpoint-sized note, as the log writes them.
//! Prints one JSON line per million entries and a final summary line.

use anyhow::{bail, Context, Result};
use btlog_store::{NewEntry, Store};
use sha2::{Digest, Sha256};
use std::time::Instant;

fn arg(args: &[String], name: &str, default: u64) -> Result<u64> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .context("missing value")?
            .parse()
            .with_context(|| format!("bad {name}")),
    }
}

/// Peak resident set size of this process in MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn entry(i: u64) -> NewEntry {
    let mut data = format!("btlog-bench-entry {i:020} ").into_bytes();
    data.resize(128, b'x');
    let identity = Some(Sha256::digest(&data).into());
    NewEntry::new(data, identity, None)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let total = arg(&args, "--entries", 10_000_000)?;
    let batch = arg(&args, "--batch", 1000)?;
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let (tmp, scratch) = data_dir(&args)?;
    let store = Store::open(&tmp).context("opening the store")?;
    let mut app = store.appender()?;
    let note = "x".repeat(200);
    let start = Instant::now();
    let mut mark = (Instant::now(), store.size());
    while app.size() < total {
        let from = app.size();
        let n = batch.min(total - from);
        let entries: Vec<NewEntry> = (from..from + n).map(entry).collect();
        let staged = app.stage(&entries)?;
        app.commit(staged, &note)?;
        if app.size() / 1_000_000 != from / 1_000_000 {
            let secs = mark.0.elapsed().as_secs_f64();
            println!(
                "{{\"size\":{},\"interval_entries_per_s\":{:.0},\"peak_rss_mib\":{:.1}}}",
                app.size(),
                (app.size() - mark.1) as f64 / secs,
                peak_rss_mib()
            );
            mark = (Instant::now(), app.size());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"entries\":{total},\"batch\":{batch},\"seconds\":{secs:.2},\"entries_per_s\":{:.0},\"peak_rss_mib\":{:.1},\"dir\":\"{}\"}}",
        total as f64 / secs,
        peak_rss_mib(),
        tmp.display()
    );
    drop(app);
    drop(store);
    if scratch {
        std::fs::remove_dir_all(&tmp).context("removing the scratch store")?;
    }
    Ok(())
}

/// The store directory, and whether it is a scratch one to remove afterwards.
fn data_dir(args: &[String]) -> Result<(std::path::PathBuf, bool)> {
    match args.iter().position(|a| a == "--dir") {
        Some(i) => Ok((
            args.get(i + 1).context("missing --dir value")?.into(),
            false,
        )),
        None => {
            let d = std::env::temp_dir().join(format!("btlog-append-bench-{}", std::process::id()));
            Ok((d, true))
        }
    }
}
