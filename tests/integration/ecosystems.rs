//! `btlog import` and `btlog audit` with real crates.io index files
//! (`crates/core/tests/vectors/ecosystems/`) against a real server: the import logs every
//! version and yank once (a re-run adds nothing), and a Cargo.lock audit proves what is pinned,
//! names a changed checksum with both digests, a yanked version and an unlogged crate.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vectors() -> PathBuf {
    crate::common::package_dir().join("crates/core/tests/vectors/ecosystems/crates.io")
}

/// A log server in a temporary directory, and a token for it.
async fn log() -> (tempfile::TempDir, btlog_server::api::Server, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = crate::server::add_token(dir.path());
    let server = crate::server::start(&crate::server::config(dir.path())).await;
    (dir, server, token)
}

/// Writes `contents` as `name` in `dir` and audits it online (state in `dir/state`).
fn audit_file(dir: &Path, name: &str, contents: &str, url: &str, vkey: &str) -> Output {
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("lockfile");
    let state = dir.join("state");
    let args = [
        "audit",
        path.to_str().expect("utf-8"),
        "--log",
        url,
        "--vkey",
        vkey,
    ];
    btlog(
        &[&args[..], &["--state", state.to_str().expect("utf-8")]].concat(),
        "",
    )
}

fn btlog(args: &[&str], token: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_btlog"))
        .args(args)
        .env("BTLOG_TOKEN", token)
        .output()
        .expect("run btlog")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lock(dir: &Path, name: &str, packages: &[(&str, &str, &str)]) -> String {
    let mut t = String::from("version = 4\n\n[[package]]\nname = \"local\"\nversion = \"0.1.0\"\n");
    for (n, v, sum) in packages {
        t.push_str(&format!(
            "\n[[package]]\nname = \"{n}\"\nversion = \"{v}\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{sum}\"\n"
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, t).expect("lockfile");
    path.to_str().expect("utf-8").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_a_registry_index_then_audit_a_lockfile() {
    let (dir, server, token) = log().await;
    let url = format!("http://{}", server.http_addr());
    let vkey = server.log().verifier().vkey();
    let (itoa, hex) = (vectors().join("itoa"), vectors().join("hex"));
    let (itoa, hex) = (itoa.to_str().expect("utf-8"), hex.to_str().expect("utf-8"));
    let import = [
        "import",
        "--log",
        &url,
        "--crates-index",
        itoa,
        "--crates-index",
        hex,
    ];

    let out = btlog(&import, &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("itoa: 38 new, 0 already logged, 0 conflicts"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("hex: 10 new"),
        "9 publishes and a yank: {}",
        text(&out)
    );
    // Resumable and idempotent: nothing is logged twice, the yank included.
    let out = btlog(&import, &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("itoa: 0 new, 38 already logged"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("hex: 0 new, 9 already logged"),
        "{}",
        text(&out)
    );
    // A registry's publish hook: `btlog submit` takes the same files.
    let out = btlog(&["submit", "--log", &url, "--crates-index", itoa], &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("itoa: 0 new, 38 already logged"),
        "{}",
        text(&out)
    );

    let state = dir.path().join("state");
    let state = state.to_str().expect("utf-8");
    let audit = |lockfile: &str| {
        btlog(
            &[
                "audit", lockfile, "--log", &url, "--vkey", &vkey, "--state", state,
            ],
            "",
        )
    };
    let itoa_sum = "8f42a60cbdf9a97f5d2305f08a87dc4e09308d1276d28c869c684d7777685682";
    let hex_sum = "7f24254aa9a54b5c858eaee2f5bccdb46aaf0e486a595ed5fd8f86ba55232a70";
    let good = lock(
        dir.path(),
        "good.lock",
        &[("itoa", "1.0.18", itoa_sum), ("hex", "0.4.3", hex_sum)],
    );
    let out = audit(&good);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).lines().filter(|l| l.starts_with("ok ")).count(),
        2,
        "{}",
        text(&out)
    );

    // Offline, against proofs kept next to the artifacts.
    let proofs = dir.path().join("proofs");
    std::fs::create_dir(&proofs).expect("mkdir");
    for (name, version) in [("itoa", "1.0.18"), ("hex", "0.4.3")] {
        let file = format!("{name}-{version}.crate");
        let reply: serde_json::Value = reqwest::get(format!(
            "{url}/v1/lookup?package=pkg:cargo/{name}&version={version}&file={file}"
        ))
        .await
        .expect("lookup")
        .json()
        .await
        .expect("json");
        std::fs::write(
            proofs.join(format!("{file}.tlog-proof")),
            reply["proof"].as_str().expect("proof"),
        )
        .expect("proof file");
    }
    let offline = |lockfile: &str| {
        btlog(
            &[
                "audit",
                lockfile,
                "--offline",
                proofs.to_str().expect("utf-8"),
                "--vkey",
                &vkey,
            ],
            "",
        )
    };
    let out = offline(&good);
    assert!(out.status.success(), "{}", text(&out));

    let changed = "00".repeat(32);
    let bad = lock(
        dir.path(),
        "bad.lock",
        &[("itoa", "1.0.18", &changed), ("hex", "0.4.3", hex_sum)],
    );
    let out = audit(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "itoa 1.0.18: the lockfile pins sha256 {changed}, the log has {itoa_sum}"
        )),
        "{}",
        text(&out)
    );

    let out = offline(&bad);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("DIGEST      itoa 1.0.18"),
        "{}",
        text(&out)
    );

    let yanked_sum = std::fs::read_to_string(vectors().join("hex"))
        .expect("hex")
        .lines()
        .find(|l| l.contains("\"vers\": \"0.4.1\""))
        .and_then(|l| l.split("\"cksum\": \"").nth(1))
        .map(|s| s[..64].to_owned())
        .expect("0.4.1 checksum");
    let withdrawn = lock(
        dir.path(),
        "yanked.lock",
        &[
            ("hex", "0.4.1", &yanked_sum),
            ("serde", "1.0.0", &"ab".repeat(32)),
        ],
    );
    let out = audit(&withdrawn);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("WITHDRAWN   hex 0.4.1"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("then yank"), "{}", text(&out));
    assert!(
        text(&out).contains("NOT LOGGED  serde 1.0.0"),
        "{}",
        text(&out)
    );

    let out = btlog(
        &[
            "audit", &withdrawn, "--json", "--log", &url, "--vkey", &vkey, "--state", state,
        ],
        "",
    );
    let statuses: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["status"]
                .as_str()
                .expect("status")
                .to_owned()
        })
        .collect();
    assert_eq!(statuses, ["yank", "not-logged"]);
    server.shutdown().await.expect("shutdown");
}

