//! Artifact entries, the leaf data of the log (PROTOCOL.md §2).
//!
//! An entry is UTF-8 text, one `key value` per line in a fixed key order, built by the server from
//! structured fields ([`EntryData`], or the JSON request shape [`EntryFields`]) and parsed back
//! strictly by clients: [`Entry::parse`] accepts exactly the bytes [`Entry::encode`] produces, so
//! a round trip is byte-identical and every entry has a single encoding (and a single leaf hash).
//!
//! Value rules (PROTOCOL.md §2 leaves them to the implementation; chosen so a value can never forge a
//! line, hide characters or alias another identity):
//! - `registry`: 1–253 bytes of `a-z 0-9 . - _ : /`, starting and ending with a letter or digit.
//! - `package`: a purl `pkg:<type>/<namespace>/…/<name>`; type `[a-z][a-z0-9.+-]*`; non-empty
//!   segments in which only `A-Z a-z 0-9 - . _ ~` appear raw and every other byte is
//!   percent-encoded with uppercase hex (so `@` version, `?` qualifiers and `#` subpath cannot
//!   appear, and `%61` may not stand for `a`); at most 1024 bytes.
//! - `version`, `file`: 1–1024 printable ASCII bytes (`!`..=`~`), never the bare `-`, except in
//!   `owner-add` / `owner-remove` entries where both are exactly `-`.
//! - `publisher`: 1–4096 bytes of UTF-8 without control, format (bidi, zero-width) or
//!   whitespace characters other than interior U+0020 spaces.
//! - `sha256`, `sha512`: lowercase hex of 32 / 64 bytes; `provenance`: `sha256:` + 64 lowercase hex.
//! - `size`: decimal `u64`, no sign, no leading zeros.
//! - `time`: RFC 3339 UTC `YYYY-MM-DDTHH:MM:SSZ`, a real calendar date, seconds 00–59.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::merkle::{self, Hash};

/// First line of every entry (PROTOCOL.md §2).
pub const HEADER: &str = "btlog-entry/v1";
/// Largest encoded entry, the tlog-tiles entry bundle limit (PROTOCOL.md §2).
pub const MAX_ENTRY_BYTES: usize = 65_535;
/// The `version` and `file` of `owner-add` / `owner-remove` entries (PROTOCOL.md §2).
pub const OWNER_PLACEHOLDER: &str = "-";

const MAX_REGISTRY: usize = 253;
const MAX_PACKAGE: usize = 1024;
const MAX_TOKEN: usize = 1024;
const MAX_PUBLISHER: usize = 4096;
const PROVENANCE_PREFIX: &str = "sha256:";
const IDENTITY_DOMAIN: &[u8] = b"btlog-identity/v1\n";

/// Every key in its canonical order; the first [`REQUIRED_KEYS`] are required (PROTOCOL.md §2).
const KEYS: [&str; 11] = [
    "kind",
    "registry",
    "package",
    "version",
    "file",
    "sha256",
    "sha512",
    "size",
    "publisher",
    "provenance",
    "time",
];
const REQUIRED_KEYS: usize = 6;

