//! An IPv4 packet in a mutable buffer: its addresses, ports, TCP flags and fragment fields,
//! and rewrites of source or destination with every checksum kept right.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{PacketError, checksum};

/// IP protocol numbers handled.
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

/// The transport of a packet, as far as the data plane cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP, with ports (first fragment).
    Tcp {
        /// Source port.
        source: u16,
        /// Destination port.
        destination: u16,
        /// Flags.
        flags: TcpFlags,
    },
    /// UDP, with ports (first fragment).
    Udp {
        /// Source port.
        source: u16,
        /// Destination port.
        destination: u16,
    },
    /// An ICMP message.
    Icmp(Icmp),
    /// A non-first fragment: no transport header in this packet.
    Fragment,
    /// Another protocol.
    Other(u8),
}

/// The ICMP messages that concern a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmp {
    /// Destination unreachable (code 4: fragmentation needed), time exceeded, parameter
    /// problem: an error quoting the packet that caused it.
    Error {
        /// ICMP type.
        kind: u8,
        /// ICMP code.
        code: u8,
    },
    /// Anything else (echo and the like).
    Other {
        /// ICMP type.
        kind: u8,
    },
}

/// TCP flags that drive the connection state machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    /// SYN.
    pub syn: bool,
    /// ACK.
    pub ack: bool,
    /// FIN.
    pub fin: bool,
    /// RST.
    pub rst: bool,
}

/// A validated IPv4 packet (header and total length checked against the buffer).
#[derive(Debug)]
pub struct Ipv4Packet<'a> {
    buf: &'a mut [u8],
    header_len: usize,
    total_len: usize,
    /// The transport checksum is partial (offloaded): it covers the pseudo-header only.
    partial_checksum: bool,
}

