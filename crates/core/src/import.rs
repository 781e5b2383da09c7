//! A registry's own published metadata as log entries (PROTOCOL.md §11), so a registry can
//! backfill its history and installers look up the identities they already know. Feature
//! `serde` (the metadata is JSON).
//!
//! crates.io index files (the registry index's JSON-lines layout, one file per crate): each line
//! is one version. `name`, `vers` and `cksum` (SHA-256 of the `.crate` file) become a publish of
//! `pkg:cargo/<name>` version `<vers>`, file `<name>-<vers>.crate`, with `pubtime` as `time`
//! when present; `"yanked": true` adds a `yank` of the same artifact after it.
//!
//! PyPI project JSON (`https://pypi.org/pypi/<project>/json`): every file of every release
//! becomes a publish of `pkg:pypi/<normalized name>` (PEP 503: lowercase, runs of `-_.` as one
//! `-`), the release's version, the file's `filename`, `digests.sha256`, `size`, and
//! `upload_time_iso_8601` to the second as `time`; a yanked file adds a `yank`. Files are
//! ordered by upload time, so the log follows the project's history.

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

#[derive(serde::Deserialize)]
struct Project {
    info: ProjectInfo,
    releases: std::collections::BTreeMap<String, Vec<PypiFile>>,
}

#[derive(serde::Deserialize)]
struct ProjectInfo {
    name: String,
}

#[derive(serde::Deserialize)]
struct PypiFile {
    filename: String,
    digests: PypiDigests,
    size: Option<u64>,
    upload_time_iso_8601: Option<String>,
    #[serde(default)]
    yanked: bool,
}

#[derive(serde::Deserialize)]
struct PypiDigests {
    sha256: String,
}

/// The PEP 503 normalized form of a Python project name.
pub fn pypi_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The purl of a Python project (purl spec, type `pypi`: the normalized name).
pub fn pypi_purl(name: &str) -> String {
    format!("pkg:pypi/{}", pypi_name(name))
}

/// The entries of one PyPI project JSON document, in upload order.
pub fn pypi_project(json: &str) -> Result<Vec<EntryFields>, ImportError> {
    let err = |reason: String| ImportError { line: 0, reason };
    let project: Project = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    let package = pypi_purl(&project.info.name);
    let mut files: Vec<(String, PypiFile)> = project
        .releases
        .into_iter()
        .flat_map(|(version, files)| files.into_iter().map(move |f| (version.clone(), f)))
        .collect();
    files.sort_by(|(_, a), (_, b)| {
        (&a.upload_time_iso_8601, &a.filename).cmp(&(&b.upload_time_iso_8601, &b.filename))
    });
    let mut out = Vec::with_capacity(files.len());
    for (version, f) in files {
        // `2015-01-02T16:38:13.948809Z` to the second, as entries carry it.
        let time = f
            .upload_time_iso_8601
            .as_deref()
            .and_then(|t| t.get(..19))
            .map(|t| format!("{t}Z"));
        let publish = EntryFields {
            kind: Kind::Publish,
            package: package.clone(),
            version,
            file: f.filename,
            sha256: f.digests.sha256.to_ascii_lowercase(),
            sha512: None,
            size: f.size,
            publisher: None,
            provenance: None,
            time,
        };
        if f.yanked {
            let yank = EntryFields {
                kind: Kind::Yank,
                time: None,
                size: None,
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