/// Why an entry or one of its fields was refused (PROTOCOL.md §2); [`EntryError::field`] names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The encoding is longer than [`MAX_ENTRY_BYTES`].
    #[error("entry is {0} bytes, more than the {MAX_ENTRY_BYTES} allowed")]
    TooLarge(usize),
    /// The bytes are not UTF-8.
    #[error("entry is not valid UTF-8")]
    NotUtf8,
    /// The last line does not end in `\n`.
    #[error("entry does not end in a newline")]
    MissingFinalNewline,
    /// A line (1-based) is empty.
    #[error("line {0} is empty")]
    EmptyLine(usize),
    /// The first line is not [`HEADER`].
    #[error("first line must be `{HEADER}`")]
    BadHeader,
    /// A line (1-based) has no space between key and value.
    #[error("line {0} is not `key value`")]
    MalformedLine(usize),
    /// A key that PROTOCOL.md §2 does not define (shown escaped, truncated).
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// A key appears twice.
    #[error("duplicate key `{0}`")]
    DuplicateKey(&'static str),
    /// A key appears after one that must follow it.
    #[error("key `{key}` must come before `{after}`")]
    KeyOrder {
        /// The misplaced key.
        key: &'static str,
        /// The key it was found after.
        after: &'static str,
    },
    /// A required key is absent.
    #[error("missing required key `{0}`")]
    MissingKey(&'static str),
    /// A value breaks the rules of its field.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The key whose value is wrong.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Parsed, but does not re-encode to the same bytes.
    #[error("entry is not in canonical form")]
    NonCanonical,
}

impl EntryError {
    /// The key this error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::UnknownKey(key) => Some(key),
            Self::DuplicateKey(key) | Self::MissingKey(key) | Self::KeyOrder { key, .. } => {
                Some(key)
            }
            Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EntryError {
    EntryError::InvalidField {
        field,
        reason: reason.into(),
    }
}

/// The `kind` of an entry (PROTOCOL.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Kind {
    /// An artifact was published; its identity is bound to its sha256 forever.
    Publish,
    /// A published artifact was yanked.
    Yank,
    /// A yanked artifact was restored.
    Unyank,
    /// A published artifact was deleted (its identity stays taken).
    Delete,
    /// An account (by SHA-256 of an opaque id) became an owner of a package.
    OwnerAdd,
    /// An account stopped being an owner of a package.
    OwnerRemove,
}

impl Kind {
    /// Every kind, in PROTOCOL.md §2 order.
    pub const ALL: [Kind; 6] = [
        Kind::Publish,
        Kind::Yank,
        Kind::Unyank,
        Kind::Delete,
        Kind::OwnerAdd,
        Kind::OwnerRemove,
    ];

    /// The wire name (`publish`, `owner-add`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Publish => "publish",
            Kind::Yank => "yank",
            Kind::Unyank => "unyank",
            Kind::Delete => "delete",
            Kind::OwnerAdd => "owner-add",
            Kind::OwnerRemove => "owner-remove",
        }
    }

    /// Whether this kind names a package rather than an artifact (`version`/`file` are `-`).
    pub const fn is_owner(self) -> bool {
        matches!(self, Kind::OwnerAdd | Kind::OwnerRemove)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = EntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "kind",
                    "not one of publish, yank, unyank, delete, owner-add, owner-remove",
                )
            })
    }
}

/// The typed fields of an entry, not yet validated (PROTOCOL.md §2); [`Entry::new`] checks them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryData {
    /// What happened.
    pub kind: Kind,
    /// The registry name, written by the server from the submitter's credential.
    pub registry: String,
    /// The package URL, without version, qualifiers or subpath.
    pub package: String,
    /// The registry's version string (`-` for owner kinds).
    pub version: String,
    /// The registry's file name (`-` for owner kinds).
    pub file: String,
    /// SHA-256 of the artifact (owner kinds: of an opaque account id).
    pub sha256: [u8; 32],
    /// SHA-512 of the artifact, for ecosystems that use it natively.
    pub sha512: Option<[u8; 64]>,
    /// Size of the artifact in bytes.
    pub size: Option<u64>,
    /// Who or what published it (e.g. a CI workflow identity).
    pub publisher: Option<String>,
    /// SHA-256 of the provenance attestation, encoded `sha256:<hex>`.
    pub provenance: Option<[u8; 32]>,
    /// When, as `YYYY-MM-DDTHH:MM:SSZ`.
    pub time: Option<String>,
}

/// A validated entry (PROTOCOL.md §2): it always encodes to canonical text. Read fields through `Deref`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry(EntryData);

impl Deref for Entry {
    type Target = EntryData;