/// The sha256 digests PyPI lists for `version` of attrs (vector file).
fn attrs_hashes(version: &str) -> Vec<String> {
    let path = vectors().join("../pypi/attrs.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("attrs.json")).expect("json");
    doc["releases"][version]
        .as_array()
        .expect("release")
        .iter()
        .map(|f| f["digests"]["sha256"].as_str().expect("sha256").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_a_pypi_project_then_audit_requirements_with_hashes() {
    let (dir, server, token) = log().await;
    let url = format!("http://{}", server.http_addr());
    let vkey = server.log().verifier().vkey();
    let attrs = vectors().join("../pypi/attrs.json");
    let attrs = attrs.to_str().expect("utf-8");
    let out = btlog(&["import", "--log", &url, "--pypi-project", attrs], &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(": 74 new, 0 already logged"),
        "72 files and 2 yanks: {}",
        text(&out)
    );
    let out = btlog(&["import", "--log", &url, "--pypi-project", attrs], &token);
    assert!(
        text(&out).contains(": 0 new, 72 already logged"),
        "{}",
        text(&out)
    );

    let hashes = |v: &str| {
        attrs_hashes(v)
            .iter()
            .map(|h| format!(" \\\n    --hash=sha256:{h}"))
            .collect::<String>()
    };
    let reqs = format!(
        "# pinned\nattrs==23.1.0{}\n\nattrs==21.1.0{}\nattrs==22.1.0 --hash=sha256:{}\nsix==1.0.0 --hash=sha256:{}\nrequests\n",
        hashes("23.1.0"),
        hashes("21.1.0"),
        "00".repeat(32),
        "ab".repeat(32)
    );
    // One pinned hash logged and one not: the installer may fetch the unlogged one. An
    // included file is reported, not passed over.
    let reqs = format!(
        "{reqs}-r other.txt\nattrs==20.1.0 --hash=sha256:{} --hash=sha256:{}\n",
        attrs_hashes("20.1.0")[0],
        "ff".repeat(32)
    );
    let out = audit_file(dir.path(), "requirements.txt", &reqs, &url, &vkey);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ok          attrs 23.1.0"), "{t}");
    assert!(t.contains("WITHDRAWN   attrs 21.1.0"), "{t}");
    assert!(
        t.contains("DIGEST      attrs 22.1.0: the lockfile pins sha256 0000"),
        "{t}"
    );
    assert!(
        attrs_hashes("22.1.0")
            .iter()
            .any(|h| t.contains(&format!("the log has {h} for attrs-22.1.0"))),
        "{t}"
    );
    assert!(t.contains("NOT LOGGED  six 1.0.0"), "{t}");
    assert!(
        t.contains("-r other.txt: audit the included file itself"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "attrs 20.1.0: the lockfile pins sha256 {},{}, the log has no file with sha256 {}",
            attrs_hashes("20.1.0")[0],
            "ff".repeat(32),
            "ff".repeat(32)
        )),
        "{t}"
    );

    // The same pins as uv.lock and poetry.lock.
    let files = |v: &str, key: &str| {
        attrs_hashes(v)
            .iter()
            .map(|h| format!("{{ {key} = \"f\", hash = \"sha256:{h}\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let zero = format!("{{ url = \"f\", hash = \"sha256:{}\" }}", "00".repeat(32));
    let uv = format!(
        "version = 1\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = {{ virtual = \".\" }}\n\n\
         [[package]]\nname = \"attrs\"\nversion = \"23.1.0\"\nsource = {{ registry = \"https://pypi.org/simple\" }}\nwheels = [{}]\n\n\
         [[package]]\nname = \"Attrs\"\nversion = \"22.1.0\"\nsdist = {zero}\n",
        files("23.1.0", "url")
    );
    let poetry = format!(
        "[[package]]\nname = \"attrs\"\nversion = \"23.1.0\"\noptional = false\nfiles = [{}]\n\n[metadata]\nlock-version = \"2.0\"\n",
        files("23.1.0", "file")
    );
    for (name, lock, want) in [("uv.lock", uv, 1), ("poetry.lock", poetry, 0)] {
        let out = audit_file(dir.path(), name, &lock, &url, &vkey);
        assert_eq!(out.status.code(), Some(want), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("ok          attrs 23.1.0"),
            "{name}: {}",
            text(&out)
        );
        if want == 1 {
            assert!(
                text(&out).contains("DIGEST      Attrs 22.1.0"),
                "{name}: {}",
                text(&out)
            );
        }
    }
    assert!(
        t.contains("ERROR       requests : requests: not pinned with =="),
        "{t}"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_an_npm_packument_with_tarballs_then_audit_a_package_lock() {
    let (dir, server, token) = log().await;
    let url = format!("http://{}", server.http_addr());
    let vkey = server.log().verifier().vkey();
    let npm = vectors().join("../npm");
    let packument = npm.join("left-pad.json");
    let import = [
        "import",
        "--log",
        &url,
        "--npm-packument",
        packument.to_str().expect("utf-8"),
        "--npm-tarballs",
        npm.to_str().expect("utf-8"),
    ];
    let out = btlog(&import, &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(": 1 new, 0 already logged"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("14 versions skipped"), "{}", text(&out));

    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&packument).expect("packument"))
            .expect("json");
    let integrity = |v: &str| {
        doc["versions"][v]["dist"]["integrity"]
            .as_str()
            .expect("integrity")
            .to_owned()
    };
    let changed = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 64])
    );
    let lock = serde_json::json!({
        "name": "app", "lockfileVersion": 3,
        "packages": {
            "": {"name": "app"},
            "node_modules/left-pad": {"version": "1.3.0", "integrity": integrity("1.3.0")},
            "node_modules/a/node_modules/left-pad": {"version": "1.2.0", "integrity": integrity("1.2.0")},
            "node_modules/b/node_modules/left-pad": {"version": "1.3.0", "integrity": changed},
        }
    });
    let out = audit_file(
        dir.path(),
        "package-lock.json",
        &lock.to_string(),
        &url,
        &vkey,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("ok          left-pad 1.3.0"), "{t}");
    assert!(t.contains("NOT LOGGED  left-pad 1.2.0"), "{t}");
    assert!(
        t.contains("DIGEST      left-pad 1.3.0: the lockfile pins sha512 0707"),
        "{t}"
    );
    server.shutdown().await.expect("shutdown");
}
