//! The front ends of the log service: HTTP (tlog-tiles and `/v1` JSON) and gRPC. Both only
//! translate between their wire format and [`crate::log::Log`]; [`Server`] runs them together.

pub mod codec;
pub(crate) mod conn;
pub mod explorer;
pub mod grpc;
pub mod http;

/// Generated gRPC types and services for `btlog.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("btlog.v1");
}

use crate::config::Config;
use crate::log::{Log, OpenError};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding a listen address failed.
    #[error("listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A server task failed (panicked).
    #[error("{0} server: {1}")]
    Serve(&'static str, String),
}

/// A running log server: the log service and both front ends.
pub struct Server {
    log: Log,
    http_addr: SocketAddr,
    grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Server {
    /// Binds both addresses (port 0 picks a free port), opens the log and starts serving.
    pub async fn start(config: &Config) -> Result<Server, ServeError> {
        let http_listener = TcpListener::bind(config.http)
            .await
            .map_err(|e| ServeError::Bind(config.http, e))?;
        let grpc_listener = TcpListener::bind(config.grpc)
            .await
            .map_err(|e| ServeError::Bind(config.grpc, e))?;
        let local = |l: &TcpListener, a| l.local_addr().map_err(|e| ServeError::Bind(a, e));
        let http_addr = local(&http_listener, config.http)?;
        let grpc_addr = local(&grpc_listener, config.grpc)?;
        let cfg = config.clone();
        let log = tokio::task::spawn_blocking(move || Log::open(&cfg))
            .await
            .map_err(|e| ServeError::Serve("start", e.to_string()))??;
        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            (
                "http",
                tokio::spawn(http::serve(log.clone(), http_listener, stopped.clone())),
            ),
            (
                "grpc",
                tokio::spawn(grpc::serve(log.clone(), grpc_listener, stopped)),
            ),
        ];
        tracing::info!(%http_addr, %grpc_addr, "serving");
        Ok(Server {
            log,
            http_addr,
            grpc_addr,
            stop,
            tasks,
        })
    }

    /// The log service.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Graceful shutdown: stop accepting, let requests in flight finish (bounded by the
    /// request timeout), commit the batch in flight, and close the store.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let grace = self.log.limits().request_timeout() + Duration::from_secs(2);
        let mut result = Ok(());
        for (name, task) in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout(grace, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(ServeError::Serve(name, e.to_string())),
                Err(_) => {
                    tracing::warn!(server = name, "requests still running at shutdown; aborted");
                    abort.abort();
                }
            }
        }
        self.log.shutdown().await;
        tracing::info!("stopped");
        result
    }
}

/// Resolves once `stopped` turns true (or its sender is gone).
pub(crate) async fn stop_signal(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}
