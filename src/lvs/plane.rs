//! The packet data plane at run time: the TUN device (one queue per worker thread), the
//! connection table and its sweeper, and the host setup, all stopped and undone when dropped.

use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    thread,
    time::Duration,
};

use thiserror::Error;

use super::{
    flow_table::FlowTable,
    neighbours::Neighbours,
    path::{self, DropReason, Verdict},
    setup::{self, Applied, SetupError, Step},
};
use crate::{
    clock::Millis,
    config::{Config, ForwardMethod},
    table::TableHandle,
};

/// The largest packet read from the TUN device.
const PACKET_MAX: usize = 65_536;
/// Flows a single source address may hold: this share of the table.
const SOURCE_SHARE: usize = 16;

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

/// Packets dropped, by reason.
#[derive(Debug, Default)]
pub struct Drops {
    /// Not valid IPv4.
    pub malformed: AtomicU64,
    /// Non-first fragments.
    pub fragments: AtomicU64,
    /// No flow or real.
    pub no_flow: AtomicU64,
    /// The table refused a flow.
    pub table_full: AtomicU64,
    /// dr: the real's MAC is not known yet (or sending failed); tun: sending failed.
    pub no_neighbour: AtomicU64,
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
}

/// The shared state `config` asks for: a connection table of `dataplane.max_flows` (one source
/// may hold a sixteenth of it) and zeroed drop counters.
pub fn shared(config: &Config) -> PacketShared {
    let max_flows = config
        .dataplane
        .as_ref()
        .map_or(1_000_000, |dataplane| dataplane.max_flows) as usize;
    let per_source = (max_flows / SOURCE_SHARE).max(64);
    PacketShared {
        flows: FlowTable::new(max_flows, u32::try_from(per_source).unwrap_or(u32::MAX)),
        drops: Drops::default(),
    }
}

/// Whether any service forwards packets (nat, dr, tun) rather than proxying.
pub fn needed(config: &Config) -> bool {
    config.services.iter().any(|service| {
        std::iter::once(service.forward)
            .chain(service.reals.iter().map(|real| real.forward_in(service)))
            .any(|forward| forward != ForwardMethod::Proxy)
    })
}

