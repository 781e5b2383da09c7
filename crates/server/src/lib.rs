//! btlog-server: the log server.
//!
//! Requests flow one way: [`api`] (the HTTP and gRPC front ends) → [`log`] (authentication,
//! limits, the sequencer that batches, signs and commits) → `btlog-store` (RocksDB). [`config`]
//! holds the server's settings with their defaults.

pub mod api;
pub mod config;
pub mod log;
pub mod witness;
