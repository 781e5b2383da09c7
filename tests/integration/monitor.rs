//! btlog-monitor against real in-process servers: honest logs pass, watched publications alert,
//! forks are caught with evidence a third party can check, tampered tiles and bundles are
//! caught by a tampering proxy, and restarts resume without re-reading verified entries.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::server::*;
use btlog_server::api::Server;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const MONITOR: &str = env!("CARGO_BIN_EXE_btlog-monitor");

struct Log {
    server: Server,
    token: String,
    vkey: String,
}

/// Starts a server in `dir`, signing with the key file `key` when given.
async fn start_log(dir: &Path, key: Option<&Path>) -> Log {
    let mut cfg = config(dir);
    cfg.key = key.map(Path::to_path_buf);
    let token = add_token(dir);
    let server = start(&cfg).await;
    let vkey = std::fs::read_to_string(dir.join("log.vkey")).expect("log.vkey");
    Log {
        server,
        token,
        vkey: vkey.trim().to_owned(),
    }
}

impl Log {
    fn url(&self) -> String {
        format!("http://{}", self.server.http_addr())
    }

    /// Publishes `entries` (JSON request shapes); returns the reply.
    async fn submit(&self, entries: Vec<Value>) -> Value {
        submit_entries(&self.url(), &self.token, entries).await
    }

    /// Publishes `n` distinct artifacts of `pkg:npm/<prefix>-<i>`.
    async fn publish_many(&self, prefix: &str, n: usize) {
        let all: Vec<Value> = (0..n)
            .map(|i| {
                let name = format!("pkg:npm/{prefix}-{i}");
                publish(&name, "1.0.0", "a.tgz", &digest(&name))
            })
            .collect();
        for chunk in all.chunks(500) {
            self.submit(chunk.to_vec()).await;
        }
    }
}

struct Run {
    code: i32,
    alerts: Vec<Value>,
    stdout: String,
}

