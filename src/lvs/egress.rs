//! Where dr and tun packets leave the director: an `AF_PACKET` socket on the server-side
//! interface (dr frames, built in the room in front of the packet), and raw IP-in-IP sockets
//! (the kernel builds the outer header; super-packets are cut into wire packets first). A tun
//! real may be of the other family than its VIP: IPv4 in IPv6 and IPv6 in IPv4 are carried
//! as IPVS's tunnel carries them.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, OnceLock},
};

use super::{
    buffer::{ETHERNET_LEN, PACKET_AT},
    error::PlaneError,
    neighbours::Neighbours,
};
use crate::{
    config::{Config, ForwardMethod},
    packet::{Offload, VNET_HEADER_LEN},
};

/// Wire packets a super-packet may stand for when it must be cut up here (tun egress).
const SEGMENTS_MAX: usize = 64;
/// The largest segment cut here.
const SEGMENT_MAX: usize = 9_216;

/// Where dr and tun packets leave: an `AF_PACKET` socket on the server-side interface, and a
/// raw tunnel socket per outer and inner family (the kernel builds the outer header).
pub(super) struct Egress {
    /// The server-side interface, where dr frames leave.
    server: Option<String>,
    /// The socket that sends dr frames there, and the interface's MAC: opened at start when
    /// a dr service is configured then, on first use when a reload adds one.
    frames: OnceLock<Option<(socket2::Socket, super::neighbours::Mac)>>,
    neighbours: Arc<Neighbours>,
    /// Indexed by [`tunnel_index`]: opened at start for the tun services configured then,
    /// on first use for those a reload adds.
    tunnels: [OnceLock<Option<socket2::Socket>>; 4],
}

/// The tunnel socket for an outer header of the real's family around a packet of
/// `inner_ipv6`'s.
fn tunnel_index(real: IpAddr, inner_ipv6: bool) -> usize {
    usize::from(real.is_ipv6()) * 2 + usize::from(inner_ipv6)
}

/// An `AF_PACKET` socket on `interface` and the interface's MAC.
fn frame_socket(interface: &str) -> io::Result<(socket2::Socket, super::neighbours::Mac)> {
    let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{what}"));
    let index: u32 = read("ifindex")?.trim().parse().unwrap_or(0);
    let mac = read("address")
        .ok()
        .and_then(|text| crate::packet::arp::parse_mac(&text))
        .unwrap_or_default();
    Ok((crate::sys::packet_socket(index)?, mac))
}

/// Opens the tunnel socket for `index`, logging a failure (once per socket and worker).
fn open_tunnel(index: usize) -> Option<socket2::Socket> {
    let (outer_ipv6, inner_ipv6) = (index >= 2, index % 2 == 1);
    match crate::sys::tunnel_socket(outer_ipv6, inner_ipv6) {
        Ok(socket) => Some(socket),
        Err(error) => {
            tracing::error!(
                %error,
                outer = if outer_ipv6 { "IPv6" } else { "IPv4" },
                inner = if inner_ipv6 { "IPv6" } else { "IPv4" },
                "cannot open a raw tunnel socket (it needs CAP_NET_RAW); tun packets of this kind are dropped"
            );
            None
        }
    }
}

