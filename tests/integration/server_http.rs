//! The log server over real HTTP: submission semantics, proofs checked with two verifiers,
//! tiles, lookup proofs, auth, limits and restart.

use crate::server::*;
use btlog_core::entry::Entry;
use btlog_core::merkle::Hash;
use btlog_core::note::Verifier;
use btlog_core::proof_bundle::{ArtifactClaim, TlogProof};
use serde_json::{json, Value};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(addr: std::net::SocketAddr, token: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
            token: token.to_owned(),
        }
    }

    async fn submit_as(&self, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/entries", self.base))
            .json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn submit(&self, entries: Vec<Value>) -> Value {
        let (status, body) = self
            .submit_as(Some(&self.token), &json!({ "entries": entries }))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request")
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self.get(path).await;
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json body"))
    }

    async fn checkpoint(&self, vkey: &Verifier) -> (u64, Hash) {
        let text = self.get("/checkpoint").await.text().await.expect("text");
        verify_checkpoint(&text, vkey)
    }
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|h| b64_hash(h.as_str().expect("string")))
        .collect()
}

fn statuses(reply: &Value) -> Vec<(u64, String, Option<u64>)> {
    reply["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["status"].as_str().expect("status").to_owned(),
                r["existing_index"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_proofs_tiles_and_lookup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let srv = start(&config(dir.path())).await;
    let vkey = srv.log().verifier().clone();
    let c = Client::new(srv.http_addr(), &token);
    let (a, b) = (digest("a"), digest("b"));

    // One batch: new, new, a duplicate and a conflict of the first, both within the batch.
    let reply = c
        .submit(vec![
            publish("pkg:npm/left-pad", "1.0.0", "left-pad-1.0.0.tgz", &a),
            publish("pkg:npm/left-pad", "1.0.1", "left-pad-1.0.1.tgz", &b),
            publish("pkg:npm/left-pad", "1.0.0", "left-pad-1.0.0.tgz", &a),
            publish("pkg:npm/left-pad", "1.0.0", "left-pad-1.0.0.tgz", &b),
        ])
        .await;
    assert_eq!(
        statuses(&reply),
        vec![
            (0, "new".into(), None),
            (1, "new".into(), None),
            (0, "duplicate".into(), None),
            (0, "conflict".into(), Some(0)),
        ]
    );
    let (size2, root2) = verify_checkpoint(reply["checkpoint"].as_str().expect("cp"), &vkey);
    assert_eq!(size2, 2);

    // Across batches: duplicate and conflict against the stored index; a yank of a logged
    // artifact and an owner event are appended.
    let reply = c
        .submit(vec![
            publish("pkg:npm/left-pad", "1.0.1", "left-pad-1.0.1.tgz", &b),
            publish("pkg:npm/left-pad", "1.0.1", "left-pad-1.0.1.tgz", &a),
            json!({"kind": "yank", "package": "pkg:npm/left-pad", "version": "1.0.0",
                   "file": "left-pad-1.0.0.tgz", "sha256": a}),
            json!({"kind": "owner-add", "package": "pkg:npm/left-pad", "version": "-",
                   "file": "-", "sha256": digest("account-1")}),
            publish(
                "pkg:cargo/serde",
                "1.0.0",
                "serde-1.0.0.crate",
                &digest("serde"),
            ),
        ])
        .await;
    assert_eq!(
        statuses(&reply),
        vec![
            (1, "duplicate".into(), None),
            (1, "conflict".into(), Some(1)),
            (2, "new".into(), None),
            (3, "new".into(), None),
            (4, "new".into(), None),
        ]
    );
    let (size, root) = verify_checkpoint(reply["checkpoint"].as_str().expect("cp"), &vkey);
    assert_eq!(size, 5);
    assert_eq!(c.checkpoint(&vkey).await, (size, root));

    // Every returned leaf hash has an inclusion proof that verifies, by index and by hash.
    for r in reply["results"].as_array().expect("results") {
        let index = r["index"].as_u64().expect("index");
        let leaf = b64_hash(r["leaf_hash"].as_str().expect("leaf"));
        let (st, p) = c
            .get_json(&format!("/v1/proof/inclusion?index={index}&size={size}"))
            .await;
        assert_eq!(st, 200, "{p}");
        assert_eq!(b64_hash(p["leaf_hash"].as_str().expect("leaf")), leaf);
        check_inclusion(&leaf, index, size, &hashes(&p["proof"]), &root);
        let (st, q) = c
            .get_json(&format!(
                "/v1/proof/inclusion?leaf_hash={}&size={size}",
                hex::encode(leaf)
            ))
            .await;
        assert_eq!(st, 200, "{q}");
        assert_eq!(q["index"].as_u64(), Some(index));
    }
    let (st, p) = c
        .get_json(&format!("/v1/proof/consistency?from={size2}&to={size}"))
        .await;
    assert_eq!(st, 200, "{p}");
    check_consistency(size2, size, &hashes(&p["proof"]), &root2, &root);

    // Level-0 tile and entry bundle: entries hash to the tile, the tile folds to the root.
    let tile = c.get(&format!("/tile/0/000.p/{size}")).await;
    assert_eq!(tile.headers()["content-type"], "application/octet-stream");
    assert!(tile.headers()["cache-control"]
        .to_str()
        .expect("ascii")
        .contains("max-age"));
    let tile = tile.bytes().await.expect("tile");
    let leaves: Vec<Hash> = tile
        .chunks_exact(32)
        .map(|h| h.try_into().expect("32"))
        .collect();
    assert_eq!(crate::common::naive_root(&leaves), root);
    let bundle = c.get(&format!("/tile/entries/000.p/{size}")).await;
    assert_eq!(bundle.status(), 200);
    let entries = split_bundle(&bundle.bytes().await.expect("bundle"));
    let hashed: Vec<Hash> = entries
        .iter()
        .map(|e| crate::common::naive_leaf(e))
        .collect();
    assert_eq!(hashed, leaves);
    assert!(entries
        .iter()
        .all(|e| Entry::parse(e).expect("entry").registry == REGISTRY));
    assert_eq!(c.get("/tile/0/000").await.status(), 404);
    assert_eq!(
        c.get(&format!("/tile/0/000.p/{}", size + 1)).await.status(),
        404
    );
    assert_eq!(c.get("/tile/0/bogus").await.status(), 404);

    // Gzip for bundles when accepted.
    let raw = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client");
    let gz = raw
        .get(format!("{}/tile/entries/000.p/{size}", c.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let compressed = gz.bytes().await.expect("body");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&compressed[..]),
        &mut plain,
    )
    .expect("gunzip");
    assert_eq!(split_bundle(&plain), entries);

    // Checkpoint content type; entries page; package listing.
    let cp = c.get("/checkpoint").await;
    assert_eq!(cp.headers()["content-type"], "text/plain; charset=utf-8");
    let (st, page) = c.get_json("/v1/entries?start=1&end=3").await;
    assert_eq!(st, 200);
    assert_eq!(page["entries"][0]["index"], 1);
    assert_eq!(page["entries"].as_array().expect("entries").len(), 2);
    let (st, pkg) = c.get_json("/v1/packages/pkg:npm/left-pad").await;
    assert_eq!(st, 200, "{pkg}");
    assert_eq!(pkg["entries"].as_array().expect("entries").len(), 4);

    // Lookup returns a tlog-proof an installer verifies offline.
    let (st, found) = c
        .get_json("/v1/lookup?package=pkg:npm/left-pad&version=1.0.0&file=left-pad-1.0.0.tgz")
        .await;
    assert_eq!(st, 200, "{found}");
    assert_eq!(found["index"], 0);
    let proof =
        TlogProof::parse(found["proof"].as_str().expect("proof").as_bytes()).expect("parse");
    let claim = ArtifactClaim {
        package: "pkg:npm/left-pad".into(),
        version: "1.0.0".into(),
        file: "left-pad-1.0.0.tgz".into(),
        sha256: hex::decode(&a).expect("hex").try_into().expect("32"),
    };
    proof
        .verify_offline(&vkey, &claim)
        .expect("offline proof verifies");
    let (st, err) = c
        .get_json("/v1/lookup?package=pkg:npm/nope&version=1&file=f")
        .await;
    assert_eq!(st, 404);
    assert!(err["error"].is_string());

    let metrics = c.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.contains("btlog_tree_size 5"), "{metrics}");
    assert!(metrics.contains("btlog_batch_entries_count"));
    // The store's memory by kind (the five entries sit in the memtables) and compaction debt.
    let gauge = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} missing: {metrics}"))
    };
    assert!(gauge("btlog_store_memory_bytes{kind=\"memtables\"}") > 0);
    gauge("btlog_store_memory_bytes{kind=\"block_cache\"}");
    // One identity filter and one package filter, of the first epoch: 2^20 keys at 16 and 12
    // bits (the first epoch is not full, so neither is sealed yet).
    for (kind, bits) in [("identity_filters", 16), ("package_filters", 12)] {
        assert_eq!(
            gauge(&format!("btlog_store_memory_bytes{{kind=\"{kind}\"}}")),
            (1 << 20) * bits / 8
        );
    }
    gauge("btlog_store_pending_compaction_bytes");
    assert_eq!(c.get("/healthz").await.status(), 200);
    srv.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_the_log_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.max_entries_per_request = 3;
    cfg.limits.batch_max_entries = 3;
    cfg.limits.max_body_bytes = 4096;
    let srv = start(&cfg).await;
    let vkey = srv.log().verifier().clone();
    let c = Client::new(srv.http_addr(), &token);
    c.submit(vec![publish("pkg:npm/x", "1", "x-1.tgz", &digest("x"))])
        .await;
    let before = c.checkpoint(&vkey).await;
    let good = publish("pkg:npm/y", "1", "y-1.tgz", &digest("y"));
    let batch = json!({"entries": [good.clone()]});

    // 401: no token, wrong token.
    let (st, body) = c.submit_as(None, &batch).await;
    assert_eq!(st, 401, "{body}");
    assert!(body["error"].as_str().expect("reason").contains("token"));
    let (st, _) = c.submit_as(Some("btlog_wrong"), &batch).await;
    assert_eq!(st, 401);

    // 400: one malformed entry refuses the whole batch.
    let bad = publish("pkg:npm/z", "1", "z-1.tgz", "not-hex");
    let (st, body) = c
        .submit_as(Some(&token), &json!({"entries": [good.clone(), bad]}))
        .await;
    assert_eq!(st, 400, "{body}");
    let (st, _) = c.submit_as(Some(&token), &json!({"nope": []})).await;
    assert_eq!(st, 400);
    let with_registry = json!({"entries": [{"kind": "publish", "registry": "evil", "package": "pkg:npm/y",
        "version": "1", "file": "y-1.tgz", "sha256": digest("y")}]});
    assert_eq!(c.submit_as(Some(&token), &with_registry).await.0, 400);
    // 400: a yank must name a published artifact with its digest.
    let yank = json!({"kind": "yank", "package": "pkg:npm/x", "version": "1", "file": "x-1.tgz",
        "sha256": digest("other")});
    let (st, body) = c
        .submit_as(Some(&token), &json!({"entries": [good.clone(), yank]}))
        .await;
    assert_eq!(st, 400, "{body}");
    // 400: owner changes only for a package that has a publish, as monitors check.
    let owner = json!({"kind": "owner-add", "package": "pkg:npm/never-published", "version": "-",
        "file": "-", "sha256": digest("account")});
    let (st, body) = c
        .submit_as(Some(&token), &json!({"entries": [owner]}))
        .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.to_string().contains("no earlier publish"), "{body}");
    // 413: too many entries, too large a body.
    let (st, _) = c
        .submit_as(Some(&token), &json!({"entries": vec![good.clone(); 4]}))
        .await;
    assert_eq!(st, 413);
    let huge = publish("pkg:npm/y", &"9".repeat(5000), "y.tgz", &digest("y"));
    let (st, _) = c.submit_as(Some(&token), &json!({"entries": [huge]})).await;
    assert_eq!(st, 413);
    // Bad read queries.
    assert_eq!(
        c.get_json("/v1/proof/inclusion?index=9&size=1").await.0,
        400
    );
    assert_eq!(
        c.get_json("/v1/proof/consistency?from=1&to=99").await.0,
        400
    );
    assert_eq!(c.get_json("/v1/entries?start=x&end=1").await.0, 400);

    assert_eq!(c.checkpoint(&vkey).await, before);
    let (st, _) = c
        .get_json("/v1/lookup?package=pkg:npm/y&version=1&file=y-1.tgz")
        .await;
    assert_eq!(st, 404, "refused entries must not be logged");
    srv.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_and_concurrent_group_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.rate_burst = 20;
    cfg.limits.rate_per_second = 0.5;
    let srv = start(&cfg).await;
    let vkey = srv.log().verifier().clone();
    let c = std::sync::Arc::new(Client::new(srv.http_addr(), &token));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let v = format!("{i}");
                c.submit(vec![publish("pkg:npm/c", &v, "c.tgz", &digest(&v))])
                    .await
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for t in tasks {
        let reply = t.await.expect("task");
        let (size, _) = verify_checkpoint(reply["checkpoint"].as_str().expect("cp"), &vkey);
        let index = reply["results"][0]["index"].as_u64().expect("index");
        assert!(index < size, "reply checkpoint covers the entry");
        indexes.push(index);
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..20).collect::<Vec<_>>());
    let (st, body) = c
        .submit_as(
            Some(&token),
            &json!({"entries": [publish("pkg:npm/c", "x", "c.tgz", &digest("x"))]}),
        )
        .await;
    assert_eq!(st, 429, "{body}");
    srv.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_the_log_and_stays_consistent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let cfg = config(dir.path());
    let srv = start(&cfg).await;
    let vkey = srv.log().verifier().clone();
    let c = Client::new(srv.http_addr(), &token);
    c.submit(vec![
        publish("pkg:npm/r", "1", "r-1.tgz", &digest("r1")),
        publish("pkg:npm/r", "2", "r-2.tgz", &digest("r2")),
        publish("pkg:npm/r", "3", "r-3.tgz", &digest("r3")),
    ])
    .await;
    let before = c.checkpoint(&vkey).await;
    let note_before = c.get("/checkpoint").await.text().await.expect("text");
    srv.shutdown().await.expect("clean shutdown");

    let srv = start(&cfg).await;
    let c = Client::new(srv.http_addr(), &token);
    assert_eq!(
        srv.log().verifier().vkey(),
        vkey.vkey(),
        "same key after restart"
    );
    let note_after = c.get("/checkpoint").await.text().await.expect("text");
    assert_eq!(
        note_after, note_before,
        "the stored checkpoint is served again"
    );
    let vkey_file = std::fs::read_to_string(dir.path().join("log.vkey")).expect("vkey file");
    assert_eq!(vkey_file.trim(), vkey.vkey());
    let reply = c
        .submit(vec![
            publish("pkg:npm/r", "1", "r-1.tgz", &digest("r1")),
            publish("pkg:npm/r", "4", "r-4.tgz", &digest("r4")),
        ])
        .await;
    assert_eq!(statuses(&reply)[0], (0, "duplicate".into(), None));
    let after = verify_checkpoint(reply["checkpoint"].as_str().expect("cp"), &vkey);
    assert_eq!(after.0, 4);
    let (st, p) = c
        .get_json(&format!(
            "/v1/proof/consistency?from={}&to={}",
            before.0, after.0
        ))
        .await;
    assert_eq!(st, 200);
    check_consistency(before.0, after.0, &hashes(&p["proof"]), &before.1, &after.1);
    srv.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tiles_are_immutable_and_reproduce_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let srv = start(&config(dir.path())).await;
    let vkey = srv.log().verifier().clone();
    let c = Client::new(srv.http_addr(), &token);
    let batch: Vec<Value> = (0..300)
        .map(|i| {
            let v = format!("{i}");
            publish("pkg:npm/big", &v, "big.tgz", &digest(&v))
        })
        .collect();
    let reply = c.submit(batch).await;
    let (size, root) = verify_checkpoint(reply["checkpoint"].as_str().expect("cp"), &vkey);
    assert_eq!(size, 300);
    let full = c.get("/tile/0/000").await;
    assert_eq!(
        full.headers()["cache-control"],
        "public, max-age=604800, immutable"
    );
    let mut leaves: Vec<Hash> = full
        .bytes()
        .await
        .expect("tile")
        .chunks_exact(32)
        .map(|h| h.try_into().expect("32"))
        .collect();
    let partial = c.get("/tile/0/001.p/44").await.bytes().await.expect("tile");
    leaves.extend(
        partial
            .chunks_exact(32)
            .map(|h| -> Hash { h.try_into().expect("32") }),
    );
    assert_eq!(leaves.len(), 300);
    assert_eq!(crate::common::naive_root(&leaves), root);
    // The level-1 tile holds the root of the first full level-0 tile.
    let level1 = c.get("/tile/1/000.p/1").await.bytes().await.expect("tile");
    assert_eq!(&level1[..], &crate::common::naive_root(&leaves[..256])[..]);
    let bundle = c.get("/tile/entries/000").await;
    assert_eq!(
        bundle.headers()["cache-control"],
        "public, max-age=604800, immutable"
    );
    let entries = split_bundle(&bundle.bytes().await.expect("bundle"));
    assert_eq!(entries.len(), 256);
    srv.shutdown().await.expect("clean shutdown");
}
