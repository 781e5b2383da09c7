//! The web explorer and its Atom feeds over real HTTP: pages, search by every purl form and by
//! sha256, pagination, bad input (always 4xx, never reflected), the Atom feed parsed by a real
//! feed parser (`feed-rs`), and the pages in headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs) with JavaScript on and off, with a screenshot of each page.

use crate::server::*;
use serde_json::{json, Value};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
const SCOPED: &str = "pkg:npm/%40scope/x";

struct Site {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Site {
    fn new(addr: SocketAddr, token: &str) -> Site {
        Site {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: format!("http://{addr}"),
            token: token.to_owned(),
        }
    }

    async fn submit(&self, entries: Vec<Value>) -> Value {
        submit_entries(&self.base, &self.token, entries).await
    }

    /// GET `path` (sent as written): status, headers, body.
    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    async fn location(&self, path: &str) -> String {
        let (status, headers, _) = self.get(path).await;
        assert_eq!(status, 303, "{path}");
        headers["location"].to_str().expect("ascii").to_owned()
    }
}

fn event(kind: &str, package: &str, version: &str, publisher: Option<&str>) -> Value {
    let owner = kind.starts_with("owner");
    let mut e = json!({
        "kind": kind,
        "package": package,
        "version": if owner { "-".to_owned() } else { version.to_owned() },
        "file": if owner { "-".to_owned() } else { format!("x-{version}.tgz") },
        "sha256": digest(&format!("{package} {version}")),
        "time": "2025-01-02T03:04:05Z",
    });
    if let Some(p) = publisher {
        e["publisher"] = json!(p);
    }
    e
}

/// A log with a scoped npm package (publishes by two publishers, a yank and an owner change)
/// and left-pad.
async fn populated(dir: &Path) -> (btlog_server::api::Server, Site) {
    let token = add_token(dir);
    let srv = start(&config(dir)).await;
    let site = Site::new(srv.http_addr(), &token);
    site.submit(vec![
        event("publish", SCOPED, "1.0.0", Some("ci")),
        event("publish", SCOPED, "1.1.0", Some("ci")),
        event("publish", "pkg:npm/left-pad", "1.3.0", None),
        event("publish", SCOPED, "1.2.0", Some("stolen-laptop")),
        event("yank", SCOPED, "1.0.0", None),
        event("owner-add", SCOPED, "-", None),
    ])
    .await;
    (srv, site)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_pages_search_and_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, site) = populated(dir.path()).await;

