//! The connection table of the packet data plane: one entry per flow (client → VIP), with the
//! real it was scheduled to, its IPVS state and its deadline.
//!
//! It is bounded by `max_flows`. When it is full, a new flow first evicts the oldest
//! half-open entry; established flows are never pushed out, so a flood of spoofed SYNs can
//! only replace other half-open entries (which also expire after
//! [`EMBRYONIC_TIMEOUT`](super::tcp_state::EMBRYONIC_TIMEOUT)). One source address may hold
//! at most a share of the table.
//!
//! The table is split into one [`Partition`] per packet worker: a flow lives in the partition
//! of its client's [owner](super::steering::owner), which both directions of the flow know.
//! The kernel's steering program sends every packet to its owner's worker, so each worker
//! takes only its own partition's locks (the control plane takes them too, for listings).
//! A packet that reaches another worker is still handled, and counted as misqueued. Each
//! partition is split into shards, and its worker expires flows by sweeping one shard at a
//! time, never the whole table at once.

use std::{
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
};

pub use super::tcp_state::State;
use super::{
    sync::{FlowSync, SyncMark, forward_flags},
    tcp_state::{Direction, TcpState},
};
use crate::{
    clock::Millis,
    config::{ForwardMethod, Protocol, ServiceKey, Timeouts},
    packet::{
        TcpFlags,
        sync::{SyncConn, flags as sync_flags, template_state},
    },
    table::{Scheduled, ServiceTable},
};

/// Shards of each partition.
const SHARDS: usize = 64;

/// The identity of a flow: protocol, client, and the virtual service it addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The VIP and port.
    pub vip: SocketAddr,
}

/// How a NAT reply names its flow: the real it comes from and the client it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The real server's address and port.
    pub real: SocketAddr,
    /// The client's address and port.
    pub client: SocketAddr,
}

/// One flow.
#[derive(Debug)]
struct Entry {
    scheduled: Scheduled,
    state: State,
    expires: Millis,
    /// Its flow-sync bookkeeping.
    mark: SyncMark,
    /// A health check's own connection through the VIP's path ([`FlowTable::pin`]): it
    /// reaches its real whatever the real's verdict.
    pinned: bool,
}

/// What a flow looks like from outside the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowView {
    /// The flow.
    pub key: FlowKey,
    /// The real it goes to.
    pub real: SocketAddr,
    /// Its state.
    pub state: State,
    /// When it expires without traffic.
    pub expires: Millis,
    /// Whether it came from another director's flow sync.
    pub synced: bool,
}

/// Why a synchronised entry was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsynced {
    /// Not TCP or UDP.
    Protocol,
    /// A state number this protocol does not have.
    State,
    /// No such service here (or, for a template, not a persistent one).
    NoService,
    /// No such real in the service here.
    NoReal,
    /// The table is full.
    Full,
}

/// Why a packet found no flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The table is full of established flows.
    Full,
    /// This source address holds its share of the table already.
    SourceCap,
    /// The scheduler found no real for a new flow.
    NoReal,
    /// The packet may not start a flow: a TCP packet without SYN (with `sloppy_tcp`: a
    /// reset).
    NotNew,
    /// The service refuses the client (`allow`, `deny`, `source_limits`).
    Refused,
}

#[derive(Debug, Default)]
struct Shard {
    flows: HashMap<FlowKey, Entry, ahash::RandomState>,
    replies: HashMap<ReplyKey, FlowKey, ahash::RandomState>,
    /// Half-open flows, oldest first (may hold keys that became established or expired).
    embryonic: VecDeque<FlowKey>,
    per_source: HashMap<IpAddr, u32, ahash::RandomState>,
}

/// The connection table.
#[derive(Debug)]
pub struct FlowTable {
    /// `SHARDS` per partition, partition by partition.
    shards: Vec<Mutex<Shard>>,
    partitions: usize,
    hasher: ahash::RandomState,
    per_shard: usize,
    max_flows: usize,
    per_source: u32,
    count: AtomicUsize,
    /// The next shard each partition's sweep visits.
    next_sweep: Vec<AtomicUsize>,
    misqueued: AtomicU64,
    /// Flows for the backups, while this director is the master; what flow sync did.
    pub sync: FlowSync,
    /// Entries taken from another director's flow sync.
    synced: AtomicUsize,
    /// IPVS's `sloppy_tcp`: any TCP packet but a reset may start a flow.
    sloppy_tcp: AtomicBool,
}

/// One worker's view of the table: lookups from that worker. Cheap to make.
#[derive(Debug, Clone, Copy)]
pub struct Partition<'a> {
    table: &'a FlowTable,
    index: usize,
}

