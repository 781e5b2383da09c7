//! C2SP signed notes with Ed25519 signatures and `cosignature/v1` witness cosignatures (PROTOCOL.md §3).
//!
//! A note is a text ending in `\n`, a blank line, then signature lines
//! `— <key name> base64(key id (4 bytes, big-endian) || signature)`. Parsing is strict: every
//! accepted note formats back to the same bytes. Limits: [`MAX_NOTE_BYTES`] and
//! [`MAX_SIGNATURES`] (C2SP requires at least 16 signatures to be accepted).
//!
//! Verification ([`Note::verify`]) follows C2SP signed-note: signatures whose (name, key id)
//! match no known key are ignored; a matching signature that fails rejects the whole note; at
//! least one known signature must verify. Ed25519 signatures are checked with
//! `verify_strict` (no small-order keys, no malleable signatures).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Largest note accepted, in bytes.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines accepted on one note.
pub const MAX_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";
const ED25519_SIG_LEN: usize = 64;
const COSIG_LEN: usize = 8 + ED25519_SIG_LEN;

/// Why a note, key or signature was refused (PROTOCOL.md §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note is longer than [`MAX_NOTE_BYTES`].
    #[error("note is {0} bytes, more than the {MAX_NOTE_BYTES} allowed")]
    TooLarge(usize),
    /// The note is not UTF-8.
    #[error("note is not valid UTF-8")]
    NotUtf8,
    /// The note holds an ASCII control character other than newline.
    #[error("note contains a control character")]
    ControlCharacter,
    /// The text is empty or does not end in a newline.
    #[error("note text must be non-empty and end in a newline")]
    BadText,
    /// There is no blank line between text and signatures.
    #[error("note has no blank line before its signatures")]
    MissingSeparator,
    /// There are no signature lines.
    #[error("note has no signatures")]
    NoSignatures,
    /// There are more than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A signature line (1-based among signature lines) is malformed.
    #[error("signature line {line}: {reason}")]
    MalformedSignature {
        /// Which signature line.
        line: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A key name is empty or holds a space, a `+` or a control character.
    #[error("invalid key name (must be non-empty, without spaces, `+` or control characters)")]
    InvalidKeyName,
    /// A verifier key is not `name+hex(keyid)+base64(type || key)`.
    #[error("malformed verifier key: {0}")]
    MalformedVkey(&'static str),
    /// The signature type byte is neither 0x01 (Ed25519) nor 0x04 (cosignature/v1).
    #[error("unsupported signature type 0x{0:02x}")]
    UnknownKeyType(u8),
    /// The key id stated in a key does not match the key.
    #[error("key id {stated:08x} does not match the key (computed {computed:08x})")]
    KeyIdMismatch {
        /// Written in the key.
        stated: u32,
        /// Derived from name, type and public key.
        computed: u32,
    },
    /// An Ed25519 key was used where a cosigner key is required, or the reverse.
    #[error("key {0} is of the wrong type for this operation")]
    WrongKeyType(String),
    /// A cosignature timestamp is above 2^63 - 1.
    #[error("cosignature timestamp above 2^63-1")]
    TimestampTooLarge,
    /// A signature from a known key does not verify.
    #[error("signature by {name}+{key_id:08x} does not verify")]
    BadSignature {
        /// Key name of the failing signature.
        name: String,
        /// Key id of the failing signature.
        key_id: u32,
    },
    /// No signature from any known key.
    #[error("note is not signed by any known key")]
    NoKnownSignature,
}

/// Signature types this crate supports (C2SP signed-note §Signature types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// 0x01, plain Ed25519 over the note text: log keys.
    Ed25519,
    /// 0x04, timestamped Ed25519 `cosignature/v1`: witness keys.
    Cosignature,
}

impl KeyType {
    /// The signature type byte.
    pub const fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => 0x01,
            KeyType::Cosignature => 0x04,
        }
    }

    /// The key type of a type byte.
    pub fn from_byte(b: u8) -> Result<Self, NoteError> {
        match b {
            0x01 => Ok(KeyType::Ed25519),
            0x04 => Ok(KeyType::Cosignature),
            other => Err(NoteError::UnknownKeyType(other)),
        }
    }
}

/// Key ID = SHA-256(name || 0x0A || type || 32-byte public key)[:4], big-endian (PROTOCOL.md §3).
pub fn key_id(name: &str, key_type: KeyType, key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', key_type.byte()]);
    h.update(key.as_bytes());
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether `name` is a valid key name: non-empty, no Unicode spaces, `+` or control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c == '+' || c.is_whitespace() || c.is_control())
}

fn check_key_name(name: &str) -> Result<(), NoteError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(NoteError::InvalidKeyName)
    }
}

/// The message a `cosignature/v1` signs: `cosignature/v1\ntime <t>\n` + note text (C2SP
/// tlog-cosignature).
pub fn cosignature_message(timestamp: u64, text: &str) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}time {timestamp}\n{text}").into_bytes()
}

/// A named private key that signs notes (PROTOCOL.md §3); Ed25519 for logs, cosignature for witnesses.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_type: KeyType,
    key: SigningKey,
    id: u32,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}+{:08x})", self.name, self.id)
    }
}

