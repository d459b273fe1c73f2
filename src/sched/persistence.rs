//! Persistence (`ipvsadm -p TIMEOUT -M NETMASK`, `ip_vs_sched_persist`): a *template* per
//! client network (the client address masked by `netmask`) points to the real its first flow
//! got. Later flows from that network go to the same real without asking the scheduler, while
//! the template is valid: the real is still in the service and available (up, not in
//! back-off). As in IPVS by default, a real at weight 0 or overloaded keeps its clients.
//!
//! A template lives while it has flows, and for `timeout` after its last flow ended.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use super::{
    Flow, Scheduler,
    cache::{Change, ShardedCache},
};
use crate::{clock::Millis, config, live::Real};

/// How often expired templates are swept out.
const SWEEP_INTERVAL_MS: u64 = 10_000;
/// Most templates kept per service.
const HARD_CAP: usize = 1 << 20;

#[derive(Debug)]
struct Template {
    real: SocketAddr,
    /// Flows started under this template and not yet ended.
    flows: u32,
    /// When it expires if it has no flow.
    expires: Millis,
    /// Tells this template from a later one for the same network.
    id: u64,
}

/// The templates of one service.
#[derive(Debug)]
pub struct Persistence {
    templates: ShardedCache<Template>,
    prefix: Option<u8>,
    timeout_ms: AtomicU64,
    next_id: AtomicU64,
}

/// A flow's hold on its template: the template cannot expire while a hold lives. The flow's
/// holder [releases](Self::release) it when the flow ends, with the time; the template then
/// expires the persistence timeout later, once no other flow holds it. A hold dropped without
/// a release (a task cancelled at shutdown) counts as released when it was taken, so that the
/// scheduler itself never reads a clock.
#[derive(Debug)]
pub struct TemplateHold {
    table: Arc<Persistence>,
    key: IpAddr,
    id: u64,
    taken: Millis,
    released: AtomicBool,
}

impl Persistence {
    /// Templates for `config`.
    pub fn new(config: &config::Persistence) -> Self {
        let table = Self {
            templates: ShardedCache::new(HARD_CAP, "the persistence template table"),
            prefix: config.netmask.prefix,
            timeout_ms: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
        };
        table.set_timeout(config.timeout);
        table
    }

    /// Whether this table can serve `config` (same netmask); its timeout is then updated.
    pub fn adopt(&self, config: &config::Persistence) -> bool {
        if config.netmask.prefix != self.prefix {
            return false;
        }
        self.set_timeout(config.timeout);
        true
    }

    fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Takes a template from another director (flow sync): `network`'s clients go to `real`
    /// until `expires`, unless a flow here holds the network's own template already.
    pub fn install(&self, network: IpAddr, real: SocketAddr, expires: Millis) {
        let network = self.key(network);
        let id = self.next_id.fetch_add(1, Relaxed);
        self.templates.update(network, |template| match template {
            Some(template) if template.flows > 0 => ((), Change::Keep),
            Some(template) => {
                template.real = real;
                template.expires = template.expires.max(expires);
                ((), Change::Keep)
            }
            None => (
                (),
                Change::Insert(Template {
                    real,
                    flows: 0,
                    expires,
                    id,
                }),
            ),
        });
    }

    /// Templates held now.
    pub fn len(&self) -> usize {
        self.templates.len()
    }

    /// Whether there is no template.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The client's network: its address masked by the netmask.
    fn key(&self, client: IpAddr) -> IpAddr {
        match (client, self.prefix) {
            (_, None) => client,
            (IpAddr::V4(v4), Some(prefix)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
                Ipv4Addr::from(u32::from(v4) & mask).into()
            }
            (IpAddr::V6(v6), Some(prefix)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                Ipv6Addr::from(u128::from(v6) & mask).into()
            }
        }
    }

    /// The real for `flow`: its network's template's real while that is valid, else the
    /// scheduler's choice (which becomes the template). `position` finds a real's index in
    /// `reals` by address.
    pub fn schedule(
        self: &Arc<Self>,
        reals: &[Real],
        position: impl Fn(SocketAddr) -> Option<usize>,
        scheduler: &dyn Scheduler,
        flow: &Flow,
    ) -> Option<(usize, TemplateHold)> {
        let now = flow.now;
        if self.templates.sweep_due(now, SWEEP_INTERVAL_MS) {
            self.templates.remove_where(usize::MAX, |template| {
                template.flows == 0 && template.expires <= now
            });
        }
        let key = self.key(flow.client.ip());
        let chosen = self.templates.update(key, |template| {
            if let Some(template) = template
                && (template.flows > 0 || now < template.expires)
                && let Some(i) = position(template.real)
                && reals[i].available(now)
            {
                template.flows += 1;
                return (Some((i, template.id)), Change::Keep);
            }
            let Some(i) = scheduler.pick(reals, flow) else {
                return (None, Change::Keep);
            };
            let id = self.next_id.fetch_add(1, Relaxed);
            let template = Template {
                real: reals[i].address,
                flows: 1,
                expires: now,
                id,
            };
            (Some((i, id)), Change::Insert(template))
        });
        chosen.map(|(i, id)| {
            (
                i,
                TemplateHold {
                    table: Arc::clone(self),
                    key,
                    id,
                    taken: now,
                    released: AtomicBool::new(false),
                },
            )
        })
    }
}

