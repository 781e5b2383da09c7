//! `btlog-load pair`: the same reads, alternated round by round between two running logs
//! (typically one of 1M entries and one of 30M), so that the machine's drift during the
//! measurement falls on both alike.
//!
//! Within one six-minute scale series the probe's memory latency moved by up to a quarter
//! (BENCHMARKS.md, "Eighth pass"), and a read rate at 30M set against one taken at 1M minutes
//! earlier carried that. Here each round reads from both logs back to back, the order swapping
//! every round (base then other, other then base, …), and the ratio is taken round by round;
//! the report is each round and the median of the ratios, after a warm-up round not counted.
//! With the servers' process ids it also reports each server's CPU time per request
//! (`/proc/PID/stat`), a figure that does not depend on what else held the cores.

use crate::{latest, read, scale, ReadKind};
use anyhow::{ensure, Result};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// HTTP base URL of the log the ratios are taken against (the small one).
    #[arg(long)]
    base: String,
    /// Process id of its server, for its CPU time per request.
    #[arg(long)]
    base_pid: Option<u32>,
    /// HTTP base URL of the other log (the large one).
    #[arg(long)]
    other: String,
    /// Process id of its server.
    #[arg(long)]
    other_pid: Option<u32>,
    /// What to read.
    #[arg(long, value_enum)]
    kind: ReadKind,
    /// Requests to each log in each round.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: u64,
    /// Rounds; each reads from both logs.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
    /// Rounds first run and not counted: the first reads of a log find its files, or the
    /// part of them that is read, out of the page cache.
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// CSV file to append the rounds to (created with a header if absent).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One log's figures in one round.
struct Side {
    size: u64,
    per_s: f64,
    /// Server CPU µs per request, if its pid was given.
    cpu_us: Option<f64>,
}

async fn measure(a: &Args, url: &str, pid: Option<u32>) -> Result<Side> {
    let size = latest(&btlog_client::Http::new(url)?).await?.size;
    let before = pid.map(scale::cpu_secs).transpose()?;
    let m = read(url.to_string(), a.kind, a.requests, a.concurrency).await?;
    let cpu_us = match (pid, before) {
        (Some(pid), Some(before)) => {
            Some((scale::cpu_secs(pid)? - before) * 1e6 / a.requests as f64)
        }
        _ => None,
    };
    Ok(Side {
        size,
        per_s: m.per_s(),
        cpu_us,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) async fn run(a: Args) -> Result<()> {
    ensure!(a.rounds > 0, "--rounds must be at least 1");
    for _ in 0..a.warmup {
        measure(&a, &a.base, None).await?;
        measure(&a, &a.other, None).await?;
    }
    let (mut rates, mut cpus) = (Vec::new(), Vec::new());
    for round in 1..=a.rounds {
        let (base, other) = if round % 2 == 1 {
            let base = measure(&a, &a.base, a.base_pid).await?;
            (base, measure(&a, &a.other, a.other_pid).await?)
        } else {
            let other = measure(&a, &a.other, a.other_pid).await?;
            (measure(&a, &a.base, a.base_pid).await?, other)
        };
        let ratio = other.per_s / base.per_s;
        let cpu_ratio = base.cpu_us.zip(other.cpu_us).map(|(b, o)| o / b);
        rates.push(ratio);
        cpus.extend(cpu_ratio);
        println!(
            "{}",
            json!({
                "round": round, "kind": a.kind.name(),
                "base_size": base.size, "base_per_s": base.per_s.round(), "base_cpu_us": base.cpu_us,
                "other_size": other.size, "other_per_s": other.per_s.round(), "other_cpu_us": other.cpu_us,
                "ratio": ratio, "cpu_ratio": cpu_ratio,
            })
        );
        if let Some(out) = &a.out {
            let us = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
            scale::append(
                out,
                "kind,round,base_size,base_per_s,base_cpu_us,other_size,other_per_s,other_cpu_us,ratio",
                &format!(
                    "{},{round},{},{:.0},{},{},{:.0},{},{ratio:.3}",
                    a.kind.name(),
                    base.size,
                    base.per_s,
                    us(base.cpu_us),
                    other.size,
                    other.per_s,
                    us(other.cpu_us),
                ),
            )?;
        }
    }
    let spread = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    };
    let (min, max) = spread(&rates);
    println!(
        "{}",
        json!({
            "kind": a.kind.name(), "rounds": a.rounds,
            "median_ratio": median(rates.clone()), "min_ratio": min, "max_ratio": max,
            "median_cpu_ratio": (!cpus.is_empty()).then(|| median(cpus.clone())),
        })
    );
    Ok(())
}
