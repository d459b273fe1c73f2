//! The layout of a packet worker's buffer, shared by the worker loop and the UDP joiner: where
//! a packet starts, and the room in front of it.

use crate::packet::VNET_HEADER_LEN;

/// Bytes of an Ethernet header (dr frames).
pub(crate) const ETHERNET_LEN: usize = 14;

/// Where a packet starts in a worker's buffer: its `virtio_net_hdr` is read just before it, and
/// in front of that there is room for the Ethernet header (and the header moved in front of
/// that) of a dr frame, so no packet is ever copied to be framed.
pub(crate) const PACKET_AT: usize = ETHERNET_LEN + VNET_HEADER_LEN;
