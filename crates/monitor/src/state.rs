//! Persistent per-log monitor state: the last verified checkpoint with the right-edge frontier
//! of its tree, and the audit position reached beyond it with that tree's frontier.
//!
//! Stored as `state.json`, rewritten atomically (temp file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new state, never a torn one. The
//! frontier is the list of complete-subtree hashes that make up the tree (one per set bit of the
//! size, at most 64), all a verifier needs to extend the tree with new leaves.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use btlog_client::file::{self, Access};
use btlog_client::tiles::SignedCheckpoint;
use btlog_core::checkpoint::Checkpoint;
use btlog_core::merkle::{Frontier, Hash, EMPTY_ROOT};
use btlog_core::note::Verifier;

const FORMAT: &str = "btlog-monitor-state/v1";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The state file is not valid.
    #[error("{}: corrupt monitor state: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A save would move the state backwards.
    #[error("refusing to move the monitor state backwards ({0})")]
    Backwards(String),
}

/// One log's monitor state.
#[derive(Clone, Debug)]
pub struct State {
    /// The last checkpoint whose root was recomputed from the log's entries.
    pub checkpoint: SignedCheckpoint,
    /// The frontier of the tree at `checkpoint`.
    pub verified: Frontier,
    /// The frontier at the audit position: leaves already read and checked, whose root is
    /// confirmed when the next checkpoint is reached. Behind the checkpoint only while the
    /// claim index is rebuilt (the log read again from the start up to the checkpoint).
    pub progress: Frontier,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    format: String,
    /// Absent until a first checkpoint was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<String>,
    verified_frontier: Vec<String>,
    position: u64,
    frontier: Vec<String>,
}

impl State {
    /// The state of a log never audited: an empty tree, with no signed checkpoint yet.
    pub fn empty(origin: &str) -> State {
        State {
            checkpoint: SignedCheckpoint {
                checkpoint: Checkpoint {
                    origin: origin.to_owned(),
                    size: 0,
                    root: EMPTY_ROOT,
                },
                note: String::new(),
            },
            verified: Frontier::default(),
            progress: Frontier::default(),
        }
    }

    /// Loads `state.json` from `dir`, re-verifying the checkpoint with `vkey`; the empty state
    /// when there is none yet.
    pub fn load(dir: &Path, vkey: &Verifier) -> Result<State, StateError> {
        let path = dir.join("state.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State::empty(vkey.name()))
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.clone(),
            reason,
        };
        let file: StateFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.format != FORMAT {
            return Err(corrupt(format!("unknown format {:?}", file.format)));
        }
        let mut state = State::empty(vkey.name());
        if let Some(note) = file.checkpoint {
            let (checkpoint, _) =
                Checkpoint::verify(note.as_bytes(), vkey).map_err(|e| corrupt(e.to_string()))?;
            state.checkpoint = SignedCheckpoint { checkpoint, note };
        }
        let checkpoint = &state.checkpoint.checkpoint;
        let verified = frontier(checkpoint.size, &file.verified_frontier)
            .ok_or_else(|| corrupt("bad verified frontier".into()))?;
        if verified.root() != checkpoint.root {
            return Err(corrupt(
                "verified frontier does not match the checkpoint".into(),
            ));
        }
        // A position behind the checkpoint is that of a claim index being rebuilt.
        let progress = frontier(file.position, &file.frontier)
            .ok_or_else(|| corrupt("bad frontier".into()))?;
        state.verified = verified;
        state.progress = progress;
        Ok(state)
    }

    /// Writes the state atomically to `dir/state.json`, refusing to move the verified
    /// checkpoint backwards from what is on disk.
    pub fn save(&self, dir: &Path, vkey: &Verifier) -> Result<(), StateError> {
        let old = State::load(dir, vkey)?;
        if self.checkpoint.checkpoint.size < old.checkpoint.checkpoint.size {
            return Err(StateError::Backwards(format!(
                "checkpoint size {} < stored {}",
                self.checkpoint.checkpoint.size, old.checkpoint.checkpoint.size
            )));
        }
        let b64 = |f: &Frontier| f.hashes().iter().map(|h| B64.encode(h)).collect();
        let file = StateFile {
            format: FORMAT.into(),
            checkpoint: (!self.checkpoint.note.is_empty()).then(|| self.checkpoint.note.clone()),
            verified_frontier: b64(&self.verified),
            position: self.progress.size(),
            frontier: b64(&self.progress),
        };
        let mut text = serde_json::to_vec_pretty(&file).map_err(|e| StateError::Corrupt {
            path: dir.join("state.json"),
            reason: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&dir.join("state.json"), &text)
    }
}

fn frontier(size: u64, hashes: &[String]) -> Option<Frontier> {
    let hashes = hashes
        .iter()
        .map(|h| btlog_core::checkpoint::decode_hash(h))
        .collect::<Option<Vec<Hash>>>()?;
    Frontier::new(size, hashes)
}

/// Writes a state or evidence file with [`btlog_client::file::write_atomic`].
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateError> {
    file::write_atomic(path, data, Access::Public).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })
}
