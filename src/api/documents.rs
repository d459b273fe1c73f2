//! The admin API's JSON documents, written by `lbd` and read by `lbadm`. `docs/api.md`
//! describes them field by field.

use serde::{Deserialize, Serialize};

/// ipvsadm's counters (`--stats`): flows, packets and bytes each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Flows.
    pub conns: u64,
    /// Packets client → real (proxy mode: UDP datagrams; TCP is counted in bytes only).
    pub in_pkts: u64,
    /// Packets real → client.
    pub out_pkts: u64,
    /// Bytes client → real.
    pub in_bytes: u64,
    /// Bytes real → client.
    pub out_bytes: u64,
}

impl Counters {
    /// The sum of two sets of counters.
    pub fn plus(self, other: Self) -> Self {
        Self {
            conns: self.conns + other.conns,
            in_pkts: self.in_pkts + other.in_pkts,
            out_pkts: self.out_pkts + other.out_pkts,
            in_bytes: self.in_bytes + other.in_bytes,
            out_bytes: self.out_bytes + other.out_bytes,
        }
    }

    /// The five counters, in ipvsadm's column order.
    pub fn values(self) -> [u64; 5] {
        [
            self.conns,
            self.in_pkts,
            self.out_pkts,
            self.in_bytes,
            self.out_bytes,
        ]
    }
}

/// ipvsadm's rates (`--rate`), per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    /// Flows per second.
    pub cps: u64,
    /// Packets per second, client → real.
    pub in_pps: u64,
    /// Packets per second, real → client.
    pub out_pps: u64,
    /// Bytes per second, client → real.
    pub in_bps: u64,
    /// Bytes per second, real → client.
    pub out_bps: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// lbd's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// The config file (absent for the demo).
    pub config_file: Option<String>,
    /// The state file, if runtime changes are persisted.
    pub state_file: Option<String>,
    /// Data-plane threads.
    pub workers: usize,
    /// Virtual services.
    pub services: usize,
    /// Real servers, over all services.
    pub reals: usize,
    /// Flows in progress.
    pub flows: usize,
    /// The HA side, for a director of an `ha:` pair.
    #[serde(default)]
    pub ha: Option<HaStatus>,
    /// The cluster side, for a director of a `cluster:`.
    #[serde(default)]
    pub cluster: Option<ClusterStatus>,
}

/// A director's place in its cluster (`cluster:`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// This director's node name.
    pub node: String,
    /// The cluster's key prefix in etcd.
    pub prefix: String,
    /// etcd's client URLs.
    pub etcd: Vec<String>,
    /// Whether etcd answers now (changes are refused while it does not).
    pub connected: bool,
    /// The etcd revision this director has seen.
    pub revision: i64,
    /// The etcd revision of the service table in force (its last change applied here).
    pub table_revision: i64,
    /// Directors registered now.
    pub directors: usize,
    /// Reals in the table that registered themselves.
    pub registered_reals: usize,
    /// Why the stored table was last refused, while it is.
    #[serde(default)]
    pub refused: Option<String>,
    /// Why etcd cannot be reached, while it cannot.
    #[serde(default)]
    pub unreachable: Option<String>,
}

/// A director's registration in its cluster: the value of `PREFIX/directors/NODE` in etcd
/// and a line of `lbadm directors`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Director {
    /// Its node name.
    pub node: String,
    /// The etcd revision of the service table it applied last.
    pub revision: i64,
    /// `master` or `backup` (of an HA pair), or `active`.
    pub role: String,
    /// Its admin API, if it serves one on TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The lbd version it runs.
    pub version: String,
}

/// A director's place in its HA pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HaStatus {
    /// `master` or `backup`.
    pub role: String,
    /// The keepalived instance (or group) followed.
    pub instance: String,
    /// The sync peers (empty: the multicast group), or none without flow sync.
    pub peers: Vec<String>,
    /// Sync messages sent.
    pub messages_sent: u64,
    /// Sync messages taken.
    pub messages_received: u64,
    /// Seconds since the last sync message was taken; none yet.
    pub last_sync_seconds: Option<u64>,
    /// Flows in the packet plane's table that came from the master.
    pub synced_flows: usize,
    /// Whether this director may take over: it is the master, holds the master's table, or
    /// found no master among its peers.
    pub ready: bool,
    /// The generation of the services: it increases with every change the master applies,
    /// and a backup takes the master's.
    pub generation: u64,
    /// The master whose services this backup took last (its HA channel address).
    pub master: Option<String>,
}

