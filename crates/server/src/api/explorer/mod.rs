//! The web explorer and its Atom feeds (README "Explorer and feeds", PROTOCOL.md §12):
//! server-rendered HTML that works without JavaScript, reading through the [`Log`] service
//! like the `/v1` handlers. `explorer.js` only adds the in-page inclusion proof check.
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! server only, nothing inline) and `nosniff`. Every query is bounded ([`MAX_QUERY_BYTES`]),
//! decoded strictly and checked before use; bad input gets a 4xx page that never echoes it.

mod feed;
mod html;
mod pages;

use crate::log::error::{ErrorKind, LogError};
use crate::log::Log;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The Content-Security-Policy of every explorer response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// Longest query string accepted (414 beyond).
pub const MAX_QUERY_BYTES: usize = 1024;
/// Events per package page unless `limit` says otherwise, and the most it may say.
pub const DEFAULT_PAGE: usize = 100;
/// The largest `limit` of a package page.
pub const MAX_PAGE: usize = 500;
/// Entries in a feed: the newest this many.
pub const FEED_ENTRIES: usize = 100;

const JS: &str = include_str!("explorer.js");
const CSS: &str = include_str!("explorer.css");

/// The explorer's routes, each response with the security headers.
pub fn routes() -> Router<Log> {
    Router::new()
        .route("/", get(pages::home))
        .route("/search", get(pages::search))
        .route("/package", get(pages::package))
        .route("/entry", get(pages::entry))
        .route("/feed", get(feed::feed))
        .route(
            "/explorer.js",
            get(|| asset("text/javascript; charset=utf-8", JS)),
        )
        .route(
            "/explorer.css",
            get(|| asset("text/css; charset=utf-8", CSS)),
        )
        .layer(axum::middleware::map_response(secure))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Why a page could not be served: a status and a message for a person. The message never
/// holds the raw input (only what the explorer says about it), and is escaped anyway.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<LogError> for PageError {
    fn from(e: LogError) -> Self {
        let status =
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match e.kind {
            ErrorKind::Internal => "the log could not read this; try again later".to_owned(),
            _ => e.message,
        };
        PageError::new(status, message)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = format!(
            "{} {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or("error")
        );
        let body = format!(
            "<h1>{}</h1>\n<p class=\"error\">{}</p>\n<p><a href=\"/\">Back to the log</a></p>",
            html::esc(&title),
            html::esc(&self.message)
        );
        (
            self.status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            html::page("", &title, "", &body),
        )
            .into_response()
    }
}

/// A query string decoded strictly: at most [`MAX_QUERY_BYTES`], `name=value` pairs
/// separated by `&`, percent-escapes well formed, UTF-8, each name at most once and one of
/// `allowed`.
pub struct Params(Vec<(String, String)>);

impl Params {
    fn parse(uri: &Uri, allowed: &[&str]) -> Result<Params, PageError> {
        let raw = uri.query().unwrap_or("");
        if raw.len() > MAX_QUERY_BYTES {
            return Err(PageError::new(
                StatusCode::URI_TOO_LONG,
                format!("the query is longer than {MAX_QUERY_BYTES} bytes"),
            ));
        }
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            if !allowed.contains(&name.as_str()) {
                return Err(PageError::bad(format!(
                    "unknown query parameter; this page takes {}",
                    allowed.join(", ")
                )));
            }
            if out.iter().any(|(n, _)| *n == name) {
                return Err(PageError::bad(format!("parameter {name} given twice")));
            }
            out.push((name, value));
        }
        Ok(Params(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A decimal number parameter, if given: digits only, no overflow.
    fn number(&self, name: &str) -> Result<Option<u64>, PageError> {
        self.get(name)
            .map(|v| {
                if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(PageError::bad(format!("{name} must be a decimal number")));
                }
                v.parse::<u64>()
                    .map_err(|_| PageError::bad(format!("{name} is too large")))
            })
            .transpose()
    }
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn decode(s: &str) -> Result<String, PageError> {
    btlog_core::entry::percent_decode(&s.replace('+', " "))
        .ok_or_else(|| PageError::bad("the query has malformed percent-encoding or is not UTF-8"))
}

/// The base URL links in feeds and commands use: `http://` and the request's `Host` when it
/// is a plain host[:port], else a placeholder (a Host header is the client's to choose, so
/// it is checked, and escaped where it appears).
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        });
    match host {
        Some(h) => format!("http://{h}"),
        None => "http://LOG-HOST".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded_strictly() {
        let uri = |q: &str| format!("/x?{q}").parse::<Uri>().expect("uri");
        let p = Params::parse(&uri("q=pkg%3Anpm%2F%2540s+x"), &["q"]).expect("params");
        assert_eq!(p.get("q"), Some("pkg:npm/%40s x"));
        for bad in ["q=%zz", "q=%ff", "q=%4", "r=1", "q=1&q=2"] {
            assert!(Params::parse(&uri(bad), &["q"]).is_err(), "{bad}");
        }
        let long = format!("q={}", "a".repeat(MAX_QUERY_BYTES));
        let e = Params::parse(&uri(&long), &["q"]).err().expect("too long");
        assert_eq!(e.status, StatusCode::URI_TOO_LONG);
        let p = Params::parse(
            &uri("from=18446744073709551616&limit=x"),
            &["from", "limit"],
        )
        .expect("params");
        assert!(p.number("from").is_err());
        assert!(p.number("limit").is_err());
    }
}
