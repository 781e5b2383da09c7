//! The JSON bodies of the `/v1` HTTP API (PROTOCOL.md §6), one type per shape, serialized
//! by the server and deserialized by clients. Hashes are standard base64 strings, as in
//! checkpoints; a client decodes them with [`crate::checkpoint::decode_hash`] and treats a
//! malformed one as a bad reply.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::entry::EntryFields;

/// What happened to one submitted entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Appended now.
    New,
    /// The identity was already logged with the same sha256 (an idempotent resubmission).
    Duplicate,
    /// The identity was already logged with another sha256; nothing was appended.
    Conflict,
}

impl Status {
    /// `new`, `duplicate` or `conflict`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Duplicate => "duplicate",
            Status::Conflict => "conflict",
        }
    }
}

/// `POST /v1/entries` body: borrowed when a client sends it, owned when the server reads it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest<'a> {
    /// The batch, in order.
    pub entries: Cow<'a, [EntryFields]>,
}

/// The result for one submitted entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitResult {
    /// Index of the entry (for a duplicate or a conflict, of the existing entry).
    pub index: u64,
    /// Base64 leaf hash of the entry at `index`.
    pub leaf_hash: String,
    /// What happened.
    pub status: Status,
    /// For a conflict, the index of the entry already holding the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_index: Option<u64>,
}

/// `POST /v1/entries` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubmitReply {
    /// A signed checkpoint covering every entry of the batch.
    pub checkpoint: String,
    /// One result per submitted entry, in order.
    pub results: Vec<SubmitResult>,
}

/// One entry of a list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEntry {
    /// Its leaf index.
    pub index: u64,
    /// The entry text.
    pub entry: String,
}

/// `GET /v1/entries` and `GET /v1/packages/<purl>` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EntriesReply {
    /// The entries, in log order.
    pub entries: Vec<IndexedEntry>,
}

/// `GET /v1/proof/inclusion` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InclusionReply {
    /// The leaf index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// Base64 leaf hash.
    pub leaf_hash: String,
    /// Base64 hashes, leaf sibling first (RFC 6962 §2.1.1).
    pub proof: Vec<String>,
}

/// `GET /v1/proof/consistency` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConsistencyReply {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
    /// Base64 hashes (RFC 6962 §2.1.2).
    pub proof: Vec<String>,
}

/// `GET /v1/lookup` reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LookupReply {
    /// Index of the publish entry.
    pub index: u64,
    /// The entry text.
    pub entry: String,
    /// A `.tlog-proof` against the log's latest checkpoint.
    pub proof: String,
}

/// The body of every `/v1` error reply.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The one-line reason.
    pub error: String,
}
