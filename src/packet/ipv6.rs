//! An IPv6 packet in a mutable buffer: its addresses, the transport found past its extension
//! headers, fragments, and rewrites of source or destination with the transport checksum
//! kept right (IPv6 has no header checksum; the TCP, UDP and ICMPv6 checksums cover a
//! pseudo-header with both addresses, so they follow every address change, RFC 1624 style).

use std::net::{Ipv6Addr, SocketAddrV6};

use super::{L4, PacketError, checksum};

/// The fixed header's length.
pub(crate) const HEADER_LEN: usize = 40;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DESTINATION_OPTIONS: u8 = 60;
const AUTHENTICATION: u8 = 51;
/// Extension headers walked at most; a packet with more is refused (RFC 8200 expects each
/// at most once, and a chain this long is an attack on the parser).
const MAX_EXTENSIONS: usize = 8;

/// A validated IPv6 packet: its payload length checked against the buffer and its extension
/// headers walked to the transport.
#[derive(Debug)]
pub struct Ipv6Packet<'a> {
    buf: &'a mut [u8],
    total_len: usize,
    /// Where the transport header starts.
    l4_at: usize,
    /// The transport's protocol number (the last Next Header).
    protocol: u8,
    /// The fragment header's offset (8-byte units) and M flag, if the packet is a fragment.
    fragment: Option<(u16, bool)>,
    /// The transport checksum is partial (offloaded): it covers the pseudo-header only.
    partial_checksum: bool,
}

