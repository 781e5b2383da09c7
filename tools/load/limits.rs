//! `btlog-load limits`: the ceilings this machine puts on btlog, for reading the benchmark
//! figures against. Each figure is measured for `--seconds` on one thread:
//!
//! - `sha256_node_hashes_per_s`: RFC 6962 interior node hashes, SHA-256 over
//!   0x01 || left || right ([`btlog_core::merkle::node_hash`]), each fed the previous result.
//! - `sha256_leaf_hashes_per_s`: leaf hashes of a 200-byte entry ([`btlog_core::merkle::leaf_hash`]).
//! - `rocksdb_synced_batches_per_s`: `WriteBatch`es of 1000 values of 200 random bytes under
//!   random 32-byte keys, each written with `sync = true` by one writer, into a fresh RocksDB
//!   under DIR (default options, plus the 32 MiB memtable and LZ4 of the store's entries column
//!   family). One batch is what the store writes per group commit.
//! - `rocksdb_synced_writes_per_s`: the same with one value per batch, in another fresh RocksDB.
//! - `fsync_per_s`: appending 4 KiB to a file under DIR, then `fdatasync`.
//!
//! Everything it creates under DIR is removed at the end, also on error (DIR itself too if it
//! did not exist before).

use anyhow::{ensure, Context, Result};
use btlog_core::merkle::{leaf_hash, node_hash};
use rand::RngCore as _;
use rocksdb::{Options, WriteBatch, WriteOptions, DB};
use serde_json::json;
use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ENTRY_BYTES: usize = 200;
const BATCH_ENTRIES: usize = 1000;
const FSYNC_BYTES: usize = 4096;
/// Hashes between two looks at the clock.
const HASHES_PER_STEP: u64 = 4096;

/// Measures every figure for `seconds` each and prints them as one JSON line.
pub fn run(dir: &Path, seconds: f64) -> Result<()> {
    ensure!(
        seconds.is_finite() && seconds > 0.0,
        "--seconds must be a positive number"
    );
    let period = Duration::from_secs_f64(seconds);
    let mut scratch = Scratch::new(dir)?;
    let batches_db = scratch.claim("btlog-limits-batches")?;
    let writes_db = scratch.claim("btlog-limits-writes")?;
    let fsync_file = scratch.claim("btlog-limits-fsync")?;
    let node = node_hashes(period)?;
    let leaf = leaf_hashes(period)?;
    let batches = synced_writes(&batches_db, BATCH_ENTRIES, period)?;
    let writes = synced_writes(&writes_db, 1, period)?;
    let fsyncs = fsyncs(&fsync_file, period)?;
    drop(scratch);
    println!(
        "{}",
        json!({
            "seconds": seconds,
            "sha256_node_hashes_per_s": node.round(),
            "sha256_leaf_hashes_per_s": leaf.round(),
            "rocksdb_synced_batches_per_s": tenths(batches),
            "rocksdb_synced_writes_per_s": tenths(writes),
            "fsync_per_s": tenths(fsyncs),
        })
    );
    Ok(())
}

fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Runs `step` until `period` has passed; `step` says how many operations it did. Returns
/// operations per second.
fn rate(period: Duration, mut step: impl FnMut() -> Result<u64>) -> Result<f64> {
    let start = Instant::now();
    let mut done = 0;
    while start.elapsed() < period {
        done += step()?;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn node_hashes(period: Duration) -> Result<f64> {
    let mut h = [0u8; 32];
    let per_s = rate(period, || {
        for _ in 0..HASHES_PER_STEP {
            h = node_hash(&h, &h);
        }
        Ok(HASHES_PER_STEP)
    });
    black_box(h);
    per_s
}

fn leaf_hashes(period: Duration) -> Result<f64> {
    let mut entry = [b'e'; ENTRY_BYTES];
    let mut i = 0u64;
    rate(period, || {
        for _ in 0..HASHES_PER_STEP {
            i += 1;
            entry[..8].copy_from_slice(&i.to_le_bytes());
            black_box(leaf_hash(&entry));
        }
        Ok(HASHES_PER_STEP)
    })
}

/// Synced `WriteBatch`es of `per_batch` values per second, into a fresh RocksDB at `path`. Keys
/// and values come from a cheap generator and a pregenerated buffer, so the clock times
/// RocksDB, not the random number generator.
fn synced_writes(path: &Path, per_batch: usize, period: Duration) -> Result<f64> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.set_write_buffer_size(32 << 20);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let db =
        DB::open(&opts, path).with_context(|| format!("open RocksDB at {}", path.display()))?;
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let mut values = vec![0u8; 1 << 16];
    rand::thread_rng().fill_bytes(&mut values);
    let mut seed: u64 = rand::random();
    let mut offset = 0;
    rate(period, || {
        let mut batch = WriteBatch::default();
        for _ in 0..per_batch {
            let mut key = [0u8; 32];
            for chunk in key.chunks_exact_mut(8) {
                chunk.copy_from_slice(&splitmix64(&mut seed).to_le_bytes());
            }
            offset = (offset + 4099) % (values.len() - ENTRY_BYTES);
            batch.put(key, &values[offset..offset + ENTRY_BYTES]);
        }
        db.write_opt(batch, &sync)?;
        Ok(1)
    })
}

/// SplitMix64: a fast, well-mixed sequence for keys that are random enough for RocksDB.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// 4 KiB appends to a new file at `path`, each followed by `fdatasync`, per second.
fn fsyncs(path: &Path, period: Duration) -> Result<f64> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    let block = [0x5a; FSYNC_BYTES];
    rate(period, || {
        file.write_all(&block)?;
        file.sync_data()?;
        Ok(1)
    })
}

/// The files and directories the probe creates under DIR; removed when dropped.
struct Scratch {
    dir: PathBuf,
    created_dir: bool,
    paths: Vec<PathBuf>,
}

impl Scratch {
    fn new(dir: &Path) -> Result<Scratch> {
        let created_dir = !dir.exists();
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Ok(Scratch {
            dir: dir.to_path_buf(),
            created_dir,
            paths: Vec::new(),
        })
    }

    /// A path under DIR for the probe to create; it must not exist yet.
    fn claim(&mut self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        ensure!(
            !path.exists(),
            "{} already exists; give a --dir without it",
            path.display()
        );
        self.paths.push(path.clone());
        Ok(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for path in &self.paths {
            let removed = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("btlog-load: could not remove {}: {e}", path.display());
                }
            }
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}
