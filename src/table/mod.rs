//! The service table: one immutable snapshot of every virtual service and its real servers,
//! published with a single atomic swap ([`TableHandle`]). The data planes `load()` it per flow
//! and never lock; the control plane builds a new snapshot ([`ServiceTable::build`]) and stores
//! it. Live per-real state ([`RealState`]) is shared between successive snapshots, keyed by
//! (service, real) identity, so counters and open flows carry across reloads.
//!
//! This module does no I/O. [`admission`] decides who may open a flow to a service.

pub mod admission;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use arc_swap::ArcSwap;

use self::admission::{SourceCounts, SourceHold};
pub use crate::live::{
    CheckRecord, CheckResult, CheckStatus, DynamicWeight, FlowBinding, HealthView, Real, RealState,
};
use crate::{
    clock::Millis,
    config::{Config, ForwardMethod, ProxyProtocol, ServiceConfig, ServiceKey, Timeouts},
    sched::{
        self, Flow, Scheduler,
        persistence::{Persistence, TemplateHold},
    },
};

/// The shared, lock-free view of the service table.
#[derive(Debug)]
pub struct TableHandle(ArcSwap<ServiceTable>);

impl TableHandle {
    /// A handle publishing `table`.
    pub fn new(table: ServiceTable) -> Self {
        Self(ArcSwap::from_pointee(table))
    }

    /// The current snapshot. Cheap; do not hold it across an `.await`.
    pub fn load(&self) -> arc_swap::Guard<Arc<ServiceTable>> {
        self.0.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<ServiceTable> {
        self.0.load_full()
    }

    /// Publishes a new snapshot.
    pub fn store(&self, table: ServiceTable) {
        self.0.store(Arc::new(table));
    }
}

/// One snapshot of the whole table.
#[derive(Debug, Default)]
pub struct ServiceTable {
    services: Vec<Arc<Service>>,
    index: HashMap<ServiceKey, usize>,
    /// The VIPs of the services that forward packets (nat, dr, tun), sorted, each once.
    packet_vips: Vec<IpAddr>,
    /// Idle and connect timeouts in force.
    pub timeouts: Timeouts,
    /// A real of some service is in its slow start.
    ramping: bool,
}

impl ServiceTable {
    /// Builds a snapshot from `config` and the health checks' verdicts, reusing the live
    /// state of services and reals that exist in `previous` (same protocol, VIP:port and real
    /// address). A service whose settings and reals are exactly as in `previous` is shared
    /// as it is, scheduler state included.
    pub fn build(config: &Config, previous: Option<&Self>, health: &HealthView) -> Self {
        Self::build_at(config, previous, health, Millis::now())
    }

    /// [`build`](Self::build) at time `now` (slow starts are measured from it).
    pub fn build_at(config: &Config, previous: Option<&Self>, health: &HealthView, now: Millis) -> Self {
        let services: Vec<Arc<Service>> = config
            .services
            .iter()
            .map(|service| {
                let old = previous.and_then(|table| table.service(&service.key()));
                Service::build(service, old, health, now)
            })
            .collect();
        let index = services
            .iter()
            .enumerate()
            .map(|(i, service)| (service.key, i))
            .collect();
        Self {
            ramping: services.iter().any(|service| service.ramping()),
            services,
            index,
            packet_vips: packet_vips(config),
            timeouts: config.timeouts,
        }
    }

    /// The VIPs of the services that forward packets (nat, dr, tun): the addresses routed to
    /// the TUN device.
    pub fn packet_vips(&self) -> &[IpAddr] {
        &self.packet_vips
    }

    /// Whether `ip` is the VIP of a service that forwards packets.
    pub fn is_packet_vip(&self, ip: IpAddr) -> bool {
        self.packet_vips.binary_search(&ip).is_ok()
    }

    /// The service with this identity.
    pub fn service(&self, key: &ServiceKey) -> Option<&Arc<Service>> {
        self.index.get(key).map(|&i| &self.services[i])
    }

