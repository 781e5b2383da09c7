//! The binary transparency claims (PROTOCOL.md §2.3): what each entry may say, given
//! what was published before it. The log refuses an entry that breaks them (a `publish` with
//! another digest is answered `conflict`); a monitor alerts on any such entry a log appended.
//!
//! - A `publish` binds (package, version, file) to one sha256, forever: the same digest again
//!   is a duplicate, another digest a conflict.
//! - `yank`, `unyank` and `delete` name a published identity, with its digest.
//! - `owner-add` and `owner-remove` name a package with at least one earlier `publish`.

use crate::entry::{EntryData, Kind};

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
}