/// What `kill-flows` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Killed {
    /// The flows closed (proxied) or dropped (packet plane).
    pub flows: usize,
}

/// One virtual service with its reals, counters and rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// VIP:port.
    pub listen: String,
    /// Scheduler name.
    pub scheduler: String,
    /// Scheduler flags, as ipvsadm `-b` names them.
    pub scheduler_flags: Vec<String>,
    /// The service's forwarding method.
    pub forward: String,
    /// Persistence, if the service is persistent.
    pub persistence: Option<Persistence>,
    /// UDP one-packet scheduling.
    pub one_packet: bool,
    /// The slow start window as the config file writes it (`60s`), if the service has one.
    #[serde(default)]
    pub slow_start: Option<String>,
    /// The PROXY protocol header sent to the reals: `none`, `v1` or `v2` (a real may differ).
    #[serde(default)]
    pub proxy_protocol: String,
    /// With `accept_proxy`: the networks allowed to send PROXY headers (empty: none taken).
    #[serde(default)]
    pub accept_proxy_from: Vec<String>,
    /// Only clients of these networks are served (empty: every client).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Clients of these networks are refused.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Caps per client, as the config file writes them.
    #[serde(default)]
    pub source_limits: Option<crate::config::SourceLimits>,
    /// The sorry server.
    pub sorry_server: Option<String>,
    /// The health check's type, if its reals are checked.
    pub health_check: Option<String>,
    /// Totals.
    pub stats: Counters,
    /// Rates, estimated over the last seconds.
    pub rate: Rates,
    /// The real servers, sorted by address.
    pub reals: Vec<Real>,
}

/// A service's persistence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Persistence {
    /// Timeout in seconds.
    pub timeout_seconds: u64,
    /// Netmask prefix length (32 or 128 = per client).
    pub netmask_prefix: Option<u8>,
}

/// One real server of a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Real {
    /// IP:port.
    pub address: String,
    /// `proxy`, `nat`, `dr` or `tun`.
    pub forward: String,
    /// The PROXY protocol header its flows start with: `none`, `v1` or `v2`.
    #[serde(default)]
    pub proxy_protocol: String,
    /// The weight new flows are scheduled with now (health checks and drains included).
    pub weight: u32,
    /// The weight in the table (config or admin).
    pub configured_weight: u32,
    /// Upper threshold (0 = none).
    pub max_conns: u32,
    /// Lower threshold (0 = 3/4 of the upper).
    pub min_conns: u32,
    /// ActiveConn.
    pub active: u32,
    /// InActConn.
    pub inactive: u32,
    /// Above its upper threshold.
    pub overloaded: bool,
    /// It registered itself in the cluster (`lbd register`) rather than being configured.
    #[serde(default)]
    pub registered: bool,
    /// In maintenance (`lbadm maint-real`): no new flows, health checks paused.
    #[serde(default)]
    pub maintenance: bool,
    /// Health: absent when the service has no health check.
    pub health: Option<Health>,
    /// Totals.
    pub stats: Counters,
    /// Rates.
    pub rate: Rates,
}

/// A checked real's health.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `up` or `down`.
    pub state: String,
    /// Seconds since the state last changed.
    pub since_seconds: u64,
    /// The last check's result: passed or not.
    pub last_passed: Option<bool>,
    /// What the last check saw.
    pub last_reason: Option<String>,
}

/// One flow, as `ipvsadm -L -c` lists connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `ESTABLISHED`, `SYN_SENT` (connecting to the real), `FIN_WAIT` (half-closed) or `UDP`.
    pub state: String,
    /// Seconds before the idle timeout ends it.
    pub expires_seconds: u64,
    /// The client.
    pub source: String,
    /// The virtual service address.
    pub virtual_address: String,
    /// The real server.
    pub destination: String,
    /// Taken from another director's flow sync rather than scheduled here (packet plane).
    #[serde(default)]
    pub synced: bool,
}

/// An error answer: 4xx or 5xx with this body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Problem {
    /// What was wrong, in words a user can act on.
    pub error: String,
}
