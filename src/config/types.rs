//! The typed configuration model. Every struct rejects unknown keys; every field not listed as
//! required has the default written in its doc comment.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{duration, nodeset};

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
            drain_timeout: default_drain_timeout(),
            timeouts: Timeouts::default(),
            workers: 0,
            dataplane: None,
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
            drain_timeout: self.drain_timeout,
            timeouts: self.timeouts,
            workers: self.workers,
            dataplane: self.dataplane.clone(),
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

fn interface_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
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

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The label ipvsadm prints: `TCP` or `UDP`.
    pub fn ipvsadm_label(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// The identity of a virtual service: protocol and VIP:port. Unique in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The VIP and port.
    pub listen: SocketAddr,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol, self.listen)
    }
}

impl ServiceKey {
    /// Reads `tcp:VIP:PORT` or `udp:VIP:PORT` (the protocol in any case, an IPv6 VIP in
    /// brackets); `None` for anything else, such as a service name.
    pub fn parse(text: &str) -> Option<Self> {
        let (protocol, address) = text.split_once(':')?;
        let protocol = match protocol.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => return None,
        };
        Some(Self {
            protocol,
            listen: address.parse().ok()?,
        })
    }
}

/// A scheduler name, as ipvsadm `-s` takes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connection.
    Lc,
    /// Weighted least connection (the default, as in IPVS).
    #[default]
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Locality-based least connection.
    Lblc,
    /// Locality-based least connection with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Power of two choices.
    Twos,
}

impl SchedulerKind {
    /// The ipvsadm name, e.g. `wlc`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Dh => "dh",
            Self::Sh => "sh",
            Self::Mh => "mh",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
            Self::Twos => "twos",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::deserialize(de::value::StrDeserializer::<de::value::Error>::new(text)).map_err(|_| {
            format!(
                "unknown scheduler `{text}`: expected one of rr, wrr, lc, wlc, sed, nq, lblc, lblcr, dh, sh, mh, fo, ovf, twos"
            )
        })
    }
}

/// The size of an `mh` scheduler's lookup table (IPVS's default, a prime): the most reals an
/// `mh` service may have.
pub const MH_TABLE_SIZE: usize = 4093;

/// A scheduler flag, as ipvsadm `-b` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerFlag {
    /// sh: look further when the hashed real is unavailable.
    ShFallback,
    /// sh: hash the source port too.
    ShPort,
    /// mh: look further when the hashed real is unavailable.
    MhFallback,
    /// mh: hash the source port too.
    MhPort,
}

impl SchedulerFlag {
    /// The scheduler this flag belongs to.
    pub fn scheduler(self) -> SchedulerKind {
        match self {
            Self::ShFallback | Self::ShPort => SchedulerKind::Sh,
            Self::MhFallback | Self::MhPort => SchedulerKind::Mh,
        }
    }

    /// The ipvsadm name, e.g. `sh-port`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ShFallback => "sh-fallback",
            Self::ShPort => "sh-port",
            Self::MhFallback => "mh-fallback",
            Self::MhPort => "mh-port",
        }
    }
}

/// How packets reach a real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// Terminate and re-originate the connection (the default).
    #[default]
    Proxy,
    /// LVS/NAT.
    Nat,
    /// LVS/DR.
    Dr,
    /// LVS/TUN (IPIP).
    Tun,
}

impl ForwardMethod {
    /// The name as the config file writes it: `proxy`, `nat`, `dr` or `tun`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Nat => "nat",
            Self::Dr => "dr",
            Self::Tun => "tun",
        }
    }

    /// The name in ipvsadm's `Forward` column: `Proxy`, `Masq`, `Route` or `Tunnel`.
    pub fn ipvsadm_name(self) -> &'static str {
        match self {
            Self::Proxy => "Proxy",
            Self::Nat => "Masq",
            Self::Dr => "Route",
            Self::Tun => "Tunnel",
        }
    }
}

/// PROXY protocol towards the real servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    /// None (the default).
    #[default]
    None,
    /// Text version 1.
    V1,
    /// Binary version 2.
    V2,
}

/// `persistence:`, as ipvsadm `-p TIMEOUT -M NETMASK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    /// How long a client keeps its real after its last flow. Default 360s.
    #[serde(default = "default_persistence_timeout", with = "duration::persistence")]
    pub timeout: Duration,
    /// Granularity: clients in one masked network share a real. Default /32 (/128 for IPv6).
    #[serde(default)]
    pub netmask: Netmask,
}

