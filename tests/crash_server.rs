//! Crash safety end to end. The real `btlog` binary runs under concurrent write load and is
//! killed with SIGKILL at random moments, then restarted: every acknowledged entry must be at
//! its index with its leaf hash, and every checkpoint handed out before any crash must verify
//! and be consistent with the log after it. A second test fails the storage write of a batch
//! (the store's injection hook) and checks that the batch fails for its submitters, nothing is
//! signed or published for it, and the log carries on.

mod common;
#[path = "common/server.rs"]
mod server;

use base64::Engine as _;
use btlog::checkpoint::Checkpoint;
use btlog::merkle::{self, Hash};
use btlog::note::Verifier;
use rand::Rng as _;
use serde_json::{json, Value};
use server::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: u32 = 10;
const WRITERS: u64 = 4;

/// An acknowledged entry: where the log said it is, and the checkpoint that covered it.
struct Ack {
    index: u64,
    leaf_hash: Hash,
    checkpoint: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn btlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_btlog"))
}

/// Starts `btlog serve` on fresh ports and waits until it answers; retries if a port was taken.
async fn start(data: &Path) -> (Child, String) {
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let (http, grpc) = (free_port(), free_port());
        let mut child = btlog()
            .args(["serve", "--data"])
            .arg(data)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--grpc", &format!("127.0.0.1:{grpc}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn btlog serve");
        let base = format!("http://127.0.0.1:{http}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
                if r.status().is_success() {
                    return (child, base);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("btlog serve did not come up");
}

/// One writer: submits small batches of distinct entries until the server goes away.
async fn writer(base: String, token: String, round: u32, w: u64, acks: Arc<Mutex<Vec<Ack>>>) {
    let client = reqwest::Client::new();
    for seq in 0u64.. {
        let n = 1 + seq % 4;
        let entries: Vec<Value> = (0..n)
            .map(|k| {
                let id = format!("r{round}-w{w}-{seq}-{k}");
                publish(
                    &format!("pkg:npm/crash-{id}"),
                    "1.0.0",
                    "a.tgz",
                    &digest(&id),
                )
            })
            .collect();
        let sent = client
            .post(format!("{base}/v1/entries"))
            .bearer_auth(&token)
            .json(&json!({ "entries": entries }))
            .send()
            .await;
        let Ok(resp) = sent else { return };
        if resp.status() != 200 {
            // Queue full or shutting down; only acknowledged entries count.
            continue;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        let checkpoint = body["checkpoint"].as_str().expect("checkpoint").to_owned();
        let mut acks = acks.lock().expect("acks");
        for r in body["results"].as_array().expect("results") {
            assert_eq!(r["status"], "new", "{body}");
            acks.push(Ack {
                index: r["index"].as_u64().expect("index"),
                leaf_hash: b64_hash(r["leaf_hash"].as_str().expect("leaf hash")),
                checkpoint: checkpoint.clone(),
            });
        }
    }
}

async fn get_json(client: &reqwest::Client, url: String) -> Value {
    let resp = client.get(&url).send().await.expect("request");
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.expect("json")
}

async fn served_checkpoint(client: &reqwest::Client, base: &str) -> String {
    let resp = client.get(format!("{base}/checkpoint")).send().await;
    resp.expect("checkpoint").text().await.expect("text")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .expect("proof array")
        .iter()
        .map(|h| b64_hash(h.as_str().expect("hash")))
        .collect()
}

/// Checks the restarted log against everything acknowledged and signed before.
async fn check_log(base: &str, vkey: &Verifier, acks: &[Ack], signed: &mut BTreeMap<u64, Hash>) {
    let client = reqwest::Client::new();
    let (size, root) = verify_checkpoint(&served_checkpoint(&client, base).await, vkey);
    for ack in acks {
        let (s, r) = verify_checkpoint(&ack.checkpoint, vkey);
        assert!(ack.index < s, "reply checkpoint does not cover its entry");
        let prev = signed.insert(s, r);
        assert!(prev.is_none_or(|p| p == r), "two roots signed for size {s}");
    }
    assert!(signed.insert(size, root).is_none_or(|p| p == root));
    // Every acknowledged entry is at its index with its leaf hash.
    let mut leaves = Vec::with_capacity(size as usize);
    while (leaves.len() as u64) < size {
        let start = leaves.len() as u64;
        let page = get_json(
            &client,
            format!("{base}/v1/entries?start={start}&end={size}"),
        )
        .await;
        for e in page["entries"].as_array().expect("entries") {
            assert_eq!(e["index"].as_u64(), Some(leaves.len() as u64));
            leaves.push(merkle::leaf_hash(
                e["entry"].as_str().expect("entry").as_bytes(),
            ));
        }
    }
    for ack in acks {
        assert!(ack.index < size, "acknowledged entry {} lost", ack.index);
        assert_eq!(
            leaves[ack.index as usize], ack.leaf_hash,
            "entry {}",
            ack.index
        );
    }
    // Every checkpoint ever signed is a prefix of this log.
    for (&s, r) in signed.iter() {
        assert!(
            s <= size,
            "checkpoint for size {s} is ahead of the log ({size})"
        );
        if s == 0 || s == size {
            assert!(s != size || *r == root, "root changed at size {s}");
            continue;
        }
        let v = get_json(
            &client,
            format!("{base}/v1/proof/consistency?from={s}&to={size}"),
        )
        .await;
        merkle::verify_consistency(s, size, &hashes(&v["proof"]), r, &root)
            .unwrap_or_else(|e| panic!("checkpoint {s} inconsistent with {size}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_and_signed_checkpoints_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = btlog()
        .args(["token", "--data"])
        .arg(&data)
        .args(["--registry", REGISTRY])
        .output()
        .expect("btlog token");
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();

    let began = Instant::now();
    let acks = Arc::new(Mutex::new(Vec::new()));
    let mut all = Vec::new();
    let mut signed = BTreeMap::new();
    let mut rng = rand::thread_rng();
    let mut vkey = None;
    for round in 0..=ROUNDS {
        let (mut child, base) = start(&data).await;
        let vk = vkey.get_or_insert_with(|| {
            let text = std::fs::read_to_string(data.join("log.vkey")).expect("vkey");
            btlog::keys::parse_vkey(&text).expect("parse vkey")
        });
        check_log(&base, vk, &all, &mut signed).await;
        if round == ROUNDS {
            child.kill().expect("kill");
            child.wait().expect("wait");
            break;
        }
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(base.clone(), token.clone(), round, w, acks.clone())))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..1200))).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        for t in tasks {
            t.await.expect("writer");
        }
        all.append(&mut acks.lock().expect("acks"));
    }
    let acked = all.len();
    assert!(acked > 50, "only {acked} entries acknowledged");
    eprintln!(
        "{ROUNDS} crashes, {acked} acknowledged entries, {} checkpoints checked, {:.1} s",
        signed.len(),
        began.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn failed_storage_write_fails_the_batch_and_signs_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let server = start_server(dir.path()).await;
    let log = server.log().clone();
    let vkey = log.verifier().clone();
    let client = reqwest::Client::new();
    let base = format!("http://{}", server.http_addr());
    let submit = |name: &str| {
        let body =
            json!({"entries": [publish(&format!("pkg:npm/{name}"), "1", "f", &digest(name))]});
        client
            .post(format!("{base}/v1/entries"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let first: Value = submit("first")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let before = log.checkpoint();
    assert_eq!(before.size, 1, "{first}");

    // HTTP: the write fails; the submitter gets 503 with a reason.
    log.store().inject_write_failures(1);
    let resp = submit("lost").await.expect("send");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.expect("json");
    assert!(
        body["error"].as_str().expect("reason").contains("storage"),
        "{body}"
    );
    // gRPC: the same, as UNAVAILABLE.
    log.store().inject_write_failures(1);
    let mut grpc =
        btlog::api::pb::log_client::LogClient::connect(format!("http://{}", server.grpc_addr()))
            .await
            .expect("grpc");
    let mut req = tonic::Request::new(btlog::api::pb::AddEntriesRequest {
        entries: vec![btlog::api::pb::EntryFields {
            kind: "publish".into(),
            package: "pkg:npm/lost2".into(),
            version: "1".into(),
            file: "f".into(),
            sha256: digest("lost2"),
            ..Default::default()
        }],
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    let err = grpc.add_entries(req).await.expect_err("write fails");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // Nothing was published, stored or signed for the failed batches.
    assert_eq!(log.checkpoint(), before);
    assert_eq!(log.store().size(), 1);
    assert_eq!(log.store().checkpoint(2).expect("read"), None);
    assert_eq!(served_checkpoint(&client, &base).await, before.note);

    // The next batch succeeds, right after the tree before the failure, and the failed entry
    // was never logged (it comes back new, not duplicate).
    let again: Value = submit("lost")
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(again["results"][0]["status"], "new", "{again}");
    assert_eq!(again["results"][0]["index"], 1);
    let note = again["checkpoint"].as_str().expect("checkpoint");
    let (size, root) = verify_checkpoint(note, &vkey);
    assert_eq!(size, 2);
    let (_, root1) = verify_checkpoint(&before.note, &vkey);
    let proof = log.consistency_proof(1, 2).await.expect("proof");
    merkle::verify_consistency(1, 2, &proof, &root1, &root).expect("consistent");
    let cp = Checkpoint::verify(note.as_bytes(), &vkey)
        .expect("verify")
        .0;
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(cp.root),
        base64::engine::general_purpose::STANDARD.encode(log.store().root(2).expect("root"))
    );
    server.shutdown().await.expect("shutdown");
}

async fn start_server(dir: &Path) -> btlog::api::Server {
    server::start(&config(dir)).await
}
