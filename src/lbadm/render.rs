//! `lbadm list` output in ipvsadm's layouts (`ipvsadm -L -n`, `--stats`, `--rate`, `-c`), plus
//! lbd's own `--health` view. Pure functions of the admin API's documents.

use std::fmt::Write;

use crate::api::{Connection, Counters, Director, Rates, Service};

/// `lbadm directors`: one line per registered director; a director whose table revision is
/// behind the newest is marked `behind`.
pub fn directors(directors: &[Director]) -> String {
    let newest = directors
        .iter()
        .map(|director| director.revision)
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "{:<16} {:<8} {:>10}  {:<22} {}\n",
        "Node", "Role", "Revision", "Admin", "Version"
    );
    for director in directors {
        let behind = if director.revision < newest {
            "  behind"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:>10}  {:<22} {}{behind}",
            director.node,
            director.role,
            director.revision,
            director.admin.as_deref().unwrap_or("-"),
            director.version
        );
    }
    out
}

/// Which columns `list` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Forward, Weight, ActiveConn, InActConn (`ipvsadm -L -n`).
    Table,
    /// Counters (`--stats`).
    Stats,
    /// Rates (`--rate`).
    Rate,
    /// Health checks (`--health`).
    Health,
}

/// Numbers wider than ipvsadm's columns are scaled unless `exact`.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Which columns.
    pub columns: Columns,
    /// Full numbers in `--stats` / `--rate` (ipvsadm `--exact`).
    pub exact: bool,
}

/// The service listing: a header with lbd's version and flow count, the column titles, then
/// each service and its reals.
pub fn services(version: &str, flows: usize, services: &[Service], options: Options) -> String {
    let mut out = format!("ulvs {version} (flows={flows})\n");
    match options.columns {
        Columns::Table => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
        }
        Columns::Stats | Columns::Rate => {
            let titles = if options.columns == Columns::Stats {
                ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]
            } else {
                ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]
            };
            let _ = write!(out, "{:<33}", "Prot LocalAddress:Port");
            for title in titles {
                let _ = write!(out, " {title:>8}");
            }
            out.push_str("\n  -> RemoteAddress:Port\n");
        }
        Columns::Health => {
            out.push_str("Prot LocalAddress:Port Scheduler Flags\n");
            out.push_str("  -> RemoteAddress:Port           Health Weight Since      LastCheck\n");
        }
    }
    for service in services {
        let head = format!("{:<4} {}", protocol_label(&service.protocol), service.listen);
        match options.columns {
            Columns::Table | Columns::Health => {
                // As ipvsadm's printf: columns pad short addresses, long ones (IPv6) push on.
                let mut line = head.clone();
                let _ = write!(line, " {}", service.scheduler);
                if !service.scheduler_flags.is_empty() {
                    let _ = write!(line, " ({})", service.scheduler_flags.join(","));
                }
                if let Some(persistence) = &service.persistence {
                    let _ = write!(line, " persistent {}", persistence.timeout_seconds);
                    if let Some(prefix) = persistence
                        .netmask_prefix
                        .filter(|&prefix| !host_mask(service, prefix))
                    {
                        let _ = write!(line, " mask {}", netmask_text(service, prefix));
                    }
                }
                if service.one_packet {
                    line.push_str(" ops");
                }
                push_line(&mut out, &line);
            }
            Columns::Stats | Columns::Rate => {
                number_line(
                    &mut out,
                    &head,
                    figures(options.columns, &service.stats, &service.rate),
                    options,
                );
            }
        }
        for real in &service.reals {
            let address = real.address.as_str();
            match options.columns {
                Columns::Table => push_line(
                    &mut out,
                    &format!(
                        "  -> {:<28} {:<7} {:<6} {:<10} {:<10}{}",
                        address,
                        forward_label(&real.forward),
                        real.weight,
                        real.active,
                        real.inactive,
                        match (real.registered, real.maintenance) {
                            (_, true) => " MAINT",
                            (true, false) => " REG",
                            (false, false) => "",
                        }
                    ),
                ),
                Columns::Stats | Columns::Rate => {
                    let head = format!("  -> {address}");
                    number_line(
                        &mut out,
                        &head,
                        figures(options.columns, &real.stats, &real.rate),
                        options,
                    );
                }
                Columns::Health => {
                    let (state, since, last) = match &real.health {
                        Some(health) => (
                            health.state.as_str(),
                            format_age(health.since_seconds),
                            health.last_reason.clone().unwrap_or_else(|| "-".to_owned()),
                        ),
                        None => ("-", "-".to_owned(), "not checked".to_owned()),
                    };
                    push_line(
                        &mut out,
                        &format!(
                            "  -> {address:<28} {state:<6} {:<6} {since:<10} {last}",
                            real.weight
                        ),
                    );
                }
            }
        }
    }
    out
}

