//! UDP datagrams of one flow that leave back to back are joined into one UDP super-packet
//! (`GSO_UDP_L4`) before they are handed back to the kernel: the kernel then routes,
//! bridges and queues them once, and cuts them apart only where it must (at the receiving
//! socket, or at a device without UDP segmentation). That per-packet kernel work, done inside
//! lbd's write, is most of what a forwarded datagram costs; joining divides it by the batch.
//!
//! Flows interleave (many clients), so each flow has its own batch. Nothing waits for a batch
//! to fill: the worker sends every batch whenever its TUN queue is empty, so a lone datagram
//! leaves at once. Only datagrams that the kernel would cut back into exactly
//! the same datagrams are joined: IPv4 without options or fragments (same addresses, ports,
//! TOS, TTL and DF) or IPv6 without extension headers (same addresses, ports, traffic class,
//! flow label and hop limit), every payload the size of the first but the last, which may be
//! shorter.

use std::net::IpAddr;

use super::buffer::PACKET_AT;
use crate::packet::{Offload, udp_join};

/// Datagrams joined at most (as Linux's UDP GSO allows).
const SEGMENTS_MAX: u16 = 64;
/// The largest super-packet built here (IP total length; the kernel takes up to 64 KiB).
/// Joining 16 KiB already divides the per-packet cost of large datagrams by ten or more, and
/// it bounds a worker's batch buffers to `SETS * WAYS * 16 KiB` (4 MiB).
const LEN_MAX: usize = 16 * 1024;

/// Where a joined packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outlet {
    /// Back into the TUN device (nat).
    Tun,
    /// In an Ethernet frame to this real (dr).
    Frame(IpAddr),
}

/// A super-packet ready to send: its `virtio_net_hdr`, and a buffer holding it at
/// `PACKET_AT` with room in front (as a worker's read buffer).
#[derive(Debug)]
pub struct Joined<'a> {
    /// Where it goes.
    pub outlet: Outlet,
    /// Its header.
    pub offload: Offload,
    /// `[room | packet]`: the packet is `buf[PACKET_AT..]`.
    pub buf: &'a mut [u8],
}

/// What [`Coalescer::offer`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Taken (copied): the caller sends nothing.
    Taken,
    /// Taken, and its batch can take no more: send [`Coalescer::take`] of this batch now.
    Full(usize),
    /// Not taken: this batch (of the same flow, or in the packet's place) must leave first;
    /// send it, then offer the packet again.
    Flush(usize),
    /// Not a datagram that can be joined: the caller sends it itself, after
    /// [`Coalescer::take_all`] if it is UDP (one of its flows may be pending).
    Refused,
}

/// Datagrams of one flow being joined.
#[derive(Debug)]
struct Batch {
    /// `[room | packet]`, grown once to what the flow needs and then reused.
    buf: Vec<u8>,
    /// Bytes of the pending packet, from [`PACKET_AT`]; 0 when empty.
    len: usize,
    outlet: Outlet,
    /// The flow's hash (compared before its headers).
    tag: u64,
    /// The first datagram's header (it is sent as is when alone).
    first: Offload,
    segments: u16,
    segment_size: usize,
    /// The last datagram was shorter than the first: nothing may follow it.
    closed: bool,
}

/// Batches, one per flow, in a small set-associative table: a flow's set is its hash, and
/// its batch is one of the set's few ways, so a datagram finds its batch in a few steps.
/// Many flows can be joined at once (one per way); a flow that finds its set full sends the
/// fullest batch of the set first and takes its way.
#[derive(Debug)]
pub struct Coalescer {
    batches: Vec<Batch>,
    /// Slots with a pending batch, one bit each (set and cleared in one step).
    pending: [u64; SLOTS / 64],
    hasher: ahash::RandomState,
}

/// Sets of the table, and ways (batches) per set.
const SETS: usize = 16;
const WAYS: usize = 16;
const SLOTS: usize = SETS * WAYS;

