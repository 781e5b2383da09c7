//! `btlog-load scale`: how each cost grows with the log (issue 18).
//!
//! Drives a running server from its current size up to `--entries` in steps of `--step`
//! entries over gRPC (`ingest` with the given batch and concurrency), and after each step
//! appends one row to `OUT/ingest.csv`: the tree size, the step's entries/s and submit latency
//! (p50, p99), the server's CPU time, in all and split by thread (see [`ThreadCpu`]), its
//! `VmRSS` and `VmHWM` (`/proc/PID/status`), the size of its data directory per entry, and
//! how fast the machine was right before the step ([`crate::probe`]: ns a random memory read,
//! SHA-256 MB/s).
//!
//! At each size in `--read-at` (a step boundary) it also measures:
//! - `OUT/reads.csv`: inclusion proofs/s and full level-0 tiles/s over HTTP (`read`);
//! - `OUT/monitor.csv`: `btlog-monitor --once` catching up from empty (a fresh state
//!   directory), its wall time, CPU time and peak RSS (`wait4`'s rusage); then `--increment`
//!   more entries are ingested and the same monitor state catches up on them (the incremental
//!   cost). The increment counts towards the log: the next step is shorter by as much.
//!
//! After each step it also appends to `OUT/compaction.csv` what RocksDB's compactions have
//! taken so far in each column family (CPU time and bytes written, from the info logs in
//! `--data`'s `db` directory, [`crate::compaction`]); a data directory without them is only
//! reported once.
//!
//! Rows are appended as they are measured (header first when the file is new), so a run that
//! stops early keeps what it measured. Every reply is checked as in `ingest` and `read`; the
//! monitor must exit 0.

use anyhow::{bail, ensure, Context, Result};
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{ingest, latest, read, ReadKind};

/// What `btlog-load scale` was asked to do.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// gRPC address of the log (host:port).
    #[arg(long)]
    pub(crate) grpc: String,
    /// HTTP base URL of the same log (reads, checkpoints, the monitor).
    #[arg(long)]
    pub(crate) http: String,
    /// Submitter token (from `btlog token`).
    #[arg(long)]
    pub(crate) token: String,
    /// Process id of the server, for /proc/PID/status.
    #[arg(long)]
    pub(crate) pid: u32,
    /// The server's data directory: its size is the disk figure, and `log.vkey` in it
    /// the monitor's key unless --vkey is given.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Grow the log to this many entries.
    #[arg(long, default_value_t = 30_000_000)]
    pub(crate) entries: u64,
    /// Entries per step (one CSV row each).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) step: u64,
    /// Entries per request.
    #[arg(long, default_value_t = 1000)]
    pub(crate) batch: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: u64,
    /// Log sizes (step boundaries) at which to measure reads and monitor catch-up.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000000,10000000,30000000"
    )]
    pub(crate) read_at: Vec<u64>,
    /// Requests per read measurement.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) read_requests: u64,
    /// Concurrent readers.
    #[arg(long, default_value_t = 16)]
    pub(crate) read_concurrency: u64,
    /// The btlog-monitor binary [default: beside this one].
    #[arg(long)]
    pub(crate) monitor: Option<PathBuf>,
    /// The log's verifier key (file or text) for the monitor [default: DATA/log.vkey].
    #[arg(long)]
    pub(crate) vkey: Option<String>,
    /// Scratch directory for the monitor's state.
    #[arg(long)]
    pub(crate) scratch: PathBuf,
    /// Entries ingested after each full catch-up, for the monitor's incremental cost.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) increment: u64,
    /// Seconds to wait after ingesting before reads and monitor runs.
    #[arg(long, default_value_t = 10)]
    pub(crate) settle_secs: u64,
    /// Directory for ingest.csv, reads.csv and monitor.csv.
    #[arg(long, default_value = "docs/scale")]
    pub(crate) out: PathBuf,
}

