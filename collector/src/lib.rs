//! The collector: unprivileged producer of records.

pub mod ebpf;

use vigil_ipc_proto::{Channel, InitConfig};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
}

/// Collect every interval and send batches to the shipper until the supervisor says shut down.
pub fn run(
    init: &InitConfig,
    control: Channel,
    privhelper: Channel,
    shipper: Channel,
) -> Result<(), CollectorError> {
    // Minimal hook (eBPF engineer): only the eBPF data path, until the collector's event loop
    // replaces this call (it keeps `ebpf::start` + `EbpfSources::service`).
    ebpf::minimal::run(init, control, privhelper, shipper)?;
    Ok(())
}
