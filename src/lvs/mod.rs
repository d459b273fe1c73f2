//! The packet data plane: LVS's NAT, direct routing and IPIP tunnelling done in user space on
//! packets read from a TUN device. This module holds its connection table and IPVS's TCP
//! state machine; the device I/O and the per-mode rewrites build on them.

pub mod announce;
mod buffer;
pub mod coalesce;
pub mod decap;
mod egress;
mod error;
pub mod flow_table;
pub mod inject;
pub mod neighbours;
pub mod path;
pub mod plane;
pub mod setup;
mod shared;
pub mod steering;
pub mod sync;
pub mod tcp_state;
mod worker;