const INGEST_HEADER: &str = "tree_size,entries,seconds,entries_per_s,p50_ms,p99_ms,\
server_cpu_s,server_rss_mib,server_hwm_mib,disk_bytes,disk_bytes_per_entry,\
writer_cpu_s,compaction_cpu_s,flush_cpu_s,rpc_cpu_s,probe_read_ns,probe_sha256_mb_s";
const COMPACTION_HEADER: &str = "tree_size,column_family,jobs,cpu_s,written_bytes";
const READS_HEADER: &str =
    "tree_size,kind,requests,seconds,per_s,p50_ms,p99_ms,server_rss_mib,server_hwm_mib";
const MONITOR_HEADER: &str =
    "tree_size,kind,entries,seconds,entries_per_s,cpu_seconds,peak_rss_mib,state_bytes";

pub(crate) async fn run(a: Args) -> Result<()> {
    ensure!(
        a.step > 0 && a.entries > 0,
        "--step and --entries must be positive"
    );
    fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let http = btlog_client::Http::new(&a.http)?;
    let monitor = match &a.monitor {
        Some(m) => m.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory for btlog-monitor")?
            .join("btlog-monitor"),
    };
    let vkey = match &a.vkey {
        Some(v) => v.clone(),
        None => a.data.join("log.vkey").display().to_string(),
    };
    let mut size = latest(&http).await?.size;
    let mut no_logs = false;
    let probe = crate::probe::Probe::new();
    while size < a.entries {
        let target = ((size / a.step + 1) * a.step).min(a.entries);
        let n = target - size;
        let speed = probe.run();
        let cpu = cpu_secs(a.pid)?;
        let threads = ThreadCpu::of(a.pid)?;
        let m = ingest(
            Some(a.grpc.clone()),
            None,
            a.token.clone(),
            n,
            a.batch,
            a.concurrency,
            None,
        )
        .await?;
        let cpu = cpu_secs(a.pid)? - cpu;
        let threads = ThreadCpu::of(a.pid)?.since(&threads);
        size = latest(&http).await?.size;
        let (rss, hwm) = memory(a.pid)?;
        let disk = dir_bytes(&a.data)?;
        let row = format!(
            "{size},{n},{:.3},{:.0},{:.2},{:.2},{cpu:.2},{:.1},{:.1},{disk},{:.1},\
             {:.2},{:.2},{:.2},{:.2},{:.1},{:.0}",
            m.secs,
            m.per_s(),
            m.ms(0.5),
            m.ms(0.99),
            mib(rss),
            mib(hwm),
            disk as f64 / size.max(1) as f64,
            threads.writer,
            threads.compaction,
            threads.flush,
            threads.rpc,
            speed.read_ns,
            speed.sha256_mb_s,
        );
        append(&a.out.join("ingest.csv"), INGEST_HEADER, &row)?;
        println!("ingest {row}");
        match crate::compaction::by_column_family(&a.data.join("db")) {
            Ok(families) => {
                for (family, c) in families {
                    let row = format!("{size},{family},{},{:.2},{}", c.jobs, c.cpu_s, c.written);
                    append(&a.out.join("compaction.csv"), COMPACTION_HEADER, &row)?;
                }
            }
            Err(e) if !no_logs => {
                eprintln!("no compaction figures: {e:#}");
                no_logs = true;
            }
            Err(_) => {}
        }
        if a.read_at.contains(&size) {
            measure_at(&a, &http, &monitor, &vkey, size).await?;
            size = latest(&http).await?.size;
        }
    }
    Ok(())
}

