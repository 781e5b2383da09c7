//! The one error type of the log service, and the one place that maps its kinds to HTTP
//! statuses and gRPC codes (PROTOCOL.md §6).

use btlog_store::StoreError;

/// What class of failure a request met; front ends translate only this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Malformed or refused input (400 / INVALID_ARGUMENT).
    BadInput,
    /// No or wrong credential (401 / UNAUTHENTICATED).
    Unauthenticated,
    /// Unknown or not yet existing (404 / NOT_FOUND).
    NotFound,
    /// Request too large (413 / RESOURCE_EXHAUSTED).
    TooLarge,
    /// Over a rate limit (429 / RESOURCE_EXHAUSTED).
    RateLimited,
    /// Queue full, timed out, shutting down or storage failing (503 / UNAVAILABLE).
    Overloaded,
    /// A server-side failure (500 / INTERNAL).
    Internal,
}

impl ErrorKind {
    /// The HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadInput => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::TooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Overloaded => 503,
            ErrorKind::Internal => 500,
        }
    }

    /// The gRPC status code for this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadInput => tonic::Code::InvalidArgument,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::TooLarge | ErrorKind::RateLimited => tonic::Code::ResourceExhausted,
            ErrorKind::Overloaded => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// A failed request: its kind and a one-line reason safe to show the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LogError {
    /// The class of failure.
    pub kind: ErrorKind,
    /// One line, no secrets.
    pub message: String,
}

impl LogError {
    /// An error of `kind` with `message` (newlines are flattened to keep it one line).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into().replace(['\n', '\r'], " ");
        LogError { kind, message }
    }

    /// Bad input.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// Not found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// The request timeout ran out (503 / UNAVAILABLE).
    pub fn timed_out() -> Self {
        Self::new(ErrorKind::Overloaded, "request timed out")
    }

    /// Server-side failure; the details go to the log, not to the client.
    pub fn internal(err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(ErrorKind::Internal, "internal error")
    }
}

impl From<StoreError> for LogError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Proof(p) => LogError::bad_input(p.to_string()),
            StoreError::BeyondLog { .. } => LogError::bad_input(e.to_string()),
            // The store logged the failure once, at error level, when the writer stopped.
            StoreError::WriterPoisoned => LogError::new(
                ErrorKind::Overloaded,
                "the log stopped appending after a storage failure (the failed batch may be logged); retry once the log is restarted",
            ),
            other => LogError::internal(&other),
        }
    }
}
