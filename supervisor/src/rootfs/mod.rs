//! The trimmed virtual root: [`plan`] decides which mounts make the view (pure data),
//! [`apply`] performs them in a new mount namespace and pivots into the result, [`resolve`]
//! resolves the host's symlinks inside the view, [`remount`] finds the mounts a per-mount
//! read-only fallback must visit when `mount_setattr` is unavailable.

mod apply;
mod plan;
mod remount;
mod resolve;

pub use apply::{apply, unshare_mount_ns};
pub use plan::{PRUNE_DIRS, PRUNE_FILES_KNOWN, host_entries, plan};
