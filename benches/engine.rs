//! Engine benchmarks: synced appends into the RocksDB store, inclusion / consistency proof
//! generation at 1M and 10M leaves, beside rs_merkle and ct-merkle doing the same in memory, and
//! identity lookups at 1M and 10M.
//!
//! The stores of 1M and 10M leaves are built once and kept under `$BTLOG_BENCH_DIR` (default
//! `/tmp/btlog-bench`) for later runs.

#[path = "../crates/core/tests/common/mod.rs"]
mod common;

use btlog_core::merkle::leaf_hash;
use btlog_store::{NewEntry, Store};
use common::Rfc6962Node;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn entry_data(i: u64) -> Vec<u8> {
    let mut data = format!("btlog-bench-entry {i:020} ").into_bytes();
    data.resize(128, b'x');
    data
}

/// The identity key bench entry `i` claims.
fn identity(i: u64) -> [u8; 32] {
    leaf_hash(&entry_data(i))
}

fn entry(i: u64) -> NewEntry {
    NewEntry::new(entry_data(i), Some(identity(i)), None)
}

fn append_all(store: &Store, total: u64) {
    let mut app = store.appender().expect("writer");
    while app.size() < total {
        let from = app.size();
        let entries: Vec<NewEntry> = (from..(from + 10_000).min(total)).map(entry).collect();
        let staged = app.stage(&entries).expect("stage");
        app.commit(staged, "bench").expect("commit");
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("BTLOG_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("btlog-bench"))
}

/// A store of `n` bench entries, built on first use and kept for later runs.
fn store_of(n: u64) -> Store {
    let dir = bench_dir().join(format!("store-{n}"));
    std::fs::create_dir_all(&dir).expect("create bench dir");
    let store = Store::open(&dir).expect("open bench store");
    if store.size() != n {
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).expect("open bench store");
        append_all(&store, n);
        return store;
    }
    store
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_synced");
    for batch in [1u64, 100, 1000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut app = store.appender().expect("writer");
        g.throughput(Throughput::Elements(batch));
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            // Only stage + commit is timed; building the entries is not.
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let from = app.size();
                    let entries: Vec<NewEntry> = (from..from + batch).map(entry).collect();
                    let t = Instant::now();
                    let staged = app.stage(&entries).expect("stage");
                    app.commit(staged, "bench").expect("commit");
                    spent += t.elapsed();
                }
                spent
            })
        });
    }
    g.finish();
}

/// A tiny deterministic generator, so every library proves the same indexes.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) % n
    }
}

fn proofs(c: &mut Criterion) {
    for n in [1_000_000u64, 10_000_000] {
        let store = store_of(n);
        let mut g = c.benchmark_group(format!("proofs_{}M", n / 1_000_000));
        g.throughput(Throughput::Elements(1));
        let mut rng = Lcg(1);
        g.bench_function("btlog_store/inclusion", |b| {
            b.iter(|| store.inclusion_proof(rng.below(n), n).expect("proof"))
        });
        g.bench_function("btlog_store/consistency", |b| {
            b.iter(|| {
                store
                    .consistency_proof(1 + rng.below(n - 1), n)
                    .expect("proof")
            })
        });
        let leaves: Vec<[u8; 32]> = (0..n).map(|i| entry(i).leaf_hash()).collect();
        let rs = rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(&leaves);
        g.bench_function("rs_merkle_memory/inclusion", |b| {
            b.iter(|| rs.proof(&[rng.below(n) as usize]))
        });
        drop(rs);
        if n == 1_000_000 {
            let mut ct =
                ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
            for i in 0..n {
                ct.push(entry(i).data().to_vec());
            }
            g.bench_function("ct_merkle_memory/inclusion", |b| {
                b.iter(|| ct.prove_inclusion(rng.below(n) as usize))
            });
            g.bench_function("ct_merkle_memory/consistency", |b| {
                b.iter(|| ct.prove_consistency(1 + rng.below(n - 1) as usize))
            });
        }
        g.finish();
    }
}

/// Building the whole 1M-leaf tree in memory, for scale against the store's append rate.
fn in_memory_build(c: &mut Criterion) {
    let n = 1_000_000u64;
    let data: Vec<Vec<u8>> = (0..n).map(|i| entry(i).data().to_vec()).collect();
    let mut g = c.benchmark_group("build_1M_in_memory");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("rs_merkle", |b| {
        b.iter(|| {
            let leaves: Vec<[u8; 32]> = data.iter().map(|d| leaf_hash(d)).collect();
            rs_merkle::MerkleTree::<Rfc6962Node>::from_leaves(&leaves).root()
        })
    });
    g.bench_function("ct_merkle", |b| {
        b.iter(|| {
            let mut ct =
                ct_merkle::mem_backed_tree::MemoryBackedTree::<sha2_011::Sha256, Vec<u8>>::new();
            for d in &data {
                ct.push(d.clone());
            }
            ct.root()
        })
    });
    g.finish();
}

/// Identity lookups as the sequencer makes them, 1000 in one call: identities never logged
/// (nearly every append's) and logged ones, at random places in the log, of 1, 10 and 30
/// epochs.
fn identity_lookups(c: &mut Criterion) {
    for n in [1_000_000u64, 10_000_000, 30_000_000] {
        let store = store_of(n);
        // The identity filters' groups, built beside the writer at open, in place.
        store.settle_filters();
        let mut g = c.benchmark_group(format!("identity_lookups_{}M", n / 1_000_000));
        g.throughput(Throughput::Elements(1000));
        let mut rng = Lcg(7);
        for (name, logged) in [("new", false), ("logged", true)] {
            g.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        (0..1000)
                            .map(|_| identity(rng.below(n) + if logged { 0 } else { n }))
                            .collect::<Vec<_>>()
                    },
                    |ids| {
                        let found = store.identity_indexes(&ids).expect("lookup");
                        assert!(found.iter().all(|f| f.is_some() == logged));
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        g.finish();
    }
}

criterion_group!(benches, appends, proofs, in_memory_build, identity_lookups);
criterion_main!(benches);
