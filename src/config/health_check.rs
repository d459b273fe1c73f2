//! `health_check:`: the check of a service's reals. Keys that belong to another `type` are
//! errors.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, de};

use super::{duration, service::YamlScalar};

/// `health_check:`. Fields that belong to another `type` are errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    /// What kind of check.
    pub kind: HealthCheckKind,
    /// Time between checks. Default 2s.
    pub interval: Duration,
    /// Time a check may take. Default 1s.
    pub timeout: Duration,
    /// Consecutive successes to become up. Default 2.
    pub rise: u32,
    /// Consecutive failures to become down. Default 3.
    pub fall: u32,
    /// Check this port instead of the real's.
    pub port: Option<u16>,
    /// What a down real means for scheduling. Default `remove`.
    pub on_down: OnDown,
    /// State before the first verdict. Default `up`.
    pub start: StartState,
    /// Whether tcp, http and udp checks start with the real's PROXY protocol header. `None`:
    /// they do when the real takes the header and the check goes to the real's own port (no
    /// `port`), as HAProxy's checks of a `send-proxy` server.
    pub send_proxy: Option<bool>,
    /// dr and tun: check each real through the VIP's own path (the check's packets go to the
    /// VIP, forwarded to that real as a client's flow), so that a real without the VIP on its
    /// loopback (or without its tunnel) is found down.
    pub via_vip: bool,
}

impl HealthCheckConfig {
    /// Whether a check of a real whose PROXY protocol version is `real_version` sends it.
    pub fn sends_proxy(&self, real_version: super::ProxyProtocol) -> bool {
        let applies = matches!(
            self.kind,
            HealthCheckKind::Tcp | HealthCheckKind::Http { .. } | HealthCheckKind::Udp { .. }
        );
        applies
            && real_version != super::ProxyProtocol::None
            && self.send_proxy.unwrap_or(self.port.is_none())
    }
}

/// The check type and its own settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// No checks: reals are always up.
    None,
    /// TCP connect.
    Tcp,
    /// HTTP/1.1 GET.
    Http {
        /// Request path. Default `/`.
        path: String,
        /// Host header; default the real's address.
        host: Option<String>,
        /// Accepted status codes. Default `200-399`.
        expect_status: Vec<(u16, u16)>,
        /// A substring the body must contain.
        expect_body: Option<String>,
    },
    /// UDP send/expect.
    Udp {
        /// Payload sent.
        send: String,
        /// Substring the reply must contain (empty = any reply).
        expect: String,
    },
    /// An external command.
    Exec {
        /// argv, with `{ip}`, `{port}`, `{service}` substituted.
        command: Vec<String>,
    },
    /// HAProxy agent protocol.
    Agent {
        /// The agent's TCP port.
        agent_port: u16,
    },
}

impl HealthCheckKind {
    /// The `type` as written in the config.
    pub fn name(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tcp => "tcp",
            Self::Http { .. } => "http",
            Self::Udp { .. } => "udp",
            Self::Exec { .. } => "exec",
            Self::Agent { .. } => "agent",
        }
    }
}

/// `health_check.on_down`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDown {
    /// No new flows; existing ones kept.
    #[default]
    Remove,
    /// Effective weight 0 (keepalived inhibit_on_failure).
    Quiesce,
    /// No new flows, and the flows in progress are closed (HAProxy's `on-marked-down
    /// shutdown-sessions`): clients reconnect to a real that is up.
    Shutdown,
}

/// `health_check.start`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StartState {
    /// Up until proven down.
    #[default]
    Up,
    /// Down until proven up.
    Down,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default, deserialize_with = "check_interval")]
    interval: Option<Duration>,
    #[serde(default, deserialize_with = "check_timeout")]
    timeout: Option<Duration>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    on_down: OnDown,
    #[serde(default)]
    start: StartState,
    #[serde(default)]
    send_proxy: Option<bool>,
    #[serde(default)]
    via_vip: bool,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    expect_status: Option<YamlScalar>,
    #[serde(default)]
    expect_body: Option<String>,
    #[serde(default)]
    send: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    agent_port: Option<u16>,
}

impl<'de> Deserialize<'de> for HealthCheckConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawHealthCheck::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(de::Error::custom)
    }
}