impl Signer {
    /// An Ed25519 (type 0x01) note signer, as a log uses for its checkpoints.
    pub fn new(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        Self::with_type(name, KeyType::Ed25519, key)
    }

    /// A `cosignature/v1` (type 0x04) signer, as a witness uses.
    pub fn cosigner(name: &str, key: SigningKey) -> Result<Self, NoteError> {
        Self::with_type(name, KeyType::Cosignature, key)
    }

    fn with_type(name: &str, key_type: KeyType, key: SigningKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let id = key_id(name, key_type, &key.verifying_key());
        Ok(Signer {
            name: name.to_owned(),
            key_type,
            key,
            id,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The signature type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The private key (for writing key files).
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// The matching public verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_type: self.key_type,
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    fn require(&self, key_type: KeyType) -> Result<(), NoteError> {
        if self.key_type == key_type {
            Ok(())
        } else {
            Err(NoteError::WrongKeyType(self.name.clone()))
        }
    }

    fn line(&self, bytes: Vec<u8>) -> Signature {
        Signature {
            name: self.name.clone(),
            key_id: self.id,
            bytes,
        }
    }
}

/// A named public key that checks note signatures (PROTOCOL.md §3), parsed from or formatted as a
/// vkey `name+hex(keyid)+base64(type || public key)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_type: KeyType,
    key: VerifyingKey,
    id: u32,
}

impl Verifier {
    /// A verifier for `key` under `name`.
    pub fn new(name: &str, key_type: KeyType, key: VerifyingKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let id = key_id(name, key_type, &key);
        Ok(Verifier {
            name: name.to_owned(),
            key_type,
            key,
            id,
        })
    }

    /// Parses a vkey (types 0x01 and 0x04), checking the stated key id against the key.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        let mut parts = vkey.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(NoteError::MalformedVkey("expected name+keyid+key")),
        };
        check_key_name(name)?;
        let stated = parse_key_id_hex(id_hex)?;
        let raw = B64
            .decode(key_b64)
            .map_err(|_| NoteError::MalformedVkey("key is not base64"))?;
        let (&type_byte, key_bytes) = raw
            .split_first()
            .ok_or(NoteError::MalformedVkey("empty key"))?;
        let key_type = KeyType::from_byte(type_byte)?;
        let key_bytes: &[u8; 32] = key_bytes
            .try_into()
            .map_err(|_| NoteError::MalformedVkey("public key is not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(key_bytes)
            .map_err(|_| NoteError::MalformedVkey("not an Ed25519 public key"))?;
        let verifier = Verifier::new(name, key_type, key)?;
        if verifier.id != stated {
            return Err(NoteError::KeyIdMismatch {
                stated,
                computed: verifier.id,
            });
        }
        Ok(verifier)
    }

    /// The vkey text.
    pub fn vkey(&self) -> String {
        let mut raw = vec![self.key_type.byte()];
        raw.extend_from_slice(self.key.as_bytes());
        format!("{}+{:08x}+{}", self.name, self.id, B64.encode(raw))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The signature type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    fn matches(&self, sig: &Signature) -> bool {
        sig.name == self.name && sig.key_id == self.id
    }

    /// Checks `sig` over `text`; returns the cosignature timestamp for type 0x04.
    fn check(&self, text: &str, sig: &Signature) -> Result<Option<u64>, NoteError> {
        let failed = || NoteError::BadSignature {
            name: sig.name.clone(),
            key_id: sig.key_id,
        };
        let (timestamp, message, raw) = match self.key_type {
            KeyType::Ed25519 => (None, text.as_bytes().to_vec(), sig.bytes.as_slice()),
            KeyType::Cosignature => {
                let (ts, raw) = split_cosignature(&sig.bytes).ok_or_else(failed)?;
                (Some(ts), cosignature_message(ts, text), raw)
            }
        };
        let raw: &[u8; ED25519_SIG_LEN] = raw.try_into().map_err(|_| failed())?;
        self.key
            .verify_strict(&message, &EdSignature::from_bytes(raw))
            .map_err(|_| failed())?;
        Ok(timestamp)
    }
}

impl FromStr for Verifier {
    type Err = NoteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verifier::parse(s)
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.vkey())
    }
}

/// Parses exactly 8 lowercase hex digits as a key id.
pub(crate) fn parse_key_id_hex(s: &str) -> Result<u32, NoteError> {
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if s.len() != 8 || !s.bytes().all(lower_hex) {
        return Err(NoteError::MalformedVkey(
            "key id must be 8 lowercase hex digits",
        ));
    }
    u32::from_str_radix(s, 16).map_err(|_| NoteError::MalformedVkey("bad key id"))
}

/// Splits a cosignature/v1 payload into its big-endian timestamp and Ed25519 signature.
fn split_cosignature(bytes: &[u8]) -> Option<(u64, &[u8])> {
    if bytes.len() != COSIG_LEN {
        return None;
    }
    let (ts, sig) = bytes.split_at(8);
    let ts = u64::from_be_bytes(ts.try_into().ok()?);
    (ts <= i64::MAX as u64).then_some((ts, sig))
}

/// One signature line: `— <name> base64(key id || bytes)` (PROTOCOL.md §3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Key name.
    pub name: String,
    /// Key id.
    pub key_id: u32,
    /// The signature after the key id (64 bytes for Ed25519, 72 for cosignature/v1).
    pub bytes: Vec<u8>,
}

