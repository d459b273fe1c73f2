//! Unsolicited neighbour advertisements: how a director that takes over an IPv6 VIP tells the
//! link that the VIP is now at its MAC (IPv6's gratuitous ARP, RFC 4861 7.2.6, as keepalived
//! announces its IPv6 addresses).

use std::net::Ipv6Addr;

/// The all-nodes multicast group, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// The Ethernet address of [`ALL_NODES`] (33:33 and the group's last 32 bits).
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// An unsolicited neighbour advertisement from `source` (the interface's link-local address)
/// saying that `target` is at `mac`: an IPv6 packet to [`ALL_NODES`] with hop limit 255, the
/// override flag set (neighbours replace the MAC they hold) and the router flag as a
/// forwarding director's own advertisements carry it, with a target link-layer address
/// option.
pub fn unsolicited_advertisement(mac: [u8; 6], source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&target.octets());
    // Option 2, target link-layer address, 1 unit of 8 bytes.
    payload.extend_from_slice(&[2, 1]);
    payload.extend_from_slice(&mac);
    let header = etherparse::icmpv6::NeighborAdvertisementHeader {
        router: true,
        solicited: false,
        r#override: true,
    };
    let mut out = Vec::with_capacity(40 + 8 + payload.len());
    // Writing into a Vec cannot fail for lack of room.
    let _ = etherparse::PacketBuilder::ipv6(source.octets(), ALL_NODES.octets(), 255)
        .icmpv6(etherparse::Icmpv6Type::NeighborAdvertisement(header))
        .write(&mut out, &payload);
    out
}

/// The link-local address of interface `name` in `/proc/net/if_inet6` (lines of address in
/// hex, index, prefix length, scope, flags, name; scope 0x20 is link).
pub fn link_local_of(if_inet6: &str, name: &str) -> Option<Ipv6Addr> {
    if_inet6.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[5] != name || fields[3] != "20" {
            return None;
        }
        u128::from_str_radix(fields[0], 16).ok().map(Ipv6Addr::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_advertisement_names_the_vip_at_this_mac_to_all_nodes() {
        let (mac, vip) = ([2, 0, 0, 0, 0, 7], "fd00:77::100".parse().unwrap());
        let source: Ipv6Addr = "fe80::1".parse().unwrap();
        let packet = unsolicited_advertisement(mac, source, vip);
        let parsed = etherparse::SlicedPacket::from_ip(&packet).unwrap();
        let Some(etherparse::NetSlice::Ipv6(ip)) = parsed.net else {
            panic!("not IPv6");
        };
        assert_eq!(ip.header().hop_limit(), 255, "else receivers discard it");
        assert_eq!(ip.header().destination_addr(), ALL_NODES);
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = parsed.transport else {
            panic!("not ICMPv6");
        };
        assert!(icmp.is_checksum_valid(source.octets(), ALL_NODES.octets()));
        assert_eq!(icmp.type_u8(), 136);
        assert_eq!(icmp.bytes5to8()[0] & 0x20, 0x20, "override");
        assert_eq!(&icmp.payload()[..16], &vip.octets());
        assert_eq!(&icmp.payload()[16..], &[2, 1, 2, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn the_link_local_address_is_read_per_interface() {
        let table = "fd0000770000000000000000000000010002 40 00 80 dcl0\n\
                     fe80000000000000a8b997fffe9fa03f 02 40 20 80 dcl0\n\
                     fe8000000000000068f48cfffe41788e 03 40 20 80 br0\n";
        assert_eq!(
            link_local_of(table, "dcl0"),
            Some("fe80::a8b9:97ff:fe9f:a03f".parse().unwrap())
        );
        assert_eq!(
            link_local_of(table, "br0"),
            Some("fe80::68f4:8cff:fe41:788e".parse().unwrap())
        );
        assert_eq!(link_local_of(table, "eth9"), None);
    }
}
