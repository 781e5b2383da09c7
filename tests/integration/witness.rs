//! `btlog witness`, the real binary on loopback, as a C2SP tlog-witness: every add-checkpoint
//! case gets the spec's status, the cosignature verifies with an independent check of the
//! tlog-cosignature format, the cosigned state never moves backwards (concurrent requests,
//! `kill -9` and restart), a fork is refused and its evidence verifies with
//! `btlog-monitor verify-evidence`, and a second witness on the same state refuses to start.

use crate::common::{naive_consistency, naive_leaf, naive_root, Hash};
use crate::server::free_port;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use btlog_core::checkpoint::Checkpoint;
use btlog_core::keys;
use btlog_core::note::Signer;
use btlog_core::witness::AddCheckpoint;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LOG: &str = "log.example/witnessed";
const WITNESS: &str = "witness.example/w1";

fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| naive_leaf(format!("entry {i}").as_bytes()))
        .collect()
}

/// A checkpoint of `n` leaves signed by `log` (with `fork`, of other leaves).
fn checkpoint(log: &Signer, n: usize, fork: bool) -> String {
    let mut l = leaves(n);
    if fork {
        l[0] = naive_leaf(b"another entry");
    }
    Checkpoint {
        origin: log.name().to_owned(),
        size: n as u64,
        root: naive_root(&l),
    }
    .sign(log)
    .expect("sign")
}

/// An add-checkpoint body from `old` to a checkpoint of `n` leaves, with the real proof.
fn request(log: &Signer, old: usize, n: usize) -> String {
    let proof = if old == 0 {
        vec![]
    } else {
        naive_consistency(old, &leaves(n))
    };
    body(old as u64, proof, checkpoint(log, n, false))
}

fn body(old: u64, proof: Vec<Hash>, checkpoint: String) -> String {
    AddCheckpoint {
        old,
        proof,
        checkpoint,
    }
    .format()
}

