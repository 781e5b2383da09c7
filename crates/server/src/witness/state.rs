//! The witness's durable state: per log, the last checkpoint it cosigned, as the log signed it,
//! in `<state>/<hex(SHA-256(origin))>.checkpoint` (written atomically and fsynced before the
//! cosignature is returned); refused forks in `<state>/evidence/`. The directory belongs to one
//! process at a time (an exclusive lock on `<state>/witness.lock`).

use btlog_client::file::{self, Access};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle::Hash;
use btlog_core::note::Verifier;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Fork evidence files kept at most.
const MAX_EVIDENCE: usize = 1000;

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or locking failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A stored checkpoint no longer verifies with its log's key.
    #[error("{}: the stored checkpoint does not verify with the log key: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The last checkpoint cosigned for one log.
#[derive(Clone, Debug)]
pub(super) struct Held {
    pub size: u64,
    pub root: Hash,
    /// The checkpoint note as the log signed it.
    pub note: String,
}

/// Every followed log's held checkpoint, each behind its own lock.
pub(super) struct States {
    dir: PathBuf,
    held: HashMap<String, Mutex<Option<Held>>>,
    _lock: std::fs::File,
}

/// `<state>/<hex(SHA-256(origin))>.checkpoint`: origins are arbitrary key names, never paths.
pub(super) fn path_for(dir: &Path, origin: &str) -> PathBuf {
    dir.join(format!(
        "{}.checkpoint",
        hex::encode(Sha256::digest(origin.as_bytes()))
    ))
}

impl States {
    /// Creates or opens `dir` (mode 0700), locks it, and loads each log's held checkpoint.
    pub fn open(dir: &Path, logs: &HashMap<String, Verifier>) -> Result<States, StateError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        file::create_private_dir(dir).map_err(io(dir))?;
        let lock_path = dir.join("witness.lock");
        let lock = file::try_lock_exclusive(&lock_path).map_err(io(&lock_path))?;
        let mut held = HashMap::new();
        for (origin, log) in logs {
            let path = path_for(dir, origin);
            let state = match std::fs::read_to_string(&path) {
                Ok(note) => {
                    let (c, _) = Checkpoint::verify(note.as_bytes(), log).map_err(|e| {
                        StateError::Corrupt {
                            path: path.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    Some(Held {
                        size: c.size,
                        root: c.root,
                        note,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&path)(e)),
            };
            held.insert(origin.clone(), Mutex::new(state));
        }
        Ok(States {
            dir: dir.to_owned(),
            held,
            _lock: lock,
        })
    }

    /// The held checkpoint of `origin` (a configured log), locked until the guard drops.
    pub fn lock(&self, origin: &str) -> MutexGuard<'_, Option<Held>> {
        // Origins come from the configured logs only; the caller checked it is one.
        self.held[origin]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `held` the durable state of `origin`.
    pub fn save(&self, origin: &str, held: &Held) -> Result<(), StateError> {
        let path = path_for(&self.dir, origin);
        file::write_atomic(&path, held.note.as_bytes(), Access::Public)
            .map_err(|source| StateError::Io { path, source })
    }

    /// Keeps two checkpoints the log signed for one size with different roots, in the
    /// `btlog-monitor verify-evidence` format. Failing to write it is logged, never fatal.
    pub fn keep_fork_evidence(&self, log: &Verifier, cosigned: &str, refused: &str) {
        let evidence = json!({
            "format": "btlog-monitor-evidence/v1",
            "vkey": log.vkey(),
            "reason": "a witness was asked to cosign a second root for a size it had cosigned",
            "checkpoint_a": cosigned,
            "checkpoint_b": refused,
        });
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = self.dir.join("evidence");
        // Only the log's key can sign forks, but a log that does so endlessly must not fill
        // the witness's disk: the first MAX_EVIDENCE prove the point.
        let kept = std::fs::read_dir(&dir).map_or(0, |d| d.count());
        if kept >= MAX_EVIDENCE {
            tracing::warn!(
                origin = log.name(),
                "fork evidence not kept: {MAX_EVIDENCE} files already"
            );
            return;
        }
        let path = dir.join(format!(
            "{}-{nanos}.json",
            hex::encode(&Sha256::digest(log.name().as_bytes())[..8])
        ));
        let written = file::create_private_dir(&dir).and_then(|()| {
            file::create_new(&path, evidence.to_string().as_bytes(), Access::Public)
        });
        match written {
            Ok(()) => {
                tracing::warn!(origin = log.name(), path = %path.display(), "fork evidence kept")
            }
            Err(e) => {
                tracing::error!(origin = log.name(), error = %e, "keeping fork evidence failed")
            }
        }
    }
}
