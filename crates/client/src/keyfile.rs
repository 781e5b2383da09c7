//! Key files (PROTOCOL.md §3): the private key text of [`btlog_core::keys`] in a file
//! created with mode 0600 and never overwritten, and vkey files. A private key that group or
//! others may read is refused. Both files hold the key text and one newline; loading accepts
//! the text with or without it.

use std::io;
use std::path::{Path, PathBuf};

use btlog_core::keys::{self, KeyError};
use btlog_core::note::{Signer, Verifier};

use crate::file::{self, Access};

/// Why a key file could not be written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// [`write_private_key`] never overwrites a key.
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
    /// The file's text is not a key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with its text.
        source: KeyError,
    },
}

/// Writes the private key file with mode 0600; refuses to overwrite an existing file.
pub fn write_private_key(path: &Path, signer: &Signer) -> Result<(), KeyFileError> {
    let text = format!("{}\n", keys::format_private_key(signer));
    file::create_new(path, text.as_bytes(), Access::Private).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_owned()),
        _ => io_error(path, e),
    })
}

/// Loads a private key file, refusing one that group or others can access.
pub fn load_private_key(path: &Path) -> Result<Signer, KeyFileError> {
    if let Some(mode) = file::shared_mode(path).map_err(|e| io_error(path, e))? {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    keys::parse_private_key(&read_text(path)?).map_err(|source| key_error(path, source))
}

/// Loads a vkey file.
pub fn load_vkey(path: &Path) -> Result<Verifier, KeyFileError> {
    keys::parse_vkey(&read_text(path)?).map_err(|source| key_error(path, source))
}

/// Writes (or replaces) a vkey file: the vkey and a newline. Vkeys are public.
pub fn write_vkey(path: &Path, verifier: &Verifier) -> Result<(), KeyFileError> {
    let text = format!("{}\n", verifier.vkey());
    file::write_atomic(path, text.as_bytes(), Access::Public).map_err(|e| io_error(path, e))
}

/// Reads a `--vkey` argument: the vkey text itself, or the path of a file holding it.
pub fn vkey_arg(arg: &str) -> Result<Verifier, KeyFileError> {
    match keys::parse_vkey(arg.trim()) {
        Ok(verifier) => Ok(verifier),
        Err(_) => load_vkey(Path::new(arg)),
    }
}

fn read_text(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, source: io::Error) -> KeyFileError {
    KeyFileError::Io {
        path: path.to_owned(),
        source,
    }
}

fn key_error(path: &Path, source: KeyError) -> KeyFileError {
    KeyFileError::Key {
        path: path.to_owned(),
        source,
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn private_key_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.key");
        let log = keys::generate("example.com/log").expect("key");
        write_private_key(&path, &log).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = load_private_key(&path).expect("load");
        assert_eq!(loaded.verifier(), log.verifier());
        assert!(matches!(
            write_private_key(&path, &log),
            Err(KeyFileError::Exists(_))
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_private_key(&path).expect_err("refused");
        assert!(matches!(
            err,
            KeyFileError::InsecurePermissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        let vkey_path = dir.path().join("log.vkey");
        write_vkey(&vkey_path, &log.verifier()).expect("write vkey");
        assert_eq!(load_vkey(&vkey_path).expect("load vkey"), log.verifier());
        std::fs::write(&vkey_path, "not a vkey\n").expect("garble");
        let err = load_vkey(&vkey_path).expect_err("garbled");
        assert!(err.to_string().contains("log.vkey"), "{err}");
    }
}
