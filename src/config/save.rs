//! Services back to YAML, in the config file's own format: what `lbadm save` prints, what the
//! state file holds. Loading the text again gives back equal services; keys at their default
//! are left out.

use serde::{Serialize, Serializer};

use super::{
    HealthCheckConfig, HealthCheckKind, OnDown, Persistence, ServiceConfig, StartState, duration,
    service::{ServiceSpec, is_default},
};

/// `services:` followed by `services` as a YAML list.
pub fn services_yaml(services: &[ServiceConfig]) -> String {
    #[derive(Serialize)]
    struct Services<'a> {
        services: &'a [ServiceConfig],
    }
    serde_yaml::to_string(&Services { services })
        .unwrap_or_else(|error| format!("# cannot render: {error}\n"))
}

impl Serialize for ServiceConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ServiceSpec::from(self).serialize(serializer)
    }
}

impl Serialize for Persistence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Saved<'a> {
            timeout: String,
            netmask: &'a super::Netmask,
        }
        Saved {
            timeout: duration::format(self.timeout),
            netmask: &self.netmask,
        }
        .serialize(serializer)
    }
}

impl Serialize for HealthCheckConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Saved<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            interval: String,
            timeout: String,
            rise: u32,
            fall: u32,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
            #[serde(skip_serializing_if = "is_default")]
            on_down: OnDown,
            #[serde(skip_serializing_if = "is_default")]
            start: StartState,
            #[serde(skip_serializing_if = "Option::is_none")]
            send_proxy: Option<bool>,
            #[serde(skip_serializing_if = "is_default")]
            via_vip: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            path: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            host: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect_status: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect_body: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            send: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            expect: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            command: Option<&'a [String]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            agent_port: Option<u16>,
        }
        let mut saved = Saved {
            kind: self.kind.name(),
            interval: duration::format(self.interval),
            timeout: duration::format(self.timeout),
            rise: self.rise,
            fall: self.fall,
            port: self.port,
            on_down: self.on_down,
            start: self.start,
            send_proxy: self.send_proxy,
            via_vip: self.via_vip,
            path: None,
            host: None,
            expect_status: None,
            expect_body: None,
            send: None,
            expect: None,
            command: None,
            agent_port: None,
        };
        match &self.kind {
            HealthCheckKind::None | HealthCheckKind::Tcp => {}
            HealthCheckKind::Http {
                path,
                host,
                expect_status,
                expect_body,
            } => {
                saved.path = Some(path);
                saved.host = host.as_deref();
                saved.expect_body = expect_body.as_deref();
                let ranges: Vec<String> = expect_status
                    .iter()
                    .map(|&(low, high)| {
                        if low == high {
                            low.to_string()
                        } else {
                            format!("{low}-{high}")
                        }
                    })
                    .collect();
                saved.expect_status = Some(ranges.join(","));
            }
            HealthCheckKind::Udp { send, expect } => {
                saved.send = Some(send);
                saved.expect = Some(expect);
            }
            HealthCheckKind::Exec { command } => saved.command = Some(command),
            HealthCheckKind::Agent { agent_port } => saved.agent_port = Some(*agent_port),
        }
        saved.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn saved_services_load_back_equal() {
        let source = r#"
services:
  - name: web
    protocol: tcp
    listen: 192.168.77.100:80
    scheduler: mh
    scheduler_flags: [mh-port, mh-fallback]
    persistence: { timeout: 300s, netmask: 255.255.255.0 }
    sorry_server: 10.0.0.99:80
    health_check: { type: http, path: /h, host: x.org, expect_status: "200,300-399", expect_body: OK, interval: 500ms, on_down: quiesce }
    reals:
      - { address: "10.0.0.[1-3]:8080", weight: 3, max_conns: 100, min_conns: 50 }
      - { address: "[2001:db8::1]:80", weight: 0 }
  - protocol: udp
    listen: "[2001:db8::100]:53"
    one_packet: true
    health_check: { type: udp, send: ping, expect: pong, start: down }
    reals: [{ address: "10.0.0.9" }]
  - protocol: tcp
    listen: 127.0.0.1:81
    health_check: { type: exec, command: [/bin/check, "{ip}", "{port}"] }
  - protocol: tcp
    listen: 127.0.0.1:82
    health_check: { type: agent, agent_port: 9999, port: 8081 }
"#;
        let services = config::parse(source, "t").unwrap().services;
        let saved = services_yaml(&services);
        let again = config::parse_services(&saved, "saved", &config::Config::default()).unwrap();
        assert_eq!(again, services, "{saved}");
    }
}
