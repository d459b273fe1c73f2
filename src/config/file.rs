//! The file's own settings: everything but the services (admin API, metrics, state file,
//! timeouts, workers, the packet data plane). Every struct rejects unknown keys; every field
//! not listed as required has its default in its doc comment.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, de};

use super::{
    ServiceConfig,
    address::{parse_socket_addr, socket_addr},
    duration,
};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The admin API endpoint; absent = not served.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The Prometheus endpoint; absent = not served.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    /// Where runtime changes are persisted; absent = not persisted.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// One line per finished proxied flow; absent = none.
    #[serde(default)]
    pub access_log: Option<AccessLogConfig>,
    /// On SIGTERM, how long existing flows may finish. Default 30s.
    #[serde(default = "default_drain_timeout", with = "duration::drain")]
    pub drain_timeout: Duration,
    /// Idle timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Data-plane threads; 0 = one per core. Default 0.
    #[serde(default)]
    pub workers: u16,
    /// Packet data-plane settings (nat / dr / tun services only).
    #[serde(default)]
    pub dataplane: Option<DataplaneConfig>,
    /// Active/backup with keepalived, and flow sync; absent = a director on its own.
    #[serde(default)]
    pub ha: Option<super::HaConfig>,
    /// Several directors sharing their service table through etcd; absent = the table is
    /// this file's `services:` (and the admin API's changes).
    #[serde(default)]
    pub cluster: Option<super::ClusterConfig>,
    /// The virtual services.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            admin: None,
            metrics: None,
            state_file: None,
            access_log: None,
            drain_timeout: default_drain_timeout(),
            timeouts: Timeouts::default(),
            workers: 0,
            dataplane: None,
            ha: None,
            cluster: None,
            services: Vec::new(),
        }
    }
}

impl Config {
    /// A copy of every setting but the services (an empty table).
    pub fn clone_without_services(&self) -> Self {
        Self {
            admin: self.admin.clone(),
            metrics: self.metrics.clone(),
            state_file: self.state_file.clone(),
            access_log: self.access_log.clone(),
            drain_timeout: self.drain_timeout,
            timeouts: self.timeouts,
            workers: self.workers,
            dataplane: self.dataplane.clone(),
            ha: self.ha.clone(),
            cluster: self.cluster.clone(),
            services: Vec::new(),
        }
    }

    /// The number of data-plane threads to run: `workers`, or one per core when it is 0.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => usize::from(n),
        }
    }
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Idle timeouts, as `ipvsadm --set tcp tcpfin udp`, plus the proxy's connect timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Idle timeout of an established TCP flow. Default 900s.
    #[serde(with = "duration::idle")]
    pub tcp: Duration,
    /// Idle timeout of a TCP flow after its first FIN. Default 120s.
    #[serde(with = "duration::idle")]
    pub tcp_fin: Duration,
    /// Idle timeout of a UDP flow. Default 300s.
    #[serde(with = "duration::idle")]
    pub udp: Duration,
    /// Proxy mode: how long a connect to a real server may take. Default 3s.
    #[serde(with = "duration::connect")]
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: Duration::from_secs(900),
            tcp_fin: Duration::from_secs(120),
            udp: Duration::from_secs(300),
            connect: Duration::from_secs(3),
        }
    }
}

/// `access_log:`: where and how finished flows are logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// `path`: a file (appended to; reopened at every reload, for logrotate) or `stderr`.
    #[serde(rename = "path")]
    pub target: AccessLogTarget,
    /// `format`: `json` (default) or `logfmt`.
    #[serde(default)]
    pub format: AccessLogFormat,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard error, with lbd's own log.
    Stderr,
    /// A file, appended to.
    File(PathBuf),
}

impl<'de> Deserialize<'de> for AccessLogTarget {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "stderr" => Ok(Self::Stderr),
            "" => Err(de::Error::custom("path: empty; name a file, or `stderr`")),
            path if !path.starts_with('/') => Err(de::Error::custom(format!(
                "path: `{path}` is relative; write an absolute path (lbd may run from any directory), or `stderr`"
            ))),
            path => Ok(Self::File(PathBuf::from(path))),
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs.
    Logfmt,
}

/// `admin:`: where the admin API listens.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `IP:PORT` or `unix:/path`.
    pub listen: AdminListen,
    /// File holding the bearer token; required for a non-loopback TCP address.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// The admin endpoint's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (created mode 0600).
    Unix(PathBuf),
}

