//! The pages: the log, search, a package's history and an entry with its inclusion proof.

use super::html::{age, esc, page, query_value, rfc3339};
use super::{base_url, PageError, Params, DEFAULT_PAGE, MAX_PAGE};
use crate::log::history::{Event, Window, MAX_REPLAY};
use crate::log::{sequencer::unix_now, Leaf, Log};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use btlog_core::checkpoint::Checkpoint;
use btlog_core::entry::{purl_from_user_input, Entry};
use std::fmt::Write as _;

type PageResult = Result<Response, PageError>;

/// Entries shown as "latest" on the log page.
const LATEST: u64 = 10;
/// Entries listed for one digest at most.
const DIGEST_MATCHES: usize = 50;

fn html(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=2"),
        ],
        body,
    )
        .into_response()
}

fn origin(log: &Log) -> String {
    log.verifier().name().to_owned()
}

/// `/`: the log (origin, size, checkpoint, its age and cosignatures) and its latest entries.
pub async fn home(State(log): State<Log>, uri: Uri) -> PageResult {
    Params::parse(&uri, &[])?;
    let signed = log.checkpoint();
    let now = unix_now();
    let (cp, note) = Checkpoint::parse(signed.note.as_bytes())
        .map_err(|e| crate::log::error::LogError::internal(&e))?;
    let mut body = String::new();
    let _ = write!(
        body,
        r#"<h1>The log</h1>
<dl class="facts">
<dt>Origin</dt><dd><code>{origin}</code></dd>
<dt>Verifier key</dt><dd><code class="hash">{vkey}</code></dd>
<dt>Tree size</dt><dd id="tree-size">{size}</dd>
<dt>Root</dt><dd><code class="hash">{root}</code></dd>
<dt>Checkpoint signed</dt><dd>{when}</dd>
<dt>Cosignatures</dt><dd>{cosigs}</dd>
</dl>
<details><summary>Latest checkpoint</summary><pre class="note">{note_text}</pre></details>
"#,
        origin = esc(&cp.origin),
        vkey = esc(&log.verifier().vkey()),
        size = cp.size,
        root = esc(&hex::encode(cp.root)),
        when = match signed.signed_at {
            Some(t) => format!(
                "{} <span class=\"muted\">({})</span>",
                esc(&age(t, now)),
                esc(&rfc3339(t))
            ),
            None => "before this server started".to_owned(),
        },
        cosigs = cosignatures(&note, &cp.origin, now),
        note_text = esc(&signed.note),
    );
    body.push_str(SEARCH_HELP);
    if cp.size > 0 {
        let start = cp.size.saturating_sub(LATEST);
        let latest: Vec<Event> = log
            .entries(start, cp.size)
            .await?
            .into_iter()
            .rev()
            .filter_map(|(index, text)| {
                let entry = Entry::parse(text.as_bytes()).ok()?;
                Some(Event::unmarked(index, entry))
            })
            .collect();
        body.push_str("<h2>Latest entries</h2>\n");
        body.push_str(&events_table(&latest, true));
    }
    Ok(html(page(&origin(&log), "The log", "", &body)))
}

const SEARCH_HELP: &str = r#"<section class="help">
<h2>Search</h2>
<p>Type a package URL as you would write it — <code>pkg:npm/left-pad</code>, <code>pkg:npm/@scope/name</code>,
<code>pkg:npm/%40scope/name</code> or just <code>npm/@scope/name</code> (a version after <code>@</code> is ignored) —
or the SHA-256 of an artifact (or of a leaf), or an entry's index.</p>
</section>
"#;

fn cosignatures(note: &btlog_core::note::Note, origin: &str, now: u64) -> String {
    let cosigs: Vec<String> = note
        .signatures()
        .iter()
        .filter(|s| s.name != origin)
        .map(|s| match s.cosignature_timestamp() {
            Some(t) => format!(
                "<li><code>{}</code> {} <span class=\"muted\">({})</span></li>",
                esc(&s.name),
                esc(&age(t, now)),
                esc(&rfc3339(t))
            ),
            None => format!("<li><code>{}</code></li>", esc(&s.name)),
        })
        .collect();
    if cosigs.is_empty() {
        "none yet (no witness has cosigned the served checkpoint)".to_owned()
    } else {
        format!("<ul class=\"cosigs\">{}</ul>", cosigs.concat())
    }
}