impl TemplateHold {
    /// The client network the template is for (the client's address, masked).
    pub fn network(&self) -> IpAddr {
        self.key
    }

    /// The persistence timeout, in whole seconds.
    pub fn timeout_secs(&self) -> u32 {
        u32::try_from(self.table.timeout_ms.load(Relaxed) / 1000).unwrap_or(u32::MAX)
    }

    /// The flow ended at `now`: once no flow holds the template, it expires the persistence
    /// timeout after `now`. Only the first release counts.
    pub fn release(&self, now: Millis) {
        if self.released.swap(true, Relaxed) {
            return;
        }
        let expires = now.plus(self.table.timeout_ms.load(Relaxed));
        self.table.templates.update(self.key, |template| {
            if let Some(template) = template
                && template.id == self.id
            {
                template.flows = template.flows.saturating_sub(1);
                template.expires = expires;
            }
            ((), Change::Keep)
        });
    }
}

impl Drop for TemplateHold {
    fn drop(&mut self) {
        self.release(self.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Netmask, Persistence as Settings},
        sched::{build, testing},
    };

    fn table(netmask: Option<u8>, timeout_s: u64) -> Arc<Persistence> {
        Arc::new(Persistence::new(&Settings {
            timeout: Duration::from_secs(timeout_s),
            netmask: Netmask { prefix: netmask },
        }))
    }

    fn find(reals: &[Real], address: SocketAddr) -> Option<usize> {
        reals.iter().position(|real| real.address == address)
    }

    fn from(client: [u8; 4], now: u64) -> Flow {
        Flow {
            client: (client, 40_000).into(),
            now: Millis(now),
            ..testing::flow()
        }
    }

    #[test]
    fn a_client_keeps_its_real_across_flows() {
        let reals = testing::reals(&[1, 1, 1]);
        let rr = build(crate::config::SchedulerKind::Rr, &[], &reals, None, 1);
        let persistence = table(None, 360);
        let (first, _hold) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 0))
            .unwrap();
        let (again, _hold2) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 5))
            .unwrap();
        assert_eq!(first, again);
        let (other, _hold3) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 2], 5))
            .unwrap();
        assert_ne!(other, first, "another client is scheduled by rr");
    }

    #[test]
    fn the_netmask_groups_clients() {
        let reals = testing::reals(&[1, 1, 1]);
        let rr = build(crate::config::SchedulerKind::Rr, &[], &reals, None, 1);
        let persistence = table(Some(24), 360);
        let (a, _h1) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 0))
            .unwrap();
        let (b, _h2) = persistence
            .schedule(
                &reals,
                |a| find(&reals, a),
                rr.as_ref(),
                &from([192, 0, 2, 200], 0),
            )
            .unwrap();
        let (c, _h3) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 3, 1], 0))
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_template_expires_after_its_last_flow_plus_timeout() {
        let reals = testing::reals(&[1, 1]);
        let rr = build(crate::config::SchedulerKind::Rr, &[], &reals, None, 1);
        let persistence = table(None, 60);
        let pick = |now: u64| {
            persistence
                .schedule(
                    &reals,
                    |a| find(&reals, a),
                    rr.as_ref(),
                    &from([192, 0, 2, 1], now),
                )
                .unwrap()
        };
        let (first, hold) = pick(0);
        // While the flow lives, the template holds even past its timeout.
        let (again, hold2) = pick(1_000_000);
        assert_eq!(again, first);
        hold.release(Millis(1_000_000));
        hold2.release(Millis(2_000_000));
        hold2.release(Millis(3_000_000)); // only the first release counts
        // The last flow ended at 2 000 s: the template holds until 2 060 s.
        let (kept, hold3) = pick(2_059_999);
        assert_eq!(kept, first);
        hold3.release(Millis(2_059_999));
        drop((hold, hold2, hold3));
        let (next, hold4) = pick(2_120_000);
        assert_ne!(next, first, "expired: scheduled afresh (rr moves on)");
        // A hold dropped unreleased counts as released when it was taken.
        drop(hold4);
        let (same, _hold) = pick(2_179_999);
        assert_eq!(same, next);
    }

    #[test]
    fn weight_zero_keeps_clients_but_a_down_real_loses_them() {
        let mut reals = testing::reals(&[1, 1]);
        let rr = build(crate::config::SchedulerKind::Rr, &[], &reals, None, 1);
        let persistence = table(None, 360);
        let (first, _hold) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 0))
            .unwrap();
        reals[first].weight = 0;
        let (same, _h2) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 1))
            .unwrap();
        assert_eq!(
            same, first,
            "IPVS keeps templates of a quiesced real (expire_quiescent_template=0)"
        );
        reals[first].up = false;
        let (moved, _h3) = persistence
            .schedule(&reals, |a| find(&reals, a), rr.as_ref(), &from([192, 0, 2, 1], 2))
            .unwrap();
        assert_ne!(moved, first);
    }
}