impl Egress {
    pub(super) fn open(config: &Config, neighbours: Arc<Neighbours>) -> Result<Self, PlaneError> {
        let routes: Vec<(ForwardMethod, IpAddr, bool)> = config
            .services
            .iter()
            .filter(|service| service.on_packet_plane())
            .flat_map(|service| {
                service.reals.iter().map(|real| {
                    (
                        real.forward_in(service),
                        real.address.ip(),
                        service.listen.is_ipv6(),
                    )
                })
            })
            .collect();
        let server = config.dataplane.as_ref().and_then(|d| d.server_interface.clone());
        let frames = OnceLock::new();
        if let Some(interface) = server.as_deref()
            && routes.iter().any(|(method, ..)| *method == ForwardMethod::Dr)
        {
            let _ = frames.set(Some(frame_socket(interface).map_err(|source| {
                PlaneError::Interface {
                    name: interface.to_owned(),
                    source,
                }
            })?));
        }
        let tunnels: [OnceLock<Option<socket2::Socket>>; 4] = Default::default();
        for (_, real, inner_ipv6) in routes.iter().filter(|(method, ..)| *method == ForwardMethod::Tun) {
            let index = tunnel_index(*real, *inner_ipv6);
            if tunnels[index].get().is_none() {
                let (outer_ipv6, inner_ipv6) = (index >= 2, index % 2 == 1);
                let socket = crate::sys::tunnel_socket(outer_ipv6, inner_ipv6).map_err(|source| {
                    PlaneError::Interface {
                        name: "raw tunnel socket".to_owned(),
                        source,
                    }
                })?;
                let _ = tunnels[index].set(Some(socket));
            }
        }
        Ok(Self {
            server,
            frames,
            neighbours,
            tunnels,
        })
    }

    /// Sends the packet at [`PACKET_AT`] of `buf` in an Ethernet frame to `real`'s MAC, built
    /// in the room in front of it; false if the MAC is not known yet or sending failed.
    pub(super) fn route(&self, buf: &mut [u8], offload: Offload, real: IpAddr) -> bool {
        let frames = self.frames.get_or_init(|| {
            let interface = self.server.as_deref()?;
            frame_socket(interface)
                .inspect_err(|error| {
                    tracing::error!(interface, %error, "cannot send dr frames on the server-side interface; dr packets are dropped");
                })
                .ok()
        });
        let (Some((socket, source)), Some(destination)) = (frames, self.neighbours.mac(real)) else {
            return false;
        };
        let Some((front, packet)) = buf.split_at_mut_checked(PACKET_AT) else {
            return false;
        };
        let header = offload.with_header_len(packet).shifted(ETHERNET_LEN as u16);
        let (vnet, ethernet) = front.split_at_mut(VNET_HEADER_LEN);
        let Ok(vnet) = <&mut [u8; VNET_HEADER_LEN]>::try_from(vnet) else {
            return false;
        };
        header.encode(vnet);
        ethernet[..6].copy_from_slice(&destination);
        ethernet[6..12].copy_from_slice(source);
        let ethertype: [u8; 2] = if packet.first().is_some_and(|byte| byte >> 4 == 6) {
            [0x86, 0xdd]
        } else {
            [0x08, 0x00]
        };
        ethernet[12..14].copy_from_slice(&ethertype);
        socket.send(buf).is_ok()
    }

    /// Sends `packet` inside IP-in-IP to `real` (IPIP, IPv6 in IPv6, or one family in the
    /// other). The raw socket takes whole wire packets only: a partial checksum is finished
    /// here, and a super-packet is cut into its wire packets.
    pub(super) fn tunnel(
        &self,
        packet: &mut [u8],
        offload: Offload,
        real: IpAddr,
        cut: &mut Segments,
    ) -> bool {
        let inner_ipv6 = packet.first().is_some_and(|byte| byte >> 4 == 6);
        let index = tunnel_index(real, inner_ipv6);
        let Some(socket) = self.tunnels[index].get_or_init(|| open_tunnel(index)) else {
            return false;
        };
        let to = socket2::SockAddr::from(SocketAddr::new(real, 0));
        if !offload.is_segmented() {
            return offload.complete_checksum(packet) && socket.send_to(packet, &to).is_ok();
        }
        let Some(wire) = cut.split(packet, offload) else {
            return false;
        };
        wire.iter().all(|segment| socket.send_to(segment, &to).is_ok())
    }
}

/// Buffers for the wire packets of a super-packet cut up for tun egress, allocated on first
/// use (only tun services need them).
#[derive(Default)]
pub(super) struct Segments(Option<(Vec<Vec<u8>>, Vec<usize>)>);

