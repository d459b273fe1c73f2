//! Route health injection: which VIPs a director announces to its routers, and the routes
//! that do it. A BGP speaker beside lbd (BIRD) exports a routing table; lbd puts `VIP/32`
//! into it, through its TUN device, while it is ready and the VIP has a service with an
//! available real, and takes it out otherwise. Because the route goes through the TUN
//! device, it goes with the device when lbd dies, whatever kills it.

use std::{collections::BTreeSet, net::IpAddr};

use crate::{clock::Millis, table::ServiceTable};

/// The VIPs to announce at `now`: every VIP of a service that forwards packets (nat, dr,
/// tun) with at least one real that is available (up, not backing off) and has a weight, all
/// of them only while the director is `ready`.
pub fn wanted(table: &ServiceTable, ready: bool, now: Millis) -> BTreeSet<IpAddr> {
    if !ready {
        return BTreeSet::new();
    }
    table
        .services()
        .iter()
        .filter(|service| table.is_packet_vip(service.key.listen.ip()))
        .filter(|service| {
            service
                .reals
                .iter()
                .any(|real| real.weight > 0 && real.available(now))
        })
        .map(|service| service.key.listen.ip())
        .collect()
}

/// `ip` arguments that announce `vip` in routing `table` through `tun`.
pub fn announce_args(vip: IpAddr, tun: &str, table: u32) -> Vec<String> {
    route_args("replace", vip, tun, table)
}

/// `ip` arguments that withdraw `vip` from routing `table`.
pub fn withdraw_args(vip: IpAddr, tun: &str, table: u32) -> Vec<String> {
    route_args("del", vip, tun, table)
}

fn route_args(verb: &str, vip: IpAddr, tun: &str, table: u32) -> Vec<String> {
    let prefix = match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    [
        "route",
        verb,
        &format!("{vip}/{prefix}"),
        "dev",
        tun,
        "table",
        &table.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, table::HealthView};

    #[test]
    fn a_vip_is_announced_while_ready_and_while_a_real_can_take_flows() {
        let config = config::parse(
            "dataplane: { tun: lbtun0, server_interface: lo }\nservices:\n\
             - { protocol: tcp, listen: '192.0.2.1:80', forward: dr, reals: [{address: '10.0.0.1:80'}] }\n\
             - { protocol: tcp, listen: '192.0.2.2:80', forward: dr, reals: [{address: '10.0.0.1:80', weight: 0}] }\n\
             - { protocol: tcp, listen: '192.0.2.3:80', forward: proxy, reals: [{address: '10.0.0.1:80'}] }\n\
             - { protocol: tcp, listen: '192.0.2.4:80', forward: dr }\n",
            "t",
        )
        .unwrap();
        let table = ServiceTable::build(&config, None, &HealthView::default());
        let vip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(wanted(&table, true, Millis(0)), BTreeSet::from([vip]));
        assert!(wanted(&table, false, Millis(0)).is_empty());
        assert_eq!(
            announce_args(vip, "lbtun0", 101).join(" "),
            "route replace 192.0.2.1/32 dev lbtun0 table 101"
        );
        assert_eq!(
            withdraw_args(vip, "lbtun0", 101).join(" "),
            "route del 192.0.2.1/32 dev lbtun0 table 101"
        );
    }
}
