//! The packet data plane at run time: the TUN device (one queue per worker thread, packets
//! steered to the worker owning their flow), the connection table, and the host setup, all
//! stopped and undone when dropped.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
};

use thiserror::Error;

use super::{
    buffer::{ETHERNET_LEN, PACKET_AT},
    coalesce::{Coalescer, Joined, Offer, Outlet},
    flow_table::{FlowTable, Partition},
    neighbours::Neighbours,
    path::{self, DropReason, Verdict},
    setup::{self, Applied, SetupError, Step},
};
use crate::{
    clock::Millis,
    config::{Config, ForwardMethod, ServiceConfig},
    packet::{Offload, VNET_HEADER_LEN},
    table::TableHandle,
};

/// The largest packet read from the TUN device (a TCP or UDP super-packet at most).
const PACKET_MAX: usize = 65_536;

/// Wire packets a super-packet may stand for when it must be cut up here (tun egress).
const SEGMENTS_MAX: usize = 64;
/// The largest segment cut here.
const SEGMENT_MAX: usize = 9_216;
/// Flows a single source address may hold: this share of the table.
const SOURCE_SHARE: usize = 16;
/// How often a worker sweeps expired flows out of its partition (a few shards each time).
const SWEEP_EVERY_MS: u64 = 50;
/// Shards swept each time: every shard is visited about every 0.8 s.
const SHARDS_PER_SWEEP: usize = 4;

/// The packet data plane could not start.
#[derive(Debug, Error)]
pub enum PlaneError {
    /// The TUN device could not be opened.
    #[error(
        "cannot open the TUN device {name}: {source} (lbd needs CAP_NET_ADMIN and /dev/net/tun for nat services)"
    )]
    Tun {
        /// The device.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The host setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `setup: manual` and the host lacks steps.
    #[error("dataplane setup is manual and these are missing (run them, or set `setup: auto`):\n{0}")]
    Missing(String),
    /// The server-side interface or a raw socket could not be used.
    #[error("cannot send packets on {name}: {source}")]
    Interface {
        /// The interface or socket.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A worker thread could not start.
    #[error("cannot start a packet worker: {0}")]
    Worker(io::Error),
}

/// Packets dropped, one counter per [`DropReason`].
#[derive(Debug, Default)]
pub struct Drops([AtomicU64; DropReason::ALL.len()]);

impl Drops {
    /// Counts one packet dropped for `reason`.
    pub fn count(&self, reason: DropReason) {
        self.0[reason as usize].fetch_add(1, Relaxed);
    }

    /// Packets dropped for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize].load(Relaxed)
    }
}

/// What the packet data plane shares with the control plane (listings, metrics): its
/// connection table and its drop counters. It exists before (and without) the plane itself.
#[derive(Debug)]
pub struct PacketShared {
    /// The connection table.
    pub flows: FlowTable,
    /// Packets dropped, by reason.
    pub drops: Drops,
}

/// The running packet data plane.
#[derive(Debug)]
pub struct PacketPlane {
    stop: Arc<AtomicBool>,
    plan: Vec<Step>,
    setup: Option<Applied>,
    steering: Option<Steering>,
}

/// The shared state `config` asks for, for `workers` packet workers: a connection table of
/// `dataplane.max_flows` in one partition per worker (one source may hold a sixteenth of it)
/// and zeroed drop counters.
pub fn shared(config: &Config, workers: usize) -> PacketShared {
    let max_flows = config
        .dataplane
        .as_ref()
        .map_or(1_000_000, |dataplane| dataplane.max_flows) as usize;
    let per_source = (max_flows / SOURCE_SHARE).max(64);
    PacketShared {
        flows: FlowTable::new(max_flows, u32::try_from(per_source).unwrap_or(u32::MAX), workers),
        drops: Drops::default(),
    }
}

/// Whether any service forwards packets (nat, dr, tun) rather than proxying.
pub fn needed(config: &Config) -> bool {
    config.services.iter().any(ServiceConfig::on_packet_plane)
}

