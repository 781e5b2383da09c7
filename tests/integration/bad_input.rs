//! Malformed requests over HTTP and gRPC, table-driven. Each must get its 4xx status (or gRPC
//! code) with a one-line reason, never a 5xx or a dropped connection; afterwards the log is
//! unchanged (same checkpoint) and still serving.
//!
//! HTTP requests go over a raw TCP socket so that paths, bytes and headers reach the server
//! exactly as written (an HTTP client library would normalise `..` or refuse non-UTF-8).

use crate::server::*;
use btlog_server::api::pb::{self, log_client::LogClient};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::Code;

const MAX_BODY: usize = 256 << 10;
const MAX_ENTRIES: usize = 100;
const MAX_ENTRY: usize = 2000;

/// Sends one raw HTTP/1.1 request and returns the status and body. Panics on a dropped
/// connection (no status line).
async fn raw(
    addr: SocketAddr,
    method: &str,
    target: &[u8],
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} ").into_bytes();
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(
            " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    // The server may answer (413) before reading a large body; a failed write is fine as long
    // as the answer arrives.
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "no answer to {}",
        String::from_utf8_lossy(target)
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "dropped connection for {:?}: {text:?}",
                String::from_utf8_lossy(target)
            )
        });
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// The reason in an error body: the `error` of a JSON body, else the text.
fn reason(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.strip_suffix('\n').unwrap_or(body).to_owned())
}

fn entry(overrides: Value) -> Value {
    let mut e = publish("pkg:npm/ok", "1.0.0", "ok.tgz", &digest("ok"));
    for (k, v) in overrides.as_object().expect("object") {
        e[k] = v.clone();
    }
    e
}

