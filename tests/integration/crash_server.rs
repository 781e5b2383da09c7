//! Crash safety end to end. The real `btlog` binary runs under concurrent write load and is
//! killed with SIGKILL at random moments, then restarted: every acknowledged entry must be at
//! its index with its leaf hash, and every checkpoint handed out before any crash must verify
//! and be consistent with the log after it. Storage failures: a real full filesystem (a small
//! tmpfs) and a write that lands but reports an error (the store's hook, as a failed fsync
//! after the data reached the disk) both stop the writer (appends refused, reads served) until
//! a restart reloads the tree consistently.

use crate::server::*;
use btlog_core::merkle::{self, Hash};
use btlog_core::note::Verifier;
use btlog_server::api::pb;
use btlog_store::InjectedFailure;
use rand::Rng as _;
use serde_json::{json, Value};
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
        .args(["--registry", REGISTRY, "--allow", "*"])
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
            btlog_core::keys::parse_vkey(&text).expect("parse vkey")
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

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted when dropped. A real
/// filesystem that fills up: what the writer sees is the kernel's ENOSPC through RocksDB.
/// Mounting needs root (or passwordless sudo), as `.ci/run` has for its package installs.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mkdir");
        let out = privileged("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (needs root or passwordless sudo): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { _dir: dir, path }
    }

    /// Writes a file until the filesystem is full.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let block = vec![0xa5u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        filler
    }
}

/// `program` run as root: directly when this process is root, else through `sudo -n`.
fn privileged(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", program]);
        sudo
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = privileged("umount").arg("-l").arg(&self.path).status();
    }
}

/// A real storage failure: the log's filesystem fills up. The batch that fails is answered 503
/// on either front end, the writer stops (every later append 503, `/healthz` 503,
/// `btlog_writer_stopped 1`), nothing new is signed, and reads of the published tree go on.
/// Once space is freed, a restart reloads the tree from disk: every acknowledged entry is there,
/// the checkpoint is consistent with every one signed before (the failed batch may or may not
/// have landed), and appends work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_writer_until_a_restart() {
    let disk = SmallDisk::mount(48);
    let data = disk.path.join("data");
    let token = add_token(&data);
    let client = reqwest::Client::new();
    let mut signed = BTreeMap::new();
    let mut acked = Vec::new();

    let server = start_server(&data).await;
    let base = format!("http://{}", server.http_addr());
    let vkey = server.log().verifier().clone();
    for i in 0..3 {
        let (status, body) = submit_http(&client, &base, &token, &format!("before-{i}")).await;
        assert_eq!(status, 200, "{body}");
        acked.push(ack(&body));
    }
    let filler = disk.fill();

    // Batches of large entries until the disk refuses one (RocksDB may still have room in a
    // preallocated WAL file for the first few).
    let mut failed = None;
    for round in 0..2000 {
        let (status, body) = submit_big(&client, &base, &token, round).await;
        if status == 200 {
            acked.push(ack(&body));
            continue;
        }
        failed = Some((status, body));
        break;
    }
    let (status, body) = failed.expect("a write failed on the full disk");
    assert_eq!(status, 503, "{body}");
    assert_reason(body["error"].as_str().expect("reason"), "storage failure");
    let store = server.log().store().clone();
    assert!(store.writer_stopped());
    let before = served_checkpoint(&client, &base).await;
    let (size, root) = verify_checkpoint(&before, &vkey);

    // Every later append is refused on both front ends; nothing new is signed.
    for front in [Front::Http, Front::Grpc] {
        refused(&client, &base, server.grpc_addr(), &token, "later", front).await;
    }
    assert_eq!(served_checkpoint(&client, &base).await, before);
    stopped_but_reading(&client, &base, size, &root).await;
    drop(store);
    server.shutdown().await.expect("shutdown");

    // Space is freed and the log restarted: the tree is reloaded from disk.
    std::fs::remove_file(filler).expect("free space");
    let server = start_server(&data).await;
    let base = format!("http://{}", server.http_addr());
    assert_eq!(get(&client, &base, "/healthz").await.0, 200);
    check_log(&base, &vkey, &acked, &mut signed).await;
    let (status, body) = submit_http(&client, &base, &token, "after").await;
    assert_eq!(status, 200, "{body}");
    acked.push(ack(&body));
    check_log(&base, &vkey, &acked, &mut signed).await;
    server.shutdown().await.expect("shutdown");
}

