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
//!   the stored, newer checkpoint stays. A log that cannot produce that proof has rolled back.
//!
//! Any other failure (log unreachable, malformed reply) is an error: verification fails closed.

use super::state::{CheckpointState, StateError, Stored};
use super::{Api, ApiError};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::entry::Identity;
use btlog_core::merkle;
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
    /// The log contradicts a checkpoint it signed before.
    #[error("{0}")]
    Inconsistent(Box<Inconsistency>),
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
}

/// Verifies online that `claim` is logged by the log at `api` with key `log`, and advances the
/// stored checkpoint in `state`. Returns the entry's index and what was verified.
pub async fn verify_online(
    api: &Api,
    log: &Verifier,
    claim: &ArtifactClaim,
    state: &CheckpointState,
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
    let served = Stored {
        checkpoint,
        note: proof.checkpoint.clone(),
    };
    advance(api, log, state, served).await?;
    Ok((proof.index, proof.verify_offline(log, claim)?))
}

/// Checks `served` (already verified with `log`) against the stored checkpoint as the module
/// docs describe, stores it when it is newer, and returns the newest verified checkpoint.
pub async fn advance(
    api: &Api,
    log: &Verifier,
    state: &CheckpointState,
    served: Stored,
) -> Result<Stored, VerifyError> {
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

/// Fetches and verifies the consistency proof from `small` to `large`.
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
    let proof = match api.consistency(s.size, l.size).await {
        Ok(p) => p,
        // The log refuses to prove a size it signed: it no longer has that tree.
        Err(e) if matches!(e.status(), Some(400 | 404)) => {
            return Err(inconsistent(
                format!(
                    "the log cannot prove that tree size {} is a prefix of tree size {} \
                     (rolled back?): {e}",
                    s.size, l.size
                ),
                stored,
                served,
            ))
        }
        Err(e) => return Err(e.into()),
    };
    merkle::verify_consistency(s.size, l.size, &proof, &s.root, &l.root).map_err(|e| {
        inconsistent(
            format!(
                "tree size {} is not a prefix of tree size {} (consistency proof: {e})",
                s.size, l.size
            ),
            stored,
            served,
        )
    })
}

fn inconsistent(reason: String, stored: &Stored, served: &Stored) -> VerifyError {
    VerifyError::Inconsistent(Box::new(Inconsistency {
        reason,
        stored: stored.note.clone(),
        served: served.note.clone(),
    }))
}