    let (status, headers, body) = site.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-security-policy"], CSP);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        body.contains("test.example/log") && body.contains(">6<"),
        "{body}"
    );
    assert!(
        !body.contains("style=") && !body.contains("<script>"),
        "inline code breaks the CSP"
    );
    for asset in ["/explorer.js", "/explorer.css"] {
        let (status, headers, _) = site.get(asset).await;
        assert_eq!(status, 200, "{asset}");
        assert_eq!(headers["content-security-policy"], CSP);
    }

    // Every way people write the purl lands on the same package page.
    let package_page = "/package?purl=pkg%3Anpm%2F%2540scope%2Fx";
    for typed in [
        "pkg:npm/@scope/x",
        "pkg%3Anpm%2F%40scope%2Fx",
        "pkg:npm/%2540scope/x",
        "npm/@scope/x",
        "npm%2F%40scope%2Fx%401.2.0",
        "pkg:NPM/%2540scope/x?foo=bar",
    ] {
        assert_eq!(
            site.location(&format!("/search?q={typed}")).await,
            package_page,
            "{typed}"
        );
    }
    assert_eq!(
        site.location("/search?q=npm/left-pad").await,
        "/package?purl=pkg%3Anpm%2Fleft-pad"
    );
    // By artifact sha256 (either case) and by leaf hash: the entry page.
    let sha = digest(&format!("{SCOPED} 1.2.0"));
    assert_eq!(
        site.location(&format!("/search?q={sha}")).await,
        "/entry?index=3"
    );
    let upper = sha.to_uppercase();
    assert_eq!(
        site.location(&format!("/search?q={upper}")).await,
        "/entry?index=3"
    );
    // The yank names the same digest as the publish of 1.0.0: both are listed.
    let (status, _, body) = site
        .get(&format!("/search?q={}", digest(&format!("{SCOPED} 1.0.0"))))
        .await;
    assert_eq!(status, 200);
    assert!(
        body.contains("/entry?index=0") && body.contains("/entry?index=4"),
        "{body}"
    );
    let leaf = srv
        .log()
        .inclusion_proof(btlog_server::log::Leaf::Index(2), None)
        .await
        .expect("proof")
        .leaf_hash;
    assert_eq!(
        site.location(&format!("/search?q={}", hex::encode(leaf)))
            .await,
        "/entry?index=2"
    );
    assert_eq!(site.location("/search?q=5").await, "/entry?index=5");
    let (status, _, _) = site.get(&format!("/search?q={}", digest("nothing"))).await;
    assert_eq!(status, 404);

    // The package page: every event in log order, the suspicious ones marked.
    let (status, headers, body) = site.get(package_page).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-security-policy"], CSP);
    for needle in [
        "1.0.0",
        "1.1.0",
        "1.2.0",
        "kind-yank",
        "kind-owner-add",
        "stolen-laptop",
        "2025-01-02T03:04:05Z",
    ] {
        assert!(body.contains(needle), "{needle} missing");
    }
    assert!(
        !body.contains("/entry?index=2\""),
        "another package's event listed"
    );
    assert_eq!(body.matches("<tr class=\"marked\">").count(), 2, "{body}");
    assert!(body.contains(">new publisher<") && body.contains(">owner change<"));
    assert!(body.contains("href=\"/feed?package=pkg%3Anpm%2F%2540scope%2Fx\""));

    // The entry page: text, leaf hash, proof, the check's placeholder and the command.
    let (status, _, body) = site.get("/entry?index=3").await;
    assert_eq!(status, 200);
    assert!(body.contains("id=\"proof-status\""));
    assert!(body.contains("<noscript>"));
    assert!(body.contains("btlog verify --log"), "{body}");
    assert!(
        body.contains(&format!("--package &#39;{SCOPED}&#39;")),
        "{body}"
    );
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_bad_input_is_a_4xx_page_that_reflects_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, site) = populated(dir.path()).await;
    let huge = "a".repeat(10 * 1024);
    let cases: Vec<(String, u16)> = vec![
        (format!("/search?q={huge}"), 414),
        (format!("/package?purl=pkg:npm/{huge}"), 414),
        (format!("/feed?package=pkg:npm/{huge}"), 414),
        ("/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(), 400),
        (
            "/search?q=npm/%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            303,
        ),
        (
            "/package?purl=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            400,
        ),
        (
            "/package?purl=npm%2F%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            404,
        ),
        (
            "/entry?index=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            400,
        ),
        (
            "/feed?prefix=%3Cscript%3Ealert(1)%3C%2Fscript%3E".into(),
            400,
        ),
        ("/search?q=%ff%fe".into(), 400),
        ("/search?q=%zz".into(), 400),
        ("/search?q=%4".into(), 400),
        ("/search?q=".into(), 400),
        ("/search?q=1&q=2".into(), 400),
        ("/search?x=1".into(), 400),
        ("/package".into(), 400),
        ("/package?purl=pkg:npm".into(), 400),
        ("/package?purl=pkg:npm/x&limit=0".into(), 400),
        ("/package?purl=pkg:npm/x&limit=501".into(), 400),
        (
            "/package?purl=pkg:npm/x&limit=99999999999999999999999".into(),
            400,
        ),
        (
            "/package?purl=pkg:npm/x&from=18446744073709551616".into(),
            400,
        ),
        ("/package?purl=pkg:npm/x&from=-1".into(), 400),
        (
            format!("/package?purl={SCOPED}&from=18446744073709551615"),
            200,
        ),
        ("/entry?index=18446744073709551615".into(), 404),
        ("/entry?index=".into(), 400),
        ("/feed".into(), 400),
        ("/feed?package=pkg:npm/x&prefix=pkg:npm".into(), 400),
        ("/feed?package=pkg:npm".into(), 400),
        ("/?q=1".into(), 400),
    ];
    for (path, want) in cases {
        let (status, headers, body) = site.get(&path).await;
        assert_eq!(status, want, "{path}: {body}");
        assert!(!body.contains("<script>alert"), "{path} reflected markup");
        assert!(!body.contains(&huge[..200]), "{path} reflected the input");
        if status >= 400 {
            assert_eq!(
                headers["content-type"], "text/html; charset=utf-8",
                "{path}"
            );
            assert_eq!(headers["content-security-policy"], CSP, "{path}");
        }
    }
    // Bytes no client would encode, sent raw: hyper or the explorer refuses them, with a 4xx.
    for raw in [
        &b"/search?q=\xff\xfe"[..],
        b"/search?q=<script>",
        b"/search?q=a%00b",
    ] {
        let status = raw_get(srv.http_addr(), raw);
        assert!(
            (400..500).contains(&status),
            "{:?}: {status}",
            String::from_utf8_lossy(raw)
        );
    }
    srv.shutdown().await.expect("shutdown");
}

