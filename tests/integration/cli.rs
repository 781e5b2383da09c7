//! The built `btlog` binary against real in-process servers on ephemeral 127.0.0.1 ports: the
//! registry journey (submit, keep the proof) and the installer journey (verify online and
//! offline), and every refusal with its own message and exit code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use axum::http::{StatusCode, Uri};
use btlog_core::keys;
use btlog_server::api::Server;
use tempfile::TempDir;

pub(crate) const PKG: &str = "pkg:npm/left-pad";

/// A log server running on its own runtime, with its data directory and a submitter token.
pub(crate) struct Log {
    pub(crate) rt: tokio::runtime::Runtime,
    server: Option<Server>,
    pub(crate) url: String,
    token: String,
    pub(crate) vkey: String,
    _dir: TempDir,
}

impl Log {
    /// A log with a fresh key, or with the private key file `key`.
    pub(crate) fn start(key: Option<&Path>) -> Log {
        let dir = TempDir::new().expect("tempdir");
        let mut config = crate::server::config(dir.path());
        config.key = key.map(Path::to_path_buf);
        let token = crate::server::add_token(dir.path());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let server = rt.block_on(crate::server::start(&config));
        Log {
            url: format!("http://{}", server.http_addr()),
            vkey: server.log().verifier().vkey(),
            server: Some(server),
            rt,
            token,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown()).expect("shutdown");
        }
    }

    /// `btlog submit --log --token` plus `args`.
    pub(crate) fn submit(&self, args: &[&str]) -> Output {
        let mut all = vec!["submit", "--log", &self.url, "--token", &self.token];
        all.extend_from_slice(args);
        btlog(&all)
    }

    /// Online `btlog verify` of `artifact` as `version`/`file`, keeping state in `state`.
    fn verify_online(&self, state: &Path, version: &str, file: &str, artifact: &Path) -> Output {
        let source = ["--log", &self.url, "--state", &path(state)];
        verify(&source, &self.vkey, version, file, artifact)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn btlog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btlog"))
        .args(args)
        .env_remove("XDG_STATE_HOME")
        .output()
        .expect("run btlog")
}

pub(crate) fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code and that stderr mentions `needle`.
#[track_caller]
pub(crate) fn refused(o: &Output, code: i32, needle: &str) {
    assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
    assert!(
        stderr(o).contains(needle),
        "stderr lacks {needle:?}: {}",
        stderr(o)
    );
}

#[track_caller]
pub(crate) fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
}

/// Offline `btlog verify` of `artifact` with `proof`.
fn verify_offline(vkey: &str, proof: &Path, version: &str, file: &str, artifact: &Path) -> Output {
    verify(&["--proof", &path(proof)], vkey, version, file, artifact)
}

/// `btlog verify` of PKG `version`/`file` with `source` (`--log …` or `--proof …`).
pub(crate) fn verify(
    source: &[&str],
    vkey: &str,
    version: &str,
    file: &str,
    artifact: &Path,
) -> Output {
    let artifact = path(artifact);
    let mut args = vec![
        "verify",
        "--vkey",
        vkey,
        "--package",
        PKG,
        "--version",
        version,
    ];
    args.extend_from_slice(&["--file", file, "--artifact", &artifact]);
    args.extend_from_slice(source);
    btlog(&args)
}

pub(crate) fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

/// Submits `artifact` as PKG `version`/`file` and keeps its proof next to it.
pub(crate) fn publish(log: &Log, version: &str, file: &str, artifact: &Path) -> Output {
    log.submit(&[
        "--package",
        PKG,
        "--version",
        version,
        "--file",
        file,
        "--artifact",
        &path(artifact),
        "--vkey",
        &log.vkey,
        "--proof-next-to-artifact",
    ])
}

