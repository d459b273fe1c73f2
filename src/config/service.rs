//! A virtual service and its real servers: the keys of one `services:` item, read from their
//! YAML form (ranges expanded, defaults filled, combinations that cannot work refused).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{
    HealthCheckConfig,
    address::{optional_socket_addr, parse_real_addr, parse_socket_addr},
    duration, nodeset,
    prefixes::Prefixes,
};

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
        from_name(text).map_err(|_| {
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

impl FromStr for SchedulerFlag {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        from_name(text).map_err(|_| {
            format!(
                "unknown scheduler flag `{text}`: expected one of sh-fallback, sh-port, mh-fallback, mh-port"
            )
        })
    }
}

/// A value of a unit-variant enum from its config-file name.
fn from_name<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, de::value::Error> {
    T::deserialize(de::value::StrDeserializer::<de::value::Error>::new(text))
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

impl ProxyProtocol {
    /// The header version to write, if any.
    pub fn version(self) -> Option<crate::proxy_header::Version> {
        match self {
            Self::None => None,
            Self::V1 => Some(crate::proxy_header::Version::V1),
            Self::V2 => Some(crate::proxy_header::Version::V2),
        }
    }

    /// The name as the config file writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }
}

impl FromStr for ProxyProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        [Self::None, Self::V1, Self::V2]
            .into_iter()
            .find(|version| version.name() == text)
            .ok_or_else(|| format!("`{text}` is not a PROXY protocol version: v1, v2 or none"))
    }
}

/// `source_limits:`: what one client (or client network) may hold and open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceLimits {
    /// Flows one source may hold at once; absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// New flows one source may open per second (a burst of one second's worth is allowed);
    /// absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_flows_per_second: Option<u32>,
    /// What counts as one source for IPv4: clients in one network of this prefix length
    /// share the caps. Default 32 (each address).
    #[serde(default = "full_v4", skip_serializing_if = "is_full_v4")]
    pub ipv4_prefix: u8,
    /// The same for IPv6. Default 128 (each address; 64 makes a customer's /64 one source).
    #[serde(default = "full_v6", skip_serializing_if = "is_full_v6")]
    pub ipv6_prefix: u8,
}

impl SourceLimits {
    fn check(&self) -> Result<(), String> {
        if self.max_flows == Some(0) || self.new_flows_per_second == Some(0) {
            return Err("source_limits: max_flows and new_flows_per_second must be at least 1 (leave one out for no cap)".to_owned());
        }
        if self.max_flows.is_none() && self.new_flows_per_second.is_none() {
            return Err("source_limits: set max_flows, new_flows_per_second or both".to_owned());
        }
        if !(1..=32).contains(&self.ipv4_prefix) || !(1..=128).contains(&self.ipv6_prefix) {
            return Err(format!(
                "source_limits: ipv4_prefix {} / ipv6_prefix {} out of range (1..32, 1..128)",
                self.ipv4_prefix, self.ipv6_prefix
            ));
        }
        Ok(())
    }
}

fn full_v4() -> u8 {
    32
}

fn full_v6() -> u8 {
    128
}

fn is_full_v4(prefix: &u8) -> bool {
    *prefix == 32
}

fn is_full_v6(prefix: &u8) -> bool {
    *prefix == 128
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
        YamlScalar::deserialize(deserializer)?
            .0
            .parse()
            .map_err(de::Error::custom)
    }
}

impl FromStr for Netmask {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(prefix) = text.parse::<u8>() {
            if prefix > 128 {
                return Err(format!("invalid netmask `{text}`: a prefix length is 0..128"));
            }
            return Ok(Self { prefix: Some(prefix) });
        }
        let mask: std::net::Ipv4Addr = text.parse().map_err(|_| {
            format!("invalid netmask `{text}`: expected a mask like 255.255.255.0 or a prefix length")
        })?;
        let bits = u32::from(mask);
        if bits.leading_ones() + bits.trailing_zeros() != 32 {
            return Err(format!(
                "invalid netmask `{text}`: the mask's ones are not contiguous"
            ));
        }
        Ok(Self {
            prefix: Some(bits.leading_ones() as u8),
        })
    }
}

