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
use btlog_core::merkle::{fold, node_hash, Hash, EMPTY_ROOT};
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

/// The right edge of a Merkle tree: the hashes of the complete subtrees that make it up, largest
/// first, one per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    hashes: Vec<Hash>,
}

impl Frontier {
    /// A frontier from its parts; None when the hash count does not fit the size.
    pub fn new(size: u64, hashes: Vec<Hash>) -> Option<Frontier> {
        (hashes.len() == size.count_ones() as usize).then_some(Frontier { size, hashes })
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The complete-subtree hashes, largest subtree first.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        self.push_subtree(0, leaf);
    }

    /// Appends a complete subtree of 2^`height` leaves by its root, merging equal-sized
    /// subtrees at the right edge. The size must be a multiple of 2^`height` (the subtree
    /// starts on its own boundary), as it is for a full entry bundle pushed whole.
    pub fn push_subtree(&mut self, height: u8, root: Hash) {
        debug_assert_eq!(self.size % (1 << height), 0, "subtree off its boundary");
        let mut hash = root;
        let mut size = self.size >> height;
        while size & 1 == 1 {
            match self.hashes.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break,
            }
            size >>= 1;
        }
        self.hashes.push(hash);
        self.size += 1 << height;
    }

    /// The RFC 6962 root of the tree.
    pub fn root(&self) -> Hash {
        if self.hashes.is_empty() {
            EMPTY_ROOT
        } else {
            fold(&self.hashes)
        }
    }
}

/// One log's monitor state.
#[derive(Clone, Debug)]
pub struct State {
    /// The last checkpoint whose root was recomputed from the log's entries.
    pub checkpoint: SignedCheckpoint,
    /// The frontier of the tree at `checkpoint`.
    pub verified: Frontier,
    /// The frontier at the audit position (≥ the checkpoint size): leaves already read and
    /// checked, whose root is confirmed when the next checkpoint is reached.
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
        let progress = frontier(file.position, &file.frontier)
            .filter(|p| p.size >= checkpoint.size)
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
        let file = StateFile {
            format: FORMAT.into(),
            checkpoint: (!self.checkpoint.note.is_empty()).then(|| self.checkpoint.note.clone()),
            verified_frontier: self.verified.hashes.iter().map(|h| B64.encode(h)).collect(),
            position: self.progress.size,
            frontier: self.progress.hashes.iter().map(|h| B64.encode(h)).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use btlog_core::merkle::{leaf_hash, root, HashReader, NodeId, ProofError};

    struct Leaves(Vec<Hash>);

    impl HashReader for Leaves {
        type Error = ProofError;
        fn read_hashes(&self, nodes: &[NodeId]) -> Result<Vec<Hash>, ProofError> {
            Ok(nodes
                .iter()
                .map(|n| {
                    let start = (n.index << n.level) as usize;
                    let mut f = Frontier::default();
                    self.0[start..start + (1 << n.level)]
                        .iter()
                        .for_each(|h| f.push(*h));
                    f.root()
                })
                .collect())
        }
    }

    #[test]
    fn frontier_roots_match_rfc6962() {
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let reader = Leaves(leaves.clone());
        let mut f = Frontier::default();
        assert_eq!(f.root(), EMPTY_ROOT);
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.hashes().len(), f.size().count_ones() as usize);
            assert_eq!(Ok(f.root()), root(i as u64 + 1, &reader), "size {}", i + 1);
        }
        assert!(Frontier::new(3, vec![[0; 32]]).is_none());
        // Whole subtrees on their boundaries fold in like their leaves.
        let mut by_leaf = Frontier::default();
        let mut by_subtree = Frontier::default();
        for chunk in leaves[..64].chunks(8) {
            chunk.iter().for_each(|l| by_leaf.push(*l));
            by_subtree.push_subtree(3, root(8, &Leaves(chunk.to_vec())).expect("root"));
            assert_eq!(by_subtree, by_leaf);
        }
    }
}
