//! The newest verified checkpoint of each log, kept on disk between runs.
//!
//! One file per log origin, `<dir>/<origin with unsafe bytes as _>-<8 hex of SHA-256(origin)>.checkpoint`,
//! holding the signed note verbatim. Files are replaced atomically ([`crate::file::write_atomic`]:
//! an exclusively created temp file that is never a followed link, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new checkpoint. Every note read back is
//! verified again with the caller's vkey: the state is a cache of verified facts, never trusted
//! blindly.
//!
//! Several installers may share the directory: [`CheckpointState::lock`] takes an exclusive
//! advisory lock ([`file::lock_exclusive`]: `flock` on Unix, never through a symlink) on
//! `<same name>.lock`, held by a caller across load, compare and save, so that of two
//! concurrent runs the second compares against what the first stored and the stored
//! checkpoint only moves forward.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use btlog_core::checkpoint::{Checkpoint, CheckpointError};
use btlog_core::note::Verifier;

use crate::file::{self, Access};

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing a state file failed.
    #[error("checkpoint state {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored checkpoint does not verify with the given key.
    #[error(
        "checkpoint state {}: the stored checkpoint does not verify with this vkey ({source}); \
         a different key for the same origin? Move the file away only if you trust the new key",
        path.display()
    )]
    Unverifiable {
        /// The state file.
        path: PathBuf,
        /// Why it does not verify.
        source: CheckpointError,
    },
    /// No state directory given and neither `$XDG_STATE_HOME` nor `$HOME` is set.
    #[error("no state directory: set --state, $XDG_STATE_HOME or $HOME")]
    NoDefault,
}

/// An exclusive lock on the state of one origin, released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

/// A stored, verified checkpoint and its note text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The parsed checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note, verbatim.
    pub note: String,
}

/// The directory holding the newest verified checkpoint of each log.
#[derive(Clone, Debug)]
pub struct CheckpointState {
    dir: PathBuf,
}

impl CheckpointState {
    /// State kept in `dir` (created on first save, mode 0700).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CheckpointState { dir: dir.into() }
    }

    /// `$XDG_STATE_HOME/btlog`, else `$HOME/.local/state/btlog`.
    pub fn default_dir() -> Result<PathBuf, StateError> {
        let non_empty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
        if let Some(xdg) = non_empty("XDG_STATE_HOME") {
            return Ok(PathBuf::from(xdg).join("btlog"));
        }
        non_empty("HOME")
            .map(|home| PathBuf::from(home).join(".local/state/btlog"))
            .ok_or(StateError::NoDefault)
    }

    /// The file that holds the checkpoint of `origin`.
    pub fn path(&self, origin: &str) -> PathBuf {
        self.dir
            .join(format!("{}.checkpoint", origin_file_name(origin)))
    }

    /// Waits for the exclusive lock on the state of `origin` (creating the directory and the
    /// lock file, mode 0600, never through a symlink). Hold it across load, compare and save.
    pub async fn lock(&self, origin: &str) -> Result<StateLock, StateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        file::create_private_dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(format!("{}.lock", origin_file_name(origin)));
        // The lock blocks while another run holds it: off the async threads.
        let lock_path = path.clone();
        let locked = tokio::task::spawn_blocking(move || file::lock_exclusive(&lock_path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        Ok(StateLock {
            _file: locked.map_err(io(&path))?,
        })
    }

    /// The stored checkpoint of the log of `log`'s key name, verified with `log`.
    pub fn load(&self, log: &Verifier) -> Result<Option<Stored>, StateError> {
        let path = self.path(log.name());
        let note = match fs::read_to_string(&path) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        match Checkpoint::verify(note.as_bytes(), log) {
            Ok((checkpoint, _)) => Ok(Some(Stored { checkpoint, note })),
            Err(source) => Err(StateError::Unverifiable { path, source }),
        }
    }

    /// Replaces the stored checkpoint of `origin` with `note` (already verified by the caller).
    pub fn save(&self, origin: &str, note: &str) -> Result<(), StateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        file::create_private_dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.path(origin);
        file::write_atomic(&path, note.as_bytes(), Access::Private).map_err(io(&path))
    }
}

/// A file name for `origin`: safe characters kept, others replaced by `_`, and 8 hex digits of
/// SHA-256(origin) so that different origins never share a name.
pub fn origin_file_name(origin: &str) -> String {
    let safe: String = origin
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    format!(
        "{safe}-{}",
        hex::encode(&Sha256::digest(origin.as_bytes())[..4])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe_and_distinct() {
        let s = CheckpointState::new("/s");
        let a = s.path("example.com/log");
        let b = s.path("example.com_log");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new("/s")));
        let name = s.path("../x");
        assert!(name
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(".._x-")));
        assert_eq!(name.parent(), Some(Path::new("/s")));
    }
}
