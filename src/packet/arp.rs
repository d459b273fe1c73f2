//! Gratuitous ARP: how a director that takes over a VIP tells the segment that the VIP is now
//! at its MAC (as keepalived announces its addresses).

use std::net::Ipv4Addr;

/// The ARP packet's length (Ethernet, IPv4).
pub const LEN: usize = 28;

/// A gratuitous ARP request for `ip` from `mac`: sender and target address are both `ip`,
/// target hardware address broadcast. Neighbours that know `ip` update it to `mac`.
pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> [u8; LEN] {
    let mut packet = [0u8; LEN];
    packet[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    packet[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    packet[4] = 6;
    packet[5] = 4;
    packet[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&ip.octets());
    packet[18..24].copy_from_slice(&[0xff; 6]);
    packet[24..28].copy_from_slice(&ip.octets());
    packet
}

/// Reads a MAC address written `aa:bb:cc:dd:ee:ff` (as `/sys/class/net/*/address` and
/// `/proc/net/arp` write them).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gratuitous_request_names_the_vip_twice() {
        let mac = parse_mac("02:00:5e:10:00:01\n").unwrap();
        let packet = gratuitous(mac, Ipv4Addr::new(192, 168, 77, 100));
        #[rustfmt::skip]
        let expected = [
            0, 1, 8, 0, 6, 4, 0, 1,
            2, 0, 0x5e, 0x10, 0, 1, 192, 168, 77, 100,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 192, 168, 77, 100,
        ];
        assert_eq!(packet, expected);
        assert_eq!(parse_mac("02:00:5e:10:00"), None);
        assert_eq!(parse_mac("02:00:5e:10:00:01:02"), None);
    }
}