/// Runs the monitor binary with `args`.
async fn monitor(args: &[&str]) -> Run {
    let out = tokio::process::Command::new(MONITOR)
        .args(args)
        .output()
        .await
        .expect("run btlog-monitor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let alerts = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    Run {
        code: out.status.code().unwrap_or(-1),
        alerts,
        stdout: format!("{stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

async fn once(url: &str, vkey: &str, state: &Path, extra: &[&str]) -> Run {
    let state = state.to_str().expect("utf-8 path");
    let mut args = vec!["--once", "--log", url, "--vkey", vkey, "--state", state];
    args.extend_from_slice(extra);
    monitor(&args).await
}

fn kinds(run: &Run) -> Vec<&str> {
    run.alerts
        .iter()
        .filter_map(|a| a["kind"].as_str())
        .collect()
}

#[tokio::test]
async fn honest_log_passes_and_watched_publications_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = start_log(&dir.path().join("log"), None).await;
    log.publish_many("noise", 300).await;
    let run = once(&log.url(), &log.vkey, &state, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.alerts.is_empty(), "{}", run.stdout);

    let acme = "pkg:npm/%40acme/widget";
    let reply = log
        .submit(vec![{
            let mut e = publish(acme, "2.0.0", "widget-2.0.0.tgz", &digest("w2"));
            e["publisher"] = json!("github.com/evil/fork");
            e
        }])
        .await;
    let index = reply["results"][0]["index"].as_u64().expect("index");
    log.publish_many("more", 10).await;

    // A watch hit is reported (stdout and webhook) and is not a problem.
    let (hook, posted) = webhook().await;
    let run = once(
        &log.url(),
        &log.vkey,
        &state,
        &["--watch", "pkg:npm/@acme/*", "--webhook", &hook],
    )
    .await;
    let posted = posted.lock().expect("lock").clone();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(posted[0].contains("\"kind\":\"watch\""), "{posted:?}");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(kinds(&run), ["watch"], "{}", run.stdout);
    assert_eq!(run.alerts[0]["index"], json!(index));
    assert_eq!(run.alerts[0]["log"], json!("test.example/log"));

    // With expected publishers, another publisher is a problem (exit 1).
    let cfg = dir.path().join("monitor.toml");
    std::fs::write(
        &cfg,
        format!(
            "state = {:?}\n[[log]]\nurls = [{:?}]\nvkey = {:?}\n\
             [[watch]]\npattern = \"pkg:npm/%40acme/*\"\npublishers = [\"github.com/acme/ci\"]\n",
            dir.path().join("state2"),
            log.url(),
            log.vkey
        ),
    )
    .expect("write config");
    let run = monitor(&["--once", "--config", cfg.to_str().expect("utf-8")]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), ["unexpected-publisher"], "{}", run.stdout);
    assert_eq!(run.alerts[0]["index"], json!(index));
    log.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn fork_is_caught_with_checkable_evidence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("log.key");
    let signer = btlog_core::keys::generate("fork.example/log").expect("key");
    btlog_client::keyfile::write_private_key(&key, &signer).expect("write key");
    let state = dir.path().join("state");

    let a = start_log(&dir.path().join("a"), Some(&key)).await;
    a.publish_many("a", 40).await;
    let run = once(&a.url(), &a.vkey, &state, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    a.server.shutdown().await.expect("shutdown");

    // Same key, another history, longer than what the monitor verified.
    let b = start_log(&dir.path().join("b"), Some(&key)).await;
    assert_eq!(a.vkey, b.vkey);
    b.publish_many("b", 70).await;
    let run = once(&b.url(), &b.vkey, &state, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(kinds(&run).contains(&"fork"), "{}", run.stdout);
    let evidence = std::fs::read_dir(
        state.join(
            std::fs::read_dir(&state)
                .expect("state dir")
                .next()
                .expect("log dir")
                .expect("entry")
                .file_name(),
        ),
    )
    .expect("log dir")
    .filter_map(Result::ok)
    .map(|e| e.path())
    .find(|p| p.to_string_lossy().contains("evidence-"))
    .expect("evidence file");
    let ev = evidence.to_str().expect("utf-8");
    let check = monitor(&["verify-evidence", ev]).await;
    assert_eq!(check.code, 0, "{}", check.stdout);
    assert!(check.stdout.starts_with("PROVEN"), "{}", check.stdout);

    // The state did not move: the monitor still holds A's checkpoint and alerts again.
    let again = once(&b.url(), &b.vkey, &state, &[]).await;
    assert_eq!(again.code, 1, "{}", again.stdout);

    // Tampered evidence is refused.
    let mut json: Value =
        serde_json::from_slice(&std::fs::read(&evidence).expect("read")).expect("evidence json");
    json["prefix_root"] = json!(base64_of(&[7u8; 32]));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, json.to_string()).expect("write");
    let check = monitor(&["verify-evidence", bad.to_str().expect("utf-8")]).await;
    assert_eq!(check.code, 1, "{}", check.stdout);

    // Two mirrors of one origin serving different trees of the same size.
    let c = start_log(&dir.path().join("c"), Some(&key)).await;
    c.publish_many("c", 70).await;
    let fresh = dir.path().join("state-mirrors");
    let run = monitor(&[
        "--once",
        "--log",
        &b.url(),
        "--log",
        &c.url(),
        "--vkey",
        &b.vkey,
        "--state",
        fresh.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(kinds(&run).contains(&"fork"), "{}", run.stdout);
    b.server.shutdown().await.expect("shutdown");
    c.server.shutdown().await.expect("shutdown");
}

/// A webhook receiver: its URL and the request bodies it got.
async fn webhook() -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let bodies = got.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // The alert is one JSON object: read until its closing brace.
            while !buf.ends_with(b"}") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).into_owned();
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
            bodies.lock().expect("lock").push(body);
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Clone, PartialEq)]
enum Tamper {
    None,
    Bundle,
    Tile,
    UpperTile,
    /// Serve this checkpoint note instead of the log's: a mirror that lags behind.
    Checkpoint(String),
}

/// An untampering [`proxy`] to `upstream`: its URL, and its count of bundles served.
async fn counting_proxy(upstream: String) -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = proxy(upstream, Tamper::None, count.clone()).await;
    (format!("http://{addr}"), count)
}

