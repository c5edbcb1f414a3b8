//! `vigil status`: a root-only (or the supervisor's own uid) socket in the runtime directory.
//! [`server`] runs in the supervisor and answers with what /proc says of each process;
//! [`client`] is the `vigil status` command (any user); [`render`] prints the report.

pub mod client;
pub mod render;
pub mod server;

use vigil_ipc_proto::FeatureState;

pub use client::query;
pub use render::print_report;
pub use server::StatusServer;

/// What the report says about this run besides the processes.
#[derive(Debug, Clone)]
pub struct StatusContext {
    pub mount_mode: String,
    pub virtual_root: bool,
    pub non_root_mode: bool,
    pub user: String,
    pub features: Vec<FeatureState>,
    /// The supervisor's own Landlock state ("off", or its write confinement).
    pub landlock: String,
    /// Besides root, peers with this uid may ask: the supervisor's own (the agent user when
    /// it was started as that user, the invoking user when rootless).
    pub allowed_uid: u32,
    /// Status clients refused so far.
    pub refused: u64,
}

/// Where the socket is.
pub fn socket_path(runtime_dir: &std::path::Path) -> std::path::PathBuf {
    runtime_dir.join("vigil.sock")
}
