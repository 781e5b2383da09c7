//! The C2SP tlog-witness `add-checkpoint` exchange (PROTOCOL.md §10), without I/O: the request
//! body, and the witness's decision about a checkpoint given the one it last cosigned.
//!
//! A request body is an `old <size>` line, at most 63 base64 consistency-proof lines, an empty
//! line, then the signed checkpoint note. A witness cosigns a checkpoint only when it extends
//! the last checkpoint it cosigned for that origin: `old` must be the size it holds, and the
//! proof must show the new tree extends the held root (tlog-witness, "add-checkpoint").

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::checkpoint::{decode_hash, parse_decimal, Checkpoint};
use crate::merkle::{verify_consistency, Hash};
use crate::note::MAX_NOTE_BYTES;

/// Most consistency-proof lines a request may carry (tlog-witness).
pub const MAX_PROOF_LINES: usize = 63;

/// The largest request body: the old-size line, the proof lines and the note.
pub const MAX_REQUEST_BYTES: usize = 32 + MAX_PROOF_LINES * 45 + MAX_NOTE_BYTES;

/// `Content-Type` of a 409 answer, whose body is the size the witness holds and a newline.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A parsed `add-checkpoint` request body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size of the checkpoint the client believes the witness holds.
    pub old: u64,
    /// RFC 6962 consistency proof from `old` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, verbatim.
    pub checkpoint: String,
}

/// Why a request body is malformed (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed add-checkpoint request: {0}")]
pub struct MalformedRequest(pub &'static str);

impl AddCheckpoint {
    /// Parses a request body strictly: every line ends in a newline, the size is canonical
    /// decimal, each proof line is one base64 hash.
    pub fn parse(body: &[u8]) -> Result<Self, MalformedRequest> {
        if body.len() > MAX_REQUEST_BYTES {
            return Err(MalformedRequest("body too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| MalformedRequest("not UTF-8"))?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or(MalformedRequest("no empty line before the checkpoint"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(parse_decimal)
            .ok_or(MalformedRequest("first line must be `old <size>`"))?;
        let proof = lines
            .map(|l| decode_hash(l).ok_or(MalformedRequest("a proof line is not a base64 hash")))
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(MalformedRequest("more than 63 proof lines"));
        }
        Ok(AddCheckpoint {
            old,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// The request body.
    pub fn format(&self) -> String {
        let mut out = format!("old {}\n", self.old);
        for h in &self.proof {
            out.push_str(&B64.encode(h));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }
}

/// Why a witness refuses to cosign a checkpoint whose log signature verified.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// `old` is larger than the checkpoint (400).
    #[error("old size {old} is larger than the checkpoint size {size}")]
    OldAfterSize {
        /// The request's old size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// `old` is not the size the witness holds (409, body: `known`).
    #[error("old size {old} is not the size of the latest cosigned checkpoint, {known}")]
    Stale {
        /// The request's old size.
        old: u64,
        /// The size the witness holds.
        known: u64,
    },
    /// Same size as held, another root: a fork (409, body: `known`).
    #[error("a different root for size {known}, which was cosigned before")]
    Fork {
        /// The size the witness holds.
        known: u64,
    },
    /// The consistency proof does not show the checkpoint extends the held one (422).
    #[error("the consistency proof from {old} to {size} does not verify: {reason}")]
    BadProof {
        /// The held size.
        old: u64,
        /// The checkpoint's size.
        size: u64,
        /// What failed.
        reason: String,
    },
}

impl Refusal {
    /// The HTTP status tlog-witness gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::OldAfterSize { .. } => 400,
            Refusal::Stale { .. } | Refusal::Fork { .. } => 409,
            Refusal::BadProof { .. } => 422,
        }
    }

    /// The size to answer a 409 with (`text/x.tlog.size`).
    pub fn known_size(&self) -> Option<u64> {
        match self {
            Refusal::Stale { known, .. } | Refusal::Fork { known } => Some(*known),
            _ => None,
        }
    }

    /// Whether the refused checkpoint, signed by the log, contradicts one cosigned before on
    /// its face: the log signed two roots for one size.
    pub fn is_fork(&self) -> bool {
        matches!(self, Refusal::Fork { .. })
    }
}

/// Decides whether a witness holding `held` (the size and root it last cosigned for this
/// origin; None if never) may cosign `checkpoint`, whose log signature already verified, given
/// the request's `old` size and `proof` (tlog-witness, in the order it lists the checks).
pub fn judge(
    held: Option<(u64, Hash)>,
    old: u64,
    proof: &[Hash],
    checkpoint: &Checkpoint,
) -> Result<(), Refusal> {
    let size = checkpoint.size;
    if old > size {
        return Err(Refusal::OldAfterSize { old, size });
    }
    let known = held.map_or(0, |(s, _)| s);
    if old != known {
        return Err(Refusal::Stale { old, known });
    }
    let held_root = match held {
        Some((held_size, root)) if held_size == size => {
            return if checkpoint.root == root {
                Ok(())
            } else {
                Err(Refusal::Fork { known })
            };
        }
        Some((held_size, root)) if held_size > 0 => root,
        // Nothing cosigned yet, or only the empty tree: the proof from 0 must be empty.
        _ if proof.is_empty() => return Ok(()),
        _ => {
            return Err(Refusal::BadProof {
                old,
                size,
                reason: "the proof from size 0 must be empty".into(),
            })
        }
    };
    verify_consistency(old, size, proof, &held_root, &checkpoint.root).map_err(|e| {
        Refusal::BadProof {
            old,
            size,
            reason: e.to_string(),
        }
    })
}