impl Default for Coalescer {
    fn default() -> Self {
        Self {
            batches: (0..SLOTS)
                .map(|_| Batch {
                    buf: Vec::new(),
                    len: 0,
                    outlet: Outlet::Tun,
                    tag: 0,
                    first: Offload::PLAIN,
                    segments: 0,
                    segment_size: 0,
                    closed: false,
                })
                .collect(),
            pending: [0; SLOTS / 64],
            hasher: ahash::RandomState::new(),
        }
    }
}

/// The payload of `packet` when it can be joined: see [`udp_join::joinable`]; and never a
/// packet that is already a super-packet.
fn joinable(packet: &[u8], offload: Offload) -> Option<usize> {
    if offload.is_segmented() {
        return None;
    }
    udp_join::joinable(packet, LEN_MAX)
}

impl Coalescer {
    /// Whether no batch is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|&bits| bits == 0)
    }

    /// Offers `packet` (rewritten, headed for `outlet`).
    pub fn offer(&mut self, packet: &[u8], offload: Offload, outlet: Outlet) -> Offer {
        let Some(payload) = joinable(packet, offload) else {
            return Offer::Refused;
        };
        let tag = self.hasher.hash_one(udp_join::flow_bytes(packet));
        let set = (tag as usize) % SETS * WAYS;
        let ways = &self.batches[set..set + WAYS];
        let flow = ways.iter().position(|batch| {
            batch.len != 0
                && batch.tag == tag
                && udp_join::same_flow(&batch.buf[PACKET_AT..PACKET_AT + batch.len], packet)
        });
        let slot = match flow.or_else(|| ways.iter().position(|batch| batch.len == 0)) {
            Some(way) => set + way,
            None => {
                let fullest = (0..WAYS).max_by_key(|&way| ways[way].len).unwrap_or(0);
                return Offer::Flush(set + fullest);
            }
        };
        let batch = &mut self.batches[slot];
        if batch.len == 0 {
            grow(&mut batch.buf, PACKET_AT + packet.len());
            batch.buf[PACKET_AT..PACKET_AT + packet.len()].copy_from_slice(packet);
            batch.len = packet.len();
            batch.outlet = outlet;
            batch.tag = tag;
            batch.first = offload;
            batch.segments = 1;
            batch.segment_size = payload;
            batch.closed = false;
            self.pending[slot / 64] |= 1 << (slot % 64);
            return Offer::Taken;
        }
        let fits = !batch.closed
            && batch.segments < SEGMENTS_MAX
            && outlet == batch.outlet
            && payload <= batch.segment_size
            && batch.len + payload <= LEN_MAX;
        if !fits {
            return Offer::Flush(slot);
        }
        let at = PACKET_AT + batch.len;
        grow(&mut batch.buf, at + payload);
        batch.buf[at..at + payload].copy_from_slice(&packet[packet.len() - payload..]);
        batch.len += payload;
        batch.segments += 1;
        batch.closed = payload < batch.segment_size;
        let full = batch.closed || batch.segments >= SEGMENTS_MAX || batch.len + batch.segment_size > LEN_MAX;
        if full { Offer::Full(slot) } else { Offer::Taken }
    }

    /// Takes the batch in `slot`, ready to send (lengths and IP checksum set, UDP checksum
    /// left partial for the kernel to finish per datagram); the slot is empty afterwards.
    pub fn take(&mut self, slot: usize) -> Option<Joined<'_>> {
        let batch = self.batches.get_mut(slot).filter(|batch| batch.len != 0)?;
        self.pending[slot / 64] &= !(1 << (slot % 64));
        Some(batch.finish())
    }

    /// Takes every pending batch in turn (call when the queue is empty), handing each to
    /// `send`.
    pub fn take_all(&mut self, mut send: impl FnMut(Joined<'_>)) {
        for word in 0..self.pending.len() {
            let mut bits = std::mem::take(&mut self.pending[word]);
            while bits != 0 {
                let slot = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let batch = &mut self.batches[slot];
                if batch.len != 0 {
                    send(batch.finish());
                }
            }
        }
    }
}

