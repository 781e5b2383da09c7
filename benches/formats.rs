//! Format throughput (PROTOCOL.md §2, §3, §5): entry encode + leaf hash, entry parse, checkpoint sign
//! and verify, tlog-proof offline verification.

use btlog_core::checkpoint::Checkpoint;
use btlog_core::entry::{Entry, EntryData, Kind};
use btlog_core::merkle::leaf_hash;
use btlog_core::note::Signer;
use btlog_core::proof_bundle::{ArtifactClaim, TlogProof};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use std::hint::black_box;

const ORIGIN: &str = "example.com/btlog";

fn entry() -> Entry {
    Entry::new(EntryData {
        kind: Kind::Publish,
        registry: "registry.npmjs.org".into(),
        package: "pkg:npm/%40scope/left-pad".into(),
        version: "1.3.0".into(),
        file: "left-pad-1.3.0.tgz".into(),
        sha256: [0x5f; 32],
        sha512: None,
        size: Some(10234),
        publisher: Some("github.com/scope/left-pad/.github/workflows/release.yml".into()),
        provenance: Some([0x9c; 32]),
        time: Some("2026-11-21T12:00:00Z".into()),
    })
    .expect("valid bench entry")
}

fn bench_entries(c: &mut Criterion) {
    let e = entry();
    let bytes = e.encode();
    let mut g = c.benchmark_group("entry");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode+leaf_hash", |b| b.iter(|| black_box(&e).leaf_hash()));
    g.bench_function("parse", |b| b.iter(|| Entry::parse(black_box(&bytes))));
    g.finish();
}

fn bench_checkpoints(c: &mut Criterion) {
    let log = Signer::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).expect("valid name");
    let vkey = log.verifier();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 1 << 30,
        root: [7; 32],
    };
    let note = cp.sign(&log).expect("signs");
    let mut g = c.benchmark_group("checkpoint");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| b.iter(|| black_box(&cp).sign(&log)));
    g.bench_function("verify", |b| {
        b.iter(|| Checkpoint::verify(black_box(note.as_bytes()), &vkey))
    });
    g.finish();
}

fn bench_tlog_proof(c: &mut Criterion) {
    let log = Signer::new(ORIGIN, SigningKey::from_bytes(&[1; 32])).expect("valid name");
    let e = entry();
    let bytes = e.encode();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 1,
        root: leaf_hash(&bytes),
    };
    let proof = TlogProof {
        entry: bytes,
        index: 0,
        proof: vec![],
        checkpoint: cp.sign(&log).expect("signs"),
    }
    .format();
    let claim = ArtifactClaim {
        package: e.package.clone(),
        version: e.version.clone(),
        file: e.file.clone(),
        sha256: e.sha256,
    };
    let vkey = log.verifier();
    c.bench_function("tlog-proof/parse+verify_offline", |b| {
        b.iter(|| {
            TlogProof::parse(black_box(proof.as_bytes()))
                .and_then(|p| p.verify_offline(&vkey, &claim))
        })
    });
}

criterion_group!(benches, bench_entries, bench_checkpoints, bench_tlog_proof);
criterion_main!(benches);