    fn deref(&self) -> &EntryData {
        &self.0
    }
}

/// The identity of an artifact, (package, version, file) (PROTOCOL.md §2).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The purl.
    pub package: String,
    /// The version string.
    pub version: String,
    /// The file name.
    pub file: String,
}

impl Identity {
    /// Index key of the identity (PROTOCOL.md §2): SHA-256 of `btlog-identity/v1\n` followed, for
    /// package, version and file in turn, by the value's byte length as a big-endian u64 and
    /// the value's bytes. Length prefixes make the encoding unambiguous for any strings.
    pub fn key(&self) -> [u8; 32] {
        identity_key([&self.package, &self.version, &self.file])
    }
}

/// [`Identity::key`] of (package, version, file).
fn identity_key(parts: [&str; 3]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(IDENTITY_DOMAIN);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

impl Entry {
    /// Validates `data` against PROTOCOL.md §2 and the module's value rules.
    pub fn new(data: EntryData) -> Result<Self, EntryError> {
        validate(&data)?;
        let entry = Entry(data);
        let len = entry.encoded_len();
        if len > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(len));
        }
        Ok(entry)
    }

    /// The canonical text (PROTOCOL.md §2); what the leaf hash covers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(HEADER.as_bytes());
        out.push(b'\n');
        self.for_each_line(|key, value| {
            out.extend_from_slice(key.as_bytes());
            out.push(b' ');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        });
        out
    }

    /// Parses canonical text strictly (PROTOCOL.md §2): anything [`Entry::encode`] would not produce is
    /// refused, with an error naming the offending key where there is one.
    pub fn parse(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(EntryError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| EntryError::NotUtf8)?;
        let values = split_lines(text)?;
        let entry = Entry::new(data_from_values(&values)?)?;
        if !entry.encodes_to(bytes) {
            return Err(EntryError::NonCanonical);
        }
        Ok(entry)
    }

    /// Whether `bytes` is exactly [`Entry::encode`], compared without encoding.
    fn encodes_to(&self, bytes: &[u8]) -> bool {
        let mut rest = bytes
            .strip_prefix(HEADER.as_bytes())
            .and_then(|r| r.strip_prefix(b"\n"));
        self.for_each_line(|key, value| {
            rest = rest
                .and_then(|r| r.strip_prefix(key.as_bytes()))
                .and_then(|r| r.strip_prefix(b" "))
                .and_then(|r| r.strip_prefix(value.as_bytes()))
                .and_then(|r| r.strip_prefix(b"\n"));
        });
        rest.is_some_and(<[u8]>::is_empty)
    }

    /// The index key of the entry's identity, [`Identity::key`].
    pub fn identity_key(&self) -> [u8; 32] {
        identity_key([&self.package, &self.version, &self.file])
    }

    /// The (package, version, file) identity (PROTOCOL.md §2).
    pub fn identity(&self) -> Identity {
        Identity {
            package: self.package.clone(),
            version: self.version.clone(),
            file: self.file.clone(),
        }
    }

    /// RFC 6962 leaf hash of the encoding (PROTOCOL.md §1, §2).
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.encode())
    }

    /// The validated fields.
    pub fn data(&self) -> &EntryData {
        &self.0
    }

    /// Gives the fields back.
    pub fn into_data(self) -> EntryData {
        self.0
    }

    /// Calls `f` with each (key, value) line after the header, in canonical order, without
    /// allocating: hex values are written to stack buffers.
    fn for_each_line(&self, mut f: impl FnMut(&str, &str)) {
        let d = &self.0;
        f("kind", d.kind.as_str());
        f("registry", &d.registry);
        f("package", &d.package);
        f("version", &d.version);
        f("file", &d.file);
        f("sha256", hex_str(&d.sha256, &mut [0; 64]));
        if let Some(sha512) = &d.sha512 {
            f("sha512", hex_str(sha512, &mut [0; 128]));
        }
        if let Some(size) = d.size {
            f("size", &size.to_string());
        }
        if let Some(publisher) = &d.publisher {
            f("publisher", publisher);
        }
        if let Some(provenance) = d.provenance {
            f("provenance", &format_provenance(provenance));
        }
        if let Some(time) = &d.time {
            f("time", time);
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = HEADER.len() + 1;
        self.for_each_line(|k, v| len += k.len() + v.len() + 2);
        len
    }
}

