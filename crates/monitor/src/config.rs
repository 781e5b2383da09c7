//! The monitor's TOML configuration file, for several logs and watch rules:
//!
//! ```toml
//! state = "monitor-state"     # optional; --state overrides
//! interval = "60s"            # optional; --interval overrides
//! webhook = "https://hooks.example/btlog"
//! listen = "127.0.0.1:9464"
//!
//! [[log]]
//! urls = ["https://log.example", "https://mirror.example"]  # mirrors of one origin
//! vkey = "log.example/btlog+1234abcd+AU..."                  # vkey text, or a vkey file path
//! entries = "btlog"    # optional; "opaque" for another log's entries: tree checks only
//!
//! [[watch]]
//! pattern = "pkg:npm/@acme/*"
//! publishers = ["github.com/acme/widgets/.github/workflows/release.yml@refs/heads/main"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use btlog_core::note::Verifier;

use super::watch::WatchRule;
use super::{EntryFormat, LogSpec};

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    File(#[from] btlog_client::file::TomlFileError),
    /// A vkey is neither a readable vkey file nor vkey text.
    #[error("vkey {0:?}: {1}")]
    Vkey(String, String),
    /// A duration is not `<n>ms`, `<n>s`, `<n>m`, `<n>h`, `<n>d` or a number of seconds.
    #[error("bad duration {0:?}: expected e.g. 30s, 5m, 1h, 7d")]
    Duration(String),
}

/// The configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// State directory.
    pub state: Option<PathBuf>,
    /// Time between rounds in daemon mode.
    pub interval: Option<String>,
    /// Webhook URL alerts are POSTed to.
    pub webhook: Option<String>,
    /// Address of the `/metrics` endpoint.
    pub listen: Option<SocketAddr>,
    /// Logs to monitor.
    #[serde(default)]
    pub log: Vec<LogEntry>,
    /// Watch rules, for every log.
    #[serde(default)]
    pub watch: Vec<WatchRule>,
    /// A C2SP tlog-policy file the checkpoints of the logs it names must meet.
    pub policy: Option<PathBuf>,
    /// With `policy`: the most a quorum's cosignatures may age, e.g. `24h`.
    pub max_age: Option<String>,
}

/// One `[[log]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogEntry {
    /// Base URLs serving this origin.
    pub urls: Vec<String>,
    /// vkey text or the path of a vkey file.
    pub vkey: String,
    /// `btlog` (the default) or `opaque` for logs of other entry formats: tree checks only.
    #[serde(default)]
    pub entries: EntryFormat,
}

impl FileConfig {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        Ok(btlog_client::file::read_toml(path)?)
    }

    /// The logs, with their vkeys loaded.
    pub fn logs(&self) -> Result<Vec<LogSpec>, ConfigError> {
        self.log
            .iter()
            .map(|l| {
                Ok(LogSpec {
                    urls: l.urls.clone(),
                    vkey: load_vkey(&l.vkey)?,
                    entries: l.entries,
                    witness: None,
                })
            })
            .collect()
    }
}

/// Loads a vkey from a file when `arg` names one, else parses `arg` as vkey text.
pub fn load_vkey(arg: &str) -> Result<Verifier, ConfigError> {
    btlog_client::keyfile::vkey_arg(arg)
        .map_err(|e| ConfigError::Vkey(arg.to_owned(), e.to_string()))
}

/// Parses `30s`, `5m`, `1h`, `7d`, `250ms` or a plain number of seconds
/// ([`btlog_client::parse_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    btlog_client::parse_duration(s).ok_or_else(|| ConfigError::Duration(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_config_parse() {
        assert_eq!(parse_duration("30s").ok(), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m").ok(), Some(Duration::from_secs(300)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("7").ok(), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_duration("2d").ok(),
            Some(Duration::from_secs(172_800))
        );
        for bad in ["", "s", "0s", "1w", "-1s", "1.5s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let cfg: FileConfig = toml::from_str(
            "interval = \"1m\"\n[[log]]\nurls = [\"http://a\"]\nvkey = \"k\"\n\
             [[watch]]\npattern = \"pkg:npm/*\"\npublishers = [\"p\"]\n",
        )
        .expect("parses");
        assert_eq!(cfg.log.len(), 1);
        assert_eq!(cfg.watch[0].publishers, vec!["p".to_string()]);
        assert!(toml::from_str::<FileConfig>("nope = 1").is_err());
    }
}