impl FlowTable {
    /// A table of at most `max_flows` flows, and at most `per_source` per source address,
    /// in one partition per packet worker.
    pub fn new(max_flows: usize, per_source: u32, partitions: usize) -> Self {
        let partitions = partitions.max(1);
        Self {
            shards: (0..SHARDS * partitions).map(|_| Mutex::default()).collect(),
            partitions,
            hasher: ahash::RandomState::new(),
            per_shard: max_flows.div_ceil(SHARDS * partitions).max(1),
            max_flows: max_flows.max(1),
            per_source: per_source.max(1),
            count: AtomicUsize::new(0),
            next_sweep: (0..partitions).map(|_| AtomicUsize::new(0)).collect(),
            misqueued: AtomicU64::new(0),
            sync: FlowSync::default(),
            synced: AtomicUsize::new(0),
            sloppy_tcp: AtomicBool::new(false),
        }
    }

    /// The partition of worker `index` (taken modulo the number of partitions).
    pub fn partition(&self, index: usize) -> Partition<'_> {
        Partition {
            table: self,
            index: index % self.partitions,
        }
    }

    /// How many partitions (packet workers) the table was made for.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Packets handled by a worker other than the owner of their flow (none while the kernel
    /// steers packets with `steering::program`).
    pub fn misqueued(&self) -> u64 {
        self.misqueued.load(Relaxed)
    }

    /// Lets any TCP packet but a reset start a flow (`dataplane.sloppy_tcp`), or only a SYN.
    pub fn set_sloppy_tcp(&self, sloppy: bool) {
        self.sloppy_tcp.store(sloppy, Relaxed);
    }

    /// Entries in the table taken from another director's flow sync.
    pub fn synced(&self) -> usize {
        self.synced.load(Relaxed)
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard of `client`'s flows, looked up from worker `from`.
    fn shard(&self, client: &SocketAddr, from: usize) -> &Mutex<Shard> {
        let owner = super::steering::owner(client.ip(), self.partitions);
        if owner != from {
            self.misqueued.fetch_add(1, Relaxed);
        }
        let within = (self.hasher.hash_one(client.ip()) as usize) % SHARDS;
        &self.shards[owner * SHARDS + within]
    }

    /// Every flow, for listings.
    pub fn list(&self) -> Vec<FlowView> {
        let mut views = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            views.extend(shard.flows.iter().map(|(key, entry)| FlowView {
                key: *key,
                real: entry.scheduled.address,
                state: entry.state,
                expires: entry.expires,
                synced: entry.mark.received,
            }));
        }
        views
    }

    /// Flows by protocol: (TCP, UDP).
    pub fn count_by_protocol(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for key in shard.flows.keys() {
                match key.protocol {
                    Protocol::Tcp => counts.0 += 1,
                    Protocol::Udp => counts.1 += 1,
                }
            }
        }
        counts
    }

    /// Evicts the oldest half-open flow of `shard`; false if it has none.
    fn evict_embryonic(&self, shard: &mut Shard, now: Millis) -> bool {
        while let Some(key) = shard.embryonic.pop_front() {
            if shard
                .flows
                .get(&key)
                .is_some_and(|entry| entry.state.is_embryonic())
            {
                self.remove(shard, &key, now);
                return true;
            }
        }
        false
    }

    /// Counts a packet from the client of the flow at `key`; when it is due (and this
    /// director is the master), queues the flow, and its persistence template, for the
    /// backups.
    fn sync_if_due(&self, key: &FlowKey, entry: &mut Entry, timeouts: &Timeouts) {
        if !entry.mark.packet_in(entry.state, self.sync.is_master()) {
            return;
        }
        let (conn, template) = sync_conns(key, entry, timeouts);
        self.sync.push(conn);
        if let Some(template) = template {
            self.sync.push(template);
        }
    }

    /// How many shards [`export`](Self::export) walks.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The flows and persistence templates of shard `index`, as a master sends them: a full
    /// dump for a backup that joins is every shard's, taken one at a time (so it holds one
    /// shard's lock, and one shard's entries, at once).
    pub fn export(&self, index: usize, timeouts: &Timeouts, now: Millis) -> Vec<SyncConn> {
        let mut conns = Vec::new();
        let Some(shard) = self.shards.get(index) else {
            return conns;
        };
        let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, entry) in shard.flows.iter().filter(|(_, entry)| entry.expires > now) {
            let (conn, template) = sync_conns(key, entry, timeouts);
            conns.push(conn);
            conns.extend(template);
        }
        conns
    }

    /// Takes a flow or a persistence template that the master sent: bound to the real of
    /// `services` with its address (ActiveConn / InActConn counted as on the master), in its
    /// state, expiring after the timeout it came with. An entry of this flow to another real
    /// is replaced, unless the message only closes that other one (as IPVS's backups do).
    pub fn install(&self, conn: &SyncConn, services: &ServiceTable, now: Millis) -> Result<(), Unsynced> {
        let protocol = match conn.protocol {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            _ => return Err(Unsynced::Protocol),
        };
        let service = services
            .service(&ServiceKey {
                protocol,
                listen: conn.vip,
            })
            .ok_or(Unsynced::NoService)?;
        let expires = now.plus(u64::from(conn.timeout) * 1000);
        if conn.is_template() {
            let persistence = service.persistence.as_ref().ok_or(Unsynced::NoService)?;
            service.position(conn.real).ok_or(Unsynced::NoReal)?;
            persistence.install(conn.client.ip(), conn.real, expires);
            return Ok(());
        }
        let state = match protocol {
            Protocol::Tcp => State::Tcp(TcpState::from_number(conn.state).ok_or(Unsynced::State)?),
            Protocol::Udp if conn.state == 0 => State::Udp,
            Protocol::Udp => return Err(Unsynced::State),
        };
        let real = &service.reals[service.position(conn.real).ok_or(Unsynced::NoReal)?];
        let key = FlowKey {
            protocol,
            client: conn.client,
            vip: conn.vip,
        };
        let mut shard = self.owner_shard(&key.client);
        if let Some(entry) = shard.flows.get_mut(&key) {
            if entry.scheduled.address == conn.real {
                entry.state = state;
                entry.expires = expires;
                entry.mark = SyncMark::received(state);
                let active = matches!(state, State::Tcp(tcp) if tcp.is_active());
                entry.scheduled.binding.set_active(active);
                return Ok(());
            }
            if conn.flags & sync_flags::INACTIVE != 0 {
                return Ok(());
            }
            self.remove(&mut shard, &key, now);
        }
        let reserved = self.count.fetch_add(1, Relaxed) + 1;
        if shard.flows.len() >= self.per_shard || reserved > self.max_flows {
            self.count.fetch_sub(1, Relaxed);
            return Err(Unsynced::Full);
        }
        let mut binding = real.state.bind();
        binding.set_active(matches!(state, State::Tcp(tcp) if tcp.is_active()));
        let entry = Entry {
            scheduled: Scheduled {
                address: real.address,
                forward: real.forward,
                proxy_protocol: real.proxy_protocol,
                binding,
                template: None,
                admitted: None,
            },
            state,
            expires,
            mark: SyncMark::received(state),
            pinned: false,
        };
        if entry.state.is_embryonic() {
            shard.embryonic.push_back(key);
        }
        shard.replies.insert(
            ReplyKey {
                protocol,
                real: real.address,
                client: key.client,
            },
            key,
        );
        *shard.per_source.entry(key.client.ip()).or_insert(0) += 1;
        shard.flows.insert(key, entry);
        self.synced.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Ends the flow at `key` at `now`.
    /// Opens a flow at `key` to `real` for `hold`, before its first packet: a health check
    /// that proves a real's VIP path (`via_vip`) opens one for its own connection, so that
    /// lbd forwards the check's packets to that real exactly as a client's (dr: to its MAC,
    /// tun: inside IPIP), rather than scheduling them. A flow already at `key` is replaced.
    pub fn pin(
        &self,
        key: FlowKey,
        real: &crate::table::Real,
        hold: Millis,
        now: Millis,
    ) -> Result<(), Unsynced> {
        let mut shard = self.owner_shard(&key.client);
        self.remove(&mut shard, &key, now);
        let reserved = self.count.fetch_add(1, Relaxed) + 1;
        if shard.flows.len() >= self.per_shard || reserved > self.max_flows {
            self.count.fetch_sub(1, Relaxed);
            return Err(Unsynced::Full);
        }
        let state = match key.protocol {
            Protocol::Tcp => State::Tcp(TcpState::None),
            Protocol::Udp => State::Udp,
        };
        let entry = Entry {
            scheduled: Scheduled {
                address: real.address,
                forward: real.forward,
                proxy_protocol: real.proxy_protocol,
                binding: real.state.bind(),
                template: None,
                admitted: None,
            },
            state,
            expires: now.plus(hold.0),
            mark: SyncMark::default(),
            pinned: true,
        };
        shard.replies.insert(
            ReplyKey {
                protocol: key.protocol,
                real: real.address,
                client: key.client,
            },
            key,
        );
        *shard.per_source.entry(key.client.ip()).or_insert(0) += 1;
        shard.flows.insert(key, entry);
        Ok(())
    }

    /// Removes the flow at `key`, if there is one (a finished check's).
    pub fn unpin(&self, key: FlowKey, now: Millis) {
        let mut shard = self.owner_shard(&key.client);
        self.remove(&mut shard, &key, now);
    }

    /// The shard of `client` in its owner's partition (the worker its packets are steered
    /// to), locked: where flows made outside the packet path (synced, pinned) go.
    fn owner_shard(&self, client: &SocketAddr) -> std::sync::MutexGuard<'_, Shard> {
        let owner = super::steering::owner(client.ip(), self.partitions);
        self.shard(client, owner)
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the flows of service `service` whose real `chosen` picks (`lbadm kill-flows`,
    /// `on_down: shutdown`): their packets find no flow any more. Returns how many.
    pub fn kill(&self, service: ServiceKey, chosen: impl Fn(&SocketAddr) -> bool, now: Millis) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                self.drop_where(
                    &mut shard,
                    |key, entry| {
                        key.protocol == service.protocol
                            && key.vip == service.listen
                            && chosen(&entry.scheduled.address)
                    },
                    |_| now,
                )
            })
            .sum()
    }

    /// Removes the flows of `shard` that `doomed` picks, each ended at the time `ended`
    /// gives; returns how many.
    fn drop_where(
        &self,
        shard: &mut Shard,
        mut doomed: impl FnMut(&FlowKey, &Entry) -> bool,
        ended: impl Fn(&Entry) -> Millis,
    ) -> usize {
        let Shard {
            flows,
            replies,
            embryonic,
            per_source,
        } = shard;
        let before = flows.len();
        flows.retain(|key, entry| {
            if !doomed(key, entry) {
                return true;
            }
            entry.scheduled.end(ended(entry));
            if entry.mark.received {
                self.synced.fetch_sub(1, Relaxed);
            }
            forget(replies, per_source, key, entry);
            false
        });
        let dropped = before - flows.len();
        self.count.fetch_sub(dropped, Relaxed);
        embryonic.retain(|key| flows.get(key).is_some_and(|entry| entry.state.is_embryonic()));
        dropped
    }

    fn remove(&self, shard: &mut Shard, key: &FlowKey, now: Millis) {
        let Some(entry) = shard.flows.remove(key) else {
            return;
        };
        entry.scheduled.end(now);
        if entry.mark.received {
            self.synced.fetch_sub(1, Relaxed);
        }
        forget(&mut shard.replies, &mut shard.per_source, key, &entry);
        self.count.fetch_sub(1, Relaxed);
    }
}