/// The ack of an accepted one-entry (or first-entry) submission.
fn ack(body: &Value) -> Ack {
    let result = &body["results"][0];
    Ack {
        index: result["index"].as_u64().expect("index"),
        leaf_hash: b64_hash(result["leaf_hash"].as_str().expect("leaf hash")),
        checkpoint: body["checkpoint"].as_str().expect("checkpoint").to_owned(),
    }
}

/// Submits 50 publish entries with 3 KB publishers (about 150 KB of WAL) over HTTP.
async fn submit_big(client: &reqwest::Client, base: &str, token: &str, round: u32) -> (u16, Value) {
    let publisher = "p".repeat(3000);
    let entries: Vec<Value> = (0..50)
        .map(|i| {
            let name = format!("big-{round}-{i}");
            let mut e = publish(&format!("pkg:npm/{name}"), "1", "f", &digest(&name));
            e["publisher"] = json!(publisher);
            e
        })
        .collect();
    let resp = client
        .post(format!("{base}/v1/entries"))
        .bearer_auth(token)
        .json(&json!({ "entries": entries }))
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

/// The front end that submits the batch whose write lands but reports a failure.
#[derive(Clone, Copy, Debug)]
enum Front {
    Http,
    Grpc,
}

/// A write that reaches the disk but reports an error leaves the disk state unknown to the
/// writer: its submitter is told the append failed, the writer stops (every later append is
/// refused, nothing is signed, reads go on), and a restart picks the landed batch up with a
/// checkpoint consistent with every one signed before. Run once per front end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_failing_after_it_landed_stops_appends_until_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let client = reqwest::Client::new();
    let mut signed = BTreeMap::new();
    // The size and name of the batch that landed in the previous round.
    let mut landed: Option<(u64, String)> = None;
    for front in [Some(Front::Http), Some(Front::Grpc), None] {
        let server = start_server(dir.path()).await;
        let base = format!("http://{}", server.http_addr());
        let vkey = server.log().verifier().clone();
        check_log(&base, &vkey, &[], &mut signed).await;
        let (size, _) = verify_checkpoint(&served_checkpoint(&client, &base).await, &vkey);
        if let Some((landed_size, name)) = &landed {
            // After the restart the landed batch is in the log, and the log appends again.
            assert_eq!(size, landed_size + 1, "the landed batch is in the log");
            let (status, body) = submit_http(&client, &base, &token, name).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["results"][0]["status"], "duplicate", "{body}");
            assert_eq!(body["results"][0]["index"], *landed_size, "{body}");
            assert_eq!(get(&client, &base, "/healthz").await.0, 200);
        }
        let Some(front) = front else {
            server.shutdown().await.expect("shutdown");
            break;
        };
        for i in 0..2 {
            let (status, body) =
                submit_http(&client, &base, &token, &format!("{front:?}-{i}")).await;
            assert_eq!(status, 200, "{body}");
            let (s, r) = verify_checkpoint(body["checkpoint"].as_str().expect("cp"), &vkey);
            assert!(signed.insert(s, r).is_none_or(|p| p == r));
        }
        let before = served_checkpoint(&client, &base).await;
        let (size, root) = verify_checkpoint(&before, &vkey);
        let store = server.log().store().clone();

        // The submitter of the batch whose write landed is told it failed.
        store.inject_write_failures(InjectedFailure::AfterWrite, 1);
        let name = format!("{front:?}-landed");
        refused(&client, &base, server.grpc_addr(), &token, &name, front).await;
        assert!(store.writer_stopped());
        let stored = store.latest_checkpoint().expect("read").map(|(s, _)| s);
        assert_eq!(
            stored,
            Some(size + 1),
            "the batch landed with its checkpoint"
        );

        // Every later append is refused on both front ends, a retry of the landed batch
        // included, and nothing new is signed, stored or served.
        for later in [name.as_str(), "later"] {
            for front in [Front::Http, Front::Grpc] {
                refused(&client, &base, server.grpc_addr(), &token, later, front).await;
            }
        }
        assert_eq!(served_checkpoint(&client, &base).await, before);
        assert_eq!(server.log().checkpoint().size, size);
        assert_eq!(store.size(), size);
        let stored = store.latest_checkpoint().expect("read").map(|(s, _)| s);
        assert_eq!(
            stored,
            Some(size + 1),
            "nothing stored after the landed batch"
        );

        stopped_but_reading(&client, &base, size, &root).await;

        // Reads of the published tree go on; the landed batch is not visible.
        for path in [
            format!("/tile/0/000.p/{size}"),
            format!("/tile/entries/000.p/{size}"),
        ] {
            let (status, _) = get(&client, &base, &path).await;
            assert_eq!(status, 200, "{path}");
        }
        let (status, _) = get(&client, &base, &format!("/tile/0/000.p/{}", size + 1)).await;
        assert_eq!(status, 404);
        let pkg = get_json(&client, format!("{base}/v1/packages/pkg:npm/{name}")).await;
        assert_eq!(pkg["entries"], json!([]), "{pkg}");
        let lookup = format!("/v1/lookup?package=pkg:npm/{name}&version=1&file=f");
        assert_eq!(get(&client, &base, &lookup).await.0, 404);
        check_log(&base, &vkey, &[], &mut signed).await;

        drop(store);
        server.shutdown().await.expect("shutdown");
        landed = Some((size, name));
    }
}

