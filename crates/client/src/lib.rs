//! btlog-client: fetching from a log over HTTP and verifying what it serves; shared by the `btlog` CLI and
//! `btlog-monitor`. Nothing fetched is trusted until it is verified against a vkey or a root.
//!
//! - [`Http`]: a log's base URL and the GETs and POSTs every client makes, each reply read
//!   with a cap for what it is, and GETs retried on transient failures.
//! - `api`: the `/v1` JSON API (submit, lookup, proofs) and online verification.
//! - `tiles`: the C2SP tlog-tiles read API (checkpoint, hash tiles, entry bundles).
//! - `file`, `keyfile`: local files written atomically with private modes, and key files.

pub mod api;
pub mod file;
pub mod keyfile;
pub mod tiles;

use std::time::Duration;

/// Why talking to a log failed (before any verification).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The log could not be reached or the transfer failed.
    #[error("cannot reach the log at {url}: {}", chain(source))]
    Unreachable {
        /// The URL asked for.
        url: String,
        /// What failed.
        source: reqwest::Error,
    },
    /// The log answered with an error status.
    #[error("{url}: HTTP {status}: {reason}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The one-line reason the log gave.
        reason: String,
    },
    /// The base URL is not usable.
    #[error("bad log URL {0:?}: expected http:// or https://")]
    BadUrl(String),
    /// A transient failure (see [`FetchError::is_transient`]) persisted through every retry.
    #[error("gave up after {attempts} attempts: {last}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The failure of the last one.
        last: Box<FetchError>,
    },
    /// The response body (after decompression) is longer than allowed for what was asked
    /// for; reading stopped there.
    #[error("{url}: response too large: more than the {limit} bytes allowed for it")]
    TooLarge {
        /// The URL asked for.
        url: String,
        /// The cap, in bytes.
        limit: usize,
    },
}

impl FetchError {
    /// Whether trying again later may succeed: a transfer that failed (connection refused or
    /// reset, timeout, truncated body) or an answer of 429 or 5xx (overload, restart,
    /// compaction). A refusal (other 4xx), a bad URL or an oversized body is final.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Unreachable { source, .. } => !source.is_builder(),
            FetchError::Status { status, .. } => *status == 429 || *status >= 500,
            FetchError::GaveUp { .. } | FetchError::BadUrl(_) | FetchError::TooLarge { .. } => {
                false
            }
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own message names no cause: "error
/// sending request").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

/// Attempts of one GET while its failures are transient.
pub const ATTEMPTS: u32 = 5;
/// Wait before the first retry; it doubles for each next one (200, 400, 800, 1600 ms).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Whether `url` names this machine. Compression is for links: over loopback it only burns
/// CPU at both ends (a monitor catching up with a local log spent 12% of its time gzipping and
/// inflating entry bundles), so such logs are asked for uncompressed responses.
fn is_loopback(url: &str) -> bool {
    let Some(host) = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A log's HTTP endpoint.
#[derive(Clone, Debug)]
pub struct Http {
    base: String,
    client: reqwest::Client,
}

/// How long one request may take before the log counts as unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes of an error reply read for its reason (only the first line is shown).
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Cap on a body when the caller names none: above the largest resource of the API (a full
/// entry bundle, about 16 MiB), so that nothing a log sends is read without bound.
pub const DEFAULT_LIMIT: usize = 32 << 20;

/// Cap on a `/v1` JSON reply that is not a submit reply: one entry (at most
/// [`btlog_core::entry::MAX_ENTRY_BYTES`]), a proof, or a lookup with its tlog-proof (at most
/// [`btlog_core::proof_bundle::MAX_PROOF_BYTES`]), JSON-escaped.
pub const JSON_LIMIT: usize = 1 << 20;

impl Http {
    /// A client for the log at `base` (`http://host:port`, with or without a trailing slash).
    pub fn new(base: &str) -> Result<Http, FetchError> {
        Http::with_gzip(base, !is_loopback(base))
    }

    /// [`Http::new`], asking for gzip-compressed responses or not.
    fn with_gzip(base: &str, gzip: bool) -> Result<Http, FetchError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(FetchError::BadUrl(base.to_string()));
        }
        // Decoding stays on either way: a static endpoint (an S3 bucket's website, a CDN)
        // serves an object stored gzip-encoded as it is, whatever the request asked for.
        let mut headers = reqwest::header::HeaderMap::new();
        if !gzip {
            headers.insert(
                reqwest::header::ACCEPT_ENCODING,
                reqwest::header::HeaderValue::from_static("identity"),
            );
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .gzip(true)
            .default_headers(headers)
            .build()
            .map_err(|source| FetchError::Unreachable {
                url: base.to_string(),
                source,
            })?;
        Ok(Http {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GETs `path`; `Ok(None)` on 404, an error on any other non-success status, and
    /// [`FetchError::TooLarge`] once the body passes [`DEFAULT_LIMIT`] bytes.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
        self.get_limited(path, DEFAULT_LIMIT).await
    }

    /// [`Http::get`] with a cap of `limit` bytes on the body (decompressed). A transient
    /// failure ([`FetchError::is_transient`]) is retried, up to [`ATTEMPTS`] in all with a
    /// doubling wait from 200 ms, then is [`FetchError::GaveUp`], naming the URL and the last
    /// reason. GETs of the read API are idempotent, so retrying is safe.
    pub async fn get_limited(
        &self,
        path: &str,
        limit: usize,
    ) -> Result<Option<Vec<u8>>, FetchError> {
        let (mut attempt, mut wait) = (1, FIRST_BACKOFF);
        loop {
            match self.get_once(path, limit).await {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::warn!(url = %self.url(path), attempt, error = %e, "retrying");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    wait *= 2;
                }
                Err(e) if e.is_transient() => {
                    return Err(FetchError::GaveUp {
                        attempts: attempt,
                        last: Box::new(e),
                    })
                }
                other => return other,
            }
        }
    }

    /// One GET of `path`, as [`Http::get_limited`] without retries.
    async fn get_once(&self, path: &str, limit: usize) -> Result<Option<Vec<u8>>, FetchError> {
        let url = self.url(path);
        let resp =
            self.client
                .get(&url)
                .send()
                .await
                .map_err(|source| FetchError::Unreachable {
                    url: url.clone(),
                    source,
                })?;
        if resp.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Self::body(url, resp, limit).await.map(Some)
    }

    /// POSTs a JSON body to `path` with an optional bearer token; the response body, at most
    /// [`DEFAULT_LIMIT`] bytes.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<Vec<u8>, FetchError> {
        self.post_json_limited(path, token, body, DEFAULT_LIMIT)
            .await
    }

    /// [`Http::post_json`] with a cap of `limit` bytes on the response body.
    pub async fn post_json_limited(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
        limit: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let url = self.url(path);
        let mut req = self.client.post(&url).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|source| FetchError::Unreachable {
            url: url.clone(),
            source,
        })?;
        Self::body(url, resp, limit).await
    }

    /// Reads the body of `resp` as it streams in (decompressed, when gzip is on), never more
    /// than `limit` bytes of a success or [`ERROR_BODY_LIMIT`] of an error reply.
    async fn body(
        url: String,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, FetchError> {
        let status = resp.status();
        if !status.is_success() {
            let bytes = match read_capped(&mut resp, ERROR_BODY_LIMIT).await {
                Ok(Capped::Whole(b) | Capped::Cut(b)) => b,
                Err(_) => Vec::new(),
            };
            return Err(FetchError::Status {
                url,
                status: status.as_u16(),
                reason: error_reason(&bytes),
            });
        }
        let too_large = |url| FetchError::TooLarge { url, limit };
        // A declared length over the cap fails before any of the body is read. (With gzip on,
        // reqwest reports no length: the decompressed size is unknown until read.)
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large(url));
        }
        match read_capped(&mut resp, limit).await {
            Ok(Capped::Whole(bytes)) => Ok(bytes),
            Ok(Capped::Cut(_)) => Err(too_large(url)),
            Err(source) => Err(FetchError::Unreachable { url, source }),
        }
    }
}

