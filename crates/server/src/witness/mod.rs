//! A C2SP tlog-witness (PROTOCOL.md §10): `POST <prefix>/add-checkpoint` for the logs it is
//! configured to follow. It cosigns (tlog-cosignature, type 0x04) a checkpoint only when the
//! log's signature verifies and the checkpoint extends the last one it cosigned for that
//! origin; that record is updated durably before the answer, one request per origin at a time,
//! so it never moves backwards and no two roots are ever cosigned for one size.
//!
//! Requests flow [`http`] (status codes, limits) → [`Witness`] (the rules of
//! `btlog_core::witness` and the durable state in [`state`]).

pub mod http;
mod state;

use btlog_core::checkpoint::{Checkpoint, CheckpointError};
use btlog_core::note::{KeyType, Note, NoteError, Signer, Verifier};
use btlog_core::witness::{judge, AddCheckpoint, MalformedRequest, Refusal};
use serde::Deserialize;
use state::{Held, StateError, States};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `btlog witness` settings, from a TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's cosignature private key file (`btlog keygen --witness`).
    pub key: PathBuf,
    /// Directory for the cosigned checkpoints (one file per log) and the refused ones.
    pub state: PathBuf,
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL path prefix before `/add-checkpoint` (empty, or starting with `/`).
    #[serde(default)]
    pub prefix: String,
    /// The vkeys of the logs to witness; each log's origin is its key name.
    pub logs: Vec<String>,
    /// Longest a request may take, and longest a connection may be idle, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Most connections held open.
    #[serde(default = "default_connections")]
    pub max_connections: usize,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

fn default_timeout() -> u64 {
    10
}

fn default_connections() -> usize {
    1024
}

impl WitnessConfig {
    /// The request and idle timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// Why the witness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The configuration is unusable.
    #[error("witness configuration: {0}")]
    Config(String),
    /// The key file could not be loaded.
    #[error(transparent)]
    Key(#[from] btlog_client::keyfile::KeyFileError),
    /// The state directory could not be used.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the witness answers to a request.
#[derive(Debug)]
pub enum Outcome {
    /// 200: the cosignature line(s).
    Cosigned(String),
    /// 400: the body is malformed.
    Malformed(MalformedRequest),
    /// 404: no configured log has this origin.
    UnknownOrigin(String),
    /// 403: no signature of the log verifies.
    BadSignature(NoteError),
    /// 400, 409 or 422: the checkpoint does not extend what was cosigned.
    Refused(Refusal),
    /// 500: the state could not be made durable; nothing was cosigned.
    Failed(String),
}

/// A witness: its key, the logs it follows, and their cosigned state.
pub struct Witness {
    signer: Signer,
    logs: HashMap<String, Verifier>,
    states: States,
}

impl Witness {
    /// Loads the key and the state of every configured log (each stored checkpoint must still
    /// verify with its log's key); takes the state directory for this process alone.
    pub fn open(config: &WitnessConfig) -> Result<Arc<Witness>, WitnessError> {
        let signer = btlog_client::keyfile::load_private_key(&config.key)?;
        if signer.key_type() != KeyType::Cosignature {
            return Err(WitnessError::Config(format!(
                "{} is a log key; a witness needs a cosignature key (btlog keygen --witness)",
                config.key.display()
            )));
        }
        let mut logs = HashMap::new();
        for vkey in &config.logs {
            let v = btlog_client::keyfile::vkey_arg(vkey)?;
            if v.key_type() != KeyType::Ed25519 {
                return Err(WitnessError::Config(format!(
                    "log key {} is not an Ed25519 log key",
                    v.name()
                )));
            }
            if v.name() == signer.name() {
                return Err(WitnessError::Config(format!(
                    "log {} has the witness's own name",
                    v.name()
                )));
            }
            if logs.insert(v.name().to_owned(), v).is_some() {
                return Err(WitnessError::Config("a log is listed twice".into()));
            }
        }
        let states = States::open(&config.state, &logs)?;
        Ok(Arc::new(Witness {
            signer,
            logs,
            states,
        }))
    }

    /// The witness's cosignature verifier key.
    pub fn verifier(&self) -> Verifier {
        self.signer.verifier()
    }

    /// Handles one `add-checkpoint` body (tlog-witness): blocking (it fsyncs), so call it
    /// off the async workers.
    pub fn add_checkpoint(&self, body: &[u8]) -> Outcome {
        let request = match AddCheckpoint::parse(body) {
            Ok(r) => r,
            Err(e) => return Outcome::Malformed(e),
        };
        let origin = match Checkpoint::parse(request.checkpoint.as_bytes()) {
            Ok((c, _)) => c.origin,
            Err(e) => return Outcome::Malformed(MalformedRequest(checkpoint_reason(&e))),
        };
        let Some(log) = self.logs.get(&origin) else {
            return Outcome::UnknownOrigin(origin);
        };
        let (checkpoint, note) = match Checkpoint::verify(request.checkpoint.as_bytes(), log) {
            Ok(v) => v,
            Err(CheckpointError::Signature(e)) => return Outcome::BadSignature(e),
            Err(e) => return Outcome::Malformed(MalformedRequest(checkpoint_reason(&e))),
        };
        // One request per origin from reading the held state to making the new one durable.
        let mut held = self.states.lock(&origin);
        let current = held.as_ref().map(|h: &Held| (h.size, h.root));
        if let Err(refusal) = judge(current, request.old, &request.proof, &checkpoint) {
            if refusal.is_fork() {
                if let Some(h) = held.as_ref() {
                    self.states
                        .keep_fork_evidence(log, &h.note, &request.checkpoint);
                }
            }
            tracing::warn!(origin, size = checkpoint.size, %refusal, "refused a checkpoint");
            return Outcome::Refused(refusal);
        }
        let advanced = current.is_none_or(|(size, _)| size != checkpoint.size);
        if advanced {
            let new = Held {
                size: checkpoint.size,
                root: checkpoint.root,
                note: request.checkpoint.clone(),
            };
            if let Err(e) = self.states.save(&origin, &new) {
                tracing::error!(origin, error = %e, "saving the cosigned checkpoint failed");
                return Outcome::Failed(e.to_string());
            }
            *held = Some(new);
        }
        drop(held);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Cosigned on a note of the text alone: whatever lines the request carried (even one
        // under this witness's own key, or enough to reach the signature limit) change nothing.
        let cosigned = Note::new(note.text()).and_then(|mut fresh| {
            fresh.cosign(&self.signer, now)?;
            Ok(fresh)
        });
        match cosigned {
            Ok(fresh) => {
                Outcome::Cosigned(fresh.signatures().iter().map(|s| s.format_line()).collect())
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

fn checkpoint_reason(e: &CheckpointError) -> &'static str {
    match e {
        CheckpointError::Malformed(_) => "the checkpoint is not a signed note",
        _ => "the checkpoint body is malformed",
    }
}

/// Runs a witness on `listener` until `stopped` turns true.
pub async fn serve(
    witness: Arc<Witness>,
    config: &WitnessConfig,
    listener: tokio::net::TcpListener,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    http::serve(witness, config, listener, stopped).await;
}

/// Where `Witness::open` keeps its files, for tests and operators.
pub fn state_file(state: &Path, origin: &str) -> PathBuf {
    state::path_for(state, origin)
}