impl PacketPlane {
    /// Opens the TUN device with one queue per partition of the connection table, steers
    /// packets to their flow's worker, applies (or checks) the host setup and starts the
    /// workers. `None` when no service forwards packets.
    pub fn start(
        config: &Config,
        table: Arc<TableHandle>,
        shared: Arc<PacketShared>,
    ) -> Result<Option<Self>, PlaneError> {
        let workers = shared.flows.partitions();
        let Some(dataplane) = config.dataplane.as_ref().filter(|_| needed(config)) else {
            return Ok(None);
        };
        // Offload: the kernel hands over TCP/UDP super-packets (GSO) with partial checksums,
        // and takes them back the same way; each is rewritten once, not once per wire packet.
        let first = tun_rs::DeviceBuilder::new()
            .name(&dataplane.tun)
            .offload(true)
            .multi_queue(true)
            .tx_queue_len(4096)
            .build_sync()
            .map_err(|source| PlaneError::Tun {
                name: dataplane.tun.clone(),
                source,
            })?;
        let mut queues = vec![first];
        for _ in 1..workers {
            let queue = queues[0].try_clone().map_err(|source| PlaneError::Tun {
                name: dataplane.tun.clone(),
                source,
            })?;
            queues.push(queue);
        }
        let plan = plan(config);
        let setup = match dataplane.setup {
            crate::config::DataplaneSetup::Auto => Some(setup::apply(&dataplane.tun, &plan)?),
            crate::config::DataplaneSetup::Manual => {
                let missing = setup::missing(&plan);
                if !missing.is_empty() {
                    let commands: Vec<String> = missing.iter().map(|step| format!("  {step}")).collect();
                    return Err(PlaneError::Missing(commands.join("\n")));
                }
                None
            }
        };
        let steering = if workers > 1 {
            Steering::attach(&queues[0], crate::table::packet_vips(config))
        } else {
            None
        };
        let stop = Arc::new(AtomicBool::new(false));
        let neighbours = Neighbours::start(Arc::clone(&stop));
        for (index, queue) in queues.into_iter().enumerate() {
            let egress = Egress::open(config, Arc::clone(&neighbours))?;
            let (table, shared, stop) = (Arc::clone(&table), Arc::clone(&shared), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("lbd-packets-{index}"))
                .spawn(move || {
                    let flows = shared.flows.partition(index);
                    run(&queue, &egress, &table, flows, &shared.drops, &stop);
                })
                .map_err(PlaneError::Worker)?;
        }
        tracing::info!(
            tun = %dataplane.tun,
            queues = workers,
            steered = steering.is_some(),
            max_flows = dataplane.max_flows,
            steps = plan.len(),
            "packet data plane started"
        );
        Ok(Some(Self {
            stop,
            plan,
            setup,
            steering,
        }))
    }

    /// Brings the host setup in line with `config` beside the running one (after a reload or
    /// an admin change): what the new plan adds is applied now, what it drops stays until
    /// [`commit`](Self::commit). On error nothing changed. With `setup: manual`, checks that
    /// the host has the new plan.
    pub fn prepare(&mut self, config: &Config) -> Result<Pending, PlaneError> {
        let plan = plan(config);
        let change = match self.setup.as_mut() {
            Some(applied) => Some(applied.change(&plan)?),
            None => {
                let missing = setup::missing(&plan);
                if !missing.is_empty() {
                    let commands: Vec<String> = missing.iter().map(|step| format!("  {step}")).collect();
                    return Err(PlaneError::Missing(commands.join("\n")));
                }
                None
            }
        };
        Ok(Pending {
            plan,
            change,
            vips: crate::table::packet_vips(config),
        })
    }

    /// Completes a prepared change once the new table is published: the old plan's steps the
    /// new one lacks are undone, and the steering program follows the new VIPs.
    pub fn commit(&mut self, pending: Pending) {
        if let (Some(applied), Some(change)) = (self.setup.as_mut(), pending.change) {
            applied.commit(change);
        }
        if let Some(steering) = self.steering.as_mut() {
            steering.update(pending.vips);
        }
        self.plan = pending.plan;
    }

    /// Undoes a prepared change: the host is as it was before [`prepare`](Self::prepare).
    pub fn revert(&mut self, pending: Pending) {
        if let (Some(applied), Some(change)) = (self.setup.as_mut(), pending.change) {
            applied.revert(change);
        }
    }
}

/// A host setup change applied beside the running one, waiting for the rest of a reload.
#[derive(Debug)]
#[must_use = "commit or revert the change"]
pub struct Pending {
    plan: Vec<Step>,
    change: Option<setup::Change>,
    vips: Vec<IpAddr>,
}