/// Removes what a shard keeps about a flow besides its entry: its reply key and its share
/// of its source's count.
fn forget(
    replies: &mut HashMap<ReplyKey, FlowKey, ahash::RandomState>,
    per_source: &mut HashMap<IpAddr, u32, ahash::RandomState>,
    key: &FlowKey,
    entry: &Entry,
) {
    replies.remove(&ReplyKey {
        protocol: key.protocol,
        real: entry.scheduled.address,
        client: key.client,
    });
    if let Some(count) = per_source.get_mut(&key.client.ip()) {
        *count -= 1;
        if *count == 0 {
            per_source.remove(&key.client.ip());
        }
    }
}

impl Partition<'_> {
    /// A packet from a client to a VIP: the flow's real and method, and whether it is a pinned
    /// check's flow, its state advanced by `flags`. With no flow yet, `schedule` is asked for
    /// a real (TCP: only for a SYN).
    pub fn inbound(
        &self,
        key: FlowKey,
        flags: Option<TcpFlags>,
        now: Millis,
        timeouts: &Timeouts,
        schedule: impl FnOnce() -> Result<Scheduled, Refusal>,
    ) -> Result<(SocketAddr, ForwardMethod, bool), Refusal> {
        let table = self.table;
        let mut shard = table
            .shard(&key.client, self.index)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = shard.flows.get_mut(&key) {
            let expired = entry.expires <= now;
            // A new SYN on an expired or closed entry starts a new flow (IPVS conn_reuse_mode).
            let reuse = flags.is_some_and(|f| f.syn && !f.ack)
                && (expired || matches!(entry.state, State::Tcp(TcpState::TimeWait | TcpState::Close)));
            if !reuse {
                let direction = input_direction(entry.scheduled.forward);
                advance(entry, flags, direction, now, timeouts);
                table.sync_if_due(&key, entry, timeouts);
                return Ok((entry.scheduled.address, entry.scheduled.forward, entry.pinned));
            }
            table.remove(&mut shard, &key, now);
        }
        let starts = match flags {
            Some(f) if table.sloppy_tcp.load(Relaxed) => !f.rst,
            Some(f) => f.syn && !f.ack,
            None => true,
        };
        if !starts {
            return Err(Refusal::NotNew);
        }
        if shard.per_source.get(&key.client.ip()).copied().unwrap_or(0) >= table.per_source {
            return Err(Refusal::SourceCap);
        }
        // Reserve a place first, so that workers filling other shards at the same time cannot
        // together pass `max_flows`.
        let reserved = table.count.fetch_add(1, Relaxed) + 1;
        let full = shard.flows.len() >= table.per_shard || reserved > table.max_flows;
        if full && !table.evict_embryonic(&mut shard, now) {
            table.count.fetch_sub(1, Relaxed);
            return Err(Refusal::Full);
        }
        let scheduled = match schedule() {
            Ok(scheduled) => scheduled,
            Err(refusal) => {
                table.count.fetch_sub(1, Relaxed);
                return Err(refusal);
            }
        };
        let (real, forward) = (scheduled.address, scheduled.forward);
        let direction = input_direction(forward);
        let state = match key.protocol {
            Protocol::Tcp => State::Tcp(TcpState::None),
            Protocol::Udp => State::Udp,
        };
        let mut entry = Entry {
            scheduled,
            state,
            expires: now,
            mark: SyncMark::default(),
            pinned: false,
        };
        advance(&mut entry, flags, direction, now, timeouts);
        table.sync_if_due(&key, &mut entry, timeouts);
        if entry.state.is_embryonic() {
            shard.embryonic.push_back(key);
            if shard.embryonic.len() > 2 * table.per_shard {
                let flows = std::mem::take(&mut shard.flows);
                shard
                    .embryonic
                    .retain(|key| flows.get(key).is_some_and(|e| e.state.is_embryonic()));
                shard.flows = flows;
            }
        }
        shard.replies.insert(
            ReplyKey {
                protocol: key.protocol,
                real,
                client: key.client,
            },
            key,
        );
        *shard.per_source.entry(key.client.ip()).or_insert(0) += 1;
        shard.flows.insert(key, entry);
        Ok((real, forward, false))
    }

    /// A NAT reply from a real to a client: the flow it belongs to, its state advanced;
    /// `(packets, bytes)` are added to the real's outbound counters.
    pub fn reply(
        &self,
        reply: ReplyKey,
        flags: Option<TcpFlags>,
        (packets, bytes): (u64, u64),
        now: Millis,
        timeouts: &Timeouts,
    ) -> Option<FlowKey> {
        let table = self.table;
        let mut shard = table
            .shard(&reply.client, self.index)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = *shard.replies.get(&reply)?;
        let entry = shard.flows.get_mut(&key)?;
        if entry.expires <= now {
            return None;
        }
        advance(entry, flags, Direction::Output, now, timeouts);
        let real = entry.scheduled.binding.real();
        real.packets_out.fetch_add(packets, Relaxed);
        real.bytes_out.fetch_add(bytes, Relaxed);
        Some(key)
    }

    /// The flow a NAT reply belongs to, without touching it (ICMP errors).
    pub fn find_reply(&self, reply: ReplyKey) -> Option<FlowKey> {
        let table = self.table;
        let shard = table
            .shard(&reply.client, self.index)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.replies.get(&reply).copied()
    }

    /// The real of a flow and how its packets go there, without touching it (ICMP errors).
    pub fn real_of(&self, key: &FlowKey) -> Option<(SocketAddr, ForwardMethod)> {
        let table = self.table;
        let shard = table
            .shard(&key.client, self.index)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard
            .flows
            .get(key)
            .map(|entry| (entry.scheduled.address, entry.scheduled.forward))
    }

    /// Removes the expired flows of this partition's next shard; its worker calls it often
    /// (each of its shards is visited once per `SHARDS` calls). Returns how many expired.
    pub fn sweep(&self, now: Millis) -> usize {
        let table = self.table;
        let next = table.next_sweep[self.index].fetch_add(1, Relaxed) % SHARDS;
        let mut shard = table.shards[self.index * SHARDS + next]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // It ended when it expired, whenever the sweep came by.
        table.drop_where(&mut shard, |_, entry| entry.expires <= now, |entry| entry.expires)
    }
}

