//! The witness's HTTP front end: `POST <prefix>/add-checkpoint` with tlog-witness's status
//! codes, on the same connection loop as the log's front ends (header, idle and request
//! timeouts, a connection cap), with the body bounded before it is read.

use super::{Outcome, Witness, WitnessConfig};
use crate::api::conn;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use btlog_core::witness::{MAX_REQUEST_BYTES, SIZE_CONTENT_TYPE};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

const TEXT: &str = "text/plain; charset=utf-8";

/// Serves the witness on `listener` until `stopped` turns true.
pub async fn serve(
    witness: Arc<Witness>,
    config: &WitnessConfig,
    listener: TcpListener,
    stopped: watch::Receiver<bool>,
) {
    let timeout = config.timeout();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(16 * 1024);
    let app = router(witness, &config.prefix, timeout);
    conn::serve(
        "witness",
        listener,
        builder,
        app,
        timeout,
        config.max_connections,
        stopped,
    )
    .await;
}

/// The witness's routes.
pub fn router(witness: Arc<Witness>, prefix: &str, timeout: Duration) -> Router {
    Router::new()
        .route(&format!("{prefix}/add-checkpoint"), post(add_checkpoint))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n".into()) })
        .layer(axum::middleware::from_fn(
            move |req, next: axum::middleware::Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(r) => r,
                    Err(_) => text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "request timed out\n".into(),
                    ),
                }
            },
        ))
        .with_state(witness)
}

async fn add_checkpoint(State(witness): State<Arc<Witness>>, body: Body) -> Response {
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_REQUEST_BYTES} bytes\n"),
            )
        }
    };
    let outcome = tokio::task::spawn_blocking(move || witness.add_checkpoint(&body)).await;
    match outcome {
        Ok(outcome) => answer(outcome),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// An outcome as tlog-witness says to answer it.
fn answer(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Cosigned(lines) => text(StatusCode::OK, lines),
        Outcome::Malformed(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        Outcome::UnknownOrigin(o) => text(StatusCode::NOT_FOUND, format!("unknown log {o:?}\n")),
        Outcome::BadSignature(e) => text(
            StatusCode::FORBIDDEN,
            format!("no signature of the log verifies: {e}\n"),
        ),
        Outcome::Refused(r) => match r.known_size() {
            Some(known) => (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, SIZE_CONTENT_TYPE)],
                format!("{known}\n"),
            )
                .into_response(),
            None => text(
                StatusCode::from_u16(r.status()).unwrap_or(StatusCode::BAD_REQUEST),
                format!("{r}\n"),
            ),
        },
        Outcome::Failed(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the witness could not record the checkpoint: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, TEXT)], body).into_response()
}