/// The connection listing, as `ipvsadm -L -n -c`; an entry taken from another director's flow
/// sync ends in `SYNC` (the origin column of `/proc/net/ip_vs_conn_sync`).
pub fn connections(flows: &[Connection]) -> String {
    let mut out = String::from(
        "IPVS connection entries\npro expire state       source             virtual            destination\n",
    );
    for flow in flows {
        let expire = format!(
            "{:02}:{:02}",
            flow.expires_seconds / 60,
            flow.expires_seconds % 60
        );
        push_line(
            &mut out,
            &format!(
                "{:<3} {:<6} {:<11} {:<18} {:<18} {}{}",
                protocol_label(&flow.protocol),
                expire,
                flow.state,
                flow.source,
                flow.virtual_address,
                flow.destination,
                if flow.synced { " SYNC" } else { "" }
            ),
        );
    }
    out
}

/// Appends `line` without trailing blanks, as ipvsadm prints its layout.
fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// The five numbers of a `--stats` or `--rate` row.
fn figures(columns: Columns, stats: &Counters, rate: &Rates) -> [u64; 5] {
    if columns == Columns::Stats {
        [
            stats.conns,
            stats.in_pkts,
            stats.out_pkts,
            stats.in_bytes,
            stats.out_bytes,
        ]
    } else {
        [rate.cps, rate.in_pps, rate.out_pps, rate.in_bps, rate.out_bps]
    }
}

fn number_line(out: &mut String, head: &str, numbers: [u64; 5], options: Options) {
    let mut line = format!("{head:<33}");
    for number in numbers {
        line.push_str(&large_number(number, options.exact));
    }
    push_line(out, &line);
}

/// ipvsadm's 9-character number column: in full below 10^8, else scaled to K, M, G or T.
pub fn large_number(number: u64, exact: bool) -> String {
    const UNITS: [(u64, u64, char); 4] = [
        (1_000_000_000, 1_000, 'K'),
        (100_000_000_000, 1_000_000, 'M'),
        (100_000_000_000_000, 1_000_000_000, 'G'),
        (u64::MAX, 1_000_000_000_000, 'T'),
    ];
    if exact || number < 100_000_000 {
        return format!(" {number:>8}");
    }
    let (_, divisor, unit) = UNITS
        .iter()
        .find(|(below, _, _)| number < *below)
        .copied()
        .unwrap_or(UNITS[3]);
    format!(" {:>7}{unit}", number / divisor)
}

fn protocol_label(protocol: &str) -> &'static str {
    if protocol.eq_ignore_ascii_case("udp") {
        "UDP"
    } else {
        "TCP"
    }
}

fn forward_label(forward: &str) -> &'static str {
    match forward {
        "nat" => "Masq",
        "dr" => "Route",
        "tun" => "Tunnel",
        _ => "Proxy",
    }
}

fn is_ipv6(service: &Service) -> bool {
    service.listen.starts_with('[')
}

fn host_mask(service: &Service, prefix: u8) -> bool {
    prefix == if is_ipv6(service) { 128 } else { 32 }
}

/// A mask as ipvsadm prints it: dotted for IPv4, a prefix length for IPv6.
fn netmask_text(service: &Service, prefix: u8) -> String {
    if is_ipv6(service) || prefix > 32 {
        return prefix.to_string();
    }
    let bits = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    std::net::Ipv4Addr::from(bits).to_string()
}

