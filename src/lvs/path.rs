//! One packet read from the TUN device, forwarded as its flow's real says:
//! - **nat**: the destination is rewritten to the real (port mapping allowed) and the packet
//!   goes back into the TUN for the kernel to route; the real's reply comes back with the VIP
//!   as its source; ICMP errors about a flow are translated both ways, the packet they quote
//!   included.
//! - **dr**: the packet is left as it is, to be sent in an Ethernet frame to the real's MAC.
//! - **tun**: the packet is left as it is, to be wrapped in IPIP to the real.
//!
//! IPv4 and IPv6 alike; tun may carry a flow of one family to a real of the other. Anything
//! else is dropped. Pure apart from the shared tables; never panics on what arrives.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::Ordering::Relaxed,
};

use super::flow_table::{FlowKey, Partition, ReplyKey};
use crate::{
    clock::Millis,
    config::{ForwardMethod, Protocol, ServiceKey},
    packet::{Icmp, Ipv4Packet, Ipv6Packet, L4, Offload},
    sched::Flow,
    table::ServiceTable,
};

/// What to do with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Write it back to the TUN device (rewritten in place: nat).
    Send,
    /// Send it unchanged in an Ethernet frame to this real (dr).
    Route(IpAddr),
    /// Send it unchanged inside IPIP to this real (tun).
    Tunnel(IpAddr),
    /// No real can take this new flow: answer the client with ICMP port unreachable from
    /// this VIP, as IPVS does (the packet itself is dropped).
    Unreachable(IpAddr),
    /// Drop it, for this reason.
    Drop(DropReason),
}

/// Why a packet was dropped (counted per reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a valid IPv4 packet.
    Malformed = 0,
    /// A non-first fragment (not followed yet).
    Fragment = 1,
    /// No service, flow or real for it.
    NoFlow = 2,
    /// The connection table refused a new flow (full, or the source's share used up).
    TableFull = 3,
    /// dr: the real's MAC is not known yet, or sending failed; tun: sending failed.
    NoNeighbour = 4,
    /// The service refused the client (`allow`, `deny`, `source_limits`).
    Refused = 5,
}

impl DropReason {
    /// Every reason, in the order of their counters.
    pub const ALL: [Self; 6] = [
        Self::Malformed,
        Self::Fragment,
        Self::NoFlow,
        Self::TableFull,
        Self::NoNeighbour,
        Self::Refused,
    ];

    /// The `reason` label of `lbd_packets_dropped_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Fragment => "fragment",
            Self::NoFlow => "no_flow",
            Self::TableFull => "table_full",
            Self::NoNeighbour => "no_neighbour",
            Self::Refused => "refused",
        }
    }
}

/// Handles one plain packet in `buf`: one wire packet, checksums complete.
pub fn handle(buf: &mut [u8], table: &ServiceTable, flows: Partition<'_>, now: Millis) -> Verdict {
    handle_offloaded(buf, Offload::PLAIN, table, flows, now)
}

/// Handles one packet as an offloading TUN device hands it over: `offload` says whether its
/// transport checksum is partial (then only the pseudo-header part is updated) and how many
/// wire packets it stands for (a TCP or UDP super-packet: its headers are rewritten once, and
/// the counters count the wire packets). IPv4 and IPv6 alike.
pub fn handle_offloaded(
    buf: &mut [u8],
    offload: Offload,
    table: &ServiceTable,
    flows: Partition<'_>,
    now: Millis,
) -> Verdict {
    let partial = offload.checksum_partial();
    let version = buf.first().map(|byte| byte >> 4);
    // The transport's protocol number (IPv6: past the extension headers).
    let protocol = match version {
        Some(4) => buf.get(9).copied(),
        Some(6) => Ipv6Packet::parse(buf).ok().map(|packet| packet.protocol()),
        _ => return Verdict::Drop(DropReason::Malformed),
    };
    if partial && !matches!(protocol, Some(6 | 17)) && !offload.complete_checksum(buf) {
        // Not TCP or UDP: the rewrites below expect its checksum whole, and it cannot be.
        return Verdict::Drop(DropReason::Malformed);
    }
    let parsed = if version == Some(4) {
        Ipv4Packet::parse(buf)
            .map(|packet| dispatch(packet.with_partial_checksum(partial), offload, table, flows, now))
    } else {
        Ipv6Packet::parse(buf)
            .map(|packet| dispatch(packet.with_partial_checksum(partial), offload, table, flows, now))
    };
    parsed.unwrap_or(Verdict::Drop(DropReason::Malformed))
}

