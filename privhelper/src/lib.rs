//! The privhelper: the only vigil process that keeps capabilities.

pub mod bpf;

use vigil_ipc_proto::{Channel, InitConfig};

#[derive(Debug, thiserror::Error)]
pub enum PrivhelperError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
}

/// Serve the collector's requests until the supervisor says shut down.
pub fn run(init: &InitConfig, control: Channel, collector: Channel) -> Result<(), PrivhelperError> {
    let _ = (init, control, collector);
    Ok(())
}