/// `1h2m`, `3m4s`, `12s`.
fn format_age(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        _ => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Persistence, Real};

    fn real(address: &str, forward: &str, weight: u32, active: u32, inactive: u32) -> Real {
        Real {
            address: address.to_owned(),
            forward: forward.to_owned(),
            proxy_protocol: "none".to_owned(),
            weight,
            configured_weight: weight,
            max_conns: 0,
            min_conns: 0,
            active,
            inactive,
            overloaded: false,
            registered: false,
            maintenance: false,
            health: None,
            stats: Counters::default(),
            rate: Rates::default(),
        }
    }

    fn service(protocol: &str, listen: &str, scheduler: &str, reals: Vec<Real>) -> Service {
        Service {
            name: "x".to_owned(),
            protocol: protocol.to_owned(),
            listen: listen.to_owned(),
            scheduler: scheduler.to_owned(),
            scheduler_flags: Vec::new(),
            forward: "proxy".to_owned(),
            persistence: None,
            one_packet: false,
            slow_start: None,
            proxy_protocol: "none".to_owned(),
            accept_proxy_from: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            source_limits: None,
            sorry_server: None,
            health_check: None,
            stats: Counters::default(),
            rate: Rates::default(),
            reals,
        }
    }

    #[test]
    fn the_table_is_laid_out_as_spec_section_5() {
        let mut web = service(
            "tcp",
            "192.168.77.100:80",
            "wlc",
            vec![real("10.0.0.1:8080", "nat", 3, 2, 1)],
        );
        web.persistence = Some(Persistence {
            timeout_seconds: 360,
            netmask_prefix: None,
        });
        let options = Options {
            columns: Columns::Table,
            exact: false,
        };
        assert_eq!(
            services("0.1.0", 3, &[web], options),
            "ulvs 0.1.0 (flows=3)\n\
             Prot LocalAddress:Port Scheduler Flags\n\
             \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
             TCP  192.168.77.100:80 wlc persistent 360\n\
             \x20 -> 10.0.0.1:8080                Masq    3      2          1\n"
        );
    }

    #[test]
    fn flags_mask_and_ops_follow_ipvsadm() {
        let mut dns = service(
            "udp",
            "10.0.0.1:53",
            "sh",
            vec![real("192.168.10.3:53", "dr", 1, 0, 7)],
        );
        dns.scheduler_flags = vec!["sh-fallback".to_owned(), "sh-port".to_owned()];
        dns.persistence = Some(Persistence {
            timeout_seconds: 60,
            netmask_prefix: Some(24),
        });
        dns.one_packet = true;
        let text = services(
            "0.1.0",
            0,
            &[dns],
            Options {
                columns: Columns::Table,
                exact: false,
            },
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[3],
            "UDP  10.0.0.1:53 sh (sh-fallback,sh-port) persistent 60 mask 255.255.255.0 ops"
        );
        assert_eq!(
            lines[4],
            "  -> 192.168.10.3:53              Route   1      0          7"
        );
    }

    #[test]
    fn stats_use_ipvsadm_number_columns() {
        let mut web = service(
            "tcp",
            "10.0.0.1:80",
            "wlc",
            vec![real("192.168.10.1:80", "nat", 1, 0, 0)],
        );
        web.stats = Counters {
            conns: 1234,
            in_pkts: 56789,
            out_pkts: 50000,
            in_bytes: 4_567_890,
            out_bytes: 123_000_000_000,
        };
        web.reals[0].stats = Counters {
            conns: 600,
            in_pkts: 28000,
            out_pkts: 25000,
            in_bytes: 2_200_000,
            out_bytes: 61_000_000_000,
        };
        let text = services(
            "0.1.0",
            0,
            &[web],
            Options {
                columns: Columns::Stats,
                exact: false,
            },
        );
        let expected = [
            "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
            "  -> RemoteAddress:Port",
            "TCP  10.0.0.1:80                      1234    56789    50000  4567890     123G",
            "  -> 192.168.10.1:80                   600    28000    25000  2200000   61000M",
        ];
        assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), expected);
    }

    #[test]
    fn connections_follow_ipvsadm_c() {
        let flow = Connection {
            protocol: "tcp".to_owned(),
            state: "ESTABLISHED".to_owned(),
            expires_seconds: 898,
            source: "203.0.113.7:51234".to_owned(),
            virtual_address: "10.0.0.1:80".to_owned(),
            destination: "192.168.10.1:80".to_owned(),
            synced: false,
        };
        let synced = Connection {
            synced: true,
            ..flow.clone()
        };
        assert_eq!(
            connections(&[flow, synced]).lines().skip(2).collect::<Vec<_>>(),
            [
                "TCP 14:58  ESTABLISHED 203.0.113.7:51234  10.0.0.1:80        192.168.10.1:80",
                "TCP 14:58  ESTABLISHED 203.0.113.7:51234  10.0.0.1:80        192.168.10.1:80 SYNC"
            ]
        );
    }

    #[test]
    fn registered_reals_are_marked_and_directors_behind_are_named() {
        let mut registered = real("10.0.0.7:8080", "proxy", 3, 0, 0);
        registered.registered = true;
        let listing = services(
            "0.1.0",
            0,
            &[service(
                "tcp",
                "10.0.0.100:80",
                "wlc",
                vec![real("10.0.0.1:80", "proxy", 1, 0, 0), registered],
            )],
            Options {
                columns: Columns::Table,
                exact: false,
            },
        );
        let lines: Vec<&str> = listing.lines().collect();
        assert!(!lines[4].ends_with("REG"), "{listing}");
        assert!(
            lines[5].starts_with("  -> 10.0.0.7:8080") && lines[5].ends_with(" REG"),
            "{listing}"
        );
        let director = |node: &str, revision| Director {
            node: node.to_owned(),
            revision,
            role: "active".to_owned(),
            admin: Some("10.0.0.21:9900".to_owned()),
            version: "0.1.0".to_owned(),
        };
        let table = directors(&[director("d1", 42), director("d2", 40)]);
        assert_eq!(
            table,
            "Node             Role       Revision  Admin                  Version\n\
             d1               active           42  10.0.0.21:9900         0.1.0\n\
             d2               active           40  10.0.0.21:9900         0.1.0  behind\n"
        );
    }
}
