//! The `/v1` JSON API client (PROTOCOL.md §6), online verification and the verified-checkpoint state.
//!
//! [`Api`] only fetches and decodes; nothing it returns is trusted. [`verify::verify_online`]
//! checks what the log serves against a vkey and the newest checkpoint already verified
//! ([`state::CheckpointState`]); [`verify::verify_tiles`] does the same from the log's tiles
//! alone (a static tile mirror has no `/v1` API).

pub mod state;
pub mod verify;

use serde::de::DeserializeOwned;

use super::{FetchError, Http, JSON_LIMIT};
use btlog_core::checkpoint::{decode_hash, Checkpoint};
use btlog_core::entry::{Entry, EntryFields, Identity, Kind};
use btlog_core::merkle::Hash;
use btlog_core::note::MAX_NOTE_BYTES;
use btlog_core::proof_bundle::TlogProof;
use btlog_core::wire::{ConsistencyReply, EntriesReply, InclusionReply, SubmitRequest};

pub use btlog_core::wire::{LookupReply, Status as SubmitStatus, SubmitReply, SubmitResult};

/// Why a `/v1` call failed (before any verification).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The transfer failed or the log answered with an error status.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The log does not have what was asked for.
    #[error("{0}: not found in the log")]
    NotFound(String),
    /// The endpoint does not serve the `/v1` API at all (404 where a log server always
    /// answers): a static tlog-tiles mirror, or not a btlog log.
    #[error(
        "{0}: HTTP 404: this endpoint does not serve the btlog /v1 API (a static tlog-tiles \
         mirror such as a bucket or CDN serves only /checkpoint and /tile/...)"
    )]
    NoApi(String),
    /// The reply is not what PROTOCOL.md §6 describes.
    #[error("{url}: malformed reply: {reason}")]
    BadReply {
        /// The URL asked for.
        url: String,
        /// What is wrong with the reply.
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status the log answered with, when it answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Fetch(FetchError::Status { status, .. }) => Some(*status),
            ApiError::NotFound(_) | ApiError::NoApi(_) => Some(404),
            _ => None,
        }
    }
}

/// Cap on the JSON of one submit result (index, leaf hash, status, existing index).
const SUBMIT_RESULT_LIMIT: usize = 512;

/// A client for a log's `/v1` JSON API.
#[derive(Clone, Debug)]
pub struct Api {
    http: Http,
}

