//! Publishing to object storage, on a real 3-node Garage cluster (replication factor 3) started
//! by `tools/garage-cluster.sh`: publish while ingesting, read the bucket through Garage's
//! website endpoints with the monitor and `btlog verify`, lose a node, lose the whole store for a
//! while, lose the server's disk and restore, and meet another log in the bucket.

use crate::server::{add_token, config, digest, publish, start};
use btlog_bucket::BucketConfig;
use btlog_server::api::Server;
use btlog_server::config::{Acknowledge, Publish};
use object_store::ObjectStore as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BTLOG: &str = env!("CARGO_BIN_EXE_btlog");
const MONITOR: &str = env!("CARGO_BIN_EXE_btlog-monitor");

/// A Garage cluster of three nodes on loopback, stopped on drop.
struct Garage {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// `tools/garage-cluster.sh`, which starts, stops and restarts the cluster and its nodes.
fn cluster_script() -> std::path::PathBuf {
    crate::common::package_dir().join("tools/garage-cluster.sh")
}

impl Garage {
    fn start() -> Garage {
        let script = cluster_script();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let base = port_base();
            let out = Command::new(&script)
                .arg("start")
                .arg(dir.path())
                .env("GARAGE_PORT_BASE", base.to_string())
                .output()
                .expect("run tools/garage-cluster.sh (installs: .ci/run)");
            if out.status.success() {
                let text = std::fs::read_to_string(dir.path().join("env")).expect("env");
                let env = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                return Garage { dir, env };
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                !err.contains("no garage binary"),
                "Garage is needed for these tests: {err}"
            );
            let _ = Command::new(&script).arg("stop").arg(dir.path()).status();
        }
        panic!("could not start a Garage cluster");
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .expect("cluster variable")
    }

    fn node(&self, action: &str, n: u8) {
        let script = cluster_script();
        let ok = Command::new(&script)
            .args([action])
            .arg(self.dir.path())
            .arg(n.to_string())
            .status()
            .expect("script")
            .success();
        assert!(ok, "{action} {n}");
    }

    fn bucket(&self, prefix: &str) -> BucketConfig {
        BucketConfig {
            url: format!("{}/{prefix}", self.var("BTLOG_BUCKET")),
            endpoint: Some(self.var("AWS_ENDPOINT_URL").into()),
            region: Some("garage".into()),
            access_key_id: Some(self.var("AWS_ACCESS_KEY_ID").into()),
            secret_access_key: Some(self.var("AWS_SECRET_ACCESS_KEY").into()),
            allow_http: false,
        }
    }