fn default_persistence_timeout() -> Duration {
    Duration::from_secs(360)
}

/// A persistence netmask, kept as a prefix length. Written as `255.255.255.0` or as a prefix
/// length such as `24` (the only form for IPv6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Netmask {
    /// Prefix length; `None` = the full host mask of the client's family.
    pub prefix: Option<u8>,
}

impl<'de> Deserialize<'de> for Netmask {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = YamlScalar::deserialize(deserializer)?.0;
        if let Ok(prefix) = text.parse::<u8>() {
            if prefix > 128 {
                return Err(de::Error::custom(format!(
                    "invalid netmask `{text}`: a prefix length is 0..128"
                )));
            }
            return Ok(Self { prefix: Some(prefix) });
        }
        let mask: std::net::Ipv4Addr = text.parse().map_err(|_| {
            de::Error::custom(format!(
                "invalid netmask `{text}`: expected a mask like 255.255.255.0 or a prefix length"
            ))
        })?;
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(de::Error::custom(format!(
                "invalid netmask `{text}`: the mask's ones are not contiguous"
            )));
        }
        Ok(Self {
            prefix: Some(bits.leading_ones() as u8),
        })
    }
}

/// Accepts a YAML string or number as text.
struct YamlScalar(String);

impl<'de> Deserialize<'de> for YamlScalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            Text(String),
            Number(u64),
        }
        Ok(Self(match Scalar::deserialize(deserializer)? {
            Scalar::Text(text) => text,
            Scalar::Number(number) => number.to_string(),
        }))
    }
}

/// One virtual service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Unique label; default `<proto>:<vip>:<port>`.
    pub name: String,
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The VIP and port.
    pub listen: SocketAddr,
    /// The scheduler. Default `wlc`.
    pub scheduler: SchedulerKind,
    /// Scheduler flags.
    pub scheduler_flags: Vec<SchedulerFlag>,
    /// Forwarding method of the service; a real may override it. Default `proxy`.
    pub forward: ForwardMethod,
    /// Client persistence.
    pub persistence: Option<Persistence>,
    /// UDP: schedule every datagram on its own.
    pub one_packet: bool,
    /// UDP proxy: a session's idle timeout; `None` = `timeouts.udp`.
    pub udp_timeout: Option<Duration>,
    /// UDP proxy: a session ends after this many replies (nginx's `proxy_responses`; 1 for
    /// DNS); `None` = only at its idle timeout.
    pub udp_responses: Option<u32>,
    /// UDP proxy: sessions the service may hold at once. Default 65536.
    pub max_sessions: u32,
    /// PROXY protocol towards the reals.
    pub proxy_protocol: ProxyProtocol,
    /// Used only while no real server is available.
    pub sorry_server: Option<SocketAddr>,
    /// Health checking; absent = reals always up.
    pub health_check: Option<HealthCheckConfig>,
    /// The real servers, ranges expanded, in the order written.
    pub reals: Vec<RealConfig>,
    /// The listen address as written, to locate errors in the source.
    pub(crate) listen_text: String,
}

/// Equal settings; how the listen address was written does not count.
impl PartialEq for ServiceConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.protocol == other.protocol
            && self.listen == other.listen
            && self.scheduler == other.scheduler
            && self.scheduler_flags == other.scheduler_flags
            && self.forward == other.forward
            && self.persistence == other.persistence
            && self.one_packet == other.one_packet
            && self.udp_timeout == other.udp_timeout
            && self.udp_responses == other.udp_responses
            && self.max_sessions == other.max_sessions
            && self.proxy_protocol == other.proxy_protocol
            && self.sorry_server == other.sorry_server
            && self.health_check == other.health_check
            && self.reals == other.reals
    }
}

impl ServiceConfig {
    /// The service's identity.
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            protocol: self.protocol,
            listen: self.listen,
        }
    }

    /// Whether the service forwards packets (nat, dr, tun: its VIP is routed into the TUN
    /// device) rather than proxying (lbd listens on the VIP). The one place that decides it:
    /// a service is one or the other, and its reals may only choose among nat, dr and tun
    /// when it forwards packets.
    pub fn on_packet_plane(&self) -> bool {
        self.forward != ForwardMethod::Proxy
    }
}

