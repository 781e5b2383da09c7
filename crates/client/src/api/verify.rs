//! Online verification (PROTOCOL.md §5, §7): look an identity up, verify the tlog-proof the log
//! serves, and check its checkpoint against the newest one verified before, so a log that
//! forks or rolls back is caught rather than trusted.
//!
//! Checkpoint policy, relative to the stored checkpoint of the same origin:
//! - none stored: the served one is verified and stored (trust on first use);
//! - larger: accepted and stored only with a verified consistency proof stored → served;
//! - same size: the roots must be equal;
//! - smaller: accepted only with a verified consistency proof served → stored (it is then a
//!   prefix of what was seen, so an entry included in it is included in the stored one too);
//!   the stored, newer checkpoint stays.
//!
//! Verification fails closed: anything not proven is refused. But the log is reported
//! [`VerifyError::Inconsistent`] only with signed evidence: two checkpoints of one size with
//! different roots, or a smaller checkpoint whose root differs from the root the larger signed
//! tree has at that size, shown by a consistency proof built from the larger tree's hash tiles
//! (C2SP tlog-tiles, checked against its signed root; RFC 6962 §2.1.2). A missing (400, 404)
//! or bad consistency proof alone proves nothing signed (a rolled-back log, a broken or
//! interposed server): that is [`VerifyError::Unproven`].
//!
//! Any other failure (log unreachable, malformed reply) is an error too.

use super::state::{CheckpointState, StateError, Stored};
use super::{Api, ApiError};
use crate::tiles::{prefix_proof, TileClient};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::entry::Identity;
use btlog_core::merkle::{self, Hash};
use btlog_core::note::Verifier;
use btlog_core::proof_bundle::{ArtifactClaim, ProofBundleError, TlogProof, VerifiedProof};

/// Why online verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The log has no publish entry for the identity.
    #[error("not logged: the log has no publish entry for package {package:?} version {version:?} file {file:?}")]
    NotLogged {
        /// The purl.
        package: String,
        /// The version.
        version: String,
        /// The file name.
        file: String,
    },
    /// The proof the log served does not prove the claim.
    #[error(transparent)]
    Proof(#[from] ProofBundleError),
    /// Talking to the log failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The checkpoint state could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The log contradicts a checkpoint it signed before, with signed evidence.
    #[error("{0}")]
    Inconsistent(Box<Inconsistency>),
    /// The checkpoint does not meet the installer's witness policy (PROTOCOL.md §10.2).
    #[error("checkpoint refused by the witness policy: {0}")]
    Policy(String),
    /// The log does not prove its checkpoint consistent with the one verified before, and
    /// nothing signed shows a fork either (e.g. no or a bad consistency proof).
    #[error("cannot verify the log's consistency: {0}")]
    Unproven(String),
}

/// Evidence that a log is inconsistent: two checkpoints it signed that cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent log: {reason}")]
pub struct Inconsistency {
    /// What does not add up.
    pub reason: String,
    /// The checkpoint verified before (from the state directory), verbatim.
    pub stored: String,
    /// The checkpoint the log serves now, verbatim.
    pub served: String,
    /// For checkpoints of different sizes m < n: the root the tree of size n has at size m
    /// and the consistency proof from it to the root of size n (from the log's hash tiles).
    pub prefix: Option<(Hash, Vec<Hash>)>,
}

/// Verifies online that `claim` is logged by the log at `api` with key `log`, and advances the
/// stored checkpoint in `state`. `accept` vets the served checkpoint note (a witness policy)
/// before anything is stored. Returns the entry's index and what was verified.
pub async fn verify_online(
    api: &Api,
    log: &Verifier,
    claim: &ArtifactClaim,
    state: &CheckpointState,
    accept: &(dyn Fn(&str) -> Result<(), String> + Sync),
) -> Result<(u64, VerifiedProof), VerifyError> {
    let identity = Identity {
        package: claim.package.clone(),
        version: claim.version.clone(),
        file: claim.file.clone(),
    };
    let reply = api
        .lookup(&identity)
        .await?
        .ok_or_else(|| VerifyError::NotLogged {
            package: identity.package,
            version: identity.version,
            file: identity.file,
        })?;
    let proof = TlogProof::parse(reply.proof.as_bytes())?;
    let (checkpoint, _) = Checkpoint::verify(proof.checkpoint.as_bytes(), log)
        .map_err(ProofBundleError::Checkpoint)?;
    accept(&proof.checkpoint).map_err(VerifyError::Policy)?;
    let served = Stored {
        checkpoint,
        note: proof.checkpoint.clone(),
    };
    advance(api, log, state, served).await?;
    Ok((proof.index, proof.verify_offline(log, claim)?))
}

