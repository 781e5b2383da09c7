//! Watch rules: purl patterns with an optional list of expected publishers.
//!
//! Patterns and packages are compared in a normal form: percent-escapes are decoded (so the
//! purl spelling `pkg:npm/%40acme/x` and the familiar `pkg:npm/@acme/x` are the same), except
//! `%2F`, which stays escaped so it never turns into a segment separator; the `pkg:<type>/` part
//! is lowercased. `*` matches any run of characters, `/` included: `pkg:npm/@acme/*` covers
//! every package of the `@acme` scope, `pkg:npm/*` all of npm.
//!
//! A rule without publishers alerts (`watch`) on every entry of a matching package. A rule with
//! publishers alerts `unexpected-publisher` on a `publish` whose publisher is missing or not in
//! the list, stays silent on the others, and still reports every other kind (`watch`).

use serde::Deserialize;

use btlog_core::entry::{Entry, Kind};

use super::alert::AlertKind;

/// One `[[watch]]` rule.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WatchRule {
    /// The purl pattern.
    pub pattern: String,
    /// Publishers allowed to publish matching packages; empty: report every entry.
    #[serde(default)]
    pub publishers: Vec<String>,
}

/// The compiled rules.
#[derive(Clone, Debug, Default)]
pub struct Watcher {
    rules: Vec<(String, WatchRule)>,
}

impl Watcher {
    /// Compiles `rules`.
    pub fn new(rules: Vec<WatchRule>) -> Watcher {
        Watcher {
            rules: rules
                .into_iter()
                .map(|r| (normalize(&r.pattern), r))
                .collect(),
        }
    }

    /// The alert an entry raises, if any: its kind and details.
    pub fn check(&self, entry: &Entry) -> Option<(AlertKind, String)> {
        if self.rules.is_empty() {
            return None;
        }
        let package = normalize(&entry.package);
        let (_, rule) = self.rules.iter().find(|(p, _)| glob(p, &package))?;
        let what = format!(
            "{} {} {} {} (publisher {}) matches watch pattern {:?}",
            entry.kind,
            entry.package,
            entry.version,
            entry.file,
            entry.publisher.as_deref().unwrap_or("none"),
            rule.pattern
        );
        if rule.publishers.is_empty() || entry.kind != Kind::Publish {
            return Some((AlertKind::Watch, what));
        }
        let expected = entry
            .publisher
            .as_ref()
            .is_some_and(|p| rule.publishers.contains(p));
        (!expected).then_some((AlertKind::UnexpectedPublisher, what))
    }
}

/// The normal form of a purl or pattern (see the module doc).
pub fn normalize(purl: &str) -> String {
    let (head, rest) = match purl.split_once('/') {
        Some((head, rest)) => (head.to_ascii_lowercase(), rest),
        None => return purl.to_ascii_lowercase(),
    };
    let mut bytes = Vec::with_capacity(rest.len());
    let raw = rest.as_bytes();
    let mut i = 0;
    while i < raw.len() {
        let escape = raw
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (raw[i], escape) {
            (b'%', Some(b'/')) => {
                bytes.extend_from_slice(b"%2F");
                i += 3;
            }
            (b'%', Some(b)) => {
                bytes.push(b);
                i += 3;
            }
            (b, _) => {
                bytes.push(b);
                i += 1;
            }
        }
    }
    format!("{head}/{}", String::from_utf8_lossy(&bytes))
}

/// Glob match where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_both_spellings() {
        let m = |p: &str, t: &str| glob(&normalize(p), &normalize(t));
        assert!(m("pkg:npm/@acme/*", "pkg:npm/%40acme/widget"));
        assert!(m("pkg:npm/%40acme/*", "pkg:npm/%40acme/widget"));
        assert!(m("pkg:NPM/left-pad", "pkg:npm/left-pad"));
        assert!(m("pkg:npm/*", "pkg:npm/%40x/y"));
        assert!(m("pkg:*/left-*", "pkg:npm/left-pad"));
        assert!(!m("pkg:npm/@acme/*", "pkg:npm/%40acmex/widget"));
        assert!(!m("pkg:npm/left-pad", "pkg:npm/left-pad2"));
        assert!(!m("pkg:npm/a*a", "pkg:npm/a"));
        assert!(!m("pkg:npm/a/*", "pkg:npm/a%2Fb"));
    }
}