/// Accepts a YAML string or number as text.
pub(super) struct YamlScalar(pub(super) String);

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
    /// An IPv6 listen address takes IPv6 clients only (false: IPv4 ones too).
    pub ipv6_only: bool,
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
    /// A real that comes up or is added ramps its weight (and `max_conns`) from a small
    /// share to its own over this window; `None`: at once.
    pub slow_start: Option<Duration>,
    /// PROXY protocol towards the reals (a real may override it).
    pub proxy_protocol: ProxyProtocol,
    /// Every connection starts with a PROXY protocol header from a balancer in front, whose
    /// addresses stand for the connection's.
    pub accept_proxy: bool,
    /// The sources allowed to send those headers (with `accept_proxy`).
    pub accept_proxy_from: Prefixes,
    /// When not empty, only clients in these networks are served.
    pub allow: Prefixes,
    /// Clients in these networks are refused (before `allow` is looked at).
    pub deny: Prefixes,
    /// Caps per client (or client network): flows at once and new flows per second.
    pub source_limits: Option<SourceLimits>,
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
            && self.ipv6_only == other.ipv6_only
            && self.scheduler == other.scheduler
            && self.scheduler_flags == other.scheduler_flags
            && self.forward == other.forward
            && self.persistence == other.persistence
            && self.one_packet == other.one_packet
            && self.udp_timeout == other.udp_timeout
            && self.udp_responses == other.udp_responses
            && self.max_sessions == other.max_sessions
            && self.slow_start == other.slow_start
            && self.proxy_protocol == other.proxy_protocol
            && self.accept_proxy == other.accept_proxy
            && self.accept_proxy_from == other.accept_proxy_from
            && self.allow == other.allow
            && self.deny == other.deny
            && self.source_limits == other.source_limits
            && self.sorry_server == other.sorry_server
            && self.health_check == other.health_check
            && self.reals == other.reals
    }
}

impl ServiceConfig {
    /// This service with only its configured reals (not those that registered themselves):
    /// what `lbadm save` prints and the cluster's store holds.
    pub fn configured(&self) -> Self {
        let mut service = self.clone();
        service.reals.retain(|real| !real.registered);
        service
    }

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

/// Whether a packet-mode VIP can be routed into the TUN device: one unicast address, not
/// unspecified, multicast, loopback or IPv6 link-local.
fn is_routable_vip(ip: IpAddr) -> bool {
    let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    !(ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || link_local)
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
    /// Per-real PROXY protocol override.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// In maintenance: no new flows and no health checks (HAProxy's MAINT); flows in
    /// progress go on.
    pub maintenance: bool,
    /// It registered itself in the cluster's etcd (`lbd register`) rather than being
    /// configured; it goes when its registration does, and `lbadm save` leaves it out.
    pub registered: bool,
}

impl RealConfig {
    /// The forwarding method that applies to this real within `service`.
    pub fn forward_in(&self, service: &ServiceConfig) -> ForwardMethod {
        self.forward.unwrap_or(service.forward)
    }

