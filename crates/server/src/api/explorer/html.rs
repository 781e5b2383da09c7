//! HTML and XML text: the one escaping function every interpolated value goes through, the
//! page layout, and time formatting.

use std::fmt::Write as _;

/// Escapes `s` for HTML text and double-quoted attribute values, and for XML (the Atom
/// feed): `& < > " '` become character references. Every value a page or feed interpolates
/// passes through here, so no input can become markup.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes `s` for a query value (everything but unreserved characters), so a link
/// built from a value means that value; the result still goes through [`esc`].
pub fn query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page: `title` is text (escaped here), `body` is markup built by the caller from
/// escaped values, `head` extra markup for `<head>`.
pub fn page(origin: &str, title: &str, head: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · btlog</title>
<link rel="stylesheet" href="/explorer.css">
{head}<script src="/explorer.js" defer></script>
</head>
<body>
<header>
<a class="brand" href="/">btlog</a>
<span class="origin">{origin}</span>
<form class="search" action="/search" method="get" role="search">
<input type="search" name="q" placeholder="pkg:npm/left-pad, npm/@scope/name or a sha256" aria-label="purl or sha256" maxlength="1024">
<button type="submit">Search</button>
</form>
</header>
<main>
{body}
</main>
<footer>A binary transparency log. Every page here reads the same data as the <code>/v1</code> API; see docs/PROTOCOL.md.</footer>
</body>
</html>
"#,
        title = esc(title),
        origin = esc(origin),
    )
}

/// `secs` (Unix time) as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// How long ago `then` was, from `now` (Unix seconds), for a person.
pub fn age(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=119 => format!("{d} s ago"),
        120..=7_199 => format!("{} min ago", d / 60),
        7_200..=172_799 => format!("{} h ago", d / 3_600),
        _ => format!("{} days ago", d / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_markup_character() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(query_value("pkg:npm/%40s x"), "pkg%3Anpm%2F%2540s%20x");
    }

    #[test]
    fn formats_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(age(100, 160), "60 s ago");
        assert_eq!(age(0, 7_200), "2 h ago");
    }
}