/// One real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealConfig {
    /// The real server's address.
    pub address: SocketAddr,
    /// 0..65535; 0 = quiescent. Default 1.
    pub weight: u32,
    /// Upper connection threshold, 0 = none.
    pub max_conns: u32,
    /// Lower threshold for leaving overload, 0 = 3/4 of `max_conns`.
    pub min_conns: u32,
    /// Per-real forwarding override.
    pub forward: Option<ForwardMethod>,
}

impl RealConfig {
    /// The forwarding method that applies to this real within `service`.
    pub fn forward_in(&self, service: &ServiceConfig) -> ForwardMethod {
        self.forward.unwrap_or(service.forward)
    }
}

/// The YAML shape of a service, before defaults are filled and ranges expanded.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    #[serde(default)]
    name: Option<String>,
    protocol: Protocol,
    listen: String,
    #[serde(default)]
    scheduler: SchedulerKind,
    #[serde(default)]
    scheduler_flags: Vec<SchedulerFlag>,
    #[serde(default)]
    forward: ForwardMethod,
    #[serde(default)]
    persistence: Option<Persistence>,
    #[serde(default)]
    one_packet: bool,
    #[serde(default, deserialize_with = "udp_timeout")]
    udp_timeout: Option<Duration>,
    #[serde(default)]
    udp_responses: Option<u32>,
    #[serde(default = "default_max_sessions")]
    max_sessions: u32,
    #[serde(default)]
    proxy_protocol: ProxyProtocol,
    #[serde(default, deserialize_with = "optional_socket_addr")]
    sorry_server: Option<SocketAddr>,
    #[serde(default)]
    health_check: Option<HealthCheckConfig>,
    #[serde(default)]
    reals: Vec<RawReal>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: String,
    #[serde(default = "default_weight", deserialize_with = "weight")]
    weight: u32,
    #[serde(default)]
    max_conns: u32,
    #[serde(default)]
    min_conns: u32,
    #[serde(default)]
    forward: Option<ForwardMethod>,
}

fn default_weight() -> u32 {
    1
}

/// The default `max_sessions` of a UDP service.
pub const DEFAULT_MAX_SESSIONS: u32 = 65_536;

fn default_max_sessions() -> u32 {
    DEFAULT_MAX_SESSIONS
}

fn udp_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    optional_duration(deserializer, duration::IDLE)
}

/// The largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65_535;

impl<'de> Deserialize<'de> for ServiceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawService::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(de::Error::custom)
    }
}

