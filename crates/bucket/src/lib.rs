//! btlog on object storage (PROTOCOL.md §12): the log's C2SP tlog-tiles files (entry bundles,
//! hash tiles, the checkpoint) published to an S3-compatible bucket, from which any static web
//! endpoint or CDN serves the read API, and a log restored from such a bucket alone.
//!
//! - [`Bucket`]: one bucket and key prefix, through the `object_store` crate's S3 client.
//! - [`Publisher`]: uploads what a new checkpoint covers, then the checkpoint; refuses a bucket
//!   holding another log's (or another history's) checkpoint.
//! - [`restore()`]: rebuilds a store from a bucket, verifying every entry against the tiles and
//!   the tree against the signed checkpoint.

mod bucket;
mod publish;
mod restore;

pub use bucket::{Bucket, BucketConfig, BucketError};
pub use publish::{PublishError, Published, Publisher};
pub use restore::{restore, RestoreError, Restored};
