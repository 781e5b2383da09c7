//! Helpers for the server tests: a real in-process server on ephemeral 127.0.0.1 ports with a
//! temporary data directory, a submitter token, and request builders.
#![allow(dead_code)]

use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle::Hash;
use btlog_core::note::Verifier;
use btlog_server::api::Server;
use btlog_server::config::Config;
use btlog_server::log::auth;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

pub const REGISTRY: &str = "registry.example";

/// A config for a server in `dir` on ephemeral ports, with a short batching delay.
pub fn config(dir: &Path) -> Config {
    let limits = btlog_server::config::Limits {
        batch_delay_ms: 20,
        ..Default::default()
    };
    Config {
        data: dir.to_path_buf(),
        http: "127.0.0.1:0".parse().expect("addr"),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        origin: "test.example/log".into(),
        key: None,
        limits,
        ..Config::default()
    }
}

/// Adds a token for [`REGISTRY`] that may write any package to the data directory.
pub fn add_token(dir: &Path) -> String {
    auth::add_token(&dir.join("tokens.toml"), REGISTRY, &[auth::ANY.into()]).expect("token")
}

/// A 127.0.0.1 port free at the time of asking (for servers started as child processes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts a server on `config`.
pub async fn start(config: &Config) -> Server {
    Server::start(config).await.expect("server starts")
}

/// The SHA-256 of `content`, in lowercase hex.
pub fn digest(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// A publish entry in the JSON request shape.
pub fn publish(package: &str, version: &str, file: &str, sha256: &str) -> Value {
    json!({"kind": "publish", "package": package, "version": version, "file": file, "sha256": sha256})
}

/// Submits `entries` (JSON request shapes) to the log at `base` with `token`; the reply,
/// after checking it is a 200.
pub async fn submit_entries(base: &str, token: &str, entries: Vec<Value>) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/entries"))
        .bearer_auth(token)
        .json(&json!({ "entries": entries }))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

/// Verifies a checkpoint note with the log's key; returns size and root.
pub fn verify_checkpoint(note: &str, vkey: &Verifier) -> (u64, Hash) {
    let (c, _) = Checkpoint::verify(note.as_bytes(), vkey).expect("checkpoint verifies");
    (c.size, c.root)
}

/// Decodes a base64 hash.
pub fn b64_hash(s: &str) -> Hash {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
        .try_into()
        .expect("32 bytes")
}

/// Checks an inclusion proof with btlog's verifier and with the independent `tlog_tiles`.
pub fn check_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) {
    btlog_core::merkle::verify_inclusion(leaf, index, size, proof, root).expect("btlog inclusion");
    let p: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
    tlog_tiles::check_record(
        &p,
        size,
        tlog_tiles::Hash(*root),
        index,
        tlog_tiles::Hash(*leaf),
    )
    .expect("tlog_tiles inclusion");
}

/// Checks a consistency proof with btlog's verifier and with the independent `tlog_tiles`.
pub fn check_consistency(from: u64, to: u64, proof: &[Hash], root1: &Hash, root2: &Hash) {
    btlog_core::merkle::verify_consistency(from, to, proof, root1, root2)
        .expect("btlog consistency");
    let p: Vec<tlog_tiles::Hash> = proof.iter().map(|h| tlog_tiles::Hash(*h)).collect();
    tlog_tiles::check_tree(
        &p,
        to,
        tlog_tiles::Hash(*root2),
        from,
        tlog_tiles::Hash(*root1),
    )
    .expect("tlog_tiles consistency");
}

/// Splits a tlog-tiles entry bundle into its entries.
pub fn split_bundle(mut bundle: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bundle.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([bundle[0], bundle[1]]));
        out.push(bundle[2..2 + len].to_vec());
        bundle = &bundle[2 + len..];
    }
    assert!(bundle.is_empty(), "trailing bytes in bundle");
    out
}
