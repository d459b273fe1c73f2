//! Announcing the VIPs after a takeover: a gratuitous ARP for each VIP out of each
//! client-facing interface, at once and again after 1 s and 5 s (as keepalived announces its
//! addresses), so that neighbours still holding the old master's MAC for a VIP move to this
//! director. Proxy ARP answers whoever asks later.

use std::{net::Ipv4Addr, time::Duration};

use crate::packet::arp;

/// When announcements go out, from the takeover.
pub const SCHEDULE: [Duration; 3] = [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(5)];

/// Sends one gratuitous ARP for each of `vips` out of each of `interfaces`; returns how many
/// went out. An interface that cannot send is logged and passed over.
pub fn announce(vips: &[Ipv4Addr], interfaces: &[String]) -> usize {
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
            match crate::sys::send_arp_broadcast(index, &arp::gratuitous(mac, vip)) {
                Ok(()) => sent += 1,
                Err(error) => tracing::warn!(interface, %vip, %error, "gratuitous ARP not sent"),
            }
        }
    }
    sent
}