#[test]
fn registry_and_installer_journeys() {
    let log = Log::start(None);
    let work = TempDir::new().expect("tempdir");
    let state = work.path().join("state");
    let art = write(work.path(), "left-pad-1.3.0.tgz", "left-pad 1.3.0 bytes");
    let other = write(work.path(), "other.tgz", "other bytes");

    // Registry: submit one artifact, keep its proof; resubmitting is a duplicate.
    let out = publish(&log, "1.3.0", "left-pad-1.3.0.tgz", &art);
    ok(&out);
    let proof = work.path().join("left-pad-1.3.0.tgz.tlog-proof");
    assert!(stdout(&out).starts_with("0 new pkg:npm/left-pad 1.3.0 left-pad-1.3.0.tgz "));
    assert!(proof.exists());
    let out = publish(&log, "1.3.0", "left-pad-1.3.0.tgz", &art);
    ok(&out);
    assert!(stdout(&out).starts_with("0 duplicate "));
    ok(&publish(&log, "1.3.1", "left-pad-1.3.1.tgz", &other));

    // Same identity, another digest: conflict, exit 5.
    let out = log.submit(&[
        "--package",
        PKG,
        "--version",
        "1.3.0",
        "--file",
        "left-pad-1.3.0.tgz",
        "--sha256",
        &"ab".repeat(32),
    ]);
    refused(&out, 5, "already logged at index 0 with another sha256");
    assert!(stdout(&out).starts_with("0 conflict "));

    // get and prove.
    let out = btlog(&["get", "--log", &log.url, "--index", "0"]);
    ok(&out);
    assert!(stdout(&out).contains("\nversion 1.3.0\n"));
    refused(
        &btlog(&["get", "--log", &log.url, "--index", "99"]),
        1,
        "no entry 99",
    );
    let out = btlog(&[
        "prove", "--log", &log.url, "--index", "0", "--vkey", &log.vkey,
    ]);
    ok(&out);
    let proved = write(work.path(), "proved.tlog-proof", &stdout(&out));

    // Installer, offline: both proofs verify; the vkey may be a file.
    let vkey_file = write(work.path(), "log.vkey", &format!("{}\n", log.vkey));
    for (p, vkey) in [(&proof, log.vkey.clone()), (&proved, path(&vkey_file))] {
        let out = verify_offline(&vkey, p, "1.3.0", "left-pad-1.3.0.tgz", &art);
        ok(&out);
        assert!(stdout(&out).starts_with("ok: pkg:npm/left-pad 1.3.0 left-pad-1.3.0.tgz"));
    }

    // Installer, online; the verified checkpoint is kept in the state directory.
    ok(&log.verify_online(&state, "1.3.0", "left-pad-1.3.0.tgz", &art));
    let stored = std::fs::read_dir(&state)
        .expect("state dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "checkpoint"))
        .count();
    assert_eq!(stored, 1);

    // Refusals, offline and online: each names what differs.
    let tampered = write(work.path(), "tampered.tgz", "left-pad 1.3.0 bytes!");
    let sha_differs = "the file is not the one that was published";
    for (version, file, artifact, offline_says, online_says) in [
        (
            "1.3.0",
            "left-pad-1.3.0.tgz",
            &tampered,
            sha_differs,
            sha_differs,
        ),
        (
            "1.3.1",
            "left-pad-1.3.0.tgz",
            &art,
            "logged version is \"1.3.0\", expected \"1.3.1\"",
            "not logged",
        ),
        (
            "1.3.0",
            "left-pad.tgz",
            &art,
            "logged file is \"left-pad-1.3.0.tgz\", expected \"left-pad.tgz\"",
            "not logged",
        ),
    ] {
        refused(
            &verify_offline(&log.vkey, &proof, version, file, artifact),
            1,
            offline_says,
        );
        refused(
            &log.verify_online(&state, version, file, artifact),
            1,
            online_says,
        );
    }

    // A proof checked with another log's key (same origin, other key).
    let other_key = keys::generate("test.example/log")
        .expect("key")
        .verifier()
        .vkey();
    refused(
        &verify_offline(&other_key, &proof, "1.3.0", "left-pad-1.3.0.tgz", &art),
        1,
        "a proof from another log, or the wrong --vkey",
    );

    // A forged index and a truncated proof (of the tree of two entries).
    let text = std::fs::read_to_string(&proved).expect("proof");
    let forged = write(
        work.path(),
        "forged",
        &text.replace("\nindex 0\n", "\nindex 1\n"),
    );
    refused(
        &verify_offline(&log.vkey, &forged, "1.3.0", "left-pad-1.3.0.tgz", &art),
        1,
        "inclusion proof does not match the checkpoint",
    );
    let truncated = write(work.path(), "truncated", &text[..text.len() / 2]);
    refused(
        &verify_offline(&log.vkey, &truncated, "1.3.0", "left-pad-1.3.0.tgz", &art),
        1,
        "verification failed",
    );

    // Usage errors exit 2; every subcommand documents the exit codes.
    refused(
        &btlog(&["verify", "--vkey", &log.vkey, "--package", PKG]),
        2,
        "required",
    );
    for cmd in ["submit", "get", "prove", "verify"] {
        assert!(stdout(&btlog(&[cmd, "--help"])).contains("Exit codes:"));
    }
}

#[test]
fn batch_submit_and_log_down() {
    let mut log = Log::start(None);
    let work = TempDir::new().expect("tempdir");
    // A --proof-dir that does not exist yet is created before anything is sent.
    let proofs = work.path().join("proofs").join("new");
    let line = |v: &str, sha: &str| {
        format!(
            r#"{{"kind":"publish","package":"{PKG}","version":"{v}","file":"left-pad-{v}.tgz","sha256":"{sha}"}}"#
        )
    };
    let digest = crate::server::digest("v2");
    let batch = write(
        work.path(),
        "batch.jsonl",
        &format!(
            "{}\n\n{}\n{}\n",
            line("2.0.0", &digest),
            line("2.0.1", &crate::server::digest("v2.0.1")),
            line("2.0.2", &crate::server::digest("v2.0.2"))
        ),
    );
    let out = log.submit(&[
        "--batch",
        &path(&batch),
        "--proof-dir",
        &path(&proofs),
        "--vkey",
        &log.vkey,
    ]);
    ok(&out);
    assert_eq!(stdout(&out).lines().count(), 3);
    assert!(stdout(&out).contains("2 new pkg:npm/left-pad 2.0.2 left-pad-2.0.2.tgz "));
    let art = write(work.path(), "a.tgz", "v2");
    ok(&verify_offline(
        &log.vkey,
        &proofs.join("left-pad-2.0.0.tgz.tlog-proof"),
        "2.0.0",
        "left-pad-2.0.0.tgz",
        &art,
    ));

    // One conflicting line: the rest is logged, the exit code is 5.
    let mixed = write(
        work.path(),
        "mixed.jsonl",
        &format!(
            "{}\n{}\n",
            line("2.0.0", &"cd".repeat(32)),
            line("2.0.3", &digest)
        ),
    );
    let out = log.submit(&["--batch", &path(&mixed)]);
    refused(&out, 5, "1 entry conflict");
    assert!(stdout(&out).contains("3 new "));

    // A malformed line refuses the whole batch before anything is sent.
    let bad = write(
        work.path(),
        "bad.jsonl",
        &format!("{}\n{}\n", line("2.0.4", &digest), line("2.0.5", "nothex")),
    );
    refused(
        &log.submit(&["--batch", &path(&bad)]),
        2,
        "bad.jsonl line 2",
    );
    refused(
        &btlog(&["get", "--log", &log.url, "--index", "4"]),
        1,
        "no entry 4",
    );

    // Log down: fail closed, exit 3.
    log.stop();
    let state = work.path().join("state");
    refused(
        &log.verify_online(&state, "2.0.0", "left-pad-2.0.0.tgz", &art),
        3,
        "log unavailable",
    );
    refused(
        &log.submit(&["--batch", &path(&batch)]),
        3,
        "log unavailable",
    );
}

/// A work directory with a log key file (for logs of one key and different histories), a
/// state directory, and two artifacts.
pub(crate) struct Forks {
    pub(crate) work: TempDir,
    pub(crate) key: PathBuf,
    pub(crate) state: PathBuf,
    pub(crate) art: PathBuf,
    pub(crate) fork_art: PathBuf,
}

pub(crate) fn forks() -> Forks {
    let work = TempDir::new().expect("tempdir");
    let key = work.path().join("log.key");
    btlog_client::keyfile::write_private_key(
        &key,
        &keys::generate("test.example/log").expect("key"),
    )
    .expect("write key");
    Forks {
        key,
        state: work.path().join("state"),
        art: write(work.path(), "x.tgz", "x bytes"),
        fork_art: write(work.path(), "y.tgz", "y bytes"),
        work,
    }
}

/// Asserts exit 4 with the evidence that the tree of size 4 verified before is not a prefix of
/// the served tree of size 5: both checkpoints, and the root the larger tree has at size 4.
#[track_caller]
pub(crate) fn refused_as_fork_of_4_in_5(out: &Output) {
    refused(out, 4, "tree size 4 is not a prefix of tree size 5");
    assert!(stderr(out).contains("checkpoint verified before:\ntest.example/log\n4\n"));
    assert!(stderr(out).contains("checkpoint served now:\ntest.example/log\n5\n"));
    assert!(stderr(out).contains("root of the larger tree at the smaller size: "));
}

#[test]
fn rolled_back_or_forked_log_is_refused() {
    let Forks {
        work: _work,
        key,
        state,
        art,
        fork_art,
    } = forks();

    // The honest log: three entries, verified online; then it grows and still verifies.
    let a = Log::start(Some(&key));
    for v in ["1", "2", "3"] {
        ok(&publish(&a, v, &format!("x-{v}.tgz"), &art));
    }
    ok(&a.verify_online(&state, "1", "x-1.tgz", &art));
    ok(&publish(&a, "4", "x-4.tgz", &art));
    ok(&a.verify_online(&state, "2", "x-2.tgz", &art));
    drop(a);

    // Same key, shorter history: it cannot prove its tree is a prefix of the one seen before,
    // but nothing signed shows a fork (the tree of size 4 is gone): refused, exit 3, not 4.
    let b = Log::start(Some(&key));
    ok(&publish(&b, "1", "x-1.tgz", &fork_art));
    let out = b.verify_online(&state, "1", "x-1.tgz", &fork_art);
    refused(&out, 3, "rolled back?");
    refused(&out, 3, "cannot verify the log's consistency");
    drop(b);

    // Same key, a different and longer history: its own hash tiles show the fork, exit 4 with
    // both checkpoints and the root its tree has at size 4, with a consistency proof.
    let c = Log::start(Some(&key));
    for v in ["1", "2", "3", "4", "5"] {
        ok(&publish(&c, v, &format!("x-{v}.tgz"), &fork_art));
    }
    let out = c.verify_online(&state, "5", "x-5.tgz", &fork_art);
    refused_as_fork_of_4_in_5(&out);
    drop(c);

    // Same key, same size, another root.
    let d = Log::start(Some(&key));
    for v in ["1", "2", "3", "4"] {
        ok(&publish(&d, v, &format!("x-{v}.tgz"), &fork_art));
    }
    let out = d.verify_online(&state, "4", "x-4.tgz", &fork_art);
    refused(&out, 4, "two checkpoints of size 4 with different roots");
}

#[test]
fn outputs_and_token_are_checked_before_anything_is_sent() {
    let log = Log::start(None);
    let work = TempDir::new().expect("tempdir");
    let art = write(work.path(), "a.tgz", "a bytes");
    let art_path = path(&art);
    let single = |extra: &[&str]| {
        let mut args = vec!["--package", PKG, "--version", "9.0.0", "--file", "a.tgz"];
        args.extend_from_slice(&["--artifact", &art_path]);
        args.extend_from_slice(extra);
        log.submit(&args)
    };
    // A proof directory that cannot be made (its parent is a file): refused, nothing logged.
    let unwritable = art.join("proofs");
    let out = single(&["--proof-dir", &path(&unwritable), "--vkey", &log.vkey]);
    refused(&out, 2, "proof directory");
    let out = single(&[]);
    ok(&out);
    assert!(stdout(&out).starts_with("0 new "), "{}", stdout(&out));

    // The token from BTLOG_TOKEN or --token-file rather than the command line (`ps`).
    let submit = |token: (&str, &str), version: &str, file: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_btlog"));
        cmd.args([
            "submit",
            "--log",
            &log.url,
            "--package",
            PKG,
            "--version",
            version,
        ])
        .args(["--file", file, "--sha256", &"ab".repeat(32)]);
        match token {
            ("env", t) => cmd.env("BTLOG_TOKEN", t),
            (_, f) => cmd.args(["--token-file", f]).env_remove("BTLOG_TOKEN"),
        };
        cmd.output().expect("run btlog")
    };
    ok(&submit(("env", &log.token), "9.0.1", "b.tgz"));
    let file = write(work.path(), "token", &format!("{}\n", log.token));
    ok(&submit(("file", &path(&file)), "9.0.2", "c.tgz"));
    let wrong = write(work.path(), "wrong", "btlog_nope\n");
    refused(
        &submit(("file", &path(&wrong)), "9.0.3", "d.tgz"),
        2,
        "unknown bearer token",
    );
    refused(
        &submit(("file", "/nonexistent/token"), "9.0.3", "d.tgz"),
        2,
        "--token-file",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_btlog"))
        .args(["submit", "--help"])
        .env("BTLOG_TOKEN", &log.token)
        .output()
        .expect("help");
    assert!(!stdout(&out).contains(&log.token), "--help shows no token");
}

/// What a [`consistency_proxy`] answers to `/v1/proof/consistency`.
#[derive(Clone, Copy)]
enum Proof {
    /// 404, as a log that no longer has the tree.
    Missing,
    /// 200 with a proof that does not verify.
    Bad,
}

/// A proxy in front of `log` (on its runtime) that answers consistency proof requests itself
/// with `proof` and forwards every other GET.
fn consistency_proxy(log: &Log, proof: Proof) -> String {
    use axum::http::StatusCode;
    let answer = move |uri: &Uri| {
        if uri.path() != "/v1/proof/consistency" {
            return None;
        }
        let q = uri.query().unwrap_or("");
        let arg = |k: &str| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(match proof {
            Proof::Missing => (
                StatusCode::NOT_FOUND,
                r#"{"error":"no such tree size"}"#.into(),
            ),
            Proof::Bad => (
                StatusCode::OK,
                serde_json::json!({
                    "from": arg("from"),
                    "to": arg("to"),
                    "proof": [base64_hash(&[7u8; 32])],
                })
                .to_string()
                .into(),
            ),
        })
    };
    proxy(log, answer, |_, _| {})
}

/// A proxy in front of `log` (on its runtime): `answer` may answer a GET itself; every other
/// GET is forwarded, and `edit` may change the body of a successful reply.
pub(crate) fn proxy(
    log: &Log,
    answer: impl Fn(&Uri) -> Option<(StatusCode, Vec<u8>)> + Send + Sync + 'static,
    edit: impl Fn(&Uri, &mut Vec<u8>) + Send + Sync + 'static,
) -> String {
    let upstream = log.url.clone();
    let hooks = std::sync::Arc::new((answer, edit));
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let (upstream, hooks) = (upstream.clone(), hooks.clone());
        async move {
            if let Some(reply) = (hooks.0)(&uri) {
                return reply;
            }
            let Ok(resp) = reqwest::get(format!("{upstream}{uri}")).await else {
                return (StatusCode::BAD_GATEWAY, Vec::new());
            };
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::OK);
            let mut body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
            if status.is_success() {
                (hooks.1)(&uri, &mut body);
            }
            (status, body)
        }
    });
    let listener = log
        .rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    log.rt
        .spawn(async move { axum::serve(listener, app).await });
    url
}

