//! A registry's own published metadata as log entries (PROTOCOL.md §11), so a registry can
//! backfill its history and installers look up the identities they already know. Feature
//! `serde` (the metadata is JSON).
//!
//! crates.io index files (the registry index's JSON-lines layout, one file per crate): each line
//! is one version. `name`, `vers` and `cksum` (SHA-256 of the `.crate` file) become a publish of
//! `pkg:cargo/<name>` version `<vers>`, file `<name>-<vers>.crate`, with `pubtime` as `time`
//! when present; `"yanked": true` adds a `yank` of the same artifact after it.

use crate::entry::{EntryFields, Kind};

/// Why a metadata file cannot be imported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct ImportError {
    /// 1-based line (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

#[derive(serde::Deserialize)]
struct IndexLine {
    name: String,
    vers: String,
    cksum: String,
    #[serde(default)]
    yanked: bool,
    #[serde(default)]
    pubtime: Option<String>,
}

/// The purl of a crate (purl spec, type `cargo`: the name as published).
pub fn cargo_purl(name: &str) -> String {
    format!("pkg:cargo/{name}")
}

/// The file name of a crate version, as crates.io serves and Cargo.lock checksums it.
pub fn crate_file(name: &str, version: &str) -> String {
    format!("{name}-{version}.crate")
}

/// The entries of one crates.io index file, in its order (publish, then yank when yanked).
/// Blank lines are skipped; every other line must be an index record.
pub fn crates_index(text: &str) -> Result<Vec<EntryFields>, ImportError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| ImportError {
            line: i + 1,
            reason,
        };
        let rec: IndexLine = serde_json::from_str(line).map_err(|e| err(e.to_string()))?;
        let publish = EntryFields {
            kind: Kind::Publish,
            package: cargo_purl(&rec.name),
            version: rec.vers.clone(),
            file: crate_file(&rec.name, &rec.vers),
            sha256: rec.cksum.to_ascii_lowercase(),
            sha512: None,
            size: None,
            publisher: None,
            provenance: None,
            time: rec.pubtime,
        };
        if rec.yanked {
            let yank = EntryFields {
                kind: Kind::Yank,
                time: None,
                ..publish.clone()
            };
            out.push(publish);
            out.push(yank);
        } else {
            out.push(publish);
        }
    }
    Ok(out)
}
