//! Submitter credentials (PROTOCOL.md §6): bearer tokens bound to one registry name and to the
//! purl prefixes they may write. Only SHA-256 of each token is stored, in `<data>/tokens.toml`;
//! presented tokens are hashed and compared in constant time. Tokens are never logged.
//!
//! Deny by default: a token writes only under the prefixes it names, matched at purl segment
//! boundaries; `*` (one registry per log) is the explicit "any package". Otherwise the first
//! token to claim `pkg:npm/react 19.0.0` would own that identity forever, whichever registry
//! it was made for.

use super::error::{ErrorKind, LogError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use btlog_client::file::{self, Access};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq as _;

const TOKEN_PREFIX: &str = "btlog_";

/// Why the tokens file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid tokens file.
    #[error("{}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The registry name or a prefix is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

/// One stored credential.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// The registry name stamped into every entry this token submits.
    pub registry: String,
    /// Purl prefixes the token may write, or `*` for any package.
    #[serde(default)]
    pub allow: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenRecord>,
}

/// An authenticated submitter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    /// The registry name bound to the token.
    pub registry: String,
    /// Purl prefixes it may write, or `*`.
    pub allow: Vec<String>,
    /// A stable, non-secret id for rate limiting and logs (a prefix of the token hash).
    pub id: String,
}

impl Credential {
    /// Checks that this credential may write `package`.
    pub fn check_package(&self, package: &str) -> Result<(), LogError> {
        let allowed = |p: &String| p == ANY || btlog_core::entry::purl_has_prefix(package, p);
        if self.allow.iter().any(allowed) {
            return Ok(());
        }
        Err(LogError::bad_input(format!(
            "credential may not write package {package:?} (allowed prefixes: {})",
            self.allow.join(", ")
        )))
    }
}

/// The loaded credentials.
#[derive(Debug, Default)]
pub struct Tokens {
    records: Vec<([u8; 32], Credential)>,
}

impl Tokens {
    /// Loads `path`; a missing file means no credentials (reads still work).
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let file = read_file(path)?;
        let mut records = Vec::with_capacity(file.token.len());
        for rec in file.token {
            check_allow(&rec.allow).map_err(|reason| AuthError::Malformed {
                path: path.to_owned(),
                reason: format!("token {}…: {reason}", rec.sha256.get(..12).unwrap_or("?")),
            })?;
            let hash: [u8; 32] = hex::decode(&rec.sha256)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| AuthError::Malformed {
                    path: path.to_owned(),
                    reason: "sha256 must be 64 hex digits".into(),
                })?;
            let credential = Credential {
                id: rec.sha256[..12].to_owned(),
                registry: rec.registry,
                allow: rec.allow,
            };
            records.push((hash, credential));
        }
        Ok(Tokens { records })
    }

    /// Number of credentials.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when there are no credentials.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The credential for a bearer token; every stored hash is compared, in constant time.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Credential, LogError> {
        let unauthenticated = |m: &str| LogError::new(ErrorKind::Unauthenticated, m);
        let token = token.ok_or_else(|| unauthenticated("missing bearer token"))?;
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (hash, credential) in &self.records {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(credential);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthenticated("unknown bearer token"))
    }
}

/// Extracts the token from an `Authorization: Bearer <token>` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Creates a token for `registry` that may write under the purl prefixes `allow` (or `*`),
/// stores its SHA-256 in the tokens file at `path` (mode 0600) and returns the token.
/// Concurrent calls on one file each keep their token: the read-modify-write holds an
/// exclusive lock on `<path>.lock`.
pub fn add_token(path: &Path, registry: &str, allow: &[String]) -> Result<String, AuthError> {
    check_registry(registry)?;
    check_allow(allow).map_err(AuthError::Invalid)?;
    let io = |source| AuthError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        file::create_private_dir(dir).map_err(io)?;
    }
    let _lock = file::lock_exclusive(&lock_path(path)).map_err(io)?;
    let mut file = read_file(path)?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("{TOKEN_PREFIX}{}", B64URL.encode(raw));
    file.token.push(TokenRecord {
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        registry: registry.to_owned(),
        allow: allow.to_vec(),
    });
    let text = toml::to_string(&file).map_err(|e| AuthError::Invalid(e.to_string()))?;
    file::write_atomic(path, text.as_bytes(), Access::Private).map_err(io)?;
    Ok(token)
}