impl HealthCheckConfig {
    fn from_raw(raw: RawHealthCheck) -> Result<Self, String> {
        let present = [
            ("path", raw.path.is_some()),
            ("host", raw.host.is_some()),
            ("expect_status", raw.expect_status.is_some()),
            ("expect_body", raw.expect_body.is_some()),
            ("send", raw.send.is_some()),
            ("expect", raw.expect.is_some()),
            ("command", raw.command.is_some()),
            ("agent_port", raw.agent_port.is_some()),
        ];
        let allowed: &[&str] = match raw.kind.as_str() {
            "http" => &["path", "host", "expect_status", "expect_body"],
            "udp" => &["send", "expect"],
            "exec" => &["command"],
            "agent" => &["agent_port"],
            "tcp" | "none" => &[],
            other => {
                return Err(format!(
                    "type: unknown health check type `{other}`, expected one of tcp, http, udp, exec, agent, none"
                ));
            }
        };
        if let Some((key, _)) = present.iter().find(|(key, set)| *set && !allowed.contains(key)) {
            return Err(format!(
                "`{key}` does not apply to a health check of type `{}`",
                raw.kind
            ));
        }
        if raw.via_vip && !matches!(raw.kind.as_str(), "tcp" | "http") {
            return Err(format!(
                "via_vip: applies to tcp and http checks, not `{}`",
                raw.kind
            ));
        }
        if raw.via_vip && raw.port.is_some() {
            return Err(
                "via_vip: checks the service's own port through the VIP; leave `port` out".to_owned(),
            );
        }
        if raw.send_proxy.is_some() && !matches!(raw.kind.as_str(), "tcp" | "http" | "udp") {
            return Err(format!(
                "send_proxy: applies to tcp, http and udp checks, not `{}`",
                raw.kind
            ));
        }
        if raw.port == Some(0) {
            return Err(
                "port: 0 is not a port to check (1..65535, or leave it out to check the real's own)"
                    .to_owned(),
            );
        }
        let kind = match raw.kind.as_str() {
            "none" => HealthCheckKind::None,
            "tcp" => HealthCheckKind::Tcp,
            "http" => HealthCheckKind::Http {
                path: raw.path.unwrap_or_else(|| "/".to_owned()),
                host: raw.host,
                expect_status: parse_status_ranges(
                    raw.expect_status.as_ref().map_or("200-399", |s| s.0.as_str()),
                )?,
                expect_body: raw.expect_body,
            },
            "udp" => HealthCheckKind::Udp {
                send: raw.send.ok_or("a udp health check needs `send`")?,
                expect: raw.expect.unwrap_or_default(),
            },
            "exec" => {
                let command = raw.command.ok_or("an exec health check needs `command`")?;
                if command.is_empty() || command[0].is_empty() {
                    return Err("command: must name a program to run".to_owned());
                }
                HealthCheckKind::Exec { command }
            }
            _ => HealthCheckKind::Agent {
                agent_port: raw
                    .agent_port
                    .filter(|port| *port != 0)
                    .ok_or("an agent health check needs `agent_port` (1..65535)")?,
            },
        };
        let check = Self {
            kind,
            interval: raw.interval.unwrap_or(Duration::from_secs(2)),
            timeout: raw.timeout.unwrap_or(Duration::from_secs(1)),
            rise: raw.rise.unwrap_or(2),
            fall: raw.fall.unwrap_or(3),
            port: raw.port,
            on_down: raw.on_down,
            start: raw.start,
            send_proxy: raw.send_proxy,
            via_vip: raw.via_vip,
        };
        if check.rise == 0 || check.fall == 0 {
            return Err("rise and fall must be at least 1".to_owned());
        }
        Ok(check)
    }
}

/// Parses `200`, `200-399` or `200,204,300-399`.
fn parse_status_ranges(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad =
        || format!("expect_status: `{text}` is not a status code, a range like 200-399, or a list of them");
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let (low, high) = part.split_once('-').unwrap_or((part, part));
            let low: u16 = low.trim().parse().map_err(|_| bad())?;
            let high: u16 = high.trim().parse().map_err(|_| bad())?;
            if !(100..=599).contains(&low) || !(100..=599).contains(&high) || high < low {
                return Err(bad());
            }
            Ok((low, high))
        })
        .collect()
}

fn check_interval<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration::optional(deserializer, duration::CHECK_INTERVAL)
}

fn check_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration::optional(deserializer, duration::CHECK_TIMEOUT)
}