/// Reads and monitor catch-up at `size`, then the increment.
async fn measure_at(
    a: &Args,
    http: &btlog_client::Http,
    monitor: &Path,
    vkey: &str,
    size: u64,
) -> Result<()> {
    // Let the ingest's flushes settle, as a log between bursts would; its compactions go on.
    tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
    measure_reads(a, size, "").await?;
    // Then once more when the server owes no compaction: the reads of a log at rest.
    let waited = compactions_done(http, Duration::from_secs(COMPACTION_WAIT_SECS)).await?;
    println!("compactions done after {waited:.0} s");
    measure_reads(a, size, "_settled").await?;
    let state = a.scratch.join(format!("monitor-{size}"));
    if state.exists() {
        fs::remove_dir_all(&state)?;
    }
    fs::create_dir_all(&state)?;
    let full = run_monitor(monitor, &a.http, vkey, &state).await?;
    let row = monitor_row(size, "full", size, &full, dir_bytes(&state)?);
    append(&a.out.join("monitor.csv"), MONITOR_HEADER, &row)?;
    println!("monitor {row}");
    if a.increment > 0 {
        ingest(
            Some(a.grpc.clone()),
            None,
            a.token.clone(),
            a.increment,
            a.batch,
            a.concurrency,
            None,
        )
        .await?;
        let grown = latest(http).await?.size;
        tokio::time::sleep(Duration::from_secs(a.settle_secs)).await;
        let inc = run_monitor(monitor, &a.http, vkey, &state).await?;
        let row = monitor_row(grown, "increment", grown - size, &inc, dir_bytes(&state)?);
        append(&a.out.join("monitor.csv"), MONITOR_HEADER, &row)?;
        println!("monitor {row}");
    }
    fs::remove_dir_all(&state)?;
    Ok(())
}

/// The longest wait for compactions to finish before the settled reads.
const COMPACTION_WAIT_SECS: u64 = 900;

