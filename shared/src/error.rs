//! The service's error type. Each variant is one of the API's error codes; the HTTP glue in
//! `functions/` owns the mapping to a status. Messages are written for the client: they never
//! carry storage details (those are logged where the error is created).

use crate::queue::QueueError;
use crate::tables::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    /// With the whole seconds to wait before retrying (`Retry-After`).
    #[error("{0}")]
    RateLimited(String, u64),
    #[error("{0}")]
    Unavailable(String),
    /// The message is for the log only; clients see a generic text.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::PermissionDenied(_) => "permission_denied",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::TooLarge(_) => "too_large",
            Error::RateLimited(..) => "rate_limited",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The text a client may see.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_string(),
            other => other.to_string(),
        }
    }

    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }
    pub fn denied(msg: impl Into<String>) -> Self {
        Error::PermissionDenied(msg.into())
    }
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadCursor => Error::invalid("cursor is not valid for this list"),
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "tables unavailable");
                Error::Unavailable("storage is unavailable, retry later".into())
            }
            // A conflict that reaches here was not expected by the caller: a bug, not a client error.
            StoreError::Conflict { index } => Error::Internal(format!("unexpected conflict at op {index:?}")),
            StoreError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<crate::search::SearchError> for Error {
    fn from(e: crate::search::SearchError) -> Self {
        match e {
            crate::search::SearchError::Unavailable(m) => {
                tracing::warn!(error = %m, "search unavailable");
                Error::Unavailable("search is unavailable, retry later".into())
            }
            crate::search::SearchError::Internal(m) => Error::Internal(m),
        }
    }
}

impl From<QueueError> for Error {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(m) => {
                tracing::warn!(error = %m, "queue unavailable");
                Error::Unavailable("queue is unavailable, retry later".into())
            }
            QueueError::Internal(m) => Error::Internal(m),
        }
    }
}
