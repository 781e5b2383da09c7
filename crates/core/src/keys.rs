//! Key text formats (PROTOCOL.md §3): private keys in the Go `golang.org/x/mod/sumdb/note` text format
//! `PRIVATE+KEY+<name>+<hex(keyid)>+<base64(type || 32-byte seed)>` (type 0x01 for a log's
//! Ed25519 key, 0x04 for a witness's cosignature key), and vkeys. Key files (mode
//! 0600, never overwritten) are `btlog_client::keyfile`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;

use crate::note::{parse_key_id_hex, KeyType, NoteError, Signer, Verifier};

const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// Why key text could not be made or parsed (PROTOCOL.md §3).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The private key text is malformed.
    #[error("malformed private key: {0}")]
    MalformedPrivateKey(&'static str),
    /// The stated key id does not match the key.
    #[error("private key id {stated:08x} does not match the key (computed {computed:08x})")]
    KeyIdMismatch {
        /// Written in the key.
        stated: u32,
        /// Derived from name and key.
        computed: u32,
    },
    /// The key name is invalid, or a vkey is malformed.
    #[error(transparent)]
    Note(#[from] NoteError),
}

/// Creates a fresh Ed25519 log key named `origin` from the OS random generator.
pub fn generate(origin: &str) -> Result<Signer, KeyError> {
    Ok(Signer::new(origin, SigningKey::generate(&mut OsRng))?)
}

/// Creates a fresh `cosignature/v1` witness key named `name` (tlog-cosignature).
pub fn generate_cosigner(name: &str) -> Result<Signer, KeyError> {
    Ok(Signer::cosigner(name, SigningKey::generate(&mut OsRng))?)
}

/// The private key text, `PRIVATE+KEY+name+hex(keyid)+base64(type || seed)` (no newline).
pub fn format_private_key(signer: &Signer) -> String {
    let mut raw = vec![signer.key_type().byte()];
    raw.extend_from_slice(signer.signing_key().as_bytes());
    format!(
        "{PRIVATE_PREFIX}{}+{:08x}+{}",
        signer.name(),
        signer.key_id(),
        B64.encode(raw)
    )
}

/// Parses private key text (one optional final newline), checking the key id.
pub fn parse_private_key(text: &str) -> Result<Signer, KeyError> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let rest = text
        .strip_prefix(PRIVATE_PREFIX)
        .ok_or(KeyError::MalformedPrivateKey(
            "does not start with PRIVATE+KEY+",
        ))?;
    let mut parts = rest.splitn(3, '+');
    let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
        (Some(n), Some(i), Some(k)) => (n, i, k),
        _ => {
            return Err(KeyError::MalformedPrivateKey(
                "expected PRIVATE+KEY+name+keyid+key",
            ))
        }
    };
    let stated = parse_key_id_hex(id_hex)?;
    let raw = B64
        .decode(key_b64)
        .map_err(|_| KeyError::MalformedPrivateKey("key is not base64"))?;
    let signer = signer_from_raw(name, &raw)?;
    if signer.key_id() != stated {
        return Err(KeyError::KeyIdMismatch {
            stated,
            computed: signer.key_id(),
        });
    }
    Ok(signer)
}

fn signer_from_raw(name: &str, raw: &[u8]) -> Result<Signer, KeyError> {
    let (&type_byte, seed) = raw
        .split_first()
        .ok_or(KeyError::MalformedPrivateKey("empty key"))?;
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| KeyError::MalformedPrivateKey("seed is not 32 bytes"))?;
    let key = SigningKey::from_bytes(&seed);
    Ok(match KeyType::from_byte(type_byte)? {
        KeyType::Ed25519 => Signer::new(name, key)?,
        KeyType::Cosignature => Signer::cosigner(name, key)?,
    })
}

/// Parses a vkey (one optional final newline).
pub fn parse_vkey(text: &str) -> Result<Verifier, KeyError> {
    Ok(Verifier::parse(text.strip_suffix('\n').unwrap_or(text))?)
}
