//! Issue #13 item 7: the client reads a log's replies with a cap per resource, applied to the
//! body as it streams in (after decompression), so a malicious log or mirror cannot exhaust the
//! memory of a monitor or installer with an endless or oversized body. Each server here streams
//! far more than the cap and counts what it could write before the client hung up.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use btlog_client::api::{Api, ApiError};
use btlog_client::tiles::{TileClient, TilesError};
use btlog_client::FetchError;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// What the servers here stream at most: far beyond every cap.
const STREAM: usize = 256 << 20;
/// What a capped client may have let the server write: its cap (16 MiB at most) plus what
/// the loopback socket buffers hold.
const READ_BOUND: usize = 64 << 20;

/// A server answering every request 200 with a chunked body of `STREAM` bytes of `x`, or, with
/// `declared`, a `content-length` of that many bytes and no body. Returns its URL and the bytes
/// of body it wrote.
async fn streaming_server(declared: Option<u64>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Some(len) = declared {
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
                    let _ = sock.write_all(head.as_bytes()).await;
                    // Hold the connection open without sending the body.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let block = vec![b'x'; 64 << 10];
                let framed =
                    [format!("{:x}\r\n", block.len()).as_bytes(), &block, b"\r\n"].concat();
                while counter.load(Ordering::SeqCst) < STREAM {
                    if sock.write_all(&framed).await.is_err() {
                        return;
                    }
                    counter.fetch_add(block.len(), Ordering::SeqCst);
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    (url, sent)
}

/// Runs `f` with a deadline well under the client's 30 s request timeout.
async fn soon<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the client stopped reading in time")
}

fn assert_bounded(sent: &AtomicUsize) {
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < READ_BOUND,
        "the client let the server write {sent} bytes"
    );
}

#[tokio::test]
async fn an_endless_checkpoint_is_refused_without_reading_it() {
    let (url, sent) = streaming_server(None).await;
    let vkey = btlog_core::keys::generate("example.com/log")
        .expect("key")
        .verifier();
    let err = soon(TileClient::new(&url).expect("client").checkpoint(&vkey))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, TilesError::Fetch(FetchError::TooLarge { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("too large"), "{err}");
    assert_bounded(&sent);
}

#[tokio::test]
async fn endless_tiles_and_bundles_are_malformed_without_reading_them() {
    let (url, sent) = streaming_server(None).await;
    let client = TileClient::new(&url).expect("client");
    let err = soon(client.hash_tile(0, 0, 256))
        .await
        .expect_err("refused");
    assert!(matches!(err, TilesError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("too large"), "{err}");
    let err = soon(client.entry_bundle(0, 256))
        .await
        .expect_err("refused");
    assert!(matches!(err, TilesError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("too large"), "{err}");
    assert_bounded(&sent);
}

#[tokio::test]
async fn an_endless_json_reply_is_refused_without_reading_it() {
    let (url, sent) = streaming_server(None).await;
    let api = Api::new(&url).expect("client");
    let err = soon(api.inclusion(1, 2)).await.expect_err("refused");
    assert!(
        matches!(err, ApiError::Fetch(FetchError::TooLarge { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("too large"), "{err}");
    assert_bounded(&sent);
}

#[tokio::test]
async fn a_declared_oversized_body_is_refused_before_it_is_sent() {
    let (url, _) = streaming_server(Some(1 << 40)).await;
    let api = Api::new(&url).expect("client");
    let err = tokio::time::timeout(Duration::from_secs(5), api.consistency(1, 2))
        .await
        .expect("refused without waiting for the body")
        .expect_err("refused");
    assert!(err.to_string().contains("too large"), "{err}");
}
