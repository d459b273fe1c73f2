//! Flows in progress: how many (so that a drain can wait for them) and, for listings
//! (`lbadm list --conns`), a record of each proxied flow: client, service, real, state and
//! last activity.
//!
//! Records live in shards, one per worker thread (the worker's index picks its shard), so a
//! worker registering and dropping flows never contends with another; only a listing visits
//! every shard.

use std::{
    cell::Cell,
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{
            AtomicBool, AtomicU8, AtomicU64, AtomicUsize,
            Ordering::{Acquire, Relaxed, Release},
        },
    },
    task::{Context, Poll},
};

use atomic_waker::AtomicWaker;

use crate::{clock::Millis, config::Protocol};

/// Shards of the registry; workers beyond this share them.
const SHARDS: usize = 16;

thread_local! {
    /// The shard this thread registers into: its worker index.
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread (worker `index`) register into its own shard.
pub(super) fn use_shard(index: usize) {
    SHARD.with(|shard| shard.set(index % SHARDS));
}

/// Flows in progress.
#[derive(Debug, Clone)]
pub struct FlowTracker(Arc<Registry>);

#[derive(Debug)]
struct Registry {
    count: AtomicUsize,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Debug, Default)]
struct Shard {
    next: u64,
    records: HashMap<u64, Arc<FlowRecord>>,
}

impl Default for FlowTracker {
    fn default() -> Self {
        Self(Arc::new(Registry {
            count: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }))
    }
}

impl FlowTracker {
    /// Flows in progress now.
    pub fn count(&self) -> usize {
        self.0.count.load(Relaxed)
    }

    /// Counts a flow in until the guard is dropped.
    pub(super) fn enter(&self) -> FlowGuard {
        self.0.count.fetch_add(1, Relaxed);
        FlowGuard(Arc::clone(&self.0))
    }

    /// Lists `record` until the registration is dropped.
    pub(super) fn register(&self, record: FlowRecord) -> Registration {
        let shard = SHARD.with(Cell::get);
        let record = Arc::new(record);
        let id = {
            let mut guard = self.0.shards[shard]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            guard.next += 1;
            let id = guard.next;
            guard.records.insert(id, Arc::clone(&record));
            id
        };
        Registration {
            registry: Arc::clone(&self.0),
            shard,
            id,
            record,
        }
    }

    /// Listed flows now: (TCP, UDP).
    pub fn count_by_protocol(&self) -> (usize, usize) {
        let mut counts = (0, 0);
        for shard in &self.0.shards {
            let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for record in guard.records.values() {
                match record.protocol {
                    Protocol::Tcp => counts.0 += 1,
                    Protocol::Udp => counts.1 += 1,
                }
            }
        }
        counts
    }

    /// Closes every listed flow that `doomed` picks (both sides reset, a UDP session ended);
    /// returns how many.
    pub fn kill(&self, doomed: impl Fn(&FlowRecord) -> bool) -> usize {
        let mut killed = 0;
        for shard in &self.0.shards {
            let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for record in guard.records.values().filter(|record| doomed(record)) {
                record.kill();
                killed += 1;
            }
        }
        killed
    }

    /// Every listed flow now.
    pub fn list(&self) -> Vec<Arc<FlowRecord>> {
        self.0
            .shards
            .iter()
            .flat_map(|shard| {
                let guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                guard.records.values().cloned().collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Held by a flow for its whole life: it counts in [`FlowTracker::count`].
#[derive(Debug)]
pub(super) struct FlowGuard(Arc<Registry>);

impl Drop for FlowGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Relaxed);
    }
}

/// A flow's place in the listing; dropping it unlists the flow.
#[derive(Debug)]
pub(super) struct Registration {
    registry: Arc<Registry>,
    shard: usize,
    id: u64,
    record: Arc<FlowRecord>,
}

impl Registration {
    /// The flow's record.
    pub(super) fn record(&self) -> &FlowRecord {
        &self.record
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut guard = self.registry.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        guard.records.remove(&self.id);
    }
}

/// The state of a listed flow, named as `ipvsadm -L -c` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlowState {
    /// TCP, both directions open.
    Established = 0,
    /// TCP, one direction closed.
    FinWait = 1,
    /// UDP.
    Udp = 2,
}

impl FlowState {
    /// The ipvsadm name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::Udp => "UDP",
        }
    }
}

/// One listed flow.
#[derive(Debug)]
pub struct FlowRecord {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The client.
    pub client: SocketAddr,
    /// The virtual service address.
    pub service: SocketAddr,
    /// The real server.
    pub real: SocketAddr,
    state: AtomicU8,
    last_activity: AtomicU64,
    /// Set by [`kill`](Self::kill); the flow's task wakes through `waker` and ends it.
    killed: AtomicBool,
    waker: AtomicWaker,
}

impl FlowRecord {
    /// A record of a flow active now.
    pub(super) fn new(protocol: Protocol, client: SocketAddr, service: SocketAddr, real: SocketAddr) -> Self {
        let state = match protocol {
            Protocol::Tcp => FlowState::Established,
            Protocol::Udp => FlowState::Udp,
        };
        Self {
            protocol,
            client,
            service,
            real,
            state: AtomicU8::new(state as u8),
            last_activity: AtomicU64::new(Millis::now().0),
            killed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// The flow's state.
    pub fn state(&self) -> FlowState {
        match self.state.load(Relaxed) {
            0 => FlowState::Established,
            1 => FlowState::FinWait,
            _ => FlowState::Udp,
        }
    }

    pub(super) fn set_state(&self, state: FlowState) {
        self.state.store(state as u8, Relaxed);
    }

    /// Notes traffic now.
    pub(super) fn touch(&self) {
        self.last_activity.store(Millis::now().0, Relaxed);
    }

    /// Ends the flow (`lbadm kill-flows`, `on_down: shutdown`): its task closes both sides.
    pub fn kill(&self) {
        self.killed.store(true, Release);
        self.waker.wake();
    }

    /// Ready once the flow has been killed; registers the task to wake then.
    pub(super) fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.killed.load(Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.killed.load(Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// When traffic last moved.
    pub fn last_activity(&self) -> Millis {
        Millis(self.last_activity.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_listed_while_registered() {
        let tracker = FlowTracker::default();
        let address: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let guard = tracker.enter();
        let first = tracker.register(FlowRecord::new(Protocol::Tcp, address, address, address));
        let second = tracker.register(FlowRecord::new(Protocol::Udp, address, address, address));
        first.record().set_state(FlowState::FinWait);
        assert_eq!(tracker.count(), 1);
        assert_eq!(tracker.list().len(), 2);
        // A kill reaches the flow's task: its poll is ready.
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(second.record().poll_killed(&mut cx).is_pending());
        assert_eq!(tracker.kill(|record| record.protocol == Protocol::Udp), 1);
        assert!(second.record().poll_killed(&mut cx).is_ready());
        assert!(first.record().poll_killed(&mut cx).is_pending());
        drop(first);
        let left = tracker.list();
        assert_eq!((left.len(), left[0].state()), (1, FlowState::Udp));
        drop((second, guard));
        assert_eq!((tracker.count(), tracker.list().len()), (0, 0));
    }
}
