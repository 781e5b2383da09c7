//! Property test of the HTTP front end: random paths, queries, methods, headers and bodies go
//! through the real router (`btlog_server::api::http::router`, no socket). None may panic or get a
//! 5xx, and every error carries a one-line reason (the explorer's pages: an HTML page under
//! the explorer's Content-Security-Policy).

use crate::server::*;
use axum::body::Body;
use axum::http::Request;
use btlog_server::log::Log;
use proptest::prelude::*;
use tower::ServiceExt as _;

const PREFIXES: &[&str] = &[
    "/",
    "/checkpoint",
    "/tile/",
    "/tile/0/",
    "/tile/entries/",
    "/tile/0/x001/",
    "/v1/entries",
    "/v1/proof/inclusion",
    "/v1/proof/consistency",
    "/v1/lookup",
    "/v1/packages/",
    "/v1/packages/pkg:npm/",
    "/healthz",
    "/search",
    "/package",
    "/entry",
    "/feed",
];

const KEYS: &[&str] = &[
    "index",
    "size",
    "leaf_hash",
    "from",
    "to",
    "start",
    "end",
    "package",
    "version",
    "file",
    "q",
    "purl",
    "limit",
    "prefix",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9]{15,25}",
        "[0-9a-f]{0,70}",
        "[ -~]{0,20}".prop_map(|s| s.bytes().map(|b| format!("%{b:02X}")).collect()),
        "(%[0-9a-fA-F]{2}|[a-z0-9.:/-]){0,12}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), value()), 0..4).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn path() -> impl Strategy<Value = String> {
    let rest = prop_oneof![
        Just(String::new()),
        "(x[0-9]{3}/){0,3}[0-9]{1,4}(\\.p/[0-9]{1,3})?",
        "(x[0-9]{3}/|[0-9]{1,4}|\\.p/[0-9]{1,3}|\\.\\./|%2e|%2F|/|[a-z]{1,3}|%[0-9A-F]{2}){0,6}",
    ];
    (prop::sample::select(PREFIXES), rest, query()).prop_map(|(p, rest, q)| {
        if q.is_empty() {
            format!("{p}{rest}")
        } else {
            format!("{p}{rest}?{q}")
        }
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let field = prop::sample::select(&[
        "kind",
        "package",
        "version",
        "file",
        "sha256",
        "sha512",
        "size",
        "publisher",
        "time",
    ]);
    let entry = prop::collection::vec((field, value()), 0..8).prop_map(|kv| {
        let fields: Vec<String> = kv
            .iter()
            .map(|(k, v)| format!("{}:{}", serde_json::json!(k), serde_json::json!(v)))
            .collect();
        format!("{{{}}}", fields.join(","))
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(entry, 0..4).prop_map(|es| format!(
            "{{\"entries\":[{}]}}",
            es.join(",")
        )
        .into_bytes()),
    ]
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    log: Log,
    token: String,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = add_token(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let log = Log::open(&config(dir.path())).expect("open");
    let entries = (0..300)
        .map(|i| {
            serde_json::from_value(publish(
                &format!("pkg:npm/f{i}"),
                "1",
                "f",
                &digest(&i.to_string()),
            ))
            .expect("fields")
        })
        .collect();
    let auth = format!("Bearer {token}");
    rt.block_on(async {
        let admission = log.admit(Some(&auth)).await.expect("admitted");
        log.submit(admission, Ok(entries)).await
    })
    .expect("seed");
    Fixture {
        rt,
        log,
        token,
        _dir: dir,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: ProptestConfig::default().cases.max(2000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_request_gets_a_5xx(path in path(), post in any::<bool>(), auth in 0u8..3, body in body()) {
        thread_local!(static FIX: Fixture = fixture());
        FIX.with(|fix| {
            let mut req = Request::builder().method(if post { "POST" } else { "GET" }).uri(&path);
            match auth {
                0 => {}
                1 => req = req.header("authorization", format!("Bearer {}", fix.token)),
                _ => req = req.header("authorization", "Bearer btlog_wrong"),
            }
            let Ok(req) = req.body(Body::from(body)) else {
                return Ok(()); // Not a valid URI: never reaches the router.
            };
            let app = btlog_server::api::http::router(fix.log.clone());
            let resp = fix.rt.block_on(app.oneshot(req)).expect("infallible");
            let status = resp.status();
            let resp_is_html = resp.headers().get("content-type").is_some_and(|c| c.as_bytes().starts_with(b"text/html"));
            let csp = resp.headers().get("content-security-policy").and_then(|c| c.to_str().ok()).map(str::to_owned);
            let csp = csp.as_deref();
            let location = resp.headers().contains_key("location");
            let bytes = fix.rt.block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).expect("body");
            prop_assert!(status.as_u16() < 500, "{path}: {status} {}", String::from_utf8_lossy(&bytes));
            let html = resp_is_html;
            if html {
                prop_assert!(csp.is_some_and(|c| c.starts_with("default-src 'none'")), "{path}: {status} without the CSP");
            } else if status.is_redirection() {
                // The explorer's search answers a query naming one thing with a redirect to it.
                prop_assert!(location, "{path}: {status} without a Location");
            } else if !status.is_success() {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                prop_assert!(!text.is_empty() && !text.contains('\n'), "{path}: {status} {text:?}");
            }
            Ok(())
        })?;
    }
}
