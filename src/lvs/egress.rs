//! Where dr and tun packets leave the director: an `AF_PACKET` socket on the server-side
//! interface (dr frames, built in the room in front of the packet), and a raw IPIP socket (the
//! kernel builds the outer header; super-packets are cut into wire packets first).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
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
/// raw IPIP socket (the kernel builds the outer header).
pub(super) struct Egress {
    frames: Option<(socket2::Socket, super::neighbours::Mac)>,
    neighbours: Arc<Neighbours>,
    ipip: Option<socket2::Socket>,
}

impl Egress {
    pub(super) fn open(config: &Config, neighbours: Arc<Neighbours>) -> Result<Self, PlaneError> {
        let methods: Vec<ForwardMethod> = config
            .services
            .iter()
            .filter(|service| service.on_packet_plane())
            .flat_map(|service| {
                std::iter::once(service.forward)
                    .chain(service.reals.iter().map(|real| real.forward_in(service)))
            })
            .collect();
        let frames = match config.dataplane.as_ref().and_then(|d| d.server_interface.clone()) {
            Some(interface) if methods.contains(&ForwardMethod::Dr) => {
                let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{what}"));
                let failed = |source: io::Error| PlaneError::Interface {
                    name: interface.clone(),
                    source,
                };
                let index: u32 = read("ifindex").map_err(failed)?.trim().parse().unwrap_or(0);
                let mac = read("address")
                    .ok()
                    .and_then(|text| crate::packet::arp::parse_mac(&text))
                    .unwrap_or_default();
                let socket = crate::sys::packet_socket(index).map_err(failed)?;
                Some((socket, mac))
            }
            _ => None,
        };
        let ipip = if methods.contains(&ForwardMethod::Tun) {
            let socket = crate::sys::ipip_socket().map_err(|source| PlaneError::Interface {
                name: "raw IPIP socket".to_owned(),
                source,
            })?;
            Some(socket)
        } else {
            None
        };
        Ok(Self {
            frames,
            neighbours,
            ipip,
        })
    }

    /// Sends the packet at [`PACKET_AT`] of `buf` in an Ethernet frame to `real`'s MAC, built
    /// in the room in front of it; false if the MAC is not known yet or sending failed.
    pub(super) fn route(&self, buf: &mut [u8], offload: Offload, real: IpAddr) -> bool {
        let (Some((socket, source)), Some(destination)) = (&self.frames, self.neighbours.mac(real)) else {
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
        ethernet[12..14].copy_from_slice(&[0x08, 0x00]);
        socket.send(buf).is_ok()
    }

    /// Sends `packet` inside IPIP to `real`. The raw socket takes whole wire packets only: a
    /// partial checksum is finished here, and a super-packet is cut into its wire packets.
    pub(super) fn tunnel(
        &self,
        packet: &mut [u8],
        offload: Offload,
        real: IpAddr,
        cut: &mut Segments,
    ) -> bool {
        let Some(socket) = &self.ipip else {
            return false;
        };
        let to = socket2::SockAddr::from(SocketAddr::new(real, 0));
        if !offload.is_segmented() {
            return offload.complete_checksum(packet) && socket.send_to(packet, &to).is_ok();
        }
        let header = offload.with_header_len(packet);
        let split = tun_rs::VirtioNetHdr {
            flags: header.flags,
            gso_type: header.gso_type,
            hdr_len: header.hdr_len,
            gso_size: header.gso_size,
            csum_start: header.csum_start,
            csum_offset: header.csum_offset,
        };
        let cut = cut.buffers();
        let Ok(count) = tun_rs::gso_split(packet, split, &mut cut.0, &mut cut.1, 0, false) else {
            return false;
        };
        cut.0
            .iter()
            .zip(cut.1.iter())
            .take(count)
            .all(|(segment, &len)| socket.send_to(&segment[..len], &to).is_ok())
    }
}

/// Buffers for the wire packets of a super-packet cut up for tun egress, allocated on first
/// use (only tun services need them).
#[derive(Default)]
pub(super) struct Segments(Option<(Vec<Vec<u8>>, Vec<usize>)>);

impl Segments {
    fn buffers(&mut self) -> &mut (Vec<Vec<u8>>, Vec<usize>) {
        self.0
            .get_or_insert_with(|| (vec![vec![0; SEGMENT_MAX]; SEGMENTS_MAX], vec![0; SEGMENTS_MAX]))
    }
}
