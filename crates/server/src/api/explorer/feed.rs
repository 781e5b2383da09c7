//! Atom 1.0 feeds (RFC 4287) of the newest events of a package (`/feed?package=`) or of every
//! package under a purl prefix (`/feed?prefix=`), so a maintainer's feed reader shows a
//! publish they did not make.

use super::html::{esc, query_value, rfc3339};
use super::{base_url, PageError, Params, FEED_ENTRIES};
use crate::log::history::{History, Window};
use crate::log::{sequencer::unix_now, Log};
use axum::extract::State;
use axum::http::{header, HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use btlog_core::entry::purl_from_user_input;
use std::fmt::Write as _;

/// `/feed?package=<purl>` or `/feed?prefix=<purl prefix>`.
pub async fn feed(
    State(log): State<Log>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let params = Params::parse(&uri, &["package", "prefix"])?;
    let (scope, value) = match (params.get("package"), params.get("prefix")) {
        (Some(p), None) => ("package", p),
        (None, Some(p)) => ("prefix", p),
        _ => return Err(PageError::bad("give exactly one of package= and prefix=")),
    };
    let purl = purl_from_user_input(value)
        .map_err(|reason| PageError::bad(format!("not a package URL: {reason}")))?;
    let history = if scope == "package" {
        if !purl["pkg:".len()..].contains('/') {
            return Err(PageError::bad("name a package, or use prefix= for a type"));
        }
        log.package_history(
            purl.clone(),
            Window::Newest {
                limit: FEED_ENTRIES,
            },
        )
        .await?
    } else {
        log.prefix_events(purl.clone(), FEED_ENTRIES).await?
    };
    let base = base_url(&headers);
    let now = log.checkpoint().signed_at.unwrap_or_else(unix_now);
    let body = atom(&log, &base, scope, &purl, &history, now);
    Ok((
        [
            (header::CONTENT_TYPE, "application/atom+xml; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=2"),
        ],
        body,
    )
        .into_response())
}

/// The feed document: newest event first; an entry's `updated` is its `time`, or, for an
/// entry without one, `now` (the served checkpoint's signing time).
fn atom(log: &Log, base: &str, scope: &str, purl: &str, history: &History, now: u64) -> String {
    let origin = log.verifier().name();
    let self_url = format!("{base}/feed?{scope}={}", query_value(purl));
    let id_base = format!("urn:btlog:{}", query_value(origin));
    let updated = rfc3339(now);
    let mut out = String::new();
    let _ =
        write!(
            out,
            r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
<id>{id}</id>
<title>{title}</title>
<subtitle>{subtitle}</subtitle>
<updated>{updated}</updated>
<author><name>{origin}</name></author>
<generator>btlog</generator>
<link rel="self" type="application/atom+xml" href="{self_url}"/>
"#,
            id = esc(&format!("{id_base}:{scope}:{}", query_value(purl))),
            title = esc(&format!("btlog {origin}: {purl}")),
            subtitle =
                esc(&format!(
            "The newest {FEED_ENTRIES} events of {} {purl} in the transparency log {origin}",
            if scope == "package" { "package" } else { "packages under" }
        )),
            origin = esc(origin),
            self_url = esc(&self_url),
        );
    if scope == "package" {
        let _ = writeln!(
            out,
            r#"<link rel="alternate" type="text/html" href="{}"/>"#,
            esc(&format!("{base}/package?purl={}", query_value(purl)))
        );
    }
    for ev in history.events.iter().rev() {
        let e = &ev.entry;
        let mut title = format!("{} {}", e.kind, e.package);
        if !e.kind.is_owner() {
            let _ = write!(title, " {} {}", e.version, e.file);
        }
        if let Some(p) = &e.publisher {
            let _ = write!(title, " by {p}");
        }
        let labels: Vec<&str> = ev.marks.iter().map(|m| m.label()).collect();
        if !labels.is_empty() {
            title = format!("[{}] {title}", labels.join(", "));
        }
        let mut content = String::new();
        for m in &ev.marks {
            let _ = writeln!(content, "{}: {}", m.label(), m.describe(e));
        }
        let _ = write!(content, "{}", String::from_utf8_lossy(&e.encode()));
        let _ = write!(
            out,
            r#"<entry>
<id>{id}</id>
<title>{title}</title>
<updated>{updated}</updated>
<link rel="alternate" type="text/html" href="{link}"/>
<content type="text">{content}</content>
</entry>
"#,
            id = esc(&format!("{id_base}:entry:{}", ev.index)),
            title = esc(&title),
            updated = esc(e.time.as_deref().unwrap_or(&updated)),
            link = esc(&format!("{base}/entry?index={}", ev.index)),
            content = esc(&content),
        );
    }
    out.push_str("</feed>\n");
    out
}