impl<'a> Ipv6Packet<'a> {
    /// Validates `buf` as one IPv6 packet; bytes past its payload length are ignored.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, PacketError> {
        if buf.len() < HEADER_LEN {
            return Err(PacketError::Truncated("IPv6"));
        }
        if buf[0] >> 4 != 6 {
            return Err(PacketError::NotIpv6(buf[0] >> 4));
        }
        let payload_len = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        let total_len = HEADER_LEN + payload_len;
        if total_len > buf.len() {
            return Err(PacketError::TotalLength {
                declared: total_len,
                read: buf.len(),
            });
        }
        let (l4_at, protocol, fragment) = walk(&buf[..total_len])?;
        Ok(Self {
            buf,
            total_len,
            l4_at,
            protocol,
            fragment,
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

    /// The transport's protocol number, past the extension headers.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The source address.
    pub fn source(&self) -> Ipv6Addr {
        address_at(self.buf, 8)
    }

    /// The destination address.
    pub fn destination(&self) -> Ipv6Addr {
        address_at(self.buf, 24)
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buf[7]
    }

    /// The fragment offset (8-byte units) and whether more fragments follow, for a fragment.
    pub fn fragment(&self) -> Option<(u16, bool)> {
        self.fragment
    }

    /// The transport, read from the first fragment's header.
    pub fn l4(&self) -> Result<L4, PacketError> {
        if self.fragment.is_some_and(|(offset, _)| offset != 0) {
            return Ok(L4::Fragment);
        }
        let payload = &self.buf[self.l4_at..self.total_len];
        // ICMPv6 errors: destination unreachable, packet too big, time exceeded, parameter problem.
        super::transport(self.protocol, payload, ICMPV6, |kind| (1..=4).contains(&kind))
    }

    /// Sets the source address, and the source port when the packet has a TCP or UDP header.
    pub fn set_source(&mut self, to: SocketAddrV6) {
        self.rewrite(8, 0, to);
    }

    /// Sets the destination address, and the destination port when the packet has a TCP or
    /// UDP header.
    pub fn set_destination(&mut self, to: SocketAddrV6) {
        self.rewrite(24, 2, to);
    }

    /// Rewrites the address at `address_at` and the port at transport offset `port_at`,
    /// updating the transport checksum (first fragments; an ICMPv6 checksum too, for its
    /// pseudo-header).
    fn rewrite(&mut self, address_at: usize, port_at: usize, to: SocketAddrV6) {
        let old_address: [u8; 16] = self.buf[address_at..address_at + 16]
            .try_into()
            .unwrap_or_default();
        let new_address = to.ip().octets();
        self.buf[address_at..address_at + 16].copy_from_slice(&new_address);
        if self.fragment.is_some_and(|(offset, _)| offset != 0) {
            return;
        }
        let l4 = self.l4_at;
        let (checksum_at, has_ports) = match self.protocol {
            TCP if self.total_len >= l4 + 18 => (l4 + 16, true),
            UDP if self.total_len >= l4 + 8 => (l4 + 6, true),
            ICMPV6 if self.total_len >= l4 + 4 => (l4 + 2, false),
            _ => return,
        };
        let old_sum = u16::from_be_bytes([self.buf[checksum_at], self.buf[checksum_at + 1]]);
        if self.partial_checksum {
            let sum = checksum::adjust_partial(old_sum, &old_address, &new_address);
            self.buf[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
            if has_ports {
                let port = l4 + port_at;
                self.buf[port..port + 2].copy_from_slice(&to.port().to_be_bytes());
            }
            return;
        }
        let mut sum = checksum::adjust(old_sum, &old_address, &new_address);
        if has_ports {
            let port = l4 + port_at;
            let old_port = [self.buf[port], self.buf[port + 1]];
            let new_port = to.port().to_be_bytes();
            self.buf[port..port + 2].copy_from_slice(&new_port);
            sum = checksum::adjust(sum, &old_port, &new_port);
        }
        if self.protocol == UDP && sum == 0 {
            sum = 0xffff; // 0 would mean "no checksum", which IPv6 forbids
        }
        self.buf[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
    }
    /// Where the packet an ICMPv6 error quotes starts (past the 8-byte ICMPv6 header), its
    /// transport's offset and protocol within the quote; `None` if this is not an ICMPv6
    /// error or the quote is malformed (cut inside its headers, a later fragment).
    fn quote(&self) -> Option<Quote> {
        if !matches!(self.l4(), Ok(L4::Icmp(super::Icmp::Error { .. }))) {
            return None;
        }
        let at = self.l4_at + 8;
        let quoted = self.buf.get(at..self.total_len)?;
        if quoted.len() < HEADER_LEN || quoted[0] >> 4 != 6 {
            return None;
        }
        // The quote is as much of the packet as fitted: its payload length may exceed it.
        let (l4_at, protocol, fragment) = walk(quoted).ok()?;
        if fragment.is_some_and(|(offset, _)| offset != 0) || quoted.len() < l4_at + 4 {
            return None;
        }
        Some(Quote {
            at,
            l4_at: at + l4_at,
            protocol,
        })
    }

    /// The flow an ICMPv6 error is about: the quoted packet's transport protocol, source and
    /// destination (addresses and TCP/UDP ports).
    pub fn quoted_flow(&self) -> Option<(u8, SocketAddrV6, SocketAddrV6)> {
        let quote = self.quote()?;
        if !matches!(quote.protocol, TCP | UDP) {
            return None;
        }
        let port = |at: usize| u16::from_be_bytes([self.buf[at], self.buf[at + 1]]);
        Some((
            quote.protocol,
            SocketAddrV6::new(address_at(self.buf, quote.at + 8), port(quote.l4_at), 0, 0),
            SocketAddrV6::new(address_at(self.buf, quote.at + 24), port(quote.l4_at + 2), 0, 0),
        ))
    }

    /// Rewrites the flow an ICMPv6 error quotes: the quoted packet's source
    /// (`quoted_source`) or destination becomes `to`. The quoted transport checksum follows
    /// where it is quoted, and the ICMPv6 checksum follows every changed word. False if this
    /// is not an ICMPv6 error about a TCP or UDP flow.
    pub fn rewrite_quoted(&mut self, quoted_source: bool, to: SocketAddrV6) -> bool {
        let Some(quote) = self.quote().filter(|quote| matches!(quote.protocol, TCP | UDP)) else {
            return false;
        };
        let (address_at, port_at) = if quoted_source {
            (quote.at + 8, quote.l4_at)
        } else {
            (quote.at + 24, quote.l4_at + 2)
        };
        let checksum_at = quote.l4_at + if quote.protocol == TCP { 16 } else { 6 };
        let old_address: [u8; 16] = self.buf[address_at..address_at + 16]
            .try_into()
            .unwrap_or_default();
        let old_port = [self.buf[port_at], self.buf[port_at + 1]];
        let (new_address, new_port) = (to.ip().octets(), to.port().to_be_bytes());
        // Every changed field is at an even offset from the ICMPv6 header, so each moves the
        // ICMPv6 checksum by its own difference (RFC 1624).
        let icmp_at = self.l4_at + 2;
        let mut icmp_sum = u16::from_be_bytes([self.buf[icmp_at], self.buf[icmp_at + 1]]);
        icmp_sum = checksum::adjust(icmp_sum, &old_address, &new_address);
        icmp_sum = checksum::adjust(icmp_sum, &old_port, &new_port);
        // The quoted transport checksum, when the quote reaches it.
        if checksum_at + 2 <= self.total_len {
            let old_sum = [self.buf[checksum_at], self.buf[checksum_at + 1]];
            let quoted_sum = u16::from_be_bytes(old_sum);
            let mut sum = checksum::adjust(quoted_sum, &old_address, &new_address);
            sum = checksum::adjust(sum, &old_port, &new_port);
            if quote.protocol == UDP && sum == 0 {
                sum = 0xffff;
            }
            let new_sum = sum.to_be_bytes();
            icmp_sum = checksum::adjust(icmp_sum, &old_sum, &new_sum);
            self.buf[checksum_at..checksum_at + 2].copy_from_slice(&new_sum);
        }
        self.buf[address_at..address_at + 16].copy_from_slice(&new_address);
        self.buf[port_at..port_at + 2].copy_from_slice(&new_port);
        self.buf[icmp_at..icmp_at + 2].copy_from_slice(&icmp_sum.to_be_bytes());
        true
    }
}

/// Where a quoted packet lies in an ICMPv6 error (offsets into the whole packet).
#[derive(Debug, Clone, Copy)]
struct Quote {
    /// The quoted IPv6 header.
    at: usize,
    /// The quoted transport header.
    l4_at: usize,
    /// The quoted transport's protocol number.
    protocol: u8,
}

/// Writes into `out` the ICMPv6 "port unreachable" (destination unreachable, code 4) that
/// `from` sends back to the source of `original`, quoting as much of it as fits in the IPv6
/// minimum MTU (RFC 4443), as IPVS does when no real server can take a new flow.
pub fn port_unreachable(original: &Ipv6Packet<'_>, from: Ipv6Addr, out: &mut Vec<u8>) {
    const ROOM: usize = 1280 - HEADER_LEN - 8;
    let quoted = &original.bytes()[..original.len().min(ROOM)];
    let builder = etherparse::PacketBuilder::ipv6(from.octets(), original.source().octets(), 64).icmpv6(
        etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
    );
    // Writing into a Vec cannot fail for lack of room.
    let _ = builder.write(out, quoted);
}

fn address_at(buf: &[u8], at: usize) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&buf[at..at + 16]);
    Ipv6Addr::from(octets)
}

/// Where the extension headers end: the transport's offset and protocol, and the fragment
/// header's offset and M flag if there is one.
type Walked = (usize, u8, Option<(u16, bool)>);

/// Walks the extension headers of `packet` (exactly one packet).
fn walk(packet: &[u8]) -> Result<Walked, PacketError> {
    let mut next = packet[6];
    let mut at = HEADER_LEN;
    let mut fragment = None;
    for _ in 0..MAX_EXTENSIONS {
        match next {
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS | AUTHENTICATION => {
                let header = packet
                    .get(at..at + 2)
                    .ok_or(PacketError::Truncated("IPv6 extension"))?;
                let len = if next == AUTHENTICATION {
                    (usize::from(header[1]) + 2) * 4
                } else {
                    (usize::from(header[1]) + 1) * 8
                };
                if at + len > packet.len() {
                    return Err(PacketError::Truncated("IPv6 extension"));
                }
                next = header[0];
                at += len;
            }
            FRAGMENT => {
                let header = packet
                    .get(at..at + 8)
                    .ok_or(PacketError::Truncated("IPv6 fragment"))?;
                let field = u16::from_be_bytes([header[2], header[3]]);
                fragment = Some((field >> 3, field & 1 != 0));
                next = header[0];
                at += 8;
                if field >> 3 != 0 {
                    // A later fragment: what follows is not a header.
                    return Ok((at, next, fragment));
                }
            }
            _ => return Ok((at, next, fragment)),
        }
    }
    Err(PacketError::Extensions(MAX_EXTENSIONS))
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    use super::*;

    /// A TCP or UDP packet with `payload`, its checksums complete, optionally behind a
    /// hop-by-hop and a destination-options header.
    fn packet(
        tcp: bool,
        extensions: bool,
        source: [u8; 16],
        destination: [u8; 16],
        ports: (u16, u16),
        payload: &[u8],
    ) -> Vec<u8> {
        let builder = PacketBuilder::ipv6(source, destination, 64);
        let mut out = Vec::new();
        if tcp {
            builder
                .tcp(ports.0, ports.1, 7, 1000)
                .ack(1)
                .write(&mut out, payload)
                .unwrap();
        } else {
            builder.udp(ports.0, ports.1).write(&mut out, payload).unwrap();
        }
        if extensions {
            // Insert hop-by-hop (8 bytes) then destination options (8 bytes) before the transport.
            let transport = out[6];
            let mut with = out[..HEADER_LEN].to_vec();
            with[6] = HOP_BY_HOP;
            with.extend_from_slice(&[DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0]);
            with.extend_from_slice(&[transport, 0, 1, 4, 0, 0, 0, 0]);
            with.extend_from_slice(&out[HEADER_LEN..]);
            let payload_len = (with.len() - HEADER_LEN) as u16;
            with[4..6].copy_from_slice(&payload_len.to_be_bytes());
            return with;
        }
        out
    }

    /// The transport checksum computed from scratch over the pseudo-header and the segment.
    fn full_checksum(packet: &[u8], l4_at: usize, protocol: u8, checksum_at: usize) -> u16 {
        let mut copy = packet.to_vec();
        copy[l4_at + checksum_at..l4_at + checksum_at + 2].copy_from_slice(&[0, 0]);
        let segment = &copy[l4_at..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&packet[8..40]);
        pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        pseudo.extend_from_slice(segment);
        let sum = checksum::compute(&pseudo);
        if protocol == UDP && sum == 0 { 0xffff } else { sum }
    }

    #[test]
    fn a_packet_behind_extension_headers_is_read_and_rewritten() {
        let source = "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets();
        let vip = "2001:db8::100".parse::<Ipv6Addr>().unwrap().octets();
        let mut bytes = packet(true, true, source, vip, (40000, 80), b"hello");
        let mut parsed = Ipv6Packet::parse(&mut bytes).unwrap();
        assert_eq!(parsed.protocol(), TCP);
        assert!(matches!(
            parsed.l4(),
            Ok(L4::Tcp {
                source: 40000,
                destination: 80,
                ..
            })
        ));
        let real: SocketAddrV6 = "[2001:db8:1::11]:8080".parse().unwrap();
        parsed.set_destination(real);
        assert_eq!(parsed.destination(), *real.ip());
        let l4_at = parsed.l4_at;
        let stored = u16::from_be_bytes([bytes[l4_at + 16], bytes[l4_at + 17]]);
        assert_eq!(stored, full_checksum(&bytes, l4_at, TCP, 16));
        assert!(matches!(
            Ipv6Packet::parse(&mut bytes.clone()).unwrap().l4(),
            Ok(L4::Tcp {
                destination: 8080,
                ..
            })
        ));
    }

    #[test]
    fn fragments_and_malformed_packets_are_told_apart_without_panicking() {
        let source = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut first = packet(false, false, source, source, (1, 2), &[0; 16]);
        // Make it a first fragment (offset 0, more follow): insert a fragment header.
        let transport = first[6];
        let mut fragmented = first[..HEADER_LEN].to_vec();
        fragmented[6] = FRAGMENT;
        fragmented.extend_from_slice(&[transport, 0, 0, 1, 0, 0, 0, 7]);
        fragmented.extend_from_slice(&first[HEADER_LEN..]);
        let len = (fragmented.len() - HEADER_LEN) as u16;
        fragmented[4..6].copy_from_slice(&len.to_be_bytes());
        let parsed = Ipv6Packet::parse(&mut fragmented).unwrap();
        assert_eq!(parsed.fragment(), Some((0, true)));
        assert!(matches!(
            parsed.l4(),
            Ok(L4::Udp {
                source: 1,
                destination: 2
            })
        ));
        // A later fragment has no transport header.
        fragmented[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&(3u16 << 3).to_be_bytes());
        assert_eq!(Ipv6Packet::parse(&mut fragmented).unwrap().l4(), Ok(L4::Fragment));
        // A payload length past the buffer, a chain too long, a cut extension: errors.
        first[4..6].copy_from_slice(&2000u16.to_be_bytes());
        assert!(matches!(
            Ipv6Packet::parse(&mut first),
            Err(PacketError::TotalLength { .. })
        ));
        let mut chain = vec![0x60, 0, 0, 0, 0, 80, HOP_BY_HOP, 64];
        chain.extend_from_slice(&[0; 32]);
        for _ in 0..10 {
            chain.extend_from_slice(&[HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert_eq!(
            Ipv6Packet::parse(&mut chain).unwrap_err(),
            PacketError::Extensions(MAX_EXTENSIONS)
        );
        let mut cut = vec![0x60, 0, 0, 0, 0, 1, DESTINATION_OPTIONS, 64];
        cut.extend_from_slice(&[0; 33]);
        assert!(Ipv6Packet::parse(&mut cut).is_err());
        assert!(matches!(
            Ipv6Packet::parse(&mut [0x45; 60]),
            Err(PacketError::NotIpv6(4))
        ));
    }

    proptest! {
        #[test]
        fn incremental_checksums_match_a_full_recompute(
            tcp in any::<bool>(),
            extensions in any::<bool>(),
            source in any::<[u8; 16]>(),
            destination in any::<[u8; 16]>(),
            ports in any::<(u16, u16)>(),
            new in any::<([u8; 16], u16)>(),
            rewrite_source in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = packet(tcp, extensions, source, destination, ports, &payload);
            let to = SocketAddrV6::new(Ipv6Addr::from(new.0), new.1, 0, 0);
            let mut parsed = Ipv6Packet::parse(&mut bytes).unwrap();
            let l4_at = parsed.l4_at;
            if rewrite_source {
                parsed.set_source(to);
            } else {
                parsed.set_destination(to);
            }
            let (protocol, at) = if tcp { (TCP, 16) } else { (UDP, 6) };
            let stored = u16::from_be_bytes([bytes[l4_at + at], bytes[l4_at + at + 1]]);
            prop_assert_eq!(stored, full_checksum(&bytes, l4_at, protocol, at));
        }

        #[test]
        fn quoted_rewrites_keep_the_icmpv6_checksum_right(
            tcp in any::<bool>(),
            addresses in any::<([u8; 16], [u8; 16], [u8; 16], [u8; 16])>(),
            ports in any::<(u16, u16)>(),
            new in any::<([u8; 16], u16)>(),
            quoted_source in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..100),
            cut in 44usize..400,
        ) {
            let (outer_source, outer_destination, source, destination) = addresses;
            let quoted = packet(tcp, false, source, destination, ports, &payload);
            let quote = &quoted[..cut.min(quoted.len())];
            let mut error = Vec::new();
            PacketBuilder::ipv6(outer_source, outer_destination, 64)
                .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
                .write(&mut error, quote)
                .unwrap();
            let to = SocketAddrV6::new(Ipv6Addr::from(new.0), new.1, 0, 0);
            let mut parsed = Ipv6Packet::parse(&mut error).unwrap();
            let (protocol, quoted_from, quoted_to) = parsed.quoted_flow().unwrap();
            prop_assert_eq!(protocol, if tcp { TCP } else { UDP });
            prop_assert_eq!((quoted_from.port(), quoted_to.port()), ports);
            prop_assert!(parsed.rewrite_quoted(quoted_source, to));
            let flow = parsed.quoted_flow().unwrap();
            prop_assert_eq!(if quoted_source { flow.1 } else { flow.2 }, to);
            // The ICMPv6 checksum, recomputed from scratch, still holds.
            prop_assert_eq!(
                u16::from_be_bytes([error[42], error[43]]),
                full_checksum(&error, HEADER_LEN, ICMPV6, 2)
            );
            // So does the quoted transport checksum, when the whole packet was quoted.
            if quote.len() == quoted.len() {
                let at = if tcp { 16 } else { 6 };
                let inner = &error[48..];
                prop_assert_eq!(
                    u16::from_be_bytes([inner[HEADER_LEN + at], inner[HEADER_LEN + at + 1]]),
                    full_checksum(inner, HEADER_LEN, if tcp { TCP } else { UDP }, at)
                );
            }
        }

        #[test]
        fn parsing_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), first in 0x60u8..0x70) {
            if !bytes.is_empty() {
                bytes[0] = first;
            }
            if let Ok(mut parsed) = Ipv6Packet::parse(&mut bytes) {
                let _ = parsed.l4();
                parsed.set_destination("[::1]:1".parse().unwrap());
            }
        }
    }
}
