//! The header side of joining UDP datagrams of one flow into one `GSO_UDP_L4` super-packet:
//! which datagrams may be joined, which belong together, and the headers of the joined packet.
//! (Which datagrams to join, and when to send, is the packet data plane's.) IPv4 and IPv6
//! alike. Pure; every index into a header is checked by [`joinable`] first.

use super::{
    Offload,
    checksum::{self, fold, sum},
    offload::GSO_UDP_L4,
};

/// An IPv4 header without options.
pub const IP_LEN: usize = 20;
/// An IPv6 header (joined datagrams have no extension headers).
pub const IPV6_LEN: usize = 40;
/// The UDP header.
const UDP_LEN: usize = 8;
/// The IP protocol number of UDP.
const UDP: u8 = 17;

/// The IP header's length of a packet [`joinable`] took: its version's fixed header.
fn ip_len(packet: &[u8]) -> usize {
    if packet[0] >> 4 == 6 { IPV6_LEN } else { IP_LEN }
}

/// The payload length of `packet` when it is a datagram that can be joined: at most `max_len`
/// bytes, UDP with a length that matches the packet's, a payload of at least one byte, and
/// IPv4 without options and not a fragment, or IPv6 without extension headers (so not a
/// fragment either). Its headers are then `packet.len()` less this long.
pub fn joinable(packet: &[u8], max_len: usize) -> Option<usize> {
    if packet.len() > max_len {
        return None;
    }
    match packet.first()? >> 4 {
        4 => {
            if packet.len() <= IP_LEN + UDP_LEN || packet[0] != 0x45 || packet[9] != UDP {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
            let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
            let udp_len = usize::from(u16::from_be_bytes([packet[24], packet[25]]));
            // `total` is the packet's length only after the first test, so it may be
            // subtracted from.
            (total == packet.len() && fragment == 0 && udp_len == total - IP_LEN)
                .then(|| total - IP_LEN - UDP_LEN)
        }
        6 => {
            if packet.len() <= IPV6_LEN + UDP_LEN || packet[6] != UDP {
                return None;
            }
            let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
            let udp_len = usize::from(u16::from_be_bytes([packet[44], packet[45]]));
            (payload + IPV6_LEN == packet.len() && udp_len == payload).then(|| payload - UDP_LEN)
        }
        _ => None,
    }
}

/// Whether `packet` is UDP (the protocol of its fixed header), for a packet that could not be
/// joined.
pub fn is_udp(packet: &[u8]) -> bool {
    match packet.first().map(|byte| byte >> 4) {
        Some(4) => packet.get(9) == Some(&UDP),
        Some(6) => packet.get(6) == Some(&UDP),
        _ => false,
    }
}

/// The bytes that name a joinable datagram's flow: addresses and ports.
pub fn flow_bytes(packet: &[u8]) -> &[u8] {
    if packet[0] >> 4 == 6 {
        &packet[8..IPV6_LEN + 4]
    } else {
        &packet[12..IP_LEN + 4]
    }
}

/// Whether two joinable datagrams' headers belong to the same flow and would be cut back
/// alike: IPv4 with equal TOS, DF, TTL, protocol, addresses and ports; IPv6 with equal
/// traffic class, flow label, hop limit, addresses and ports. `a` holds at least the headers
/// of its own version.
pub fn same_flow(a: &[u8], b: &[u8]) -> bool {
    match (a[0] >> 4, b[0] >> 4) {
        (4, 4) => {
            a[1] == b[1] && a[6] & 0x40 == b[6] & 0x40 && a[8..10] == b[8..10] && a[12..24] == b[12..24]
        }
        (6, 6) => a[..4] == b[..4] && a[6..8] == b[6..8] && a[8..IPV6_LEN + 4] == b[8..IPV6_LEN + 4],
        _ => false,
    }
}

/// Makes `packet` (the first datagram's headers followed by every joined payload, `len` bytes
/// in all) one UDP super-packet of `segment_size`-byte segments: the IP and UDP lengths (and
/// the IPv4 header checksum), and the UDP checksum's pseudo-header part (the kernel finishes
/// it). Returns the offload header that goes with it.
pub fn finish(packet: &mut [u8], len: usize, segment_size: usize) -> Offload {
    let ip_len = ip_len(packet);
    let udp_len = (len - ip_len) as u16;
    let addresses = if ip_len == IPV6_LEN {
        packet[4..6].copy_from_slice(&udp_len.to_be_bytes());
        8..IPV6_LEN
    } else {
        packet[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        packet[10..12].fill(0);
        let ip_checksum = checksum::compute(&packet[..IP_LEN]);
        packet[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        12..20
    };
    packet[ip_len + 4..ip_len + 6].copy_from_slice(&udp_len.to_be_bytes());
    // The pseudo-header sum, as the kernel leaves a checksum it will finish.
    let pseudo = sum(&packet[addresses]) + u32::from(UDP) + u32::from(udp_len);
    packet[ip_len + 6..ip_len + 8].copy_from_slice(&fold(pseudo).to_be_bytes());
    Offload {
        flags: 1,
        gso_type: GSO_UDP_L4,
        hdr_len: (ip_len + UDP_LEN) as u16,
        gso_size: segment_size as u16,
        csum_start: ip_len as u16,
        csum_offset: 6,
    }
}
