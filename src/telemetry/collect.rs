//! The service table's metrics, written in the Prometheus text format at scrape time.

use std::{fmt::Write, sync::atomic::Ordering::Relaxed};

use crate::{
    config::Protocol,
    lvs::{path::DropReason, plane::PacketShared},
    table::{Real, Refusal, Service, ServiceTable},
};

/// Writes every family that the table holds.
pub(super) fn table(out: &mut String, table: &ServiceTable, flows: (usize, usize)) {
    let services = table.services();
    family(
        out,
        "lbd_service_connections_total",
        "counter",
        "Flows accepted by the service.",
        |out| {
            for service in services {
                let protocol = service.key.protocol.to_string();
                sample(
                    out,
                    "lbd_service_connections_total",
                    &[("service", service.name()), ("protocol", &protocol)],
                    service.stats.conns.load(Relaxed),
                );
            }
        },
    );
    family(
        out,
        "lbd_service_unavailable_total",
        "counter",
        "Flows refused because no real server was available.",
        |out| {
            for service in services {
                sample(
                    out,
                    "lbd_service_unavailable_total",
                    &[("service", service.name())],
                    service.stats.unavailable.load(Relaxed),
                );
            }
        },
    );
    family(
        out,
        "lbd_service_refused_total",
        "counter",
        "Flows refused although a real could take them, by reason: a bound of this director (descriptors, sessions) or the service's rules (untrusted_proxy, proxy_header, denied, source_flows, source_rate).",
        |out| {
            for service in services {
                for why in Refusal::ALL {
                    sample(
                        out,
                        "lbd_service_refused_total",
                        &[("service", service.name()), ("reason", why.label())],
                        service.stats.refused(why),
                    );
                }
            }
        },
    );
    let per_real = |out: &mut String, name: &str, value: &dyn Fn(&Service, &Real) -> u64| {
        for service in services {
            for real in &service.reals {
                let address = real.address.to_string();
                sample(
                    out,
                    name,
                    &[("service", service.name()), ("real", &address)],
                    value(service, real),
                );
            }
        }
    };
    family(
        out,
        "lbd_real_connections_total",
        "counter",
        "Flows scheduled to the real server.",
        |out| {
            per_real(out, "lbd_real_connections_total", &|_, real| {
                real.state.conns.load(Relaxed)
            });
        },
    );
    family(
        out,
        "lbd_real_connections_active",
        "gauge",
        "ActiveConn: established flows.",
        |out| {
            per_real(out, "lbd_real_connections_active", &|_, real| {
                u64::from(real.state.active())
            });
        },
    );
    family(
        out,
        "lbd_real_connections_inactive",
        "gauge",
        "InActConn: flows not established (connecting, half-closed, UDP).",
        |out| {
            per_real(out, "lbd_real_connections_inactive", &|_, real| {
                u64::from(real.state.inactive())
            })
        },
    );
    let per_direction = |out: &mut String, name: &str, counters: &dyn Fn(&Real) -> (u64, u64)| {
        for service in services {
            for real in &service.reals {
                let address = real.address.to_string();
                let (into, out_of) = counters(real);
                for (direction, value) in [("in", into), ("out", out_of)] {
                    let labels = [
                        ("service", service.name()),
                        ("real", address.as_str()),
                        ("direction", direction),
                    ];
                    sample(out, name, &labels, value);
                }
            }
        }
    };
    type Pair = fn(&Real) -> (u64, u64);
    let traffic: [(&str, &str, Pair); 2] = [
        (
            "lbd_real_bytes_total",
            "Bytes relayed: in = client to real, out = real to client.",
            |real| {
                (
                    real.state.bytes_in.load(Relaxed),
                    real.state.bytes_out.load(Relaxed),
                )
            },
        ),
        (
            "lbd_real_packets_total",
            "Packets forwarded (proxy mode: UDP datagrams only): in = client to real, out = real to client.",
            |real| {
                (
                    real.state.packets_in.load(Relaxed),
                    real.state.packets_out.load(Relaxed),
                )
            },
        ),
    ];
    for (name, help, counters) in traffic {
        family(out, name, "counter", help, |out| {
            per_direction(out, name, &counters)
        });
    }
    family(
        out,
        "lbd_real_weight",
        "gauge",
        "The weight new flows are scheduled with now (after health checks and drains).",
        |out| per_real(out, "lbd_real_weight", &|_, real| u64::from(real.weight)),
    );
    family(
        out,
        "lbd_real_up",
        "gauge",
        "1 if the real server is up, 0 if its health check found it down.",
        |out| {
            per_real(out, "lbd_real_up", &|_, real| {
                let up = match &real.check {
                    Some(check) => check.record().up,
                    None => real.up,
                };
                u64::from(up)
            });
        },
    );
    family(
        out,
        "lbd_health_checks_total",
        "counter",
        "Health checks run, by result.",
        |out| {
            for service in services {
                for real in &service.reals {
                    let Some(check) = &real.check else { continue };
                    let address = real.address.to_string();
                    let (passed, failed) = check.counts();
                    for (result, value) in [("success", passed), ("failure", failed)] {
                        let labels = [
                            ("service", service.name()),
                            ("real", address.as_str()),
                            ("result", result),
                        ];
                        sample(out, "lbd_health_checks_total", &labels, value);
                    }
                }
            }
        },
    );
    family(
        out,
        "lbd_flows",
        "gauge",
        "Flows in the connection table, by protocol.",
        |out| {
            let (tcp, udp) = flows;
            for (protocol, count) in [(Protocol::Tcp, tcp), (Protocol::Udp, udp)] {
                sample(
                    out,
                    "lbd_flows",
                    &[("protocol", &protocol.to_string())],
                    count as u64,
                );
            }
        },
    );
}

