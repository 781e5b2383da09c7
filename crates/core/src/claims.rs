//! The binary transparency claims (PROTOCOL.md §2.3): what each entry may say, given
//! what was published before it. The log refuses an entry that breaks them (a `publish` with
//! another digest is answered `conflict`); a monitor alerts on any such entry a log appended.
//!
//! - A `publish` binds (package, version, file) to one sha256, forever: the same digest again
//!   is a duplicate, another digest a conflict.
//! - `yank`, `unyank` and `delete` name a published identity, with its digest.
//! - `owner-add` and `owner-remove` name a package with at least one earlier `publish`.
//!
//! Beyond the claims, [`PackageHistory`] marks what a person reading a package's history
//! should look at twice ([`Mark`]): a publish by a publisher that no earlier publish of the
//! package named, and every ownership change. These are not violations (the log appends
//! them), only what a maintainer who did not make them would want to see first.

use std::collections::{HashMap, HashSet};

use crate::entry::{Entry, EntryData, Kind};

/// The first `publish` of an identity: where it is in the log, and the digest it bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    /// Its leaf index.
    pub index: u64,
    /// The digest it bound the identity to.
    pub sha256: [u8; 32],
}

/// What one entry means, given what was published before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new entry. A `publish` binds its identity and marks its package published.
    New,
    /// A `publish` of an identity already bound to this digest.
    Duplicate(Published),
    /// A `publish` of an identity bound to another digest: the first binding stands.
    Conflict(Published),
    /// A `yank`, `unyank` or `delete` of an identity never published.
    UnknownArtifact,
    /// A `yank`, `unyank` or `delete` with a digest other than the published one.
    DigestMismatch(Published),
    /// An owner event for a package with no earlier `publish`.
    UnknownPackage,
}

/// Whether judging an entry of `kind` needs its identity's first publish (else it needs to
/// know whether its package was published).
pub fn needs_identity(kind: Kind) -> bool {
    !kind.is_owner()
}

/// Judges `entry`: `published` is its identity's first publish (looked up only when
/// [`needs_identity`]), `package_published` whether its package has an earlier `publish`
/// (looked up only when not).
pub fn judge(entry: &EntryData, published: Option<Published>, package_published: bool) -> Verdict {
    match (entry.kind, published) {
        (Kind::OwnerAdd | Kind::OwnerRemove, _) if !package_published => Verdict::UnknownPackage,
        (Kind::OwnerAdd | Kind::OwnerRemove, _) => Verdict::New,
        (Kind::Publish, None) => Verdict::New,
        (Kind::Publish, Some(p)) if p.sha256 == entry.sha256 => Verdict::Duplicate(p),
        (Kind::Publish, Some(p)) => Verdict::Conflict(p),
        (Kind::Yank | Kind::Unyank | Kind::Delete, None) => Verdict::UnknownArtifact,
        (Kind::Yank | Kind::Unyank | Kind::Delete, Some(p)) if p.sha256 != entry.sha256 => {
            Verdict::DigestMismatch(p)
        }
        (Kind::Yank | Kind::Unyank | Kind::Delete, Some(_)) => Verdict::New,
    }
}

impl Verdict {
    /// Whether the entry may be appended to the log.
    pub fn is_new(&self) -> bool {
        matches!(self, Verdict::New)
    }

    /// Why `entry` breaks a claim, for a person; `None` for a new entry or a duplicate.
    pub fn reason(&self, entry: &EntryData) -> Option<String> {
        let (kind, package, version, file) =
            (entry.kind, &entry.package, &entry.version, &entry.file);
        let digest = hex::encode(entry.sha256);
        Some(match self {
            Verdict::New | Verdict::Duplicate(_) => return None,
            Verdict::Conflict(p) => format!(
                "{package} {version} {file} was published at index {} with sha256 {}, now with {digest}",
                p.index,
                hex::encode(p.sha256)
            ),
            Verdict::UnknownArtifact => {
                format!("{kind} names {package} {version} {file}, which was never published")
            }
            Verdict::DigestMismatch(p) => format!(
                "{kind} names {package} {version} {file} with sha256 {digest}, but index {} published {}",
                p.index,
                hex::encode(p.sha256)
            ),
            Verdict::UnknownPackage => {
                format!("{kind} names {package}, which has no earlier publish")
            }
        })
    }
}