/// A packet of either family: an ICMP error about a flow is translated, anything else
/// forwarded.
fn dispatch<P: Forwardable>(
    mut packet: P,
    offload: Offload,
    table: &ServiceTable,
    flows: Partition<'_>,
    now: Millis,
) -> Verdict {
    match packet.transport() {
        Ok(L4::Icmp(Icmp::Error { .. })) => icmp_error(&mut packet, table, flows),
        l4 => forward(&mut packet, l4, offload, table, flows, now),
    }
}

/// What forwarding needs of a packet, IPv4 or IPv6.
trait Forwardable {
    fn len(&self) -> usize;
    /// The transport, read from the first fragment's header.
    fn transport(&self) -> Result<L4, crate::packet::PacketError>;
    fn source_ip(&self) -> IpAddr;
    fn destination_ip(&self) -> IpAddr;
    /// Sets the source (address and TCP/UDP port); false when `to` is of the other family.
    fn set_source_to(&mut self, to: SocketAddr) -> bool;
    /// Sets the destination (address and TCP/UDP port); false when `to` is of the other family.
    fn set_destination_to(&mut self, to: SocketAddr) -> bool;
    /// For an ICMP error about a TCP or UDP flow: the quoted packet's protocol number, source
    /// and destination.
    fn quoted_flow_of(&mut self) -> Option<(u8, SocketAddr, SocketAddr)>;
    /// Rewrites the quoted packet's source (`quoted_source`) or destination to `to`; false
    /// when it cannot (not an error about a flow, `to` of the other family).
    fn rewrite_quoted_to(&mut self, quoted_source: bool, to: SocketAddr) -> bool;
}

/// `Forwardable` for a family's packet type, whose addresses are `IpAddr::$family` and
/// `SocketAddr::$family`.
macro_rules! forwardable {
    ($packet:ident, $family:ident) => {
        impl Forwardable for $packet<'_> {
            fn len(&self) -> usize {
                $packet::len(self)
            }
            fn transport(&self) -> Result<L4, crate::packet::PacketError> {
                self.l4()
            }
            fn source_ip(&self) -> IpAddr {
                IpAddr::$family(self.source())
            }
            fn destination_ip(&self) -> IpAddr {
                IpAddr::$family(self.destination())
            }
            fn set_source_to(&mut self, to: SocketAddr) -> bool {
                match to {
                    SocketAddr::$family(to) => {
                        self.set_source(to);
                        true
                    }
                    _ => false,
                }
            }
            fn set_destination_to(&mut self, to: SocketAddr) -> bool {
                match to {
                    SocketAddr::$family(to) => {
                        self.set_destination(to);
                        true
                    }
                    _ => false,
                }
            }
            fn quoted_flow_of(&mut self) -> Option<(u8, SocketAddr, SocketAddr)> {
                let (protocol, source, destination) = self.quoted_flow()?;
                Some((
                    protocol,
                    SocketAddr::$family(source),
                    SocketAddr::$family(destination),
                ))
            }
            fn rewrite_quoted_to(&mut self, quoted_source: bool, to: SocketAddr) -> bool {
                match to {
                    SocketAddr::$family(to) => self.rewrite_quoted(quoted_source, to),
                    _ => false,
                }
            }
        }
    };
}

forwardable!(Ipv4Packet, V4);
forwardable!(Ipv6Packet, V6);