fn body(entries: Vec<Value>) -> Vec<u8> {
    json!({ "entries": entries }).to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let mut cfg = config(dir.path());
    cfg.limits.max_body_bytes = MAX_BODY;
    cfg.limits.max_entries_per_request = MAX_ENTRIES;
    cfg.limits.max_entry_bytes = MAX_ENTRY;
    let srv = start(&cfg).await;
    let http = srv.http_addr();
    let auth = format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n");

    // A few entries, so proofs and tiles have something to refuse around.
    let seed: Vec<Value> = (0..3)
        .map(|i| {
            publish(
                &format!("pkg:npm/seed{i}"),
                "1",
                "f",
                &digest(&i.to_string()),
            )
        })
        .collect();
    let (status, reply) = raw(http, "POST", b"/v1/entries", &auth, &body(seed)).await;
    assert_eq!(status, 200, "{reply}");
    let before = srv.log().checkpoint();

    let hex62 = "a".repeat(62);
    let big = "p".repeat(3000);
    let huge = "p".repeat(70_000);
    let many: Vec<Value> = (0..=MAX_ENTRIES)
        .map(|i| publish(&format!("pkg:npm/m{i}"), "1", "f", &digest(&i.to_string())))
        .collect();
    let mut non_utf8 = br#"{"entries":[{"kind":"publish","package":"pkg:npm/"#.to_vec();
    non_utf8.extend_from_slice(b"\xff\xfe\",\"version\":\"1\",\"file\":\"f\",\"sha256\":\"");
    non_utf8.extend_from_slice(digest("x").as_bytes());
    non_utf8.extend_from_slice(b"\"}]}");
    let posts: Vec<(&str, Vec<u8>, &str, u16)> = vec![
        ("broken JSON", b"{\"entries\":[".to_vec(), &auth, 400),
        ("not JSON", b"hello".to_vec(), &auth, 400),
        ("empty body", Vec::new(), &auth, 400),
        ("entries not a list", br#"{"entries":"x"}"#.to_vec(), &auth, 400),
        ("kind a number", body(vec![entry(json!({"kind": 1}))]), &auth, 400),
        ("size a string", body(vec![entry(json!({"size": "10"}))]), &auth, 400),
        ("size negative", body(vec![entry(json!({"size": -1}))]), &auth, 400),
        ("size overflowing", br#"{"entries":[{"kind":"publish","package":"pkg:npm/a","version":"1","file":"f","sha256":"00","size":18446744073709551616}]}"#.to_vec(), &auth, 400),
        ("unknown field", body(vec![entry(json!({"colour": "red"}))]), &auth, 400),
        ("unknown top-level field", br#"{"entries":[],"x":1}"#.to_vec(), &auth, 400),
        ("missing field", br#"{"entries":[{"kind":"publish"}]}"#.to_vec(), &auth, 400),
        ("non-UTF-8 value", non_utf8, &auth, 400),
        ("control character", body(vec![entry(json!({"package": "pkg:npm/a\u{1}b"}))]), &auth, 400),
        ("newline in version", body(vec![entry(json!({"version": "1\nkind yank"}))]), &auth, 400),
        ("carriage return in file", body(vec![entry(json!({"file": "f\r"}))]), &auth, 400),
        ("NUL in publisher", body(vec![entry(json!({"publisher": "a\u{0}"}))]), &auth, 400),
        ("empty package", body(vec![entry(json!({"package": ""}))]), &auth, 400),
        ("bad hex", body(vec![entry(json!({"sha256": "z".repeat(64)}))]), &auth, 400),
        ("uppercase hex", body(vec![entry(json!({"sha256": digest("ok").to_uppercase()}))]), &auth, 400),
        ("short digest", body(vec![entry(json!({"sha256": hex62}))]), &auth, 400),
        ("long digest", body(vec![entry(json!({"sha256": "a".repeat(66)}))]), &auth, 400),
        ("short sha512", body(vec![entry(json!({"sha512": "a".repeat(64)}))]), &auth, 400),
        ("unknown kind", body(vec![entry(json!({"kind": "frobnicate"}))]), &auth, 400),
        ("yank of nothing", body(vec![entry(json!({"kind": "yank", "package": "pkg:npm/none"}))]), &auth, 400),
        ("no entries", body(vec![]), &auth, 400),
        ("oversized field", body(vec![entry(json!({"publisher": huge}))]), &auth, 400),
        ("oversized entry", body(vec![entry(json!({"publisher": big}))]), &auth, 413),
        ("huge batch", body(many), &auth, 413),
        ("oversized body", vec![b' '; MAX_BODY * 2], &auth, 413),
        ("no token", body(vec![entry(json!({}))]), "", 401),
        ("wrong token", body(vec![entry(json!({}))]), "Authorization: Bearer btlog_nope\r\n", 401),
        ("basic auth", body(vec![entry(json!({}))]), "Authorization: Basic dXNlcjpwYXNz\r\n", 401),
    ];
    for (name, b, headers, want) in &posts {
        let (status, reply) = raw(http, "POST", b"/v1/entries", headers, b).await;
        check(name, status, *want, &reply);
    }

    let gets: Vec<(&[u8], u16)> = vec![
        (b"/tile/9/000", 404),
        (b"/tile/8/000", 404),
        (b"/tile/0/x000/001", 404),
        (b"/tile/0/x001", 404),
        (b"/tile/../..", 404),
        (b"/tile/0/../000", 404),
        (b"/tile/%2e%2e/%2e%2e", 404),
        (b"/tile/0/%30%30%30", 404),
        (b"/tile/0/000.p/0", 404),
        (b"/tile/0/000.p/256", 404),
        (b"/tile/0/000.p/-1", 404),
        (b"/tile/0/000.p/4", 404),
        (b"/tile/0/001", 404),
        (b"/tile/0/18446744073709551615", 404),
        (b"/tile/0/x018/x446/x744/x073/x709/x551/616", 404),
        (b"/tile/0/x018/x446/x744/x073/x709/x551/615", 404),
        (b"/tile/7/x018/x446/x744/x073/x709/x551/615.p/1", 404),
        (b"/tile/entries/x018/x446/x744/x073/x709/x551/615", 404),
        (b"/tile/entries/x999/x999/x999/x999/x999/x999/999", 404),
        // index · 256 + 256 wraps to 0: once answered 200, empty and immutable.
        (b"/tile/entries/x072/x057/x594/x037/x927/935", 404),
        (b"/tile/entries/x072/x057/x594/x037/x927/935.p/255", 404),
        (b"/tile/entries/000.p/4", 404),
        (b"/tile/", 404),
        (b"/nothing/here", 404),
        (b"/v1/proof/inclusion?index=-1&size=1", 400),
        (
            b"/v1/proof/inclusion?index=18446744073709551616&size=3",
            400,
        ),
        (b"/v1/proof/inclusion?index=0&size=0", 400),
        (b"/v1/proof/inclusion?index=3&size=3", 400),
        (
            b"/v1/proof/inclusion?index=0&size=18446744073709551615",
            400,
        ),
        (b"/v1/proof/inclusion?index=abc", 400),
        (b"/v1/proof/inclusion?index=1.5", 400),
        (b"/v1/proof/inclusion", 400),
        (b"/v1/proof/inclusion?index=0&leaf_hash=00", 400),
        (b"/v1/proof/inclusion?leaf_hash=zz", 400),
        (b"/v1/proof/inclusion?leaf_hash=%ff%fe", 400),
        (b"/v1/proof/inclusion?index=0&index=1", 400),
        (b"/v1/proof/inclusion?index=0&colour=red", 400),
        (b"/v1/proof/consistency?from=2&to=1", 400),
        (b"/v1/proof/consistency?from=-1&to=2", 400),
        (b"/v1/proof/consistency?from=1&to=18446744073709551616", 400),
        (b"/v1/proof/consistency?from=1&to=18446744073709551615", 400),
        (b"/v1/proof/consistency?from=1", 400),
        (b"/v1/entries?start=2&end=1", 400),
        (b"/v1/entries?start=1&end=1", 400),
        (b"/v1/entries?start=0&end=18446744073709551616", 400),
        (b"/v1/entries?start=-5&end=1", 400),
        (b"/v1/entries?start=0", 400),
        (
            b"/v1/entries?start=18446744073709551614&end=18446744073709551615",
            404,
        ),
        (b"/v1/lookup?package=pkg:npm/seed0&version=1", 400),
        (b"/v1/lookup?package=pkg:npm/a%0Ab&version=1&file=f", 404),
        (b"/v1/lookup?package=%ff&version=1&file=f", 404),
        (b"/v1/packages/%ff%fe", 400),
        (b"/v1/packages/pkg%3", 400),
        (b"/v1/packages/pkg:npm/seed0?from=-1", 400),
        (b"/v1/packages/pkg:npm/seed0?from=18446744073709551616", 400),
    ];
    let leaf = format!("/v1/proof/inclusion?leaf_hash={}&size=3", "ab".repeat(32));
    let short_leaf = format!("/v1/proof/inclusion?leaf_hash={}", "ab".repeat(31));
    let extra: Vec<(&[u8], u16)> = vec![(leaf.as_bytes(), 404), (short_leaf.as_bytes(), 400)];
    for (target, want) in gets.iter().chain(&extra) {
        let (status, reply) = raw(http, "GET", target, "", b"").await;
        check(&String::from_utf8_lossy(target), status, *want, &reply);
    }

    // Wrong methods and protocol-level garbage: hyper answers these itself, still 4xx.
    let (status, reply) = raw(http, "DELETE", b"/checkpoint", "", b"").await;
    check("DELETE /checkpoint", status, 405, &reply);
    let (status, reply) = raw(http, "PUT", b"/v1/entries", &auth, b"{}").await;
    check("PUT /v1/entries", status, 405, &reply);
    let huge_header = format!("X-Big: {}\r\n", "a".repeat(100 << 10));
    let (status, _) = raw(http, "GET", b"/checkpoint", &huge_header, b"").await;
    assert_eq!(status, 431, "huge header");
    for target in [&b"/check point"[..], b"/tile/\xff/000", b"/v1/\x01"] {
        let (status, _) = raw(http, "GET", target, "", b"").await;
        assert!((400..500).contains(&status), "{target:?}: {status}");
    }

    grpc_cases(srv.grpc_addr(), srv.log(), &token).await;

    // Nothing changed, and the server still serves and accepts a good submission.
    assert_eq!(srv.log().checkpoint(), before);
    let (status, cp) = raw(http, "GET", b"/checkpoint", "", b"").await;
    assert_eq!((status, cp.as_str()), (200, before.note.as_str()));
    let good = body(vec![publish("pkg:npm/after", "1", "f", &digest("after"))]);
    let (status, reply) = raw(http, "POST", b"/v1/entries", &auth, &good).await;
    assert_eq!(status, 200, "{reply}");
    srv.shutdown().await.expect("shutdown");
}

fn check(name: &str, status: u16, want: u16, body: &str) {
    let why = reason(body);
    assert_eq!(status, want, "{name}: {body}");
    assert!(
        !why.is_empty() && !why.contains('\n'),
        "{name}: reason {why:?}"
    );
}

/// Protobuf messages shaped to break the server's decoding of `AddEntriesRequest`.
mod fake {
    /// Field 1 with the wrong wire type (varint, not a message).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WrongType {
        #[prost(uint64, tag = "1")]
        pub entries: u64,
    }
    /// Field 1 as raw bytes: whatever is in them is decoded as an entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RawEntry {
        #[prost(bytes = "vec", tag = "1")]
        pub entries: Vec<u8>,
    }
    /// An entry whose `kind` string is not UTF-8.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BytesKind {
        #[prost(bytes = "vec", tag = "1")]
        pub kind: Vec<u8>,
    }
}

async fn send_raw<M: prost::Message + Send + Sync + 'static>(
    channel: Channel,
    token: &str,
    msg: M,
) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<M, pb::AddEntriesResponse>::default();
    let path = PathAndQuery::from_static("/btlog.v1.Log/AddEntries");
    let mut request = tonic::Request::new(msg);
    let bearer = format!("Bearer {token}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", bearer);
    grpc.unary(request, path, codec).await.expect_err("refused")
}

