//! The witness's cosigning rate (PROTOCOL.md §10): `Witness::add_checkpoint` in process, on one
//! thread, each request advancing the log by one entry. A request is parsed, the log signature
//! and the RFC 6962 consistency proof verified, the new state written atomically and fsynced on
//! this machine's disk, and the checkpoint cosigned. HTTP is not included.

#[path = "../crates/core/tests/common/mod.rs"]
mod common;

use btlog_core::checkpoint::Checkpoint;
use btlog_core::keys;
use btlog_core::merkle;
use btlog_core::witness::AddCheckpoint;
use btlog_server::witness::{Outcome, Witness, WitnessConfig};
use common::{naive_leaf, Levels};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::{Duration, Instant};

/// Tree sizes the requests start from: the log has this many entries, then grows one by one.
const BASE: u64 = 1_000_000;
/// Requests prepared (each `iter_custom` call takes a fresh witness and the first `iters`).
const PREPARED: u64 = 4096;

fn add_checkpoint(c: &mut Criterion) {
    let log = keys::generate("bench.example/log").expect("log key");
    let leaves: Vec<_> = (0..BASE + PREPARED)
        .map(|i| naive_leaf(&i.to_be_bytes()))
        .collect();
    let levels = Levels::new(&leaves);
    let checkpoint = |size: u64| {
        Checkpoint {
            origin: log.name().to_owned(),
            size,
            root: merkle::root(size, &levels).expect("root"),
        }
        .sign(&log)
        .expect("sign")
    };
    let first = checkpoint(BASE);
    let requests: Vec<Vec<u8>> = (BASE + 1..=BASE + PREPARED)
        .map(|n| {
            AddCheckpoint {
                old: n - 1,
                proof: merkle::consistency_proof(n - 1, n, &levels).expect("proof"),
                checkpoint: checkpoint(n),
            }
            .format()
            .into_bytes()
        })
        .collect();
    let dir = tempfile::tempdir_in(".").expect("tempdir on this disk");
    let key = dir.path().join("witness.key");
    btlog_client::keyfile::write_private_key(
        &key,
        &keys::generate_cosigner("w.example").expect("key"),
    )
    .expect("key file");
    let mut round = 0;
    c.bench_function("witness add-checkpoint (1M-entry log, +1 each)", |b| {
        b.iter_custom(|iters| {
            round += 1;
            let config = WitnessConfig {
                key: key.clone(),
                state: dir.path().join(format!("state-{round}")),
                listen: "127.0.0.1:0".parse().expect("addr"),
                prefix: String::new(),
                logs: vec![log.verifier().vkey()],
                timeout_secs: 10,
                max_connections: 16,
            };
            let witness = Witness::open(&config).expect("witness");
            let start = AddCheckpoint {
                old: 0,
                proof: vec![],
                checkpoint: first.clone(),
            }
            .format();
            assert!(matches!(
                witness.add_checkpoint(start.as_bytes()),
                Outcome::Cosigned(_)
            ));
            let n = iters.min(PREPARED) as usize;
            let began = Instant::now();
            for r in &requests[..n] {
                assert!(matches!(witness.add_checkpoint(r), Outcome::Cosigned(_)));
            }
            // Scaled when criterion asked for more than were prepared.
            began.elapsed().mul_f64(iters as f64 / n as f64)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = add_checkpoint
}
criterion_main!(benches);
