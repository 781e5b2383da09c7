//! `btlog verify --index` against a static tlog-tiles mirror (a bucket or CDN): only
//! `/checkpoint` and `/tile/...`, no `/v1` API. The mirror is trusted for nothing: the same
//! claim check and checkpoint policy as against the server, with proofs built from its tiles.

use std::path::Path;
use std::process::Output;

use axum::http::{StatusCode, Uri};
use btlog_client::api::state::CheckpointState;

use crate::cli::{
    btlog, forks, ok, path, proxy, publish, refused, refused_as_fork_of_4_in_5, stderr, stdout,
    verify, write, Log, PKG,
};

/// What an object store answers for a key it does not hold.
const NO_SUCH_KEY: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
    <Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>";

/// What a [`mirror`] changes in what it copies from the log.
#[derive(Clone, Copy, Debug)]
enum Forge {
    Nothing,
    /// One bit of every level-0 hash tile.
    HashTile,
    /// One bit of the last entry of every entry bundle.
    Bundle,
}

/// A static tile mirror of `log` (on its runtime): `/checkpoint` and `/tile/...` copied from
/// the log with `forge` applied, and an object store's 404 for everything else.
fn mirror(log: &Log, forge: Forge) -> String {
    let answer = |uri: &Uri| {
        let p = uri.path();
        let copied = (p == "/checkpoint" || p.starts_with("/tile/")) && uri.query().is_none();
        (!copied).then(|| (StatusCode::NOT_FOUND, NO_SUCH_KEY.as_bytes().to_vec()))
    };
    let edit = move |uri: &Uri, body: &mut Vec<u8>| {
        let p = uri.path();
        let flip = match forge {
            Forge::HashTile if p.starts_with("/tile/0/") => body.first_mut(),
            Forge::Bundle if p.starts_with("/tile/entries/") => body.last_mut(),
            _ => None,
        };
        if let Some(b) = flip {
            *b ^= 1;
        }
    };
    proxy(log, answer, edit)
}

/// `btlog verify --log url --index index` of PKG `version` `x-<version>.tgz`.
fn verify_at(url: &str, index: u64, state: &Path, vkey: &str, version: &str, art: &Path) -> Output {
    let index = index.to_string();
    let source = ["--log", url, "--index", &index, "--state", &path(state)];
    verify(&source, vkey, version, &format!("x-{version}.tgz"), art)
}

/// The tree size of the checkpoint stored in `state`.
fn stored_size(state: &Path) -> u64 {
    let note = std::fs::read_to_string(CheckpointState::new(state).path("test.example/log"))
        .expect("stored checkpoint");
    note.lines()
        .nth(1)
        .expect("size line")
        .parse()
        .expect("size")
}