/// Sends a GET with `target` as raw bytes on the request line; the response status.
fn raw_get(addr: SocketAddr, target: &[u8]) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = b"GET ".to_vec();
    req.extend_from_slice(target);
    req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&req).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head = String::from_utf8_lossy(&out);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_paginates_a_long_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let srv = start(&config(dir.path())).await;
    let site = Site::new(srv.http_addr(), &token);
    let versions: Vec<Value> = (0..250)
        .map(|i| event("publish", "pkg:cargo/big", &format!("0.{i}.0"), Some("ci")))
        .collect();
    site.submit(versions).await;
    let mut path = "/package?purl=pkg:cargo/big&limit=100".to_owned();
    let mut rows = Vec::new();
    loop {
        let (status, _, body) = site.get(&path).await;
        assert_eq!(status, 200, "{path}");
        let page: Vec<String> = body
            .split("<tr><td><a href=\"/entry?index=")
            .skip(1)
            .map(|r| r.split('"').next().expect("index").to_owned())
            .collect();
        assert!(page.len() <= 100);
        rows.extend(page);
        match body.split("id=\"next-page\" rel=\"next\" href=\"").nth(1) {
            Some(rest) => path = rest.split('"').next().expect("href").replace("&amp;", "&"),
            None => break,
        }
    }
    let want: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    assert_eq!(rows, want);
    srv.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_atom_feed_parses_and_lists_a_new_event_at_the_next_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, site) = populated(dir.path()).await;
    let parse = |body: &str| feed_rs::parser::parse(body.as_bytes()).expect("valid Atom");

    let feed_path = "/feed?package=pkg:npm/%2540scope/x";
    let (status, headers, body) = site.get(feed_path).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "application/atom+xml; charset=utf-8"
    );
    assert_eq!(headers["content-security-policy"], CSP);
    let feed = parse(&body);
    assert_eq!(feed.feed_type, feed_rs::model::FeedType::Atom);
    assert!(feed.title.expect("title").content.contains(SCOPED));
    assert_eq!(feed.entries.len(), 5);
    let newest = &feed.entries[0];
    assert!(newest
        .title
        .as_ref()
        .expect("title")
        .content
        .contains("owner-add"));
    assert!(newest.links[0].href.ends_with("/entry?index=5"));
    let marked = feed
        .entries
        .iter()
        .find(|e| {
            e.title
                .as_ref()
                .is_some_and(|t| t.content.contains("1.2.0"))
        })
        .expect("1.2.0 listed");
    assert!(marked
        .title
        .as_ref()
        .expect("title")
        .content
        .starts_with("[new publisher]"));

    // A publish the maintainer did not make: in the feed once its checkpoint is served.
    let reply = site
        .submit(vec![event("publish", SCOPED, "6.6.6", Some("attacker"))])
        .await;
    let index = reply["results"][0]["index"].as_u64().expect("index");
    let (size, _) = verify_checkpoint(
        reply["checkpoint"].as_str().expect("note"),
        srv.log().verifier(),
    );
    assert!(index < size, "the reply's checkpoint covers the entry");
    let feed = parse(&site.get(feed_path).await.2);
    assert_eq!(feed.entries.len(), 6);
    let title = &feed.entries[0].title.as_ref().expect("title").content;
    assert!(
        title.contains("6.6.6") && title.contains("attacker") && title.contains("[new publisher]"),
        "{title}"
    );
    assert!(feed.entries[0].updated.is_some());

    // By prefix: every package under it, whole segments only.
    site.submit(vec![event(
        "publish",
        "pkg:npm/%40scope-evil/y",
        "1.0.0",
        None,
    )])
    .await;
    for (prefix, want) in [("pkg:npm/%2540scope", 6), ("npm/@scope", 6), ("pkg:npm", 8)] {
        let (status, _, body) = site.get(&format!("/feed?prefix={prefix}")).await;
        assert_eq!(status, 200, "{prefix}");
        assert_eq!(parse(&body).entries.len(), want, "{prefix}");
    }
    srv.shutdown().await.expect("shutdown");
}

