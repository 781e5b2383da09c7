//! HTTP front end (axum): the C2SP tlog-tiles read API (PROTOCOL.md §4), the `/v1` JSON API (PROTOCOL.md §6),
//! `/healthz` and `/metrics`, and the web explorer ([`super::explorer`]). Handlers only translate; the rules are in [`crate::log`].

use super::conn;
use crate::log::error::{ErrorKind, LogError};
use crate::log::{self, Leaf, Log, SubmitOutcome};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use btlog_core::entry::{percent_decode, Identity};
use btlog_core::merkle::tiles::{self, Tile, TileKind};
use btlog_core::merkle::Hash;
use btlog_core::wire::{
    ConsistencyReply, EntriesReply, ErrorReply, InclusionReply, IndexedEntry, LookupReply,
    SubmitReply, SubmitRequest, SubmitResult,
};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::io::Write as _;
use tokio::net::TcpListener;
use tokio::sync::watch;

const SHORT: &str = tiles::CACHE_SHORT;
const TEXT: &str = tiles::CHECKPOINT_CONTENT_TYPE;
const BINARY: &str = tiles::TILE_CONTENT_TYPE;
/// Largest HTTP/1 request head (request line and headers) read into memory.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Serves HTTP on `listener` until `stopped` turns true, then drains requests in flight.
///
/// One hyper connection per client (HTTP/1 or HTTP/2), with an HTTP/1 header read timeout
/// (`limits.header_read_timeout_secs`) so slow-loris clients cannot hold connections open, and
/// a bound on the request head; `axum::serve` sets no such timeout. Whatever the protocol, a
/// connection with nothing in flight for that same timeout is closed ([`conn::serve`]): one
/// that sends nothing (not even enough to tell HTTP/1 from HTTP/2), an HTTP/2 session without
/// streams, or one whose responses the client never reads. Request bodies and handlers are
/// bounded by the request timeout of [`router`], and HTTP/2 streams per connection by hyper's
/// default of 200.
pub async fn serve(log: Log, listener: TcpListener, stopped: watch::Receiver<bool>) {
    let idle = log.limits().header_read_timeout();
    let max_connections = log.limits().max_connections;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        // Bounds the request line and headers (431 beyond); bodies are streamed past it.
        .max_buf_size(MAX_HEAD_BYTES);
    conn::serve(
        "http",
        listener,
        builder,
        router(log),
        idle,
        max_connections,
        stopped,
    )
    .await;
}

/// The routes, with the body limit, request timeout and request counting applied.
pub fn router(log: Log) -> Router {
    let max_body = log.limits().max_body_bytes;
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .route("/tile/{*path}", get(tile))
        .route("/v1/entries", get(entries).post(submit))
        .route("/v1/proof/inclusion", get(inclusion))
        .route("/v1/proof/consistency", get(consistency))
        .route("/v1/lookup", get(lookup))
        .route("/v1/packages/{*purl}", get(list_package))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .merge(super::explorer::routes())
        .fallback(|| async { text_error(LogError::not_found("not found")) })
        .method_not_allowed_fallback(|| async {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::CONTENT_TYPE, TEXT)],
                "method not allowed\n",
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(log.clone(), guard))
        .with_state(log)
}

/// Bounds every request by the configured timeout and counts responses by status.
async fn guard(State(log): State<Log>, req: Request, next: Next) -> Response {
    let timeout = log.limits().request_timeout();
    let response = match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => text_error(LogError::timed_out()),
    };
    log.metrics()
        .record_request("http", response.status().as_u16());
    response
}

/// A `/v1` error: `{"error":"..."}` with the kind's status.
struct JsonError(LogError);

impl From<LogError> for JsonError {
    fn from(e: LogError) -> Self {
        JsonError(e)
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let body = ErrorReply {
            error: self.0.message,
        };
        (status(self.0.kind), Json(body)).into_response()
    }
}

fn status(kind: ErrorKind) -> StatusCode {
    StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A plain-text error for the tlog-tiles endpoints.
fn text_error(e: LogError) -> Response {
    (
        status(e.kind),
        [(header::CONTENT_TYPE, TEXT)],
        format!("{}\n", e.message),
    )
        .into_response()
}

type JsonResult<T> = Result<Json<T>, JsonError>;

fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, LogError> {
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| LogError::bad_input(e.body_text()))
}

async fn checkpoint(State(log): State<Log>) -> Response {
    (
        [(header::CONTENT_TYPE, TEXT), (header::CACHE_CONTROL, SHORT)],
        log.checkpoint().note,
    )
        .into_response()
}

async fn tile(State(log): State<Log>, uri: Uri, headers: HeaderMap) -> Response {
    let Ok(tile) = Tile::parse_path(uri.path()) else {
        return text_error(LogError::not_found("no such tile"));
    };
    let data = match log.tile(tile.kind, tile.index, u32::from(tile.width)).await {
        Ok(d) => d,
        Err(e) => return text_error(e),
    };
    let cache = tile.cache_control();
    let mut response = (
        [
            (header::CONTENT_TYPE, BINARY),
            (header::CACHE_CONTROL, cache),
        ],
        data,
    )
        .into_response();
    if tile.kind == TileKind::Entries {
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if accepts_gzip(&headers) {
            response = gzip(response).await;
        }
    }
    response
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0));
            (name.eq_ignore_ascii_case("gzip") || name == "*") && q > 0.0
        })
}

async fn gzip(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return text_error(LogError::internal(&"reading tile body"));
    };
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let Ok(compressed) = enc.write_all(&bytes).and_then(|()| enc.finish()) else {
        return text_error(LogError::internal(&"gzip failed"));
    };
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(compressed))
}