/// A TCP or UDP packet (`l4`, its transport): to a VIP, scheduled (or its flow found) and sent to the real; from a
/// real, its flow found and sent back from the VIP; anything else dropped.
fn forward<P: Forwardable>(
    packet: &mut P,
    l4: Result<L4, crate::packet::PacketError>,
    offload: Offload,
    table: &ServiceTable,
    flows: Partition<'_>,
    now: Millis,
) -> Verdict {
    let len = packet.len() as u64;
    let segments = offload.segments(packet.len());
    let (protocol, source_port, destination_port, flags) = match l4 {
        Ok(L4::Tcp {
            source,
            destination,
            flags,
        }) => (Protocol::Tcp, source, destination, Some(flags)),
        Ok(L4::Udp { source, destination }) => (Protocol::Udp, source, destination, None),
        Ok(L4::Fragment) => return Verdict::Drop(DropReason::Fragment),
        // Other ICMP from the server side (a real's echo reply to a client) arrives with the
        // ICMP errors it is steered with, and goes on as it is.
        Ok(L4::Icmp(_)) if passes_through(packet.destination_ip(), table) => return Verdict::Send,
        Ok(L4::Icmp(_) | L4::Other(_)) => return Verdict::Drop(DropReason::NoFlow),
        Err(_) => return Verdict::Drop(DropReason::Malformed),
    };
    let source = SocketAddr::new(packet.source_ip(), source_port);
    let destination = SocketAddr::new(packet.destination_ip(), destination_port);
    let service_key = ServiceKey {
        protocol,
        listen: destination,
    };
    if let Some(service) = table
        .service(&service_key)
        .filter(|service| service.config.on_packet_plane())
    {
        let key = FlowKey {
            protocol,
            client: source,
            vip: destination,
        };
        let schedule = || {
            // allow, deny and source_limits: a refused first packet is dropped and counted.
            let admitted = service.admit(source.ip(), now).map_err(|why| {
                service.stats.refuse(why);
                super::flow_table::Refusal::Refused
            })?;
            service.stats.conns.fetch_add(1, Relaxed);
            let mut scheduled = service
                .schedule(&Flow {
                    client: source,
                    destination,
                    now,
                })
                .ok_or(super::flow_table::Refusal::NoReal)?;
            scheduled.admitted = admitted;
            Ok(scheduled)
        };
        let (real, forward, pinned) = match flows.inbound(key, flags, now, &table.timeouts, schedule) {
            Ok(found) => found,
            Err(super::flow_table::Refusal::NoReal) => return Verdict::Unreachable(destination.ip()),
            Err(super::flow_table::Refusal::NotNew) => return Verdict::Drop(DropReason::NoFlow),
            Err(super::flow_table::Refusal::Refused) => return Verdict::Drop(DropReason::Refused),
            Err(_) => return Verdict::Drop(DropReason::TableFull),
        };
        // As IPVS with expire_nodest_conn=0: packets of a flow whose real was deleted (or
        // removed by its health check) are dropped; the entry ages out.
        let live = service
            .real(real)
            .or(service.sorry.as_ref().filter(|sorry| sorry.address == real));
        // Only tun carries a flow to a real of the other family.
        // A health check through the VIP's path reaches its real whatever its verdict.
        let Some(live) = live.filter(|live| {
            (live.up || pinned) && (real.is_ipv4() == destination.is_ipv4() || forward == ForwardMethod::Tun)
        }) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        live.state.packets_in.fetch_add(segments, Relaxed);
        live.state.bytes_in.fetch_add(len, Relaxed);
        return match forward {
            ForwardMethod::Nat | ForwardMethod::Proxy => {
                packet.set_destination_to(real);
                Verdict::Send
            }
            ForwardMethod::Dr => Verdict::Route(real.ip()),
            ForwardMethod::Tun => Verdict::Tunnel(real.ip()),
        };
    }
    // A real's reply to a client? (Never to a VIP: that is a port no service has.)
    if table.is_packet_vip(destination.ip()) {
        return Verdict::Drop(DropReason::NoFlow);
    }
    let reply = ReplyKey {
        protocol,
        real: source,
        client: destination,
    };
    match flows.reply(reply, flags, (segments, len), now, &table.timeouts) {
        Some(FlowKey { vip, .. }) if packet.set_source_to(vip) => Verdict::Send,
        _ => Verdict::Drop(DropReason::NoFlow),
    }
}