/// A tiny HTTP proxy in front of `upstream` that counts entry bundle requests and can alter
/// one byte of entry bundle 0, of level-0 tile 0 or of level-1 tile 0.
async fn proxy(upstream: String, tamper: Tamper, bundles: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = reqwest::Client::new();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (client, upstream, bundles) = (client.clone(), upstream.clone(), bundles.clone());
            let tamper = tamper.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                if path.starts_with("/tile/entries/") {
                    bundles.fetch_add(1, Ordering::SeqCst);
                }
                let Ok(resp) = client.get(format!("{upstream}{path}")).send().await else {
                    return;
                };
                let status = resp.status().as_u16();
                let mut body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
                if let (Tamper::Checkpoint(note), "/checkpoint") = (&tamper, path.as_str()) {
                    body = note.clone().into_bytes();
                }
                let hit = match tamper {
                    Tamper::Bundle => path.starts_with("/tile/entries/000"),
                    Tamper::Tile => path.starts_with("/tile/0/000"),
                    Tamper::UpperTile => path.starts_with("/tile/1/000"),
                    Tamper::None | Tamper::Checkpoint(_) => false,
                };
                if hit && status == 200 && body.len() > 40 {
                    let at = body.len() - 20;
                    body[at] ^= 0x01;
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tampered_bundles_and_tiles_are_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start_log(&dir.path().join("log"), None).await;
    // Two full bundles, so level-1 tile 0 holds two hashes.
    log.publish_many("p", 600).await;
    for (tamper, name) in [
        (Tamper::Bundle, "bundle"),
        (Tamper::Tile, "tile"),
        (Tamper::UpperTile, "upper tile"),
    ] {
        let state = dir.path().join(name);
        let count = Arc::new(AtomicUsize::new(0));
        let addr = proxy(log.url(), tamper, count).await;
        let run = once(&format!("http://{addr}"), &log.vkey, &state, &[]).await;
        assert_eq!(run.code, 1, "{name}: {}", run.stdout);
        assert!(
            kinds(&run).contains(&"tile-mismatch"),
            "{name}: {}",
            run.stdout
        );
        // Nothing tampered was kept: the honest log then verifies from the same state.
        let run = once(&log.url(), &log.vkey, &state, &[]).await;
        assert_eq!(run.code, 0, "{name}: {}", run.stdout);
    }
    log.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_mirror_that_lags_behind_is_not_an_alert() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start_log(&dir.path().join("log"), None).await;
    log.publish_many("old", 40).await;
    let old = reqwest::get(format!("{}/checkpoint", log.url()))
        .await
        .expect("checkpoint")
        .text()
        .await
        .expect("text");
    log.publish_many("new", 30).await;
    let mirror = proxy(log.url(), Tamper::Checkpoint(old), Arc::default()).await;
    let mirror = format!("http://{mirror}");
    let state = dir.path().join("state");
    let state = state.to_str().expect("utf-8");
    let args = [
        "--once",
        "--log",
        &mirror,
        "--log",
        &log.url(),
        "--vkey",
        &log.vkey,
        "--state",
        state,
    ];
    // First run: the lagging mirror's tree is verified, then extended to the live one's.
    let run = monitor(&args).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    // Second run: the mirror's checkpoint is older than the verified one, and a prefix of it.
    let run = monitor(&args).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    log.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn restart_resumes_without_rereading_verified_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = start_log(&dir.path().join("log"), None).await;
    log.publish_many("r", 300).await;
    let (url, count) = counting_proxy(log.url()).await;

    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        count.swap(0, Ordering::SeqCst),
        2,
        "bundles 000 and 001.p/44"
    );

    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        count.swap(0, Ordering::SeqCst),
        0,
        "nothing new, nothing read"
    );

    log.publish_many("s", 100).await;
    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(
        count.swap(0, Ordering::SeqCst),
        1,
        "only the growing bundle 001.p/144"
    );
    log.server.shutdown().await.expect("shutdown");
}