fn submit_reply(o: SubmitOutcome) -> SubmitReply {
    SubmitReply {
        checkpoint: o.checkpoint.note,
        results: o
            .results
            .into_iter()
            .map(|r| SubmitResult {
                index: r.index,
                leaf_hash: b64(&r.leaf_hash),
                status: r.status,
                existing_index: r.existing_index,
            })
            .collect(),
    }
}

/// `POST /v1/entries`: the token is checked before the body is read (PROTOCOL.md §6.5), and
/// the body is read only up to `max_body_bytes`.
async fn submit(State(log): State<Log>, headers: HeaderMap, body: Body) -> JsonResult<SubmitReply> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let admission = log.admit(authorization).await?;
    let max = log.limits().max_body_bytes;
    let entries = match axum::body::to_bytes(body, max).await {
        Ok(bytes) => serde_json::from_slice::<SubmitRequest>(&bytes)
            .map(|b| b.entries.into_owned())
            .map_err(|e| LogError::bad_input(format!("invalid JSON body: {e}"))),
        Err(e) if is_length_limit(&e) => Err(LogError::new(
            ErrorKind::TooLarge,
            format!("request body larger than {max} bytes"),
        )),
        Err(e) => Err(LogError::bad_input(format!(
            "reading the request body: {e}"
        ))),
    };
    Ok(Json(submit_reply(log.submit(admission, entries).await?)))
}

/// Whether reading a body failed on its length limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    start: u64,
    end: u64,
}

fn entries_reply(list: Vec<(u64, String)>) -> Json<EntriesReply> {
    Json(EntriesReply {
        entries: list
            .into_iter()
            .map(|(index, entry)| IndexedEntry { index, entry })
            .collect(),
    })
}

async fn entries(State(log): State<Log>, uri: Uri) -> JsonResult<EntriesReply> {
    let q: RangeQuery = query(&uri)?;
    Ok(entries_reply(log.entries(q.start, q.end).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InclusionQuery {
    index: Option<u64>,
    leaf_hash: Option<String>,
    size: Option<u64>,
}

/// A hash in base64, into a string allocated with `malloc`. `Engine::encode` zeroes its
/// buffer with `calloc`, which glibc serves outside its per-thread cache: after an ingest had
/// filled its bins, the 25 hashes of a proof at 30M cost more in `_int_malloc` than the proof
/// itself (BENCHMARKS.md, "Ninth pass").
fn b64(hash: &Hash) -> String {
    let mut s = String::with_capacity(44);
    B64.encode_string(hash, &mut s);
    s
}

fn b64_all(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(b64).collect()
}

async fn inclusion(State(log): State<Log>, uri: Uri) -> JsonResult<InclusionReply> {
    let q: InclusionQuery = query(&uri)?;
    let leaf = match (q.index, q.leaf_hash) {
        (Some(i), None) => Leaf::Index(i),
        (None, Some(h)) => Leaf::Hash(log::parse_hex_hash(&h)?),
        _ => return Err(LogError::bad_input("give exactly one of index and leaf_hash").into()),
    };
    let p = log.inclusion_proof(leaf, q.size).await?;
    Ok(Json(InclusionReply {
        index: p.index,
        size: p.size,
        leaf_hash: b64(&p.leaf_hash),
        proof: b64_all(&p.proof),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsistencyQuery {
    from: u64,
    to: u64,
}

async fn consistency(State(log): State<Log>, uri: Uri) -> JsonResult<ConsistencyReply> {
    let q: ConsistencyQuery = query(&uri)?;
    let proof = log.consistency_proof(q.from, q.to).await?;
    Ok(Json(ConsistencyReply {
        from: q.from,
        to: q.to,
        proof: b64_all(&proof),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupQuery {
    package: String,
    version: String,
    file: String,
}

async fn lookup(State(log): State<Log>, uri: Uri) -> JsonResult<LookupReply> {
    let q: LookupQuery = query(&uri)?;
    let found = log
        .lookup(Identity {
            package: q.package,
            version: q.version,
            file: q.file,
        })
        .await?;
    Ok(Json(LookupReply {
        index: found.index,
        entry: found.entry,
        proof: found.proof,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageQuery {
    #[serde(default)]
    from: u64,
}

/// `/v1/packages/<purl>`: the purl is taken from the raw path, as written (`pkg:npm/%40s/x`);
/// a fully percent-encoded purl (`pkg%3Anpm%2F...`) is decoded once.
async fn list_package(State(log): State<Log>, uri: Uri) -> JsonResult<EntriesReply> {
    let q: PackageQuery = query(&uri)?;
    let raw = uri.path().strip_prefix("/v1/packages/").unwrap_or("");
    let purl = if raw.starts_with("pkg:") {
        raw.to_owned()
    } else {
        percent_decode(raw).ok_or_else(|| LogError::bad_input("bad percent-encoding in purl"))?
    };
    Ok(entries_reply(log.list_package(purl, q.from).await?))
}

/// `ok`, or 503 with the reason once the log cannot append.
async fn health(State(log): State<Log>) -> Response {
    match log.health() {
        Ok(detail) => format!("ok\n{detail}").into_response(),
        Err(e) => text_error(e),
    }
}

async fn metrics(State(log): State<Log>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        log.render_metrics(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.5"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("pkg%3Anpm%2F%2540s%2Fx").as_deref(),
            Some("pkg:npm/%40s/x")
        );
        assert_eq!(percent_decode("%4"), None);
    }
}