/// Whether an ICMP message that is not an error, to `destination`, is written back as it is:
/// to a unicast address beyond the director, not to a VIP (nor the TUN device's own
/// multicast and link-local chatter, such as MLD reports).
fn passes_through(destination: IpAddr, table: &ServiceTable) -> bool {
    let local = match destination {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_multicast() || v6.is_unicast_link_local(),
    };
    !local && !destination.is_unspecified() && !destination.is_loopback() && !table.is_packet_vip(destination)
}

/// An ICMP or ICMPv6 error about a flow (Packet Too Big included): from the real's side (it
/// quotes client → real) it goes to the client as if from the VIP; from the client's side
/// (it quotes VIP → client) it goes to the real.
fn icmp_error<P: Forwardable>(packet: &mut P, table: &ServiceTable, flows: Partition<'_>) -> Verdict {
    let Some((number, quoted_source, quoted_destination)) = packet.quoted_flow_of() else {
        return Verdict::Drop(DropReason::Malformed);
    };
    let protocol = match number {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return Verdict::Drop(DropReason::NoFlow),
    };
    let nat = ServiceKey {
        protocol,
        listen: quoted_source,
    };
    if table.service(&nat).is_some() {
        // Client side: the quoted packet went VIP → client.
        let key = FlowKey {
            protocol,
            client: quoted_destination,
            vip: quoted_source,
        };
        let Some((real, forward)) = flows.real_of(&key) else {
            return Verdict::Drop(DropReason::NoFlow);
        };
        // dr and tun reals own the VIP and sent the quoted packet themselves: the error goes
        // to them as it is, the way the flow's packets go (as IPVS does).
        match forward {
            ForwardMethod::Dr => return Verdict::Route(real.ip()),
            ForwardMethod::Tun => return Verdict::Tunnel(real.ip()),
            ForwardMethod::Nat | ForwardMethod::Proxy => {}
        }
        if !packet.rewrite_quoted_to(true, real) {
            return Verdict::Drop(DropReason::NoFlow);
        }
        packet.set_destination_to(SocketAddr::new(real.ip(), 0));
        return Verdict::Send;
    }
    // Real side: the quoted packet went client → real.
    let reply = ReplyKey {
        protocol,
        real: quoted_destination,
        client: quoted_source,
    };
    let Some(FlowKey { vip, .. }) = flows.find_reply(reply) else {
        return Verdict::Drop(DropReason::NoFlow);
    };
    if !packet.rewrite_quoted_to(false, vip) {
        return Verdict::Drop(DropReason::NoFlow);
    }
    if packet.source_ip() == quoted_destination.ip() {
        packet.set_source_to(SocketAddr::new(vip.ip(), 0));
    }
    Verdict::Send
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;
    use crate::lvs::flow_table::FlowTable;
    use crate::{config, packet::checksum, table::HealthView};

    fn table() -> ServiceTable {
        let config = config::parse(
            "dataplane: { tun: lbtun0 }\nservices:\n  - { protocol: tcp, listen: '192.168.77.100:80', scheduler: rr, forward: nat, reals: [{address: '10.77.0.11:8080'}, {address: '10.77.0.12:8080'}] }\n",
            "t",
        )
        .unwrap();
        ServiceTable::build(&config, None, &HealthView::default())
    }

    fn tcp(source: ([u8; 4], u16), destination: ([u8; 4], u16), syn: bool, ack: bool) -> Vec<u8> {
        let builder = PacketBuilder::ipv4(source.0, destination.0, 64).tcp(source.1, destination.1, 1, 1000);
        segment(builder, syn, ack)
    }

    /// The TCP segment `builder` describes, with SYN and ACK as asked, carrying `hello`.
    fn segment(
        mut builder: etherparse::PacketBuilderStep<etherparse::TcpHeader>,
        syn: bool,
        ack: bool,
    ) -> Vec<u8> {
        if syn {
            builder = builder.syn();
        }
        if ack {
            builder = builder.ack(1);
        }
        let mut out = Vec::new();
        builder.write(&mut out, b"hello").unwrap();
        out
    }

    /// An IPv6 nat service.
    fn ipv6_table() -> ServiceTable {
        let config = config::parse(
            "dataplane: { tun: lbtun0 }\nservices:\n  - { protocol: tcp, listen: '[2001:db8::100]:80', scheduler: rr, forward: nat, reals: [{address: '[2001:db8:1::11]:8080'}, {address: '[2001:db8:1::12]:8080'}] }\n",
            "t",
        )
        .unwrap();
        ServiceTable::build(&config, None, &HealthView::default())
    }

    fn tcp6(source: (&str, u16), destination: (&str, u16), syn: bool, ack: bool) -> Vec<u8> {
        let address = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let builder = PacketBuilder::ipv6(address(source.0), address(destination.0), 64).tcp(
            source.1,
            destination.1,
            1,
            1000,
        );
        segment(builder, syn, ack)
    }

    #[test]
    fn an_ipv6_connection_goes_to_a_real_and_its_replies_come_from_the_vip() {
        let (table, flows) = (ipv6_table(), FlowTable::new(1000, 100, 1));
        let mut syn = tcp6(("2001:db8::2", 40000), ("2001:db8::100", 80), true, false);
        assert_eq!(
            handle(&mut syn, &table, flows.partition(0), Millis(0)),
            Verdict::Send
        );
        let packet = Ipv6Packet::parse(&mut syn).unwrap();
        let real = packet.destination();
        assert!(real.to_string().starts_with("2001:db8:1::1"), "{real}");
        assert!(matches!(
            packet.l4(),
            Ok(L4::Tcp {
                destination: 8080,
                ..
            })
        ));
        let mut reply = tcp6((&real.to_string(), 8080), ("2001:db8::2", 40000), true, true);
        assert_eq!(
            handle(&mut reply, &table, flows.partition(0), Millis(1)),
            Verdict::Send
        );
        let packet = Ipv6Packet::parse(&mut reply).unwrap();
        assert_eq!(packet.source().to_string(), "2001:db8::100");
        assert!(matches!(packet.l4(), Ok(L4::Tcp { source: 80, .. })));
        // The next connection goes to the other real (rr); a stray ACK starts nothing.
        let mut second = tcp6(("2001:db8::2", 40001), ("2001:db8::100", 80), true, false);
        handle(&mut second, &table, flows.partition(0), Millis(2));
        assert_ne!(Ipv6Packet::parse(&mut second).unwrap().destination(), real);
        let mut stray = tcp6(("2001:db8::3", 1), ("2001:db8::100", 80), false, true);
        assert_eq!(
            handle(&mut stray, &table, flows.partition(0), Millis(3)),
            Verdict::Drop(DropReason::NoFlow)
        );
        // What is neither IPv4 nor IPv6 is malformed.
        assert_eq!(
            handle(&mut [0x50; 40], &table, flows.partition(0), Millis(4)),
            Verdict::Drop(DropReason::Malformed)
        );
    }

    /// An ICMPv6 error of `kind` (2: Packet Too Big) from `from` to `to`, quoting `quoted`
    /// (cut to `quote_len` bytes), its checksum complete.
    fn icmpv6_error(kind: u8, from: &str, to: &str, quoted: &[u8], quote_len: usize) -> Vec<u8> {
        let address = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let icmp_type = match kind {
            2 => etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 },
            _ => {
                etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port)
            }
        };
        let mut out = Vec::new();
        PacketBuilder::ipv6(address(from), address(to), 64)
            .icmpv6(icmp_type)
            .write(&mut out, &quoted[..quote_len.min(quoted.len())])
            .unwrap();
        out
    }

    /// Whether an ICMPv6 message's checksum is right (a full recompute).
    fn icmpv6_checksum_ok(packet: &[u8]) -> bool {
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&packet[8..40]);
        pseudo.extend_from_slice(&((packet.len() - 40) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&packet[40..]);
        checksum::compute(&pseudo) == 0
    }

    #[test]
    fn icmpv6_errors_about_a_flow_are_translated_both_ways() {
        let (table, flows) = (ipv6_table(), FlowTable::new(1000, 100, 1));
        let mut syn = tcp6(("2001:db8::2", 40000), ("2001:db8::100", 80), true, false);
        let original = syn.clone();
        assert_eq!(
            handle(&mut syn, &table, flows.partition(0), Millis(0)),
            Verdict::Send
        );
        let real = Ipv6Packet::parse(&mut syn).unwrap().destination();
        // From the real's side: a router says the packet sent to the real was too big. The
        // client must see it about its own packet to the VIP, from the VIP if the real sent it.
        for (from, quote_len) in [(real.to_string(), 1232), ("2001:db8:1::1".to_owned(), 60)] {
            let mut error = icmpv6_error(2, &from, "2001:db8::2", &syn, quote_len);
            assert_eq!(
                handle(&mut error, &table, flows.partition(0), Millis(1)),
                Verdict::Send
            );
            assert!(icmpv6_checksum_ok(&error), "ICMPv6 checksum after the rewrite");
            let quote = &error[48..];
            assert_eq!(
                quote,
                &original[..quote.len()],
                "the quote is the client's own packet"
            );
            let source = Ipv6Packet::parse(&mut error).unwrap().source().to_string();
            let expected = if from == real.to_string() {
                "2001:db8::100"
            } else {
                "2001:db8:1::1"
            };
            assert_eq!(source, expected);
        }
        // From the client's side: an error about the VIP's reply goes to the real, quoting
        // the packet the real sent.
        let mut reply = tcp6((&real.to_string(), 8080), ("2001:db8::2", 40000), true, true);
        let sent_by_real = reply.clone();
        assert_eq!(
            handle(&mut reply, &table, flows.partition(0), Millis(2)),
            Verdict::Send
        );
        let mut error = icmpv6_error(1, "2001:db8::2", "2001:db8::100", &reply, 1232);
        assert_eq!(
            handle(&mut error, &table, flows.partition(0), Millis(3)),
            Verdict::Send
        );
        assert!(icmpv6_checksum_ok(&error));
        let packet = Ipv6Packet::parse(&mut error).unwrap();
        assert_eq!(packet.destination(), real);
        assert_eq!(
            &error[48..],
            &sent_by_real[..],
            "the quote is the real's own packet"
        );
        // About no flow: dropped; cut inside the quoted header: malformed, never a panic.
        let mut stranger = tcp6(("2001:db8::9", 1), ("2001:db8::100", 80), true, false);
        let mut error = icmpv6_error(2, "2001:db8:1::1", "2001:db8::9", &stranger.clone(), 1232);
        assert_eq!(
            handle(&mut error, &table, flows.partition(0), Millis(4)),
            Verdict::Drop(DropReason::NoFlow)
        );
        for len in 0..60 {
            let mut cut = icmpv6_error(2, "2001:db8:1::1", "2001:db8::2", &syn, len);
            let _ = handle(&mut cut, &table, flows.partition(0), Millis(5));
        }
        let _ = handle(&mut stranger, &table, flows.partition(0), Millis(6));
    }

    #[test]
    fn a_connection_goes_to_a_real_and_its_replies_come_from_the_vip() {
        let (table, flows) = (table(), FlowTable::new(1000, 100, 1));
        let mut syn = tcp(([192, 168, 77, 2], 40000), ([192, 168, 77, 100], 80), true, false);
        assert_eq!(
            handle(&mut syn, &table, flows.partition(0), Millis(0)),
            Verdict::Send
        );
        let packet = Ipv4Packet::parse(&mut syn).unwrap();
        let real = packet.destination();
        assert!(real.octets()[..3] == [10, 77, 0]);
        assert_eq!(checksum::compute(&packet.bytes()[..20]), 0);

        let mut reply = tcp((real.octets(), 8080), ([192, 168, 77, 2], 40000), true, true);
        assert_eq!(
            handle(&mut reply, &table, flows.partition(0), Millis(1)),
            Verdict::Send
        );
        let packet = Ipv4Packet::parse(&mut reply).unwrap();
        assert_eq!(packet.source().octets(), [192, 168, 77, 100]);
        assert!(matches!(packet.l4(), Ok(L4::Tcp { source: 80, .. })));

        // The next connection goes to the other real (rr); a stray ACK starts nothing.
        let mut second = tcp(([192, 168, 77, 2], 40001), ([192, 168, 77, 100], 80), true, false);
        handle(&mut second, &table, flows.partition(0), Millis(2));
        assert_ne!(Ipv4Packet::parse(&mut second).unwrap().destination(), real);
        let mut stray = tcp(([192, 168, 77, 3], 1), ([192, 168, 77, 100], 80), false, true);
        assert_eq!(
            handle(&mut stray, &table, flows.partition(0), Millis(3)),
            Verdict::Drop(DropReason::NoFlow)
        );
        let service = &table.services()[0];
        let sent: u64 = service
            .reals
            .iter()
            .map(|real| real.state.packets_in.load(Relaxed))
            .sum();
        assert_eq!(sent, 2);
    }

    #[test]
    fn garbage_never_panics() {
        let (table, flows) = (table(), FlowTable::new(10, 10, 1));
        for len in 0..64 {
            for fill in [0x00u8, 0x45, 0xff] {
                let mut bytes = vec![fill; len];
                let _ = handle(&mut bytes, &table, flows.partition(0), Millis(0));
            }
        }
    }
}

