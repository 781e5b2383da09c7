//! Server configuration (PROTOCOL.md §7): zero-config defaults, overridden by a TOML file, overridden
//! by command-line flags.

use btlog_bucket::BucketConfig;
use btlog_client::file::{read_toml, TomlFileError};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] TomlFileError),
    /// A value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything `btlog serve` needs; every field has a safe default.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Data directory: the store, the signing key, `log.vkey`, `tokens.toml`.
    pub data: PathBuf,
    /// HTTP listen address (tlog-tiles read API and `/v1` JSON API).
    pub http: SocketAddr,
    /// gRPC listen address.
    pub grpc: SocketAddr,
    /// Log origin (the key name) when the key is created in the data directory.
    pub origin: String,
    /// A private key file made by `btlog keygen`; its name is then the origin.
    pub key: Option<PathBuf>,
    /// Resource limits.
    pub limits: Limits,
    /// Witnesses asked to cosign each checkpoint (PROTOCOL.md §10.1).
    pub witnesses: Vec<WitnessEndpoint>,
    /// How many witnesses must cosign a checkpoint before it is served (1..=witnesses).
    pub witness_quorum: usize,
    /// Publishing the log's tiles to an S3-compatible bucket (PROTOCOL.md §12.1); off when
    /// absent.
    pub publish: Option<Publish>,
}

/// `[publish]`: the bucket (the fields of [`BucketConfig`]) and how to publish to it.
#[derive(Clone, Debug, Deserialize)]
pub struct Publish {
    /// The bucket: `url`, `endpoint`, `region`, credentials, `allow_http`.
    #[serde(flatten)]
    pub bucket: BucketConfig,
    /// Store entry bundles gzip-compressed, served with `Content-Encoding: gzip`.
    #[serde(default)]
    pub gzip_bundles: bool,
    /// When a submission is acknowledged: once logged (durable on this machine), or only once
    /// a checkpoint covering it is in the bucket.
    #[serde(default)]
    pub acknowledge: Acknowledge,
    /// How long replaced partial tiles stay in the bucket for readers of older checkpoints,
    /// in seconds.
    #[serde(default = "default_partial_grace")]
    pub partial_grace_secs: u64,
    /// Keys neither the bucket nor publishing knows: refused by [`Config::validate`] (serde
    /// cannot deny unknown fields of a flattened table).
    #[serde(flatten, default)]
    pub unknown: std::collections::BTreeMap<String, toml::Value>,
}

fn default_partial_grace() -> u64 {
    60
}

/// When a submission is acknowledged (PROTOCOL.md §12.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acknowledge {
    /// Once durable in this server's store: an entry acknowledged after the bucket's newest
    /// checkpoint is lost if this machine's disk is.
    #[default]
    Logged,
    /// Once a checkpoint covering it is in the bucket: no acknowledged entry is lost with this
    /// machine, at the cost of the publishing latency on every submission.
    Published,
}

impl Publish {
    /// Publishing to `url` with every other setting at its default (`--publish`).
    pub fn to(url: &str) -> Publish {
        Publish {
            bucket: BucketConfig {
                url: url.to_owned(),
                ..BucketConfig::default()
            },
            gzip_bundles: false,
            acknowledge: Acknowledge::default(),
            partial_grace_secs: default_partial_grace(),
            unknown: Default::default(),
        }
    }

    /// How long replaced partial tiles are kept.
    pub fn partial_grace(&self) -> Duration {
        Duration::from_secs(self.partial_grace_secs)
    }
}

/// A witness the log asks for cosignatures.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessEndpoint {
    /// The witness's cosignature vkey.
    pub vkey: String,
    /// Its `add-checkpoint` URL (`<submission prefix>/add-checkpoint`).
    pub url: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("btlog-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc: SocketAddr::from(([127, 0, 0, 1], 50051)),
            origin: "localhost/btlog".to_owned(),
            key: None,
            limits: Limits::default(),
            witnesses: Vec::new(),
            witness_quorum: 0,
            publish: None,
        }
    }
}

/// Limits that keep memory, latency and abuse bounded.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body, in bytes (HTTP and gRPC messages).
    pub max_body_bytes: usize,
    /// Most entries in one submission.
    pub max_entries_per_request: usize,
    /// Submissions whose bodies are read and decoded at once (others wait): with
    /// `max_body_bytes`, what bounds the memory authenticated submitters can make the server
    /// hold. Bodies of requests without a valid token are never read.
    pub max_concurrent_submissions: usize,
    /// Connections each front end (HTTP, gRPC) holds open; beyond this it stops accepting
    /// until one closes (clients wait in the listen backlog).
    pub max_connections: usize,
    /// Largest encoded entry, in bytes (at most 65,535, PROTOCOL.md §2).
    pub max_entry_bytes: usize,
    /// Most entries the sequencer commits in one group commit.
    pub batch_max_entries: usize,
    /// How long the sequencer waits to gather more submissions into a batch, in milliseconds.
    pub batch_delay_ms: u64,
    /// Submissions waiting for the sequencer; beyond this new ones get 503.
    pub queue_depth: usize,
    /// Submissions per second allowed for each token (sustained).
    pub rate_per_second: f64,
    /// Submissions a token may make in a burst.
    pub rate_burst: u32,
    /// Longest a request may take, in seconds.
    pub request_timeout_secs: u64,
    /// Longest an HTTP/1 client may take to send a request's headers, and longest any HTTP or
    /// gRPC connection may go with nothing in flight, in seconds (slow or idle clients that
    /// hold connections open are cut off after this). A gRPC connection with a stream open is
    /// pinged after this long without reads, and closed if the ping is not answered as long.
    pub header_read_timeout_secs: u64,
    /// Most entries returned by one read page (`/v1/entries`, `/v1/packages`).
    pub max_page: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
            max_entries_per_request: 1000,
            max_concurrent_submissions: 16,
            max_connections: 4096,
            max_entry_bytes: btlog_core::entry::MAX_ENTRY_BYTES,
            batch_max_entries: 4096,
            batch_delay_ms: 5,
            queue_depth: 1024,
            rate_per_second: 50.0,
            rate_burst: 100,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_page: 1000,
        }
    }
}