/// Why an entry of a package's history deserves a second look (see [`PackageHistory`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The entry breaks a claim: a conflict, an unknown artifact, a digest mismatch or an
    /// owner event before any publish (the log refuses these; one in the log is evidence).
    Broken {
        /// The verdict.
        verdict: Verdict,
        /// Why, for a person ([`Verdict::reason`]).
        reason: String,
    },
    /// A `publish` naming a publisher (or none) that no earlier publish of the package named.
    NewPublisher {
        /// The publishers earlier publishes named (`None`: published without one), sorted.
        earlier: Vec<Option<String>>,
    },
    /// An `owner-add` or `owner-remove`.
    OwnerChange,
}

impl Mark {
    /// A short label for the mark (`conflict`, `new publisher`, `owner change`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Mark::Broken { verdict, .. } => match verdict {
                Verdict::Conflict(_) => "conflict",
                Verdict::UnknownArtifact => "unknown artifact",
                Verdict::DigestMismatch(_) => "digest mismatch",
                Verdict::UnknownPackage => "unknown package",
                Verdict::New | Verdict::Duplicate(_) => "duplicate",
            },
            Mark::NewPublisher { .. } => "new publisher",
            Mark::OwnerChange => "owner change",
        }
    }

    /// What the mark means for this entry, for a person.
    pub fn describe(&self, entry: &EntryData) -> String {
        match self {
            Mark::Broken { reason, .. } => reason.clone(),
            Mark::NewPublisher { earlier } => {
                let name = |p: &Option<String>| p.as_deref().unwrap_or("(none)").to_owned();
                let earlier: Vec<String> = earlier.iter().map(name).collect();
                format!(
                    "published by {}, which no earlier publish of {} named (earlier: {})",
                    name(&entry.publisher),
                    entry.package,
                    earlier.join(", ")
                )
            }
            Mark::OwnerChange => {
                format!("the owners of {} changed ({})", entry.package, entry.kind)
            }
        }
    }
}

/// One package's history replayed in log order: judges each entry by the claims, as the log
/// and the monitor do ([`judge`]), and marks what deserves a second look ([`Mark`]). Holds one
/// record per published identity of the package and one per distinct publisher.
#[derive(Debug, Default)]
pub struct PackageHistory {
    published: HashMap<[u8; 32], Published>,
    publishers: HashSet<Option<String>>,
    package_published: bool,
}

impl PackageHistory {
    /// An empty history (before the package's first entry).
    pub fn new() -> Self {
        Self::default()
    }

    /// Judges `entry` (the next entry of the package, at leaf `index`) against the entries
    /// observed so far, records what it establishes, and returns its marks (none for most
    /// entries).
    pub fn observe(&mut self, index: u64, entry: &Entry) -> Vec<Mark> {
        let key = needs_identity(entry.kind).then(|| entry.identity_key());
        let published = key.and_then(|k| self.published.get(&k).copied());
        let verdict = judge(entry, published, self.package_published);
        let mut marks = Vec::new();
        if let Some(reason) = verdict.reason(entry) {
            marks.push(Mark::Broken { verdict, reason });
        }
        if entry.kind.is_owner() {
            marks.push(Mark::OwnerChange);
        }
        if entry.kind == Kind::Publish && verdict.is_new() {
            if self.package_published && !self.publishers.contains(&entry.publisher) {
                let mut earlier: Vec<_> = self.publishers.iter().cloned().collect();
                earlier.sort();
                marks.push(Mark::NewPublisher { earlier });
            }
            if let Some(k) = key {
                self.published.insert(
                    k,
                    Published {
                        index,
                        sha256: entry.sha256,
                    },
                );
            }
            self.publishers.insert(entry.publisher.clone());
            self.package_published = true;
        }
        marks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: Kind, sha256: u8) -> EntryData {
        let owner = kind.is_owner();
        EntryData {
            kind,
            registry: "registry.example".into(),
            package: "pkg:npm/left-pad".into(),
            version: if owner { "-" } else { "1.3.0" }.into(),
            file: if owner { "-" } else { "left-pad-1.3.0.tgz" }.into(),
            sha256: [sha256; 32],
            sha512: None,
            size: None,
            publisher: None,
            provenance: None,
            time: None,
        }
    }

