//! Abuse: floods against the per-token rate limit and the bounded queue (honest traffic from
//! another token still gets through), slow-loris clients cut off by the header read timeout,
//! idle and stalled HTTP/2 connections (and ones that send nothing) closed on both front ends
//! while gRPC checkpoint watchers stay,
//! tokens kept out of the server's log output, and a readable private key refused.

use crate::server::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

fn body(tag: &str, i: usize) -> serde_json::Value {
    let id = format!("{tag}-{i}");
    json!({"entries": [publish(&format!("pkg:npm/{id}"), "1", "f", &digest(&id))]})
}

/// `n` submissions from `n` separate connections at once; the count of each status.
async fn flood(base: &str, token: &str, tag: &str, n: usize) -> BTreeMap<u16, usize> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            // A client per request: a connection per request.
            let req = reqwest::Client::new()
                .post(format!("{base}/v1/entries"))
                .bearer_auth(token)
                .json(&body(tag, i));
            tokio::spawn(async move { req.send().await.expect("answered").status().as_u16() })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for t in tasks {
        *counts.entry(t.await.expect("task")).or_default() += 1;
    }
    counts
}

/// Submissions from another token, paced, while the flood runs: all must be accepted.
async fn honest(base: String, token: String) -> Vec<u16> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for i in 0..4 {
        let resp = client
            .post(format!("{base}/v1/entries"))
            .bearer_auth(&token)
            .json(&body("honest", i))
            .send()
            .await
            .expect("answered");
        out.push(resp.status().as_u16());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_under_a_flood_and_honest_tokens_get_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flooder = add_token(dir.path());
    let registry = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.rate_per_second = 5.0;
    cfg.limits.rate_burst = 10;
    let srv = start(&cfg).await;
    let base = format!("http://{}", srv.http_addr());
    let good = tokio::spawn(honest(base.clone(), registry));
    let counts = flood(&base, &flooder, "flood", 200).await;
    assert!(counts.get(&429).copied().unwrap_or(0) >= 150, "{counts:?}");
    assert!(
        counts.keys().all(|s| [200, 429, 503].contains(s)),
        "{counts:?}"
    );
    assert_eq!(good.await.expect("honest"), [200; 4]);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_queue_refuses_with_503_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flooder = add_token(dir.path());
    let registry = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.queue_depth = 2;
    cfg.limits.batch_delay_ms = 1;
    cfg.limits.rate_burst = 1000;
    let srv = start(&cfg).await;
    let base = format!("http://{}", srv.http_addr());
    // The writer's next synced write stalls (a slow disk), so the flood meets a full queue
    // however fast the writer otherwise drains it.
    srv.log().store().inject_write_failures(
        btlog_store::InjectedFailure::Stall(Duration::from_secs(3)),
        1,
    );
    let stalled = {
        let (base, flooder) = (base.clone(), flooder.clone());
        tokio::spawn(async move { flood(&base, &flooder, "stalled", 1).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts = flood(&base, &flooder, "flood", 100).await;
    assert_eq!(stalled.await.expect("task"), BTreeMap::from([(200, 1)]));
    assert!(counts.get(&503).copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.get(&200).copied().unwrap_or(0) > 0, "{counts:?}");
    assert!(counts.keys().all(|s| [200, 503].contains(s)), "{counts:?}");
    // Once the flood is over, another registry is served at once.
    assert_eq!(honest(base, registry).await, [200; 4]);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_is_disconnected_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.header_read_timeout_secs = 2;
    let srv = start(&cfg).await;
    let mut s = tokio::net::TcpStream::connect(srv.http_addr())
        .await
        .expect("connect");
    let began = Instant::now();
    let request = b"GET /checkpoint HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaa\r\n\r\n";
    let mut answer = Vec::new();
    for byte in request {
        if s.write_all(&[*byte]).await.is_err() {
            break;
        }
        // One byte a second, watching for the server closing the connection meanwhile.
        let mut buf = [0u8; 1024];
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        assert!(began.elapsed() < Duration::from_secs(6), "still connected");
    }
    let held = began.elapsed();
    assert!(held < Duration::from_secs(4), "held for {held:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(!text.contains(" 200 "), "slow request was served: {text}");
    // Everyone else is still served.
    let cp = reqwest::get(format!("http://{}/checkpoint", srv.http_addr()))
        .await
        .expect("checkpoint");
    assert_eq!(cp.status(), 200);
    srv.shutdown().await.expect("shutdown");
}

/// Seconds until the server closes `stream`, which sends nothing more; panics past `limit`.
async fn closed_within(mut stream: tokio::net::TcpStream, limit: Duration) -> Duration {
    let began = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((began + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return began.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("connection still open after {limit:?}"),
        }
    }
}

/// An HTTP/2 client session on `stream` with flow-control `window`, and a task that drives the
/// connection and returns how long until the server closed it; panics past `limit`.
async fn h2_session<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: T,
    window: u32,
    limit: Duration,
) -> (
    h2::client::SendRequest<axum::body::Bytes>,
    tokio::task::JoinHandle<Duration>,
) {
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(stream)
        .await
        .expect("h2 handshake");
    let task = tokio::spawn(async move {
        let began = Instant::now();
        let closed = tokio::time::timeout(limit, conn).await;
        assert!(closed.is_ok(), "h2 connection still open after {limit:?}");
        began.elapsed()
    });
    (client, task)
}

/// Slow clients speaking HTTP/2, or nothing at all, are bounded like HTTP/1 ones: a connection
/// that sends no bytes, an HTTP/2 session that opens no stream, one whose request body never
/// ends (answered by the request timeout) and one that never reads its response are all closed
/// once no request has been in flight for the header read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_http2_connections_are_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.header_read_timeout_secs = 2;
    cfg.limits.request_timeout_secs = 2;
    let srv = start(&cfg).await;
    let addr = srv.http_addr();
    let connect = || async move { tokio::net::TcpStream::connect(addr).await.expect("connect") };
    let limit = Duration::from_secs(8);

    // No bytes at all: not even enough to tell HTTP/1 from HTTP/2.
    let silent = tokio::spawn(closed_within(connect().await, limit));

    // An HTTP/2 session (preface and settings) that never opens a stream.
    let (_idle_client, idle) = h2_session(connect().await, 65_535, limit).await;

    // An HTTP/2 stream whose body never ends.
    let (mut client, stalled) = h2_session(connect().await, 65_535, limit).await;
    let request = axum::http::Request::post(format!("http://{addr}/v1/entries"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("content-length", "1000")
        .body(())
        .expect("request");
    let (response, mut body) = client.send_request(request, false).expect("stream");
    body.send_data(axum::body::Bytes::from_static(b"{\"entries\":["), false)
        .expect("send");
    let response = tokio::time::timeout(limit, response)
        .await
        .expect("answered in time")
        .expect("response");
    assert_eq!(
        response.status(),
        503,
        "the request timeout answers the stream"
    );

    // An HTTP/2 client that never reads a response body (its flow-control window stays 0).
    let (mut client, unread) = h2_session(connect().await, 0, limit).await;
    let request = axum::http::Request::get(format!("http://{addr}/checkpoint"))
        .body(())
        .expect("request");
    let (response, _) = client.send_request(request, true).expect("stream");
    let response = tokio::time::timeout(limit, response)
        .await
        .expect("answered in time")
        .expect("response");
    assert_eq!(response.status(), 200);

    for (what, task) in [
        ("silent", silent),
        ("idle h2", idle),
        ("stalled h2", stalled),
        ("unread h2", unread),
    ] {
        let held = task.await.expect(what);
        assert!(
            held < Duration::from_secs(6),
            "{what} connection held for {held:?}"
        );
    }
    // Everyone else is still served.
    let cp = reqwest::get(format!("http://{addr}/checkpoint"))
        .await
        .expect("checkpoint");
    assert_eq!(cp.status(), 200);
    srv.shutdown().await.expect("shutdown");
}

/// A gRPC call to `method` of `btlog.v1.Log` for a raw HTTP/2 client.
fn grpc_call(addr: std::net::SocketAddr, method: &str) -> axum::http::Request<()> {
    axum::http::Request::post(format!("http://{addr}/btlog.v1.Log/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request")
}

/// A client socket that, once its switch is on, reads and discards everything: the HTTP/2
/// client on it stops answering pings while its connection and streams stay open.
struct Deaf {
    stream: tokio::net::TcpStream,
    deaf: Arc<AtomicBool>,
}

impl AsyncRead for Deaf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.deaf.load(Ordering::Relaxed) {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let mut scratch = [0u8; 4096];
        loop {
            let mut discard = ReadBuf::new(&mut scratch);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut discard))?;
            if discard.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for Deaf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// gRPC clients are bounded like HTTP ones: a connection that sends nothing, an HTTP/2 session
/// that opens no stream and one whose unary request body never ends (answered UNAVAILABLE by the
/// request timeout) are closed once nothing has been in flight for the header read timeout, and
/// a watcher that stops answering pings is closed by the keepalive. A real `WatchCheckpoints`
/// client stays connected across several idle timeouts and still gets the next checkpoint, and
/// a client whose idle connection was closed is served again on its next call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_stalled_grpc_connections_are_closed_but_watchers_stay() {
    use btlog_server::api::pb::{self, log_client::LogClient};
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.header_read_timeout_secs = 2;
    cfg.limits.request_timeout_secs = 2;
    let idle_timeout = Duration::from_secs(2);
    let srv = start(&cfg).await;
    let vkey = srv.log().verifier().clone();
    let addr = srv.grpc_addr();
    let url = format!("http://{addr}");
    let connect = || async move { tokio::net::TcpStream::connect(addr).await.expect("connect") };
    let limit = Duration::from_secs(8);

    // A real watcher, and a client that is served once now and once after the idle timeout.
    let watching = Instant::now();
    let mut watcher = LogClient::connect(url.clone()).await.expect("connect");
    let mut checkpoints = watcher
        .watch_checkpoints(pb::WatchCheckpointsRequest {})
        .await
        .expect("watch")
        .into_inner();
    let first = checkpoints.message().await.expect("stream").expect("open");
    assert_eq!(verify_checkpoint(&first.checkpoint, &vkey).0, 0);
    let mut other = LogClient::connect(url.clone()).await.expect("connect");
    other
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("served");

    // No bytes at all: not even the HTTP/2 preface.
    let silent = tokio::spawn(closed_within(connect().await, limit));

    // An HTTP/2 session (preface and settings) that never opens a stream.
    let (_idle_client, idle) = h2_session(connect().await, 65_535, limit).await;

    // A unary call whose request message never arrives: a 100-byte message announced, 1 sent.
    let (mut client, stalled) = h2_session(connect().await, 65_535, limit).await;
    let mut call = grpc_call(addr, "AddEntries");
    let bearer = format!("Bearer {token}").parse().expect("header");
    call.headers_mut().insert("authorization", bearer);
    let (response, mut body) = client.send_request(call, false).expect("stream");
    body.send_data(
        axum::body::Bytes::from_static(&[0, 0, 0, 0, 100, 10]),
        false,
    )
    .expect("send");
    let began = Instant::now();
    let response = tokio::time::timeout(limit, response)
        .await
        .expect("answered in time")
        .expect("response");
    let answered = began.elapsed();
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("grpc-status"), "14", "UNAVAILABLE: {response:?}");
    assert!(header("grpc-message").contains("timed"), "{response:?}");
    assert!(
        answered < Duration::from_secs(4),
        "answered after {answered:?}"
    );
    let counted = "btlog_requests_total{api=\"grpc\",status=\"Unavailable\"} 1";
    assert!(
        srv.log().render_metrics().contains(counted),
        "timeout not counted"
    );

    // A watcher whose client stops answering anything, pings included, once its stream is open.
    let deaf = Arc::new(AtomicBool::new(false));
    let stream = Deaf {
        stream: connect().await,
        deaf: deaf.clone(),
    };
    let (mut client, unanswered) = h2_session(stream, 65_535, limit).await;
    let (response, mut body) = client
        .send_request(grpc_call(addr, "WatchCheckpoints"), false)
        .expect("stream");
    body.send_data(axum::body::Bytes::from_static(&[0; 5]), true)
        .expect("send");
    let response = tokio::time::timeout(limit, response)
        .await
        .expect("answered in time")
        .expect("response");
    assert_eq!(response.status(), 200);
    deaf.store(true, Ordering::Relaxed);

    for (what, task) in [
        ("silent", silent),
        ("idle h2", idle),
        ("stalled unary", stalled),
        ("unanswered pings", unanswered),
    ] {
        let held = task.await.expect(what);
        eprintln!("{what} connection closed after {held:?}");
        assert!(
            held < Duration::from_secs(6),
            "{what} connection held for {held:?}"
        );
    }

    // The watcher has been open for more than twice the idle timeout; an append reaches it.
    let open = watching.elapsed();
    if open < 3 * idle_timeout {
        tokio::time::sleep(3 * idle_timeout - open).await;
    }
    let mut submitter = LogClient::connect(url).await.expect("connect");
    let mut add = tonic::Request::new(pb::AddEntriesRequest {
        entries: vec![pb::EntryFields {
            kind: "publish".into(),
            package: "pkg:npm/watched".into(),
            version: "1".into(),
            file: "f".into(),
            sha256: digest("watched"),
            ..Default::default()
        }],
    });
    add.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    submitter.add_entries(add).await.expect("appended");
    let next = tokio::time::timeout(Duration::from_secs(5), checkpoints.message())
        .await
        .expect("next checkpoint in time")
        .expect("stream")
        .expect("still open");
    assert_eq!(verify_checkpoint(&next.checkpoint, &vkey).0, 1);
    eprintln!("watcher open for {:?}", watching.elapsed());

    // The other client's connection was idle longer than the timeout: its next call is served.
    let cp = other
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("served after its idle connection was closed");
    assert_eq!(verify_checkpoint(&cp.into_inner().checkpoint, &vkey).0, 1);
    srv.shutdown().await.expect("shutdown");
}

fn btlog() -> Command {
    Command::new(env!("CARGO_BIN_EXE_btlog"))
}

/// Waits for `child` to exit, killing it after `limit`.
fn wait_exit(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// `btlog serve` on `http` and `grpc`, its stderr going to `stderr`.
fn serve(data: &Path, http: &str, grpc: &str, stderr: &Path, extra: &[&str]) -> Child {
    btlog()
        .args(["serve", "--data"])
        .arg(data)
        .args(["--http", http, "--grpc", grpc])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("stderr file"))
        .env("RUST_LOG", "debug")
        .spawn()
        .expect("spawn btlog serve")
}

#[test]
fn private_key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("log.key");
    let out = btlog()
        .args(["keygen", "--origin", "example.com/log", "--out"])
        .arg(&key)
        .output()
        .expect("keygen");
    assert!(out.status.success());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let key_arg = key.to_str().expect("utf-8 path");
    let stderr = dir.path().join("stderr");
    let child = serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &stderr,
        &["--key", key_arg],
    );
    let out = wait_exit(child, Duration::from_secs(20));
    assert!(!out.status.success(), "served with a 0644 key");
    let err = std::fs::read_to_string(&stderr).expect("stderr");
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_server_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = add_token(&data);
    let wrong = format!("{}x", &token[..token.len() - 1]);
    let stderr = dir.path().join("stderr");
    let (child, base, _) = serve_child(&data, &stderr).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for (t, b) in [
        (&token, body("a", 0)),
        (&wrong, body("b", 0)),
        (&token, json!({"x": 1})),
    ] {
        let resp = client
            .post(format!("{base}/v1/entries"))
            .bearer_auth(t)
            .json(&b)
            .send()
            .await
            .expect("answered");
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 401, 400]);
    // SIGTERM: a graceful stop, so every log line is flushed.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    assert!(wait_exit(child, Duration::from_secs(20)).status.success());
    let log = std::fs::read_to_string(&stderr).expect("stderr");
    assert!(log.contains("btlog serving"), "{log}");
    for secret in [token.as_str(), wrong.as_str(), &token["btlog_".len()..]] {
        assert!(!log.contains(secret), "token in the log:\n{log}");
    }
}