impl Segments {
    /// Cuts the super-packet `packet` (IPv4 or IPv6, TCP or UDP) into its wire packets,
    /// checksums complete; `None` if it cannot be cut (malformed, or more wire packets than
    /// are buffered).
    fn split(&mut self, packet: &mut [u8], offload: Offload) -> Option<Vec<&[u8]>> {
        let header = offload.with_header_len(packet);
        let split = tun_rs::VirtioNetHdr {
            flags: header.flags,
            gso_type: header.gso_type,
            hdr_len: header.hdr_len,
            gso_size: header.gso_size,
            csum_start: header.csum_start,
            csum_offset: header.csum_offset,
        };
        let ipv6 = packet.first().is_some_and(|byte| byte >> 4 == 6);
        let (buffers, sizes) = self
            .0
            .get_or_insert_with(|| (vec![vec![0; SEGMENT_MAX]; SEGMENTS_MAX], vec![0; SEGMENTS_MAX]));
        let count = tun_rs::gso_split(packet, split, buffers, sizes, 0, ipv6).ok()?;
        Some(
            buffers
                .iter()
                .zip(sizes.iter())
                .take(count)
                .map(|(segment, &len)| &segment[..len])
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;
    use crate::packet::offload::{GSO_TCPV4, GSO_TCPV6};

    /// A TCP super-packet of `len` payload bytes in `mss`-byte segments, its checksum
    /// partial (the pseudo-header sum), as an offloading TUN device hands it over.
    fn super_packet(ipv6: bool, len: usize, mss: u16) -> (Vec<u8>, Offload) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let builder = if ipv6 {
            PacketBuilder::ipv6(
                "fd00:77::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                "fd00:77::100".parse::<std::net::Ipv6Addr>().unwrap().octets(),
                64,
            )
        } else {
            PacketBuilder::ipv4([192, 168, 77, 2], [192, 168, 77, 100], 64)
        };
        let mut packet = Vec::new();
        builder
            .tcp(40000, 80, 1, 1000)
            .ack(1)
            .write(&mut packet, &payload)
            .unwrap();
        let ip_len = if ipv6 { 40 } else { 20 };
        // The partial checksum: the pseudo-header's sum, not complemented.
        let (addresses, length) = if ipv6 {
            (8..40, packet.len() - 40)
        } else {
            (12..20, packet.len() - 20)
        };
        let pseudo = crate::packet::checksum::sum(&packet[addresses]) + 6 + length as u32;
        let partial = crate::packet::checksum::fold(pseudo);
        packet[ip_len + 16..ip_len + 18].copy_from_slice(&partial.to_be_bytes());
        let offload = Offload {
            flags: 1,
            gso_type: if ipv6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (ip_len + 20) as u16,
            gso_size: mss,
            csum_start: ip_len as u16,
            csum_offset: 16,
        };
        (packet, offload)
    }

    #[test]
    fn super_packets_of_either_family_are_cut_into_valid_wire_packets() {
        for ipv6 in [false, true] {
            let (mut packet, offload) = super_packet(ipv6, 5000, 1400);
            let mut segments = Segments::default();
            let wire = segments.split(&mut packet, offload).expect("cut");
            assert_eq!(wire.len(), 4, "ipv6 {ipv6}: 5000 bytes in 1400-byte segments");
            let mut carried = 0;
            for segment in wire {
                let parsed = SlicedPacket::from_ip(segment).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = parsed.transport else {
                    panic!("not TCP");
                };
                let valid = match parsed.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) => {
                        tcp.calc_checksum_ipv4(ip.header().source(), ip.header().destination())
                            .unwrap()
                            == tcp.checksum()
                    }
                    Some(etherparse::NetSlice::Ipv6(ip)) => {
                        tcp.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
                            .unwrap()
                            == tcp.checksum()
                    }
                    _ => false,
                };
                assert!(valid, "ipv6 {ipv6}: each wire packet's checksum is complete");
                carried += tcp.payload().len();
            }
            assert_eq!(carried, 5000);
        }
    }
}