/// A monitor whose claim index was lost (its `index/` deleted, the state kept) reads the log
/// again from the start to rebuild it, instead of judging later claims without the records of
/// the entries before its position.
#[tokio::test]
async fn a_lost_claim_index_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = start_log(&dir.path().join("log"), None).await;
    let (pkg, file, sha) = ("pkg:npm/kept", "kept-1.0.0.tgz", digest("kept"));
    log.submit(vec![publish(pkg, "1.0.0", file, &sha)]).await;
    log.publish_many("r", 299).await;
    let (url, count) = counting_proxy(log.url()).await;
    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    count.swap(0, Ordering::SeqCst);

    let origin = std::fs::read_dir(&state)
        .expect("state dir")
        .next()
        .expect("one origin")
        .expect("entry")
        .path();
    std::fs::remove_dir_all(origin.join("index")).expect("delete the index");
    // A yank of the artifact published before the position: known, so no alert.
    log.submit(vec![
        json!({"kind": "yank", "package": pkg, "version": "1.0.0",
                           "file": file, "sha256": sha}),
    ])
    .await;
    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    assert!(run.stdout.contains("rebuild"), "{}", run.stdout);
    assert_eq!(
        count.swap(0, Ordering::SeqCst),
        3,
        "bundles 000 and 001.p/44 again, then 001.p/45"
    );
    // Rebuilt: the next run reads nothing again.
    let run = once(&url, &log.vkey, &state, &[]).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    assert_eq!(count.swap(0, Ordering::SeqCst), 0, "{}", run.stdout);
    log.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_arguments_exit_2_with_one_line() {
    let run = monitor(&["--once", "--log", "http://127.0.0.1:1"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    let run = monitor(&["verify-evidence", "/nonexistent/evidence.json"]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
}

/// A static tlog-tiles log of arbitrary (non-btlog) entries, as another kind of log would
/// serve it: a signed checkpoint, one entry bundle and one level-0 tile (at most 256 entries).
/// With `tamper`, one entry differs from the one its tile hash was made from.
async fn static_log(entries: &[Vec<u8>], tamper: bool) -> (SocketAddr, String) {
    let signer = btlog_core::keys::generate("example.com/other-log").expect("key");
    let mut served = entries.to_vec();
    if tamper {
        served[1] = b"forged".to_vec();
    }
    let addr = serve_tree(&signer, entries, &served, entries).await;
    (addr, signer.verifier().vkey())
}

/// Serves a static tlog-tiles log: a checkpoint signed by `signer` for the tree of `signed`,
/// the entry bundles of `served` and every hash tile of the tree of `hashed` (all three of
/// one length), at that size only.
async fn serve_tree(
    signer: &btlog_core::note::Signer,
    signed: &[Vec<u8>],
    served: &[Vec<u8>],
    hashed: &[Vec<u8>],
) -> SocketAddr {
    use btlog_core::merkle::tiles::{tiles_for_size, Tile, TileKind};
    use btlog_core::merkle::{balanced_root, leaf_hash, Frontier, Hash};
    let size = signed.len() as u64;
    let mut frontier = Frontier::default();
    for e in signed {
        frontier.push(leaf_hash(e));
    }
    let checkpoint = btlog_core::checkpoint::Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root: frontier.root(),
    }
    .sign(signer)
    .expect("sign");
    let mut rows: Vec<Vec<Hash>> = vec![hashed.iter().map(|e| leaf_hash(e)).collect()];
    while rows.last().is_some_and(|r| r.len() >= 256) {
        let up = rows
            .last()
            .expect("row")
            .chunks_exact(256)
            .map(balanced_root);
        rows.push(up.collect());
    }
    let mut files = std::collections::HashMap::new();
    files.insert("/checkpoint".to_owned(), checkpoint.into_bytes());
    for tile in tiles_for_size(size) {
        let TileKind::Hashes { level } = tile.kind else {
            continue;
        };
        let span = tile.span();
        let (start, end) = (span.start as usize, span.end as usize);
        let hashes = rows[usize::from(level)][start..end].concat();
        files.insert(format!("/{}", tile.path()), hashes);
        if level == 0 {
            let mut bundle = Vec::new();
            for e in &served[start..end] {
                bundle.extend_from_slice(&u16::try_from(e.len()).expect("short").to_be_bytes());
                bundle.extend_from_slice(e);
            }
            let entries = Tile {
                kind: TileKind::Entries,
                ..tile
            };
            files.insert(format!("/{}", entries.path()), bundle);
        }
    }
    let files = Arc::new(files);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let files = files.clone();
        async move {
            match files.get(uri.path()) {
                Some(body) => Ok(body.clone()),
                None => Err(axum::http::StatusCode::NOT_FOUND),
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A canonical btlog entry of `kind` for `package` (version and file `-` for owner kinds).
fn raw_entry(kind: btlog_core::entry::Kind, package: &str, version: &str, digest: u8) -> Vec<u8> {
    let owner = kind.is_owner();
    let pick = |v: &str| if owner { "-".to_owned() } else { v.to_owned() };
    btlog_core::entry::Entry::new(btlog_core::entry::EntryData {
        kind,
        registry: "registry.example".into(),
        package: package.into(),
        version: pick(version),
        file: pick(&format!("{version}.tgz")),
        sha256: [digest; 32],
        sha512: None,
        size: None,
        publisher: None,
        provenance: None,
        time: None,
    })
    .expect("valid entry")
    .encode()
}

/// Issue #13 item 8: a log that signs one tree and serves other entries (with tiles matching
/// what it serves) raises no claim or watch alert from them, and leaves nothing in the
/// identity index: later, honest entries are judged as if those had never been read.
#[tokio::test]
async fn entries_not_matching_the_signed_root_never_reach_the_index() {
    use btlog_core::entry::Kind::{OwnerAdd, Publish, Yank};
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let signer = btlog_core::keys::generate("poison.example/log").expect("key");
    let vkey = signer.verifier().vkey();
    let honest: Vec<Vec<u8>> = (0..4)
        .map(|i| raw_entry(Publish, "pkg:npm/a", &format!("1.0.{i}"), 1))
        .collect();
    let watch = ["--watch", "pkg:npm/evil"];

    // Signs the first three honest entries, serves three others (and their tile).
    let forged = vec![
        raw_entry(Publish, "pkg:npm/evil", "1.0.0", 0xd1),
        raw_entry(Publish, "pkg:npm/ghost", "1.0.0", 0xd3),
        raw_entry(OwnerAdd, "pkg:npm/nobody", "-", 9),
    ];
    let addr = serve_tree(&signer, &honest[..3], &forged, &forged).await;
    let run = once(&format!("http://{addr}"), &vkey, &state, &watch).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), ["tile-mismatch"], "{}", run.stdout);

    // The honest log, past the forged positions.
    let addr = serve_tree(&signer, &honest, &honest, &honest).await;
    let run = once(&format!("http://{addr}"), &vkey, &state, &watch).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);

    // Then the first publish of pkg:npm/evil (no conflict with the forged one) and a yank of
    // an artifact only the forged bundle named (unknown, not a duplicate).
    let mut more = honest.clone();
    more.push(raw_entry(Publish, "pkg:npm/evil", "1.0.0", 0xd2));
    more.push(raw_entry(Yank, "pkg:npm/ghost", "1.0.0", 0xd3));
    let addr = serve_tree(&signer, &more, &more, &more).await;
    let run = once(&format!("http://{addr}"), &vkey, &state, &watch).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), ["watch", "unknown-artifact"], "{}", run.stdout);
    assert_eq!(run.alerts[1]["index"], json!(5), "{}", run.stdout);
}