    /// Every service, in config order.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Whether a real of some service is in its slow start (the table is rebuilt every
    /// [`RAMP_STEP`] meanwhile).
    pub fn ramping(&self) -> bool {
        self.ramping
    }
}

/// How often the table is rebuilt while a real is in its slow start: its weight grows in
/// steps this far apart.
pub const RAMP_STEP: std::time::Duration = std::time::Duration::from_millis(250);

/// The VIPs of `config`'s services that forward packets (nat, dr, tun), sorted, each once:
/// the addresses routed to the TUN device.
pub fn packet_vips(config: &Config) -> Vec<IpAddr> {
    let mut vips: Vec<IpAddr> = config
        .services
        .iter()
        .filter(|service| service.on_packet_plane())
        .map(|service| service.listen.ip())
        .collect();
    vips.sort_unstable();
    vips.dedup();
    vips
}

/// Totals of one virtual service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Flows accepted by the service.
    pub conns: AtomicU64,
    /// Flows refused because no real server was available.
    pub unavailable: AtomicU64,
    /// Flows refused at a bound of this director, by [`Refusal`].
    refused: [AtomicU64; Refusal::ALL.len()],
    /// UDP proxy sessions open now, on every worker.
    pub udp_sessions: std::sync::atomic::AtomicUsize,
}

impl ServiceStats {
    /// Counts a flow refused for `why`.
    pub fn refuse(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Relaxed);
    }

    /// Flows refused for `why` so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize].load(Relaxed)
    }

    /// Zeroes the totals (ipvsadm `-Z`).
    pub fn zero(&self) {
        for counter in [&self.conns, &self.unavailable].into_iter().chain(&self.refused) {
            counter.store(0, Relaxed);
        }
    }
}

/// Why a new flow was refused although a real could have taken it: a bound of this director,
/// or the service's own rules about who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The proxy's descriptor budget was spent (open-file limit).
    Descriptors = 0,
    /// The service (or the director) held its most UDP sessions.
    Sessions = 1,
    /// `accept_proxy`: the connection came from outside `accept_proxy_from`.
    UntrustedProxy = 2,
    /// `accept_proxy`: no valid PROXY protocol header in time.
    ProxyHeader = 3,
    /// The client is in `deny`, or not in a non-empty `allow`.
    Denied = 4,
    /// `source_limits.max_flows`: the client holds its most flows.
    SourceFlows = 5,
    /// `source_limits.new_flows_per_second`: the client opens flows too fast (or the
    /// service tracks its most sources).
    SourceRate = 6,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Self; 7] = [
        Self::Descriptors,
        Self::Sessions,
        Self::UntrustedProxy,
        Self::ProxyHeader,
        Self::Denied,
        Self::SourceFlows,
        Self::SourceRate,
    ];

    /// The `reason` label of `lbd_service_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Descriptors => "descriptors",
            Self::Sessions => "sessions",
            Self::UntrustedProxy => "untrusted_proxy",
            Self::ProxyHeader => "proxy_header",
            Self::Denied => "denied",
            Self::SourceFlows => "source_flows",
            Self::SourceRate => "source_rate",
        }
    }

    /// What happened, for a log line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Descriptors => "the proxy's descriptor budget is spent (open-file limit)",
            Self::Sessions => "the service holds its most UDP sessions",
            Self::UntrustedProxy => "a source outside accept_proxy_from connected",
            Self::ProxyHeader => "a connection sent no valid PROXY header in time",
            Self::Denied => "a client outside the service's allow list, or in its deny list",
            Self::SourceFlows => "a client holds its most flows (source_limits.max_flows)",
            Self::SourceRate => "a client opens flows too fast (source_limits.new_flows_per_second)",
        }
    }
}

/// One virtual service in a snapshot.
#[derive(Debug)]
pub struct Service {
    /// Protocol and VIP:port.
    pub key: ServiceKey,
    /// The configuration it was built from.
    pub config: ServiceConfig,
    /// The real servers, in IPVS's order: most recently added first.
    pub reals: Vec<Real>,
    /// Picks a real for a new flow.
    pub scheduler: Box<dyn Scheduler>,
    /// Persistence templates, when the service is persistent.
    pub persistence: Option<Arc<Persistence>>,
    /// The sorry server: new flows go there only while no real can take them.
    pub sorry: Option<Real>,
    /// Real address → index in `reals`.
    positions: HashMap<SocketAddr, usize>,
    /// Totals, shared across snapshots.
    pub stats: Arc<ServiceStats>,
    /// A real is in its slow start.
    ramping: bool,
    /// The counts behind `source_limits`, shared by every snapshot with the same caps.
    sources: Option<Arc<SourceCounts>>,
}