    /// The PROXY protocol version written to this real within `service`.
    pub fn proxy_protocol_in(&self, service: &ServiceConfig) -> ProxyProtocol {
        self.proxy_protocol.unwrap_or(service.proxy_protocol)
    }
}

/// A service as the config file writes it, both ways: read before defaults are filled and
/// ranges expanded, and written back (`lbadm save`, the state file) with keys at their default
/// left out. The one place a service's keys are listed; [`ServiceConfig`] is what it reads as
/// once checked (`ServiceConfig::try_from`). `lbadm add-service` sends one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// `name`; default `<proto>:<vip>:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `protocol`.
    pub protocol: Protocol,
    /// `listen`: VIP:PORT as written.
    pub listen: String,
    /// `ipv6_only`: an IPv6 listen address takes IPv6 clients only (`IPV6_V6ONLY`); false
    /// takes IPv4 clients too (dual stack, as `[::]:80`). Default true.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub ipv6_only: bool,
    /// `scheduler`.
    #[serde(default)]
    pub scheduler: SchedulerKind,
    /// `scheduler_flags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scheduler_flags: Vec<SchedulerFlag>,
    /// `forward`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub forward: ForwardMethod,
    /// `persistence`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
    /// `one_packet`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub one_packet: bool,
    /// `udp_timeout`.
    #[serde(
        default,
        deserialize_with = "udp_timeout",
        serialize_with = "duration::serialize_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub udp_timeout: Option<Duration>,
    /// `udp_responses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_responses: Option<u32>,
    /// `max_sessions`.
    #[serde(
        default = "default_max_sessions",
        skip_serializing_if = "is_default_max_sessions"
    )]
    pub max_sessions: u32,
    /// `slow_start`.
    #[serde(
        default,
        deserialize_with = "slow_start",
        serialize_with = "duration::serialize_optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_start: Option<Duration>,
    /// `proxy_protocol`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy_protocol: ProxyProtocol,
    /// `accept_proxy`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub accept_proxy: bool,
    /// `accept_proxy_from`.
    #[serde(default, skip_serializing_if = "Prefixes::is_empty")]
    pub accept_proxy_from: Prefixes,
    /// `allow`.
    #[serde(default, skip_serializing_if = "Prefixes::is_empty")]
    pub allow: Prefixes,
    /// `deny`.
    #[serde(default, skip_serializing_if = "Prefixes::is_empty")]
    pub deny: Prefixes,
    /// `source_limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_limits: Option<SourceLimits>,
    /// `sorry_server`.
    #[serde(
        default,
        deserialize_with = "optional_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub sorry_server: Option<SocketAddr>,
    /// `health_check`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// `reals`.
    #[serde(default)]
    pub reals: Vec<RealSpec>,
}

impl ServiceSpec {
    /// A service at `listen` with every other key at its default.
    pub fn new(protocol: Protocol, listen: String) -> Self {
        Self {
            name: None,
            protocol,
            listen,
            ipv6_only: true,
            scheduler: SchedulerKind::default(),
            scheduler_flags: Vec::new(),
            forward: ForwardMethod::default(),
            persistence: None,
            one_packet: false,
            udp_timeout: None,
            udp_responses: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            slow_start: None,
            proxy_protocol: ProxyProtocol::default(),
            accept_proxy: false,
            accept_proxy_from: Prefixes::default(),
            allow: Prefixes::default(),
            deny: Prefixes::default(),
            source_limits: None,
            sorry_server: None,
            health_check: None,
            reals: Vec::new(),
        }
    }
}

/// One real as the config file writes it, both ways (`address` may be a range). `lbadm
/// add-real` sends one.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RealSpec {
    /// `address`: `RIP[:PORT]` or a range such as `10.0.0.[1-4]:80`.
    pub address: String,
    /// `weight`, 0..65535; default 1.
    #[serde(default = "default_weight", deserialize_with = "weight")]
    pub weight: u32,
    /// `max_conns`; 0 = none.
    #[serde(default, skip_serializing_if = "is_default")]
    pub max_conns: u32,
    /// `min_conns`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub min_conns: u32,
    /// `forward`: this real's own method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardMethod>,
    /// `proxy_protocol`: this real's own PROXY protocol version (`none` to send none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `maintenance`: no new flows, no health checks.
    #[serde(default, skip_serializing_if = "is_default")]
    pub maintenance: bool,
}

impl RealSpec {
    /// `address` with every other key at its default.
    pub fn new(address: String) -> Self {
        Self {
            address,
            weight: default_weight(),
            max_conns: 0,
            min_conns: 0,
            forward: None,
            proxy_protocol: None,
            maintenance: false,
        }
    }
}