impl<'de> Deserialize<'de> for AdminListen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(de::Error::custom(
                    "invalid admin address `unix:`: a socket path must follow `unix:`",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        parse_socket_addr(&text).map(Self::Tcp).map_err(de::Error::custom)
    }
}

/// `metrics:`: where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `IP:PORT`.
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
}

/// `dataplane:`: the packet data plane (nat / dr / tun).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// The TUN device name. Default `lbtun0`.
    #[serde(default = "default_tun", deserialize_with = "interface_name")]
    pub tun: String,
    /// The interface towards the real servers.
    #[serde(default, deserialize_with = "optional_interface_name")]
    pub server_interface: Option<String>,
    /// Who installs routes, rules and sysctls. Default `auto`.
    #[serde(default)]
    pub setup: DataplaneSetup,
    /// Bound of the connection table: 1 to 100,000,000. Default 1000000.
    #[serde(default = "default_max_flows", deserialize_with = "max_flows")]
    pub max_flows: u32,
    /// IPVS's `sloppy_tcp`: a TCP packet other than a SYN (but not a reset) with no flow is
    /// scheduled and starts one, so that after a failover a flow the new master was never sent
    /// still finds a real (the same one with `sh`, `dh` or `mh`). Default false.
    #[serde(default)]
    pub sloppy_tcp: bool,
    /// Route health injection: each VIP is put, as `VIP/32` through the TUN device, into a
    /// routing table that a BGP speaker (BIRD) exports, while this director is ready and the
    /// VIP has a service with an available real. Absent = no announcements.
    #[serde(default)]
    pub announce: Option<AnnounceConfig>,
}

/// The routing table that sends nat replies into the TUN device (lbd's own; `announce` may
/// not use it).
pub const REPLY_TABLE: u32 = 100;

/// The socket mark of health checks through a VIP's path (`health_check.via_vip`): a policy
/// rule sends packets with it to [`CHECK_TABLE`], which routes the VIPs into the TUN device
/// on a backup too.
pub const CHECK_MARK: u32 = 0x4c42_0001;

/// The routing table of [`CHECK_MARK`]ed packets.
pub const CHECK_TABLE: u32 = 101;

/// `dataplane.announce`: route health injection for a BGP speaker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceConfig {
    /// The routing table the speaker exports (1 to 252, not lbd's reply table 100).
    #[serde(deserialize_with = "announce_table")]
    pub table: u32,
    /// At shutdown, how long lbd goes on forwarding after withdrawing its routes, for the
    /// routers to move the flows elsewhere. Default 1s.
    #[serde(default = "default_withdraw_wait", with = "duration::withdraw")]
    pub withdraw_wait: Duration,
}

fn default_withdraw_wait() -> Duration {
    Duration::from_secs(1)
}

fn announce_table<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let table = u32::deserialize(deserializer)?;
    if !(1..=252).contains(&table) || table == REPLY_TABLE {
        return Err(de::Error::custom(format!(
            "table {table}: the routing table to announce in must be 1 to 252 (253 to 255 are \
             the kernel's) and not {}, lbd's table for nat replies",
            REPLY_TABLE
        )));
    }
    Ok(table)
}

/// The largest `dataplane.max_flows` (some 13 GB of table).
pub const MAX_FLOWS: u32 = 100_000_000;

fn max_flows<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = u64::deserialize(deserializer)?;
    match u32::try_from(value) {
        Ok(flows) if (1..=MAX_FLOWS).contains(&flows) => Ok(flows),
        _ => Err(de::Error::custom(format!(
            "max_flows {value} is out of range 1..{MAX_FLOWS}"
        ))),
    }
}

/// Checks a network interface name as the kernel does: 1 to 15 bytes, no `/`, `:` or blank.
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|byte| byte == b'/' || byte == b':' || byte.is_ascii_whitespace() || byte.is_ascii_control())
    {
        return Err(format!(
            "`{name}` is not an interface name (1 to 15 characters, without `/`, `:` or blanks)"
        ));
    }
    Ok(())
}

pub(super) fn interface_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    check_interface_name(&name).map_err(de::Error::custom)?;
    Ok(name)
}

fn optional_interface_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|name| check_interface_name(&name).map(|()| name))
        .transpose()
        .map_err(de::Error::custom)
}

fn default_tun() -> String {
    "lbtun0".to_owned()
}

fn default_max_flows() -> u32 {
    1_000_000
}

/// `dataplane.setup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneSetup {
    /// lbd installs what it needs and removes it at exit.
    #[default]
    Auto,
    /// lbd checks and prints what is missing.
    Manual,
}
