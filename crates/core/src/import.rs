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
//!
//! npm packuments (`https://registry.npmjs.org/<name>`, or `npm view <name> --json`): npm
//! publishes no SHA-256, so each version's tarball must be at hand (a registry backfilling its
//! history has them). Its SHA-256 and size are computed, its SHA-512 must equal the version's
//! `dist.integrity`, and it becomes a publish of `pkg:npm/<name>` (a scope as `%40scope`), the
//! version, the tarball's file name, with `time.<version>` to the second when in UTC. Versions
//! whose tarball is not at hand, or without a SHA-512 integrity to check it against, are
//! returned apart.

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
        push_publish(&mut out, publish, rec.yanked);
    }
    Ok(out)
}

/// Appends `publish`, and when `yanked` a yank of the same artifact after it (the time and size
/// are the publish's, not the yank's).
fn push_publish(out: &mut Vec<EntryFields>, publish: EntryFields, yanked: bool) {
    let yank = yanked.then(|| EntryFields {
        kind: Kind::Yank,
        time: None,
        size: None,
        ..publish.clone()
    });
    out.push(publish);
    out.extend(yank);
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
        let time = f.upload_time_iso_8601.as_deref().and_then(utc_to_second);
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
        push_publish(&mut out, publish, f.yanked);
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct Packument {
    name: String,
    #[serde(default)]
    versions: std::collections::BTreeMap<String, NpmVersion>,
    #[serde(default)]
    time: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct NpmVersion {
    dist: NpmDist,
}

#[derive(serde::Deserialize)]
struct NpmDist {
    tarball: String,
    integrity: Option<String>,
}

/// The purl of an npm package (purl spec, type `npm`: a scope's `@` percent-encoded).
pub fn npm_purl(name: &str) -> String {
    match name.strip_prefix('@') {
        Some(scoped) => format!("pkg:npm/%40{scoped}"),
        None => format!("pkg:npm/{name}"),
    }
}

/// The SHA-512 of an npm `integrity` string (`sha512-<base64>`), if it has one.
pub fn npm_sha512(integrity: &str) -> Option<[u8; 64]> {
    use base64::Engine as _;
    integrity.split_whitespace().find_map(|part| {
        let b64 = part.strip_prefix("sha512-")?;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()?
            .try_into()
            .ok()
    })
}

/// The entries of an npm packument, in publication order, for the versions whose tarball
/// `tarball(file name)` returns; the file names of the others come back apart.
pub fn npm_packument(
    json: &str,
    tarball: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<(Vec<EntryFields>, Vec<String>), ImportError> {
    use sha2::{Digest, Sha256, Sha512};
    let err = |reason: String| ImportError { line: 0, reason };
    let doc: Packument = serde_json::from_str(json).map_err(|e| err(e.to_string()))?;
    let package = npm_purl(&doc.name);
    let mut versions: Vec<(String, NpmVersion)> = doc.versions.into_iter().collect();
    versions.sort_by(|(a, _), (b, _)| (doc.time.get(a), a).cmp(&(doc.time.get(b), b)));
    let (mut out, mut missing) = (Vec::new(), Vec::new());
    for (version, v) in versions {
        let file = v
            .dist
            .tarball
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        // Without a SHA-512 integrity nothing vouches for the tarball at hand: skipped.
        let declared = v.dist.integrity.as_deref().and_then(npm_sha512);
        let (Some(declared), Some(bytes)) = (declared, tarball(&file)) else {
            missing.push(file);
            continue;
        };
        let sha512: [u8; 64] = Sha512::digest(&bytes).into();
        if declared != sha512 {
            return Err(err(format!(
                "{file}: its SHA-512 is not the packument's integrity"
            )));
        }
        let time = doc.time.get(&version).and_then(|t| utc_to_second(t));
        out.push(EntryFields {
            kind: Kind::Publish,
            package: package.clone(),
            version,
            file,
            sha256: hex::encode(Sha256::digest(&bytes)),
            sha512: Some(hex::encode(sha512)),
            size: Some(bytes.len() as u64),
            publisher: None,
            provenance: None,
            time,
        });
    }
    Ok((out, missing))
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|+00:00)` as `YYYY-MM-DDTHH:MM:SSZ`; None for other offsets.
fn utc_to_second(t: &str) -> Option<String> {
    let (head, rest) = (t.get(..19)?, t.get(19..)?);
    let rest = rest
        .strip_prefix('.')
        .map_or(rest, |r| r.trim_start_matches(|c: char| c.is_ascii_digit()));
    matches!(rest, "Z" | "+00:00").then(|| format!("{head}Z"))
}