    /// The S3 client of `object_store` itself, to look at or tamper with objects.
    fn s3(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("btlog")
            .with_endpoint(self.var("AWS_ENDPOINT_URL"))
            .with_allow_http(true)
            .with_region("garage")
            .with_access_key_id(self.var("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(self.var("AWS_SECRET_ACCESS_KEY"))
            .build()
            .expect("s3 client")
    }

    /// Node `n`'s website endpoint for the prefix, as a tlog-tiles base URL.
    fn web(&self, n: u8, prefix: &str) -> String {
        format!("{}/{prefix}", self.var(&format!("BTLOG_WEB_{n}")))
    }
}

/// A base for the cluster's twelve ports (base + 10 … base + 33), all free now, below the
/// kernel's ephemeral range (32768 and up) so a restarted node can bind them again.
fn port_base() -> u16 {
    loop {
        let base = 10_000 + 100 * (rand::random::<u16>() % 200);
        let free = (1..=3u16)
            .flat_map(|n| (0..4u16).map(move |k| base + 10 * n + k))
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let script = cluster_script();
        let _ = Command::new(&script)
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A server publishing to `prefix` of the cluster's bucket.
async fn publishing_server(
    data: &Path,
    garage: &Garage,
    prefix: &str,
    tune: impl FnOnce(&mut btlog_server::config::Config),
) -> Server {
    let mut c = config(data);
    c.publish = Some(Publish {
        bucket: garage.bucket(prefix),
        gzip_bundles: true,
        acknowledge: Acknowledge::Logged,
        partial_grace_secs: 1,
        ..Publish::to("")
    });
    tune(&mut c);
    start(&c).await
}

fn content(i: u64) -> String {
    format!("artifact {i}")
}

/// Submits entries `from..to` (one package version each), `batch` per request; returns the
/// HTTP statuses.
async fn submit(server: &Server, token: &str, from: u64, to: u64, batch: u64) -> Vec<u16> {
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    let mut i = from;
    while i < to {
        let end = (i + batch).min(to);
        let entries: Vec<Value> = (i..end)
            .map(|j| {
                publish(
                    &format!("pkg:npm/p{}", j % 7),
                    &format!("1.0.{j}"),
                    &format!("p-{j}.tgz"),
                    &digest(&content(j)),
                )
            })
            .collect();
        let resp = http
            .post(format!("http://{}/v1/entries", server.http_addr()))
            .bearer_auth(token)
            .json(&json!({ "entries": entries }))
            .send()
            .await
            .expect("submit");
        statuses.push(resp.status().as_u16());
        i = end;
    }
    statuses
}

/// Waits until the bucket holds the checkpoint the server serves.
async fn caught_up(server: &Server, within: Duration) {
    let deadline = Instant::now() + within;
    let log = server.log();
    loop {
        let p = log.publishing().expect("publishing");
        if p.published() >= log.store().size() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "publishing did not catch up: {}",
            p.health(log.store().size())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn monitor_once(base: &str, vkey: &Path, state: &Path) -> (i32, String) {
    let out = tokio::process::Command::new(MONITOR)
        .args(["--log", base, "--once", "--vkey"])
        .arg(vkey)
        .arg("--state")
        .arg(state)
        .output()
        .await
        .expect("run btlog-monitor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("GET")
}

fn metric(server: &Server, name: &str) -> f64 {
    server
        .log()
        .render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .expect("metric")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_published_to_garage_survives_node_store_and_disk_loss() {
    let garage = Garage::start();
    let work = tempfile::tempdir().expect("tempdir");
    let data = work.path().join("data");
    let token = add_token(&data);
    let a = publishing_server(&data, &garage, "log", |_| {}).await;
    let vkey = data.join("log.vkey");
    let key = work.path().join("log.key");
    std::fs::copy(data.join("log.key"), &key).expect("keep the key");

    // Publishing while ingesting: four writers at once.
    let writes = (0..4u64).map(|w| submit(&a, &token, w * 150, w * 150 + 150, 10));
    for statuses in futures_util::future::join_all(writes).await {
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    caught_up(&a, Duration::from_secs(30)).await;
    assert_eq!(a.log().checkpoint().size, 600);

    // The bucket serves the tlog-tiles API with the headers clients and caches expect, from
    // any node; the monitor reading only the bucket recomputes the published tree.
    let checkpoint = get(&format!("{}/checkpoint", garage.web(2, "log"))).await;
    assert_eq!(checkpoint.headers()["cache-control"], "public, max-age=2");
    assert_eq!(
        checkpoint.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let full = get(&format!("{}/tile/0/001", garage.web(3, "log"))).await;
    assert_eq!(full.status(), 200);
    assert_eq!(
        full.headers()["cache-control"],
        "public, max-age=604800, immutable"
    );
    assert_eq!(full.headers()["content-type"], "application/octet-stream");
    let bundle = reqwest::Client::builder()
        .no_gzip()
        .build()
        .expect("client")
        .get(format!("{}/tile/entries/000", garage.web(1, "log")))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("GET");
    assert_eq!(bundle.headers()["content-encoding"], "gzip");
    let monitor_state = work.path().join("monitor");
    let (code, out) = monitor_once(&garage.web(2, "log"), &vkey, &monitor_state).await;
    assert_eq!(code, 0, "{out}");

    // One node stopped: publishing and reading go on with the other two.
    garage.node("stop-node", 3);
    assert!(submit(&a, &token, 600, 900, 50)
        .await
        .iter()
        .all(|s| *s == 200));
    caught_up(&a, Duration::from_secs(30)).await;
    let (code, out) = monitor_once(&garage.web(1, "log"), &vkey, &monitor_state).await;
    assert_eq!(code, 0, "{out}");

    // The store unreachable: ingest goes on, the lag shows, nothing is lost once it is back.
    garage.node("stop-node", 1);
    garage.node("stop-node", 2);
    assert!(submit(&a, &token, 900, 1300, 50)
        .await
        .iter()
        .all(|s| *s == 200));
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&a, "btlog_publish_failures_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no failed round with the store down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metric(&a, "btlog_publish_lag_entries") >= 400.0);
    assert!(metric(&a, "btlog_publish_lag_seconds") >= 1.0);
    let health = get(&format!("http://{}/healthz", a.http_addr())).await;
    assert_eq!(
        health.status(),
        200,
        "ingest is healthy while publishing lags"
    );
    assert!(health
        .text()
        .await
        .expect("body")
        .contains("lag 400 entries"));
    for n in 1..=3 {
        garage.node("start-node", n);
    }
    caught_up(&a, Duration::from_secs(60)).await;
    assert_eq!(metric(&a, "btlog_publish_lag_entries"), 0.0);
    let (code, out) = monitor_once(&garage.web(2, "log"), &vkey, &monitor_state).await;
    assert_eq!(code, 0, "{out}");
    // Replaced partial tiles go once their grace is over (1 s here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(submit(&a, &token, 1300, 1301, 1).await == [200]);
    caught_up(&a, Duration::from_secs(30)).await;
    let gone = get(&format!("{}/tile/entries/004.p/12", garage.web(1, "log"))).await;
    assert_eq!(
        gone.status(),
        404,
        "the partial bundle of size 1036 was replaced"
    );

    // An installer's proof from before the loss, and the server's disk lost.
    let artifact = work.path().join("artifact");
    std::fs::write(&artifact, content(42)).expect("artifact");
    let lookup: Value = get(&format!(
        "http://{}/v1/lookup?package=pkg:npm/p0&version=1.0.42&file=p-42.tgz",
        a.http_addr()
    ))
    .await
    .json()
    .await
    .expect("lookup");
    let index = lookup["index"].as_u64().expect("index").to_string();
    // The installer's copy of the vkey, kept apart from the disk about to be lost.
    let vkey = {
        let copy = work.path().join("log.vkey");
        std::fs::copy(&vkey, &copy).expect("vkey");
        copy
    };
    let verified = |base: &str, state: &Path| {
        let mut c = Command::new(BTLOG);
        c.args(["verify", "--log", base, "--index", &index, "--vkey"])
            .arg(&vkey)
            .args([
                "--package",
                "pkg:npm/p0",
                "--version",
                "1.0.42",
                "--file",
                "p-42.tgz",
            ])
            .arg("--artifact")
            .arg(&artifact)
            .arg("--state")
            .arg(state);
        let out = c.output().expect("verify");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let installer = work.path().join("installer");
    verified(&garage.web(3, "log"), &installer);
    let size_before = a.log().checkpoint().size;
    a.shutdown().await.expect("shutdown");
    // Lose the disk. The in-process server's store closes when its last handle drops, which
    // a background task may hold a moment past shutdown while RocksDB still writes files, so
    // the removal is retried, and the log is restored into a directory of its own.
    let lost = (0..50).any(|_| {
        std::fs::remove_dir_all(&data).is_ok() || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            false
        }
    });
    assert!(lost, "the data directory could not be removed");
    let data = work.path().join("restored");

    // Restore from the bucket alone, into a directory a server starts on with the same key.
    let restore = |dir: &Path, vkey: &Path| {
        Command::new(BTLOG)
            .args(["restore", "--from", "s3://btlog/log", "--data"])
            .arg(dir)
            .arg("--vkey")
            .arg(vkey)
            .envs(garage.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("restore")
    };
    let out = restore(&data, &vkey);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("restored {size_before} entries")),
        "{text}"
    );
    let token = add_token(&data);
    let b = publishing_server(&data, &garage, "log", |c| c.key = Some(key.clone())).await;
    assert_eq!(b.log().checkpoint().size, size_before);
    assert!(submit(&b, &token, 2000, 2100, 50)
        .await
        .iter()
        .all(|s| *s == 200));
    caught_up(&b, Duration::from_secs(30)).await;
    // The same identities are still claimed: resubmitting is a duplicate, not a new entry.
    assert!(submit(&b, &token, 0, 10, 10).await == [200]);
    assert_eq!(b.log().checkpoint().size, size_before + 100);
    // The monitor's state from before the loss sees the new checkpoints as consistent, and the
    // installer's stored checkpoint advances with a proof from the bucket's tiles.
    let (code, out) = monitor_once(&garage.web(1, "log"), &vkey, &monitor_state).await;
    assert_eq!(code, 0, "{out}");
    verified(&garage.web(2, "log"), &installer);
    verified(&format!("http://{}", b.http_addr()), &installer);

    // Another log pointed at the same bucket refuses to publish, loudly; the bucket keeps b's.
    let other_data = work.path().join("other");
    let other_token = add_token(&other_data);
    let c = publishing_server(&other_data, &garage, "log", |_| {}).await;
    assert!(submit(&c, &other_token, 0, 5, 5).await == [200]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let health = get(&format!("http://{}/healthz", c.http_addr())).await;
    assert_eq!(health.status(), 503);
    assert!(health
        .text()
        .await
        .expect("body")
        .contains("another log publishes there"));
    assert_eq!(metric(&c, "btlog_publish_refused"), 1.0);
    let served = get(&format!("{}/checkpoint", garage.web(1, "log"))).await;
    assert_eq!(
        served.text().await.expect("note"),
        b.log().checkpoint().note
    );

    // A bucket that does not verify restores nothing: the wrong key, then a forged entry.
    let refused = restore(&work.path().join("r1"), &other_data.join("log.vkey"));
    assert_eq!(refused.status.code(), Some(1));
    let s3 = garage.s3();
    let path = object_store::path::Path::from("log/tile/entries/000");
    let mut raw = s3
        .get(&path)
        .await
        .expect("bundle")
        .bytes()
        .await
        .expect("bytes")
        .to_vec();
    raw = gunzip(&raw);
    let at = raw.len() - 2;
    raw[at] ^= 1;
    s3.put(&path, raw.into()).await.expect("forge");
    let forged = restore(&work.path().join("r2"), &vkey);
    assert_eq!(
        forged.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&forged.stderr)
    );
    // The flipped byte may break the entry's syntax or only its hash, depending on the
    // entry's bytes; both are refusals of the whole restore.
    let stderr = String::from_utf8_lossy(&forged.stderr);
    assert!(
        stderr.contains("entry ") && stderr.contains("nothing restored is usable"),
        "{stderr}"
    );
    assert!(!work.path().join("r2").exists() && !work.path().join("r2.restoring").exists());
    c.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read as _;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_only_once_published_when_asked() {
    let garage = Garage::start();
    let work = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = work.path().join("data");
    let token = add_token(&data);
    let server = publishing_server(&data, &garage, "ack", |c| {
        if let Some(p) = &mut c.publish {
            p.acknowledge = Acknowledge::Published;
        }
        c.limits.request_timeout_secs = 5;
    })
    .await;
    caught_up(&server, Duration::from_secs(30)).await;
    let statuses = submit(&server, &token, 0, 20, 20).await;
    assert_eq!(statuses, [200]);
    let note = get(&format!("{}/checkpoint", garage.web(1, "ack")))
        .await
        .text()
        .await
        .expect("note");
    assert!(
        note.contains("\n20\n"),
        "acknowledged before its checkpoint was in the bucket"
    );

    // With the store unreachable, a submission is logged but not acknowledged.
    for n in 1..=3 {
        garage.node("stop-node", n);
    }
    assert!(submit(&server, &token, 20, 30, 10).await == [503]);
    // Nor does the server show a checkpoint the bucket does not have: a restore from the
    // bucket could contradict it.
    let shown = get(&format!("http://{}/checkpoint", server.http_addr())).await;
    assert!(shown.text().await.expect("note").contains("\n20\n"));
    assert_eq!(server.log().store().size(), 30);
    for n in 1..=3 {
        garage.node("start-node", n);
    }
    // Resubmitting is idempotent, and acknowledged once published (the publisher may still be
    // backing off from the outage when the first retry comes).
    let deadline = Instant::now() + Duration::from_secs(60);
    while submit(&server, &token, 20, 30, 10).await != [200] {
        assert!(
            Instant::now() < deadline,
            "never acknowledged after the outage"
        );
    }
    assert_eq!(server.log().checkpoint().size, 30);

    // Why publishers check the bucket's checkpoint instead of writing "create only": Garage
    // answers a PUT with If-None-Match: * over an existing object with success, and overwrites.
    let s3 = garage.s3();
    let path = object_store::path::Path::from("ack/probe");
    let create = object_store::PutOptions {
        mode: object_store::PutMode::Create,
        ..Default::default()
    };
    s3.put_opts(&path, "one".into(), create.clone())
        .await
        .expect("first");
    let second = s3.put_opts(&path, "two".into(), create).await;
    assert!(
        second.is_ok(),
        "Garage honours If-None-Match now: {second:?}"
    );
    let now = s3
        .get(&path)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(&now[..], b"two");
    server.shutdown().await.expect("shutdown");
}