impl Service {
    fn build(
        config: &ServiceConfig,
        previous: Option<&Arc<Self>>,
        health: &HealthView,
        now: Millis,
    ) -> Arc<Self> {
        static NEXT_SEQUENCE: AtomicU64 = AtomicU64::new(1);
        let key = config.key();
        let on_down = config
            .health_check
            .as_ref()
            .map(|check| check.on_down)
            .unwrap_or_default();
        let mut ramping = false;
        let mut reals: Vec<Real> = config
            .reals
            .iter()
            .map(|real| {
                let old = previous.and_then(|service| service.real(real.address));
                let state = match old {
                    Some(old) => Arc::clone(&old.state),
                    None => Arc::new(RealState::new(real.max_conns, real.min_conns)),
                };
                let check = health.get(&key, real.address).cloned();
                let (up, weight) = check.as_ref().map_or((true, real.weight), |status| {
                    status.published(real.weight, on_down)
                });
                let up = up && !real.maintenance;
                let came_up = up && old.is_some_and(|old| !old.up);
                if came_up {
                    // Back up after a check passed: passive back-off from before is over.
                    state.record_success();
                }
                // Slow start: a real that came up, or was added to a running service (not
                // every real of a service just configured), ramps its weight and cap.
                let (weight, max_conns) = match config.slow_start {
                    Some(window) => {
                        if came_up || (old.is_none() && previous.is_some()) {
                            state.start_ramp(now);
                        }
                        match state.ramp_start() {
                            Some(start) if up => {
                                let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
                                let elapsed = now.0.saturating_sub(start.0);
                                if elapsed >= window {
                                    state.end_ramp();
                                } else {
                                    ramping = true;
                                }
                                sched::slow_start::ramped(weight, real.max_conns, elapsed, window)
                            }
                            _ => (weight, real.max_conns),
                        }
                    }
                    None => {
                        state.end_ramp();
                        (weight, real.max_conns)
                    }
                };
                state.set_thresholds(max_conns, real.min_conns);
                Real {
                    address: real.address,
                    weight,
                    forward: real.forward_in(config),
                    proxy_protocol: real.proxy_protocol_in(config),
                    up,
                    state,
                    check,
                    added: old.map_or_else(|| NEXT_SEQUENCE.fetch_add(1, Relaxed), |old| old.added),
                }
            })
            .collect();
        reals.sort_by_key(|real| std::cmp::Reverse(real.added));
        if let Some(previous) =
            previous.filter(|old| old.config == *config && old.reals == reals && old.ramping == ramping)
        {
            return Arc::clone(previous);
        }
        for real in &reals {
            real.state.note_weight(real.weight);
        }
        let carried = previous
            .filter(|service| service.config.scheduler == config.scheduler)
            .and_then(|service| service.scheduler.shared_state());
        // A seed of this process's own (twos draws at random): directors never draw alike.
        static SEEDS: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        let seed = SEEDS
            .get_or_init(ahash::RandomState::new)
            .hash_one((key, NEXT_SEQUENCE.fetch_add(1, Relaxed)));
        let scheduler = sched::build(config.scheduler, &config.scheduler_flags, &reals, carried, seed);
        let persistence = config.persistence.as_ref().map(|settings| {
            previous
                .and_then(|service| service.persistence.as_ref())
                .filter(|table| table.adopt(settings))
                .map_or_else(|| Arc::new(Persistence::new(settings)), Arc::clone)
        });
        let sorry = config.sorry_server.map(|address| {
            let state = previous
                .and_then(|service| service.sorry.as_ref())
                .filter(|old| old.address == address)
                .map_or_else(|| Arc::new(RealState::new(0, 0)), |old| Arc::clone(&old.state));
            Real {
                proxy_protocol: config.proxy_protocol,
                ..Real::new(address, 1, state)
            }
        });
        let sources = config.source_limits.map(|limits| {
            previous
                .and_then(|service| service.sources.as_ref())
                .filter(|counts| *counts.limits() == limits)
                .map_or_else(|| Arc::new(SourceCounts::new(limits)), Arc::clone)
        });
        let positions = reals
            .iter()
            .enumerate()
            .map(|(i, real)| (real.address, i))
            .collect();
        Arc::new(Self {
            key,
            config: config.clone(),
            positions,
            reals,
            scheduler,
            persistence,
            sorry,
            stats: previous.map_or_else(Arc::default, |service| Arc::clone(&service.stats)),
            ramping,
            sources,
        })
    }

