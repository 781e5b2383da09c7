//! The integration tests, in one binary (each binary that links RocksDB costs a link step and
//! disk): real RocksDB stores on disk, real servers on ephemeral 127.0.0.1 ports, and the
//! built `btlog` and `btlog-monitor` binaries.

/// The independent, naive RFC 6962 tree the core crate's tests also check against.
#[path = "../../crates/core/tests/common/mod.rs"]
mod common;
mod server;

mod abuse;
mod bad_input;
mod bucket;
mod cli;
mod client_limits;
mod client_state;
mod crash_server;
mod ecosystems;
mod explorer;
mod monitor;
mod router_fuzz;
mod server_grpc;
mod server_http;
mod startup;
mod static_tiles;
mod store;
mod witness;