impl Signature {
    /// Parses one line without its final newline; `line` numbers the error.
    pub fn parse_line(text: &str, line: usize) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::MalformedSignature { line, reason };
        let rest = text
            .strip_prefix(SIG_PREFIX)
            .ok_or(bad("must start with an em dash and a space"))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(bad("must be `— <name> <base64>`"))?;
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| bad("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature shorter than 5 bytes"));
        }
        let (id, bytes) = raw.split_at(4);
        Ok(Signature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            bytes: bytes.to_vec(),
        })
    }

    /// The line, with its final newline.
    pub fn format_line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.bytes);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(raw))
    }

    /// The timestamp, if the bytes have the shape of a cosignature/v1 (8 + 64 bytes).
    pub fn cosignature_timestamp(&self) -> Option<u64> {
        split_cosignature(&self.bytes).map(|(ts, _)| ts)
    }
}

/// A signature that verified against a known key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Key name.
    pub name: String,
    /// Key id.
    pub key_id: u32,
    /// Signature type of the key.
    pub key_type: KeyType,
    /// Cosignature time (POSIX seconds), for type 0x04.
    pub timestamp: Option<u64>,
}

/// A signed note: text and signature lines (PROTOCOL.md §3, C2SP signed-note).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<Signature>,
}

impl Note {
    /// An unsigned note over `text`, which must be non-empty, end in `\n` and hold no control
    /// characters other than newline.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_chars(text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::BadText);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note strictly; the result formats back to exactly `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(bytes.len()));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        check_chars(s)?;
        let split = s.rfind("\n\n").ok_or(NoteError::MissingSeparator)?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        let signatures = parse_signature_block(sigs)?;
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, with its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[Signature] {
        &self.signatures
    }

    /// Adds an Ed25519 signature by `signer`, replacing an earlier one by the same key.
    pub fn sign(&mut self, signer: &Signer) -> Result<(), NoteError> {
        signer.require(KeyType::Ed25519)?;
        let sig = signer.key.sign(self.text.as_bytes()).to_bytes().to_vec();
        self.push(signer.line(sig))
    }

    /// Adds a `cosignature/v1` by `signer` at `timestamp` (POSIX seconds, ≤ 2^63-1).
    pub fn cosign(&mut self, signer: &Signer, timestamp: u64) -> Result<(), NoteError> {
        signer.require(KeyType::Cosignature)?;
        if timestamp > i64::MAX as u64 {
            return Err(NoteError::TimestampTooLarge);
        }
        let message = cosignature_message(timestamp, &self.text);
        let mut bytes = timestamp.to_be_bytes().to_vec();
        bytes.extend_from_slice(&signer.key.sign(&message).to_bytes());
        self.push(signer.line(bytes))
    }

    fn push(&mut self, sig: Signature) -> Result<(), NoteError> {
        let mut signatures = self.signatures.clone();
        signatures.retain(|s| s.name != sig.name || s.key_id != sig.key_id);
        signatures.push(sig);
        if signatures.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        let candidate = Note {
            text: self.text.clone(),
            signatures,
        };
        let len = candidate.format().len();
        if len > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge(len));
        }
        *self = candidate;
        Ok(())
    }

    /// The note text: text, blank line, signature lines.
    pub fn format(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.format_line());
        }
        out
    }

    /// Verifies against `known` keys (C2SP signed-note): unknown signatures are ignored, a
    /// failing known one rejects the note, and at least one must verify. Returns the verified
    /// keys, each once, in note order.
    pub fn verify(&self, known: &[&Verifier]) -> Result<Vec<Verified>, NoteError> {
        let mut verified: Vec<Verified> = Vec::new();
        for sig in &self.signatures {
            let Some(v) = known.iter().find(|v| v.matches(sig)) else {
                continue;
            };
            let timestamp = v.check(&self.text, sig)?;
            if !verified
                .iter()
                .any(|o| o.name == sig.name && o.key_id == sig.key_id)
            {
                verified.push(Verified {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                    key_type: v.key_type,
                    timestamp,
                });
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature);
        }
        Ok(verified)
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.format())
    }
}

fn check_chars(s: &str) -> Result<(), NoteError> {
    if s.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge(s.len()));
    }
    if s.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(NoteError::ControlCharacter);
    }
    if s.is_empty() {
        return Err(NoteError::BadText);
    }
    Ok(())
}

fn parse_signature_block(block: &str) -> Result<Vec<Signature>, NoteError> {
    if block.is_empty() {
        return Err(NoteError::NoSignatures);
    }
    let body = block
        .strip_suffix('\n')
        .ok_or(NoteError::MalformedSignature {
            line: block.split('\n').count(),
            reason: "missing final newline",
        })?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::TooManySignatures);
    }
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| Signature::parse_line(l, i + 1))
        .collect()
}