/// Splits canonical text into one optional value per key of [`KEYS`], checking line structure,
/// key names, duplicates and order.
fn split_lines(text: &str) -> Result<[Option<&str>; KEYS.len()], EntryError> {
    let body = text
        .strip_suffix('\n')
        .ok_or(EntryError::MissingFinalNewline)?;
    let mut lines = body.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, HEADER)) => {}
        Some((_, "")) => return Err(EntryError::EmptyLine(1)),
        _ => return Err(EntryError::BadHeader),
    }
    let mut values = [None; KEYS.len()];
    let mut last: Option<usize> = None;
    for (n, line) in lines {
        if line.is_empty() {
            return Err(EntryError::EmptyLine(n));
        }
        let (key, value) = line.split_once(' ').ok_or(EntryError::MalformedLine(n))?;
        let pos = key_position(key)?;
        if values[pos].is_some() {
            return Err(EntryError::DuplicateKey(KEYS[pos]));
        }
        check_order(last, pos)?;
        last = Some(pos);
        values[pos] = Some(value);
    }
    Ok(values)
}

fn key_position(key: &str) -> Result<usize, EntryError> {
    KEYS.iter()
        .position(|k| *k == key)
        .ok_or_else(|| EntryError::UnknownKey(key.chars().take(64).collect()))
}

fn check_order(last: Option<usize>, pos: usize) -> Result<(), EntryError> {
    match last {
        Some(l) if l > pos => Err(EntryError::KeyOrder {
            key: KEYS[pos],
            after: KEYS[l],
        }),
        _ => Ok(()),
    }
}

/// Builds typed fields from the split values; `values` is indexed like [`KEYS`].
fn data_from_values(values: &[Option<&str>; KEYS.len()]) -> Result<EntryData, EntryError> {
    let required = |i: usize| values[i].ok_or(EntryError::MissingKey(KEYS[i]));
    for i in 0..REQUIRED_KEYS {
        required(i)?;
    }
    Ok(EntryData {
        kind: required(0)?.parse()?,
        registry: required(1)?.to_owned(),
        package: required(2)?.to_owned(),
        version: required(3)?.to_owned(),
        file: required(4)?.to_owned(),
        sha256: parse_hex("sha256", required(5)?)?,
        sha512: values[6].map(|v| parse_hex("sha512", v)).transpose()?,
        size: values[7].map(parse_size).transpose()?,
        publisher: values[8].map(str::to_owned),
        provenance: values[9].map(parse_provenance).transpose()?,
        time: values[10].map(str::to_owned),
    })
}

/// Decodes exactly `N` bytes of lowercase hex, for the field `field`.
pub fn parse_hex<const N: usize>(field: &'static str, s: &str) -> Result<[u8; N], EntryError> {
    if s.len() != 2 * N {
        return Err(invalid(field, format!("must be {} hex digits", 2 * N)));
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
        *o = match (nibble(pair[0]), nibble(pair[1])) {
            (Some(hi), Some(lo)) => hi << 4 | lo,
            _ => return Err(invalid(field, "must be lowercase hex")),
        };
    }
    Ok(out)
}

fn parse_size(s: &str) -> Result<u64, EntryError> {
    crate::checkpoint::parse_decimal(s).ok_or_else(|| {
        invalid(
            "size",
            "must be a decimal u64 without sign or leading zeros",
        )
    })
}

