//! Log key files (SPEC §3): private keys in the Go `golang.org/x/mod/sumdb/note` text format
//! `PRIVATE+KEY+<name>+<hex(keyid)>+<base64(0x01 || 32-byte seed)>`, and vkeys.
//!
//! Private key files are created with mode 0600 and never overwritten ([`write_private_key`]
//! refuses an existing path), and [`load_private_key`] refuses a file that group or others may
//! access (`mode & 0o077 != 0`). Both files hold the key text followed by one newline; loading
//! accepts the text with or without that newline.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;

use crate::note::{parse_key_id_hex, KeyType, NoteError, Signer, Verifier};

const PRIVATE_PREFIX: &str = "PRIVATE+KEY+";

/// Why a key could not be created, written or loaded (SPEC §3).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `write_private_key` never overwrites a key.
    #[error("{}: already exists; refusing to overwrite a key file", .0.display())]
    Exists(PathBuf),
    /// The private key file may be read by group or others.
    #[error(
        "{}: permissions {mode:04o} let group or others access the private key; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
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
    if type_byte != KeyType::Ed25519.byte() {
        return Err(NoteError::UnknownKeyType(type_byte).into());
    }
    let seed: [u8; 32] = seed
        .try_into()
        .map_err(|_| KeyError::MalformedPrivateKey("seed is not 32 bytes"))?;
    Ok(Signer::new(name, SigningKey::from_bytes(&seed))?)
}

/// Writes the private key file with mode 0600; refuses to overwrite an existing file.
pub fn write_private_key(path: &Path, signer: &Signer) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists(path.to_owned()),
            _ => io_error(path, e),
        })?;
    let text = format!("{}\n", format_private_key(signer));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Loads a private key file, refusing one that group or others can access.
pub fn load_private_key(path: &Path) -> Result<Signer, KeyError> {
    let meta = fs::metadata(path).map_err(|e| io_error(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    parse_private_key(&read_text(path)?)
}

/// Parses a vkey (one optional final newline).
pub fn parse_vkey(text: &str) -> Result<Verifier, KeyError> {
    Ok(Verifier::parse(text.strip_suffix('\n').unwrap_or(text))?)
}

/// Loads a vkey file.
pub fn load_vkey(path: &Path) -> Result<Verifier, KeyError> {
    parse_vkey(&read_text(path)?)
}

/// Writes (or replaces) a vkey file: the vkey and a newline. Vkeys are public.
pub fn write_vkey(path: &Path, verifier: &Verifier) -> Result<(), KeyError> {
    fs::write(path, format!("{}\n", verifier.vkey())).map_err(|e| io_error(path, e))
}

fn read_text(path: &Path) -> Result<String, KeyError> {
    fs::read_to_string(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: std::io::Error) -> KeyError {
    KeyError::Io {
        path: path.to_owned(),
        source,
    }
}