#[tokio::test]
async fn opaque_entries_of_other_logs_are_audited_as_a_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("record {i}\n").into_bytes())
        .collect();
    let (addr, vkey) = static_log(&entries, false).await;
    let url = format!("http://{addr}");
    // Read as btlog entries, every one is malformed.
    let run = once(&url, &vkey, &dir.path().join("as-btlog"), &[]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), vec!["bad-entry"; 5], "{}", run.stdout);
    // As opaque entries the tree verifies, with no alert.
    let opaque = ["--entries", "opaque"];
    let run = once(&url, &vkey, &dir.path().join("opaque"), &opaque).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.alerts.is_empty(), "{}", run.stdout);
    // An entry that does not match its tile is still caught.
    let (addr, vkey) = static_log(&entries, true).await;
    let run = once(
        &format!("http://{addr}"),
        &vkey,
        &dir.path().join("t"),
        &opaque,
    )
    .await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), vec!["tile-mismatch"], "{}", run.stdout);
}

/// Issue #13 item 8, across a chunk commit (256 bundles): the records and alerts of a chunk
/// are committed only once the leaves read are proven a prefix of the signed tree.
#[tokio::test]
async fn a_chunk_is_committed_only_once_proven_part_of_the_signed_tree() {
    use btlog_core::entry::Kind::Publish;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let signer = btlog_core::keys::generate("chunks.example/log").expect("key");
    let vkey = signer.verifier().vkey();
    let honest: Vec<Vec<u8>> = (0..256 * 256 + 10)
        .map(|i| raw_entry(Publish, "pkg:npm/a", &format!("1.0.{i}"), 1))
        .collect();
    let mut forged = honest.clone();
    forged[5] = raw_entry(Publish, "pkg:npm/evil", "1.0.0", 0xd1);
    let watch = ["--watch", "pkg:npm/evil"];
    let addr = serve_tree(&signer, &honest, &forged, &forged).await;
    let run = once(&format!("http://{addr}"), &vkey, &state, &watch).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert_eq!(kinds(&run), ["tile-mismatch"], "{}", run.stdout);
    // The honest log, through the same chunk boundary: verified, no alert.
    let addr = serve_tree(&signer, &honest, &honest, &honest).await;
    let run = once(&format!("http://{addr}"), &vkey, &state, &watch).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
}

