//! Signed tree heads: C2SP tlog-checkpoint notes (PROTOCOL.md §3).
//!
//! Body: `<origin>\n<size>\n<base64(root)>\n`, exactly three lines (extension lines are refused),
//! size in decimal without leading zeros, root 32 bytes in canonical standard base64. The origin
//! is the log's key name, so it follows the key-name rules (no spaces, no `+`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::merkle::Hash;
use crate::note::{is_valid_key_name, KeyType, Note, NoteError, Signer, Verifier};

/// Why a checkpoint was refused (PROTOCOL.md §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note around the body is malformed.
    #[error("malformed checkpoint note: {0}")]
    Malformed(NoteError),
    /// The log's signature is missing or does not verify.
    #[error("checkpoint signature: {0}")]
    Signature(NoteError),
    /// The body does not end in a newline.
    #[error("checkpoint body must end in a newline")]
    MissingNewline,
    /// The body has fewer than three lines.
    #[error("checkpoint body is missing its {0} line")]
    MissingLine(&'static str),
    /// The body has lines after the root hash.
    #[error("checkpoint has extension lines, which btlog does not allow")]
    ExtensionLines,
    /// The origin is not a valid key name.
    #[error("checkpoint origin must be a key name (non-empty, no spaces or `+`)")]
    InvalidOrigin,
    /// The size is not a canonical decimal u64.
    #[error("checkpoint size must be a decimal u64 without leading zeros")]
    BadSize,
    /// The root is not canonical base64 of 32 bytes.
    #[error("checkpoint root must be base64 of 32 bytes")]
    BadRoot,
    /// The key name is not the origin.
    #[error("checkpoint origin {origin:?} is not the key name {key:?}")]
    OriginMismatch {
        /// Origin line of the checkpoint.
        origin: String,
        /// Name of the log key.
        key: String,
    },
    /// A log checkpoint must be signed by an Ed25519 (0x01) key.
    #[error("the log key must be an Ed25519 (type 0x01) key")]
    NotLogKey,
}

/// A tree head: origin, tree size and RFC 6962 root hash (PROTOCOL.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin, also its key name.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Merkle tree root at `size`.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parses a note body strictly (three lines, no extensions).
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingNewline)?;
        let mut lines = body.split('\n');
        let mut next = |what| lines.next().ok_or(CheckpointError::MissingLine(what));
        let (origin, size, root) = (next("origin")?, next("size")?, next("root hash")?);
        if lines.next().is_some() {
            return Err(CheckpointError::ExtensionLines);
        }
        if !is_valid_key_name(origin) {
            return Err(CheckpointError::InvalidOrigin);
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size: parse_decimal(size).ok_or(CheckpointError::BadSize)?,
            root: decode_hash(root).ok_or(CheckpointError::BadRoot)?,
        })
    }

    /// Signs with the log key, whose name must be the origin; returns the full note text.
    pub fn sign(&self, signer: &Signer) -> Result<String, CheckpointError> {
        if signer.key_type() != KeyType::Ed25519 {
            return Err(CheckpointError::NotLogKey);
        }
        self.check_origin(signer.name())?;
        let mut note = Note::new(&self.body()).map_err(CheckpointError::Malformed)?;
        note.sign(signer).map_err(CheckpointError::Signature)?;
        Ok(note.format())
    }

    /// Parses a signed checkpoint and verifies the log's signature; the verifier's name must be
    /// the origin. Other signatures (e.g. witness cosignatures) are ignored but kept in the note.
    pub fn verify(note_text: &[u8], log: &Verifier) -> Result<(Self, Note), CheckpointError> {
        if log.key_type() != KeyType::Ed25519 {
            return Err(CheckpointError::NotLogKey);
        }
        let (checkpoint, note) = Self::parse(note_text)?;
        checkpoint.check_origin(log.name())?;
        note.verify(&[log]).map_err(CheckpointError::Signature)?;
        Ok((checkpoint, note))
    }

    /// Parses a signed checkpoint without verifying any signature.
    pub fn parse(note_text: &[u8]) -> Result<(Self, Note), CheckpointError> {
        let note = Note::parse(note_text).map_err(CheckpointError::Malformed)?;
        Ok((Self::parse_body(note.text())?, note))
    }

    fn check_origin(&self, key: &str) -> Result<(), CheckpointError> {
        if self.origin == key {
            return Ok(());
        }
        Err(CheckpointError::OriginMismatch {
            origin: self.origin.clone(),
            key: key.to_owned(),
        })
    }
}

/// Parses an ASCII decimal u64 with no sign and no leading zeros (`0` itself is fine).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// Decodes canonical standard base64 of exactly 32 bytes.
pub fn decode_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok()?.try_into().ok()
}