/// `/search?q=`: a purl (as typed) goes to its package page; 64 hex digits are looked up as
/// an artifact sha256, then as a leaf hash; a number is an entry index.
pub async fn search(State(log): State<Log>, uri: Uri) -> PageResult {
    let params = Params::parse(&uri, &["q"])?;
    let q = params.get("q").unwrap_or("").trim();
    if q.is_empty() {
        return Err(PageError::bad(
            "type a package URL (pkg:npm/left-pad), a sha256 or an entry index",
        ));
    }
    if !q.is_empty() && q.len() <= 20 && q.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Redirect::to(&format!("/entry?index={q}")).into_response());
    }
    if q.len() == 64 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
        return digest_search(&log, &q.to_ascii_lowercase()).await;
    }
    let purl = purl_from_user_input(q)
        .map_err(|reason| PageError::bad(format!("not a package URL: {reason}")))?;
    if !purl["pkg:".len()..].contains('/') {
        return Err(PageError::bad(
            "name a package, e.g. npm/left-pad (a bare type names no package)",
        ));
    }
    Ok(Redirect::to(&format!("/package?purl={}", query_value(&purl))).into_response())
}

async fn digest_search(log: &Log, hex_digest: &str) -> PageResult {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(hex_digest, &mut digest)
        .map_err(|_| PageError::bad("a sha256 is 64 hex digits"))?;
    let (found, digests_from) = log.find_digest(digest, DIGEST_MATCHES).await?;
    if let [(index, _)] = found[..] {
        return Ok(Redirect::to(&format!("/entry?index={index}")).into_response());
    }
    if found.is_empty() {
        if let Some(index) = log.find_leaf(digest).await? {
            return Ok(Redirect::to(&format!("/entry?index={index}")).into_response());
        }
        let mut message =
            "no entry has that sha256 (as an artifact digest or a leaf hash)".to_owned();
        if digests_from > 0 {
            let _ = write!(
                message,
                "; artifact digests are indexed from entry {digests_from} on"
            );
        }
        return Err(PageError::new(StatusCode::NOT_FOUND, message));
    }
    let events: Vec<Event> = found
        .into_iter()
        .map(|(index, entry)| Event::unmarked(index, entry))
        .collect();
    let body = format!(
        "<h1>Artifact <code class=\"hash\">{}</code></h1>\n<p>{} entries name this digest.</p>\n{}",
        esc(hex_digest),
        events.len(),
        events_table(&events, true)
    );
    Ok(html(page(&origin(log), "Artifact", "", &body)))
}

/// `/package?purl=&from=&limit=`: a package's events in log order, a page at a time, with
/// what deserves a second look marked.
pub async fn package(State(log): State<Log>, uri: Uri) -> PageResult {
    let params = Params::parse(&uri, &["purl", "from", "limit"])?;
    let purl = params
        .get("purl")
        .ok_or_else(|| PageError::bad("give the package as purl=pkg:<type>/<name>"))?;
    let purl = purl_from_user_input(purl)
        .map_err(|reason| PageError::bad(format!("not a package URL: {reason}")))?;
    if !purl["pkg:".len()..].contains('/') {
        return Err(PageError::bad("name a package, e.g. pkg:npm/left-pad"));
    }
    let from = params.number("from")?.unwrap_or(0);
    let limit = match params.number("limit")? {
        None => DEFAULT_PAGE,
        Some(n) if (1..=MAX_PAGE as u64).contains(&n) => n as usize,
        Some(_) => {
            return Err(PageError::bad(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )))
        }
    };
    let history = log
        .package_history(purl.clone(), Window::From { from, limit })
        .await?;
    if history.events.is_empty() && from == 0 {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            "the log has no events for this package",
        ));
    }
    let feed = format!("/feed?package={}", query_value(&purl));
    let head = format!(
        "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"Events of this package\" href=\"{}\">\n",
        esc(&feed)
    );
    let marked = history
        .events
        .iter()
        .filter(|e| !e.marks.is_empty())
        .count();
    let mut body = format!(
        r#"<h1 class="purl">{purl}</h1>
<p class="actions"><a class="feed" href="{feed}">Atom feed of this package</a> — subscribe to learn of every new event.</p>
<p>Events from index {from} on, in log order: {n} shown, {marked} marked.</p>
"#,
        purl = esc(&purl),
        feed = esc(&feed),
        n = history.events.len(),
    );
    if !history.marked {
        let _ = writeln!(
            body,
            "<p class=\"warn\">This package has more than {MAX_REPLAY} events; marks are not computed for this page.</p>"
        );
    }
    body.push_str(&events_table(&history.events, false));
    body.push_str("<nav class=\"pages\">");
    let link = |from: u64| {
        esc(&format!(
            "/package?purl={}&from={from}&limit={limit}",
            query_value(&purl)
        ))
    };
    if from > 0 {
        let _ = write!(body, "<a href=\"{}\">« First page</a> ", link(0));
    }
    if let Some(next) = history.next {
        let _ = write!(
            body,
            "<a id=\"next-page\" rel=\"next\" href=\"{}\">Next page »</a>",
            link(next)
        );
    }
    body.push_str("</nav>\n");
    Ok(html(page(&origin(&log), &purl, &head, &body)))
}