/// How a [`flaky_proxy`] fails a request.
#[derive(Clone, Copy)]
enum Flake {
    /// 503 with a reason, as a log under compaction.
    Unavailable,
    /// The connection closed without an answer.
    Reset,
}

/// A proxy in front of `upstream` that fails the first `fails` requests of every path with
/// `flake` (every request when `fails` is `usize::MAX`), and forwards the others.
async fn flaky_proxy(upstream: String, fails: usize, flake: Flake) -> String {
    use axum::http::{StatusCode, Uri};
    use axum::response::IntoResponse as _;
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<
        String,
        usize,
    >::new()));
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (upstream, seen) = (upstream.clone(), seen.clone());
        async move {
            let n = {
                let mut seen = seen.lock().expect("lock");
                let n = seen.entry(uri.path().to_owned()).or_default();
                *n += 1;
                *n
            };
            if n <= fails {
                return match flake {
                    Flake::Unavailable => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        r#"{"error":"compacting"}"#.to_owned().into_bytes(),
                    )
                        .into_response(),
                    // A body shorter than its declared length: the transfer breaks off.
                    Flake::Reset => (
                        [(axum::http::header::CONTENT_LENGTH, "1000")],
                        b"partial".to_vec(),
                    )
                        .into_response(),
                };
            }
            let Ok(resp) = reqwest::get(format!("{upstream}{uri}")).await else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
            let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            (status, body).into_response()
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Issue #13 item 17: transient failures (503, a broken transfer) are retried with backoff;
/// a log that keeps failing is given up on with the URL and the reason.
#[tokio::test]
async fn transient_failures_are_retried_and_a_persistent_one_is_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = start_log(&dir.path().join("log"), None).await;
    log.publish_many("f", 300).await;
    for (flake, name) in [(Flake::Unavailable, "503"), (Flake::Reset, "reset")] {
        // Every resource fails twice, then is served.
        let url = flaky_proxy(log.url(), 2, flake).await;
        let run = once(&url, &log.vkey, &dir.path().join(name), &[]).await;
        assert_eq!(
            (run.code, kinds(&run)),
            (0, vec![]),
            "{name}: {}",
            run.stdout
        );
    }
    // Always 503: exit 2, saying where and why, after the retries.
    let url = flaky_proxy(log.url(), usize::MAX, Flake::Unavailable).await;
    let started = std::time::Instant::now();
    let run = once(&url, &log.vkey, &dir.path().join("down"), &[]).await;
    assert_eq!(run.code, 2, "{}", run.stdout);
    for needle in [
        format!("{url}/checkpoint"),
        "HTTP 503: compacting".into(),
        "gave up after 5 attempts".into(),
    ] {
        assert!(run.stdout.contains(&needle), "{needle}: {}", run.stdout);
    }
    // Four waits of 200, 400, 800 and 1600 ms: bounded.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    log.server.shutdown().await.expect("shutdown");
}

/// A webhook that accepts connections and reads requests but never answers.
async fn silent_webhook() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(sock.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (url, connections)
}

/// Issue #13 item 10: a webhook that never answers does not stall the audit: every alert is
/// printed, the audit completes and is saved, and `--once` exits within the webhook timeout.
#[tokio::test]
async fn a_webhook_that_never_answers_does_not_stall_the_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let log = start_log(&dir.path().join("log"), None).await;
    log.publish_many("hook", 300).await;
    let (hook, connections) = silent_webhook().await;
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        once(
            &log.url(),
            &log.vkey,
            &state,
            &["--watch", "pkg:npm/*", "--webhook", &hook],
        ),
    )
    .await
    .expect("the monitor did not wait on the webhook");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(kinds(&run), vec!["watch"; 300], "{}", run.stdout);
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the webhook was tried"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    // The audit was saved: nothing is read or alerted again.
    let run = once(&log.url(), &log.vkey, &state, &["--watch", "pkg:npm/*"]).await;
    assert_eq!((run.code, kinds(&run)), (0, vec![]), "{}", run.stdout);
    log.server.shutdown().await.expect("shutdown");
}
