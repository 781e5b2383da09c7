//! btlog-core: the formats and rules of a btlog log, with no I/O, no RocksDB and no async
//! runtime, so installers can embed it to verify proofs offline (any target Rust builds for).
//!
//! - [`merkle`]: RFC 6962 hashing, inclusion and consistency proofs, and C2SP tlog-tiles
//!   coordinates ([`merkle::tiles`]).
//! - [`note`], [`checkpoint`], [`keys`]: C2SP signed notes and cosignatures, checkpoints, and
//!   the key text formats.
//! - [`entry`]: the entry format and its identity (PROTOCOL.md §2); [`bundle`]: entry
//!   bundles (§4).
//! - [`claims`]: which event needs which earlier publish (§2.3).
//! - [`proof_bundle`]: the C2SP tlog-proof an installer verifies offline (§5).
//!
//! - `wire` (feature `serde`): the JSON bodies of the `/v1` API (§6).
//!
//! The protocol these follow is written down in `docs/PROTOCOL.md`.

pub mod bundle;
pub mod checkpoint;
pub mod claims;
pub mod entry;
#[cfg(feature = "serde")]
pub mod import;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod proof_bundle;
#[cfg(feature = "serde")]
pub mod wire;
pub mod witness;