impl PacketPlane {
    /// Opens the TUN device with `workers` queues, applies (or checks) the host setup and
    /// starts the workers. `None` when no service forwards packets.
    pub fn start(
        config: &Config,
        table: Arc<TableHandle>,
        shared: Arc<PacketShared>,
        workers: usize,
    ) -> Result<Option<Self>, PlaneError> {
        let Some(dataplane) = config.dataplane.as_ref().filter(|_| needed(config)) else {
            return Ok(None);
        };
        let first = tun_rs::DeviceBuilder::new()
            .name(&dataplane.tun)
            .multi_queue(true)
            .tx_queue_len(4096)
            .build_sync()
            .map_err(|source| PlaneError::Tun {
                name: dataplane.tun.clone(),
                source,
            })?;
        let mut queues = vec![first];
        for _ in 1..workers.max(1) {
            let queue = queues[0].try_clone().map_err(|source| PlaneError::Tun {
                name: dataplane.tun.clone(),
                source,
            })?;
            queues.push(queue);
        }
        let plan = plan(config);
        let setup = match dataplane.setup {
            crate::config::DataplaneSetup::Auto => Some(setup::apply(&plan)?),
            crate::config::DataplaneSetup::Manual => {
                let missing = setup::missing(&plan);
                if !missing.is_empty() {
                    let commands: Vec<String> = missing.iter().map(|step| format!("  {step}")).collect();
                    return Err(PlaneError::Missing(commands.join("\n")));
                }
                None
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let neighbours = Neighbours::start(Arc::clone(&stop));
        for (index, queue) in queues.into_iter().enumerate() {
            let egress = Egress::open(config, Arc::clone(&neighbours))?;
            let (table, shared, stop) = (Arc::clone(&table), Arc::clone(&shared), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("lbd-packets-{index}"))
                .spawn(move || run(&queue, &egress, &table, &shared.flows, &shared.drops, &stop))
                .map_err(PlaneError::Worker)?;
        }
        let (sweeping, stopping) = (Arc::clone(&shared), Arc::clone(&stop));
        thread::Builder::new()
            .name("lbd-flow-sweeper".to_owned())
            .spawn(move || {
                while !stopping.load(Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    for _ in 0..4 {
                        sweeping.flows.sweep(Millis::now());
                    }
                }
            })
            .map_err(PlaneError::Worker)?;
        tracing::info!(
            tun = %dataplane.tun,
            queues = workers.max(1),
            max_flows = dataplane.max_flows,
            steps = plan.len(),
            "packet data plane started"
        );
        Ok(Some(Self { stop, plan, setup }))
    }

    /// Brings the host setup in line with a new config (after a reload or an admin change).
    pub fn reconfigure(&mut self, config: &Config) -> Result<(), PlaneError> {
        let plan = plan(config);
        if plan == self.plan || self.setup.is_none() {
            return Ok(());
        }
        if let Some(mut old) = self.setup.take() {
            old.undo_all();
        }
        self.setup = Some(setup::apply(&plan)?);
        self.plan = plan;
        Ok(())
    }
}

impl Drop for PacketPlane {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
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
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(libc::IPPROTO_IPIP)),
            )
            .map_err(|source| PlaneError::Interface {
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

    /// Sends `packet` in an Ethernet frame to `real`'s MAC; false if it is not known yet.
    fn route(&self, packet: &[u8], real: Ipv4Addr, frame: &mut Vec<u8>) -> bool {
        let (Some((socket, source)), Some(destination)) = (&self.frames, self.neighbours.mac(real)) else {
            return false;
        };
        frame.clear();
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(source);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(packet);
        socket.send(frame).is_ok()
    }

    /// Sends `packet` inside IPIP to `real`.
    fn tunnel(&self, packet: &[u8], real: Ipv4Addr) -> bool {
        let Some(socket) = &self.ipip else {
            return false;
        };
        let to = socket2::SockAddr::from(SocketAddrV4::new(real, 0));
        socket.send_to(packet, &to).is_ok()
    }
}

/// One worker: read a packet, handle it, send it on.
fn run(
    queue: &tun_rs::SyncDevice,
    egress: &Egress,
    table: &TableHandle,
    flows: &FlowTable,
    drops: &Drops,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; PACKET_MAX];
    let mut frame = Vec::with_capacity(PACKET_MAX + 14);
    let mut icmp = Vec::with_capacity(128);
    while !stop.load(Relaxed) {
        let len = match queue.recv(&mut buf) {
            Ok(len) => len,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "reading the TUN device failed; this packet worker stops");
                return;
            }
        };
        let packet = &mut buf[..len];
        match path::handle(packet, &table.load(), flows, Millis::now()) {
            Verdict::Send => {
                if let Err(error) = queue.send(packet) {
                    tracing::debug!(%error, "writing to the TUN device failed");
                }
            }
            Verdict::Route(real) => {
                if !egress.route(packet, real, &mut frame) {
                    tracing::trace!(%real, "no MAC for the real yet (or the send failed); packet dropped");
                    drops.no_neighbour.fetch_add(1, Relaxed);
                }
            }
            Verdict::Unreachable(vip) => {
                if let Ok(refused) = crate::packet::Ipv4Packet::parse(packet) {
                    crate::packet::port_unreachable(&refused, vip, &mut icmp);
                    let _ = queue.send(&icmp);
                }
            }
            Verdict::Tunnel(real) => {
                if !egress.tunnel(packet, real) {
                    drops.no_neighbour.fetch_add(1, Relaxed);
                }
            }
            Verdict::Drop(reason) => {
                tracing::trace!(?reason, len, "packet dropped");
                let counter = match reason {
                    DropReason::Malformed => &drops.malformed,
                    DropReason::Fragment => &drops.fragments,
                    DropReason::NoFlow => &drops.no_flow,
                    DropReason::TableFull => &drops.table_full,
                };
                counter.fetch_add(1, Relaxed);
            }
        }
    }
}
