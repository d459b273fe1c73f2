//! Announcing the VIPs after a takeover: a gratuitous ARP for each IPv4 VIP and an unsolicited
//! neighbour advertisement for each IPv6 VIP out of each client-facing interface, at once and
//! again after 1 s and 5 s (as keepalived announces its addresses), so that neighbours still
//! holding the old master's MAC for a VIP move to this director. Proxy ARP and proxy NDP
//! answer whoever asks later.

use std::{net::IpAddr, time::Duration};

use crate::packet::{arp, ndp};

/// The EtherTypes of ARP and IPv6.
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// When announcements go out, from the takeover.
pub const SCHEDULE: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(5)];

/// Sends one gratuitous ARP (IPv4) or unsolicited neighbour advertisement (IPv6) for each of
/// `vips` out of each of `interfaces`; returns how many went out. An interface that cannot
/// send is logged and passed over.
pub fn announce(vips: &[IpAddr], interfaces: &[String]) -> usize {
    let if_inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    let mut sent = 0;
    for interface in interfaces {
        let read = |what: &str| std::fs::read_to_string(format!("/sys/class/net/{interface}/{what}"));
        let (Some(mac), Some(index)) = (
            read("address").ok().and_then(|text| arp::parse_mac(&text)),
            read("ifindex")
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok()),
        ) else {
            tracing::warn!(
                interface,
                "cannot announce the VIPs: the interface has no MAC address"
            );
            continue;
        };
        for &vip in vips {
            let result = match vip {
                IpAddr::V4(vip) => {
                    crate::sys::send_frame(index, ETHERTYPE_ARP, [0xff; 6], &arp::gratuitous(mac, vip))
                }
                IpAddr::V6(vip) => {
                    let Some(source) = ndp::link_local_of(&if_inet6, interface) else {
                        tracing::warn!(interface, %vip, "no link-local address to advertise the VIP from");
                        continue;
                    };
                    let advertisement = ndp::unsolicited_advertisement(mac, source, vip);
                    crate::sys::send_frame(index, ETHERTYPE_IPV6, ndp::ALL_NODES_MAC, &advertisement)
                }
            };
            match result {
                Ok(()) => sent += 1,
                Err(error) => tracing::warn!(interface, %vip, %error, "VIP announcement not sent"),
            }
        }
    }
    sent
}
