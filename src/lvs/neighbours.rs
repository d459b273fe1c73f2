//! Real servers' MAC addresses for direct routing, read from the kernel's neighbour table
//! (`/proc/net/arp`) and refreshed every second, so a real whose MAC changes is followed.
//! A real not in the table yet is resolved by sending it one small UDP datagram (the kernel
//! ARPs for it); its first packets are dropped meanwhile, and the client retransmits.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

/// A MAC address.
pub type Mac = [u8; 6];

/// The neighbour table as last read.
#[derive(Debug)]
pub struct Neighbours {
    table: ArcSwap<HashMap<Ipv4Addr, Mac>>,
    asked: Mutex<HashMap<Ipv4Addr, Instant>>,
}

impl Neighbours {
    /// Reads the table now and refreshes it every second until `stop`.
    pub fn start(stop: Arc<AtomicBool>) -> Arc<Self> {
        let neighbours = Arc::new(Self {
            table: ArcSwap::from_pointee(read()),
            asked: Mutex::new(HashMap::new()),
        });
        let refreshed = Arc::clone(&neighbours);
        let _ = thread::Builder::new()
            .name("lbd-neighbours".to_owned())
            .spawn(move || {
                while !stop.load(Relaxed) {
                    thread::sleep(Duration::from_secs(1));
                    refreshed.table.store(Arc::new(read()));
                }
            });
        neighbours
    }

    /// The MAC of `ip`, or `None` after asking the kernel to resolve it (at most once a
    /// second per address). IPv4 only for now (the ARP table): IPv6 gives `None`.
    pub fn mac(&self, ip: IpAddr) -> Option<Mac> {
        let IpAddr::V4(ip) = ip else {
            return None;
        };
        if let Some(mac) = self.table.load().get(&ip) {
            return Some(*mac);
        }
        let mut asked = self.asked.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if asked
            .get(&ip)
            .is_none_or(|at| now.duration_since(*at) > Duration::from_secs(1))
        {
            asked.insert(ip, now);
            if let Ok(socket) = UdpSocket::bind("0.0.0.0:0") {
                let _ = socket.send_to(&[0], (ip, 9));
            }
        }
        None
    }
}

/// Complete entries of `/proc/net/arp`.
fn read() -> HashMap<Ipv4Addr, Mac> {
    let text = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
    parse(&text)
}

/// Parses `/proc/net/arp`: `IP  HW-type  Flags  HW-address  Mask  Device`; flag 0x2 = complete.
fn parse(text: &str) -> HashMap<Ipv4Addr, Mac> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ip: Ipv4Addr = fields.first()?.parse().ok()?;
            let flags = u32::from_str_radix(fields.get(2)?.trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            Some((ip, crate::packet::arp::parse_mac(fields.get(3)?)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_entries_only() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    10.77.0.11       0x1         0x2         02:00:00:00:00:0b     *        br0\n\
                    10.77.0.12       0x1         0x0         00:00:00:00:00:00     *        br0\n";
        let table = parse(text);
        assert_eq!(table.len(), 1);
        assert_eq!(table[&Ipv4Addr::new(10, 77, 0, 11)], [2, 0, 0, 0, 0, 0x0b]);
        assert_eq!(crate::packet::arp::parse_mac("zz:00"), None);
    }
}
