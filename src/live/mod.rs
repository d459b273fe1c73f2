//! What is live about a real server, shared by the schedulers that read it and the table that
//! holds it: the real as a snapshot shows it ([`Real`]), its counters and connection accounting
//! ([`RealState`], [`FlowBinding`]) and its health check's status ([`CheckStatus`]). A leaf of
//! the module graph (config → live → sched → table → data planes): it does no I/O.

mod health;
mod state;

use std::{net::SocketAddr, sync::Arc};

pub use self::{
    health::{CheckRecord, CheckResult, CheckStatus, DynamicWeight, HealthView},
    state::{FlowBinding, RealState},
};
use crate::{
    clock::Millis,
    config::{ForwardMethod, ProxyProtocol},
};

/// One real server of a service in a snapshot.
#[derive(Debug, Clone)]
pub struct Real {
    /// Where flows go.
    pub address: SocketAddr,
    /// Scheduling weight; 0 = quiescent.
    pub weight: u32,
    /// How flows reach it.
    pub forward: ForwardMethod,
    /// The PROXY protocol header its flows start with (proxy mode).
    pub proxy_protocol: ProxyProtocol,
    /// Health verdict: a real that is not up gets no new flows (for IPVS, it is removed from
    /// the service).
    pub up: bool,
    /// Live counters and connection accounting.
    pub state: Arc<RealState>,
    /// Its health check's live status, when the service checks its reals.
    pub check: Option<Arc<CheckStatus>>,
    /// When it was added (larger = more recent); orders the list as IPVS does.
    pub(crate) added: u64,
}

impl Real {
    /// An up real outside any config: scheduler tests and benchmarks, and the sorry server.
    pub fn new(address: SocketAddr, weight: u32, state: Arc<RealState>) -> Self {
        Self {
            address,
            weight,
            forward: ForwardMethod::Proxy,
            proxy_protocol: ProxyProtocol::None,
            up: true,
            state,
            check: None,
            added: 0,
        }
    }

    /// Whether the real may take a new flow at `now`, weight aside: it is available and not
    /// overloaded. Schedulers treat a real that is not usable exactly as IPVS treats one with
    /// the OVERLOAD flag.
    pub fn usable(&self, now: Millis) -> bool {
        self.available(now) && !self.state.is_overloaded()
    }

    /// IPVS's AVAILABLE: the real is up and not in passive back-off (a real that is down is,
    /// for IPVS, a real removed from the service).
    pub fn available(&self, now: Millis) -> bool {
        self.up && !self.state.in_backoff(now)
    }
}

/// Two reals are equal when a scheduler would see them alike: same settings, same verdict and
/// the same live state.
impl PartialEq for Real {
    fn eq(&self, other: &Self) -> bool {
        self.address == other.address
            && self.weight == other.weight
            && self.forward == other.forward
            && self.proxy_protocol == other.proxy_protocol
            && self.up == other.up
            && self.added == other.added
            && Arc::ptr_eq(&self.state, &other.state)
            && match (&self.check, &other.check) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            }
    }
}
