//! Flow synchronisation in the packet data plane, as IPVS does it: which flows a master hands
//! to its backups and when, and the bounded outbox the workers put them in for the sender.
//! The wire format is [`packet::sync`](crate::packet::sync); the sockets are the `ha`
//! module's.
//!
//! When (`ip_vs_sync_conn_needed` with IPVS's default sysctls `sync_threshold = 3`,
//! `sync_period = 50`): a TCP flow only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT or
//! TIME_WAIT; a change into any of them but ESTABLISHED goes at once; otherwise (and for UDP)
//! at the 3rd packet from the client, then every 50th (53rd, 103rd, …). A flow's persistence
//! template goes with it.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
};

use super::tcp_state::{State, TcpState};
use crate::{config::ForwardMethod, packet::sync::SyncConn};

/// IPVS's `sync_threshold`: a flow is first sent at this packet from the client.
pub const SYNC_THRESHOLD: u32 = 3;
/// IPVS's `sync_period`: then every this many packets.
pub const SYNC_PERIOD: u32 = 50;
/// Flows waiting for the sender at most; more are dropped (and counted) until it catches up.
pub const OUTBOX_CAPACITY: usize = 65_536;

/// What a flow's entry keeps for synchronisation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SyncMark {
    /// Packets from the client so far (IPVS's `in_pkts`).
    packets_in: u32,
    /// The state it was last sent in (IPVS's `old_state`).
    sent_state: Option<State>,
    /// Made from a master's message, not scheduled here.
    pub(crate) received: bool,
}

impl SyncMark {
    /// A mark for an entry received from a master, in `state`.
    pub(crate) fn received(state: State) -> Self {
        Self {
            packets_in: SYNC_THRESHOLD,
            sent_state: Some(state),
            received: true,
        }
    }

    /// Counts one packet from the client of a flow now in `state`; whether the flow is to be
    /// sent to the backups now (never unless this director is the `master`).
    pub(crate) fn packet_in(&mut self, state: State, master: bool) -> bool {
        self.packets_in = self.packets_in.wrapping_add(1);
        if !master {
            return false;
        }
        let periodic = self.packets_in % SYNC_PERIOD == SYNC_THRESHOLD;
        if let State::Tcp(tcp) = state {
            if !matches!(
                tcp,
                TcpState::Established
                    | TcpState::FinWait
                    | TcpState::Close
                    | TcpState::CloseWait
                    | TcpState::TimeWait
            ) {
                return false;
            }
            let changed = self.sent_state != Some(state);
            if !(changed && tcp != TcpState::Established || periodic) {
                return false;
            }
        } else if !periodic {
            return false;
        }
        self.sent_state = Some(state);
        true
    }
}

/// What the sync link has done, for `/metrics` and `lbadm status`.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Messages sent.
    pub messages_sent: AtomicU64,
    /// Messages taken.
    pub messages_received: AtomicU64,
    /// Messages dropped: not from a peer, another sync id, malformed.
    pub messages_refused: AtomicU64,
    /// Flows and templates sent.
    pub flows_sent: AtomicU64,
    /// Flows and templates taken into the table.
    pub flows_received: AtomicU64,
    /// Entries passed over (no such service or real here, an unknown protocol or state).
    pub flows_unbound: AtomicU64,
    /// When the last message was taken (`Millis`), 0 = never.
    pub last_received: AtomicU64,
}

/// A packet plane's flow sync: whether this director is the master (only a master sends),
/// the flows its workers hand to the sync sender, and what the sync link has done.
#[derive(Debug, Default)]
pub struct FlowSync {
    master: AtomicBool,
    queue: Mutex<Vec<SyncConn>>,
    dropped: AtomicU64,
    /// What the sync link has done.
    pub counters: SyncCounters,
}

impl FlowSync {
    /// Whether this director sends its flows (it is the master).
    pub fn is_master(&self) -> bool {
        self.master.load(Relaxed)
    }

    /// Starts or stops sending. Stopping empties the outbox.
    pub fn set_master(&self, master: bool) {
        self.master.store(master, Relaxed);
        if !master {
            self.take();
        }
    }

    /// Queues `conn` for the sender; dropped (and counted) when the outbox is full.
    pub(crate) fn push(&self, conn: SyncConn) {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() >= OUTBOX_CAPACITY {
            self.dropped.fetch_add(1, Relaxed);
        } else {
            queue.push(conn);
        }
    }

    /// Everything queued, oldest first; the outbox is then empty.
    pub fn take(&self) -> Vec<SyncConn> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Flows dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

/// The forwarding bits of the sync flags for `forward` (IPVS's `IP_VS_CONN_F_*`).
pub(crate) fn forward_flags(forward: ForwardMethod) -> u32 {
    use crate::packet::sync::flags;
    match forward {
        ForwardMethod::Nat | ForwardMethod::Proxy => flags::MASQ,
        ForwardMethod::Dr => flags::DROUTE,
        ForwardMethod::Tun => flags::TUNNEL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(mark: &mut SyncMark, states: &[State]) -> Vec<u32> {
        states
            .iter()
            .enumerate()
            .filter_map(|(i, &state)| mark.packet_in(state, true).then_some(i as u32 + 1))
            .collect()
    }

    #[test]
    fn tcp_is_sent_at_the_third_packet_then_every_fiftieth_and_at_closing_states() {
        let mut mark = SyncMark::default();
        let mut states = vec![State::Tcp(TcpState::SynRecv)];
        states.extend(std::iter::repeat_n(State::Tcp(TcpState::Established), 120));
        assert_eq!(sent(&mut mark, &states), [3, 53, 103]);
        // A FIN moves the flow to FIN_WAIT: sent at once, then not again until the period.
        assert!(mark.packet_in(State::Tcp(TcpState::FinWait), true));
        assert!(!mark.packet_in(State::Tcp(TcpState::FinWait), true));
        // A backup counts packets but sends nothing.
        assert!(!SyncMark::default().packet_in(State::Tcp(TcpState::FinWait), false));
        // Half-open flows are never sent.
        let mut half_open = SyncMark::default();
        assert!(sent(&mut half_open, &[State::Tcp(TcpState::SynRecv); 60]).is_empty());
    }

    #[test]
    fn udp_follows_the_period_only() {
        let mut mark = SyncMark::default();
        assert_eq!(sent(&mut mark, &[State::Udp; 110]), [3, 53, 103]);
    }

    #[test]
    fn the_outbox_is_bounded_and_only_a_master_keeps_it() {
        let outbox = FlowSync::default();
        let conn = SyncConn {
            protocol: 6,
            flags: 0,
            state: 1,
            client: "192.0.2.1:1".parse().unwrap(),
            vip: "192.0.2.100:80".parse().unwrap(),
            real: "10.0.0.1:80".parse().unwrap(),
            fwmark: 0,
            timeout: 900,
            persistence_engine: None,
        };
        for _ in 0..OUTBOX_CAPACITY + 5 {
            outbox.push(conn.clone());
        }
        assert_eq!(outbox.dropped(), 5);
        assert_eq!(outbox.take().len(), OUTBOX_CAPACITY);
        outbox.push(conn);
        outbox.set_master(false);
        assert!(outbox.take().is_empty());
    }
}