impl Api {
    /// A client for the log at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Api, FetchError> {
        Ok(Api {
            http: Http::new(base)?,
        })
    }

    /// The underlying HTTP endpoint.
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// The latest signed checkpoint note, unverified.
    pub async fn checkpoint(&self) -> Result<String, ApiError> {
        let body = self.get_required("/checkpoint", MAX_NOTE_BYTES).await?;
        String::from_utf8(body).map_err(|_| self.bad("/checkpoint", "not UTF-8"))
    }

    /// Submits a batch with the bearer `token`.
    pub async fn submit(
        &self,
        token: &str,
        entries: &[EntryFields],
    ) -> Result<SubmitReply, ApiError> {
        let path = "/v1/entries";
        let body = SubmitRequest {
            entries: entries.into(),
        };
        // The checkpoint, and one short result (index, leaf hash, status) per entry.
        let limit = JSON_LIMIT + entries.len().saturating_mul(SUBMIT_RESULT_LIMIT);
        let reply: SubmitReply = self.decode(
            path,
            &self
                .http
                .post_json_limited(path, Some(token), &body, limit)
                .await?,
        )?;
        if reply.results.len() != entries.len() {
            return Err(self.bad(path, "not one result per submitted entry"));
        }
        Ok(reply)
    }

    /// The entry bytes at `index`; `None` when the log has no such entry.
    pub async fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, ApiError> {
        let end = index.saturating_add(1);
        let path = format!("/v1/entries?start={index}&end={end}");
        let Some(body) = self.http.get_limited(&path, JSON_LIMIT).await? else {
            return Ok(None);
        };
        let reply: EntriesReply = self.decode(&path, &body)?;
        match reply.entries.as_slice() {
            [e] if e.index == index => Ok(Some(e.entry.clone().into_bytes())),
            _ => Err(self.bad(&path, "expected exactly the entry asked for")),
        }
    }

    /// The inclusion proof of entry `index` in the tree of `size` leaves.
    pub async fn inclusion(&self, index: u64, size: u64) -> Result<Vec<Hash>, ApiError> {
        let path = format!("/v1/proof/inclusion?index={index}&size={size}");
        let reply: InclusionReply =
            self.decode(&path, &self.get_required(&path, JSON_LIMIT).await?)?;
        if (reply.index, reply.size) != (index, size) {
            return Err(self.bad(&path, "proof for another index or size"));
        }
        self.proof_hashes(&path, &reply.proof)
    }

    /// The consistency proof from tree size `from` to `to`.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ApiError> {
        let path = format!("/v1/proof/consistency?from={from}&to={to}");
        let reply: ConsistencyReply =
            self.decode(&path, &self.get_required(&path, JSON_LIMIT).await?)?;
        if (reply.from, reply.to) != (from, to) {
            return Err(self.bad(&path, "proof between other sizes"));
        }
        self.proof_hashes(&path, &reply.proof)
    }

    /// The publish entry of `identity` with a tlog-proof; `None` when it is not logged.
    pub async fn lookup(&self, identity: &Identity) -> Result<Option<LookupReply>, ApiError> {
        let path = format!(
            "/v1/lookup?package={}&version={}&file={}",
            query_escape(&identity.package),
            query_escape(&identity.version),
            query_escape(&identity.file)
        );
        match self.http.get_limited(&path, JSON_LIMIT).await? {
            Some(body) => self.decode(&path, &body).map(Some),
            None => Ok(None),
        }
    }

    /// Every entry of package `purl` in log order (`/v1/packages`, page by page), unverified.
    /// A log server answers an unknown package with no entries, so a 404 is
    /// [`ApiError::NoApi`].
    pub async fn package_entries(&self, purl: &str) -> Result<Vec<(u64, String)>, ApiError> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let page = self.package_page(purl, from, JSON_LIMIT).await?;
            let Some(last) = page.entries.last().map(|e| e.index) else {
                return Ok(out);
            };
            if last < from {
                return Err(self.bad(&package_path(purl, from), "a page went backwards"));
            }
            out.extend(page.entries.into_iter().map(|e| (e.index, e.entry)));
            from = last + 1;
        }
    }

    /// Checks that the endpoint serves the `/v1` API, else [`ApiError::NoApi`]: asks for the
    /// entries of `purl` past the last possible index, which a log server answers with an
    /// empty page whatever it holds.
    pub async fn require_v1(&self, purl: &str) -> Result<(), ApiError> {
        self.package_page(purl, u64::MAX, 4096).await.map(drop)
    }

    /// One page of `/v1/packages/<purl>?from=`; a 404 is [`ApiError::NoApi`].
    async fn package_page(
        &self,
        purl: &str,
        from: u64,
        limit: usize,
    ) -> Result<EntriesReply, ApiError> {
        let path = package_path(purl, from);
        match self.http.get_limited(&path, limit).await? {
            Some(body) => self.decode(&path, &body),
            None => Err(ApiError::NoApi(self.http.url(&path))),
        }
    }

    /// Every (version, file) of package `purl` that stands yanked or deleted, with how
    /// ([`withdrawn_in`] over [`Api::package_entries`]).
    pub async fn withdrawn_all(&self, purl: &str) -> Result<Withdrawn, ApiError> {
        Ok(withdrawn_in(&self.package_entries(purl).await?))
    }

    /// Assembles the tlog-proof of entry `index` against the signed `checkpoint` note (not
    /// verified here): the entry bytes and the inclusion proof at the checkpoint's size.
    pub async fn tlog_proof(&self, index: u64, checkpoint: &str) -> Result<TlogProof, ApiError> {
        let (cp, _) = Checkpoint::parse(checkpoint.as_bytes())
            .map_err(|e| self.bad("/checkpoint", &e.to_string()))?;
        let entry = self
            .entry(index)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("entry {index}")))?;
        let proof = self.inclusion(index, cp.size).await?;
        Ok(TlogProof::new(entry, index, proof, checkpoint.to_owned()))
    }

    /// The decoded hashes of a proof reply (inclusion or consistency).
    fn proof_hashes(&self, path: &str, proof: &[String]) -> Result<Vec<Hash>, ApiError> {
        proof
            .iter()
            .map(|h| {
                decode_hash(h).ok_or_else(|| self.bad(path, "proof hash is not base64 of 32 bytes"))
            })
            .collect()
    }

    async fn get_required(&self, path: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
        self.http
            .get_limited(path, limit)
            .await?
            .ok_or_else(|| ApiError::NotFound(self.http.url(path)))
    }

    fn decode<T: DeserializeOwned>(&self, path: &str, body: &[u8]) -> Result<T, ApiError> {
        serde_json::from_slice(body).map_err(|e| self.bad(path, &e.to_string()))
    }

    fn bad(&self, path: &str, reason: &str) -> ApiError {
        ApiError::BadReply {
            url: self.http.url(path),
            reason: reason.to_owned(),
        }
    }
}

fn package_path(purl: &str, from: u64) -> String {
    format!("/v1/packages/{purl}?from={from}")
}

/// Percent-encodes a query value: everything but `A-Z a-z 0-9 - . _ ~`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Artifacts standing yanked or deleted, by (version, file), with the entry kind.
pub type Withdrawn = std::collections::HashMap<(String, String), Kind>;

/// Which artifacts of a package's entries (in log order) stand yanked or deleted: those whose
/// last `yank`, `unyank` or `delete` is not an `unyank` (PROTOCOL.md §2.3).
pub fn withdrawn_in(entries: &[(u64, String)]) -> Withdrawn {
    let mut state = Withdrawn::new();
    for (_, text) in entries {
        let Ok(entry) = Entry::parse(text.as_bytes()) else {
            continue;
        };
        let d = entry.data();
        let key = (d.version.clone(), d.file.clone());
        match d.kind {
            Kind::Yank | Kind::Delete => {
                state.insert(key, d.kind);
            }
            Kind::Unyank => {
                state.remove(&key);
            }
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(
            query_escape("pkg:npm/%40s/x 1+2&y"),
            "pkg%3Anpm%2F%2540s%2Fx%201%2B2%26y"
        );
    }
}