    /// Whether a real of this service is in its slow start: the table is then rebuilt often,
    /// so that its weight grows.
    pub fn ramping(&self) -> bool {
        self.ramping
    }

    /// Whether `client` may open a new flow at `now`: not denied, allowed, within its caps.
    /// The hold counts the flow in its source's caps until dropped (with the flow). The
    /// caller counts a refusal (`stats.refuse`), which it also answers.
    pub fn admit(&self, client: IpAddr, now: Millis) -> Result<Option<SourceHold>, Refusal> {
        let config = &self.config;
        if config.deny.contains(client) || (!config.allow.is_empty() && !config.allow.contains(client)) {
            return Err(Refusal::Denied);
        }
        match &self.sources {
            Some(counts) => counts.take(client, now).map(Some),
            None => Ok(None),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The real with this address.
    pub fn real(&self, address: SocketAddr) -> Option<&Real> {
        self.position(address).map(|i| &self.reals[i])
    }

    /// Schedules `flow` (through the persistence templates, if any) and binds it to the real
    /// chosen. When no real can take it, the flow goes to the sorry server if there is one;
    /// otherwise it is refused: `None`, counted as unavailable.
    pub fn schedule(&self, flow: &Flow) -> Option<Scheduled> {
        let chosen = match &self.persistence {
            Some(persistence) => persistence
                .schedule(
                    &self.reals,
                    |address| self.position(address),
                    self.scheduler.as_ref(),
                    flow,
                )
                .map(|(index, hold)| (index, Some(hold))),
            None => self.scheduler.pick(&self.reals, flow).map(|index| (index, None)),
        };
        let Some((index, template)) = chosen else {
            if let Some(sorry) = &self.sorry {
                return Some(Scheduled {
                    address: sorry.address,
                    forward: sorry.forward,
                    proxy_protocol: sorry.proxy_protocol,
                    binding: sorry.state.bind(),
                    template: None,
                    admitted: None,
                });
            }
            self.stats.unavailable.fetch_add(1, Relaxed);
            tracing::debug!(service = self.name(), client = %flow.client, "no real server available");
            return None;
        };
        let real = &self.reals[index];
        Some(Scheduled {
            address: real.address,
            forward: real.forward,
            proxy_protocol: real.proxy_protocol,
            binding: real.state.bind(),
            template,
            admitted: None,
        })
    }

    /// The index in `reals` of the real with this address.
    pub fn position(&self, address: SocketAddr) -> Option<usize> {
        self.positions.get(&address).copied()
    }
}

/// A flow bound to the real chosen for it.
#[derive(Debug)]
pub struct Scheduled {
    /// Where the flow goes.
    pub address: SocketAddr,
    /// How it gets there.
    pub forward: ForwardMethod,
    /// The PROXY protocol header the flow starts with (proxy mode).
    pub proxy_protocol: ProxyProtocol,
    /// Its place in the real's ActiveConn / InActConn.
    pub binding: FlowBinding,
    /// Its hold on the client's persistence template, if the service is persistent.
    pub template: Option<TemplateHold>,
    /// Its place in its client's `source_limits` counts, if the service has them.
    pub admitted: Option<SourceHold>,
}

impl Scheduled {
    /// The flow ended at `now`: its persistence template's timeout starts (once no other
    /// flow holds it). Its holder calls this; only the first call counts.
    pub fn end(&self, now: Millis) {
        if let Some(template) = &self.template {
            template.release(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn table(source: &str, previous: Option<&ServiceTable>) -> ServiceTable {
        ServiceTable::build(
            &config::parse(source, "t").unwrap(),
            previous,
            &HealthView::default(),
        )
    }

    const TWO: &str = "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    reals: [{address: '10.0.0.1:80'}, {address: '10.0.0.2:80'}]\n";

    #[test]
    fn reals_are_ordered_most_recently_added_first() {
        let first = table(TWO, None);
        let service = &first.services()[0];
        let order: Vec<String> = service.reals.iter().map(|r| r.address.to_string()).collect();
        assert_eq!(order, ["10.0.0.2:80", "10.0.0.1:80"]);

        let with_third = TWO.replace("]\n", ", {address: '10.0.0.3:80'}]\n");
        let second = table(&with_third, Some(&first));
        let order: Vec<String> = second.services()[0]
            .reals
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        assert_eq!(order, ["10.0.0.3:80", "10.0.0.2:80", "10.0.0.1:80"]);
    }

    #[test]
    fn scheduling_state_survives_a_reload_unless_the_scheduler_changes() {
        let lblc = "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    scheduler: lblc\n    persistence: {}\n    reals: [{address: '10.0.0.1:80'}, {address: '10.0.0.2:80'}]\n";
        let first = table(lblc, None);
        let service = &first.services()[0];
        let flow = crate::sched::Flow {
            client: ([192, 0, 2, 1], 1000).into(),
            destination: ([192, 0, 2, 9], 80).into(),
            now: Millis(0),
        };
        let (index, _hold) = service
            .persistence
            .as_ref()
            .unwrap()
            .schedule(
                &service.reals,
                |a| service.position(a),
                service.scheduler.as_ref(),
                &flow,
            )
            .unwrap();
        // Reweighted: same scheduler, so the cache and the templates carry over.
        let second = table(
            &lblc.replace("'10.0.0.2:80'}", "'10.0.0.2:80', weight: 3}"),
            Some(&first),
        );
        let service2 = &second.services()[0];
        assert!(Arc::ptr_eq(
            service.persistence.as_ref().unwrap(),
            service2.persistence.as_ref().unwrap()
        ));
        let (again, _hold2) = service2
            .persistence
            .as_ref()
            .unwrap()
            .schedule(
                &service2.reals,
                |a| service2.position(a),
                service2.scheduler.as_ref(),
                &flow,
            )
            .unwrap();
        assert_eq!(service2.reals[again].address, service.reals[index].address);
        let state = |table: &ServiceTable| table.services()[0].scheduler.shared_state().unwrap();
        assert!(
            state(&second).is(&state(&first)),
            "the lblc cache is the same one"
        );
        // Another scheduler starts afresh.
        let third = table(
            &lblc.replace("scheduler: lblc", "scheduler: lblcr"),
            Some(&second),
        );
        assert!(!state(&third).is(&state(&second)));
    }

    #[test]
    fn live_state_carries_across_rebuilds() {
        let first = table(TWO, None);
        let real = &first.services()[0].reals[0];
        let _flow = real.state.bind();
        let reweighted = TWO.replace("'10.0.0.1:80'}", "'10.0.0.1:80', weight: 5}");
        let second = table(&reweighted, Some(&first));
        let same = second.services()[0].real(real.address).unwrap();
        assert!(Arc::ptr_eq(&same.state, &real.state));
        assert_eq!(same.state.inactive(), 1);
        assert!(Arc::ptr_eq(
            &second.services()[0].stats,
            &first.services()[0].stats
        ));
        let other_vip = table(&TWO.replace(":80\n", ":81\n"), Some(&first));
        assert!(!Arc::ptr_eq(
            &other_vip.services()[0].stats,
            &first.services()[0].stats
        ));
    }

    #[test]
    fn health_verdicts_are_baked_into_the_snapshot() {
        let checked = TWO.replace("    reals:", "    health_check: { type: tcp }\n    reals:");
        let config = config::parse(&checked, "t").unwrap();
        let key = config.services[0].key();
        let down = Arc::new(CheckStatus::new(false));
        let mut health = HealthView::default();
        health.insert(key, "10.0.0.1:80".parse().unwrap(), Arc::clone(&down));
        let first = ServiceTable::build(&config, None, &health);
        let real = first.services()[0].real("10.0.0.1:80".parse().unwrap()).unwrap();
        assert!(!real.up && !real.available(Millis(0)));
        assert!(
            first.services()[0]
                .real("10.0.0.2:80".parse().unwrap())
                .unwrap()
                .up
        );

        // Nothing changed: the service is shared as it is, scheduler state and all.
        let second = ServiceTable::build(&config, Some(&first), &health);
        assert!(Arc::ptr_eq(&first.services()[0], &second.services()[0]));

        // Back up: a new service snapshot, the real is available and out of back-off.
        real.state.record_failure(Millis(0));
        down.lock().up = true;
        let third = ServiceTable::build(&config, Some(&second), &health);
        assert!(!Arc::ptr_eq(&second.services()[0], &third.services()[0]));
        let real = third.services()[0].real("10.0.0.1:80".parse().unwrap()).unwrap();
        assert!(real.up && real.available(Millis(0)));

        // Quiesced instead of removed: in scheduling, at weight 0.
        down.lock().up = false;
        let quiesce =
            config::parse(&checked.replace("type: tcp", "type: tcp, on_down: quiesce"), "t").unwrap();
        let fourth = ServiceTable::build(&quiesce, Some(&third), &health);
        let real = fourth.services()[0].real("10.0.0.1:80".parse().unwrap()).unwrap();
        assert!(real.up && real.weight == 0);
    }

    #[test]
    fn a_real_back_up_or_added_ramps_its_weight_and_cap_over_the_slow_start() {
        let text = TWO
            .replace(
                "    reals:",
                "    slow_start: 10s\n    health_check: { type: tcp }\n    reals:",
            )
            .replace(
                "{address: '10.0.0.1:80'}",
                "{address: '10.0.0.1:80', weight: 100, max_conns: 40}",
            );
        let config = config::parse(&text, "t").unwrap();
        let key = config.services[0].key();
        let address: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let status = Arc::new(CheckStatus::new(false));
        let mut health = HealthView::default();
        health.insert(key, address, Arc::clone(&status));
        // At start every real has its weight at once (nothing is coming back).
        let at = |seconds: u64| Millis(1_000_000 + seconds * 1_000);
        let first = ServiceTable::build_at(&config, None, &health, at(0));
        assert!(!first.ramping());
        // Back up: a sliver of its weight and cap, growing with time.
        status.lock().up = true;
        let second = ServiceTable::build_at(&config, Some(&first), &health, at(0));
        let real = second.services()[0].real(address).unwrap();
        assert!(second.ramping() && real.weight == 1, "weight {}", real.weight);
        let third = ServiceTable::build_at(&config, Some(&second), &health, at(5));
        let real = third.services()[0].real(address).unwrap();
        assert_eq!(real.weight, 50, "halfway");
        let fourth = ServiceTable::build_at(&config, Some(&third), &health, at(20));
        let real = fourth.services()[0].real(address).unwrap();
        assert_eq!(real.weight, 100);
        assert!(!fourth.ramping() && real.state.ramp_start().is_none(), "over");
        // A real added to the running service ramps too.
        let added = text.replace(
            "{address: '10.0.0.2:80'}",
            "{address: '10.0.0.2:80'}, {address: '10.0.0.3:80', weight: 50}",
        );
        let fifth = ServiceTable::build_at(
            &config::parse(&added, "t").unwrap(),
            Some(&fourth),
            &health,
            at(21),
        );
        let new = fifth.services()[0].real("10.0.0.3:80".parse().unwrap()).unwrap();
        assert!(fifth.ramping() && new.weight < 50);
        // Without slow_start the same comes back at its whole weight.
        let plain = config::parse(&text.replace("    slow_start: 10s\n", ""), "t").unwrap();
        status.lock().up = false;
        let down = ServiceTable::build(&plain, None, &health);
        status.lock().up = true;
        let up = ServiceTable::build(&plain, Some(&down), &health);
        assert_eq!(up.services()[0].real(address).unwrap().weight, 100);
        assert!(!up.ramping());
    }
}