#[cfg(test)]
mod dr_tests {
    use etherparse::PacketBuilder;

    use super::*;
    use crate::{config, lvs::flow_table::FlowTable, table::HealthView};

    #[test]
    fn dr_and_tun_packets_leave_unchanged_for_their_real() {
        for (mode, expect_tunnel) in [("dr", false), ("tun", true)] {
            let config = config::parse(
                &format!("dataplane: {{ server_interface: br0 }}\nservices:\n  - {{ protocol: tcp, listen: '192.168.77.100:8080', scheduler: rr, forward: {mode}, reals: [{{address: '10.77.0.11:8080'}}] }}\n"),
                "t",
            )
            .unwrap();
            let table = ServiceTable::build(&config, None, &HealthView::default());
            let flows = FlowTable::new(100, 100, 1);
            let mut syn = Vec::new();
            PacketBuilder::ipv4([192, 168, 77, 2], [192, 168, 77, 100], 64)
                .tcp(40000, 8080, 1, 1000)
                .syn()
                .write(&mut syn, b"")
                .unwrap();
            let before = syn.clone();
            let verdict = handle(&mut syn, &table, flows.partition(0), Millis(0));
            let real = IpAddr::from([10, 77, 0, 11]);
            assert_eq!(
                verdict,
                if expect_tunnel {
                    Verdict::Tunnel(real)
                } else {
                    Verdict::Route(real)
                }
            );
            assert_eq!(syn, before, "{mode}: unchanged");
            // Retransmitted SYN: same flow, same real.
            assert_eq!(handle(&mut syn, &table, flows.partition(0), Millis(1)), verdict);
        }
    }
}