impl ServiceConfig {
    fn from_raw(raw: RawService) -> Result<Self, String> {
        let listen = parse_socket_addr(&raw.listen)?;
        if listen.port() == 0 {
            return Err(format!(
                "listen: `{}` has port 0; a virtual service needs a port",
                raw.listen
            ));
        }
        let key = ServiceKey {
            protocol: raw.protocol,
            listen,
        };
        let name = raw.name.unwrap_or_else(|| key.to_string());
        if name.is_empty() || name.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
            return Err(format!(
                "name: `{name}` is not a usable service name (empty, or with quotes or control characters)"
            ));
        }
        if ServiceKey::parse(&name).is_some_and(|named| named != key) {
            return Err(format!(
                "name: `{name}` reads as another service's protocol and address, so lbadm could \
                 not tell them apart; choose a name that is not of the form tcp:VIP:PORT"
            ));
        }
        for flag in &raw.scheduler_flags {
            if flag.scheduler() != raw.scheduler {
                return Err(format!(
                    "scheduler_flags: `{}` applies only to scheduler `{}`, not `{}`",
                    flag.name(),
                    flag.scheduler(),
                    raw.scheduler
                ));
            }
        }
        let packets = raw.forward != ForwardMethod::Proxy;
        if packets && listen.is_ipv6() {
            return Err(format!(
                "listen: `{}` is IPv6, and forward {} handles IPv4 only so far; use forward: proxy \
                 for an IPv6 service",
                raw.listen,
                raw.forward.name()
            ));
        }
        if raw.one_packet && raw.protocol != Protocol::Udp {
            return Err("one_packet: only valid for udp services (as ipvsadm -o)".to_owned());
        }
        let sessions_set = [
            ("udp_timeout", raw.udp_timeout.is_some()),
            ("udp_responses", raw.udp_responses.is_some()),
            ("max_sessions", raw.max_sessions != DEFAULT_MAX_SESSIONS),
        ];
        if let Some((key, _)) = sessions_set.iter().find(|(_, set)| *set)
            && (raw.protocol != Protocol::Udp || packets)
        {
            return Err(format!(
                "{key}: only valid for udp services that are proxied (forward: proxy)"
            ));
        }
        if raw.udp_responses == Some(0) || raw.max_sessions == 0 {
            return Err("udp_responses and max_sessions must be at least 1".to_owned());
        }
        let mut reals: Vec<RealConfig> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for raw_real in raw.reals {
            if raw_real.max_conns != 0 && raw_real.min_conns > raw_real.max_conns {
                return Err(format!(
                    "reals: `{}`: min_conns {} is above max_conns {}",
                    raw_real.address, raw_real.min_conns, raw_real.max_conns
                ));
            }
            match (packets, raw_real.forward) {
                (false, Some(forward)) if forward != ForwardMethod::Proxy => {
                    return Err(format!(
                        "reals: `{}`: forward {} on one real of a proxied service; a service is \
                         either proxied or forwards packets, so set `forward: {}` on the service",
                        raw_real.address,
                        forward.name(),
                        forward.name()
                    ));
                }
                (true, Some(ForwardMethod::Proxy)) => {
                    return Err(format!(
                        "reals: `{}`: forward proxy on one real of a service that forwards \
                         packets; a real may only choose among nat, dr and tun",
                        raw_real.address
                    ));
                }
                _ => {}
            }
            let expanded = nodeset::expand(&raw_real.address).map_err(|error| format!("reals: {error}"))?;
            for text in expanded {
                let address = parse_real_addr(&text, listen.port())
                    .map_err(|error| format!("reals: {error} (from `{}`)", raw_real.address))?;
                if !seen.insert(address) {
                    return Err(format!(
                        "reals: `{}` repeats real {address} of service {name} (a real appears once)",
                        raw_real.address
                    ));
                }
                if packets && address.is_ipv6() {
                    return Err(format!(
                        "reals: {address} is IPv6, and forward {} handles IPv4 only so far",
                        raw.forward.name()
                    ));
                }
                reals.push(RealConfig {
                    address,
                    weight: raw_real.weight,
                    max_conns: raw_real.max_conns,
                    min_conns: raw_real.min_conns,
                    forward: raw_real.forward,
                });
            }
        }
        Ok(Self {
            name,
            protocol: raw.protocol,
            listen,
            scheduler: raw.scheduler,
            scheduler_flags: raw.scheduler_flags,
            forward: raw.forward,
            persistence: raw.persistence,
            one_packet: raw.one_packet,
            udp_timeout: raw.udp_timeout,
            udp_responses: raw.udp_responses,
            max_sessions: raw.max_sessions,
            proxy_protocol: raw.proxy_protocol,
            sorry_server: raw.sorry_server,
            health_check: raw.health_check,
            reals,
            listen_text: raw.listen,
        })
    }
}

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

/// Parses `IP:PORT` with a message that says what is expected.
pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("invalid address `{text}`: expected IP:PORT, like 192.168.77.100:80 or [2001:db8::1]:80")
    })
}

/// Parses a real server address; the port defaults to the service's port, as in ipvsadm.
pub fn parse_real_addr(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("invalid real address `{text}`: port 0"));
        }
        return Ok(addr);
    }
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(format!(
            "invalid real address `{text}`: expected IP[:PORT], like 10.0.0.1:8080"
        )),
    }
}

fn socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(deserializer)?).map_err(de::Error::custom)
}

fn optional_socket_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_socket_addr(&text))
        .transpose()
        .map_err(de::Error::custom)
}

fn check_interval<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    optional_duration(deserializer, duration::CHECK_INTERVAL)
}

fn check_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    optional_duration(deserializer, duration::CHECK_TIMEOUT)
}

fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
    range: duration::Range,
) -> Result<Option<Duration>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| range.parse(&text))
        .transpose()
        .map_err(de::Error::custom)
}

fn weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let value = i64::deserialize(deserializer)?;
    match u32::try_from(value) {
        Ok(weight) if weight <= MAX_WEIGHT => Ok(weight),
        _ => Err(de::Error::custom(format!(
            "weight {value} is out of range 0..{MAX_WEIGHT}"
        ))),
    }
}

impl Serialize for Netmask {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.prefix {
            Some(prefix) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                serializer.serialize_str(&std::net::Ipv4Addr::from(mask).to_string())
            }
            Some(prefix) => serializer.serialize_u8(prefix),
            None => serializer.serialize_str("255.255.255.255"),
        }
    }
}