/// Writes the packet data plane's drop counters.
pub(super) fn packets(out: &mut String, packet: &PacketShared) {
    let drops = &packet.drops;
    family(
        out,
        "lbd_packets_dropped_total",
        "counter",
        "Packets the packet data plane (nat, dr, tun) dropped, by reason.",
        |out| {
            for reason in DropReason::ALL {
                sample(
                    out,
                    "lbd_packets_dropped_total",
                    &[("reason", reason.label())],
                    drops.get(reason),
                );
            }
        },
    );
    family(
        out,
        "lbd_packets_misqueued_total",
        "counter",
        "Packets the kernel handed to another packet worker than the one owning their flow (0 while eBPF steering is attached).",
        |out| sample(out, "lbd_packets_misqueued_total", &[], packet.flows.misqueued()),
    );
    let sync = &packet.flows.sync;
    let counters = &sync.counters;
    family(
        out,
        "lbd_sync_messages_total",
        "counter",
        "IPVS sync protocol messages, by direction: sent (master), received and taken, refused (not from a peer, another sync id, malformed).",
        |out| {
            for (direction, count) in [
                ("sent", &counters.messages_sent),
                ("received", &counters.messages_received),
                ("refused", &counters.messages_refused),
            ] {
                sample(
                    out,
                    "lbd_sync_messages_total",
                    &[("direction", direction)],
                    count.load(Relaxed),
                );
            }
        },
    );
    family(
        out,
        "lbd_sync_entries_total",
        "counter",
        "Flows and persistence templates in sync messages, by result: sent, taken into the table, unbound (no such service or real here), dropped (the master's outbox was full).",
        |out| {
            for (result, count) in [
                ("sent", counters.flows_sent.load(Relaxed)),
                ("taken", counters.flows_received.load(Relaxed)),
                ("unbound", counters.flows_unbound.load(Relaxed)),
                ("dropped", sync.dropped()),
            ] {
                sample(out, "lbd_sync_entries_total", &[("result", result)], count);
            }
        },
    );
    family(
        out,
        "lbd_sync_flows",
        "gauge",
        "Flows in the packet plane's table that were taken from the master's flow sync.",
        |out| sample(out, "lbd_sync_flows", &[], packet.flows.synced() as u64),
    );
}

/// Writes the counters of the director's own bounds.
pub(super) fn bounds(out: &mut String, descriptors: &crate::host::Descriptors) {
    family(
        out,
        "lbd_http_connections_refused_total",
        "counter",
        "Connections to the admin API or /metrics closed at accept because the endpoint held its most.",
        |out| {
            sample(
                out,
                "lbd_http_connections_refused_total",
                &[],
                crate::httpd::REFUSED.load(Relaxed),
            );
        },
    );
    family(
        out,
        "lbd_proxy_descriptors",
        "gauge",
        "Descriptors the proxy's flows hold now (each TCP flow two, each UDP session one).",
        |out| sample(out, "lbd_proxy_descriptors", &[], descriptors.used() as u64),
    );
}

/// Writes the access log's counters.
pub(super) fn access_log(out: &mut String, log: &crate::access_log::AccessLog) {
    family(
        out,
        "lbd_access_log_lines_total",
        "counter",
        "Lines written to the access log.",
        |out| sample(out, "lbd_access_log_lines_total", &[], log.written()),
    );
    family(
        out,
        "lbd_access_log_dropped_total",
        "counter",
        "Finished flows not logged because the access log's queue was full (the disk was slower than the flows).",
        |out| sample(out, "lbd_access_log_dropped_total", &[], log.dropped()),
    );
}

/// Writes a family's `# HELP` and `# TYPE` lines, then its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: impl FnOnce(&mut String)) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    samples(out);
    out.push('\n');
}

/// Writes one sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape(out, value);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, table::HealthView};

    #[test]
    fn every_real_has_its_series_from_the_start() {
        let config = config::parse(
            "services:\n  - { name: web, protocol: tcp, listen: '127.0.0.1:80', reals: [{address: '10.0.0.[1-2]:80', weight: 3}] }\n",
            "t",
        )
        .unwrap();
        let table = ServiceTable::build(&config, None, &HealthView::default());
        table.services()[0].reals[0].state.bytes_in.fetch_add(42, Relaxed);
        let mut page = String::new();
        super::table(&mut page, &table, (0, 0));
        assert!(page.contains("lbd_service_connections_total{service=\"web\",protocol=\"tcp\"} 0\n"));
        assert_eq!(page.matches("lbd_real_connections_total{").count(), 2);
        assert!(
            page.contains("lbd_real_bytes_total{service=\"web\",real=\"10.0.0.1:80\",direction=\"in\"} 42\n")
                || page.contains(
                    "lbd_real_bytes_total{service=\"web\",real=\"10.0.0.2:80\",direction=\"in\"} 42\n"
                )
        );
        assert!(page.contains("lbd_real_weight{service=\"web\",real=\"10.0.0.1:80\"} 3\n"));
        assert!(page.contains("lbd_flows{protocol=\"udp\"} 0\n"));
        assert!(page.contains("# TYPE lbd_real_connections_active gauge\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape(&mut out, "a\\b\"c\nd");
        assert_eq!(out, "a\\\\b\\\"c\\nd");
    }
}
