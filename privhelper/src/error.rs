//! Errors of the privhelper. [`RequestError`] is what one request can fail with: it is always
//! answered as a `PrivResponse::Error` and never ends the process. [`PrivhelperError`] ends
//! [`crate::run`]: the caller exits non-zero and the supervisor restarts the privhelper.

use std::io;

use vigil_ipc_proto::{PrivError, PrivErrorCode, ProtoError};

/// Why one request was not served. Every variant maps to one [`PrivErrorCode`].
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request failed validation (bad pid, bad name, too many items, malformed frame).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The feature the request belongs to is not enabled.
    #[error("feature {0} is disabled")]
    FeatureDisabled(vigil_ipc_proto::Feature),
    /// A start-up request after start-up, or a once-only request again.
    #[error("{0:?} is not served now ({1})")]
    OutOfPhase(vigil_ipc_proto::privtable::PrivRequestKind, &'static str),
    /// The target does not exist (vanished process, unknown namespace).
    #[error("{what}: not found")]
    NotFound { what: String },
    /// The kernel refused (missing capability, ptrace access check).
    #[error("{what}: permission denied ({source})")]
    PermissionDenied {
        what: String,
        #[source]
        source: io::Error,
    },
    /// Any other failure of the operation.
    #[error("{what}: {source}")]
    Failed {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The answer would not fit in one frame.
    #[error("answer does not fit in one frame: {0}")]
    TooLarge(String),
}

impl RequestError {
    /// Classify an I/O error of the step `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        let what = what.into();
        match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => RequestError::NotFound { what },
            Some(libc::EPERM) | Some(libc::EACCES) => {
                RequestError::PermissionDenied { what, source }
            }
            _ => RequestError::Failed { what, source },
        }
    }

    /// Same as [`RequestError::io`] for nix's errno type.
    pub fn errno(what: impl Into<String>, e: nix::errno::Errno) -> Self {
        Self::io(what, io::Error::from(e))
    }

    pub fn code(&self) -> PrivErrorCode {
        match self {
            RequestError::BadRequest(_) => PrivErrorCode::BadRequest,
            RequestError::FeatureDisabled(_) => PrivErrorCode::FeatureDisabled,
            RequestError::OutOfPhase(..) => PrivErrorCode::OutOfPhase,
            RequestError::NotFound { .. } => PrivErrorCode::NotFound,
            RequestError::PermissionDenied { .. } => PrivErrorCode::PermissionDenied,
            RequestError::Failed { .. } | RequestError::TooLarge(_) => PrivErrorCode::Failed,
        }
    }

    /// A refusal (the request was wrong or not allowed) as opposed to a failed operation.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RequestError::BadRequest(_)
                | RequestError::FeatureDisabled(_)
                | RequestError::OutOfPhase(..)
        )
    }

    /// The error as the collector sees it.
    pub fn to_priv_error(&self) -> PrivError {
        PrivError {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// What ends the privhelper's [`crate::run`].
#[derive(Debug, thiserror::Error)]
pub enum PrivhelperError {
    #[error("ipc: {0}")]
    Proto(#[from] ProtoError),
    /// The supervisor's end of the control channel is gone: nobody is left to serve.
    #[error("control channel closed by the supervisor")]
    ControlClosed,
    /// Could not open the privhelper's own network namespace at start.
    #[error("cannot open own network namespace {path}: {source}")]
    OwnNetns {
        path: &'static str,
        #[source]
        source: io::Error,
    },
    /// Coming back from a target network namespace failed: this thread now lives in the wrong
    /// namespace. Fatal by design: the process must exit and be restarted.
    #[error("cannot return to the own network namespace after a request: {0}")]
    NetnsRestore(nix::errno::Errno),
    /// poll() on the channels failed.
    #[error("poll: {0}")]
    Poll(nix::errno::Errno),
}
