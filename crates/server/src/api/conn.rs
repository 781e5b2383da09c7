//! The connection loop both front ends share: one hyper connection per client, closed once it
//! has had nothing in flight for the idle timeout, whatever it sends or fails to send.

use super::stop_signal;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tower::ServiceExt;

/// Serves `router` with `builder` on each connection `listener` accepts, until `stopped` turns
/// true; then lets the connections drain.
///
/// At most `max_connections` are open at once (file descriptors and per-connection buffers
/// stay bounded); more wait in the listen backlog. A connection is closed once nothing has
/// been in flight on it for `idle`. A request is in
/// flight from when it reaches `router` until its response head is ready, and again whenever
/// its response body waits on the server for its next frame (a gRPC server stream between
/// messages). A frame that waits for the client to take it (flow control, a full socket) does
/// not count, so a client that stops reading is closed like one that sends nothing, one that
/// never finishes the protocol preface, or an HTTP/2 session without streams. Bodies still
/// being received count through the handler reading them, which the request timeout bounds.
pub(crate) async fn serve(
    api: &'static str,
    listener: TcpListener,
    builder: auto::Builder<TokioExecutor>,
    router: Router,
    idle: Duration,
    max_connections: usize,
    stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop_signal(stopped));
    let open = Arc::new(Semaphore::new(max_connections));
    loop {
        // At the cap, stop accepting until a connection closes; clients wait in the backlog.
        let permit = tokio::select! {
            permit = open.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(api, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // Replies are written whole; waiting for the client's ACK of the previous segment
        // (Nagle) only adds latency to small ones.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(api, error = %e, "setting TCP_NODELAY failed");
        }
        let activity = Activity::new();
        let counting = activity.clone();
        let counted = ServiceExt::<Request<Incoming>>::map_future(router.clone(), move |call| {
            let in_flight = counting.begin();
            let activity = counting.clone();
            async move {
                let response = call.await;
                drop(in_flight);
                response.map(|r| {
                    r.map(|body| CountedBody {
                        body,
                        activity,
                        waiting: None,
                    })
                })
            }
        });
        let service = TowerToHyperService::new(counted);
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _open = permit;
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(api, error = %e, "connection closed with an error");
                },
                () = activity.idle_for(idle) => {
                    tracing::debug!(api, ?idle, "closing a connection with nothing in flight");
                }
            }
        });
    }
    graceful.shutdown().await;
}

/// The requests in flight on one connection, and since when it has had none.
#[derive(Clone)]
struct Activity(Arc<Mutex<(usize, Instant)>>);

/// One request in flight on a connection, until dropped.
struct InFlight(Activity);

impl Activity {
    fn new() -> Self {
        Activity(Arc::new(Mutex::new((0, Instant::now()))))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self) -> InFlight {
        self.state().0 += 1;
        InFlight(self.clone())
    }

    /// Resolves once the connection has had no request in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let wait = match *self.state() {
                (0, since) => idle.saturating_sub(since.elapsed()),
                _ => idle,
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.0 -= 1;
        state.1 = Instant::now();
    }
}

/// A response body that is in flight while it waits on the server for its next frame.
struct CountedBody {
    body: Body,
    activity: Activity,
    waiting: Option<InFlight>,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending() {
            this.waiting.get_or_insert_with(|| this.activity.begin());
        } else {
            this.waiting = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
