//! The shipper: unprivileged journal and exporters.

pub mod journal;

use vigil_ipc_proto::{Channel, InitConfig};

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
}

/// Journal every batch from the collector, acknowledge it, export it, until shut down.
pub fn run(init: &InitConfig, control: Channel, collector: Channel) -> Result<(), ShipperError> {
    let _ = (init, control, collector);
    Ok(())
}
