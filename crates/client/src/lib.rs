//! btlog-client: fetching from a log over HTTP and verifying what it serves; shared by the `btlog` CLI and
//! `btlog-monitor`. Nothing fetched is trusted until it is verified against a vkey or a root.
//!
//! - [`Http`]: a log's base URL and the GETs and POSTs every client makes.
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
    #[error("cannot reach the log at {url}: {source}")]
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
}

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

impl Http {
    /// A client for the log at `base` (`http://host:port`, with or without a trailing slash).
    pub fn new(base: &str) -> Result<Http, FetchError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(FetchError::BadUrl(base.to_string()));
        }
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .gzip(!is_loopback(base))
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

    /// GETs `path`; `Ok(None)` on 404, an error on any other non-success status.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, FetchError> {
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
        Self::body(url, resp).await.map(Some)
    }

    /// POSTs a JSON body to `path` with an optional bearer token; the response body.
    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
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
        Self::body(url, resp).await
    }

    async fn body(url: String, resp: reqwest::Response) -> Result<Vec<u8>, FetchError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| FetchError::Unreachable {
                url: url.clone(),
                source,
            })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(FetchError::Status {
            url,
            status: status.as_u16(),
            reason: error_reason(&bytes),
        })
    }
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

#[cfg(test)]
mod tests {
    use super::is_loopback;

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