fn parse_provenance(s: &str) -> Result<[u8; 32], EntryError> {
    let digest = s
        .strip_prefix(PROVENANCE_PREFIX)
        .ok_or_else(|| invalid("provenance", "must be `sha256:<64 lowercase hex>`"))?;
    parse_hex("provenance", digest)
}

/// `bytes` as lowercase hex, written into `buf` (twice as long as `bytes`).
fn hex_str<'a>(bytes: &[u8], buf: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in buf.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    std::str::from_utf8(buf).unwrap_or_default()
}

fn format_provenance(digest: [u8; 32]) -> String {
    format!("{PROVENANCE_PREFIX}{}", hex::encode(digest))
}

fn validate(d: &EntryData) -> Result<(), EntryError> {
    validate_registry(&d.registry)?;
    validate_purl(&d.package).map_err(|r| invalid("package", r))?;
    if d.kind.is_owner() {
        require_placeholder("version", &d.version)?;
        require_placeholder("file", &d.file)?;
    } else {
        validate_token("version", &d.version)?;
        validate_token("file", &d.file)?;
    }
    if let Some(p) = &d.publisher {
        validate_text("publisher", p, MAX_PUBLISHER)?;
    }
    if let Some(t) = &d.time {
        validate_time(t).map_err(|r| invalid("time", r))?;
    }
    Ok(())
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), EntryError> {
    if s.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(invalid(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn validate_registry(s: &str) -> Result<(), EntryError> {
    const FIELD: &str = "registry";
    check_len(FIELD, s, MAX_REGISTRY)?;
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:/".contains(&b);
    if let Some(b) = s.bytes().find(|b| !ok_char(*b)) {
        return Err(invalid(
            FIELD,
            format!("character {:?} not allowed", b as char),
        ));
    }
    let edge_ok = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !edge_ok(s.bytes().next()) || !edge_ok(s.bytes().last()) {
        return Err(invalid(FIELD, "must start and end with a letter or digit"));
    }
    Ok(())
}

fn require_placeholder(field: &'static str, s: &str) -> Result<(), EntryError> {
    if s != OWNER_PLACEHOLDER {
        return Err(invalid(field, "must be `-` for owner-add and owner-remove"));
    }
    Ok(())
}

/// `version` and `file`: printable ASCII without spaces, never the owner placeholder.
fn validate_token(field: &'static str, s: &str) -> Result<(), EntryError> {
    check_len(field, s, MAX_TOKEN)?;
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(invalid(
            field,
            format!("character {c:?} not allowed (printable ASCII only)"),
        ));
    }
    if s == OWNER_PLACEHOLDER {
        return Err(invalid(
            field,
            "`-` is reserved for owner-add and owner-remove",
        ));
    }
    Ok(())
}

/// Free text: no control, format or non-space whitespace characters, no edge spaces.
fn validate_text(field: &'static str, s: &str, max: usize) -> Result<(), EntryError> {
    check_len(field, s, max)?;
    if let Some(c) = s.chars().find(|c| is_hidden_char(*c)) {
        return Err(invalid(field, format!("character {c:?} not allowed")));
    }
    if s.starts_with(' ') || s.ends_with(' ') {
        return Err(invalid(field, "must not start or end with a space"));
    }
    Ok(())
}

/// Characters that could break a line, hide text or reorder it on screen.
fn is_hidden_char(c: char) -> bool {
    c.is_control()
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a purl prefix naming whole segments: `pkg:<type>` or `pkg:<type>/<seg>/…/<seg>`,
/// each part following the purl rules of the module docs (a trailing `/` is not part of it).
pub fn validate_purl_prefix(s: &str) -> Result<(), String> {
    let s = s.strip_suffix('/').unwrap_or(s);
    match s.strip_prefix("pkg:").map(|rest| rest.contains('/')) {
        Some(false) => validate_purl_type(&s["pkg:".len()..]),
        _ => validate_purl(s),
    }
}

/// True when `package` is `prefix` or lies under it: prefixes match whole purl segments, so
/// `pkg:npm/%40acme` covers `pkg:npm/%40acme/x` but not `pkg:npm/%40acme-evil/x`.
pub fn purl_has_prefix(package: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    package
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A purl (or purl prefix) as a person types it, in the canonical form entries use:
/// `pkg:npm/@scope/x`, `pkg:npm/%40scope/x`, `npm/@scope/x` and `pkg:NPM/%40scope/x@1.0.0?a=b`
/// all give `pkg:npm/%40scope/x`. The `pkg:` scheme is optional; the type is lowercased; each
/// segment is percent-decoded once and re-encoded by the purl rules; a version (`@` in the
/// last segment), qualifiers (`?`) and subpath (`#`) are dropped. The result is checked as a
/// purl prefix ([`validate_purl_prefix`]), so a bare type (`npm`) is accepted too; the caller
/// decides whether it needs a whole purl.
pub fn purl_from_user_input(input: &str) -> Result<String, String> {
    let s = input.trim();
    if s.len() > MAX_PACKAGE * 3 {
        return Err(format!("longer than {MAX_PACKAGE} bytes"));
    }
    let s = s.split(['?', '#']).next().unwrap_or("");
    let s = s.strip_prefix("pkg:").unwrap_or(s).trim_start_matches('/');
    let s = s.strip_suffix('/').unwrap_or(s);
    let (ty, path) = s.split_once('/').unwrap_or((s, ""));
    let ty = ty.to_ascii_lowercase();
    validate_purl_type(&ty)?;
    let mut out = format!("pkg:{ty}");
    let segments: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split('/').collect()
    };
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.into_iter().enumerate() {
        let raw = percent_decode(seg).ok_or("bad percent-encoding")?;
        // A version follows the last `@` of the name (`x@1.0`); a leading `@` is npm's scope.
        let name = match raw.rfind('@') {
            Some(at) if i == last && at > 0 => &raw[..at],
            _ => &raw[..],
        };
        out.push('/');
        for b in name.bytes() {
            if is_unreserved(b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    validate_purl_prefix(&out)?;
    Ok(out)
}

/// Decodes every `%XX` (two hex digits, either case) once; None for a broken escape or a
/// result that is not UTF-8. Other bytes pass through (`+` stays `+`).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let pair = bytes
                .get(i + 1..i + 3)
                .filter(|p| p.iter().all(u8::is_ascii_hexdigit))?;
            let mut b = [0u8; 1];
            hex::decode_to_slice(pair, &mut b).ok()?;
            out.push(b[0]);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Checks a purl without version, qualifiers or subpath; see the module docs for the rules.
fn validate_purl(s: &str) -> Result<(), String> {
    if s.len() > MAX_PACKAGE {
        return Err(format!("longer than {MAX_PACKAGE} bytes"));
    }
    let rest = s.strip_prefix("pkg:").ok_or("must start with `pkg:`")?;
    let (ty, path) = rest.split_once('/').ok_or("must be `pkg:<type>/<name>`")?;
    validate_purl_type(ty)?;
    path.split('/').try_for_each(validate_purl_segment)
}

fn validate_purl_type(ty: &str) -> Result<(), String> {
    let mut bytes = ty.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
    let rest_ok =
        bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".+-".contains(&b));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err("type must be a lowercase letter followed by `a-z 0-9 . + -`".into())
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn validate_purl_segment(seg: &str) -> Result<(), String> {
    if seg.is_empty() {
        return Err("empty path segment".into());
    }
    let bytes = seg.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            decoded.push(decode_percent(bytes.get(i + 1..i + 3))?);
            i += 3;
            continue;
        }
        if !is_unreserved(b) {
            return Err(purl_char_reason(b));
        }
        decoded.push(b);
        i += 1;
    }
    if seg == "." || seg == ".." {
        // A path that a registry, mirror or allow-list check resolving dots would alias.
        return Err(format!("{seg:?} is not a name"));
    }
    let text = std::str::from_utf8(&decoded).map_err(|_| "percent-encoding is not UTF-8")?;
    match text.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("encodes control character {c:?}")),
        None => Ok(()),
    }
}

fn decode_percent(pair: Option<&[u8]>) -> Result<u8, String> {
    let upper_hex = |b: &u8| b.is_ascii_digit() || (b'A'..=b'F').contains(b);
    let pair = pair
        .filter(|p| p.iter().all(upper_hex))
        .ok_or("`%` must be followed by two uppercase hex digits")?;
    let mut out = [0u8; 1];
    hex::decode_to_slice(pair, &mut out).map_err(|_| "bad percent-encoding")?;
    if is_unreserved(out[0]) {
        return Err(format!("{:?} must not be percent-encoded", out[0] as char));
    }
    Ok(out[0])
}

fn purl_char_reason(b: u8) -> String {
    match b {
        b'@' => "must not carry a version (`@`)".into(),
        b'?' => "must not carry qualifiers (`?`)".into(),
        b'#' => "must not carry a subpath (`#`)".into(),
        _ if b.is_ascii() => format!("character {:?} must be percent-encoded", b as char),
        _ => "non-ASCII bytes must be percent-encoded".into(),
    }
}

/// Checks `YYYY-MM-DDTHH:MM:SSZ` with a real calendar date and no leap second.
fn validate_time(s: &str) -> Result<(), String> {
    const SHAPE: &[u8; 20] = b"dddd-dd-ddTdd:dd:ddZ";
    let b = s.as_bytes();
    let shape_ok = b.len() == SHAPE.len()
        && b.iter().zip(SHAPE).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        });
    if !shape_ok {
        return Err("must be `YYYY-MM-DDTHH:MM:SSZ`".into());
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err("not a calendar date".into());
    }
    if num(11..13) > 23 || num(14..16) > 59 || num(17..19) > 59 {
        return Err("not a time of day (hour ≤ 23, minute and second ≤ 59)".into());
    }
    Ok(())
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// One entry in a `POST /v1/entries` body (PROTOCOL.md §6): hex digests, no `registry` (the server
/// supplies it; an explicit `registry` member is refused as unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct EntryFields {
    /// What happened.
    pub kind: Kind,
    /// The purl.
    pub package: String,
    /// The version (`-` for owner kinds).
    pub version: String,
    /// The file name (`-` for owner kinds).
    pub file: String,
    /// 64 lowercase hex.
    pub sha256: String,
    /// 128 lowercase hex.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub sha512: Option<String>,
    /// Artifact size in bytes.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub size: Option<u64>,
    /// Publisher identity.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub publisher: Option<String>,
    /// `sha256:<hex>` of the provenance attestation.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub provenance: Option<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub time: Option<String>,
}