impl Drop for PacketPlane {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

/// The eBPF program that makes the kernel hand each packet to the worker owning its flow
/// ([`steering`](super::steering)), and a queue of the device to replace it through.
#[derive(Debug)]
struct Steering {
    queue: std::os::fd::OwnedFd,
    vips: Vec<IpAddr>,
}

impl Steering {
    /// Loads the program for `vips` and sets it on the device of `queue`. Without it (no
    /// CAP_BPF, an old kernel) packets reach workers by the kernel's own flow hash: every
    /// flow is still found, through another worker's partition; a warning says so.
    fn attach(queue: &tun_rs::SyncDevice, vips: Vec<IpAddr>) -> Option<Self> {
        use std::os::fd::AsFd;
        let attached = queue.as_fd().try_clone_to_owned().and_then(|queue| {
            Self::set(&queue, &vips)?;
            Ok(Self { queue, vips })
        });
        match attached {
            Ok(steering) => Some(steering),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "cannot steer packets to their flow's worker with eBPF; packet workers will share the connection table's locks (see lbd_packets_misqueued_total)"
                );
                None
            }
        }
    }

    /// Replaces the program if the VIPs changed.
    fn update(&mut self, vips: Vec<IpAddr>) {
        use std::os::fd::AsFd;
        if vips == self.vips {
            return;
        }
        match Self::set(&self.queue.as_fd(), &vips) {
            Ok(()) => self.vips = vips,
            Err(error) => {
                tracing::warn!(%error, "cannot update the packet steering program; packets to new VIPs may reach another worker than their flow's")
            }
        }
    }

    fn set(queue: &impl std::os::fd::AsFd, vips: &[IpAddr]) -> io::Result<()> {
        let program = crate::sys::load_socket_filter(&super::steering::program(vips), "lbd_steer")?;
        crate::sys::set_tun_steering(queue.as_fd(), &program)
    }
}

/// The plan for `config`, with the client-facing interfaces of this host.
pub fn plan(config: &Config) -> Vec<Step> {
    let Some(dataplane) = &config.dataplane else {
        return Vec::new();
    };
    let clients = setup::client_interfaces(&dataplane.tun, dataplane.server_interface.as_deref());
    setup::plan(config, &clients)
}

/// Where dr and tun packets leave: an `AF_PACKET` socket on the server-side interface, and a
/// raw IPIP socket (the kernel builds the outer header).
struct Egress {
    frames: Option<(socket2::Socket, super::neighbours::Mac)>,
    neighbours: Arc<Neighbours>,
    ipip: Option<socket2::Socket>,
}

impl Egress {
    fn open(config: &Config, neighbours: Arc<Neighbours>) -> Result<Self, PlaneError> {
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
                    .and_then(|text| super::neighbours::parse_mac(&text))
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
    fn route(&self, buf: &mut [u8], offload: Offload, real: IpAddr) -> bool {
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
    fn tunnel(&self, packet: &mut [u8], offload: Offload, real: IpAddr, cut: &mut Segments) -> bool {
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
struct Segments(Option<(Vec<Vec<u8>>, Vec<usize>)>);

impl Segments {
    fn buffers(&mut self) -> &mut (Vec<Vec<u8>>, Vec<usize>) {
        self.0
            .get_or_insert_with(|| (vec![vec![0; SEGMENT_MAX]; SEGMENTS_MAX], vec![0; SEGMENTS_MAX]))
    }
}

/// One worker: read packets (or super-packets) until the queue is empty, handle each, send
/// each on (UDP datagrams of one flow joined), then wait for more.
fn run(
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
                if let (IpAddr::V4(vip), Ok(refused)) = (vip, crate::packet::Ipv4Packet::parse(packet)) {
                    icmp.clear();
                    icmp.extend_from_slice(&[0; VNET_HEADER_LEN]);
                    crate::packet::port_unreachable(&refused, vip, &mut icmp);
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
                if packet.get(9) == Some(&17) {
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

/// Blocks until the TUN queue has a packet, or a sweep is due (the stop flag is seen then too).
fn wait_readable(queue: &tun_rs::SyncDevice) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(queue.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(SWEEP_EVERY_MS as u16));
}
