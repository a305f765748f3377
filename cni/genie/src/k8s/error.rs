//! The errors of API calls.

use super::kubeconfig::ConfigError;
use super::objects::ObjectRef;

/// Errors of API calls; each names the object it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{object} was not found")]
    NotFound { object: ObjectRef },
    #[error("the API server refused the credentials for {object} (401 Unauthorized)")]
    Unauthorized { object: ObjectRef },
    #[error("access to {object} is forbidden (403 Forbidden): {message}")]
    Forbidden { object: ObjectRef, message: String },
    #[error(
        "the API server {server} is unreachable for {object} after {attempts} attempts: {reason}"
    )]
    Unreachable {
        object: ObjectRef,
        server: String,
        attempts: u32,
        reason: String,
    },
    #[error("the API server {server} is not trusted for {object}: {reason}")]
    Untrusted {
        object: ObjectRef,
        server: String,
        reason: String,
    },
    #[error("the API server answered {status} for {object}: {message}")]
    Status {
        object: ObjectRef,
        status: u16,
        message: String,
    },
    #[error("{object} kept changing: {attempts} updates met a conflict")]
    Conflict { object: ObjectRef, attempts: u32 },
    #[error("the API server's answer for {object} cannot be decoded: {reason}")]
    Decode { object: ObjectRef, reason: String },
    #[error("the API server's answer for {object} is larger than the limit of {limit} bytes")]
    TooLarge { object: ObjectRef, limit: usize },
    #[error("{name:?} is not a valid {what}")]
    InvalidName { what: &'static str, name: String },
    #[error("cannot read the API token {path}")]
    Token {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the client's runtime")]
    Runtime(#[source] std::io::Error),
    #[error(
        "the blocking API client was called from inside an async runtime; use AsyncClient there"
    )]
    InsideRuntime,
}

impl Error {
    /// True when the object does not exist (for a pod: it was deleted).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when the API server could not be reached or kept failing (worth a later retry).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}