    #[test]
    fn every_kind_against_every_history() {
        let first = Published {
            index: 3,
            sha256: [1; 32],
        };
        let publish = entry(Kind::Publish, 1);
        assert_eq!(judge(&publish, None, false), Verdict::New);
        assert_eq!(
            judge(&publish, Some(first), true),
            Verdict::Duplicate(first)
        );
        let other = entry(Kind::Publish, 2);
        assert_eq!(judge(&other, Some(first), true), Verdict::Conflict(first));
        for kind in [Kind::Yank, Kind::Unyank, Kind::Delete] {
            assert!(needs_identity(kind));
            assert_eq!(judge(&entry(kind, 1), None, true), Verdict::UnknownArtifact);
            assert_eq!(judge(&entry(kind, 1), Some(first), true), Verdict::New);
            let wrong = judge(&entry(kind, 2), Some(first), true);
            assert_eq!(wrong, Verdict::DigestMismatch(first));
            let reason = wrong.reason(&entry(kind, 2)).expect("reason");
            assert!(reason.contains("index 3"), "{reason}");
        }
        for kind in [Kind::OwnerAdd, Kind::OwnerRemove] {
            assert!(!needs_identity(kind));
            let v = judge(&entry(kind, 9), None, false);
            assert_eq!(v, Verdict::UnknownPackage);
            let reason = v.reason(&entry(kind, 9)).expect("reason");
            assert!(reason.contains("no earlier publish"), "{reason}");
            assert_eq!(judge(&entry(kind, 9), None, true), Verdict::New);
        }
        assert_eq!(Verdict::New.reason(&publish), None);
        assert_eq!(Verdict::Duplicate(first).reason(&publish), None);
    }

    #[test]
    fn history_marks_new_publishers_owner_changes_and_broken_claims() {
        let with = |kind, sha256, version: &str, publisher: Option<&str>| {
            let mut e = entry(kind, sha256);
            if !kind.is_owner() {
                e.version = version.into();
                e.file = format!("left-pad-{version}.tgz");
            }
            e.publisher = publisher.map(str::to_owned);
            Entry::new(e).expect("valid entry")
        };
        let labels = |marks: Vec<Mark>| marks.iter().map(Mark::label).collect::<Vec<_>>();
        let mut h = PackageHistory::new();
        let none: Vec<&str> = Vec::new();
        assert_eq!(
            labels(h.observe(0, &with(Kind::OwnerAdd, 9, "-", None))),
            ["unknown package", "owner change"]
        );
        assert_eq!(
            labels(h.observe(1, &with(Kind::Publish, 1, "1.0.0", Some("ci")))),
            none
        );
        assert_eq!(
            labels(h.observe(2, &with(Kind::Publish, 2, "1.1.0", Some("ci")))),
            none
        );
        let marks = h.observe(3, &with(Kind::Publish, 3, "1.2.0", Some("laptop")));
        assert_eq!(labels(marks.clone()), ["new publisher"]);
        let text = marks[0].describe(&with(Kind::Publish, 3, "1.2.0", Some("laptop")));
        assert!(
            text.contains("laptop") && text.contains("earlier: ci"),
            "{text}"
        );
        // Known now: not marked again.
        assert_eq!(
            labels(h.observe(4, &with(Kind::Publish, 4, "1.3.0", Some("laptop")))),
            none
        );
        assert_eq!(
            labels(h.observe(5, &with(Kind::Publish, 5, "1.3.0", Some("ci")))),
            ["conflict"]
        );
        assert_eq!(
            labels(h.observe(6, &with(Kind::Yank, 4, "1.3.0", None))),
            none
        );
        assert_eq!(
            labels(h.observe(7, &with(Kind::Delete, 7, "1.3.0", None))),
            ["digest mismatch"]
        );
        assert_eq!(
            labels(h.observe(8, &with(Kind::Unyank, 1, "9.9.9", None))),
            ["unknown artifact"]
        );
        assert_eq!(
            labels(h.observe(9, &with(Kind::OwnerRemove, 9, "-", None))),
            ["owner change"]
        );
        // A duplicate publish is not new and marks nothing.
        assert_eq!(
            labels(h.observe(10, &with(Kind::Publish, 1, "1.0.0", None))),
            none
        );
    }
}
