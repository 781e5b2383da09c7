//! btlog: a binary transparency log for software package registries.
//!
//! Layers, and the one direction requests flow in: `api` → `log` → `store`, with the pure
//! `merkle` math and the wire formats (`entry`, `note`, `checkpoint`, `keys`, `proof_bundle`)
//! shared by every layer and by the `client` used by the CLI and the monitor.

pub mod api;
pub mod checkpoint;
pub mod cli;
pub mod client;
pub mod config;
pub mod entry;
pub mod keys;
pub mod log;
pub mod merkle;
pub mod monitor;
pub mod note;
pub mod proof_bundle;
pub mod store;
