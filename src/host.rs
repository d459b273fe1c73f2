//! What this host can give the director, and how to tell its shortages from a real server's
//! failures: the open-file limit (raised to its hard limit at start), a descriptor budget the
//! proxy's flows draw from so that the admin API, `/metrics` and health checks always keep a
//! reserve, and [`is_local`], which says that an error is this host's (no descriptor, no
//! buffer, no local port), never to be counted against a real.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
};

/// Descriptors kept out of the proxy's budget whatever the configuration: listeners, the TUN
/// device, files, the admin API (64 connections) and `/metrics` (32), with room to spare.
pub(crate) const RESERVE: usize = 256;

/// Whether `error` is this host's shortage rather than the peer's answer: out of descriptors
/// (`EMFILE`, `ENFILE`), buffers (`ENOBUFS`, `ENOMEM`) or local ports (`EADDRNOTAVAIL`,
/// `EAGAIN` from a connect). Such an error says nothing of the real server.
pub(crate) fn is_local(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL | libc::EAGAIN)
    )
}

/// Raises the soft open-file limit to the hard limit, as HAProxy does, and returns the soft
/// limit in force afterwards.
pub(crate) fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        tracing::info!(from = soft, to = hard, "open-file limit raised to the hard limit");
        return hard;
    }
    if soft < 4096 {
        tracing::warn!(
            limit = soft,
            "the open-file limit is low and cannot be raised (LimitNOFILE= in systemd, ulimit -Hn): about {} proxied connections at once",
            soft.saturating_sub(RESERVE as u64) / 2
        );
    }
    soft
}

/// The descriptors the proxy's flows may hold at once; a flow takes what it needs before it
/// opens anything, and gives it back when it ends.
///
/// UDP sessions may hold at most half of the budget, so that a flood of new UDP clients
/// never leaves a TCP service without descriptors.
#[derive(Debug)]
pub(crate) struct Descriptors {
    limit: AtomicUsize,
    used: AtomicUsize,
    udp: AtomicUsize,
}

impl Descriptors {
    /// A budget of `limit` descriptors.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            udp: AtomicUsize::new(0),
        })
    }

    /// The budget for a process allowed `open_files` descriptors that keeps `reserved` of them
    /// (beyond [`RESERVE`]) for the control plane: listeners, health checks.
    pub(crate) fn limit_for(open_files: u64, reserved: usize) -> usize {
        usize::try_from(open_files)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVE + reserved)
    }

    /// Changes the budget (a reload changed the reserve); flows holding more keep them.
    pub(crate) fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Relaxed);
    }

    /// Descriptors held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Relaxed)
    }

    /// Takes `count` descriptors, or `None` when the budget has not that many left.
    pub(crate) fn take(self: &Arc<Self>, count: usize) -> Option<DescriptorHold> {
        let limit = self.limit.load(Relaxed);
        take_within(&self.used, count, limit)?;
        Some(DescriptorHold {
            budget: Arc::clone(self),
            count,
            udp: false,
        })
    }

    /// Takes the descriptor of one UDP session, or `None` when UDP sessions hold half the
    /// budget or the budget is spent.
    pub(crate) fn take_udp(self: &Arc<Self>) -> Option<DescriptorHold> {
        take_within(&self.udp, 1, self.limit.load(Relaxed) / 2)?;
        let Some(mut hold) = self.take(1) else {
            self.udp.fetch_sub(1, Relaxed);
            return None;
        };
        hold.udp = true;
        Some(hold)
    }
}

/// Adds `count` to `counter` if it stays within `limit`.
fn take_within(counter: &AtomicUsize, count: usize, limit: usize) -> Option<()> {
    counter
        .fetch_update(Relaxed, Relaxed, |used| {
            used.checked_add(count).filter(|after| *after <= limit)
        })
        .ok()
        .map(drop)
}

/// Descriptors taken from a [`Descriptors`] budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct DescriptorHold {
    budget: Arc<Descriptors>,
    count: usize,
    udp: bool,
}

impl Drop for DescriptorHold {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.count, Relaxed);
        if self.udp {
            self.budget.udp.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_a_hard_bound() {
        let budget = Descriptors::new(5);
        let first = budget.take(2).unwrap();
        let second = budget.take(2).unwrap();
        assert!(budget.take(2).is_none());
        let third = budget.take(1).unwrap();
        assert_eq!(budget.used(), 5);
        drop((first, second, third));
        assert_eq!(budget.used(), 0);
        assert_eq!(Descriptors::limit_for(1024, 10), 1024 - RESERVE - 10);
        // UDP sessions get half.
        let budget = Descriptors::new(4);
        let sessions: Vec<_> = (0..2).map(|_| budget.take_udp().unwrap()).collect();
        assert!(budget.take_udp().is_none());
        assert!(budget.take(2).is_some(), "TCP keeps the other half");
        drop(sessions);
        assert_eq!(budget.used(), 0);
        assert_eq!(Descriptors::limit_for(10, 10), 0);
    }

    #[test]
    fn host_shortages_are_told_apart() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::EADDRNOTAVAIL] {
            assert!(is_local(&io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EHOSTUNREACH] {
            assert!(!is_local(&io::Error::from_raw_os_error(errno)));
        }
    }
}
