//! Evidence of a split view: two checkpoints signed by the log's key that cannot both be
//! honest, in a JSON file a third party checks with `btlog-monitor verify-evidence FILE`.
//!
//! Either the two checkpoints have the same size and different roots, or the smaller (size m)
//! is not a prefix of the larger (size n): the file then carries the root `prefix_root` that
//! the larger tree has at size m and an RFC 6962 consistency proof from (m, `prefix_root`) to the
//! larger signed root. The proof verifying shows, under SHA-256 collision resistance, that the
//! larger tree's first m leaves have root `prefix_root`; that differing from the smaller signed
//! root shows the log signed two trees that do not extend each other. The proof is built from
//! the log's own hash tiles, never taken from a server-made proof.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub(crate) use btlog_client::tiles::prefix_proof;
use btlog_client::tiles::{SignedCheckpoint, TileClient};
use btlog_core::checkpoint::{decode_hash, Checkpoint};
use btlog_core::merkle::{verify_consistency, Hash};
use btlog_core::note::Verifier;

const FORMAT: &str = "btlog-monitor-evidence/v1";

/// Evidence of a split view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// `btlog-monitor-evidence/v1`.
    pub format: String,
    /// The log's verifier key.
    pub vkey: String,
    /// Where the checkpoints came from and what the monitor saw, for a person.
    pub reason: String,
    /// The checkpoint of the smaller (or equal) tree, the signed note verbatim.
    pub checkpoint_a: String,
    /// The checkpoint of the larger (or equal) tree.
    pub checkpoint_b: String,
    /// Base64 root of tree B at the size of tree A (absent when the sizes are equal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_root: Option<String>,
    /// Base64 hashes of the consistency proof from (size A, `prefix_root`) to tree B.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistency_proof: Vec<String>,
}

/// Why evidence does not prove a split view.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// The file is not evidence JSON.
    #[error("not a btlog-monitor evidence file: {0}")]
    Format(String),
    /// A checkpoint does not verify with the key.
    #[error("checkpoint {0}: {1}")]
    Checkpoint(&'static str, btlog_core::checkpoint::CheckpointError),
    /// The checkpoints are consistent, or the proof does not show otherwise.
    #[error("does not prove a split view: {0}")]
    NotProven(String),
}

/// What comparing two checkpoints found.
#[derive(Debug)]
pub enum Comparison {
    /// The smaller tree is a prefix of the larger.
    Consistent,
    /// They cannot both be honest.
    Fork(Box<Evidence>),
    /// No conclusion: the log's tiles do not reproduce the larger signed root.
    Unknown(String),
}

/// Same size, different roots: evidence needs nothing but the two notes.
pub fn same_size(
    vkey: &Verifier,
    a: &SignedCheckpoint,
    b: &SignedCheckpoint,
    reason: String,
) -> Option<Evidence> {
    let (ca, cb) = (&a.checkpoint, &b.checkpoint);
    (ca.size == cb.size && ca.root != cb.root).then(|| Evidence {
        format: FORMAT.into(),
        vkey: vkey.vkey(),
        reason,
        checkpoint_a: a.note.clone(),
        checkpoint_b: b.note.clone(),
        prefix_root: None,
        consistency_proof: vec![],
    })
}

/// Compares `small` with `big` (size ≥) using the hash tiles `client` serves for `big`'s tree.
pub async fn compare(
    vkey: &Verifier,
    small: &SignedCheckpoint,
    big: &SignedCheckpoint,
    client: &TileClient,
    reason: String,
) -> Comparison {
    let (m, n) = (small.checkpoint.size, big.checkpoint.size);
    if let Some(e) = same_size(vkey, small, big, reason.clone()) {
        return Comparison::Fork(Box::new(e));
    }
    if m == n || m == 0 {
        return Comparison::Consistent;
    }
    match prefix_proof(client, m, &big.checkpoint).await {
        Ok((prefix, _)) if prefix == small.checkpoint.root => Comparison::Consistent,
        Ok((prefix, proof)) => Comparison::Fork(Box::new(Evidence {
            format: FORMAT.into(),
            vkey: vkey.vkey(),
            reason,
            checkpoint_a: small.note.clone(),
            checkpoint_b: big.note.clone(),
            prefix_root: Some(B64.encode(prefix)),
            consistency_proof: proof.iter().map(|h| B64.encode(h)).collect(),
        })),
        Err(e) => Comparison::Unknown(format!(
            "tiles of {} at size {n} do not prove its root: {e}",
            client.base()
        )),
    }
}

impl Evidence {
    /// The witnesses (of `witnesses`) whose cosignatures verify on both checkpoints: each of
    /// them cosigned two trees that cannot both be honest, which a witness checking
    /// consistency never does (tlog-witness).
    pub fn cosigned_by_both<'a>(&self, witnesses: &[&'a Verifier]) -> Vec<&'a Verifier> {
        let notes = [&self.checkpoint_a, &self.checkpoint_b]
            .map(|n| btlog_core::note::Note::parse(n.as_bytes()).ok());
        let [Some(a), Some(b)] = notes else {
            return Vec::new();
        };
        witnesses
            .iter()
            .filter(|w| a.verify(&[w]).is_ok() && b.verify(&[w]).is_ok())
            .copied()
            .collect()
    }

    /// The file contents.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Checks the evidence on its own: both signatures, and that the trees cannot both be
    /// honest. Returns a one-line description of what it proves.
    pub fn verify(json: &[u8]) -> Result<String, EvidenceError> {
        let ev: Evidence =
            serde_json::from_slice(json).map_err(|e| EvidenceError::Format(e.to_string()))?;
        if ev.format != FORMAT {
            return Err(EvidenceError::Format(format!("format {:?}", ev.format)));
        }
        let vkey = btlog_core::keys::parse_vkey(&ev.vkey)
            .map_err(|e| EvidenceError::Format(format!("vkey: {e}")))?;
        let (a, _) = Checkpoint::verify(ev.checkpoint_a.as_bytes(), &vkey)
            .map_err(|e| EvidenceError::Checkpoint("a", e))?;
        let (b, _) = Checkpoint::verify(ev.checkpoint_b.as_bytes(), &vkey)
            .map_err(|e| EvidenceError::Checkpoint("b", e))?;
        let not = |s: &str| EvidenceError::NotProven(s.to_owned());
        if a.size == b.size {
            return if a.root != b.root {
                Ok(format!(
                    "{} signed two different trees of size {}",
                    a.origin, a.size
                ))
            } else {
                Err(not("the checkpoints are the same tree"))
            };
        }
        if a.size > b.size {
            return Err(not("checkpoint a must be the smaller tree"));
        }
        let prefix = ev
            .prefix_root
            .as_deref()
            .and_then(decode_hash)
            .ok_or_else(|| not("prefix_root missing or not base64 of 32 bytes"))?;
        let proof = ev
            .consistency_proof
            .iter()
            .map(|h| decode_hash(h))
            .collect::<Option<Vec<Hash>>>()
            .ok_or_else(|| not("consistency_proof hash not base64 of 32 bytes"))?;
        verify_consistency(a.size, b.size, &proof, &prefix, &b.root)
            .map_err(|e| EvidenceError::NotProven(format!("consistency proof: {e}")))?;
        if prefix == a.root {
            return Err(not("tree b extends tree a: the checkpoints are consistent"));
        }
        Ok(format!(
            "{} signed a tree of size {} that is not a prefix of its signed tree of size {}",
            a.origin, a.size, b.size
        ))
    }
}
