//! IP packets as the packet data plane sees them: validated on the way in (etherparse), then
//! rewritten in place with incremental checksum updates (RFC 1624). Pure: no I/O, and nothing
//! that arrives from the network can make it panic; malformed packets are errors.
//!
//! IPv4 (`ipv4`) and IPv6 (`ipv6`, extension headers walked) packets alike, ICMP and ICMPv6
//! errors with the packets they quote. Addresses are `IpAddr` at the edges.

pub mod arp;
pub mod checksum;
mod ipv4;
mod ipv6;
pub mod ndp;
pub mod offload;
pub mod sync;
pub mod udp_join;

pub use self::{
    ipv4::{Icmp, Ipv4Packet, L4, TcpFlags, port_unreachable},
    ipv6::{Ipv6Packet, port_unreachable as port_unreachable_v6},
    offload::{Offload, VNET_HEADER_LEN},
};

/// Why a packet was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Not IPv4 (where an IPv4 packet was expected).
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

/// The transport of an IPv4 or IPv6 packet: `payload` starts with its header, `protocol` is
/// its number, `icmp` the number of this family's ICMP, and `is_error` tells that ICMP's error
/// types (those that quote a packet) from the others.
fn transport(
    protocol: u8,
    payload: &[u8],
    icmp: u8,
    is_error: impl Fn(u8) -> bool,
) -> Result<L4, PacketError> {
    match protocol {
        6 => {
            let tcp =
                etherparse::TcpHeaderSlice::from_slice(payload).map_err(|_| PacketError::Truncated("TCP"))?;
            Ok(L4::Tcp {
                source: tcp.source_port(),
                destination: tcp.destination_port(),
                flags: TcpFlags {
                    syn: tcp.syn(),
                    ack: tcp.ack(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                },
            })
        }
        17 => {
            let udp =
                etherparse::UdpHeaderSlice::from_slice(payload).map_err(|_| PacketError::Truncated("UDP"))?;
            Ok(L4::Udp {
                source: udp.source_port(),
                destination: udp.destination_port(),
            })
        }
        number if number == icmp => {
            if payload.len() < 8 {
                return Err(PacketError::Truncated("ICMP"));
            }
            let (kind, code) = (payload[0], payload[1]);
            Ok(L4::Icmp(if is_error(kind) {
                Icmp::Error { kind, code }
            } else {
                Icmp::Other { kind }
            }))
        }
        other => Ok(L4::Other(other)),
    }
}