/// `btlog serve` on free ports, once it answers: the child, the HTTP base URL, the gRPC address.
async fn serve_child(data: &Path, stderr: &Path) -> (Child, String, std::net::SocketAddr) {
    let (http, grpc) = (free_port(), free_port());
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc}").parse().expect("addr");
    let child = serve(
        data,
        &format!("127.0.0.1:{http}"),
        &grpc.to_string(),
        stderr,
        &[],
    );
    let base = format!("http://127.0.0.1:{http}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (child, base, grpc)
}

/// The peak resident memory of process `pid`, in MiB (`VmHWM` of /proc/PID/status).
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024
}

/// A unary gRPC call with a raw message body over its own HTTP/2 connection, sending the body
/// as flow control allows; the grpc-status and message of the reply (None when the call
/// failed).
async fn grpc_raw(
    addr: std::net::SocketAddr,
    method: &str,
    token: Option<String>,
    message: axum::body::Bytes,
) -> Option<(u32, String)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut client, conn) = h2::client::handshake(tcp).await.ok()?;
    tokio::spawn(conn);
    let mut req = grpc_call(addr, method);
    if let Some(t) = token {
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("header"),
        );
    }
    let (reply, mut stream) = client.send_request(req, false).ok()?;
    let len = u32::try_from(message.len()).expect("message fits a frame");
    let mut rest = axum::body::Bytes::from([&[0u8][..], &len.to_be_bytes(), &message].concat());
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => {
                let chunk = rest.split_to(n.min(rest.len()));
                if stream.send_data(chunk, rest.is_empty()).is_err() {
                    break;
                }
            }
            // The server answered (and reset the stream) before taking the whole body.
            _ => break,
        }
    }
    let reply = tokio::time::timeout(Duration::from_secs(60), reply)
        .await
        .ok()?
        .ok()?;
    let mut headers = reply.headers().clone();
    if !headers.contains_key("grpc-status") {
        headers = reply.into_body().trailers().await.ok()??;
    }
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or_default();
    Some((code, message.replace("%20", " ")))
}