/// Debian's Chromium; the browser tests fail (not skip) without it: `.ci/run` installs it.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Runs headless Chromium on `url` with `extra` flags, JavaScript on or off; its stdout.
async fn chromium(url: &str, js: bool, extra: &[String]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the explorer's browser tests need Debian's chromium package \
         (apt-get install chromium; .ci/run installs it)"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    if !js {
        // The content setting, as a user turning JavaScript off sets it (the
        // `scriptEnabled=false` Blink setting also stops headless screenshots).
        let prefs = profile.path().join("Default");
        std::fs::create_dir_all(&prefs).expect("profile");
        std::fs::write(
            prefs.join("Preferences"),
            r#"{"profile":{"default_content_setting_values":{"javascript":2}}}"#,
        )
        .expect("preferences");
    }
    let mut cmd = tokio::process::Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--window-size=1200,1600",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true)
    .stdin(std::process::Stdio::null())
    .stderr(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium finished in time")
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DOM after scripts ran, and a screenshot saved as `name`.png.
async fn browse(url: &str, name: &str, js: bool, shots: &Path) -> String {
    let png = shots.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&png);
    chromium(url, js, &[format!("--screenshot={}", png.display())]).await;
    assert!(
        png.metadata().is_ok_and(|m| m.len() > 1000),
        "no screenshot {}",
        png.display()
    );
    chromium(url, js, &["--dump-dom".to_owned()]).await
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explorer_in_headless_chromium_with_and_without_javascript() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (srv, site) = populated(dir.path()).await;
    let shots = screenshot_dir();
    let base = &site.base;

    for js in [true, false] {
        let suffix = if js { "" } else { "-nojs" };
        let home = browse(&format!("{base}/"), &format!("home{suffix}"), js, &shots).await;
        assert!(home.contains("test.example/log") && home.contains("Latest entries"));

        // Search as the form submits it: the package page, every event listed.
        let history = browse(
            &format!("{base}/search?q=npm%2F%40scope%2Fx"),
            &format!("package{suffix}"),
            js,
            &shots,
        )
        .await;
        for needle in [
            "1.0.0",
            "1.1.0",
            "1.2.0",
            "stolen-laptop",
            "new publisher",
            "owner change",
        ] {
            assert!(history.contains(needle), "{needle} not on the package page");
        }

        let entry = browse(
            &format!("{base}/entry?index=3"),
            &format!("entry{suffix}"),
            js,
            &shots,
        )
        .await;
        let status = entry
            .split("id=\"proof-status\"")
            .nth(1)
            .and_then(|s| s.split("</p>").next())
            .expect("proof status element");
        if js {
            assert!(status.contains("verified: entry 3"), "{status}");
            assert!(!status.contains("FAILED"), "{status}");
        } else {
            assert!(status.contains("needs JavaScript"), "{status}");
            assert!(entry.contains("Checking the proof in the page needs JavaScript"));
            assert!(entry.contains("btlog verify --log"));
        }
    }
    eprintln!("explorer screenshots: {}", shots.display());
    srv.shutdown().await.expect("shutdown");
}
