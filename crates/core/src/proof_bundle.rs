//! Offline proofs for installers: C2SP tlog-proof `.tlog-proof` files (PROTOCOL.md §5).
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry bytes>
//! index <i>
//! <base64 inclusion proof hash, leaf sibling first>…
//!
//! <the checkpoint note, verbatim, cosignatures included>
//! ```
//!
//! btlog always carries the entry in `extra` (a proof without it cannot be checked against an
//! artifact, so it is refused). Parsing is strict: every accepted proof formats back to the
//! same bytes.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::checkpoint::{decode_hash, parse_decimal, Checkpoint, CheckpointError};
use crate::entry::{Entry, EntryError, Kind};
use crate::merkle::{self, Hash, ProofError};
use crate::note::{KeyType, Note, NoteError, Verified, Verifier};

/// First line of a tlog-proof.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest proof file accepted, in bytes (entry, 64 hashes and a full checkpoint note fit).
pub const MAX_PROOF_BYTES: usize = 256 * 1024;
/// Most inclusion proof hashes (a tree of at most 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a tlog-proof was refused (PROTOCOL.md §5); each variant is one precise reason for a CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofBundleError {
    /// The file is longer than [`MAX_PROOF_BYTES`].
    #[error("proof is {0} bytes, more than the {MAX_PROOF_BYTES} allowed")]
    TooLarge(usize),
    /// The file is not UTF-8.
    #[error("proof is not valid UTF-8")]
    NotUtf8,
    /// The file does not follow the tlog-proof syntax.
    #[error("malformed proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint is malformed, mis-signed, or for another origin.
    #[error(transparent)]
    Checkpoint(CheckpointError),
    /// The index is not below the checkpoint's tree size.
    #[error("entry index {index} is not below the checkpoint tree size {size}")]
    IndexOutOfRange {
        /// Entry index from the proof.
        index: u64,
        /// Tree size from the checkpoint.
        size: u64,
    },
    /// The inclusion proof does not lead from the entry to the checkpoint root.
    #[error("inclusion proof does not match the checkpoint: {0}")]
    Inclusion(ProofError),
    /// The logged entry is not a canonical btlog entry.
    #[error("logged entry is invalid: {0}")]
    Entry(EntryError),
    /// The logged entry is not a `publish`.
    #[error("logged entry is a `{0}`, not a `publish`")]
    NotPublish(Kind),
    /// The logged entry names another artifact than the one claimed.
    #[error("logged {field} is {logged:?}, expected {expected:?}")]
    Mismatch {
        /// `package`, `version`, `file` or `sha256`.
        field: &'static str,
        /// The value the caller holds.
        expected: String,
        /// The value in the log.
        logged: String,
    },
    /// Fewer witnesses cosigned the checkpoint than the policy requires.
    #[error("checkpoint has {got} valid witness cosignatures, {need} required")]
    WitnessQuorum {
        /// Valid cosignatures from the given witnesses.
        got: usize,
        /// Required by the policy.
        need: usize,
    },
    /// A witness cosignature on the checkpoint does not verify.
    #[error("witness cosignature: {0}")]
    Witness(NoteError),
    /// A key given as a witness cannot be one: not a cosignature/v1 key, or the log's own key
    /// or key name.
    #[error("witness key {name}: {reason}")]
    WitnessKey {
        /// The key name.
        name: String,
        /// Why it is not a witness key.
        reason: &'static str,
    },
}

/// What an installer holds and wants proven logged (PROTOCOL.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactClaim {
    /// The purl.
    pub package: String,
    /// The version.
    pub version: String,
    /// The file name.
    pub file: String,
    /// SHA-256 of the artifact, computed locally.
    pub sha256: [u8; 32],
}

/// A successful offline verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The logged entry.
    pub entry: Entry,
    /// The checkpoint that covers it.
    pub checkpoint: Checkpoint,
    /// The witnesses whose cosignatures verified.
    pub witnesses: Vec<Verified>,
}