impl EntryFields {
    /// Builds the validated entry, with the registry bound to the submitter's credential (PROTOCOL.md §2).
    pub fn into_entry(self, registry: &str) -> Result<Entry, EntryError> {
        Entry::new(EntryData {
            kind: self.kind,
            registry: registry.to_owned(),
            package: self.package,
            version: self.version,
            file: self.file,
            sha256: parse_hex("sha256", &self.sha256)?,
            sha512: self
                .sha512
                .as_deref()
                .map(|v| parse_hex("sha512", v))
                .transpose()?,
            size: self.size,
            publisher: self.publisher,
            provenance: self
                .provenance
                .as_deref()
                .map(parse_provenance)
                .transpose()?,
            time: self.time,
        })
    }
}

impl From<&Entry> for EntryFields {
    fn from(e: &Entry) -> Self {
        EntryFields {
            kind: e.kind,
            package: e.package.clone(),
            version: e.version.clone(),
            file: e.file.clone(),
            sha256: hex::encode(e.sha256),
            sha512: e.sha512.map(hex::encode),
            size: e.size,
            publisher: e.publisher.clone(),
            provenance: e.provenance.map(format_provenance),
            time: e.time.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purl_rules() {
        for ok in [
            "pkg:npm/left-pad",
            "pkg:npm/%40scope/left-pad",
            "pkg:deb/debian/libstdc%2B%2B6",
            "pkg:maven/org.acme/x...y",
            "pkg:npm/.x",
        ] {
            assert_eq!(validate_purl(ok), Ok(()), "{ok}");
        }
        for bad in [
            "npm/left-pad",
            "pkg:NPM/x",
            "pkg:npm",
            "pkg:npm/",
            "pkg:npm//x",
            "pkg:npm/x@1.0",
            "pkg:npm/x?a=b",
            "pkg:npm/x#sub",
            "pkg:npm/%2f",
            "pkg:npm/%6",
            "pkg:npm/%61",
            "pkg:npm/a b",
            "pkg:npm/%00",
            "pkg:1npm/x",
            "pkg:npm/.",
            "pkg:npm/..",
            "pkg:maven/org.acme/../x",
            "pkg:maven/./x",
        ] {
            assert!(validate_purl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purl_prefixes_match_whole_segments() {
        for (package, prefix, want) in [
            ("pkg:npm/%40acme/x", "pkg:npm/%40acme", true),
            ("pkg:npm/%40acme/x", "pkg:npm/%40acme/", true),
            ("pkg:npm/%40acme", "pkg:npm/%40acme", true),
            ("pkg:npm/%40acme-evil/x", "pkg:npm/%40acme", false),
            ("pkg:npm/%40acme-evil/x", "pkg:npm/%40acme/", false),
            ("pkg:npm/react", "pkg:npm", true),
            ("pkg:npmx/react", "pkg:npm", false),
            ("pkg:cargo/serde", "pkg:npm", false),
        ] {
            assert_eq!(purl_has_prefix(package, prefix), want, "{package} {prefix}");
        }
        for ok in [
            "pkg:npm",
            "pkg:npm/",
            "pkg:npm/%40acme",
            "pkg:maven/org.acme/",
        ] {
            assert_eq!(validate_purl_prefix(ok), Ok(()), "{ok}");
        }
        for bad in [
            "npm/",
            "pkg:",
            "pkg:NPM",
            "pkg:npm//x",
            "pkg:npm/x@1",
            "pkg:npm/..",
            "pkg:npm/a/./b",
            "*",
        ] {
            assert!(validate_purl_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_rules() {
        assert!(validate_time("2024-02-29T23:59:59Z").is_ok());
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T00:00:00z",
        ] {
            assert!(validate_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn purls_as_people_type_them() {
        for typed in [
            "pkg:npm/@scope/x",
            "pkg:npm/%40scope/x",
            " npm/@scope/x ",
            "pkg:NPM/%40scope/x@1.0.0?a=b#c",
            "pkg:npm/%2540scope/x".replace("%25", "%").as_str(),
        ] {
            assert_eq!(
                purl_from_user_input(typed).as_deref(),
                Ok("pkg:npm/%40scope/x"),
                "{typed}"
            );
        }
        assert_eq!(
            purl_from_user_input("npm/left-pad@1.3.0").as_deref(),
            Ok("pkg:npm/left-pad")
        );
        assert_eq!(purl_from_user_input("pkg:npm").as_deref(), Ok("pkg:npm"));
        assert_eq!(
            purl_from_user_input("pypi/Django Rest").as_deref(),
            Ok("pkg:pypi/Django%20Rest")
        );
        for bad in [
            "", "<script>", "npm/%zz", "npm//x", "npm/..", "9pm/x", "npm/%00",
        ] {
            assert!(purl_from_user_input(bad).is_err(), "{bad}");
        }
    }
}