fn pb_entry(f: impl FnOnce(&mut pb::EntryFields)) -> pb::EntryFields {
    let mut e = pb::EntryFields {
        kind: "publish".into(),
        package: "pkg:npm/ok".into(),
        version: "1".into(),
        file: "f".into(),
        sha256: digest("ok"),
        ..Default::default()
    };
    f(&mut e);
    e
}

/// How many gRPC calls the server counted with `status` in `btlog_requests_total`.
fn grpc_count(log: &btlog_server::log::Log, status: &str) -> u64 {
    let series = format!("btlog_requests_total{{api=\"grpc\",status=\"{status}\"}} ");
    log.render_metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |n| n.parse().expect("count"))
}

async fn grpc_cases(addr: SocketAddr, log: &btlog_server::log::Log, token: &str) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = LogClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
    let expect = |name: &str, status: tonic::Status, want: &[Code]| {
        assert!(want.contains(&status.code()), "{name}: {status:?}");
        assert!(
            !status.message().is_empty() && !status.message().contains('\n'),
            "{name}: {status:?}"
        );
    };

    // Broken protobuf.
    let truncated = pb::EntryFields {
        package: "x".repeat(10),
        ..Default::default()
    };
    let mut enc = prost::Message::encode_to_vec(&truncated);
    enc.truncate(5);
    // Refused before the service runs, like the oversized message below, and counted anyway.
    let invalid = grpc_count(log, "InvalidArgument");
    let raw_cases: Vec<(&str, tonic::Status)> = vec![
        (
            "wrong wire type",
            send_raw(channel.clone(), token, fake::WrongType { entries: 7 }).await,
        ),
        (
            "garbage entry",
            send_raw(
                channel.clone(),
                token,
                fake::RawEntry {
                    entries: vec![0xff; 9],
                },
            )
            .await,
        ),
        (
            "truncated entry",
            send_raw(channel.clone(), token, fake::RawEntry { entries: enc }).await,
        ),
        (
            "non-UTF-8 string",
            send_raw(
                channel.clone(),
                token,
                fake::RawEntry {
                    entries: prost::Message::encode_to_vec(&fake::BytesKind {
                        kind: vec![0xc3, 0x28],
                    }),
                },
            )
            .await,
        ),
    ];
    for (name, status) in raw_cases {
        expect(name, status, &[Code::InvalidArgument]);
    }
    assert_eq!(grpc_count(log, "InvalidArgument"), invalid + 4);

    let bad = Code::InvalidArgument;
    let entries: Vec<(&str, Vec<pb::EntryFields>, &[Code])> = vec![
        (
            "control character",
            vec![pb_entry(|e| e.package = "pkg:npm/a\u{7}".into())],
            &[Code::InvalidArgument],
        ),
        (
            "newline",
            vec![pb_entry(|e| e.version = "1\nx".into())],
            &[Code::InvalidArgument],
        ),
        (
            "bad hex",
            vec![pb_entry(|e| e.sha256 = "g".repeat(64))],
            &[Code::InvalidArgument],
        ),
        (
            "short digest",
            vec![pb_entry(|e| e.sha256 = "a".repeat(62))],
            &[Code::InvalidArgument],
        ),
        (
            "bad sha512",
            vec![pb_entry(|e| e.sha512 = Some("a".repeat(127)))],
            &[Code::InvalidArgument],
        ),
        (
            "unknown kind",
            vec![pb_entry(|e| e.kind = "nope".into())],
            &[Code::InvalidArgument],
        ),
        (
            "empty kind",
            vec![pb_entry(|e| e.kind.clear())],
            &[Code::InvalidArgument],
        ),
        ("no entries", vec![], &[Code::InvalidArgument]),
        (
            "oversized entry",
            vec![pb_entry(|e| e.publisher = Some("p".repeat(3000)))],
            &[Code::ResourceExhausted],
        ),
        (
            "huge batch",
            (0..=MAX_ENTRIES).map(|_| pb_entry(|_| ())).collect(),
            &[Code::ResourceExhausted],
        ),
    ];
    let authed = |entries| {
        let mut req = tonic::Request::new(pb::AddEntriesRequest { entries });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("meta"),
        );
        req
    };
    for (name, entries, want) in entries {
        expect(
            name,
            client.add_entries(authed(entries)).await.expect_err(name),
            want,
        );
    }
    // An oversized message is refused before it is decoded, with RESOURCE_EXHAUSTED (gRPC's
    // code for it, and PROTOCOL.md §6's 413).
    let exhausted = grpc_count(log, "ResourceExhausted");
    let oversized = (0..4)
        .map(|_| pb_entry(|e| e.publisher = Some("p".repeat(MAX_BODY / 3))))
        .collect();
    let status = client
        .add_entries(authed(oversized))
        .await
        .expect_err("oversized message");
    assert!(status.message().contains("too large"), "{status:?}");
    expect("oversized message", status, &[Code::ResourceExhausted]);
    assert_eq!(grpc_count(log, "ResourceExhausted"), exhausted + 1);
    let unauth = client
        .add_entries(pb::AddEntriesRequest {
            entries: vec![pb_entry(|_| ())],
        })
        .await
        .expect_err("no token");
    expect("no token", unauth, &[Code::Unauthenticated]);

    use pb::get_inclusion_proof_request::Leaf;
    let max = u64::MAX;
    let incl: Vec<(Option<Leaf>, u64, Code)> = vec![
        (None, 1, bad),
        (Some(Leaf::LeafHash(vec![0; 31])), 1, bad),
        (Some(Leaf::LeafHash(vec![0; 32])), 3, Code::NotFound),
        (Some(Leaf::Index(3)), 3, bad),
        (Some(Leaf::Index(max)), 3, bad),
        (Some(Leaf::Index(0)), max, bad),
    ];
    for (leaf, size, want) in incl {
        let what = format!("inclusion {leaf:?} {size}");
        let r = client
            .get_inclusion_proof(pb::GetInclusionProofRequest { leaf, size })
            .await;
        expect(&what, r.expect_err(&what), &[want]);
    }
    for (from, to, want) in [(2, 1, bad), (1, max, bad), (max, max, bad)] {
        let r = client
            .get_consistency_proof(pb::GetConsistencyProofRequest { from, to })
            .await;
        expect("consistency", r.expect_err("consistency"), &[want]);
    }
    for (start, end, want) in [(2, 1, bad), (0, 0, bad), (max - 1, max, Code::NotFound)] {
        let r = client
            .get_entries(pb::GetEntriesRequest { start, end })
            .await;
        expect("entries", r.expect_err("entries"), &[want]);
    }
    for (level, index, width, want) in [
        (9, 0, 0, bad),
        (u32::MAX, 0, 0, bad),
        (0, 0, 257, bad),
        (0, max, 0, Code::NotFound),
        (0, 0, 4, Code::NotFound),
    ] {
        let r = client
            .get_tile(pb::GetTileRequest {
                level,
                index,
                width,
            })
            .await;
        expect("tile", r.expect_err("tile"), &[want]);
    }
    for (index, width, want) in [
        (max, 0, Code::NotFound),
        // index · 256 + width wraps to 0 (2^56 - 1 is the last index whose start fits).
        ((1 << 56) - 1, 0, Code::NotFound),
        ((1 << 56) - 1, 255, Code::NotFound),
        (0, 257, bad),
        (0, 4, Code::NotFound),
    ] {
        let r = client
            .get_entry_bundle(pb::GetEntryBundleRequest { index, width })
            .await;
        expect("bundle", r.expect_err("bundle"), &[want]);
    }
    let r = client
        .lookup(pb::LookupRequest {
            package: "pkg:npm/\u{0}".into(),
            version: String::new(),
            file: String::new(),
        })
        .await;
    expect("lookup", r.expect_err("lookup"), &[Code::NotFound]);
}
