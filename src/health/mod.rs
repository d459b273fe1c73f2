//! Health checks, in the control plane: one checker task per (service, real) with the
//! service's `health_check`, each publishing its real's [`CheckStatus`] (verdict, weight set
//! by the checks, last result) for the next table snapshot.
//!
//! A checker runs its checks one after another, so a real is never checked twice at once,
//! and every checker is its own task, so a slow check delays nobody else. First checks are
//! spread at random over one interval. The data plane reports connects that fail; `fall` of
//! them in a row take the real down at once, between checks (HAProxy's `observe layer4`).
//! A change of verdict is logged once, at info, and wakes the director
//! ([`Monitor::changes`]) to publish a new snapshot.

mod agent;
mod common;
mod exec;
mod http;
pub(crate) mod machine;
mod probe;
mod udp;
mod vip_path;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::{sync::Notify, time::Instant};
use tokio_util::task::AbortOnDropHandle;

use self::machine::Outcome;
pub(crate) use self::{common::Target, vip_path::VipPaths};
use crate::{
    config::{Config, ForwardMethod, HealthCheckConfig, HealthCheckKind, ServiceKey, StartState},
    table::{CheckStatus, HealthView},
};

/// The checkers of every checked real.
#[derive(Debug, Default)]
pub(crate) struct Monitor {
    checkers: HashMap<(ServiceKey, SocketAddr), Checker>,
    view: HealthView,
    changed: Arc<Notify>,
    /// For checks through a VIP's path (`via_vip`), once the director has a packet plane.
    vip_paths: Option<VipPaths>,
}

/// One real's checker: its settings and its task (aborted when dropped).
#[derive(Debug)]
struct Checker {
    check: Arc<HealthCheckConfig>,
    target: Target,
    status: Arc<CheckStatus>,
    _task: AbortOnDropHandle<()>,
}

impl Monitor {
    /// A monitor with no checkers.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Lets checks through a VIP's path (`via_vip`) pin their connections in the packet
    /// plane; those that started before are started again with it.
    pub(crate) fn set_vip_paths(&mut self, paths: VipPaths, config: &Config) {
        self.vip_paths = Some(paths);
        self.checkers
            .retain(|_, checker| checker.target.via_vip.is_none());
        self.sync(config);
    }

    /// Starts, keeps or stops checkers to match `config`. A real whose service, address and
    /// check are unchanged keeps its checker and its verdict; a new or changed one starts
    /// from `health_check.start`; a removed one loses its checker. Must run inside a tokio
    /// runtime, where the checkers then run.
    pub(crate) fn sync(&mut self, config: &Config) {
        let mut checkers = HashMap::new();
        for service in &config.services {
            let Some(check) = service
                .health_check
                .as_ref()
                .filter(|check| check.kind != HealthCheckKind::None)
            else {
                continue;
            };
            let check = Arc::new(check.clone());
            // A real in maintenance is not checked; it starts afresh when it leaves.
            for real in service.reals.iter().filter(|real| !real.maintenance) {
                let id = (service.key(), real.address);
                let version = real.proxy_protocol_in(service);
                let target = Target {
                    service: service.name.clone(),
                    real: real.address,
                    send_proxy: version.version().filter(|_| check.sends_proxy(version)),
                    via_vip: (check.via_vip
                        && matches!(real.forward_in(service), ForwardMethod::Dr | ForwardMethod::Tun))
                    .then_some(service.listen),
                };
                let checker = match self.checkers.remove(&id) {
                    Some(old) if *old.check == *check && old.target == target => old,
                    _ => Checker::start(
                        Arc::clone(&check),
                        target,
                        Arc::clone(&self.changed),
                        self.vip_paths.clone(),
                    ),
                };
                checkers.insert(id, checker);
            }
        }
        // What is left in self.checkers is gone: dropping it stops those tasks.
        self.checkers = checkers;
        let mut view = HealthView::default();
        for ((service, real), checker) in &self.checkers {
            view.insert(*service, *real, Arc::clone(&checker.status));
        }
        self.view = view;
    }

    /// The status of every checked real, for [`ServiceTable::build`](crate::table::ServiceTable::build).
    pub(crate) fn view(&self) -> &HealthView {
        &self.view
    }

    /// Notified whenever a real's verdict changes: time to publish a new snapshot. Several
    /// changes before the wake-up make one notification.
    pub(crate) fn changes(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }
}

impl Checker {
    fn start(
        check: Arc<HealthCheckConfig>,
        target: Target,
        changed: Arc<Notify>,
        vip_paths: Option<VipPaths>,
    ) -> Self {
        let status = Arc::new(CheckStatus::new(check.start == StartState::Up));
        let task = tokio::spawn(watch(
            Arc::clone(&check),
            target.clone(),
            Arc::clone(&status),
            changed,
            vip_paths,
        ));
        Self {
            check,
            target,
            status,
            _task: AbortOnDropHandle::new(task),
        }
    }
}

