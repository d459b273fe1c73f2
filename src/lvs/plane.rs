//! The packet data plane at run time: the TUN device (one queue per worker thread), the
//! connection table and its sweeper, and the host setup, all stopped and undone when dropped.

use std::{
    io,
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
    nat::{self, DropReason, Verdict},
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
}

/// The running packet data plane.
#[derive(Debug)]
pub struct PacketPlane {
    /// The connection table.
    pub flows: Arc<FlowTable>,
    /// Drop counters.
    pub drops: Arc<Drops>,
    stop: Arc<AtomicBool>,
    plan: Vec<Step>,
    setup: Option<Applied>,
}

/// The connection table `config` asks for (`dataplane.max_flows`; one source may hold a
/// sixteenth of it).
pub fn flow_table(config: &Config) -> FlowTable {
    let max_flows = config
        .dataplane
        .as_ref()
        .map_or(1_000_000, |dataplane| dataplane.max_flows) as usize;
    let per_source = (max_flows / SOURCE_SHARE).max(64);
    FlowTable::new(max_flows, u32::try_from(per_source).unwrap_or(u32::MAX))
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
        flows: Arc<FlowTable>,
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
                tracing::warn!(
                    "dataplane setup is manual: lbd changes nothing on the host; it needs:\n{}",
                    plan.iter()
                        .map(|step| format!("  {step}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                None
            }
        };
        let drops = Arc::new(Drops::default());
        let stop = Arc::new(AtomicBool::new(false));
        for (index, queue) in queues.into_iter().enumerate() {
            let (table, flows, drops, stop) = (
                Arc::clone(&table),
                Arc::clone(&flows),
                Arc::clone(&drops),
                Arc::clone(&stop),
            );
            thread::Builder::new()
                .name(format!("lbd-packets-{index}"))
                .spawn(move || run(&queue, &table, &flows, &drops, &stop))
                .map_err(PlaneError::Worker)?;
        }
        let (sweeping, stopping) = (Arc::clone(&flows), Arc::clone(&stop));
        thread::Builder::new()
            .name("lbd-flow-sweeper".to_owned())
            .spawn(move || {
                while !stopping.load(Relaxed) {
                    thread::sleep(Duration::from_millis(50));
                    for _ in 0..4 {
                        sweeping.sweep(Millis::now());
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
        Ok(Some(Self {
            flows,
            drops,
            stop,
            plan,
            setup,
        }))
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

/// One worker: read a packet, handle it, write it back.
fn run(queue: &tun_rs::SyncDevice, table: &TableHandle, flows: &FlowTable, drops: &Drops, stop: &AtomicBool) {
    let mut buf = vec![0u8; PACKET_MAX];
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
        match nat::handle(packet, &table.load(), flows, Millis::now()) {
            Verdict::Send => {
                if let Err(error) = queue.send(packet) {
                    tracing::debug!(%error, "writing to the TUN device failed");
                }
            }
            Verdict::Drop(reason) => {
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
