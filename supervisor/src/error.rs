//! Errors of the supervisor, each naming the step and the path that failed.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {path}: {msg}")]
    Config { path: PathBuf, msg: String },
    #[error("environment variable {var}: {msg}")]
    Env { var: String, msg: String },
    #[error(
        "user {user:?} not found in {passwd}: create it on the host (useradd --system \
         --no-create-home --shell /usr/sbin/nologin {user}) or name another with --user / \
         user = ..."
    )]
    NoSuchUser { user: String, passwd: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step} {path}: {source}")]
    Fs {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("virtual root: {step} {path}: {source}")]
    Mount {
        step: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("{step}: {source}")]
    Sys {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("missing capabilities and VIGIL_ENFORCE_SYS_CAPS is set: {0}")]
    Enforced(String),
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("sandbox: {0}")]
    Sandbox(#[from] vigil_policies::SandboxError),
    #[error("landlock plan: {0}")]
    Landlock(#[from] vigil_policies::landlock::LandlockError),
    #[error("confining the supervisor's writes (Landlock): {0}")]
    ConfineWrites(vigil_policies::SandboxError),
    #[error("{0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> Error {
        move |e| Error::Sys {
            step,
            source: e.into(),
        }
    }
    pub fn fs(
        step: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Fs { step, path, source }
    }
}