/// Makes `buf` at least `len` long. A batch's buffer grows (by doubling) to what its flows
/// need and is then reused: no allocation once traffic has warmed it.
fn grow(buf: &mut Vec<u8>, len: usize) {
    if buf.len() < len {
        buf.resize(len.max(2 * buf.len()).min(PACKET_AT + LEN_MAX), 0);
    }
}

impl Batch {
    fn finish(&mut self) -> Joined<'_> {
        let len = std::mem::take(&mut self.len);
        let buf = &mut self.buf[..PACKET_AT + len];
        if self.segments == 1 {
            return Joined {
                outlet: self.outlet,
                offload: self.first,
                buf,
            };
        }
        let offload = udp_join::finish(&mut buf[PACKET_AT..], len, self.segment_size);
        Joined {
            outlet: self.outlet,
            offload,
            buf,
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::PacketBuilder;

    use super::*;
    use crate::packet::{checksum, offload::GSO_UDP_L4, udp_join::IP_LEN};

    fn datagram(source_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ipv4([192, 168, 77, 2], [10, 77, 0, 11], 63)
            .udp(source_port, 7777)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// Cuts a joined packet apart as the kernel does (`__udp_gso_segment`), finishing each
    /// checksum from scratch.
    fn cut(joined: &Joined<'_>) -> Vec<Vec<u8>> {
        let packet = &joined.buf[PACKET_AT..];
        let size = usize::from(joined.offload.gso_size);
        let ipv6 = packet[0] >> 4 == 6;
        let ip_len = if ipv6 { 40 } else { IP_LEN };
        let ports = (
            u16::from_be_bytes([packet[ip_len], packet[ip_len + 1]]),
            u16::from_be_bytes([packet[ip_len + 2], packet[ip_len + 3]]),
        );
        packet[ip_len + 8..]
            .chunks(size)
            .map(|payload| {
                let mut out = Vec::new();
                let builder = if ipv6 {
                    PacketBuilder::ipv6(
                        <[u8; 16]>::try_from(&packet[8..24]).unwrap(),
                        <[u8; 16]>::try_from(&packet[24..40]).unwrap(),
                        packet[7],
                    )
                } else {
                    PacketBuilder::ipv4(
                        <[u8; 4]>::try_from(&packet[12..16]).unwrap(),
                        <[u8; 4]>::try_from(&packet[16..20]).unwrap(),
                        packet[8],
                    )
                };
                builder.udp(ports.0, ports.1).write(&mut out, payload).unwrap();
                out
            })
            .collect()
    }

    fn datagram6(source_port: u16, payload: &[u8]) -> Vec<u8> {
        let address = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap().octets();
        let mut out = Vec::new();
        PacketBuilder::ipv6(address("fd00:77::2"), address("fd00:10::11"), 63)
            .udp(source_port, 7777)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    #[test]
    fn ipv6_datagrams_are_joined_and_cut_back_into_the_same_datagrams() {
        let mut coalescer = Coalescer::default();
        let datagrams: Vec<Vec<u8>> = (0..4u8)
            .map(|i| datagram6(40000, &[i; 100][..if i == 3 { 30 } else { 100 }]))
            .collect();
        for datagram in &datagrams {
            assert!(matches!(
                coalescer.offer(datagram, Offload::PLAIN, Outlet::Tun),
                Offer::Taken | Offer::Full(_)
            ));
        }
        // An IPv4 datagram is another flow, whatever its bytes.
        assert_eq!(
            coalescer.offer(&datagram(40000, &[9; 100]), Offload::PLAIN, Outlet::Tun),
            Offer::Taken
        );
        let mut taken = Vec::new();
        coalescer.take_all(|joined| {
            let pieces = if joined.offload.gso_type == GSO_UDP_L4 {
                assert_eq!(joined.offload.csum_start, 40);
                assert_eq!(joined.offload.hdr_len, 48);
                cut(&joined)
            } else {
                vec![joined.buf[PACKET_AT..].to_vec()]
            };
            taken.push(pieces);
        });
        taken.sort_by_key(Vec::len);
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[1], datagrams, "cut back into exactly the datagrams joined");
        // With an extension header (here a fragment header), an IPv6 datagram is not joined.
        let mut fragment = datagrams[0].clone();
        fragment[6] = 44;
        assert_eq!(
            coalescer.offer(&fragment, Offload::PLAIN, Outlet::Tun),
            Offer::Refused
        );
    }

    fn take_one(coalescer: &mut Coalescer) -> (Offload, Vec<u8>) {
        let mut taken = Vec::new();
        coalescer.take_all(|joined| taken.push((joined.offload, joined.buf[PACKET_AT..].to_vec())));
        assert_eq!(taken.len(), 1);
        taken.remove(0)
    }

    #[test]
    fn a_run_of_equal_datagrams_becomes_one_super_packet_that_cuts_back_into_them() {
        let mut coalescer = Coalescer::default();
        let datagrams: Vec<Vec<u8>> = (0..5u8)
            .map(|i| datagram(40000, &[i; 64][..if i == 4 { 10 } else { 64 }]))
            .collect();
        for datagram in &datagrams[..4] {
            assert_eq!(
                coalescer.offer(datagram, Offload::PLAIN, Outlet::Tun),
                Offer::Taken
            );
        }
        // The short one closes the batch.
        let Offer::Full(slot) = coalescer.offer(&datagrams[4], Offload::PLAIN, Outlet::Tun) else {
            panic!("a short datagram ends the batch");
        };
        let joined = coalescer.take(slot).unwrap();
        assert_eq!(joined.offload.gso_type, GSO_UDP_L4);
        assert_eq!(joined.offload.segments(joined.buf.len() - PACKET_AT), 5);
        let packet = &joined.buf[PACKET_AT..];
        assert_eq!(checksum::compute(&packet[..IP_LEN]), 0, "IP checksum");
        assert_eq!(packet.len(), 28 + 4 * 64 + 10);
        // The partial checksum finishes into the right one for the whole super-packet.
        let mut whole = packet.to_vec();
        assert!(checksum::complete_partial(&mut whole, 20, 6));
        let mut pseudo = whole[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&whole[24..26]);
        pseudo.extend_from_slice(&whole[20..]);
        assert_eq!(checksum::compute(&pseudo), 0);
        // Cut back: the same payloads, in order.
        let pieces = cut(&joined);
        assert_eq!(pieces.len(), 5);
        for (piece, original) in pieces.iter().zip(&datagrams) {
            assert_eq!(piece[28..], original[28..]);
        }
        assert!(coalescer.is_empty() && coalescer.take(slot).is_none());
    }

    #[test]
    fn interleaved_flows_are_joined_each_in_its_own_batch() {
        let mut coalescer = Coalescer::default();
        // 64 flows, packet by packet: each finds its own batch (16 ways per set leave room).
        for _ in 0..3 {
            for port in 1..=64 {
                assert_eq!(
                    coalescer.offer(&datagram(port, &[port as u8; 16]), Offload::PLAIN, Outlet::Tun),
                    Offer::Taken
                );
            }
        }
        let mut batches = Vec::new();
        coalescer.take_all(|joined| batches.push(joined.offload.segments(joined.buf.len() - PACKET_AT)));
        assert_eq!(batches, vec![3; 64]);
        assert!(coalescer.is_empty());
    }

    #[test]
    fn a_flow_that_finds_its_set_full_sends_a_batch_of_the_set_first() {
        let mut coalescer = Coalescer::default();
        // More flows than batches: some set fills up.
        let flush = (1..=SLOTS as u16 + 1)
            .map(|port| {
                (
                    port,
                    coalescer.offer(&datagram(port, &[1; 16]), Offload::PLAIN, Outlet::Tun),
                )
            })
            .find(|(_, offer)| *offer != Offer::Taken);
        let Some((port, Offer::Flush(slot))) = flush else {
            panic!("no set filled up: {flush:?}");
        };
        assert!(coalescer.take(slot).is_some());
        assert_eq!(
            coalescer.offer(&datagram(port, &[1; 16]), Offload::PLAIN, Outlet::Tun),
            Offer::Taken
        );
    }

    #[test]
    fn a_longer_payload_or_another_outlet_sends_the_batch_first() {
        let mut coalescer = Coalescer::default();
        assert_eq!(
            coalescer.offer(&datagram(1, &[0; 32]), Offload::PLAIN, Outlet::Tun),
            Offer::Taken
        );
        let Offer::Flush(slot) = coalescer.offer(&datagram(1, &[0; 33]), Offload::PLAIN, Outlet::Tun) else {
            panic!("a longer datagram cannot follow");
        };
        let real = Outlet::Frame(IpAddr::from([10, 77, 0, 11]));
        assert_eq!(
            coalescer.offer(&datagram(1, &[0; 32]), Offload::PLAIN, real),
            Offer::Flush(slot)
        );
        // A lone datagram leaves as it came.
        let single = coalescer.take(slot).unwrap();
        assert_eq!(single.offload, Offload::PLAIN);
        assert_eq!(single.buf[PACKET_AT..], datagram(1, &[0; 32])[..]);
        assert_eq!(
            coalescer.offer(&datagram(1, &[0; 32]), Offload::PLAIN, real),
            Offer::Taken
        );
        let (offload, packet) = take_one(&mut coalescer);
        assert_eq!((offload, packet), (Offload::PLAIN, datagram(1, &[0; 32])));
    }

    #[test]
    fn tcp_fragments_super_packets_and_garbage_are_refused() {
        let mut coalescer = Coalescer::default();
        let mut tcp = Vec::new();
        PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .tcp(1, 2, 0, 100)
            .write(&mut tcp, &[0; 40])
            .unwrap();
        assert_eq!(coalescer.offer(&tcp, Offload::PLAIN, Outlet::Tun), Offer::Refused);
        let mut fragment = datagram(1, &[0; 32]);
        fragment[6] = 0x20; // more fragments
        assert_eq!(
            coalescer.offer(&fragment, Offload::PLAIN, Outlet::Tun),
            Offer::Refused
        );
        let segmented = Offload {
            gso_type: GSO_UDP_L4,
            gso_size: 32,
            ..Offload::PLAIN
        };
        assert_eq!(
            coalescer.offer(&datagram(1, &[0; 32]), segmented, Outlet::Tun),
            Offer::Refused
        );
        for len in 0..40 {
            assert_eq!(
                coalescer.offer(&vec![0x45; len], Offload::PLAIN, Outlet::Tun),
                Offer::Refused
            );
        }
        // A total length below the headers' (found by the fuzzer: it overflowed).
        let mut short = datagram(1, &[0; 32]);
        short[2..4].copy_from_slice(&5u16.to_be_bytes());
        assert_eq!(
            coalescer.offer(&short, Offload::PLAIN, Outlet::Tun),
            Offer::Refused
        );
        assert!(coalescer.is_empty());
    }

    #[test]
    fn at_most_64_datagrams_are_joined() {
        let mut coalescer = Coalescer::default();
        let one = datagram(9, &[1; 8]);
        for _ in 0..63 {
            assert_eq!(coalescer.offer(&one, Offload::PLAIN, Outlet::Tun), Offer::Taken);
        }
        let Offer::Full(slot) = coalescer.offer(&one, Offload::PLAIN, Outlet::Tun) else {
            panic!("64 is the most");
        };
        let joined = coalescer.take(slot).unwrap();
        assert_eq!(joined.offload.segments(joined.buf.len() - PACKET_AT), 64);
    }
}