fn base64_hash(h: &[u8; 32]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(h)
}

/// Issue #13 item 12: a log that does not prove a new checkpoint consistent with the one
/// verified before (no proof, or a bad one) is refused, but as exit 3: nothing signed shows a
/// fork. Exit 4 needs signed evidence (see `rolled_back_or_forked_log_is_refused`).
#[test]
fn a_missing_or_bad_consistency_proof_is_refused_without_claiming_a_fork() {
    let log = Log::start(None);
    let work = TempDir::new().expect("tempdir");
    let state = work.path().join("state");
    let art = write(work.path(), "x.tgz", "x bytes");
    for v in ["1", "2"] {
        ok(&publish(&log, v, &format!("x-{v}.tgz"), &art));
    }
    ok(&log.verify_online(&state, "1", "x-1.tgz", &art));
    ok(&publish(&log, "3", "x-3.tgz", &art));
    for (proof, says) in [
        (Proof::Missing, "does not serve a consistency proof"),
        (Proof::Bad, "its consistency proof does not verify"),
    ] {
        let url = consistency_proxy(&log, proof);
        let source = ["--log", url.as_str(), "--state", &path(&state)];
        let out = verify(&source, &log.vkey, "3", "x-3.tgz", &art);
        refused(&out, 3, says);
        refused(&out, 3, "refusing to trust this log");
        assert!(
            !stderr(&out).contains("inconsistent log"),
            "{}",
            stderr(&out)
        );
    }
    // The state did not move; the log itself proves consistency.
    ok(&log.verify_online(&state, "3", "x-3.tgz", &art));
}
