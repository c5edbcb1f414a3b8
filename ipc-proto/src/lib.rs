//! The protocol between vigil's processes, defined once.
//!
//! Every channel is a `SOCK_SEQPACKET` Unix socket pair created by the supervisor before it
//! starts the children. On each channel both sides first exchange a [`Hello`] carrying
//! [`PROTOCOL_VERSION`] and their [`Role`]; then every datagram is one length-prefixed postcard
//! frame ([`frame`]), optionally carrying file descriptors ([`channel`]).
//!
//! Which messages flow on which channel:
//!
//! | channel                | one way                 | other way                |
//! |------------------------|-------------------------|--------------------------|
//! | supervisor ↔ any child | [`SupervisorToChild`]   | [`ChildToSupervisor`]    |
//! | collector ↔ privhelper | [`PrivRequest`]         | [`PrivResponse`] (+ fd)  |
//! | collector ↔ shipper    | [`CollectorToShipper`]  | [`ShipperToCollector`]   |
//! | `vigil status` ↔ sup.  | [`ClientRequest`]       | [`ClientResponse`]       |

pub mod batch;
pub mod channel;
pub mod config;
pub mod delivery;
pub mod error;
pub mod features;
pub mod frame;
pub mod heap;
pub mod messages;
pub mod pagebuf;
pub mod privtable;
pub mod procstatus;
pub mod records;
pub mod runtime;

pub use channel::Channel;
pub use config::*;
pub use error::ProtoError;
pub use features::Feature;
pub use messages::*;
pub use records::*;

/// Bumped on every incompatible change of any message in this crate.
pub const PROTOCOL_VERSION: u16 = 4;

/// Fixed descriptor numbers a child finds at exec. The supervisor arranges them with `dup2`.
pub mod fds {
    /// Control channel to the supervisor (every role).
    pub const CONTROL: i32 = 3;
    /// First peer: the privhelper for the collector; the collector for privhelper and shipper.
    pub const PEER_A: i32 = 4;
    /// Second peer: the shipper for the collector.
    pub const PEER_B: i32 = 5;
}