/// A parsed `.tlog-proof` (PROTOCOL.md §5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// The entry bytes (the `extra` line).
    pub entry: Vec<u8>,
    /// The entry's index in the log.
    pub index: u64,
    /// Inclusion proof hashes, leaf sibling first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note text, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// Assembles a proof from the entry bytes, its index, the inclusion proof (leaf sibling
    /// first) and the signed checkpoint note text that the proof leads to (PROTOCOL.md §5).
    pub fn new(entry: Vec<u8>, index: u64, proof: Vec<Hash>, checkpoint: String) -> Self {
        TlogProof {
            entry,
            index,
            proof,
            checkpoint,
        }
    }

    /// Formats the proof file text.
    pub fn format(&self) -> String {
        let mut out = format!(
            "{HEADER}\nextra {}\nindex {}\n",
            B64.encode(&self.entry),
            self.index
        );
        for hash in &self.proof {
            out.push_str(&B64.encode(hash));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses a proof file strictly; the checkpoint must be a well-formed checkpoint note.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProofBundleError> {
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(ProofBundleError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| ProofBundleError::NotUtf8)?;
        if text.ends_with("\n\n") {
            // The most common way to damage a proof: `jq -r .proof > FILE` adds a newline.
            return Err(ProofBundleError::Malformed(
                "extra blank line at the end: the file must end right after the checkpoint's last signature line (`jq -r` adds a newline; use `jq -j`)",
            ));
        }
        let (head, checkpoint) = text.split_once("\n\n").ok_or(ProofBundleError::Malformed(
            "no blank line before the checkpoint",
        ))?;
        Checkpoint::parse(checkpoint.as_bytes()).map_err(ProofBundleError::Checkpoint)?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(ProofBundleError::Malformed(
                "first line must be `c2sp.org/tlog-proof@v1`",
            ));
        }
        let entry = decode_extra(lines.next())?;
        let index = parse_index(lines.next())?;
        let proof = lines
            .map(decode_proof_hash)
            .collect::<Result<Vec<_>, _>>()?;
        if proof.len() > MAX_PROOF_HASHES {
            return Err(ProofBundleError::Malformed("too many proof hashes"));
        }
        Ok(TlogProof {
            entry,
            index,
            proof,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies offline (PROTOCOL.md §5): the log's checkpoint signature, the inclusion of the entry
    /// under the checkpoint root, and that the entry is a canonical `publish` of `expected`.
    pub fn verify_offline(
        &self,
        log: &Verifier,
        expected: &ArtifactClaim,
    ) -> Result<VerifiedProof, ProofBundleError> {
        self.verify_with_witnesses(log, &[], 0, expected)
    }

    /// [`TlogProof::verify_offline`], and also requires `quorum` valid cosignatures from
    /// `witnesses` on the checkpoint (PROTOCOL.md §3.4, C2SP tlog-cosignature). Witness keys must be
    /// cosignature/v1 keys other than the log's, by key and by name, so the log cannot stand in
    /// for a witness; a key cosigning under several names, or listed twice, counts once.
    pub fn verify_with_witnesses(
        &self,
        log: &Verifier,
        witnesses: &[&Verifier],
        quorum: usize,
        expected: &ArtifactClaim,
    ) -> Result<VerifiedProof, ProofBundleError> {
        let (checkpoint, note) = Checkpoint::verify(self.checkpoint.as_bytes(), log)
            .map_err(ProofBundleError::Checkpoint)?;
        let witnesses = check_witnesses(&note, log, witnesses, quorum)?;
        self.check_inclusion(&checkpoint)?;
        let entry = Entry::parse(&self.entry).map_err(ProofBundleError::Entry)?;
        check_claim(&entry, expected)?;
        Ok(VerifiedProof {
            entry,
            checkpoint,
            witnesses,
        })
    }

    fn check_inclusion(&self, checkpoint: &Checkpoint) -> Result<(), ProofBundleError> {
        if self.index >= checkpoint.size {
            return Err(ProofBundleError::IndexOutOfRange {
                index: self.index,
                size: checkpoint.size,
            });
        }
        let leaf = merkle::leaf_hash(&self.entry);
        merkle::verify_inclusion(
            &leaf,
            self.index,
            checkpoint.size,
            &self.proof,
            &checkpoint.root,
        )
        .map_err(ProofBundleError::Inclusion)
    }
}

fn check_witnesses(
    note: &Note,
    log: &Verifier,
    witnesses: &[&Verifier],
    quorum: usize,
) -> Result<Vec<Verified>, ProofBundleError> {
    if witnesses.is_empty() && quorum == 0 {
        return Ok(Vec::new());
    }
    for w in witnesses {
        let reason = if w.key_type() != KeyType::Cosignature {
            "not a cosignature/v1 key"
        } else if w.public_key() == log.public_key() {
            "the log's own key cannot be a witness"
        } else if w.name() == log.name() {
            "the log's key name cannot be a witness's"
        } else {
            continue;
        };
        return Err(ProofBundleError::WitnessKey {
            name: w.name().to_owned(),
            reason,
        });
    }
    let mut verified = match note.verify(witnesses) {
        Ok(v) => v,
        Err(NoteError::NoKnownSignature) => Vec::new(),
        Err(e) => return Err(ProofBundleError::Witness(e)),
    };
    // One witness per public key, whatever names it signed under.
    let mut keys = Vec::new();
    verified.retain(|v| {
        let key = witnesses
            .iter()
            .find(|w| w.name() == v.name && w.key_id() == v.key_id)
            .map(|w| *w.public_key());
        match key {
            Some(k) if !keys.contains(&k) => {
                keys.push(k);
                true
            }
            _ => false,
        }
    });
    if verified.len() < quorum {
        return Err(ProofBundleError::WitnessQuorum {
            got: verified.len(),
            need: quorum,
        });
    }
    Ok(verified)
}

fn check_claim(entry: &Entry, expected: &ArtifactClaim) -> Result<(), ProofBundleError> {
    if entry.kind != Kind::Publish {
        return Err(ProofBundleError::NotPublish(entry.kind));
    }
    let pairs = [
        ("package", &expected.package, &entry.package),
        ("version", &expected.version, &entry.version),
        ("file", &expected.file, &entry.file),
    ];
    for (field, want, got) in pairs {
        if want != got {
            return Err(mismatch(field, want.clone(), got.clone()));
        }
    }
    if expected.sha256 != entry.sha256 {
        return Err(mismatch(
            "sha256",
            hex::encode(expected.sha256),
            hex::encode(entry.sha256),
        ));
    }
    Ok(())
}

fn mismatch(field: &'static str, expected: String, logged: String) -> ProofBundleError {
    ProofBundleError::Mismatch {
        field,
        expected,
        logged,
    }
}

/// The rest of `line` after `prefix`, or `Malformed(reason)`.
fn value_after<'a>(
    line: Option<&'a str>,
    prefix: &str,
    reason: &'static str,
) -> Result<&'a str, ProofBundleError> {
    line.and_then(|l| l.strip_prefix(prefix))
        .ok_or(ProofBundleError::Malformed(reason))
}

fn decode_extra(line: Option<&str>) -> Result<Vec<u8>, ProofBundleError> {
    const REASON: &str = "second line must be `extra <base64 entry>`";
    let value = value_after(line, "extra ", REASON)?;
    match B64.decode(value) {
        Ok(entry) if !entry.is_empty() => Ok(entry),
        _ => Err(ProofBundleError::Malformed(REASON)),
    }
}

fn parse_index(line: Option<&str>) -> Result<u64, ProofBundleError> {
    const REASON: &str = "third line must be `index <decimal>`";
    let value = value_after(line, "index ", REASON)?;
    parse_decimal(value).ok_or(ProofBundleError::Malformed(REASON))
}

fn decode_proof_hash(line: &str) -> Result<Hash, ProofBundleError> {
    decode_hash(line).ok_or(ProofBundleError::Malformed(
        "inclusion proof lines must be base64 of 32 bytes",
    ))
}
