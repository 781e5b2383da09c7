//! Opening the log at start: the signing key (created in the data directory on first start),
//! the vkey file, the store, and a checkpoint for the durable tree.

use super::auth::{AuthError, Tokens};
use super::sequencer::SignedCheckpoint;
use crate::config::{Config, ConfigError};
use btlog_client::file;
use btlog_client::keyfile::{self, KeyFileError};
use btlog_core::checkpoint::{Checkpoint, CheckpointError};
use btlog_core::keys::{self, KeyError};
use btlog_core::note::Signer;
use btlog_store::{Appender, Store, StoreError};
use std::path::PathBuf;

/// Why the log could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created or used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The signing key could not be created.
    #[error("signing key: {0}")]
    Key(#[from] KeyError),
    /// The signing key or vkey file could not be written or loaded.
    #[error("signing key: {0}")]
    KeyFile(#[from] KeyFileError),
    /// The key in the data directory is for another origin.
    #[error("{} holds the key for origin {found:?}, but the configured origin is {configured:?}; pass --origin {found} or --key", path.display())]
    OriginMismatch {
        /// The key file.
        path: PathBuf,
        /// Its name.
        found: String,
        /// The configured origin.
        configured: String,
    },
    /// The store holds signed checkpoints but the key that signed them is gone.
    #[error("{} is missing, but the log in {} has signed checkpoints: restore the key (a new one would fork the log for everyone holding its vkey), or pass --key", path.display(), store.display())]
    KeyMissing {
        /// Where the key was expected.
        path: PathBuf,
        /// The store.
        store: PathBuf,
    },
    /// The key given does not verify the checkpoints already in the store.
    #[error("the checkpoints in {} were not signed by key {vkey}: this is another log's key", store.display())]
    KeyMismatch {
        /// The store.
        store: PathBuf,
        /// The vkey of the key given.
        vkey: String,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored checkpoints are ahead of the stored tree (a corrupt data directory).
    #[error("newest stored checkpoint is for size {checkpoint}, but the tree has {size} entries")]
    CheckpointAhead {
        /// Size of the newest checkpoint.
        checkpoint: u64,
        /// Durable tree size.
        size: u64,
    },
    /// Signing the start-up checkpoint failed.
    #[error("signing checkpoint: {0}")]
    Sign(#[from] CheckpointError),
    /// The tokens file is unreadable.
    #[error(transparent)]
    Tokens(#[from] AuthError),
}

/// What [`open`] hands the log service.
pub(super) struct Opened {
    pub signer: Signer,
    pub appender: Appender,
    pub checkpoint: SignedCheckpoint,
    pub tokens: Tokens,
}

pub(super) fn open(config: &Config) -> Result<Opened, OpenError> {
    let io = |source| OpenError::Io {
        path: config.data.clone(),
        source,
    };
    let fresh = !config.data.exists();
    file::create_private_dir(&config.data).map_err(io)?;
    if fresh {
        // The new directory's entry must be durable before anything inside it is.
        if let Some(parent) = config.data.parent().filter(|p| !p.as_os_str().is_empty()) {
            file::sync_dir(parent).map_err(io)?;
        }
    }
    let store = Store::open(&config.store_path())?;
    let signed = store.latest_checkpoint()?;
    let signer = load_or_create_key(config, signed.as_ref().map(|(_, note)| note.as_str()))?;
    keyfile::write_vkey(&config.vkey_path(), &signer.verifier())?;
    let mut appender = store.appender()?;
    let checkpoint = startup_checkpoint(&mut appender, &signer)?;
    let tokens = Tokens::load(&config.tokens_path())?;
    tracing::info!(
        origin = signer.name(),
        size = checkpoint.size,
        tokens = tokens.len(),
        "log opened"
    );
    Ok(Opened {
        signer,
        appender,
        checkpoint,
        tokens,
    })
}

/// The signing key: `--key`, or `log.key` in the data directory, created only for a log that
/// has never signed anything. `signed` is the newest checkpoint in the store: a log that has
/// one keeps the key that signed it, so a lost `log.key` or a `--key` for another log is an
/// error rather than a new key that no distributed vkey verifies.
fn load_or_create_key(config: &Config, signed: Option<&str>) -> Result<Signer, OpenError> {
    let path = config.key_path();
    let signer = if let Some(path) = &config.key {
        keyfile::load_private_key(path)?
    } else if path.exists() {
        let signer = keyfile::load_private_key(&path)?;
        if signer.name() != config.origin {
            return Err(OpenError::OriginMismatch {
                path,
                found: signer.name().to_owned(),
                configured: config.origin.clone(),
            });
        }
        signer
    } else if signed.is_some() {
        return Err(OpenError::KeyMissing {
            path,
            store: config.store_path(),
        });
    } else {
        let signer = keys::generate(&config.origin)?;
        keyfile::write_private_key(&path, &signer)?;
        tracing::info!(path = %path.display(), "created a new signing key");
        signer
    };
    if let Some(note) = signed {
        let verifier = signer.verifier();
        if Checkpoint::verify(note.as_bytes(), &verifier).is_err() {
            return Err(OpenError::KeyMismatch {
                store: config.store_path(),
                vkey: verifier.vkey(),
            });
        }
    }
    Ok(signer)
}

/// Serves the stored checkpoint when it is for the durable tree and verifies with this key;
/// otherwise signs one for the durable tree. Every checkpoint signs a durable root of a tree
/// that only grows, so no two are ever inconsistent.
fn startup_checkpoint(
    appender: &mut Appender,
    signer: &Signer,
) -> Result<SignedCheckpoint, OpenError> {
    let size = appender.size();
    let root = appender.root()?;
    if let Some((stored_size, note)) = appender.store().latest_checkpoint()? {
        if stored_size > size {
            return Err(OpenError::CheckpointAhead {
                checkpoint: stored_size,
                size,
            });
        }
        let reusable = stored_size == size
            && Checkpoint::verify(note.as_bytes(), &signer.verifier())
                .is_ok_and(|(c, _)| c.size == size && c.root == root);
        if reusable {
            return Ok(SignedCheckpoint {
                size,
                note,
                signed_at: None,
            });
        }
    }
    let note = Checkpoint {
        origin: signer.name().to_owned(),
        size,
        root,
    }
    .sign(signer)?;
    appender.put_checkpoint(&note)?;
    Ok(SignedCheckpoint {
        size,
        note,
        signed_at: Some(super::sequencer::unix_now()),
    })
}