struct Witness {
    child: Child,
    url: String,
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `btlog witness --config <dir>/witness.toml` on `port`.
fn spawn(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_btlog"))
        .args(["witness", "--config"])
        .arg(dir.join("witness.toml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("stderr-{port}"))).expect("stderr"))
        .spawn()
        .expect("spawn btlog witness")
}

async fn start(dir: &Path, port: u16) -> Witness {
    let child = spawn(dir, port);
    let url = format!("http://127.0.0.1:{port}/w/add-checkpoint");
    let deadline = Instant::now() + Duration::from_secs(15);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "witness did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Witness { child, url }
}

async fn post(url: &str, body: &str) -> (u16, String, String) {
    let resp = reqwest::Client::new()
        .post(url)
        .body(body.to_owned())
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ctype, resp.text().await.expect("text"))
}

/// Checks a cosignature line from first principles (C2SP tlog-cosignature, not this crate's
/// note code): key ID = SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4], then an 8-byte big-endian
/// timestamp and an Ed25519 signature over `cosignature/v1\ntime <ts>\n` ‖ checkpoint body.
fn check_cosignature(line: &str, key: &VerifyingKey, checkpoint: &str) -> u64 {
    let rest = line.strip_prefix("— ").expect("signature line");
    let (name, sig) = rest.trim_end().split_once(' ').expect("name and signature");
    assert_eq!(name, WITNESS);
    let raw = B64.decode(sig).expect("base64");
    assert_eq!(raw.len(), 4 + 8 + 64, "cosignature/v1 size");
    let mut id = Sha256::new();
    id.update(WITNESS.as_bytes());
    id.update(b"\n\x04");
    id.update(key.as_bytes());
    assert_eq!(raw[..4], id.finalize()[..4], "key ID");
    let ts = u64::from_be_bytes(raw[4..12].try_into().expect("8 bytes"));
    let body = checkpoint.split("\n\n").next().expect("body").to_owned() + "\n";
    let msg = format!("cosignature/v1\ntime {ts}\n{body}");
    let sig = Signature::from_slice(&raw[12..]).expect("signature");
    key.verify(msg.as_bytes(), &sig)
        .expect("cosignature verifies");
    ts
}

/// A cosignature/v1 verifier for Cloudflare's independent signed-note implementation
/// (`signed_note`), written from tlog-cosignature here, not with btlog's note code.
struct CosignatureV1 {
    name: String,
    key: VerifyingKey,
    id: u32,
}

impl CosignatureV1 {
    fn new(vkey: &btlog_core::note::Verifier) -> Self {
        let key = *vkey.public_key();
        let mut typed = vec![0x04];
        typed.extend_from_slice(key.as_bytes());
        CosignatureV1 {
            name: vkey.name().to_owned(),
            key,
            id: signed_note::key_id(vkey.name(), &typed),
        }
    }
}

impl signed_note::Verifier for CosignatureV1 {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let (Some(ts), Some(sig)) = (sig.get(..8), sig.get(8..)) else {
            return false;
        };
        let ts = u64::from_be_bytes(ts.try_into().expect("8 bytes"));
        let mut signed = format!("cosignature/v1\ntime {ts}\n").into_bytes();
        signed.extend_from_slice(msg);
        Signature::from_slice(sig).is_ok_and(|s| self.key.verify(&signed, &s).is_ok())
    }
}

/// Verifies a served, cosigned checkpoint with `signed_note`: the log's Ed25519 signature with
/// its `StandardVerifier`, each witness's cosignature with [`CosignatureV1`]. The names of the
/// keys whose signatures verified.
fn interop_verify(
    note: &str,
    log: &btlog_core::note::Verifier,
    witnesses: &[btlog_core::note::Verifier],
) -> Vec<String> {
    let mut list: Vec<Box<dyn signed_note::Verifier>> = vec![Box::new(
        signed_note::StandardVerifier::new(&log.vkey()).expect("log vkey"),
    )];
    list.extend(
        witnesses
            .iter()
            .map(|w| Box::new(CosignatureV1::new(w)) as Box<dyn signed_note::Verifier>),
    );
    let parsed = signed_note::Note::from_bytes(note.as_bytes()).expect("signed_note parses it");
    let (verified, _) = parsed
        .verify(&signed_note::VerifierList::new(list))
        .expect("signed_note verifies it");
    verified.iter().map(|s| s.name().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_cosigns_only_what_extends_its_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    // The witness key, made as an operator would.
    let out = Command::new(env!("CARGO_BIN_EXE_btlog"))
        .args(["keygen", "--witness", "--origin", WITNESS, "--out"])
        .arg(d.join("witness.key"))
        .output()
        .expect("keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wvkey = String::from_utf8(out.stdout).expect("utf-8");
    let wkey = keys::parse_vkey(wvkey.trim()).expect("witness vkey");
    let wpub = *wkey.public_key();
    let log = keys::generate(LOG).expect("log key");
    let port = free_port();
    std::fs::write(
        d.join("witness.toml"),
        format!(
            "key = {:?}\nstate = {:?}\nlisten = \"127.0.0.1:{port}\"\nprefix = \"/w\"\nlogs = [{:?}]\n",
            d.join("witness.key"),
            d.join("state"),
            log.verifier().vkey()
        ),
    )
    .expect("config");
    let w = start(d, port).await;

    // First contact: old 0, no proof. The answer is a cosignature of that checkpoint.
    let cp5 = checkpoint(&log, 5, false);
    let (status, _, lines) = post(&w.url, &request(&log, 0, 5)).await;
    assert_eq!(status, 200, "{lines}");
    assert_eq!(lines.lines().count(), 1, "{lines}");
    let ts = check_cosignature(&lines, &wpub, &cp5);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(ts.abs_diff(now) < 60, "timestamp {ts} is now");
    // The library's note verification agrees.
    let cosigned = format!("{cp5}{lines}");
    let note = btlog_core::note::Note::parse(cosigned.as_bytes()).expect("note");
    note.verify(&[&wkey]).expect("cosignature verifies");

    // The same checkpoint again: cosigned again, nothing moves.
    let (status, _, _) = post(&w.url, &request(&log, 5, 5)).await;
    assert_eq!(status, 200);

    // Refusals, each with the spec's status; none moves the state.
    let stale = post(&w.url, &request(&log, 0, 7)).await;
    assert_eq!(
        (stale.0, stale.1.as_str(), stale.2.as_str()),
        (409, "text/x.tlog.size", "5\n")
    );
    let backwards = post(&w.url, &body(7, vec![], checkpoint(&log, 5, false))).await;
    assert_eq!(backwards.0, 400, "old > size: {}", backwards.2);
    let mut bad = naive_consistency(5, &leaves(8));
    bad[0][0] ^= 1;
    let bad_proof = post(&w.url, &body(5, bad, checkpoint(&log, 8, false))).await;
    assert_eq!(bad_proof.0, 422, "{}", bad_proof.2);
    let other_key = keys::generate(LOG).expect("same name, other key");
    let forged = post(&w.url, &request(&other_key, 5, 8)).await;
    assert_eq!(forged.0, 403, "{}", forged.2);
    let unknown = keys::generate("log.example/unknown").expect("key");
    assert_eq!(post(&w.url, &request(&unknown, 0, 3)).await.0, 404);
    for junk in [
        "",
        "old 5\n",
        "old 05\n\nx",
        "hello\n\nworld\n",
        "old 5\nnot-base64\n\n",
    ] {
        assert_eq!(post(&w.url, junk).await.0, 400, "{junk:?}");
    }

    // Forward with a real proof.
    let (status, _, lines) = post(&w.url, &request(&log, 5, 8)).await;
    assert_eq!(status, 200, "{lines}");

    // A fork at the held size: 409 with the size, and evidence a monitor can check.
    let fork = post(&w.url, &body(8, vec![], checkpoint(&log, 8, true))).await;
    assert_eq!((fork.0, fork.2.as_str()), (409, "8\n"));
    let evidence: Vec<_> = std::fs::read_dir(d.join("state/evidence"))
        .expect("evidence dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(evidence.len(), 1);
    let checked = Command::new(env!("CARGO_BIN_EXE_btlog-monitor"))
        .arg("verify-evidence")
        .arg(&evidence[0])
        .output()
        .expect("verify-evidence");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );

    // Concurrent requests from the held size: exactly one advances, the rest see 409.
    let posts: Vec<_> = (9..25)
        .map(|n| {
            let (url, b) = (w.url.clone(), request(&log, 8, n));
            tokio::spawn(async move { (n, post(&url, &b).await) })
        })
        .collect();
    let mut winners = Vec::new();
    for p in posts {
        let (n, (status, _, text)) = p.await.expect("task");
        match status {
            200 => winners.push(n),
            409 => assert!(text.trim().parse::<u64>().expect("size") >= 8),
            other => panic!("status {other}: {text}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one advance: {winners:?}");
    let held = winners[0];

    // kill -9 and restart: the cosigned state survived; nothing goes backwards.
    let mut w = w;
    let _ = w.child.kill();
    let _ = w.child.wait();
    drop(w);
    let port2 = free_port();
    let config = std::fs::read_to_string(d.join("witness.toml")).expect("config");
    std::fs::write(
        d.join("witness.toml"),
        config.replace(&format!(":{port}"), &format!(":{port2}")),
    )
    .expect("config");
    let w = start(d, port2).await;
    let again = post(&w.url, &request(&log, 0, 30)).await;
    assert_eq!((again.0, again.2), (409, format!("{held}\n")));
    assert_eq!(post(&w.url, &request(&log, held, 30)).await.0, 200);

    // A second witness on the same state directory refuses to start.
    let port3 = free_port();
    let mut second = spawn(d, port3);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = second.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "a second witness kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
    let err = std::fs::read_to_string(d.join(format!("stderr-{port3}"))).expect("stderr");
    assert!(err.contains("locked by another process"), "{err}");
}

/// A witness process of its own, following the log with vkey `log_vkey`.
async fn start_named(
    root: &Path,
    name: &str,
    log_vkey: &str,
) -> (Witness, btlog_core::note::Verifier) {
    let dir = root.join(name.replace('/', "_"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let signer = keys::generate_cosigner(name).expect("witness key");
    btlog_client::keyfile::write_private_key(&dir.join("witness.key"), &signer).expect("key");
    let port = free_port();
    std::fs::write(
        dir.join("witness.toml"),
        format!(
            "key = {:?}\nstate = {:?}\nlisten = \"127.0.0.1:{port}\"\nprefix = \"/w\"\nlogs = [{log_vkey:?}]\n",
            dir.join("witness.key"),
            dir.join("state"),
        ),
    )
    .expect("config");
    (start(&dir, port).await, signer.verifier())
}

/// The served checkpoint's size and which of `witnesses` cosigned it (each checked alone).
async fn served(
    base: &str,
    log: &btlog_core::note::Verifier,
    witnesses: &[btlog_core::note::Verifier],
) -> (u64, Vec<usize>) {
    let text = reqwest::get(format!("{base}/checkpoint"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let (c, note) = Checkpoint::verify(text.as_bytes(), log).expect("log signature");
    let cosigned = witnesses
        .iter()
        .enumerate()
        .filter(|(_, w)| note.verify(&[w]).is_ok())
        .map(|(i, _)| i)
        .collect();
    (c.size, cosigned)
}

/// Waits until the served checkpoint has `size` with at least `quorum` cosignatures.
async fn wait_served(
    base: &str,
    log: &btlog_core::note::Verifier,
    ws: &[btlog_core::note::Verifier],
    size: u64,
    quorum: usize,
) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, by) = served(base, log, ws).await;
        if s == size && by.len() >= quorum {
            return by;
        }
        assert!(
            Instant::now() < deadline,
            "served size {s} cosigned by {by:?}, waiting for {size}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh log key for [`LOG`], in a file under `d`.
fn log_key(d: &Path) -> (std::path::PathBuf, btlog_core::note::Verifier) {
    let path = d.join("log.key");
    let signer = keys::generate(LOG).expect("log key");
    btlog_client::keyfile::write_private_key(&path, &signer).expect("log key file");
    (path, signer.verifier())
}

/// A log server config (data in `d/data`, key `key`) asking `witnesses` with quorum 2, and a
/// submitter token.
fn witnessed_log(
    d: &Path,
    key: std::path::PathBuf,
    witnesses: Vec<(&btlog_core::note::Verifier, String)>,
) -> (btlog_server::config::Config, String) {
    let data = d.join("data");
    let token = crate::server::add_token(&data);
    let mut config = crate::server::config(&data);
    config.key = Some(key);
    config.origin = LOG.into();
    config.witness_quorum = 2;
    config.witnesses = witnesses
        .into_iter()
        .map(|(v, url)| btlog_server::config::WitnessEndpoint {
            vkey: v.vkey(),
            url,
        })
        .collect();
    (config, token)
}

/// Submits publish entry `name`; the tree size it made, and how long the reply took.
async fn submit(base: String, token: String, name: String) -> (u64, Duration) {
    let body = serde_json::json!({"entries": [crate::server::publish(&format!("pkg:npm/{name}"), "1", "f", &crate::server::digest(&name))]});
    let began = Instant::now();
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/entries"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    let size = v["results"][0]["index"].as_u64().expect("index") + 1;
    (size, began.elapsed())
}

/// The log asks three witnesses (policy 2 of 3): `/checkpoint` serves the newest checkpoint two
/// of them cosigned; with one killed it goes on; with two down ingest goes on while the served
/// checkpoint waits; a witness back catches it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_serves_checkpoints_a_quorum_of_witnesses_cosigned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (log_key, log) = log_key(d);
    let mut ws = Vec::new();
    let mut keys_ = Vec::new();
    for i in 1..=3 {
        let (w, v) = start_named(d, &format!("witness.example/w{i}"), &log.vkey()).await;
        ws.push(Some(w));
        keys_.push(v);
    }
    let endpoints = ws
        .iter()
        .zip(&keys_)
        .map(|(w, v)| (v, w.as_ref().expect("running").url.clone()))
        .collect();
    let (config, token) = witnessed_log(d, log_key, endpoints);
    let server = crate::server::start(&config).await;
    let base = format!("http://{}", server.http_addr());
    let client = reqwest::Client::new();
    let submit = |name: String| submit(base.clone(), token.clone(), name);

    let (size, _) = submit("a".into()).await;
    let by = wait_served(&base, &log, &keys_, size, 2).await;
    assert!(by.len() >= 2, "{by:?}");
    // Interop: an independent signed-note implementation verifies the served checkpoint.
    let served_note = reqwest::get(format!("{base}/checkpoint"))
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    let names = interop_verify(&served_note, &log, &keys_);
    assert!(names.contains(&LOG.to_owned()), "{names:?}");
    assert!(
        names.len() > by.len(),
        "log and {by:?} witnesses: {names:?}"
    );

    // An installer with a 2-of-3 policy verifies online and offline; with a policy that needs
    // a witness that never cosigned, it refuses (exit 1).
    let art = d.join("a.tgz");
    std::fs::write(&art, "a").expect("artifact");
    let mut policy = format!("log {}\n", log.vkey());
    for (i, k) in keys_.iter().enumerate() {
        policy.push_str(&format!("witness W{i} {}\n", k.vkey()));
    }
    let absent = keys::generate_cosigner("witness.example/absent").expect("key");
    let strict = format!(
        "{policy}witness A {}\ngroup G all W0 W1 A\nquorum G\n",
        absent.verifier().vkey()
    );
    policy.push_str("group G 2 W0 W1 W2\nquorum G\n");
    std::fs::write(d.join("policy"), policy).expect("policy");
    std::fs::write(d.join("strict"), strict).expect("policy");
    let verify = |policy: &str, source: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_btlog"))
            .args(["verify", "--policy"])
            .arg(d.join(policy))
            .args([
                "--package",
                "pkg:npm/a",
                "--version",
                "1",
                "--file",
                "f",
                "--artifact",
            ])
            .arg(&art)
            .args(source)
            .output()
            .expect("verify")
    };
    let state = d.join("state");
    let state = state.to_str().expect("utf-8");
    let online = ["--max-age", "1h", "--log", &base, "--state", state];
    let out = verify("policy", &online);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify("strict", &online);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("witness quorum not met"));
    let lookup: serde_json::Value = client
        .get(format!(
            "{base}/v1/lookup?package=pkg:npm/a&version=1&file=f"
        ))
        .send()
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
    let proof = d.join("a.tlog-proof");
    std::fs::write(&proof, lookup["proof"].as_str().expect("proof")).expect("proof file");
    let offline = ["--proof", proof.to_str().expect("utf-8")];
    let out = verify("policy", &offline);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verify("strict", &offline).status.code(), Some(1));
    // 1 of 3: a policy needing 2 of {W0, two witnesses that never cosigned} fails.
    let others: Vec<String> = (1..=2)
        .map(|i| {
            let k = keys::generate_cosigner(&format!("witness.example/never{i}")).expect("key");
            k.verifier().vkey()
        })
        .collect();
    let one_of_three = format!(
        "log {}\nwitness W0 {}\nwitness N1 {}\nwitness N2 {}\ngroup G 2 W0 N1 N2\nquorum G\n",
        log.vkey(),
        keys_[by[0]].vkey(),
        others[0],
        others[1]
    );
    std::fs::write(d.join("one-of-three"), one_of_three).expect("policy");
    let out = verify("one-of-three", &offline);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("quorum not met"));
    // Stale: the proof's cosignatures are at least 2 s old; with --max-age 1s they are refused,
    // each age named.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut stale = offline.to_vec();
    stale.extend(["--max-age", "1s"]);
    let out = verify("policy", &stale);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("older than 1 s") && err.contains(" s"),
        "{err}"
    );

    // A monitor with the policy: all well; with one the served checkpoint cannot meet, a
    // `witness` alert and exit 1.
    let monitor = |policy: &str| {
        Command::new(env!("CARGO_BIN_EXE_btlog-monitor"))
            .args([
                "--once",
                "--no-progress",
                "--log",
                &base,
                "--vkey",
                &log.vkey(),
                "--state",
            ])
            .arg(d.join(format!("monitor-{policy}")))
            .arg("--policy")
            .arg(d.join(policy))
            .args(["--max-age", "1h"])
            .output()
            .expect("monitor")
    };
    let out = monitor("policy");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = monitor("strict");
    assert_eq!(out.status.code(), Some(1));
    let alerts = String::from_utf8_lossy(&out.stdout);
    assert!(
        alerts.contains("\"kind\":\"witness\"") && alerts.contains("quorum not met"),
        "{alerts}"
    );

    // One witness killed: two of three still cosign.
    drop(ws[2].take());
    let (size, _) = submit("b".into()).await;
    let by = wait_served(&base, &log, &keys_, size, 2).await;
    assert_eq!(by, vec![0, 1]);

    // Two down: ingest goes on at its usual pace; the served checkpoint stays where the quorum was.
    let w2_dir = d.join("witness.example_w2");
    drop(ws[1].take());
    let before = size;
    for i in 0..5 {
        let (_, took) = submit(format!("c{i}")).await;
        assert!(
            took < Duration::from_secs(2),
            "a submission waited on the witnesses: {took:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(&base, &log, &keys_).await.0, before);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("btlog_witness_failures_total{witness=\"witness.example/w3\"}"),
        "{metrics}"
    );

    // w2 back (same state, new port): the log does not know its URL changed, so restart it on
    // the same port.
    let port = config.witnesses[1]
        .url
        .split(':')
        .nth(2)
        .and_then(|p| p.split('/').next())
        .expect("port")
        .parse()
        .expect("port");
    let back = start(&w2_dir, port).await;
    let (size, _) = submit("d".into()).await;
    let by = wait_served(&base, &log, &keys_, size, 2).await;
    assert_eq!(by, vec![0, 1]);
    assert!(size > before);
    drop(back);
    server.shutdown().await.expect("shutdown");
}

/// A witness that accepts connections and never answers (hung, or killed mid-request) holds
/// up neither the other witnesses nor the served checkpoint: with 2 of 3, each new checkpoint
/// is served cosigned well within the 5 s request timeout the hung one costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_witness_does_not_hold_up_the_quorum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (log_key, log) = log_key(d);
    let (w1, k1) = start_named(d, "witness.example/w1", &log.vkey()).await;
    let (w3, k3) = start_named(d, "witness.example/w3", &log.vkey()).await;
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hung_addr = hung.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = hung.accept().await {
            open.push(s);
        }
    });
    let k2 = keys::generate_cosigner("witness.example/hung")
        .expect("key")
        .verifier();
    let hung_url = format!("http://{hung_addr}/w/add-checkpoint");
    let endpoints = vec![
        (&k1, w1.url.clone()),
        (&k2, hung_url),
        (&k3, w3.url.clone()),
    ];
    let (config, token) = witnessed_log(d, log_key, endpoints);
    let server = crate::server::start(&config).await;
    let base = format!("http://{}", server.http_addr());
    let keys_ = [k1, k2, k3];
    for i in 0..3u64 {
        submit(base.clone(), token.clone(), format!("h{i}")).await;
        let began = Instant::now();
        let by = wait_served(&base, &log, &keys_, i + 1, 2).await;
        assert_eq!(by, vec![0, 2]);
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "served after {:?}",
            began.elapsed()
        );
    }
    server.shutdown().await.expect("shutdown");
    held.abort();
}

