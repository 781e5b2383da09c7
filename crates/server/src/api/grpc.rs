//! gRPC front end (tonic, `btlog.v1.Log`): the same operations as the HTTP API (PROTOCOL.md §6),
//! translated to and from [`crate::log`]; errors map through [`crate::log::error::ErrorKind::grpc_code`].

use super::conn;
use super::pb::{self, log_server};
use crate::log::error::{ErrorKind, LogError};
use crate::log::{self, Admission, Leaf, Log, SignedCheckpoint};
use axum::body::Body;
use axum::extract::State;
use axum::http::{self, HeaderValue};
use axum::middleware::{self, Next};
use btlog_core::entry::{EntryFields, Identity};
use btlog_core::merkle::tiles::{TileKind, MAX_LEVEL};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

/// Serves gRPC on `listener` until `stopped` turns true, then drains requests in flight.
///
/// HTTP/2 only, on the connection loop of the HTTP side ([`conn::serve`]) rather than tonic's
/// `Server`, which closes neither a connection that never finishes the HTTP/2 preface nor one
/// without streams. With `idle` the header read timeout (`limits.header_read_timeout_secs`):
/// - a connection with nothing in flight for `idle` is closed: one that sends nothing or never
///   finishes the preface, a session without streams, one whose responses are never read;
/// - a stream waiting on the server (`WatchCheckpoints` between checkpoints) keeps its
///   connection open as long as it lasts; instead the server pings after `idle` without reads
///   and closes the connection if the ping is not answered within `idle`, so a vanished or
///   stuck watcher is gone within 2 × `idle`. HTTP/2 pings also cover what TCP keepalive would;
/// - a call is bounded by the request timeout until its response head ([`guard`]): a unary
///   call whole, request message included, a server stream only until it starts;
/// - streams per connection are bounded by hyper's default of 200 (tonic's `Server` set none).
pub async fn serve(log: Log, listener: TcpListener, stopped: watch::Receiver<bool>) {
    let limits = log.limits().clone();
    let idle = limits.header_read_timeout();
    let max_connections = limits.max_connections;
    let service = log_server::LogServer::new(GrpcLog {
        log: log.clone(),
        stopped: stopped.clone(),
    })
    .max_decoding_message_size(limits.max_body_bytes);
    let router = Routes::new(service)
        .prepare()
        .into_axum_router()
        .layer(middleware::from_fn_with_state(log, guard));
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(idle)
        .keep_alive_timeout(idle);
    conn::serve(
        "grpc",
        listener,
        builder,
        router,
        idle,
        max_connections,
        stopped,
    )
    .await;
}

/// Bounds a call by the request timeout (UNAVAILABLE, as HTTP answers 503), gives an oversized
/// request message its code, and counts every call by status, also those refused before the
/// service runs (an oversized or malformed message, an unknown method, a timeout).
async fn guard(
    State(log): State<Log>,
    req: http::Request<Body>,
    next: Next,
) -> http::Response<Body> {
    let timeout = log.limits().request_timeout();
    let call = async {
        if req.uri().path() != ADD_ENTRIES {
            return next.run(req).await;
        }
        match admit(&log, req).await {
            Ok(req) => next.run(req).await,
            Err(e) => status(e).into_http(),
        }
    };
    let mut response = match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => status(LogError::timed_out()).into_http(),
    };
    oversized_is_resource_exhausted(&mut response);
    // A head without a status is a handler's success: its OK follows in the trailers.
    let code = response
        .headers()
        .get(GRPC_STATUS)
        .map_or(Code::Ok, |v| Code::from_bytes(v.as_bytes()));
    log.metrics().record_request("grpc", format!("{code:?}"));
    response
}

const ADD_ENTRIES: &str = "/btlog.v1.Log/AddEntries";

/// An [`Admission`] handed from [`guard`] to the handler in the request's extensions (which
/// must be `Clone`); the handler takes it.
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<Admission>>>);

/// Admits an `AddEntries` call before its message is decoded (PROTOCOL.md §6.5): the token
/// first, so a call without one costs nothing; then the message is read, at most
/// `max_body_bytes`, and its entries counted on the wire, so tonic never decodes more than
/// `max_entries_per_request` of them (each 2-byte empty entry would become a ~230-byte struct).
async fn admit(log: &Log, req: http::Request<Body>) -> Result<http::Request<Body>, LogError> {
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let admission = log.admit(authorization).await?;
    let limits = log.limits();
    let (mut parts, body) = req.into_parts();
    let too_large = || {
        LogError::new(
            ErrorKind::TooLarge,
            format!(
                "request message too large: more than {} bytes",
                limits.max_body_bytes
            ),
        )
    };
    let bytes = axum::body::to_bytes(body, limits.max_body_bytes.saturating_add(FRAME_HEADER))
        .await
        .map_err(|_| too_large())?;
    // The message the frame declares (and only it: trailing bytes must not hide it).
    let declared = bytes
        .get(1..FRAME_HEADER)
        .and_then(|l| <[u8; 4]>::try_from(l).ok())
        .map(|l| u32::from_be_bytes(l) as usize);
    let message = declared
        .and_then(|len| bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?))
        .filter(|_| bytes[0] == 0);
    if let Some(count) = message.and_then(|m| count_field(m, 1)) {
        log.check_entry_count(count)?;
    }
    parts
        .extensions
        .insert(Admitted(Arc::new(Mutex::new(Some(admission)))));
    Ok(http::Request::from_parts(parts, Body::from(bytes)))
}

