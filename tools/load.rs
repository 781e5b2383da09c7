//! `btlog-load`: a load generator for a running btlog, over gRPC or HTTP.
//!
//! - `btlog-load ingest (--grpc ADDR | --http URL) --token T --entries N --batch B --concurrency C [--rate R]`
//!   submits N distinct entries, B per request, from C concurrent clients (optionally paced to
//!   R entries/s in total) and prints one JSON line: entries, seconds, entries_per_s and the
//!   latency percentiles from send to the reply carrying the signed checkpoint.
//! - `btlog-load read --http URL --kind proofs|tiles|lookups --requests N --concurrency C`
//!   does the same for reads.
//!
//! - `btlog-load soak --http URL --token T --pid PID --minutes M [--sample-secs S] [--writes-per-s W]`
//!   runs mixed load (one ingest client sending W requests of 20 entries a second, proof and
//!   tile readers) for M minutes and prints, every S seconds,
//!   one JSON line with the server's RSS (`VmRSS`) and open file descriptors, from `/proc/PID`.
//!
//! - `btlog-load limits --dir DIR [--seconds S]` needs no server: it measures this machine's
//!   ceilings (SHA-256 node and leaf hashes on one core, synced RocksDB batches of 1000 and of 1
//!   in fresh databases under DIR, 4 KiB appends with fdatasync), S seconds each, prints them as
//!   one JSON line and removes what it created under DIR (see `limits.rs`).
//!
//! - `btlog-load scale --grpc ADDR --http URL --token T --pid PID --data DIR --scratch DIR …`
//!   grows a running log step by step and records ingest, reads, memory, disk and monitor
//!   catch-up against its size as CSV (see `load/scale.rs`); `btlog-load plot --dir DIR` draws
//!   them as SVG charts (see `load/plot.rs`).
//!
//! - `btlog-load pair --base URL --other URL --kind proofs|tiles [--base-pid P --other-pid P]`
//!   alternates the same reads between two running logs, round by round, and prints the
//!   ratio of their rates in each round and the median (see `load/pair.rs`).
//!
//! Every reply is checked (status, result count, statuses, checkpoint size, proof validity,
//! tile sizes), so a fast but wrong server cannot score: any bad reply aborts the run.

use anyhow::{bail, ensure, Context, Result};
use base64::{engine::general_purpose::STANDARD, Engine};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle::{self, Hash};
use btlog_server::api::pb;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The crate root is tools/load.rs, so its modules would otherwise be looked up in tools/.
#[path = "load/compaction.rs"]
mod compaction;
#[path = "load/limits.rs"]
mod limits;
#[path = "load/pair.rs"]
mod pair;
#[path = "load/plot.rs"]
mod plot;
#[path = "load/probe.rs"]
mod probe;
#[path = "load/scale.rs"]
mod scale;

