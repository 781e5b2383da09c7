//! Online verification (PROTOCOL.md §5, §7): look an identity up, verify the tlog-proof the log
//! serves, and check its checkpoint against the newest one verified before, so a log that
//! forks or rolls back is caught rather than trusted.
//!
//! Two ways to get the proof, one policy: [`verify_online`] asks the log's `/v1` API
//! (`/v1/lookup`, `/v1/proof/consistency`); [`verify_tiles`] reads only the C2SP tlog-tiles
//! resources (`/checkpoint`, hash tiles, entry bundles) of an entry whose index the caller
//! knows, so it also works against a static tile mirror (a bucket or CDN) with no `/v1` API.
//! Both check the checkpoint with [`advance`], told by a [`ConsistencySource`] where
//! consistency proofs come from, and the claim with [`TlogProof::verify_offline`].
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
//! interposed server): that is [`VerifyError::Unproven`]. From tiles alone
//! ([`ConsistencySource::Tiles`]) that consistency proof is the only one: it proves the
//! smaller tree a prefix of the larger, shows a fork, or (tiles missing or forged) is
//! [`VerifyError::Unproven`].
//!
//! Any other failure (log unreachable, malformed reply) is an error too.

use super::state::{CheckpointState, StateError, Stored};
use super::{Api, ApiError};
use crate::tiles::{prefix_proof, tile_inclusion_proof, TileClient, TilesError};
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
    /// Reading the log's tiles failed, or they do not match its signed checkpoint.
    #[error(transparent)]
    Tiles(#[from] TilesError),
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
    let Some(reply) = api.lookup(&identity).await? else {
        // A 404 is "not logged" only from a log that serves the `/v1` API at all, not from a
        // static tile mirror.
        api.require_v1(&identity.package).await?;
        return Err(VerifyError::NotLogged {
            package: identity.package,
            version: identity.version,
            file: identity.file,
        });
    };
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

/// Verifies that `claim` is logged at `index` by the log with key `log`, from its C2SP
/// tlog-tiles resources at `tiles` alone (no `/v1` API: a server or a static tile mirror), and
/// advances the stored checkpoint in `state` exactly as [`verify_online`] does, with
/// consistency proofs built from hash tiles. `accept` vets the checkpoint note (a witness
/// policy) before anything is stored.
///
/// The entry is read from its entry bundle and the inclusion proof built from hash tiles
/// checked against the signed root ([`tile_inclusion_proof`]); the claim is then checked by
/// [`TlogProof::verify_offline`] on the proof assembled from them, as a `.tlog-proof` file is.
/// An `index` at or beyond the tree size is [`ProofBundleError::IndexOutOfRange`].
pub async fn verify_tiles(
    tiles: &TileClient,
    log: &Verifier,
    claim: &ArtifactClaim,
    index: u64,
    state: &CheckpointState,
    accept: &(dyn Fn(&str) -> Result<(), String> + Sync),
) -> Result<VerifiedProof, VerifyError> {
    let signed = tiles.checkpoint(log).await?;
    accept(&signed.note).map_err(VerifyError::Policy)?;
    let served = Stored {
        checkpoint: signed.checkpoint,
        note: signed.note,
    };
    advance(tiles, log, state, served.clone()).await?;
    let size = served.checkpoint.size;
    if index >= size {
        return Err(ProofBundleError::IndexOutOfRange { index, size }.into());
    }
    let entry = tiles.entry(index, size).await?;
    let proof = tile_inclusion_proof(tiles, index, &served.checkpoint).await?;
    Ok(TlogProof::new(entry, index, proof, served.note).verify_offline(log, claim)?)
}

/// Where [`advance`] gets the consistency proof between two checkpoints of different sizes.
#[derive(Clone, Copy, Debug)]
pub enum ConsistencySource<'a> {
    /// The log's `/v1/proof/consistency`; when it serves none or a bad one, the larger tree's
    /// hash tiles at the same base URL, for evidence of a fork.
    Api(&'a Api),
    /// The larger tree's hash tiles alone (a static tile mirror has no `/v1` API).
    Tiles(&'a TileClient),
}

impl<'a> From<&'a Api> for ConsistencySource<'a> {
    fn from(api: &'a Api) -> Self {
        ConsistencySource::Api(api)
    }
}

impl<'a> From<&'a TileClient> for ConsistencySource<'a> {
    fn from(tiles: &'a TileClient) -> Self {
        ConsistencySource::Tiles(tiles)
    }
}

