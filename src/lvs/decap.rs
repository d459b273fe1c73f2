//! `lbd ipip-decap`: a real-server helper for tun mode on kernels without an ipip device (such
//! as this project's test machines). It receives IPIP packets on a raw socket, strips the
//! outer header and writes the inner packet into a TUN device, so the kernel sees it arrive
//! as it would on `tunl0`. The VIP must be on the real's `lo`, as for any LVS/TUN real.

use std::{io::Read, net::Ipv4Addr};

use crate::packet::Ipv4Packet;

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

/// Decapsulates IPIP packets for `vip` into TUN device `dev`, until killed.
pub fn run(vip: Ipv4Addr, dev: &str) -> Result<(), DecapError> {
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
    let socket = crate::sys::ipip_socket().map_err(|source| DecapError::Open {
        what: "a raw IPIP socket".to_owned(),
        source,
    })?;
    tracing::info!(%vip, dev, "ipip-decap: decapsulating IPIP packets for the VIP");
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok(len) = (&socket).read(&mut buf) else {
            continue;
        };
        let Some(inner) = inner_packet(&mut buf[..len], vip) else {
            continue;
        };
        let _ = device.send(inner);
    }
}

/// The inner packet of an IPIP packet, if it is addressed to `vip`.
fn inner_packet(outer: &mut [u8], vip: Ipv4Addr) -> Option<&[u8]> {
    let header_len = usize::from(outer.first()? & 0x0f) * 4;
    let inner = outer.get_mut(header_len..)?;
    let packet = Ipv4Packet::parse(inner).ok()?;
    if packet.destination() != vip {
        return None;
    }
    let len = packet.len();
    Some(&outer[header_len..header_len + len])
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
        let vip = Ipv4Addr::new(192, 168, 77, 100);
        assert_eq!(inner_packet(&mut outer.clone(), vip), Some(&inner[..]));
        assert_eq!(inner_packet(&mut outer, Ipv4Addr::new(1, 1, 1, 1)), None);
        assert_eq!(inner_packet(&mut [0x45, 0, 0], vip), None);
    }
}