/// A table of events; `with_package` adds the package to each row.
pub fn events_table(events: &[Event], with_package: bool) -> String {
    let mut out = String::from(
        "<div class=\"scroll\"><table class=\"events\">\n<thead><tr><th>#</th><th>Event</th>",
    );
    if with_package {
        out.push_str("<th>Package</th>");
    }
    out.push_str("<th>Version</th><th>File</th><th>Time</th><th>Publisher</th><th>sha256</th><th>Provenance</th></tr></thead>\n<tbody>\n");
    for ev in events {
        let e = &ev.entry;
        let class = if ev.marks.is_empty() {
            ""
        } else {
            " class=\"marked\""
        };
        let _ = write!(
            out,
            "<tr{class}><td><a href=\"/entry?index={i}\">{i}</a></td><td><span class=\"kind kind-{kind}\">{kind}</span>",
            i = ev.index,
            kind = esc(e.kind.as_str()),
        );
        for m in &ev.marks {
            let _ = write!(
                out,
                " <span class=\"mark\">{}</span><div class=\"why\">{}</div>",
                esc(m.label()),
                esc(&m.describe(e))
            );
        }
        out.push_str("</td>");
        if with_package {
            let _ = write!(
                out,
                "<td><a href=\"{}\">{}</a></td>",
                esc(&format!("/package?purl={}", query_value(&e.package))),
                esc(&e.package)
            );
        }
        let digest = hex::encode(e.sha256);
        let sha = if e.kind.is_owner() {
            format!(
                "<span class=\"muted\" title=\"SHA-256 of the account id\">account {}…</span>",
                esc(&digest[..12])
            )
        } else {
            format!(
                "<a class=\"hash\" title=\"{d}\" href=\"/search?q={d}\">{short}…</a>",
                d = esc(&digest),
                short = esc(&digest[..12])
            )
        };
        let _ = writeln!(
            out,
            "<td>{}</td><td class=\"file\">{}</td><td class=\"time\">{}</td><td class=\"publisher\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.version),
            esc(&e.file),
            esc(e.time.as_deref().unwrap_or("—")),
            esc(e.publisher.as_deref().unwrap_or("—")),
            sha,
            match e.provenance {
                Some(p) => {
                    let p = hex::encode(p);
                    format!("<code class=\"hash\" title=\"sha256:{}\">{}…</code>", esc(&p), esc(&p[..12]))
                }
                None => "—".to_owned(),
            },
        );
    }
    out.push_str("</tbody>\n</table></div>\n");
    out
}