/// Submits publish entry `name` over `front` and checks it is refused as unavailable, with a
/// one-line reason.
async fn refused(
    client: &reqwest::Client,
    base: &str,
    grpc: std::net::SocketAddr,
    token: &str,
    name: &str,
    front: Front,
) {
    match front {
        Front::Http => {
            let (status, body) = submit_http(client, base, token, name).await;
            assert_eq!(status, 503, "{body}");
            assert_reason(body["error"].as_str().expect("reason"), "stopped");
        }
        Front::Grpc => {
            let err = submit_grpc(grpc, token, name).await.expect_err("refused");
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert_reason(err.message(), "stopped");
        }
    }
}

/// Health and metrics say the writer stopped, while the tree of `size` with `root` is still
/// served: an inclusion proof of its first entry verifies.
async fn stopped_but_reading(client: &reqwest::Client, base: &str, size: u64, root: &Hash) {
    let (status, reason) = get(client, base, "/healthz").await;
    assert_eq!(status, 503);
    assert_reason(&reason, "restart");
    let (_, metrics) = get(client, base, "/metrics").await;
    assert!(metrics.contains("btlog_writer_stopped 1"), "{metrics}");
    let proof = get_json(
        client,
        format!("{base}/v1/proof/inclusion?index=0&size={size}"),
    )
    .await;
    let leaf = b64_hash(proof["leaf_hash"].as_str().expect("leaf hash"));
    check_inclusion(&leaf, 0, size, &hashes(&proof["proof"]), root);
}

/// Checks that an error reason is one non-empty line mentioning `want`.
fn assert_reason(reason: &str, want: &str) {
    let line = reason.strip_suffix('\n').unwrap_or(reason);
    assert!(!line.is_empty() && !line.contains('\n'), "{reason:?}");
    assert!(line.contains(want), "{reason:?}");
}

/// GET `path`: status and body text.
async fn get(client: &reqwest::Client, base: &str, path: &str) -> (u16, String) {
    let resp = client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("get");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("text"))
}

/// Submits publish entry `name` over HTTP: status and JSON body.
async fn submit_http(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
) -> (u16, Value) {
    let body = json!({"entries": [publish(&format!("pkg:npm/{name}"), "1", "f", &digest(name))]});
    let resp = client
        .post(format!("{base}/v1/entries"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

/// Submits publish entry `name` over gRPC, on a connection of its own.
async fn submit_grpc(
    addr: std::net::SocketAddr,
    token: &str,
    name: &str,
) -> Result<tonic::Response<pb::AddEntriesResponse>, tonic::Status> {
    let mut grpc = pb::log_client::LogClient::connect(format!("http://{addr}"))
        .await
        .expect("grpc");
    let mut req = tonic::Request::new(pb::AddEntriesRequest {
        entries: vec![pb::EntryFields {
            kind: "publish".into(),
            package: format!("pkg:npm/{name}"),
            version: "1".into(),
            file: "f".into(),
            sha256: digest(name),
            ..Default::default()
        }],
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("meta"),
    );
    grpc.add_entries(req).await
}

async fn start_server(dir: &Path) -> btlog_server::api::Server {
    crate::server::start(&config(dir)).await
}
