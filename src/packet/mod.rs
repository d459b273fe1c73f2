//! IP packets as the packet data plane sees them: validated on the way in (etherparse), then
//! rewritten in place with incremental checksum updates (RFC 1624). Pure: no I/O, and nothing
//! that arrives from the network can make it panic; malformed packets are errors.
//!
//! IPv4 is what the data plane forwards so far; IPv6 packets are parsed and rewritten here
//! (`ipv6`) for the IPv6 data plane to come. Addresses are `IpAddr` at the edges.

pub mod arp;
pub mod checksum;
mod ipv4;
mod ipv6;
pub mod offload;
pub mod sync;
pub mod udp_join;

pub use self::{
    ipv4::{Icmp, Ipv4Packet, L4, TcpFlags, port_unreachable},
    ipv6::Ipv6Packet,
    offload::{Offload, VNET_HEADER_LEN},
};

/// Why a packet was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not IPv4 (IPv6 and others are not handled yet).
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    /// Not IPv6.
    #[error("not an IPv6 packet (version {0})")]
    NotIpv6(u8),
    /// More IPv6 extension headers than are walked.
    #[error("more than {0} IPv6 extension headers")]
    Extensions(usize),
    /// The IPv4 header is invalid.
    #[error("malformed IPv4 header: {0}")]
    Header(etherparse::err::ipv4::HeaderSliceError),
    /// The header's total length is shorter than the header or longer than what was read.
    #[error("IPv4 total length {declared} does not fit the {read} bytes read")]
    TotalLength {
        /// The header's total length.
        declared: usize,
        /// Bytes read.
        read: usize,
    },
    /// The transport header is cut short.
    #[error("truncated {0} header")]
    Truncated(&'static str),
}