/// Client packets of a NAT flow use IPVS's INPUT table (the director sees the replies too);
/// DR and TUN flows its INPUT-ONLY table.
fn input_direction(forward: ForwardMethod) -> Direction {
    if forward == ForwardMethod::Nat {
        Direction::Input
    } else {
        Direction::InputOnly
    }
}

/// Moves an entry to its next state and re-arms its deadline; the real's ActiveConn /
/// InActConn follow.
/// A flow as the sync protocol carries it, and its persistence template if it has one.
fn sync_conns(key: &FlowKey, entry: &Entry, timeouts: &Timeouts) -> (SyncConn, Option<SyncConn>) {
    let forward = forward_flags(entry.scheduled.forward);
    let inactive = match entry.state {
        State::Tcp(state) if !state.is_active() => sync_flags::INACTIVE,
        _ => 0,
    };
    let (protocol, state) = match entry.state {
        State::Tcp(state) => (6, state.number()),
        State::Udp => (17, 0),
    };
    let timeout = u32::try_from(entry.state.timeout_ms(timeouts) / 1000).unwrap_or(u32::MAX);
    let conn = SyncConn {
        protocol,
        flags: forward | inactive,
        state,
        client: key.client,
        vip: key.vip,
        real: entry.scheduled.address,
        fwmark: 0,
        timeout,
        persistence_engine: None,
    };
    let template = entry.scheduled.template.as_ref().map(|template| {
        let assured = entry.state == State::Tcp(TcpState::Established) || entry.state == State::Udp;
        SyncConn {
            protocol,
            flags: forward | sync_flags::TEMPLATE,
            state: if assured {
                template_state::ASSURED
            } else {
                template_state::NONE
            },
            client: SocketAddr::new(template.network(), 0),
            vip: key.vip,
            real: entry.scheduled.address,
            fwmark: 0,
            timeout: template.timeout_secs(),
            persistence_engine: None,
        }
    });
    (conn, template)
}