#[test]
fn verify_against_a_static_tile_mirror() {
    let log = Log::start(None);
    let f = forks();
    let (work, state, art, other) = (f.work.path(), &f.state, &f.art, &f.fork_art);
    for v in ["1", "2", "3"] {
        ok(&publish(&log, v, &format!("x-{v}.tgz"), art));
    }
    let tiles = mirror(&log, Forge::Nothing);
    let at = |url: &str, index, version, art: &Path| {
        verify_at(url, index, state, &log.vkey, version, art)
    };

    // Verified from the tiles alone; the checkpoint is stored on first use.
    let out = at(&tiles, 1, "2", art);
    ok(&out);
    assert!(stdout(&out).contains("is logged at index 1 in test.example/log (tree size 3)"));
    assert_eq!(stored_size(state), 3);
    // --index against the server itself reads the same tiles.
    ok(&at(&log.url, 2, "3", art));

    // Refusals: another file, another identity's entry, an index beyond the tree.
    refused(
        &at(&tiles, 1, "2", other),
        1,
        "the file is not the one that was published",
    );
    let out = at(&tiles, 0, "2", art);
    refused(&out, 1, "entry 0 of the log is for another artifact");
    refused(&out, 1, "logged version is \"1\", expected \"2\"");
    refused(
        &at(&tiles, 99, "2", art),
        1,
        "the log has no entry 99: its checkpoint's tree has 3 entries",
    );

    // No /v1 API: a lookup cannot be made, and audit needs one.
    let source = ["--log", tiles.as_str(), "--state", &path(state)];
    let out = verify(&source, &log.vkey, "2", "x-2.tgz", art);
    refused(&out, 2, "no /v1 API");
    refused(&out, 2, "give --index N");
    let lock = write(
        work,
        "Cargo.lock",
        &format!(
            "version = 3\n\n[[package]]\nname = \"x\"\nversion = \"1.0.0\"\nsource = \
             \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{}\"\n",
            "ab".repeat(32)
        ),
    );
    let audit = |url: &str| {
        let args = ["audit", &path(&lock), "--log", url, "--vkey", &log.vkey];
        btlog(&[&args[..], &["--state", &path(state)]].concat())
    };
    refused(
        &audit(&tiles),
        2,
        "audit needs the log server's /v1 API, not a static tile mirror",
    );
    let out = audit(&log.url);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("NOT LOGGED"), "{}", stdout(&out));

    // The log grows past a full tile (one batch); the stored checkpoint advances on a
    // consistency proof built from the mirror's hash tiles.
    let lines: String = (4..=300)
        .map(|v| {
            format!(
                "{{\"kind\":\"publish\",\"package\":\"{PKG}\",\"version\":\"{v}\",\
                 \"file\":\"x-{v}.tgz\",\"sha256\":\"{}\"}}\n",
                crate::server::digest("x bytes")
            )
        })
        .collect();
    let batch = write(work, "batch.jsonl", &lines);
    ok(&log.submit(&["--batch", &path(&batch)]));
    ok(&at(&tiles, 299, "300", art));
    assert_eq!(stored_size(state), 300);
    ok(&at(&tiles, 5, "6", art));

    // Forged tiles or bundles are refused, and so is a larger checkpoint they would prove.
    for (forge, says) in [
        (Forge::HashTile, "tiles do not match the signed tree"),
        (
            Forge::Bundle,
            "inclusion proof does not match the checkpoint",
        ),
    ] {
        let out = at(&mirror(&log, forge), 299, "300", art);
        refused(&out, 1, "verification failed");
        refused(&out, 1, says);
    }
    ok(&publish(&log, "301", "x-301.tgz", art));
    let out = at(&mirror(&log, Forge::HashTile), 300, "301", art);
    refused(&out, 3, "cannot verify the log's consistency");
    refused(&out, 3, "its hash tiles of the larger tree do not");
    assert_eq!(stored_size(state), 300);
    ok(&at(&tiles, 300, "301", art));
    assert_eq!(stored_size(state), 301);
}

#[test]
fn a_static_mirror_of_a_forked_log_is_refused_with_evidence() {
    let f = forks();
    let (state, art, fork_art) = (&f.state, &f.art, &f.fork_art);
    let run = |entries: &[&str], art: &Path, version: &str| -> Output {
        let log = Log::start(Some(&f.key));
        for v in entries {
            ok(&publish(&log, v, &format!("x-{v}.tgz"), art));
        }
        let index = entries.iter().position(|v| *v == version).expect("entry") as u64;
        verify_at(
            &mirror(&log, Forge::Nothing),
            index,
            state,
            &log.vkey,
            version,
            art,
        )
    };

    // The honest log's mirror, at size 4.
    ok(&run(&["1", "2", "3", "4"], art, "4"));
    assert_eq!(stored_size(state), 4);

    // Same key, shorter history: its tiles cannot show the tree of size 4, nor a fork.
    let out = run(&["1"], fork_art, "1");
    refused(&out, 3, "cannot verify the log's consistency");
    assert!(
        !stderr(&out).contains("inconsistent log"),
        "{}",
        stderr(&out)
    );

    // Same key, a different and longer history: its own hash tiles show the fork.
    let out = run(&["1", "2", "3", "4", "5"], fork_art, "5");
    refused_as_fork_of_4_in_5(&out);

    // Same key, same size, another root.
    let out = run(&["1", "2", "3", "4"], fork_art, "4");
    refused(&out, 4, "two checkpoints of size 4 with different roots");
    assert_eq!(stored_size(state), 4);
}