/// Load generator for btlog.
#[derive(Parser)]
#[command(name = "btlog-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Submit distinct entries and measure ingest rate and latency.
    Ingest {
        /// gRPC address of the log (host:port).
        #[arg(long, conflicts_with = "http", required_unless_present = "http")]
        grpc: Option<String>,
        /// HTTP base URL of the log.
        #[arg(long)]
        http: Option<String>,
        /// Submitter token (from `btlog token`).
        #[arg(long)]
        token: String,
        /// Entries to submit in total.
        #[arg(long, default_value_t = 100_000)]
        entries: u64,
        /// Entries per request.
        #[arg(long, default_value_t = 1000)]
        batch: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
        /// Offered load in entries/s across all clients (open loop); unpaced when absent.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Issue read requests and measure their rate and latency.
    Read {
        /// HTTP base URL of the log.
        #[arg(long)]
        http: String,
        /// What to read.
        #[arg(long, value_enum)]
        kind: ReadKind,
        /// Requests in total.
        #[arg(long, default_value_t = 100_000)]
        requests: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: u64,
    },
    /// Mixed reads and writes for a while, sampling the server's memory and descriptors.
    Soak {
        /// HTTP base URL of the log.
        #[arg(long)]
        http: String,
        /// Submitter token (from `btlog token`).
        #[arg(long)]
        token: String,
        /// Process id of the server, for /proc/PID/status and /proc/PID/fd.
        #[arg(long)]
        pid: u32,
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        sample_secs: u64,
        /// Submissions of 20 entries per second; the default stays under the default
        /// per-token rate limit (50/s).
        #[arg(long, default_value_t = 10)]
        writes_per_s: u32,
    },
    /// Measure this machine's hashing, synced-write and fsync rates (no server needed).
    Limits {
        /// Directory for the scratch databases and file (on the disk the log would use).
        #[arg(long)]
        dir: std::path::PathBuf,
        /// Seconds to measure each figure.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Grow a running log step by step over gRPC, measuring ingest, reads, memory, disk and
    /// monitor catch-up at each size; appends to CSV files (see `load/scale.rs`).
    Scale(scale::Args),
    /// Alternate the same reads between two running logs round by round and report the
    /// ratios of their rates (see `load/pair.rs`).
    Pair(pair::Args),
    /// Draw the SVG charts of a scale run from its CSV files (see `load/plot.rs`).
    Plot {
        /// Directory holding ingest.csv, reads.csv and monitor.csv; the charts go there too.
        #[arg(long, default_value = "docs/scale")]
        dir: std::path::PathBuf,
        /// Directory of an earlier run (another build) to draw beside it, for before/after.
        #[arg(long)]
        before: Option<std::path::PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ReadKind {
    /// Inclusion proofs by index at the latest checkpoint, each verified.
    Proofs,
    /// Full level-0 hash tiles, each checked to be 8 KiB.
    Tiles,
    /// `/v1/lookup` of entries this tool submitted (run `ingest` first).
    Lookups,
    /// Inclusion proofs built here from hash tiles checked against the checkpoint's root,
    /// each verified: what a reader of a static tile mirror (a bucket, a CDN) does.
    TileProofs,
}

/// Entry number `i` of run `run`: distinct across runs, so every submission is new.
fn entry_json(run: u64, i: u64) -> Value {
    let sha: [u8; 32] = Sha256::digest([run.to_be_bytes(), i.to_be_bytes()].concat()).into();
    json!({
        "kind": "publish",
        "package": format!("pkg:npm/btlog-load-{run:x}-{}", i / 16),
        "version": format!("1.0.{}", i % 16),
        "file": "package.tgz",
        "sha256": hex::encode(sha),
        "size": 1000 + i % 1000,
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

/// One measured run: how many requests' worth of work, how long, and each request's latency.
pub(crate) struct Measured {
    pub(crate) count: u64,
    pub(crate) secs: f64,
    /// Sorted.
    pub(crate) lat: Vec<Duration>,
}

impl Measured {
    fn new(count: u64, secs: f64, mut lat: Vec<Duration>) -> Measured {
        lat.sort_unstable();
        Measured { count, secs, lat }
    }

    pub(crate) fn per_s(&self) -> f64 {
        self.count as f64 / self.secs
    }

    /// Latency percentile `p` (0..=1) in milliseconds.
    pub(crate) fn ms(&self, p: f64) -> f64 {
        percentile(&self.lat, p)
    }
}

fn report(kind: &str, m: &Measured) {
    println!(
        "{}",
        json!({
            "kind": kind,
            "count": m.count,
            "seconds": (m.secs * 1000.0).round() / 1000.0,
            "per_s": m.per_s().round(),
            "latency_ms": {
                "p50": m.ms(0.50),
                "p90": m.ms(0.90),
                "p99": m.ms(0.99),
                "max": m.ms(1.0),
            }
        })
    );
}

/// Checks one submission reply: one `new` result per entry, all inside the signed size.
fn check_results(checkpoint: &str, statuses: &[(u64, &str)], want: usize) -> Result<()> {
    ensure!(
        statuses.len() == want,
        "{} results for {want} entries",
        statuses.len()
    );
    let (cp, _) =
        Checkpoint::parse(checkpoint.as_bytes()).context("reply checkpoint does not parse")?;
    for (index, status) in statuses {
        ensure!(
            *status == "new",
            "entry {index} came back {status}, not new"
        );
        ensure!(
            *index < cp.size,
            "index {index} not covered by checkpoint size {}",
            cp.size
        );
    }
    Ok(())
}

enum Submitter {
    Grpc(pb::log_client::LogClient<tonic::transport::Channel>, String),
    Http(btlog_client::Http, String),
}

impl Submitter {
    async fn submit(&mut self, entries: Vec<Value>) -> Result<()> {
        let want = entries.len();
        match self {
            Submitter::Http(http, token) => {
                let body = http
                    .post_json("/v1/entries", Some(token), &json!({ "entries": entries }))
                    .await?;
                let v: Value = serde_json::from_slice(&body)?;
                let results = v["results"].as_array().context("no results")?;
                let statuses: Vec<(u64, &str)> = results
                    .iter()
                    .map(|r| {
                        (
                            r["index"].as_u64().unwrap_or(u64::MAX),
                            r["status"].as_str().unwrap_or(""),
                        )
                    })
                    .collect();
                check_results(v["checkpoint"].as_str().unwrap_or(""), &statuses, want)
            }
            Submitter::Grpc(client, token) => {
                let fields = entries
                    .iter()
                    .map(|e| pb::EntryFields {
                        kind: "publish".into(),
                        package: e["package"].as_str().unwrap_or("").into(),
                        version: e["version"].as_str().unwrap_or("").into(),
                        file: e["file"].as_str().unwrap_or("").into(),
                        sha256: e["sha256"].as_str().unwrap_or("").into(),
                        size: e["size"].as_u64(),
                        ..Default::default()
                    })
                    .collect();
                let mut req = tonic::Request::new(pb::AddEntriesRequest { entries: fields });
                req.metadata_mut()
                    .insert("authorization", format!("Bearer {token}").parse()?);
                let resp = client.add_entries(req).await?.into_inner();
                let statuses: Vec<(u64, &str)> = resp
                    .results
                    .iter()
                    .map(|r| (r.index, r.status.as_str()))
                    .collect();
                check_results(&resp.checkpoint, &statuses, want)
            }
        }
    }
}

pub(crate) async fn ingest(
    grpc: Option<String>,
    http: Option<String>,
    token: String,
    total: u64,
    batch: u64,
    concurrency: u64,
    rate: Option<f64>,
) -> Result<Measured> {
    ensure!(
        batch > 0 && concurrency > 0,
        "--batch and --concurrency must be positive"
    );
    let run: u64 = rand::random();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    // Open-loop pacing: request k of the whole run is due at k·batch/rate seconds.
    let interval = rate.map(|r| Duration::from_secs_f64(batch as f64 / r));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut sub = match (&grpc, &http) {
            (Some(addr), _) => {
                let url = if addr.contains("://") {
                    addr.clone()
                } else {
                    format!("http://{addr}")
                };
                Submitter::Grpc(
                    pb::log_client::LogClient::connect(url).await?,
                    token.clone(),
                )
            }
            (None, Some(url)) => Submitter::Http(btlog_client::Http::new(url)?, token.clone()),
            (None, None) => bail!("give --grpc or --http"),
        };
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let from = next.fetch_add(batch, std::sync::atomic::Ordering::Relaxed);
                if from >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                if let Some(iv) = interval {
                    tokio::time::sleep_until((start + iv.mul_f64((from / batch) as f64)).into())
                        .await;
                }
                let entries: Vec<Value> = (from..(from + batch).min(total))
                    .map(|i| entry_json(run, i))
                    .collect();
                let t = Instant::now();
                sub.submit(entries).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Measured::new(total, start.elapsed().as_secs_f64(), lat))
}

/// The latest checkpoint, as the server signs it.
pub(crate) async fn latest(http: &btlog_client::Http) -> Result<Checkpoint> {
    let note = http.get("/checkpoint").await?.context("no checkpoint")?;
    let (cp, _) = Checkpoint::parse(&note).context("checkpoint does not parse")?;
    Ok(cp)
}

async fn read_one(
    http: &btlog_client::Http,
    tiles: &btlog_client::tiles::TileClient,
    kind: ReadKind,
    checkpoint: &Checkpoint,
    i: u64,
) -> Result<()> {
    let (size, root) = (checkpoint.size, &checkpoint.root);
    match kind {
        ReadKind::TileProofs => {
            let index = i % size;
            let proof = btlog_client::tiles::tile_inclusion_proof(tiles, index, checkpoint).await?;
            let row = tiles.hash_tile(0, index / 256, size).await?;
            let leaf = row
                .get((index % 256) as usize)
                .context("leaf not in its tile")?;
            merkle::verify_inclusion(leaf, index, size, &proof, root)
                .context("tile-built proof does not verify")
        }
        ReadKind::Proofs => {
            let index = i % size;
            let body = http
                .get(&format!("/v1/proof/inclusion?index={index}&size={size}"))
                .await?
                .context("proof not found")?;
            let v: Value = serde_json::from_slice(&body)?;
            let b64 = |v: &Value| -> Result<Hash> {
                let raw = STANDARD.decode(v.as_str().context("not a string")?)?;
                raw.try_into().map_err(|_| anyhow::anyhow!("not 32 bytes"))
            };
            let leaf = b64(&v["leaf_hash"])?;
            let proof: Vec<Hash> = v["proof"]
                .as_array()
                .context("no proof")?
                .iter()
                .map(b64)
                .collect::<Result<_>>()?;
            merkle::verify_inclusion(&leaf, index, size, &proof, root)
                .context("served proof does not verify")
        }
        ReadKind::Tiles => {
            let full = size / 256;
            ensure!(full > 0, "the log has no full tile yet");
            let tile = merkle::tiles::encode_index(i % full);
            let body = http
                .get(&format!("/tile/0/{tile}"))
                .await?
                .context("tile not found")?;
            ensure!(body.len() == 256 * 32, "tile of {} bytes", body.len());
            Ok(())
        }
        ReadKind::Lookups => {
            let index = i % size;
            let body = http
                .get(&format!("/v1/entries?start={index}&end={}", index + 1))
                .await?
                .context("entry not found")?;
            let v: Value = serde_json::from_slice(&body)?;
            let text = v["entries"][0]["entry"].as_str().context("no entry")?;
            let entry = btlog_core::entry::Entry::parse(text.as_bytes())?;
            let q = |s: &str| -> String {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                            char::from(b).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect()
            };
            let body = http
                .get(&format!(
                    "/v1/lookup?package={}&version={}&file={}",
                    q(&entry.package),
                    q(&entry.version),
                    q(&entry.file)
                ))
                .await?
                .context("lookup not found")?;
            let v: Value = serde_json::from_slice(&body)?;
            ensure!(v["index"].as_u64().is_some(), "lookup without an index");
            Ok(())
        }
    }
}

/// Spreads reads over the log: a multiplicative hash of the request number.
fn spread(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

pub(crate) async fn read(
    url: String,
    kind: ReadKind,
    total: u64,
    concurrency: u64,
) -> Result<Measured> {
    let http = btlog_client::Http::new(&url)?;
    let tiles = btlog_client::tiles::TileClient::new(&url)?;
    let checkpoint = Arc::new(latest(&http).await?);
    ensure!(checkpoint.size > 0, "the log is empty");
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (http, tiles, next) = (http.clone(), tiles.clone(), next.clone());
        let checkpoint = checkpoint.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                read_one(&http, &tiles, kind, &checkpoint, spread(i)).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok(Measured::new(total, start.elapsed().as_secs_f64(), lat))
}

impl ReadKind {
    fn name(self) -> &'static str {
        match self {
            ReadKind::Proofs => "proofs",
            ReadKind::Tiles => "tiles",
            ReadKind::Lookups => "lookups",
            ReadKind::TileProofs => "tile-proofs",
        }
    }
}

/// The server's resident memory in KiB and its open descriptor count.
pub(crate) fn sample(pid: u32) -> Result<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((rss, fds))
}

async fn soak(
    url: String,
    token: String,
    pid: u32,
    minutes: f64,
    every: u64,
    pace: Duration,
) -> Result<()> {
    let http = btlog_client::Http::new(&url)?;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(minutes * 60.0);
    let run: u64 = rand::random();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (mut sub, done) = (Submitter::Http(http.clone(), token), done.clone());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(pace);
            let mut i = 0;
            while Instant::now() < until {
                pace.tick().await;
                sub.submit((i..i + 20).map(|k| entry_json(run, k)).collect())
                    .await?;
                i += 20;
                done.fetch_add(20, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    let mut readers = Vec::new();
    for kind in [ReadKind::Proofs, ReadKind::Proofs, ReadKind::Tiles] {
        let http = http.clone();
        let tiles = btlog_client::tiles::TileClient::new(http.base())?;
        readers.push(tokio::spawn(async move {
            let mut i: u64 = 0;
            while Instant::now() < until {
                let checkpoint = latest(&http).await?;
                let size = checkpoint.size;
                if size >= 256 || matches!(kind, ReadKind::Proofs) && size > 0 {
                    read_one(&http, &tiles, kind, &checkpoint, spread(i)).await?;
                }
                i += 1;
            }
            Ok::<_, anyhow::Error>(i)
        }));
    }
    while Instant::now() < until {
        let (rss_kib, fds) = sample(pid)?;
        let size = latest(&http).await?.size;
        println!(
            "{}",
            json!({"t_s": start.elapsed().as_secs(), "rss_mib": rss_kib / 1024, "fds": fds,
                   "tree_size": size, "entries_submitted": done.load(std::sync::atomic::Ordering::Relaxed)})
        );
        tokio::time::sleep(
            Duration::from_secs(every).min(until.saturating_duration_since(Instant::now())),
        )
        .await;
    }
    writer.await??;
    let mut reads = 0;
    for r in readers {
        reads += r.await??;
    }
    let (rss_kib, fds) = sample(pid)?;
    println!(
        "{}",
        json!({"t_s": start.elapsed().as_secs(), "rss_mib": rss_kib / 1024, "fds": fds, "reads": reads,
               "entries_submitted": done.load(std::sync::atomic::Ordering::Relaxed)})
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Ingest {
            grpc,
            http,
            token,
            entries,
            batch,
            concurrency,
            rate,
        } => {
            let m = ingest(grpc, http, token, entries, batch, concurrency, rate).await?;
            report("ingest", &m);
            Ok(())
        }
        Command::Read {
            http,
            kind,
            requests,
            concurrency,
        } => {
            let m = read(http, kind, requests, concurrency).await?;
            report(kind.name(), &m);
            Ok(())
        }
        Command::Soak {
            http,
            token,
            pid,
            minutes,
            sample_secs,
            writes_per_s,
        } => {
            let pace = Duration::from_secs(1) / writes_per_s.max(1);
            soak(http, token, pid, minutes, sample_secs.max(1), pace).await
        }
        Command::Limits { dir, seconds } => limits::run(&dir, seconds),
        Command::Scale(args) => scale::run(args).await,
        Command::Pair(args) => pair::run(args).await,
        Command::Plot { dir, before } => plot::run(&dir, before.as_deref()),
    }
}