impl From<&ServiceConfig> for ServiceSpec {
    fn from(service: &ServiceConfig) -> Self {
        Self {
            name: Some(service.name.clone()),
            protocol: service.protocol,
            listen: service.listen.to_string(),
            ipv6_only: service.ipv6_only,
            scheduler: service.scheduler,
            scheduler_flags: service.scheduler_flags.clone(),
            forward: service.forward,
            persistence: service.persistence,
            one_packet: service.one_packet,
            udp_timeout: service.udp_timeout,
            udp_responses: service.udp_responses,
            max_sessions: service.max_sessions,
            slow_start: service.slow_start,
            proxy_protocol: service.proxy_protocol,
            accept_proxy: service.accept_proxy,
            accept_proxy_from: service.accept_proxy_from.clone(),
            allow: service.allow.clone(),
            deny: service.deny.clone(),
            source_limits: service.source_limits,
            sorry_server: service.sorry_server,
            health_check: service.health_check.clone(),
            reals: service.reals.iter().map(RealSpec::from).collect(),
        }
    }
}

impl From<&RealConfig> for RealSpec {
    fn from(real: &RealConfig) -> Self {
        Self {
            address: real.address.to_string(),
            weight: real.weight,
            max_conns: real.max_conns,
            min_conns: real.min_conns,
            forward: real.forward,
            proxy_protocol: real.proxy_protocol,
            maintenance: real.maintenance,
        }
    }
}

fn yes() -> bool {
    true
}

fn is_yes(value: &bool) -> bool {
    *value
}

pub(super) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

fn is_default_max_sessions(value: &u32) -> bool {
    *value == DEFAULT_MAX_SESSIONS
}

pub(super) fn default_weight() -> u32 {
    1
}

/// The default `max_sessions` of a UDP service.
pub const DEFAULT_MAX_SESSIONS: u32 = 65_536;

fn default_max_sessions() -> u32 {
    DEFAULT_MAX_SESSIONS
}

fn udp_timeout<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration::optional(deserializer, duration::IDLE)
}

fn slow_start<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    duration::optional(deserializer, duration::SLOW_START)
}

/// The largest weight ipvsadm accepts.
pub const MAX_WEIGHT: u32 = 65_535;

impl<'de> Deserialize<'de> for ServiceConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spec = ServiceSpec::deserialize(deserializer)?;
        Self::try_from(spec).map_err(de::Error::custom)
    }
}

/// Checks a service as the config file does: the message names the key and value.
impl TryFrom<ServiceSpec> for ServiceConfig {
    type Error = String;

