//! Lists of networks (`10.0.0.0/8`, `2001:db8::/32`, a bare address for one host), as
//! `accept_proxy_from` writes them, with a lookup that costs O(log n) in the list's length:
//! the networks become sorted, merged ranges of addresses searched by bisection.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// One network: an address and a prefix length, with no bits set beyond the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network's first address.
    pub address: IpAddr,
    /// Its prefix length (0..32 for IPv4, 0..128 for IPv6).
    pub prefix: u8,
}

impl Cidr {
    /// The first and last address of the network, as numbers (IPv4 in the low 32 bits).
    fn range(self) -> (u128, u128) {
        let (value, width) = number(self.address);
        let host_bits = u32::from(width - self.prefix);
        let span = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        (value, value | span)
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let address: IpAddr = address.parse().map_err(|_| {
            format!("`{text}` is not a network: expected ADDRESS[/PREFIX], like 10.0.0.0/8 or 2001:db8::/32")
        })?;
        let address = address.to_canonical();
        let width = number(address).1;
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= width)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0..{width}"))?,
        };
        if number(address).0 != masked(address, prefix) {
            return Err(format!(
                "`{text}` has bits set beyond its /{prefix} prefix; write the network, {}/{prefix}",
                from_number(masked(address, prefix), address.is_ipv4())
            ));
        }
        Ok(Self { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A list of networks as written, searchable in O(log n).
#[derive(Debug, Clone, Default)]
pub struct Prefixes {
    /// As written (for `lbadm save` and the API).
    written: Vec<Cidr>,
    /// IPv4 networks as sorted, disjoint, non-adjacent ranges.
    v4: Vec<(u128, u128)>,
    /// The same for IPv6.
    v6: Vec<(u128, u128)>,
}

impl Prefixes {
    /// The networks of `list`.
    pub fn new(list: Vec<Cidr>) -> Self {
        let ranges = |v4: bool| {
            let mut ranges: Vec<(u128, u128)> = list
                .iter()
                .filter(|cidr| cidr.address.is_ipv4() == v4)
                .map(|cidr| cidr.range())
                .collect();
            ranges.sort_unstable();
            let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
            for (first, last) in ranges {
                match merged.last_mut() {
                    Some(previous) if first <= previous.1.saturating_add(1) => {
                        previous.1 = previous.1.max(last)
                    }
                    _ => merged.push((first, last)),
                }
            }
            merged.shrink_to_fit();
            merged
        };
        Self {
            v4: ranges(true),
            v6: ranges(false),
            written: list,
        }
    }

    /// Whether `ip` is in one of the networks (an IPv4-mapped IPv6 address as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let ranges = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        let value = number(ip).0;
        // The last range that starts at or before the address.
        let after = ranges.partition_point(|(first, _)| *first <= value);
        after > 0 && ranges[after - 1].1 >= value
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// The networks as written.
    pub fn written(&self) -> &[Cidr] {
        &self.written
    }
}

/// Two lists are equal when written alike.
impl PartialEq for Prefixes {
    fn eq(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

impl Eq for Prefixes {}

impl<'de> Deserialize<'de> for Prefixes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let texts = Vec::<String>::deserialize(deserializer)?;
        texts
            .iter()
            .map(|text| text.parse())
            .collect::<Result<Vec<Cidr>, String>>()
            .map(Self::new)
            .map_err(de::Error::custom)
    }
}

impl Serialize for Prefixes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.written.iter().map(ToString::to_string))
    }
}

impl FromStr for Prefixes {
    type Err = String;

    /// A comma-separated list, as lbadm takes it.
    fn from_str(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Cidr>, String>>()
            .map(Self::new)
    }
}

/// The address as a number and its family's width in bits.
fn number(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(ip) => (u128::from(u32::from(ip)), 32),
        IpAddr::V6(ip) => (u128::from(ip), 128),
    }
}

fn masked(ip: IpAddr, prefix: u8) -> u128 {
    let (value, width) = number(ip);
    let host_bits = u32::from(width - prefix);
    if host_bits == 128 {
        0
    } else {
        value >> host_bits << host_bits
    }
}

fn from_number(value: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::from(u32::try_from(value).unwrap_or(0).to_be_bytes())
    } else {
        IpAddr::from(value.to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_name_their_mistakes() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.7".parse::<Cidr>().unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(
            "2001:db8::/32".parse::<Cidr>().unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().prefix, 0);
        assert_eq!("::/0".parse::<Cidr>().unwrap().prefix, 0);
        assert_eq!(
            "::ffff:10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let error = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
        assert!(error.contains("write the network, 10.0.0.0/8"), "{error}");
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("0..32"));
        assert!("fd00::/129".parse::<Cidr>().unwrap_err().contains("0..128"));
        assert!(
            "example.com/8"
                .parse::<Cidr>()
                .unwrap_err()
                .contains("not a network")
        );
    }

    #[test]
    fn lookups_find_exactly_the_listed_networks() {
        let list: Prefixes =
            "10.0.0.0/8, 10.1.0.0/16, 192.0.2.7, 198.51.100.0/25, 198.51.100.128/25, fd00::/8"
                .parse()
                .unwrap();
        assert_eq!(
            list.v4.len(),
            3,
            "nested and adjacent networks merge: {:?}",
            list.v4
        );
        for inside in [
            "10.0.0.0",
            "10.255.255.255",
            "192.0.2.7",
            "198.51.100.0",
            "198.51.100.255",
            "fd12::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(list.contains(ip(inside)), "{inside}");
        }
        for outside in [
            "9.255.255.255",
            "11.0.0.0",
            "192.0.2.6",
            "192.0.2.8",
            "198.51.101.0",
            "fe80::1",
            "::a00:1",
        ] {
            assert!(!list.contains(ip(outside)), "{outside}");
        }
        let everything: Prefixes = "0.0.0.0/0,::/0".parse().unwrap();
        assert!(everything.contains(ip("255.255.255.255")) && everything.contains(ip("::")));
        assert!(!Prefixes::default().contains(ip("10.0.0.1")));
    }

    #[test]
    fn lookups_agree_with_a_linear_scan() {
        // Random networks of every length against a scan of the list as written.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let list: Vec<Cidr> = (0..500)
            .map(|_| {
                let prefix = u8::try_from(next() % 33).unwrap();
                let address = IpAddr::from(u32::try_from(next() >> 32).unwrap().to_be_bytes());
                Cidr {
                    address: from_number(masked(address, prefix), true),
                    prefix,
                }
            })
            .filter(|cidr| cidr.prefix >= 8)
            .collect();
        let set = Prefixes::new(list.clone());
        for _ in 0..20_000 {
            let probe = IpAddr::from(u32::try_from(next() >> 32).unwrap().to_be_bytes());
            let scan = list
                .iter()
                .any(|cidr| masked(probe, cidr.prefix) == number(cidr.address).0);
            assert_eq!(set.contains(probe), scan, "{probe}");
        }
    }
}