impl Limits {
    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// The header read (and idle connection) timeout as a duration.
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_secs(self.header_read_timeout_secs)
    }

    /// The batch gathering delay as a duration.
    pub fn batch_delay(&self) -> Duration {
        Duration::from_millis(self.batch_delay_ms)
    }

    fn check(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError::Invalid(what.to_owned()));
        if self.max_body_bytes == 0
            || self.max_entries_per_request == 0
            || self.max_page == 0
            || self.max_concurrent_submissions == 0
            || self.max_connections == 0
        {
            return bad("limits must be positive");
        }
        if self.max_concurrent_submissions > 65_536 || self.max_connections > 1 << 20 {
            return bad(
                "max_concurrent_submissions must be at most 65536, max_connections at most 1048576",
            );
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > btlog_core::entry::MAX_ENTRY_BYTES {
            return bad("max_entry_bytes must be 1..=65535");
        }
        if self.batch_max_entries < self.max_entries_per_request {
            return bad("batch_max_entries must be at least max_entries_per_request");
        }
        if self.queue_depth == 0
            || self.request_timeout_secs == 0
            || self.header_read_timeout_secs == 0
        {
            return bad(
                "queue_depth, request_timeout_secs and header_read_timeout_secs must be positive",
            );
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) || self.rate_burst == 0
        {
            return bad("rate_per_second and rate_burst must be positive");
        }
        Ok(())
    }
}

impl Config {
    /// Reads a TOML file; keys it omits keep their defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Ok(read_toml(path)?)
    }

    /// Checks that the limits make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.witnesses.len();
        if n > 0 && !(1..=n).contains(&self.witness_quorum) || n == 0 && self.witness_quorum > 0 {
            return Err(ConfigError::Invalid(format!(
                "witness_quorum must be between 1 and the number of witnesses ({n})"
            )));
        }
        if let Some(p) = &self.publish {
            if let Some(key) = p.unknown.keys().next() {
                return Err(ConfigError::Invalid(format!(
                    "[publish]: unknown key {key:?}"
                )));
            }
            btlog_bucket::Bucket::open(&p.bucket)
                .map_err(|e| ConfigError::Invalid(format!("[publish]: {e}")))?;
            if p.partial_grace_secs > 86_400 {
                return Err(ConfigError::Invalid(
                    "[publish] partial_grace_secs must be at most 86400".into(),
                ));
            }
        }
        self.limits.check()
    }

    /// Where the data-directory signing key lives.
    pub fn key_path(&self) -> PathBuf {
        self.data.join("log.key")
    }

    /// Where the vkey in use is written at every start.
    pub fn vkey_path(&self) -> PathBuf {
        self.data.join("log.vkey")
    }

    /// Where submitter credentials are kept.
    pub fn tokens_path(&self) -> PathBuf {
        tokens_path(&self.data)
    }

    /// Where the RocksDB store lives.
    pub fn store_path(&self) -> PathBuf {
        self.data.join("db")
    }
}

/// `<data>/tokens.toml`.
pub fn tokens_path(data: &Path) -> PathBuf {
    data.join("tokens.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_overrides_only_what_it_names() {
        let c: Config =
            toml::from_str("http = \"127.0.0.1:9\"\n[limits]\nqueue_depth = 3\n").expect("valid");
        assert_eq!(c.http.port(), 9);
        assert_eq!(c.grpc.port(), 50051);
        assert_eq!(c.limits.queue_depth, 3);
        assert_eq!(c.limits.max_page, 1000);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        assert!(c.validate().is_ok());
    }

    #[test]
    fn publish_table_is_flat_and_strict() {
        let c: Config = toml::from_str(
            "[publish]\nurl = \"s3://logs/btlog\"\nendpoint = \"http://127.0.0.1:3900\"\n\
             region = \"garage\"\nacknowledge = \"published\"\ngzip_bundles = true\n",
        )
        .expect("valid");
        let p = c.publish.as_ref().expect("publish");
        assert_eq!(p.bucket.url, "s3://logs/btlog");
        assert_eq!(p.acknowledge, Acknowledge::Published);
        assert!(p.gzip_bundles && p.partial_grace_secs == 60);
        assert!(c.validate().is_ok());
        for typo in [
            "gzip_bundle = true",
            "acknowledge = \"never\"",
            "endpont = \"x\"",
        ] {
            let text = format!("[publish]\nurl = \"s3://logs\"\n{typo}\n");
            let refused = toml::from_str::<Config>(&text).map_or(true, |c| c.validate().is_err());
            assert!(refused, "{typo}");
        }
        let bad: Config = toml::from_str("[publish]\nurl = \"logs\"\n").expect("parses");
        assert!(bad.validate().is_err());
    }
}
