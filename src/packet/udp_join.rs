//! The header side of joining UDP datagrams of one flow into one `GSO_UDP_L4` super-packet:
//! which datagrams may be joined, which belong together, and the headers of the joined packet.
//! (Which datagrams to join, and when to send, is the packet data plane's.) Pure; every index
//! into a header is checked by [`joinable`] first.

use super::{
    Offload,
    checksum::{self, fold, sum},
    offload::GSO_UDP_L4,
};

/// An IPv4 header without options.
pub const IP_LEN: usize = 20;
/// An IPv4 header without options and a UDP header.
pub const HEADERS_LEN: usize = IP_LEN + 8;
/// The IP protocol number of UDP.
const UDP: u8 = 17;

/// The payload length of `packet` when it is a datagram that can be joined: at most `max_len`
/// bytes, IPv4 without options, not a fragment, UDP with a length that matches, a payload of
/// at least one byte.
pub fn joinable(packet: &[u8], max_len: usize) -> Option<usize> {
    if packet.len() <= HEADERS_LEN || packet.len() > max_len || packet[0] != 0x45 || packet[9] != UDP {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
    let udp_len = usize::from(u16::from_be_bytes([packet[24], packet[25]]));
    // `total` is the packet's length only after the first test, so it may be subtracted from.
    if total == packet.len() && fragment == 0 && udp_len == total - IP_LEN {
        Some(total - HEADERS_LEN)
    } else {
        None
    }
}

/// Whether `packet` is UDP (its IP protocol), for a packet that could not be joined.
pub fn is_udp(packet: &[u8]) -> bool {
    packet.get(9) == Some(&UDP)
}

/// The bytes that name a joinable datagram's flow: addresses and ports.
pub fn flow_bytes(packet: &[u8]) -> &[u8] {
    &packet[12..HEADERS_LEN - 4]
}

/// Whether two joinable datagrams' headers belong to the same flow and would be cut back
/// alike: TOS, DF, TTL, protocol, addresses and ports equal.
pub fn same_flow(a: &[u8], b: &[u8]) -> bool {
    a[1] == b[1] && a[6] & 0x40 == b[6] & 0x40 && a[8..10] == b[8..10] && a[12..24] == b[12..24]
}

/// Makes `packet` (the first datagram's headers followed by every joined payload, `len` bytes
/// in all) one UDP super-packet of `segment_size`-byte segments: total and UDP lengths, the IP
/// checksum, and the UDP checksum's pseudo-header part (the kernel finishes it). Returns the
/// offload header that goes with it.
pub fn finish(packet: &mut [u8], len: usize, segment_size: usize) -> Offload {
    let udp_len = (len - IP_LEN) as u16;
    packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    packet[10..12].fill(0);
    let ip_checksum = checksum::compute(&packet[..IP_LEN]);
    packet[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
    packet[24..26].copy_from_slice(&udp_len.to_be_bytes());
    // The pseudo-header sum, as the kernel leaves a checksum it will finish.
    let pseudo = sum(&packet[12..20]) + u32::from(UDP) + u32::from(udp_len);
    packet[26..28].copy_from_slice(&fold(pseudo).to_be_bytes());
    Offload {
        flags: 1,
        gso_type: GSO_UDP_L4,
        hdr_len: HEADERS_LEN as u16,
        gso_size: segment_size as u16,
        csum_start: IP_LEN as u16,
        csum_offset: 6,
    }
}