/// Serves `body` to every HTTP request on a port of its own; its base URL.
async fn serve_text(body: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    (url, task)
}

/// Two mirrors of one log serve two roots for one size, and a witness cosigned both: the
/// monitor alerts the fork and, with a policy, the witness; `verify-evidence --witness` shows
/// from the evidence file alone which witness cosigned both (and not the one that did not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_cosigning_two_roots_for_one_size_is_caught() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let log = keys::generate(LOG).expect("log key");
    let bad = keys::generate_cosigner("witness.example/bad").expect("key");
    let honest = keys::generate_cosigner("witness.example/honest").expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let note = |fork: bool, by: &[&Signer]| {
        let mut n =
            btlog_core::note::Note::parse(checkpoint(&log, 5, fork).as_bytes()).expect("note");
        for w in by {
            n.cosign(w, now).expect("cosign");
        }
        n.format()
    };
    let (a, _ta) = serve_text(note(false, &[&bad, &honest])).await;
    let (b, _tb) = serve_text(note(true, &[&bad])).await;
    let policy = format!(
        "log {}\nwitness B {}\nwitness H {}\ngroup G any B H\nquorum G\n",
        log.verifier().vkey(),
        bad.verifier().vkey(),
        honest.verifier().vkey()
    );
    std::fs::write(d.join("policy"), policy).expect("policy");
    let out = Command::new(env!("CARGO_BIN_EXE_btlog-monitor"))
        .args([
            "--once",
            "--no-progress",
            "--log",
            &a,
            "--log",
            &b,
            "--vkey",
            &log.verifier().vkey(),
        ])
        .arg("--state")
        .arg(d.join("state"))
        .arg("--policy")
        .arg(d.join("policy"))
        .output()
        .expect("monitor");
    let alerts = String::from_utf8_lossy(&out.stdout);
    assert!(alerts.contains("\"kind\":\"fork\""), "{alerts}");
    let witness_alert = alerts
        .lines()
        .find(|l| l.contains("\"kind\":\"witness\""))
        .unwrap_or_else(|| panic!("no witness alert: {alerts}"));
    assert!(
        witness_alert.contains("witness.example/bad cosigned both"),
        "{witness_alert}"
    );
    assert!(!witness_alert.contains("honest"), "{witness_alert}");

    let evidence = std::fs::read_dir(d.join("state"))
        .expect("state")
        .flat_map(|e| {
            std::fs::read_dir(e.expect("entry").path())
                .into_iter()
                .flatten()
        })
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("evidence-"))
        })
        .expect("evidence file");
    let out = Command::new(env!("CARGO_BIN_EXE_btlog-monitor"))
        .arg("verify-evidence")
        .arg(&evidence)
        .args([
            "--witness",
            &bad.verifier().vkey(),
            "--witness",
            &honest.verifier().vkey(),
        ])
        .output()
        .expect("verify-evidence");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "PROVEN: witness {} cosigned both",
            bad.verifier().vkey()
        )),
        "{said}"
    );
    assert!(!said.contains(&honest.verifier().vkey()), "{said}");
}
