//! What the packet data plane shares with the control plane (listings, metrics): its
//! connection table and its drop counters. They exist before (and without) the plane itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::{flow_table::FlowTable, path::DropReason};
use crate::config::Config;

/// Flows a single source address may hold: this share of the table.
const SOURCE_SHARE: usize = 16;

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

/// The shared state `config` asks for, for `workers` packet workers: a connection table of
/// `dataplane.max_flows` in one partition per worker (one source may hold a sixteenth of it)
/// and zeroed drop counters.
pub fn shared(config: &Config, workers: usize) -> PacketShared {
    let max_flows = config
        .dataplane
        .as_ref()
        .map_or(1_000_000, |dataplane| dataplane.max_flows) as usize;
    let per_source = (max_flows / SOURCE_SHARE).max(64);
    let flows = FlowTable::new(max_flows, u32::try_from(per_source).unwrap_or(u32::MAX), workers);
    flows.set_sloppy_tcp(
        config
            .dataplane
            .as_ref()
            .is_some_and(|dataplane| dataplane.sloppy_tcp),
    );
    PacketShared {
        flows,
        drops: Drops::default(),
    }
}