/// A body read up to a cap.
enum Capped {
    /// All of it.
    Whole(Vec<u8>),
    /// Its first `limit` bytes; there was more (not read).
    Cut(Vec<u8>),
}

/// Reads the body of `resp` chunk by chunk, stopping as soon as it passes `limit` bytes.
async fn read_capped(resp: &mut reqwest::Response, limit: usize) -> Result<Capped, reqwest::Error> {
    let declared = resp.content_length().unwrap_or(0).min(limit as u64);
    let mut out = Vec::with_capacity(declared as usize);
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > limit {
            let room = limit - out.len();
            out.extend_from_slice(&chunk[..room]);
            return Ok(Capped::Cut(out));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Capped::Whole(out))
}

/// The one-line reason in an error body: `{"error": "..."}` or plain text, cut to one line.
fn error_reason(body: &[u8]) -> String {
    let text = serde_json::from_slice::<btlog_core::wire::ErrorReply>(body)
        .map(|v| v.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect()
}

/// Parses a duration as operators write it: `250ms`, `30s`, `5m`, `1h`, `7d`, or a plain
/// number of seconds. None for anything else, and for zero.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let secs = |scale: u64| n.checked_mul(scale).map(Duration::from_secs);
    let d = match unit {
        "ms" => Some(Duration::from_millis(n)),
        "" | "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        _ => None,
    }?;
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Issue #13 item 7: a gzip bomb (a few MiB on the wire, GiBs inflated) is refused once
    /// the inflated body passes the cap, without inflating the rest.
    #[tokio::test]
    async fn a_gzip_bomb_is_refused_once_inflated_past_the_cap() {
        // Inflated bytes the server offers: far more than this test may hold.
        const BOMB: usize = 4 << 30;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let offered = Arc::new(AtomicUsize::new(0));
        let counter = offered.clone();
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let zeros = vec![0u8; 1 << 20];
            while counter.load(Ordering::SeqCst) < BOMB {
                if gz.write_all(&zeros).and_then(|()| gz.flush()).is_err() {
                    return;
                }
                let out = std::mem::take(gz.get_mut());
                let framed = [format!("{:x}\r\n", out.len()).as_bytes(), &out, b"\r\n"].concat();
                if sock.write_all(&framed).await.is_err() {
                    return;
                }
                counter.fetch_add(zeros.len(), Ordering::SeqCst);
            }
            let Ok(out) = gz.finish() else {
                return;
            };
            let framed = [format!("{:x}\r\n", out.len()).as_bytes(), &out, b"\r\n"].concat();
            let _ = sock.write_all(&framed).await;
            let _ = sock.write_all(b"0\r\n\r\n").await;
        });
        let http = Http::with_gzip(&url, true).expect("client");
        let limit = 1 << 20;
        let got = tokio::time::timeout(Duration::from_secs(20), http.get_limited("/x", limit))
            .await
            .expect("the client stopped inflating in time");
        let err = got.expect_err("refused");
        assert!(matches!(err, FetchError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("too large"), "{err}");
        let offered = offered.load(Ordering::SeqCst);
        assert!(offered < 1 << 30, "{offered} bytes inflated and offered");
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:1/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://log.example",
            "http://10.0.0.1",
            "http://[2001:db8::1]",
            "http://localhost.example",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
    }
}
