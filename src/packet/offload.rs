//! The `virtio_net_hdr` that precedes every packet on a TUN device opened with
//! `IFF_VNET_HDR` (and on an `AF_PACKET` socket with `PACKET_VNET_HDR`). It lets the kernel
//! hand over, and take back, one TCP or UDP "super-packet" of up to 64 KiB that stands for
//! many wire packets (GSO), with its transport checksum left for the last device to finish
//! (`CHECKSUM_PARTIAL`). A load balancer rewrites the headers of the super-packet once instead
//! of once per wire packet: that is where user-space throughput comes from.
//!
//! Layout (legacy header, host byte order, as the TUN device uses without `TUNSETVNETLE`):
//! `flags u8, gso_type u8, hdr_len u16, gso_size u16, csum_start u16, csum_offset u16`.

/// Bytes of the header.
pub const VNET_HEADER_LEN: usize = 10;

/// `flags`: the transport checksum is partial (it holds the pseudo-header sum only).
const F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: not a super-packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (either IP version).
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: ECN was seen (TCP).
const GSO_ECN: u8 = 0x80;

/// A decoded `virtio_net_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    /// `VIRTIO_NET_HDR_F_*` bits.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, with the ECN bit.
    pub gso_type: u8,
    /// Length of the headers (IP + transport) of each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where the checksummed data starts (the transport header), from the IP header.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl Offload {
    /// A plain packet: one wire packet, checksums complete.
    pub const PLAIN: Self = Self {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header at the start of `bytes`; `None` if there are fewer than
    /// [`VNET_HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let header: &[u8; VNET_HEADER_LEN] = bytes.get(..VNET_HEADER_LEN)?.try_into().ok()?;
        let word = |at: usize| u16::from_ne_bytes([header[at], header[at + 1]]);
        Some(Self {
            flags: header[0],
            gso_type: header[1],
            hdr_len: word(2),
            gso_size: word(4),
            csum_start: word(6),
            csum_offset: word(8),
        })
    }

    /// Writes the header into the first [`VNET_HEADER_LEN`] bytes of `out` (which must hold
    /// them).
    pub fn encode(&self, out: &mut [u8; VNET_HEADER_LEN]) {
        out[0] = self.flags;
        out[1] = self.gso_type;
        out[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        out[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        out[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        out[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// Whether the transport checksum is partial: it holds the pseudo-header sum, and the
    /// device that sends the packet finishes it.
    pub fn checksum_partial(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// Finishes a partial transport checksum in `packet` (the IP packet this header came
    /// with), as the sending device would; true when there was nothing to finish. False if the
    /// checksum field lies outside the packet.
    pub fn complete_checksum(&self, packet: &mut [u8]) -> bool {
        !self.checksum_partial()
            || super::checksum::complete_partial(
                packet,
                usize::from(self.csum_start),
                usize::from(self.csum_offset),
            )
    }

    /// Whether this is a super-packet that stands for several wire packets.
    pub fn is_segmented(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    /// The wire packets a packet of `len` bytes (IP header included) stands for.
    pub fn segments(&self, len: usize) -> u64 {
        if !self.is_segmented() || self.gso_size == 0 {
            return 1;
        }
        let payload = len.saturating_sub(usize::from(self.hdr_len));
        payload.div_ceil(usize::from(self.gso_size)).max(1) as u64
    }

    /// The same header for the same packet moved `by` bytes further from the start of what is
    /// sent (an Ethernet header in front: 14).
    pub fn shifted(&self, by: u16) -> Self {
        if !self.checksum_partial() && !self.is_segmented() {
            return *self;
        }
        Self {
            hdr_len: self.hdr_len.saturating_add(by),
            csum_start: self.csum_start.saturating_add(by),
            ..*self
        }
    }

    /// This header with `hdr_len` set from the packet itself (IP header + TCP header, or +8
    /// for UDP): on the forwarding path the kernel may report the whole first segment there,
    /// which it then refuses to take back.
    pub fn with_header_len(&self, packet: &[u8]) -> Self {
        if !self.is_segmented() {
            return *self;
        }
        let start = usize::from(self.csum_start);
        let transport = match self.gso_type & !GSO_ECN {
            GSO_UDP_L4 => 8,
            _ => packet
                .get(start + 12)
                .map_or(20, |offset| usize::from(offset >> 4) * 4),
        };
        Self {
            hdr_len: u16::try_from(start + transport).unwrap_or(self.hdr_len),
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_reads_back_as_written() {
        let header = Offload {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut bytes = [0u8; VNET_HEADER_LEN];
        header.encode(&mut bytes);
        assert_eq!(Offload::decode(&bytes), Some(header));
        assert_eq!(Offload::decode(&bytes[..9]), None);
        assert!(header.checksum_partial() && header.is_segmented());
        // 52 bytes of headers, 10 × 1448 bytes of payload and a 100-byte tail.
        assert_eq!(header.segments(52 + 10 * 1448 + 100), 11);
        assert_eq!(Offload::PLAIN.segments(1500), 1);
        let framed = header.shifted(14);
        assert_eq!((framed.csum_start, framed.hdr_len), (34, 66));
        assert_eq!(Offload::PLAIN.shifted(14), Offload::PLAIN);
    }

    #[test]
    fn header_length_comes_from_the_packet() {
        let mut packet = vec![0u8; 100];
        packet[20 + 12] = 8 << 4; // TCP data offset: 32 bytes
        let reported = Offload {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 1500,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        assert_eq!(reported.with_header_len(&packet).hdr_len, 52);
        let udp = Offload {
            gso_type: GSO_UDP_L4,
            csum_offset: 6,
            ..reported
        };
        assert_eq!(udp.with_header_len(&packet).hdr_len, 28);
    }
}
