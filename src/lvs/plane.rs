//! The packet data plane at run time: the TUN device (one queue per worker thread, packets
//! steered to the worker owning their flow), the workers, and the host setup, all stopped
//! and undone when dropped. The workers' loop is in `worker`, where packets leave in `egress`.

use std::{
    io,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
};

use super::{
    egress::Egress,
    neighbours::Neighbours,
    setup::{self, Applied, Step},
};
pub use super::{
    error::PlaneError,
    shared::{Drops, PacketShared, shared},
};
use crate::{
    config::{Config, ServiceConfig},
    table::TableHandle,
};

/// The running packet data plane.
#[derive(Debug)]
pub struct PacketPlane {
    stop: Arc<AtomicBool>,
    plan: Vec<Step>,
    setup: Option<Applied>,
    steering: Option<Steering>,
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
        master: bool,
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
        let plan = plan(config, master);
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
                    super::worker::run(&queue, &egress, &table, flows, &shared.drops, &stop);
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

    /// Brings the host setup in line with a new `plan` (and the steering program with `vips`,
    /// at commit) beside the running one (after a reload or an admin change): what the new
    /// plan adds is applied now, what it drops stays until
    /// [`commit`](Self::commit). On error nothing changed. With `setup: manual`, checks that
    /// the host has the new plan.
    pub fn prepare(&mut self, plan: Vec<Step>, vips: Vec<IpAddr>) -> Result<Pending, PlaneError> {
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
        Ok(Pending { plan, change, vips })
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
pub fn plan(config: &Config, master: bool) -> Vec<Step> {
    let Some(dataplane) = &config.dataplane else {
        return Vec::new();
    };
    let links = setup::links(&dataplane.tun, dataplane.server_interface.as_deref());
    setup::plan(config, &links, master)
}
