//! The pure step of applying a configuration: from the running configuration and a new one,
//! everything that must change — the proxied services to bind and to close, the packet data
//! plane's host setup and VIPs, the control plane's descriptor reserve, and what to report.
//! No I/O: [`Director::apply`](super::Director) executes a plan in order and undoes what it did
//! on any failure. A reload, an admin change (and later a cluster update) all go through it.

use std::{collections::BTreeSet, net::IpAddr};

use super::ReloadSummary;
use crate::{
    config::{Config, ServiceConfig, ServiceKey},
    lvs::setup::{self, Step},
};

/// What applying a new configuration changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Proxied services to bind, before anything changes: new ones, and packet services that
    /// became proxied.
    pub bind: Vec<ServiceKey>,
    /// Proxied services to close once the new table is published: gone ones, and proxied ones
    /// that now forward packets.
    pub close: Vec<ServiceKey>,
    /// Whether the new configuration forwards packets (nat, dr, tun).
    pub packet_plane: bool,
    /// The packet data plane's host setup for the new configuration.
    pub setup: Vec<Step>,
    /// The VIPs routed into the TUN device (for the eBPF steering program).
    pub vips: Vec<IpAddr>,
    /// Descriptors the control plane keeps for the new configuration beyond the fixed reserve:
    /// one listener per proxied service and worker, one per checked real.
    pub control_descriptors: usize,
    /// Services added, removed and changed.
    pub summary: ReloadSummary,
}

/// The plan that takes `running` to `new` on a director with `workers` workers, whose
/// links (client-facing interfaces for proxy ARP, the server side's MTU) are `links`; a `master` draws the
/// VIPs' traffic (every director but the backup of an `ha:` pair).
pub fn plan(running: &Config, new: &Config, workers: usize, links: &setup::Links, master: bool) -> Plan {
    let proxied = |config: &Config| -> BTreeSet<ServiceKey> {
        config
            .services
            .iter()
            .filter(|service| !service.on_packet_plane())
            .map(ServiceConfig::key)
            .collect()
    };
    let keys = |config: &Config| -> BTreeSet<ServiceKey> {
        config.services.iter().map(ServiceConfig::key).collect()
    };
    let (proxied_before, proxied_after) = (proxied(running), proxied(new));
    let (before, after) = (keys(running), keys(new));
    let changed = new
        .services
        .iter()
        .filter(|service| {
            running
                .services
                .iter()
                .any(|old| old.key() == service.key() && old != *service)
        })
        .count();
    Plan {
        bind: proxied_after.difference(&proxied_before).copied().collect(),
        close: proxied_before.difference(&proxied_after).copied().collect(),
        packet_plane: crate::lvs::plane::needed(new),
        setup: setup::plan(new, links, master),
        vips: crate::table::packet_vips(new),
        control_descriptors: control_descriptors(new, workers),
        summary: ReloadSummary {
            added: after.difference(&before).count(),
            removed: before.difference(&after).count(),
            changed,
        },
    }
}

/// Descriptors the control plane keeps for `config` with `workers` workers, beyond the fixed
/// reserve: one listener per proxied service and worker, one per checked real (a check holds
/// one at a time).
pub fn control_descriptors(config: &Config, workers: usize) -> usize {
    config
        .services
        .iter()
        .map(|service| {
            let listeners = if service.on_packet_plane() { 0 } else { workers };
            let checks = if service.health_check.is_some() {
                service.reals.len()
            } else {
                0
            };
            listeners + checks
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn parsed(services: &str) -> Config {
        config::parse(
            &format!("dataplane: {{ tun: lbtun0, server_interface: br0 }}\nservices:\n{services}"),
            "t",
        )
        .unwrap()
    }

    #[test]
    fn a_reload_binds_what_is_new_and_closes_what_is_gone() {
        let running = parsed(
            "  - { name: a, protocol: tcp, listen: '127.0.0.1:80', reals: [{address: '10.0.0.1'}] }\n  - { name: b, protocol: udp, listen: '127.0.0.1:53', health_check: { type: udp, send: x }, reals: [{address: '10.0.0.[1-3]'}] }\n",
        );
        let new = parsed(
            "  - { name: a, protocol: tcp, listen: '127.0.0.1:80', reals: [{address: '10.0.0.1', weight: 2}] }\n  - { name: c, protocol: tcp, listen: '127.0.0.1:81', reals: [{address: '10.0.0.1'}] }\n",
        );
        let plan = plan(&running, &new, 2, &eth0(), true);
        let key = |text: &str| ServiceKey::parse(text).unwrap();
        assert_eq!(plan.bind, [key("tcp:127.0.0.1:81")]);
        assert_eq!(plan.close, [key("udp:127.0.0.1:53")]);
        assert_eq!(
            plan.summary,
            ReloadSummary {
                added: 1,
                removed: 1,
                changed: 1
            }
        );
        assert!(!plan.packet_plane && plan.setup.is_empty() && plan.vips.is_empty());
        assert_eq!(plan.control_descriptors, 4, "two services, two workers, no check");
        assert_eq!(
            self::plan(&new, &running, 2, &setup::Links::default(), true).control_descriptors,
            2 + 2 + 3
        );
    }

    /// A host whose one client-facing interface is eth0.
    fn eth0() -> setup::Links {
        setup::Links {
            clients: vec!["eth0".to_owned()],
            server_mtu: None,
        }
    }

    #[test]
    fn a_service_that_changes_plane_is_closed_or_bound() {
        let proxied = parsed(
            "  - { name: a, protocol: tcp, listen: '192.0.2.1:80', reals: [{address: '10.0.0.1'}] }\n",
        );
        let nat = parsed(
            "  - { name: a, protocol: tcp, listen: '192.0.2.1:80', forward: nat, reals: [{address: '10.0.0.1'}] }\n",
        );
        let to_nat = plan(&proxied, &nat, 1, &eth0(), true);
        let key = ServiceKey::parse("tcp:192.0.2.1:80").unwrap();
        assert_eq!(
            (to_nat.bind.as_slice(), to_nat.close.as_slice()),
            (&[][..], &[key][..])
        );
        assert!(to_nat.packet_plane);
        assert_eq!(to_nat.vips, ["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert!(
            to_nat
                .setup
                .iter()
                .any(|step| step.to_string() == "ip route replace 192.0.2.1/32 dev lbtun0")
        );
        assert!(
            to_nat
                .setup
                .iter()
                .any(|step| step.to_string() == "ip neigh replace proxy 192.0.2.1 dev eth0")
        );
        assert_eq!(to_nat.summary.changed, 1);
        let back = plan(&nat, &proxied, 1, &setup::Links::default(), true);
        assert_eq!(
            (back.bind.as_slice(), back.close.as_slice()),
            (&[key][..], &[][..])
        );
        assert!(back.setup.is_empty());
    }
}