impl<'a> Ipv4Packet<'a> {
    /// Validates `buf` as one IPv4 packet; bytes past its total length are ignored.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, PacketError> {
        let (header_len, total_len) = header_lengths(buf)?;
        if total_len < header_len || total_len > buf.len() {
            return Err(PacketError::TotalLength {
                declared: total_len,
                read: buf.len(),
            });
        }
        Ok(Self {
            buf,
            header_len,
            total_len,
            partial_checksum: false,
        })
    }

    /// Marks the transport checksum as partial (`CHECKSUM_PARTIAL`, from an offloading
    /// device): rewrites then update only its pseudo-header part.
    pub fn with_partial_checksum(mut self, partial: bool) -> Self {
        self.partial_checksum = partial;
        self
    }

    /// The packet's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.total_len]
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.total_len
    }

    /// Whether it is empty (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.total_len == 0
    }

    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        self.buf[9]
    }

    /// The source address.
    pub fn source(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[12], self.buf[13], self.buf[14], self.buf[15])
    }

    /// The destination address.
    pub fn destination(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.buf[16], self.buf[17], self.buf[18], self.buf[19])
    }

    /// The identification field (fragments of one datagram share it).
    pub fn identification(&self) -> u16 {
        u16::from_be_bytes([self.buf[4], self.buf[5]])
    }

    /// The fragment offset, in 8-byte units.
    pub fn fragment_offset(&self) -> u16 {
        u16::from_be_bytes([self.buf[6], self.buf[7]]) & 0x1fff
    }

    /// Whether more fragments follow.
    pub fn more_fragments(&self) -> bool {
        self.buf[6] & 0x20 != 0
    }

    /// Whether Don't Fragment is set.
    pub fn dont_fragment(&self) -> bool {
        self.buf[6] & 0x40 != 0
    }

    /// The payload after the IP header.
    fn payload(&self) -> &[u8] {
        &self.buf[self.header_len..self.total_len]
    }

    /// The transport, read from the first fragment's header.
    pub fn l4(&self) -> Result<L4, PacketError> {
        if self.fragment_offset() != 0 {
            return Ok(L4::Fragment);
        }
        super::transport(self.protocol(), self.payload(), ICMP, |kind| {
            matches!(kind, 3 | 11 | 12)
        })
    }

    /// The packet an ICMP error quotes (its header and first 8 payload bytes), for the flow it
    /// belongs to; `None` if this is not an ICMP error or the quote is malformed.
    pub fn quoted(&mut self) -> Option<Ipv4Packet<'_>> {
        if !matches!(self.l4(), Ok(L4::Icmp(Icmp::Error { .. }))) {
            return None;
        }
        let (start, end) = (self.header_len + 8, self.total_len);
        Ipv4Packet::parse_quoted(&mut self.buf[start..end]).ok()
    }

    /// Parses a quoted packet: only its header and 8 bytes are present, so its total length
    /// may exceed the buffer.
    fn parse_quoted(buf: &'a mut [u8]) -> Result<Self, PacketError> {
        let (header_len, _) = header_lengths(buf)?;
        let total_len = buf.len();
        if total_len < header_len + 8 {
            return Err(PacketError::Truncated("quoted packet"));
        }
        Ok(Self {
            buf,
            header_len,
            total_len,
            partial_checksum: false,
        })
    }

    /// Ports of a quoted TCP or UDP header (its first 4 bytes are always quoted).
    fn quoted_ports(&self) -> Option<(u16, u16)> {
        let l4 = &self.buf[self.header_len..];
        matches!(self.protocol(), TCP | UDP).then(|| {
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        })
    }

    /// Sets the source address, and the source port when the packet has a TCP or UDP header.
    pub fn set_source(&mut self, to: SocketAddrV4) {
        self.rewrite(12, 0, to);
    }

    /// Sets the destination address, and the destination port when the packet has a TCP or
    /// UDP header.
    pub fn set_destination(&mut self, to: SocketAddrV4) {
        self.rewrite(16, 2, to);
    }

    /// Rewrites the address at `address_at` and the port at L4 offset `port_at`, updating the
    /// IP header checksum and (first fragments) the TCP or UDP checksum.
    fn rewrite(&mut self, address_at: usize, port_at: usize, to: SocketAddrV4) {
        let old_address: [u8; 4] = self.buf[address_at..address_at + 4]
            .try_into()
            .unwrap_or_default();
        let new_address = to.ip().octets();
        let ip_checksum = u16::from_be_bytes([self.buf[10], self.buf[11]]);
        let ip_checksum = checksum::adjust(ip_checksum, &old_address, &new_address);
        self.buf[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        self.buf[address_at..address_at + 4].copy_from_slice(&new_address);

        if self.fragment_offset() != 0 {
            return;
        }
        let l4 = self.header_len;
        let checksum_at = match self.protocol() {
            TCP if self.total_len >= l4 + 18 => l4 + 16,
            UDP if self.total_len >= l4 + 8 => l4 + 6,
            _ => return,
        };
        let port = l4 + port_at;
        let old_port = [self.buf[port], self.buf[port + 1]];
        let new_port = to.port().to_be_bytes();
        self.buf[port..port + 2].copy_from_slice(&new_port);
        let old_sum = u16::from_be_bytes([self.buf[checksum_at], self.buf[checksum_at + 1]]);
        if self.partial_checksum {
            let sum = checksum::adjust_partial(old_sum, &old_address, &new_address);
            self.buf[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
            return;
        }
        if self.protocol() == UDP && old_sum == 0 {
            return; // no UDP checksum
        }
        let mut sum = checksum::adjust(old_sum, &old_address, &new_address);
        sum = checksum::adjust(sum, &old_port, &new_port);
        if self.protocol() == UDP && sum == 0 {
            sum = 0xffff; // 0 means "no checksum" for UDP
        }
        self.buf[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// Rewrites the flow an ICMP error quotes: the quoted packet's source (`quoted_source`) or
    /// destination becomes `to`. The ICMP checksum follows; the quoted headers' own checksums
    /// are updated where quoted.
    pub fn rewrite_quoted(&mut self, quoted_source: bool, to: SocketAddrV4) -> bool {
        let icmp_start = self.header_len;
        let Some(inner) = self.quoted() else {
            return false;
        };
        // Only the quoted header and its first 8 payload bytes change: at most 68 bytes, and an
        // even count (the header length is a multiple of 4).
        let span = inner.header_len + 8;
        let mut before = [0u8; 68];
        before[..span].copy_from_slice(&inner.buf[..span]);
        let (address_at, port_at) = if quoted_source { (12, 0) } else { (16, 2) };
        // Update the quoted IP header checksum, address and (if quoted) L4 checksum.
        let old_address: [u8; 4] = inner.buf[address_at..address_at + 4]
            .try_into()
            .unwrap_or_default();
        let ip_checksum = u16::from_be_bytes([inner.buf[10], inner.buf[11]]);
        let ip_checksum = checksum::adjust(ip_checksum, &old_address, &to.ip().octets());
        inner.buf[10..12].copy_from_slice(&ip_checksum.to_be_bytes());
        inner.buf[address_at..address_at + 4].copy_from_slice(&to.ip().octets());
        if inner.quoted_ports().is_some() {
            let port = inner.header_len + port_at;
            let old_port = [inner.buf[port], inner.buf[port + 1]];
            inner.buf[port..port + 2].copy_from_slice(&to.port().to_be_bytes());
            // A quoted UDP checksum (bytes 6..8) is within the 8 quoted bytes; TCP's is not.
            if inner.protocol() == UDP {
                let at = inner.header_len + 6;
                let old_sum = u16::from_be_bytes([inner.buf[at], inner.buf[at + 1]]);
                if old_sum != 0 {
                    let sum = checksum::adjust(old_sum, &old_address, &to.ip().octets());
                    let sum = checksum::adjust(sum, &old_port, &to.port().to_be_bytes());
                    inner.buf[at..at + 2].copy_from_slice(&sum.to_be_bytes());
                }
            }
        }
        let mut after = [0u8; 68];
        after[..span].copy_from_slice(&inner.buf[..span]);
        // The ICMP checksum covers the quote (at offset 8 of the message, so 16-bit aligned):
        // adjust it by every word that changed.
        let icmp_sum = u16::from_be_bytes([self.buf[icmp_start + 2], self.buf[icmp_start + 3]]);
        let icmp_sum = checksum::adjust(icmp_sum, &before[..span], &after[..span]);
        self.buf[icmp_start + 2..icmp_start + 4].copy_from_slice(&icmp_sum.to_be_bytes());
        true
    }

    /// The ports of the flow an ICMP error quotes: (quoted source, quoted destination) with
    /// their addresses.
    pub fn quoted_flow(&mut self) -> Option<(u8, SocketAddrV4, SocketAddrV4)> {
        let inner = self.quoted()?;
        let (source_port, destination_port) = inner.quoted_ports()?;
        Some((
            inner.protocol(),
            SocketAddrV4::new(inner.source(), source_port),
            SocketAddrV4::new(inner.destination(), destination_port),
        ))
    }
}

/// Writes into `out` the ICMP "port unreachable" that `from` sends back to the source of
/// `original` (quoting its IP header and first 8 payload bytes, as RFC 792 asks), as IPVS
/// does when no real server can take a new flow, appended to `out` (reusing it avoids an
/// allocation per packet).
pub fn port_unreachable(original: &Ipv4Packet<'_>, from: Ipv4Addr, out: &mut Vec<u8>) {
    let quoted = &original.bytes()[..(original.header_len + 8).min(original.len())];
    let builder = etherparse::PacketBuilder::ipv4(from.octets(), original.source().octets(), 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
    );
    // Writing into a Vec cannot fail for lack of room.
    let _ = builder.write(out, quoted);
}

/// Validates an IPv4 header at the start of `buf`: (header length, declared total length).
fn header_lengths(buf: &[u8]) -> Result<(usize, usize), PacketError> {
    let version = buf.first().map_or(0, |byte| byte >> 4);
    if version != 4 {
        return Err(PacketError::NotIpv4(version));
    }
    let header = etherparse::Ipv4HeaderSlice::from_slice(buf).map_err(PacketError::Header)?;
    Ok((header.slice().len(), usize::from(header.total_len())))
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    use super::*;

    fn tcp(source: SocketAddrV4, destination: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4(source.ip().octets(), destination.ip().octets(), 64)
            .tcp(source.port(), destination.port(), 1000, 65535)
            .syn();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    fn udp(source: SocketAddrV4, destination: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4(source.ip().octets(), destination.ip().octets(), 64)
            .udp(source.port(), destination.port());
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    /// Whether every checksum of the packet is right, by a full recompute.
    fn checksums_valid(bytes: &[u8]) -> bool {
        let packet = etherparse::SlicedPacket::from_ip(bytes).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &packet.net else {
            return false;
        };
        let header = ip.header();
        if checksum::compute(header.slice()) != 0 {
            return false;
        }
        let (source, destination) = (header.source(), header.destination());
        let l4 = &bytes[header.slice().len()..usize::from(header.total_len())];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&source);
        pseudo.extend_from_slice(&destination);
        pseudo.extend_from_slice(&[0, header.protocol().0]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        checksum::compute(&pseudo) == 0
    }

    fn address(ip: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(ip), port)
    }

    #[test]
    fn reads_ports_flags_and_fragments() {
        let mut bytes = tcp(
            address([192, 168, 77, 2], 40000),
            address([192, 168, 77, 100], 80),
            b"x",
        );
        let packet = Ipv4Packet::parse(&mut bytes).unwrap();
        assert_eq!(
            packet.l4().unwrap(),
            L4::Tcp {
                source: 40000,
                destination: 80,
                flags: TcpFlags {
                    syn: true,
                    ..TcpFlags::default()
                }
            }
        );
        assert_eq!(packet.fragment_offset(), 0);
        assert!(!packet.more_fragments());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for mut bytes in [vec![], vec![0x45], vec![0x60; 40], vec![0x45; 19], vec![0x4f; 60]] {
            let _ = Ipv4Packet::parse(&mut bytes).map(|mut packet| {
                let _ = packet.l4();
                let _ = packet.quoted_flow();
            });
        }
        let mut short = tcp(address([1, 2, 3, 4], 1), address([5, 6, 7, 8], 2), b"");
        short.truncate(30);
        assert!(
            Ipv4Packet::parse(&mut short).is_err(),
            "total length past the buffer"
        );
    }

    proptest! {
        #[test]
        /// DNAT and SNAT keep the IP, TCP and UDP checksums right.
        fn rewrites_keep_every_checksum_valid(
            source in any::<([u8; 4], u16)>(),
            destination in any::<([u8; 4], u16)>(),
            to in any::<([u8; 4], u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            is_tcp in any::<bool>(),
            rewrite_source in any::<bool>(),
        ) {
            let (s, d, t) = (address(source.0, source.1), address(destination.0, destination.1), address(to.0, to.1));
            let mut bytes = if is_tcp { tcp(s, d, &payload) } else { udp(s, d, &payload) };
            let mut packet = Ipv4Packet::parse(&mut bytes).unwrap();
            if rewrite_source { packet.set_source(t) } else { packet.set_destination(t) }
            prop_assert!(checksums_valid(packet.bytes()));
            let l4 = packet.l4().unwrap();
            let (got_source, got_destination) = match l4 {
                L4::Tcp { source, destination, .. } | L4::Udp { source, destination } => (source, destination),
                other => panic!("{other:?}"),
            };
            if rewrite_source {
                prop_assert_eq!((packet.source(), got_source), (*t.ip(), t.port()));
            } else {
                prop_assert_eq!((packet.destination(), got_destination), (*t.ip(), t.port()));
            }
        }
    }

    #[test]
    fn a_refused_flow_gets_a_port_unreachable() {
        let mut bytes = udp(
            address([192, 168, 77, 2], 5000),
            address([192, 168, 77, 100], 53),
            b"query",
        );
        let packet = Ipv4Packet::parse(&mut bytes).unwrap();
        let mut out = Vec::new();
        port_unreachable(&packet, Ipv4Addr::new(192, 168, 77, 100), &mut out);
        let mut reply = out.clone();
        let mut reply = Ipv4Packet::parse(&mut reply).unwrap();
        assert_eq!(reply.destination(), Ipv4Addr::new(192, 168, 77, 2));
        assert_eq!(reply.l4().unwrap(), L4::Icmp(Icmp::Error { kind: 3, code: 3 }));
        assert_eq!(
            reply.quoted_flow(),
            Some((
                17,
                address([192, 168, 77, 2], 5000),
                address([192, 168, 77, 100], 53)
            ))
        );
        assert_eq!(checksum::compute(&out[20..]), 0, "ICMP checksum");
    }

    #[test]
    fn icmp_errors_are_translated_inside_and_out() {
        // The real 10.77.0.11:80 answers "port unreachable" about a UDP datagram that the
        // director sent it for client 192.168.77.2:5000 (VIP 192.168.77.100:53).
        let client = address([192, 168, 77, 2], 5000);
        let real = address([10, 77, 0, 11], 80);
        let vip = address([192, 168, 77, 100], 53);
        let quoted = udp(client, real, b"query");
        let mut icmp = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..28]);
        let sum = checksum::compute(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut bytes = Vec::new();
        PacketBuilder::ipv4(real.ip().octets(), client.ip().octets(), 64)
            .write(&mut bytes, etherparse::IpNumber::ICMP, &icmp)
            .unwrap();
        let mut packet = Ipv4Packet::parse(&mut bytes).unwrap();
        assert_eq!(packet.quoted_flow(), Some((17, client, real)));
        assert!(packet.rewrite_quoted(false, vip));
        packet.set_source(SocketAddrV4::new(*vip.ip(), 0));
        assert_eq!(packet.quoted_flow(), Some((17, client, vip)));
        assert_eq!(packet.source(), *vip.ip());
        let bytes = packet.bytes().to_vec();
        assert_eq!(checksum::compute(&bytes[..20]), 0, "outer IP checksum");
        assert_eq!(checksum::compute(&bytes[20..]), 0, "ICMP checksum");
        assert_eq!(checksum::compute(&bytes[28..48]), 0, "quoted IP checksum");
    }
}