/// Checks `served` (already verified with `log`) against the stored checkpoint as the module
/// docs describe, with consistency proofs from `proofs` (an [`Api`], a [`TileClient`] or a
/// [`ConsistencySource`]), stores it when it is newer, and returns the newest verified
/// checkpoint. This is the one place the checkpoint policy is decided. The
/// state of the origin is locked throughout ([`CheckpointState::lock`]), so concurrent runs
/// compare against each other's results and the stored checkpoint never moves back.
pub async fn advance<'a>(
    proofs: impl Into<ConsistencySource<'a>>,
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
    check_consistent(proofs.into(), small, large, &stored, &served).await?;
    if new.size > old.size {
        state.save(&served.checkpoint.origin, &served.note)?;
        return Ok(served);
    }
    Ok(stored)
}

/// Proves `small` a prefix of `large` with a consistency proof from `proofs`. Without one,
/// looks for signed evidence of a fork in the larger tree's hash tiles.
async fn check_consistent(
    proofs: ConsistencySource<'_>,
    small: &Stored,
    large: &Stored,
    stored: &Stored,
    served: &Stored,
) -> Result<(), VerifyError> {
    let (s, l) = (&small.checkpoint, &large.checkpoint);
    if s.size == 0 {
        return Ok(());
    }
    // Why the `/v1` API did not prove it, when asked; the tiles then can only show a fork.
    let (tiles, why) = match proofs {
        ConsistencySource::Tiles(tiles) => (tiles.clone(), None),
        ConsistencySource::Api(api) => {
            let why = match api.consistency(s.size, l.size).await {
                Ok(proof) => {
                    match merkle::verify_consistency(s.size, l.size, &proof, &s.root, &l.root) {
                        Ok(()) => return Ok(()),
                        Err(e) => format!("its consistency proof does not verify ({e})"),
                    }
                }
                // The log refuses to prove a size it signed: perhaps it no longer has that tree.
                Err(e) if matches!(e.status(), Some(400 | 404)) => {
                    format!("it does not serve a consistency proof (rolled back?): {e}")
                }
                Err(e) => return Err(e.into()),
            };
            let tiles = TileClient::new(api.http().base()).map_err(ApiError::from)?;
            (tiles, Some(why))
        }
    };
    let unproven = format!(
        "the log cannot show that tree size {} is a prefix of tree size {}",
        s.size, l.size
    );
    match (prefix_proof(&tiles, s.size, l).await, why) {
        (Ok((prefix, proof)), why) if prefix != s.root => {
            Err(VerifyError::Inconsistent(Box::new(Inconsistency {
                reason: format!(
                    "tree size {} is not a prefix of tree size {}: the log's hash tiles of \
                     the larger tree give another root at size {}{}",
                    s.size,
                    l.size,
                    s.size,
                    why.map(|w| format!(" ({w})")).unwrap_or_default()
                ),
                stored: stored.note.clone(),
                served: served.note.clone(),
                prefix: Some((prefix, proof)),
            })))
        }
        // The proof from the tiles was verified against both roots.
        (Ok(_), None) => Ok(()),
        (Ok(_), Some(why)) => Err(VerifyError::Unproven(format!(
            "{unproven}: {why}; its hash tiles are consistent, but the log's proof is not"
        ))),
        (Err(e), Some(why)) => Err(VerifyError::Unproven(format!(
            "{unproven}: {why}; nor do its hash tiles show a fork ({e})"
        ))),
        (Err(e), None) => Err(VerifyError::Unproven(format!(
            "{unproven}: its hash tiles of the larger tree do not ({e})"
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
