//! `lbd ipip-decap`: a real-server helper for tun mode on kernels without an ipip or ip6tnl
//! device (such as this project's test machines). It receives the tunnelled packets on raw
//! sockets, one per outer family (the director may tunnel over IPv4 or IPv6 whatever the
//! VIP's family), strips the outer header and writes the inner packet into a TUN device, so
//! the kernel sees it arrive as it would on `tunl0` or `ip6tnl0`. The VIP must be on the
//! real's `lo`, as for any LVS/TUN real.

use std::{io::Read, net::IpAddr, sync::Arc, thread};

use crate::packet::{Ipv4Packet, Ipv6Packet};

/// The helper could not start.
#[derive(Debug, thiserror::Error)]
pub enum DecapError {
    /// The TUN device or the raw socket could not be opened.
    #[error("ipip-decap: cannot open {what}: {source} (it needs CAP_NET_ADMIN and CAP_NET_RAW)")]
    Open {
        /// What.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Decapsulates tunnelled packets for `vip` into TUN device `dev`, until killed.
pub fn run(vip: IpAddr, dev: &str) -> Result<(), DecapError> {
    let device = tun_rs::DeviceBuilder::new()
        .name(dev)
        .build_sync()
        .map_err(|source| DecapError::Open {
            what: format!("the TUN device {dev}"),
            source,
        })?;
    // Packets "arrive" on the TUN device from the client's address, which routes elsewhere:
    // reverse-path filtering must be off there.
    for key in [format!("conf/{dev}/rp_filter"), "conf/all/rp_filter".to_owned()] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/{key}"), "0");
    }
    let device = Arc::new(device);
    let mut readers = Vec::new();
    for outer_ipv6 in [false, true] {
        let socket =
            crate::sys::tunnel_socket(outer_ipv6, vip.is_ipv6()).map_err(|source| DecapError::Open {
                what: format!("a raw {} tunnel socket", if outer_ipv6 { "IPv6" } else { "IPv4" }),
                source,
            })?;
        let device = Arc::clone(&device);
        readers.push(thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok(len) = (&socket).read(&mut buf) else {
                    continue;
                };
                // An IPv4 raw socket reads the outer header too; an IPv6 one the payload only.
                let outer_len = if outer_ipv6 {
                    Some(0)
                } else {
                    ipv4_header_len(&buf[..len])
                };
                let Some(inner) = outer_len.and_then(|at| inner_packet(&mut buf[at..len], vip)) else {
                    continue;
                };
                let _ = device.send(inner);
            }
        }));
    }
    tracing::info!(%vip, dev, "ipip-decap: decapsulating tunnelled packets for the VIP (in IPv4 and in IPv6)");
    for reader in readers {
        let _ = reader.join();
    }
    Ok(())
}

/// The length of the IPv4 header at the start of `packet`.
fn ipv4_header_len(packet: &[u8]) -> Option<usize> {
    Some(usize::from(packet.first()? & 0x0f) * 4)
}

/// The packet in `inner` (one IPv4 or IPv6 packet, maybe followed by padding), if it is
/// addressed to `vip`.
fn inner_packet(inner: &mut [u8], vip: IpAddr) -> Option<&[u8]> {
    let (destination, len) = match vip {
        IpAddr::V4(_) => Ipv4Packet::parse(inner)
            .map(|packet| (IpAddr::V4(packet.destination()), packet.len()))
            .ok()?,
        IpAddr::V6(_) => Ipv6Packet::parse(inner)
            .map(|packet| (IpAddr::V6(packet.destination()), packet.len()))
            .ok()?,
    };
    (destination == vip).then_some(&inner[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_outer_header_for_the_vip_only() {
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4([192, 168, 77, 2], [192, 168, 77, 100], 64)
            .udp(1, 2)
            .write(&mut inner, b"x")
            .unwrap();
        let mut outer = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 77, 0, 1], [10, 77, 0, 11], 64)
            .write(&mut outer, etherparse::IpNumber::IPV4, &inner)
            .unwrap();
        let vip = IpAddr::from([192, 168, 77, 100]);
        let at = ipv4_header_len(&outer).unwrap();
        assert_eq!(inner_packet(&mut outer.clone()[at..], vip), Some(&inner[..]));
        assert_eq!(inner_packet(&mut outer[at..], IpAddr::from([1, 1, 1, 1])), None);
        assert_eq!(inner_packet(&mut [0x45, 0, 0], vip), None);
    }

    #[test]
    fn an_ipv6_inner_packet_is_taken_for_an_ipv6_vip() {
        let address = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap();
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv6(
            address("fd00:77::2").octets(),
            address("fd00:77::100").octets(),
            64,
        )
        .udp(1, 2)
        .write(&mut inner, b"x")
        .unwrap();
        let vip = IpAddr::V6(address("fd00:77::100"));
        // What an IPv6 raw socket reads: the payload, here with padding after it.
        let mut read = inner.clone();
        read.extend_from_slice(&[0; 7]);
        assert_eq!(inner_packet(&mut read, vip), Some(&inner[..]));
        assert_eq!(
            inner_packet(&mut inner, IpAddr::V6(address("fd00:77::101"))),
            None
        );
        assert_eq!(inner_packet(&mut [0x60; 10], vip), None);
    }
}