/// Waits until the server's `btlog_store_pending_compaction_bytes` is 0; the seconds
/// waited, or an error after `max` (reads then would not be of a log at rest).
async fn compactions_done(http: &btlog_client::Http, max: Duration) -> Result<f64> {
    let start = std::time::Instant::now();
    loop {
        let metrics = http.get("/metrics").await?.context("no /metrics")?;
        let pending = String::from_utf8_lossy(&metrics)
            .lines()
            .find_map(|l| l.strip_prefix("btlog_store_pending_compaction_bytes "))
            .context("/metrics has no btlog_store_pending_compaction_bytes")?
            .trim()
            .parse::<f64>()?;
        if pending == 0.0 {
            return Ok(start.elapsed().as_secs_f64());
        }
        ensure!(
            start.elapsed() < max,
            "the server still owes {pending} bytes of compaction after {} s",
            max.as_secs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Inclusion proofs, then full tiles, at `size`: one reads.csv row each, named by their kind
/// and `suffix`.
async fn measure_reads(a: &Args, size: u64, suffix: &str) -> Result<()> {
    for kind in [ReadKind::Proofs, ReadKind::Tiles] {
        let m = read(a.http.clone(), kind, a.read_requests, a.read_concurrency).await?;
        let (rss, hwm) = memory(a.pid)?;
        let row = format!(
            "{size},{}{suffix},{},{:.3},{:.0},{:.3},{:.3},{:.1},{:.1}",
            kind.name(),
            m.count,
            m.secs,
            m.per_s(),
            m.ms(0.5),
            m.ms(0.99),
            mib(rss),
            mib(hwm)
        );
        append(&a.out.join("reads.csv"), READS_HEADER, &row)?;
        println!("read {row}");
    }
    Ok(())
}

fn monitor_row(size: u64, kind: &str, entries: u64, r: &MonitorRun, state: u64) -> String {
    format!(
        "{size},{kind},{entries},{:.3},{:.0},{:.2},{:.1},{state}",
        r.secs,
        entries as f64 / r.secs,
        r.cpu_secs,
        mib(r.max_rss_kib)
    )
}

struct MonitorRun {
    secs: f64,
    cpu_secs: f64,
    max_rss_kib: u64,
}

/// Runs `btlog-monitor --once` on `state` to completion: wall time, and from `wait4` the
/// child's CPU time and peak RSS (its own rusage, not that of earlier children).
async fn run_monitor(bin: &Path, url: &str, vkey: &str, state: &Path) -> Result<MonitorRun> {
    let start = Instant::now();
    let child = std::process::Command::new(bin)
        .args([
            "--log",
            url,
            "--vkey",
            vkey,
            "--once",
            "--no-progress",
            "--state",
        ])
        .arg(state)
        .stdout(std::process::Stdio::null())
        .stderr(monitor_log(state)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = libc::pid_t::try_from(child.id())?;
    let (status, usage) = tokio::task::spawn_blocking(move || wait4(pid)).await??;
    let secs = start.elapsed().as_secs_f64();
    // `child` was reaped by wait4; dropping it does not wait again.
    drop(child);
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "btlog-monitor failed (wait status {status:#x})"
    );
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(MonitorRun {
        secs,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

/// Where the monitor's progress lines go: `monitor.log` beside its state directory.
fn monitor_log(state: &Path) -> Result<std::fs::File> {
    let path = state.with_file_name("monitor.log");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn wait4(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live locals of the right types; `pid` is our child,
        // which nothing else waits for.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            bail!("wait4: {err}");
        }
    }
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> Result<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} for process {pid}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// User and system CPU seconds `pid` has used (`/proc/PID/stat`).
pub(crate) fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    thread_cpu(&stat)
        .map(|(_, secs)| secs)
        .with_context(|| format!("bad /proc/{pid}/stat"))
}

/// CPU seconds of the server's threads, by what they do, told apart by their names: the
/// single writer (`btlog-sequencer`: stages each group commit, looks up its identities, makes
/// the synced write), RocksDB's compactions (`rocksdb:low`) and flushes (`rocksdb:high`), and
/// the gRPC and HTTP runtime (`tokio-rt-worker`). A thread that exited between two readings is
/// in none of them (its time is still in the process total).
#[derive(Default)]
struct ThreadCpu {
    writer: f64,
    compaction: f64,
    flush: f64,
    rpc: f64,
}

impl ThreadCpu {
    /// The CPU time of `pid`'s threads so far (`/proc/PID/task/*/stat`).
    fn of(pid: u32) -> Result<ThreadCpu> {
        let mut t = ThreadCpu::default();
        let tasks = format!("/proc/{pid}/task");
        for task in fs::read_dir(&tasks).with_context(|| format!("no process {pid}"))? {
            // A thread may exit between the listing and the read.
            let Ok(stat) = fs::read_to_string(task?.path().join("stat")) else {
                continue;
            };
            let Some((name, secs)) = thread_cpu(&stat) else {
                bail!("bad {tasks}/*/stat: {stat}");
            };
            match name {
                "btlog-sequencer" => t.writer += secs,
                "rocksdb:low" => t.compaction += secs,
                "rocksdb:high" => t.flush += secs,
                "tokio-rt-worker" => t.rpc += secs,
                _ => {}
            }
        }
        Ok(t)
    }

    /// The time used since `earlier`.
    fn since(&self, earlier: &ThreadCpu) -> ThreadCpu {
        ThreadCpu {
            writer: self.writer - earlier.writer,
            compaction: self.compaction - earlier.compaction,
            flush: self.flush - earlier.flush,
            rpc: self.rpc - earlier.rpc,
        }
    }
}

/// The name and user + system CPU seconds in a `/proc/.../stat` line.
fn thread_cpu(stat: &str) -> Option<(&str, f64)> {
    // The name is between the first '(' and the last ')', and may hold spaces and ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name, at
    // 100 ticks a second.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((name, (utime + stime) / 100.0))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Bytes in the files under `dir`, recursively (what the data directory takes on disk, as
/// `du -sb` counts it for files).
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for item in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let item = item?;
        // A table file may be deleted by a compaction between listing and stat.
        let Ok(meta) = item.metadata() else {
            continue;
        };
        if meta.is_dir() {
            total += dir_bytes(&item.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

pub(crate) fn append(path: &Path, header: &str, row: &str) -> Result<()> {
    let new = !path.exists();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(f, "{header}")?;
    }
    writeln!(f, "{row}")?;
    Ok(())
}