/// The allow-list entry that lets a token write any package.
pub const ANY: &str = "*";

/// An allow-list names at least one purl prefix of whole segments, or is exactly `["*"]`.
fn check_allow(allow: &[String]) -> Result<(), String> {
    if allow.is_empty() {
        return Err(format!(
            "no allowed packages: name the purl prefixes the token may write (`--allow pkg:npm/`), or {ANY:?} for any package"
        ));
    }
    if allow.len() > 1 && allow.iter().any(|p| p == ANY) {
        return Err(format!("{ANY:?} allows every package and stands alone"));
    }
    for p in allow.iter().filter(|p| *p != ANY) {
        btlog_core::entry::validate_purl_prefix(p)
            .map_err(|reason| format!("allowed prefix {p:?}: {reason}"))?;
    }
    Ok(())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A registry name must be acceptable in an entry's `registry` line; the entry rules decide.
fn check_registry(registry: &str) -> Result<(), AuthError> {
    let probe = btlog_core::entry::EntryData {
        kind: btlog_core::entry::Kind::Publish,
        registry: registry.to_owned(),
        package: "pkg:generic/probe".to_owned(),
        version: "1".to_owned(),
        file: "probe".to_owned(),
        sha256: [0; 32],
        sha512: None,
        size: None,
        publisher: None,
        provenance: None,
        time: None,
    };
    btlog_core::entry::Entry::new(probe)
        .map(drop)
        .map_err(|e| AuthError::Invalid(format!("registry name {registry:?}: {e}")))
}

fn read_file(path: &Path) -> Result<TokensFile, AuthError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TokensFile::default()),
        Err(source) => {
            return Err(AuthError::Io {
                path: path.to_owned(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| AuthError::Malformed {
        path: path.to_owned(),
        reason: e.message().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        let a = add_token(&path, "registry.npmjs.org", &["pkg:npm/".into()]).expect("add");
        let b = add_token(&path, "crates.io", &[ANY.into()]).expect("add");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&a) && !text.contains(&b));
        let tokens = Tokens::load(&path).expect("load");
        let ca = tokens.authenticate(Some(&a)).expect("a");
        assert_eq!(ca.registry, "registry.npmjs.org");
        assert!(ca.check_package("pkg:npm/x").is_ok());
        assert!(ca.check_package("pkg:cargo/x").is_err());
        assert_eq!(
            tokens.authenticate(Some(&b)).expect("b").registry,
            "crates.io"
        );
        assert!(tokens.authenticate(Some("btlog_nope")).is_err());
        assert!(tokens.authenticate(None).is_err());
        assert!(add_token(&path, "Bad Name", &[ANY.into()]).is_err());
    }

    #[test]
    fn tokens_are_denied_by_default_and_prefixes_end_at_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        for allow in [
            &[][..],
            &["npm/".to_owned()],
            &["pkg:npm/..".to_owned()],
            &["pkg:npm/%40acme".to_owned(), ANY.to_owned()],
        ] {
            let e = add_token(&path, "crates.io", allow).expect_err("refused");
            assert!(matches!(e, AuthError::Invalid(_)), "{allow:?}: {e}");
        }
        let acme = add_token(&path, "acme", &["pkg:npm/%40acme".into()]).expect("add");
        let tokens = Tokens::load(&path).expect("load");
        let c = tokens.authenticate(Some(&acme)).expect("acme");
        assert!(c.check_package("pkg:npm/%40acme/x").is_ok());
        assert!(c.check_package("pkg:npm/%40acme-evil/x").is_err());
        assert!(c.check_package("pkg:npm/react").is_err());

        // A file without an allow-list (as written before deny-by-default) is refused at load,
        // naming the fix, rather than running with tokens that may write anything.
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str(&format!(
            "[[token]]\nsha256 = \"{}\"\nregistry = \"crates.io\"\n",
            "ab".repeat(32)
        ));
        std::fs::write(&path, text).expect("write");
        let e = Tokens::load(&path).expect_err("no allow-list");
        assert!(e.to_string().contains("no allowed packages"), "{e}");
    }

    #[test]
    fn concurrent_token_adds_all_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.toml");
        let added: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| add_token(&path, "crates.io", &[ANY.into()]).expect("add")))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let tokens = Tokens::load(&path).expect("load");
        assert_eq!(tokens.len(), 8);
        for t in &added {
            assert!(tokens.authenticate(Some(t)).is_ok());
        }
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
