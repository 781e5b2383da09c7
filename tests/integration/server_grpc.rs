//! The log server over real gRPC (generated tonic client): submission semantics, proofs with
//! two verifiers, tiles, lookup, auth, bad input, and the checkpoint stream.

use crate::server::*;
use btlog_core::merkle::Hash;
use btlog_core::proof_bundle::{ArtifactClaim, TlogProof};
use btlog_server::api::pb::{self, log_client::LogClient};
use tonic::transport::Channel;
use tonic::{Code, Request};

fn entry(kind: &str, package: &str, version: &str, file: &str, sha256: &str) -> pb::EntryFields {
    pb::EntryFields {
        kind: kind.into(),
        package: package.into(),
        version: version.into(),
        file: file.into(),
        sha256: sha256.into(),
        ..Default::default()
    }
}

fn add(token: Option<&str>, entries: Vec<pb::EntryFields>) -> Request<pb::AddEntriesRequest> {
    let mut req = Request::new(pb::AddEntriesRequest { entries });
    if let Some(t) = token {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("ascii"),
        );
    }
    req
}

fn hash(b: &[u8]) -> Hash {
    b.try_into().expect("32 bytes")
}

async fn client(addr: std::net::SocketAddr) -> LogClient<Channel> {
    LogClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_submit_prove_lookup_and_watch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let srv = start(&config(dir.path())).await;
    let vkey = srv.log().verifier().clone();
    let mut c = client(srv.grpc_addr()).await;
    let (a, b) = (digest("a"), digest("b"));

    let mut watch = c
        .watch_checkpoints(pb::WatchCheckpointsRequest {})
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("checkpoint");
    assert_eq!(verify_checkpoint(&first.checkpoint, &vkey).0, 0);

    let reply = c
        .add_entries(add(
            Some(&token),
            vec![
                entry(
                    "publish",
                    "pkg:pypi/requests",
                    "2.0",
                    "requests-2.0.tar.gz",
                    &a,
                ),
                entry(
                    "publish",
                    "pkg:pypi/requests",
                    "2.0",
                    "requests-2.0.tar.gz",
                    &a,
                ),
                entry(
                    "publish",
                    "pkg:pypi/requests",
                    "2.0",
                    "requests-2.0.tar.gz",
                    &b,
                ),
                entry(
                    "publish",
                    "pkg:pypi/requests",
                    "2.1",
                    "requests-2.1.tar.gz",
                    &b,
                ),
            ],
        ))
        .await
        .expect("add")
        .into_inner();
    let got: Vec<_> = reply
        .results
        .iter()
        .map(|r| (r.index, r.status.as_str(), r.existing_index))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, "new", None),
            (0, "duplicate", None),
            (0, "conflict", Some(0)),
            (1, "new", None)
        ]
    );
    let (size, root) = verify_checkpoint(&reply.checkpoint, &vkey);
    assert_eq!(size, 2);

    // The stream delivers the new checkpoint.
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), watch.message())
        .await
        .expect("in time")
        .expect("stream")
        .expect("checkpoint");
    assert_eq!(next.checkpoint, reply.checkpoint);

    for r in &reply.results {
        let p = c
            .get_inclusion_proof(pb::GetInclusionProofRequest {
                leaf: Some(pb::get_inclusion_proof_request::Leaf::LeafHash(
                    r.leaf_hash.clone(),
                )),
                size,
            })
            .await
            .expect("proof")
            .into_inner();
        assert_eq!(p.index, r.index);
        let proof: Vec<Hash> = p.proof.iter().map(|h| hash(h)).collect();
        check_inclusion(&hash(&r.leaf_hash), r.index, size, &proof, &root);
    }

    let more = c
        .add_entries(add(
            Some(&token),
            vec![entry(
                "yank",
                "pkg:pypi/requests",
                "2.0",
                "requests-2.0.tar.gz",
                &a,
            )],
        ))
        .await
        .expect("add")
        .into_inner();
    let (size3, root3) = verify_checkpoint(&more.checkpoint, &vkey);
    let p = c
        .get_consistency_proof(pb::GetConsistencyProofRequest {
            from: size,
            to: size3,
        })
        .await
        .expect("consistency")
        .into_inner();
    let proof: Vec<Hash> = p.proof.iter().map(|h| hash(h)).collect();
    check_consistency(size, size3, &proof, &root, &root3);

    // Tiles: the entry bundle hashes to the level-0 tile, which folds to the root.
    let tile = c
        .get_tile(pb::GetTileRequest {
            level: 0,
            index: 0,
            width: size3 as u32,
        })
        .await
        .expect("tile")
        .into_inner()
        .data;
    let leaves: Vec<Hash> = tile.chunks_exact(32).map(hash).collect();
    assert_eq!(crate::common::naive_root(&leaves), root3);
    let bundle = c
        .get_entry_bundle(pb::GetEntryBundleRequest {
            index: 0,
            width: size3 as u32,
        })
        .await
        .expect("bundle")
        .into_inner()
        .data;
    let hashed: Vec<Hash> = split_bundle(&bundle)
        .iter()
        .map(|e| crate::common::naive_leaf(e))
        .collect();
    assert_eq!(hashed, leaves);
    let missing = c
        .get_tile(pb::GetTileRequest {
            level: 0,
            index: 1,
            width: 0,
        })
        .await
        .expect_err("no such tile");
    assert_eq!(missing.code(), Code::NotFound);

    let found = c
        .lookup(pb::LookupRequest {
            package: "pkg:pypi/requests".into(),
            version: "2.0".into(),
            file: "requests-2.0.tar.gz".into(),
        })
        .await
        .expect("lookup")
        .into_inner();
    let claim = ArtifactClaim {
        package: "pkg:pypi/requests".into(),
        version: "2.0".into(),
        file: "requests-2.0.tar.gz".into(),
        sha256: hex::decode(&a).expect("hex").try_into().expect("32"),
    };
    TlogProof::parse(found.proof.as_bytes())
        .expect("parse")
        .verify_offline(&vkey, &claim)
        .expect("offline proof verifies");

    let listed = c
        .list_package(pb::ListPackageRequest {
            package: "pkg:pypi/requests".into(),
            from: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.entries.len(), 3);
    let page = c
        .get_entries(pb::GetEntriesRequest { start: 0, end: 10 })
        .await
        .expect("entries")
        .into_inner();
    assert_eq!(page.entries.len(), 3);
    assert_eq!(
        c.get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .expect("checkpoint")
            .into_inner()
            .checkpoint,
        more.checkpoint
    );

    // Refusals: no or wrong token, malformed entry, bad kind; the log is unchanged.
    let good = entry("publish", "pkg:pypi/x", "1", "x-1.tar.gz", &a);
    let e = c
        .add_entries(add(None, vec![good.clone()]))
        .await
        .expect_err("401");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .add_entries(add(Some("btlog_wrong"), vec![good.clone()]))
        .await
        .expect_err("401");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c
        .add_entries(add(
            Some(&token),
            vec![
                good.clone(),
                entry("publish", "pkg:pypi/x", "2", "x-2.tar.gz", "zz"),
            ],
        ))
        .await
        .expect_err("400");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c
        .add_entries(add(
            Some(&token),
            vec![entry("steal", "pkg:pypi/x", "1", "x", &a)],
        ))
        .await
        .expect_err("400");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(srv.log().checkpoint().note, more.checkpoint);
    drop(watch);
    srv.shutdown().await.expect("clean shutdown");
}