/// A gRPC message frame's header: a compression flag and a big-endian u32 length.
const FRAME_HEADER: usize = 5;

/// How many times length-delimited field `field` occurs at the top level of protobuf
/// `message`; None when the message is not well-formed (tonic then refuses it).
fn count_field(mut message: &[u8], field: u64) -> Option<usize> {
    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    fn skip(buf: &mut &[u8], n: u64) -> Option<()> {
        *buf = buf.get(usize::try_from(n).ok()?..)?;
        Some(())
    }
    let mut count = 0;
    while !message.is_empty() {
        let tag = varint(&mut message)?;
        match tag & 7 {
            0 => drop(varint(&mut message)?),
            1 => skip(&mut message, 8)?,
            2 => {
                let len = varint(&mut message)?;
                skip(&mut message, len)?;
                count += usize::from(tag >> 3 == field);
            }
            5 => skip(&mut message, 4)?,
            _ => return None,
        }
    }
    Some(count)
}

/// tonic refuses a request message over `max_decoding_message_size` before the service runs,
/// with OUT_OF_RANGE; the gRPC status code guide, and PROTOCOL.md §6 (413 maps to RESOURCE_EXHAUSTED),
/// want RESOURCE_EXHAUSTED. The service never answers OUT_OF_RANGE itself, so that code is
/// rewritten in the (trailers-only) error response; tonic's one-line message is kept.
fn oversized_is_resource_exhausted(response: &mut http::Response<Body>) {
    let headers = response.headers_mut();
    let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
    if headers.get(GRPC_STATUS) == Some(&out_of_range) {
        headers.insert(
            GRPC_STATUS,
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

/// A core error as a status with the kind's code.
fn status(e: LogError) -> Status {
    Status::new(e.kind.grpc_code(), e.message)
}

const GRPC_STATUS: &str = "grpc-status";

/// The `btlog.v1.Log` service over a [`Log`].
pub struct GrpcLog {
    log: Log,
    stopped: watch::Receiver<bool>,
}

/// A handler's outcome as a reply, a core error as a status with the kind's code.
fn reply<T>(result: Result<T, LogError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(status)
}

fn checkpoint_msg(c: SignedCheckpoint) -> pb::Checkpoint {
    pb::Checkpoint { checkpoint: c.note }
}

fn entry_fields(e: pb::EntryFields) -> Result<EntryFields, LogError> {
    Ok(EntryFields {
        kind: log::parse_kind(&e.kind)?,
        package: e.package,
        version: e.version,
        file: e.file,
        sha256: e.sha256,
        sha512: e.sha512,
        size: e.size,
        publisher: e.publisher,
        provenance: e.provenance,
        time: e.time,
    })
}

fn indexed(list: Vec<(u64, String)>) -> Vec<pb::IndexedEntry> {
    list.into_iter()
        .map(|(index, entry)| pb::IndexedEntry { index, entry })
        .collect()
}

fn opt_size(size: u64) -> Option<u64> {
    (size != 0).then_some(size)
}

#[tonic::async_trait]
impl log_server::Log for GrpcLog {
    async fn add_entries(
        &self,
        request: Request<pb::AddEntriesRequest>,
    ) -> Result<Response<pb::AddEntriesResponse>, Status> {
        let admission = request
            .extensions()
            .get::<Admitted>()
            .and_then(|a| a.0.lock().unwrap_or_else(|p| p.into_inner()).take())
            .ok_or_else(|| status(LogError::internal(&"AddEntries without admission")))?;
        let entries = request
            .into_inner()
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                entry_fields(e).map_err(|err| LogError::bad_input(format!("entry {i}: {err}")))
            })
            .collect();
        let outcome = self.log.submit(admission, entries).await;
        reply(outcome.map(|o| {
            pb::AddEntriesResponse {
                checkpoint: o.checkpoint.note,
                results: o
                    .results
                    .into_iter()
                    .map(|r| pb::EntryResult {
                        index: r.index,
                        leaf_hash: r.leaf_hash.to_vec(),
                        status: r.status.as_str().to_owned(),
                        existing_index: r.existing_index,
                    })
                    .collect(),
            }
        }))
    }

    async fn get_checkpoint(
        &self,
        _: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        reply(Ok(checkpoint_msg(self.log.checkpoint())))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        use pb::get_inclusion_proof_request::Leaf as PbLeaf;
        let r = request.into_inner();
        let result = async {
            let leaf = match r.leaf {
                Some(PbLeaf::Index(i)) => Leaf::Index(i),
                Some(PbLeaf::LeafHash(h)) => Leaf::Hash(log::hash_from_bytes(&h)?),
                None => return Err(LogError::bad_input("give index or leaf_hash")),
            };
            let p = self.log.inclusion_proof(leaf, opt_size(r.size)).await?;
            Ok(pb::InclusionProof {
                index: p.index,
                size: p.size,
                leaf_hash: p.leaf_hash.to_vec(),
                proof: p.proof.iter().map(|h| h.to_vec()).collect(),
            })
        }
        .await;
        reply(result)
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        let r = request.into_inner();
        let proof = self.log.consistency_proof(r.from, r.to).await;
        reply(proof.map(|p| pb::ConsistencyProof {
            from: r.from,
            to: r.to,
            proof: p.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let r = request.into_inner();
        let list = self.log.entries(r.start, r.end).await;
        reply(list.map(|l| pb::GetEntriesResponse {
            entries: indexed(l),
        }))
    }

    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let r = request.into_inner();
        let identity = Identity {
            package: r.package,
            version: r.version,
            file: r.file,
        };
        let found = self.log.lookup(identity).await;
        reply(found.map(|f| pb::LookupResponse {
            index: f.index,
            entry: f.entry,
            proof: f.proof,
        }))
    }

    async fn list_package(
        &self,
        request: Request<pb::ListPackageRequest>,
    ) -> Result<Response<pb::ListPackageResponse>, Status> {
        let r = request.into_inner();
        let list = self.log.list_package(r.package, r.from).await;
        reply(list.map(|l| pb::ListPackageResponse {
            entries: indexed(l),
        }))
    }

    async fn get_tile(
        &self,
        request: Request<pb::GetTileRequest>,
    ) -> Result<Response<pb::TileData>, Status> {
        let r = request.into_inner();
        let level = u8::try_from(r.level)
            .ok()
            .filter(|l| *l <= MAX_LEVEL)
            .ok_or_else(|| LogError::bad_input("tile level must be 0..=7"));
        let data = match level {
            Ok(level) => {
                self.log
                    .tile(TileKind::Hashes { level }, r.index, r.width)
                    .await
            }
            Err(e) => Err(e),
        };
        reply(data.map(|data| pb::TileData { data }))
    }

    async fn get_entry_bundle(
        &self,
        request: Request<pb::GetEntryBundleRequest>,
    ) -> Result<Response<pb::TileData>, Status> {
        let r = request.into_inner();
        let data = self.log.tile(TileKind::Entries, r.index, r.width).await;
        reply(data.map(|data| pb::TileData { data }))
    }

    type WatchCheckpointsStream = ReceiverStream<Result<pb::Checkpoint, Status>>;

    /// Sends the current checkpoint, then each new one, until the client goes away or the
    /// server shuts down (so a stream never holds up a graceful shutdown).
    async fn watch_checkpoints(
        &self,
        _: Request<pb::WatchCheckpointsRequest>,
    ) -> Result<Response<Self::WatchCheckpointsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut checkpoints = self.log.watch();
        let mut stopped = self.stopped.clone();
        tokio::spawn(async move {
            loop {
                let current = checkpoint_msg(checkpoints.borrow_and_update().clone());
                if tx.send(Ok(current)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = checkpoints.changed() => if changed.is_err() { return },
                    _ = stopped.wait_for(|s| *s) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        reply(Ok(ReceiverStream::new(rx)))
    }
}

#[cfg(test)]
mod tests {
    use super::count_field;
    use proptest::prelude::*;

    proptest! {
        /// The wire scan runs on unauthenticated-size input: it never panics, and on a message
        /// of well-formed fields it counts exactly the entries prost would decode.
        #[test]
        fn the_wire_scan_never_panics_and_counts_what_prost_decodes(
            junk in proptest::collection::vec(any::<u8>(), 0..64),
            fields in proptest::collection::vec((1u64..5, proptest::collection::vec(any::<u8>(), 0..8)), 0..40),
        ) {
            let _ = count_field(&junk, 1);
            let mut msg = Vec::new();
            let mut want = 0;
            for (field, payload) in &fields {
                prost::encoding::encode_key(*field as u32, prost::encoding::WireType::LengthDelimited, &mut msg);
                prost::encoding::encode_varint(payload.len() as u64, &mut msg);
                msg.extend_from_slice(payload);
                want += usize::from(*field == 1);
            }
            prop_assert_eq!(count_field(&msg, 1), Some(want));
        }
    }

    #[test]
    fn entries_are_counted_on_the_wire() {
        assert_eq!(count_field(&[], 1), Some(0));
        // Three empty entries (field 1), a varint field 2, a fixed64 and a fixed32 field.
        let msg = [
            0x0a, 0, 0x0a, 0, 0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x25, 1, 2, 3, 4,
            0x0a, 0,
        ];
        assert_eq!(count_field(&msg, 1), Some(3));
        assert_eq!(count_field(&[0x0a, 5, 1], 1), None, "length past the end");
        assert_eq!(count_field(&[0x0b], 1), None, "group wire type");
        assert_eq!(count_field(&[0x10, 0x80], 1), None, "truncated varint");
        assert_eq!(
            count_field(
                &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                1
            ),
            None
        );
    }
}