/// Requests without a credential cost the server nothing: it checks the token before it reads
/// the body; an authenticated message is not decoded beyond `max_entries_per_request`. Eight concurrent 4 MiB `AddEntries` messages of empty entries (each 2-byte entry
/// decodes to a ~230-byte struct: ~0.5 GB a message) and eight 4 MiB JSON bodies, none with a
/// valid token, leave the server's peak RSS within its budget. Once, they took a server from
/// 20 MiB to 984 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_bulk_submissions_cost_no_memory() {
    const BUDGET_MIB: u64 = 160;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = add_token(&data);
    let stderr = dir.path().join("stderr");
    let (child, base, grpc) = serve_child(&data, &stderr).await;
    let before = peak_rss_mib(child.id());

    let message = axum::body::Bytes::from([0x0Au8, 0x00].repeat((4 << 20) / 2 - 8));
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let token = (i % 2 == 1).then(|| "btlog_wrong".to_owned());
            tokio::spawn(grpc_raw(grpc, "AddEntries", token, message.clone()))
        })
        .collect();
    for c in calls {
        let reply = c.await.expect("task");
        assert!(
            matches!(reply, None | Some((16, _))),
            "UNAUTHENTICATED, got {reply:?}"
        );
    }
    // With a valid token the message is read, but its 2 million entries are counted on the
    // wire and refused (RESOURCE_EXHAUSTED) before any is decoded.
    let calls: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(grpc_raw(
                grpc,
                "AddEntries",
                Some(token.clone()),
                message.clone(),
            ))
        })
        .collect();
    for c in calls {
        let (code, message) = c.await.expect("task").expect("answered");
        assert_eq!(code, 8, "RESOURCE_EXHAUSTED: {message}");
        assert!(
            message.contains("2097144 entries in one request"),
            "{message}"
        );
    }
    let entry = json!({"kind": "publish", "package": "pkg:npm/x", "version": "1", "file": "f", "sha256": "ab".repeat(32)});
    let json =
        serde_json::to_vec(&json!({"entries": vec![entry; 4 * 1024 * 1024 / 150]})).expect("json");
    assert!(json.len() < 4 << 20);
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let req = reqwest::Client::new()
                .post(format!("{base}/v1/entries"))
                .header("content-type", "application/json")
                .body(json.clone());
            tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()).ok() })
        })
        .collect();
    for p in posts {
        let status = p.await.expect("task");
        assert!(matches!(status, None | Some(401)), "401, got {status:?}");
    }
    let peak = peak_rss_mib(child.id());
    eprintln!("server peak RSS {peak} MiB (at start {before} MiB)");
    let mut child = child;
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        peak <= BUDGET_MIB,
        "server peak RSS {peak} MiB (at start {before} MiB), budget {BUDGET_MIB} MiB"
    );
}

/// Each front end holds at most `max_connections` open: beyond that a client waits in the
/// listen backlog until a connection closes, and is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(dir.path());
    cfg.limits.max_connections = 2;
    let srv = start(&cfg).await;
    let addr = srv.http_addr();
    let first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _second = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let url = format!("http://{addr}/checkpoint");
    let third = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status().as_u16()) });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !third.is_finished(),
        "a third connection was served at a cap of 2"
    );
    drop(first);
    let status = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .expect("task")
        .expect("answered");
    assert_eq!(status, 200);
    srv.shutdown().await.expect("shutdown");
}