/// Checks `served` (already verified with `log`) against the stored checkpoint as the module
/// docs describe, stores it when it is newer, and returns the newest verified checkpoint. The
/// state of the origin is locked throughout ([`CheckpointState::lock`]), so concurrent runs
/// compare against each other's results and the stored checkpoint never moves back.
pub async fn advance(
    api: &Api,
    log: &Verifier,
    state: &CheckpointState,
    served: Stored,
) -> Result<Stored, VerifyError> {
    let _lock = state.lock(log.name()).await?;
    let Some(stored) = state.load(log)? else {
        state.save(&served.checkpoint.origin, &served.note)?;
        return Ok(served);
    };
    let (old, new) = (&stored.checkpoint, &served.checkpoint);
    if new.size == old.size {
        if new.root != old.root {
            return Err(inconsistent(
                format!("two checkpoints of size {} with different roots", new.size),
                &stored,
                &served,
            ));
        }
        return Ok(stored);
    }
    let (small, large) = if new.size > old.size {
        (&stored, &served)
    } else {
        (&served, &stored)
    };
    check_consistent(api, small, large, &stored, &served).await?;
    if new.size > old.size {
        state.save(&served.checkpoint.origin, &served.note)?;
        return Ok(served);
    }
    Ok(stored)
}

/// Fetches and verifies the consistency proof from `small` to `large`. Without one, looks for
/// signed evidence of a fork in the larger tree's hash tiles.
async fn check_consistent(
    api: &Api,
    small: &Stored,
    large: &Stored,
    stored: &Stored,
    served: &Stored,
) -> Result<(), VerifyError> {
    let (s, l) = (&small.checkpoint, &large.checkpoint);
    if s.size == 0 {
        return Ok(());
    }
    let why = match api.consistency(s.size, l.size).await {
        Ok(proof) => match merkle::verify_consistency(s.size, l.size, &proof, &s.root, &l.root) {
            Ok(()) => return Ok(()),
            Err(e) => format!("its consistency proof does not verify ({e})"),
        },
        // The log refuses to prove a size it signed: perhaps it no longer has that tree.
        Err(e) if matches!(e.status(), Some(400 | 404)) => {
            format!("it does not serve a consistency proof (rolled back?): {e}")
        }
        Err(e) => return Err(e.into()),
    };
    let unproven = format!(
        "the log cannot show that tree size {} is a prefix of tree size {}: {why}",
        s.size, l.size
    );
    let tiles = TileClient::new(api.http().base()).map_err(ApiError::from)?;
    match prefix_proof(&tiles, s.size, l).await {
        Ok((prefix, proof)) if prefix != s.root => {
            Err(VerifyError::Inconsistent(Box::new(Inconsistency {
                reason: format!(
                    "tree size {} is not a prefix of tree size {}: the log's hash tiles of \
                     the larger tree give another root at size {} ({why})",
                    s.size, l.size, s.size
                ),
                stored: stored.note.clone(),
                served: served.note.clone(),
                prefix: Some((prefix, proof)),
            })))
        }
        Ok(_) => Err(VerifyError::Unproven(format!(
            "{unproven}; its hash tiles are consistent, but the log's proof is not"
        ))),
        Err(e) => Err(VerifyError::Unproven(format!(
            "{unproven}; nor do its hash tiles show a fork ({e})"
        ))),
    }
}

fn inconsistent(reason: String, stored: &Stored, served: &Stored) -> VerifyError {
    VerifyError::Inconsistent(Box::new(Inconsistency {
        reason,
        stored: stored.note.clone(),
        served: served.note.clone(),
        prefix: None,
    }))
}