/// `/entry?index=`: the entry, its leaf hash and an inclusion proof against the served
/// checkpoint; `explorer.js` recomputes the root in the page; the `btlog verify` command
/// checks it outside the browser.
pub async fn entry(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> PageResult {
    let params = Params::parse(&uri, &["index"])?;
    let index = params
        .number("index")?
        .ok_or_else(|| PageError::bad("give the entry as index=<number>"))?;
    let signed = log.checkpoint();
    let (cp, _) = Checkpoint::parse(signed.note.as_bytes())
        .map_err(|e| crate::log::error::LogError::internal(&e))?;
    if index >= cp.size {
        return Err(PageError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no entry {index}: the latest checkpoint has {} entries",
                cp.size
            ),
        ));
    }
    let text = log.entry(index).await?;
    let entry =
        Entry::parse(text.as_bytes()).map_err(|e| crate::log::error::LogError::internal(&e))?;
    let proof = log
        .inclusion_proof(Leaf::Index(index), Some(cp.size))
        .await?;
    let base = base_url(&headers);
    let mut fields = String::new();
    let mut row = |k: &str, v: &str| {
        let _ = write!(fields, "<dt>{}</dt><dd>{}</dd>", esc(k), v);
    };
    row(
        "Event",
        &format!(
            "<span class=\"kind kind-{k}\">{k}</span>",
            k = esc(entry.kind.as_str())
        ),
    );
    row(
        "Package",
        &format!(
            "<a href=\"{}\">{}</a>",
            esc(&format!("/package?purl={}", query_value(&entry.package))),
            esc(&entry.package)
        ),
    );
    row("Registry", &esc(&entry.registry));
    if !entry.kind.is_owner() {
        row("Version", &esc(&entry.version));
        row("File", &esc(&entry.file));
    }
    let digest_label = if entry.kind.is_owner() {
        "Account (sha256)"
    } else {
        "sha256"
    };
    row(
        digest_label,
        &format!(
            "<code class=\"hash\">{}</code>",
            esc(&hex::encode(entry.sha256))
        ),
    );
    if let Some(s) = entry.size {
        row("Size", &format!("{s} bytes"));
    }
    if let Some(p) = &entry.publisher {
        row("Publisher", &esc(p));
    }
    if let Some(p) = entry.provenance {
        row(
            "Provenance",
            &format!(
                "<code class=\"hash\">sha256:{}</code>",
                esc(&hex::encode(p))
            ),
        );
    }
    if let Some(t) = &entry.time {
        row("Time", &esc(t));
    }
    let path: String = proof
        .proof
        .iter()
        .map(|h| {
            format!(
                "<li><code class=\"hash\">{}</code></li>",
                esc(&hex::encode(h))
            )
        })
        .collect();
    let command = verify_command(&base, &log, &entry, index);
    let body = format!(
        r#"<h1>Entry {index}</h1>
<dl class="facts">{fields}</dl>
<h2>Entry text</h2>
<pre id="entry-text" class="entry">{text}</pre>
<h2>Inclusion proof</h2>
<dl class="facts">
<dt>Leaf hash</dt><dd><code class="hash" id="leaf-hash">{leaf}</code></dd>
<dt>Tree size</dt><dd>{size}</dd>
<dt>Root</dt><dd><code class="hash">{root}</code></dd>
<dt>Audit path</dt><dd><ol class="path">{path}</ol></dd>
</dl>
<section id="proof" class="proof" data-index="{index}">
<p id="proof-status" class="status pending">Not checked in this page: the check needs JavaScript.</p>
<noscript><p class="noscript">Checking the proof in the page needs JavaScript, which is off. Check it yourself with the command below.</p></noscript>
<p class="muted">The page fetches the latest checkpoint and this entry's inclusion proof from the log's API, recomputes the Merkle root from the entry text with SHA-256 (WebCrypto) and compares it with the checkpoint's root. It does not check the checkpoint's signature; <code>btlog verify</code> does.</p>
</section>
<h2>Check it yourself</h2>
<pre class="command">{command}</pre>
"#,
        text = esc(&text),
        leaf = esc(&hex::encode(proof.leaf_hash)),
        size = proof.size,
        root = esc(&hex::encode(cp.root)),
    );
    Ok(html(page(
        &origin(&log),
        &format!("Entry {index}"),
        "",
        &body,
    )))
}

/// The command a person runs to check an entry outside the browser (README, "Installer
/// journey"): `btlog verify` for an artifact, the proof by curl for an owner event.
fn verify_command(base: &str, log: &Log, entry: &Entry, index: u64) -> String {
    let q = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let text = if entry.kind.is_owner() {
        format!(
            "curl -s {}\n# then check the audit path against a checkpoint verified with {}",
            q(&format!("{base}/v1/proof/inclusion?index={index}")),
            q(&log.verifier().vkey())
        )
    } else {
        format!(
            "btlog verify --log {} \\\n  --vkey {} \\\n  --package {} --version {} --file {} \\\n  --artifact {}",
            q(base),
            q(&log.verifier().vkey()),
            q(&entry.package),
            q(&entry.version),
            q(&entry.file),
            q(&format!("./{}", entry.file))
        )
    };
    esc(&text)
}