    fn try_from(raw: ServiceSpec) -> Result<Self, String> {
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
        let name = raw.name.clone().unwrap_or_else(|| key.to_string());
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
        if packets && !is_routable_vip(listen.ip()) {
            return Err(format!(
                "listen: `{}` cannot be a VIP of forward {}: the packet plane routes a VIP's \
                 packets to itself, so it must be one unicast address (not unspecified, \
                 multicast, loopback or IPv6 link-local)",
                raw.listen,
                raw.forward.name()
            ));
        }
        if packets && !raw.ipv6_only {
            return Err(format!(
                "ipv6_only: false applies to proxied services (a listening socket that takes \
                 IPv4 clients too); forward {} serves the one VIP `{}`",
                raw.forward.name(),
                raw.listen
            ));
        }
        if !raw.ipv6_only && !listen.is_ipv6() {
            return Err(format!(
                "ipv6_only: false applies to an IPv6 listen address (such as [::]:80, which then \
                 takes IPv4 clients too), not to `{}`",
                raw.listen
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
        check_proxy_protocol(&raw, packets)?;
        if raw.health_check.as_ref().is_some_and(|check| check.via_vip) {
            let direct = |forward: Option<ForwardMethod>| {
                matches!(
                    forward.unwrap_or(raw.forward),
                    ForwardMethod::Dr | ForwardMethod::Tun
                )
            };
            if !direct(None) && !raw.reals.iter().any(|real| direct(real.forward)) {
                return Err(
                    "health_check: via_vip checks dr and tun reals through the VIP's path; this \
                     service has none (nat and proxy reach the real's own address anyway)"
                        .to_owned(),
                );
            }
        }
        if let Some(limits) = &raw.source_limits {
            limits.check()?;
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
                let forward = raw_real.forward.unwrap_or(raw.forward);
                if packets && address.is_ipv6() != listen.is_ipv6() && forward != ForwardMethod::Tun {
                    return Err(format!(
                        "reals: {address} is not of the VIP {}'s address family, which forward {} \
                         needs (nat rewrites addresses within a family, dr sends on the VIP's own \
                         link); only forward: tun carries one family inside the other",
                        listen.ip(),
                        forward.name()
                    ));
                }
                reals.push(RealConfig {
                    address,
                    weight: raw_real.weight,
                    max_conns: raw_real.max_conns,
                    min_conns: raw_real.min_conns,
                    forward: raw_real.forward,
                    proxy_protocol: raw_real.proxy_protocol,
                    maintenance: raw_real.maintenance,
                    registered: false,
                });
            }
        }
        Ok(Self {
            name,
            protocol: raw.protocol,
            listen,
            ipv6_only: raw.ipv6_only,
            scheduler: raw.scheduler,
            scheduler_flags: raw.scheduler_flags,
            forward: raw.forward,
            persistence: raw.persistence,
            one_packet: raw.one_packet,
            udp_timeout: raw.udp_timeout,
            udp_responses: raw.udp_responses,
            max_sessions: raw.max_sessions,
            slow_start: raw.slow_start,
            proxy_protocol: raw.proxy_protocol,
            accept_proxy: raw.accept_proxy,
            accept_proxy_from: raw.accept_proxy_from,
            allow: raw.allow,
            deny: raw.deny,
            source_limits: raw.source_limits,
            sorry_server: raw.sorry_server,
            health_check: raw.health_check,
            reals,
            listen_text: raw.listen,
        })
    }
}

/// The PROXY protocol keys of a service: headers to reals and from a balancer in front.
fn check_proxy_protocol(raw: &ServiceSpec, packets: bool) -> Result<(), String> {
    let written = std::iter::once(("proxy_protocol", raw.proxy_protocol))
        .chain(
            raw.reals
                .iter()
                .filter_map(|real| Some(("reals: proxy_protocol", real.proxy_protocol?))),
        )
        .find(|(_, version)| *version != ProxyProtocol::None);
    if let Some((key, version)) = written
        && packets
    {
        return Err(format!(
            "{key}: {} needs forward: proxy; nat, dr and tun pass the client's own address \
             to the real, which needs no header",
            version.name()
        ));
    }
    let v1_over_udp = raw.protocol == Protocol::Udp
        && std::iter::once(raw.proxy_protocol)
            .chain(raw.reals.iter().filter_map(|real| real.proxy_protocol))
            .any(|version| version == ProxyProtocol::V1);
    if v1_over_udp {
        return Err(
            "proxy_protocol: v1 is a text line for TCP; a udp service sends v2 (one header per \
             datagram)"
                .to_owned(),
        );
    }
    let send_proxy = raw.health_check.as_ref().and_then(|check| check.send_proxy);
    if send_proxy == Some(true) {
        let plain = if raw.reals.is_empty() && raw.proxy_protocol == ProxyProtocol::None {
            Some("the service")
        } else {
            raw.reals
                .iter()
                .find(|real| real.proxy_protocol.unwrap_or(raw.proxy_protocol) == ProxyProtocol::None)
                .map(|real| real.address.as_str())
        };
        if let Some(whose) = plain {
            return Err(format!(
                "health_check: send_proxy: true sends each real's PROXY protocol header, but \
                 {whose} has none (set proxy_protocol: v1 or v2)"
            ));
        }
    }
    if raw.accept_proxy {
        if packets || raw.protocol != Protocol::Tcp {
            return Err(
                "accept_proxy: a balancer's PROXY header is read by a proxied tcp service \
                 (forward: proxy, protocol: tcp)"
                    .to_owned(),
            );
        }
        if raw.accept_proxy_from.is_empty() {
            return Err(
                "accept_proxy: true needs accept_proxy_from, the networks of the balancers \
                 allowed to send PROXY headers (anyone else could claim any address)"
                    .to_owned(),
            );
        }
    } else if !raw.accept_proxy_from.is_empty() {
        return Err("accept_proxy_from: applies only with accept_proxy: true".to_owned());
    }
    Ok(())
}

pub(super) fn weight<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
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