/// The checker task of one real: checks every `interval`, and hears at once of connects to
/// it that failed.
async fn watch(
    check: Arc<HealthCheckConfig>,
    target: Target,
    status: Arc<CheckStatus>,
    changed: Arc<Notify>,
    vip_paths: Option<VipPaths>,
) {
    let duration = metrics::histogram!(crate::telemetry::CHECK_DURATION, "service" => target.service.clone());
    let mut next = on_slot(crate::clock::deadline(
        Instant::now(),
        spread(check.interval, &target),
    ));
    let short = crate::log::Throttle::new(Duration::from_secs(60));
    loop {
        let outcome = tokio::select! {
            () = tokio::time::sleep_until(next) => {
                let started = Instant::now();
                let outcome = probe::run(&check, &target, vip_paths.as_ref()).await;
                duration.record(started.elapsed().as_secs_f64());
                status.count_check(outcome.passed);
                next = on_slot(crate::clock::deadline(started, check.interval).max(Instant::now()));
                outcome
            }
            () = status.passive_failure() => {
                // `fall` failed connects in a row from client traffic take the real down at
                // once, as HAProxy's `observe layer4`; fewer change nothing. A connect that
                // succeeds restarts the streak.
                let streak = status.passive_streak();
                if streak < check.fall || !status.lock().up {
                    continue;
                }
                Outcome {
                    immediate: true,
                    ..Outcome::fail(format!("passive: {streak} failed connects in a row from client traffic"))
                }
            }
        };
        if outcome.local {
            // This host ran out of something (descriptors, ports): no verdict on the real.
            if let Some(suppressed) = short.ready() {
                tracing::warn!(
                    suppressed,
                    "real server {} of service {}: check not run ({}); its verdict stays",
                    target.real,
                    target.service,
                    outcome.reason
                );
            }
            continue;
        }
        let change = {
            let mut record = status.lock();
            if !outcome.passed && record.up && !outcome.immediate {
                tracing::debug!(
                    "real server {} of service {}: check failed ({}), {}/{} toward down",
                    target.real,
                    target.service,
                    outcome.reason,
                    record.failures + 1,
                    check.fall
                );
            }
            machine::apply(&mut record, outcome, check.rise, check.fall, SystemTime::now())
        };
        if let Some(change) = change {
            tracing::info!(
                "real server {} of service {}: {} -> {} ({})",
                target.real,
                target.service,
                change.from,
                change.to,
                change.reason
            );
            changed.notify_one();
        }
    }
}

/// Checks start on 10 ms slots: the checks of many reals due within one slot run after one
/// wake-up of the control plane instead of one each (1,000 reals checked every second wake
/// it 100 times a second, not 1,000).
const SLOT: Duration = Duration::from_millis(10);

/// `at`, rounded up to the next slot.
fn on_slot(at: Instant) -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let since = at.saturating_duration_since(epoch).as_nanos();
    let slot = SLOT.as_nanos();
    let rounded = since.div_ceil(slot) * slot;
    crate::clock::deadline(
        epoch,
        Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX)),
    )
}

/// A random delay within one interval before a real's first check, so that the checks of many
/// reals spread out instead of running in bursts.
fn spread(interval: Duration, target: &Target) -> Duration {
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    let random = ahash::RandomState::new().hash_one((target.real, std::time::Instant::now()));
    Duration::from_millis(random % millis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn config(check: &str, reals: &str) -> Config {
        config::parse(
            &format!(
                "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    health_check: {check}\n    reals: {reals}\n"
            ),
            "t",
        )
        .unwrap()
    }

    fn status(monitor: &Monitor, config: &Config, real: &str) -> Option<Arc<CheckStatus>> {
        monitor
            .view()
            .get(&config.services[0].key(), real.parse().unwrap())
            .cloned()
    }

    #[tokio::test]
    async fn sync_keeps_unchanged_checkers_and_replaces_the_rest() {
        // Port 9 on 127.77/16: nothing listens; the check interval is long enough that no
        // check runs during the test.
        let check = "{ type: tcp, interval: 3600s, start: down }";
        let two = config(check, "[{address: '127.77.0.1:9'}, {address: '127.77.0.2:9'}]");
        let mut monitor = Monitor::new();
        monitor.sync(&two);
        assert_eq!(monitor.view().len(), 2);
        let first = status(&monitor, &two, "127.77.0.1:9").unwrap();
        assert!(!first.record().up, "start: down");

        // A real removed, one added: the one kept keeps its status.
        let other = config(check, "[{address: '127.77.0.1:9'}, {address: '127.77.0.3:9'}]");
        monitor.sync(&other);
        assert!(Arc::ptr_eq(
            &first,
            &status(&monitor, &other, "127.77.0.1:9").unwrap()
        ));
        assert!(status(&monitor, &other, "127.77.0.2:9").is_none());
        assert!(status(&monitor, &other, "127.77.0.3:9").is_some());

        // The check changed: every checker starts afresh.
        let changed = config(
            "{ type: tcp, interval: 3600s, start: up }",
            "[{address: '127.77.0.1:9'}]",
        );
        monitor.sync(&changed);
        let fresh = status(&monitor, &changed, "127.77.0.1:9").unwrap();
        assert!(!Arc::ptr_eq(&first, &fresh) && fresh.record().up);

        // No check at all: no checkers.
        monitor.sync(&config("{ type: none }", "[{address: '127.77.0.1:9'}]"));
        assert!(monitor.view().is_empty());
    }
}
