//! One packet worker: read packets (or super-packets) from its TUN queue until it is empty,
//! handle each (`path`), send each on (UDP datagrams of one flow joined), then wait for more;
//! and sweep its partition of the connection table.

use std::{
    io,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
};

use super::{
    buffer::{ETHERNET_LEN, PACKET_AT},
    coalesce::{Coalescer, Joined, Offer, Outlet},
    egress::{Egress, Segments},
    flow_table::Partition,
    path::{self, DropReason, Verdict},
    shared::Drops,
};
use crate::{
    clock::Millis,
    packet::{Offload, VNET_HEADER_LEN},
    table::TableHandle,
};

/// The largest packet read from the TUN device (a TCP or UDP super-packet at most).
const PACKET_MAX: usize = 65_536;
/// How often a worker sweeps expired flows out of its partition (a few shards each time).
const SWEEP_EVERY_MS: u64 = 50;
/// Shards swept each time: every shard is visited about every 0.8 s.
const SHARDS_PER_SWEEP: usize = 4;

/// One worker: read packets (or super-packets) until the queue is empty, handle each, send
/// each on (UDP datagrams of one flow joined), then wait for more.
pub(super) fn run(
    queue: &tun_rs::SyncDevice,
    egress: &Egress,
    table: &TableHandle,
    flows: Partition<'_>,
    drops: &Drops,
    stop: &AtomicBool,
) {
    let mut next_sweep = Millis::now();
    let mut buf = vec![0u8; PACKET_AT + PACKET_MAX];
    let mut icmp = Vec::with_capacity(128);
    let mut cut = Segments::default();
    // Joining needs the kernel to take UDP super-packets (Linux 6.2, TUN_F_USO4).
    let mut joined = queue.udp_gso().then(Coalescer::default);
    let send_batch =
        |batch: Joined<'_>| deliver(queue, egress, batch.buf, batch.offload, batch.outlet, drops);
    if let Err(error) = queue.set_nonblocking(true) {
        tracing::error!(%error, "cannot make the TUN queue non-blocking; this packet worker stops");
        return;
    }
    while !stop.load(Relaxed) {
        let now = Millis::now();
        if now >= next_sweep {
            for _ in 0..SHARDS_PER_SWEEP {
                flows.sweep(now);
            }
            next_sweep = now.plus(SWEEP_EVERY_MS);
        }
        let read = match queue.recv(&mut buf[ETHERNET_LEN..]) {
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Some(coalescer) = joined.as_mut() {
                    coalescer.take_all(&send_batch);
                }
                wait_readable(queue);
                continue;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "reading the TUN device failed; this packet worker stops");
                return;
            }
        };
        let end = ETHERNET_LEN + read;
        let Some(offload) = Offload::decode(&buf[ETHERNET_LEN..end]).filter(|_| end > PACKET_AT) else {
            drops.count(DropReason::Malformed);
            continue;
        };
        let packet = &mut buf[PACKET_AT..end];
        let to = match path::handle_offloaded(packet, offload, &table.load(), flows, now) {
            Verdict::Send => Outlet::Tun,
            Verdict::Route(real) => Outlet::Frame(real),
            Verdict::Unreachable(vip) => {
                icmp.clear();
                icmp.extend_from_slice(&[0; VNET_HEADER_LEN]);
                if port_unreachable(packet, vip, &mut icmp) {
                    let _ = queue.send(&icmp);
                }
                continue;
            }
            Verdict::Tunnel(real) => {
                if !egress.tunnel(packet, offload, real, &mut cut) {
                    drops.count(DropReason::NoNeighbour);
                }
                continue;
            }
            Verdict::Drop(reason) => {
                tracing::trace!(?reason, read, "packet dropped");
                drops.count(reason);
                continue;
            }
        };
        let Some(coalescer) = joined.as_mut() else {
            deliver(queue, egress, &mut buf[..end], offload, to, drops);
            continue;
        };
        let mut offer = coalescer.offer(packet, offload, to);
        if let Offer::Flush(slot) = offer {
            // The flow's batch (or the one in its place) leaves first, keeping order.
            if let Some(batch) = coalescer.take(slot) {
                send_batch(batch);
            }
            offer = coalescer.offer(packet, offload, to);
        }
        match offer {
            Offer::Taken => {}
            Offer::Full(slot) => {
                if let Some(batch) = coalescer.take(slot) {
                    send_batch(batch);
                }
            }
            Offer::Flush(_) | Offer::Refused => {
                if crate::packet::udp_join::is_udp(packet) {
                    // UDP that cannot be joined (a fragment, a super-packet): its flow may
                    // have a batch pending, which leaves first.
                    coalescer.take_all(&send_batch);
                }
                deliver(queue, egress, &mut buf[..end], offload, to, drops);
            }
        }
    }
}

/// Sends the packet at [`PACKET_AT`] of `buf` (rewritten, or joined) where it goes: back into
/// the TUN device, or framed to a real.
fn deliver(
    queue: &tun_rs::SyncDevice,
    egress: &Egress,
    buf: &mut [u8],
    offload: Offload,
    to: Outlet,
    drops: &Drops,
) {
    match to {
        Outlet::Tun => {
            let Some((front, packet)) = buf.split_at_mut_checked(PACKET_AT) else {
                return;
            };
            let header = offload.with_header_len(packet);
            if let Ok(vnet) = <&mut [u8; VNET_HEADER_LEN]>::try_from(&mut front[ETHERNET_LEN..]) {
                header.encode(vnet);
            }
            if let Err(error) = queue.send(&buf[ETHERNET_LEN..]) {
                tracing::debug!(%error, "writing to the TUN device failed");
            }
        }
        Outlet::Frame(real) => {
            if !egress.route(buf, offload, real) {
                tracing::trace!(%real, "no MAC for the real yet (or the send failed); packet dropped");
                drops.count(DropReason::NoNeighbour);
            }
        }
    }
}

/// Appends to `out` the ICMP or ICMPv6 port unreachable that `vip` sends back to the client
/// of `refused`; false when `refused` is not a packet of the VIP's family.
fn port_unreachable(refused: &mut [u8], vip: IpAddr, out: &mut Vec<u8>) -> bool {
    use crate::packet::{Ipv4Packet, Ipv6Packet};
    match vip {
        IpAddr::V4(vip) => Ipv4Packet::parse(refused)
            .map(|refused| crate::packet::port_unreachable(&refused, vip, out))
            .is_ok(),
        IpAddr::V6(vip) => Ipv6Packet::parse(refused)
            .map(|refused| crate::packet::port_unreachable_v6(&refused, vip, out))
            .is_ok(),
    }
}

/// Blocks until the TUN queue has a packet, or a sweep is due (the stop flag is seen then too).
fn wait_readable(queue: &tun_rs::SyncDevice) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(queue.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(SWEEP_EVERY_MS as u16));
}