fn advance(
    entry: &mut Entry,
    flags: Option<TcpFlags>,
    direction: Direction,
    now: Millis,
    timeouts: &Timeouts,
) {
    if let (State::Tcp(state), Some(flags)) = (entry.state, flags) {
        let next = state.next(direction, flags);
        entry.state = State::Tcp(next);
        entry.scheduled.binding.set_active(next.is_active());
    }
    entry.expires = now.plus(entry.state.timeout_ms(timeouts));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::table::RealState;

    fn flags(syn: bool, ack: bool) -> Option<TcpFlags> {
        Some(TcpFlags {
            syn,
            ack,
            ..TcpFlags::default()
        })
    }

    fn key(client: &str) -> FlowKey {
        FlowKey {
            protocol: Protocol::Tcp,
            client: client.parse().unwrap(),
            vip: "192.168.77.100:80".parse().unwrap(),
        }
    }

    fn real(state: &Arc<RealState>) -> impl FnOnce() -> Result<Scheduled, Refusal> + '_ {
        move || {
            Ok(Scheduled {
                address: "10.77.0.11:80".parse().unwrap(),
                forward: ForwardMethod::Nat,
                proxy_protocol: crate::config::ProxyProtocol::None,
                binding: state.bind(),
                template: None,
                admitted: None,
            })
        }
    }

    #[test]
    fn a_handshake_makes_an_active_flow_and_replies_find_it() {
        let table = FlowTable::new(100, 100, 1);
        let state = Arc::new(RealState::default());
        let timeouts = Timeouts::default();
        let k = key("192.168.77.2:40000");
        let got = table
            .partition(0)
            .inbound(k, flags(true, false), Millis(0), &timeouts, real(&state));
        assert_eq!(got.unwrap().0.to_string(), "10.77.0.11:80");
        assert_eq!((state.active(), state.inactive()), (0, 1));
        let reply = ReplyKey {
            protocol: Protocol::Tcp,
            real: "10.77.0.11:80".parse().unwrap(),
            client: k.client,
        };
        assert_eq!(
            table
                .partition(0)
                .reply(reply, flags(true, true), (1, 60), Millis(1), &timeouts),
            Some(k)
        );
        table
            .partition(0)
            .inbound(k, flags(false, true), Millis(2), &timeouts, || {
                Err(Refusal::NoReal)
            })
            .unwrap();
        assert_eq!((state.active(), state.inactive()), (1, 0));
        assert_eq!(table.list()[0].state, State::Tcp(TcpState::Established));
        // Without traffic it expires after `timeouts.tcp`, and the real's count drops.
        let late = Millis(2).plus(u64::try_from(timeouts.tcp.as_millis()).unwrap());
        let swept: usize = (0..SHARDS).map(|_| table.partition(0).sweep(late)).sum();
        assert_eq!((swept, table.len()), (1, 0));
        assert_eq!((state.active(), state.inactive()), (0, 0));
    }

    #[test]
    fn a_packet_without_syn_starts_no_tcp_flow() {
        let table = FlowTable::new(100, 100, 1);
        let state = Arc::new(RealState::default());
        let got = table.partition(0).inbound(
            key("192.168.77.2:1"),
            flags(false, true),
            Millis(0),
            &Timeouts::default(),
            real(&state),
        );
        assert_eq!(got, Err(Refusal::NotNew));
        assert!(table.is_empty());
        // sloppy_tcp: the ACK of a flow this director never saw starts it, established; a
        // reset still starts nothing.
        table.set_sloppy_tcp(true);
        let rst = Some(TcpFlags {
            rst: true,
            ..TcpFlags::default()
        });
        let got = table.partition(0).inbound(
            key("192.168.77.2:2"),
            rst,
            Millis(0),
            &Timeouts::default(),
            real(&state),
        );
        assert_eq!(got, Err(Refusal::NotNew));
        let got = table.partition(0).inbound(
            key("192.168.77.2:1"),
            flags(false, true),
            Millis(0),
            &Timeouts::default(),
            real(&state),
        );
        assert!(got.is_ok());
        assert_eq!(table.list()[0].state, State::Tcp(TcpState::Established));
        assert_eq!(state.active(), 1);
    }

    #[test]
    fn a_syn_flood_evicts_only_half_open_flows() {
        let table = FlowTable::new(SHARDS * 4, 10_000, 1);
        let state = Arc::new(RealState::default());
        let timeouts = Timeouts::default();
        // Established flows fill part of the table.
        let established: Vec<FlowKey> = (1..=16).map(|i| key(&format!("10.1.0.{i}:1000"))).collect();
        for k in &established {
            table
                .partition(0)
                .inbound(*k, flags(true, false), Millis(0), &timeouts, real(&state))
                .unwrap();
            table
                .partition(0)
                .inbound(*k, flags(false, true), Millis(0), &timeouts, || {
                    Err(Refusal::NoReal)
                })
                .unwrap();
        }
        // 100k SYNs from many sources.
        for i in 0..100_000u32 {
            let source = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            let k = FlowKey {
                client: SocketAddr::new(source.into(), 1234),
                ..key("1.1.1.1:1")
            };
            let _ = table
                .partition(0)
                .inbound(k, flags(true, false), Millis(1), &timeouts, real(&state));
            assert!(table.len() <= SHARDS * 4);
        }
        let views = table.list();
        for k in &established {
            assert!(
                views.iter().any(|view| view.key == *k),
                "an established flow was pushed out"
            );
        }
        // A legitimate client still gets through.
        let legit = key("192.168.77.2:5555");
        assert!(
            table
                .partition(0)
                .inbound(legit, flags(true, false), Millis(2), &timeouts, real(&state))
                .is_ok()
        );
    }

    #[test]
    fn a_flow_lives_in_its_owners_partition_and_other_workers_still_find_it() {
        let table = FlowTable::new(1000, 100, 2);
        let state = Arc::new(RealState::default());
        let timeouts = Timeouts::default();
        let k = key("192.168.77.2:40000");
        let owner = crate::lvs::steering::owner(k.client.ip(), 2);
        let other = 1 - owner;
        table
            .partition(owner)
            .inbound(k, flags(true, false), Millis(0), &timeouts, real(&state))
            .unwrap();
        assert_eq!(table.misqueued(), 0);
        let reply = ReplyKey {
            protocol: Protocol::Tcp,
            real: "10.77.0.11:80".parse().unwrap(),
            client: k.client,
        };
        // The reply reached the other worker: found all the same, and counted.
        let found = table
            .partition(other)
            .reply(reply, flags(true, true), (1, 60), Millis(1), &timeouts);
        assert_eq!((found, table.misqueued()), (Some(k), 1));
        // Only the owner's sweeps expire it.
        let late = Millis(1).plus(60_000);
        let swept: usize = (0..SHARDS).map(|_| table.partition(other).sweep(late)).sum();
        assert_eq!((swept, table.len()), (0, 1));
        let swept: usize = (0..SHARDS).map(|_| table.partition(owner).sweep(late)).sum();
        assert_eq!((swept, table.len()), (1, 0));
    }

    #[test]
    fn one_source_holds_only_its_share() {
        let table = FlowTable::new(1000, 3, 1);
        let state = Arc::new(RealState::default());
        let timeouts = Timeouts::default();
        let results: Vec<_> = (0..5)
            .map(|port| {
                table.partition(0).inbound(
                    key(&format!("192.168.77.2:{}", 100 + port)),
                    flags(true, false),
                    Millis(0),
                    &timeouts,
                    real(&state),
                )
            })
            .collect();
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
        assert_eq!(results[4], Err(Refusal::SourceCap));
    }

    fn services(persistent: bool) -> ServiceTable {
        let persistence = if persistent {
            "persistence: { timeout: 300s }, "
        } else {
            ""
        };
        let source = format!(
            "dataplane: {{ tun: lbtun0, server_interface: br0 }}\nservices:\n  - {{ protocol: tcp, listen: '192.168.77.100:80', forward: nat, scheduler: rr, {persistence}reals: [{{address: '10.77.0.[11-12]:80'}}] }}\n"
        );
        let config = crate::config::parse(&source, "t").unwrap();
        ServiceTable::build(&config, None, &crate::table::HealthView::default())
    }

    /// A client's TCP flow, scheduled by `services`: SYN, ACK, then `data` packets.
    fn client_flow(table: &FlowTable, services: &ServiceTable, client: &str, data: usize) -> SocketAddr {
        let service = &services.services()[0];
        let k = key(client);
        let timeouts = Timeouts::default();
        let mut real = None;
        for (i, flags) in [flags(true, false), flags(false, true)]
            .into_iter()
            .chain(std::iter::repeat_n(flags(false, true), data))
            .enumerate()
        {
            let flow = crate::sched::Flow {
                client: k.client,
                destination: k.vip,
                now: Millis(i as u64),
            };
            let got = table
                .partition(0)
                .inbound(k, flags, Millis(i as u64), &timeouts, || {
                    service.schedule(&flow).ok_or(Refusal::NoReal)
                });
            real = Some(got.unwrap().0);
        }
        real.unwrap()
    }

    #[test]
    fn a_master_sends_established_flows_and_a_backup_takes_them_bound_to_its_reals() {
        let (master, backup) = (FlowTable::new(10_000, 100, 1), FlowTable::new(10_000, 100, 2));
        let (master_services, backup_services) = (services(true), services(true));
        // A backup sends nothing.
        client_flow(&master, &master_services, "192.168.77.2:40000", 5);
        assert!(master.sync.take().is_empty());
        master.sync.set_master(true);
        let real = client_flow(&master, &master_services, "192.168.77.3:40000", 1);
        let sent = master.sync.take();
        // The third packet (the first after the handshake) sends the flow and its template.
        assert_eq!(sent.len(), 2, "{sent:?}");
        let (conn, template) = (&sent[0], &sent[1]);
        assert_eq!((conn.state, conn.flags, conn.timeout), (1, 0, 900));
        assert!(template.is_template());
        assert_eq!(template.client, "192.168.77.3:0".parse().unwrap());
        for conn in &sent {
            let wire = {
                let mut writer = crate::packet::sync::MessageWriter::new(0, 1472);
                assert!(writer.push(conn));
                writer.take()
            };
            let received = crate::packet::sync::decode(&wire, 0).unwrap();
            backup
                .install(&received.conns[0], &backup_services, Millis(10))
                .unwrap();
        }
        let listed = backup.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].real, listed[0].state, listed[0].synced),
            (real, State::Tcp(TcpState::Established), true)
        );
        let service = &backup_services.services()[0];
        let bound = service.reals.iter().find(|r| r.address == real).unwrap();
        assert_eq!(bound.state.active(), 1, "counted in ActiveConn on the backup too");
        // After a takeover, the flow's packets go on to the same real without scheduling.
        let owner = crate::lvs::steering::owner(listed[0].key.client.ip(), 2);
        let got = backup.partition(owner).inbound(
            listed[0].key,
            flags(false, true),
            Millis(20),
            &Timeouts::default(),
            || panic!("a synced flow is not scheduled again"),
        );
        assert_eq!(got.unwrap().0, real);
        // A new flow of the same client keeps its real through the synced template.
        let again = client_flow(&backup, &backup_services, "192.168.77.3:40001", 0);
        assert_eq!(again, real);
        // A full dump carries every flow and template: a backup that joins now has them all.
        let dump: Vec<SyncConn> = (0..master.shard_count())
            .flat_map(|shard| master.export(shard, &Timeouts::default(), Millis(10)))
            .collect();
        assert_eq!(dump.len(), 4, "two flows, each with its template");
        let joined = FlowTable::new(10_000, 100, 1);
        for conn in &dump {
            joined.install(conn, &services(true), Millis(10)).unwrap();
        }
        assert_eq!((joined.len(), joined.synced()), (2, 2));
    }

    #[test]
    fn entries_a_backup_cannot_bind_are_refused_by_name() {
        let backup = FlowTable::new(100, 100, 1);
        let services = services(false);
        let mut conn = SyncConn {
            protocol: 6,
            flags: 0,
            state: 1,
            client: "192.168.77.2:1".parse().unwrap(),
            vip: "192.168.77.100:80".parse().unwrap(),
            real: "10.77.0.99:80".parse().unwrap(),
            fwmark: 0,
            timeout: 900,
            persistence_engine: None,
        };
        assert_eq!(backup.install(&conn, &services, Millis(0)), Err(Unsynced::NoReal));
        conn.real = "10.77.0.11:80".parse().unwrap();
        conn.state = 11;
        assert_eq!(backup.install(&conn, &services, Millis(0)), Err(Unsynced::State));
        conn.state = 1;
        conn.protocol = 132;
        assert_eq!(
            backup.install(&conn, &services, Millis(0)),
            Err(Unsynced::Protocol)
        );
        conn.protocol = 6;
        conn.vip = "192.168.77.101:80".parse().unwrap();
        assert_eq!(
            backup.install(&conn, &services, Millis(0)),
            Err(Unsynced::NoService)
        );
        assert!(backup.is_empty());
    }
}
