//! lbadm's command line: the commands and flags, ipvsadm's where it has them.

use std::{path::PathBuf, str::FromStr};

use clap::{Args, Parser, Subcommand};

use super::{Failure, usage};
use crate::{
    api::routes,
    config::{ForwardMethod, MAX_WEIGHT, Netmask, Prefixes, ProxyProtocol, SchedulerFlag, SchedulerKind},
};

/// lbadm: administer a running lbd, the way ipvsadm administers IPVS.
#[derive(Debug, Clone, Parser)]
#[command(name = "lbadm", version)]
pub struct Cli {
    /// The director's admin API: IP:PORT or unix:/path.
    #[arg(long, global = true, env = "LBADM_ADMIN", default_value = "127.0.0.1:9900")]
    pub(super) admin: String,
    /// Several directors at once, as a node set of admin addresses (`10.0.0.[21-23]:9900`,
    /// `d[1-3]:9900`): the command runs on each in parallel and identical answers are shown
    /// once, with the directors that gave them (as `clush -b`). Before the command.
    #[arg(
        short = 'w',
        long = "directors",
        value_name = "NODESET",
        conflicts_with = "admin"
    )]
    pub(super) directors: Option<String>,
    /// A file holding the admin API's bearer token.
    #[arg(long, global = true, value_name = "FILE")]
    pub(super) token_file: Option<PathBuf>,
    /// Print JSON instead of text (reads), or the new state (changes).
    #[arg(long, global = true)]
    pub(super) json: bool,
    /// Change the backup of an HA pair anyway (changes belong on the master, which passes
    /// them on; a backup refuses them without this).
    #[arg(long, global = true)]
    pub(super) force: bool,
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Clone, Subcommand)]
pub(super) enum Command {
    /// List the table (ipvsadm -L).
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Add a virtual service (ipvsadm -A).
    AddService(ServiceArgs),
    /// Change a virtual service's settings (ipvsadm -E); only the options given change.
    EditService(ServiceArgs),
    /// Delete a virtual service (ipvsadm -D); its flows finish on their own.
    DelService(Target),
    /// Add real servers (ipvsadm -a); -r accepts ranges like 10.0.0.[1-4]:80.
    AddReal(RealArgs),
    /// Change real servers (ipvsadm -e); only the options given change.
    EditReal(RealArgs),
    /// Delete real servers (ipvsadm -d); their flows finish on their own.
    DelReal(RealTarget),
    /// Set real servers' weight to 0: no new flows, existing flows finish.
    DrainReal(RealTarget),
    /// Put real servers in maintenance (HAProxy's MAINT): no new flows, health checks paused;
    /// flows in progress go on. Shown as MAINT.
    MaintReal(RealTarget),
    /// Take real servers out of maintenance: checked again, and back in scheduling once up.
    ReadyReal(RealTarget),
    /// Close the flows of a service, or with -r of some of its reals: proxied flows are reset
    /// both ways, packet-mode entries dropped.
    KillFlows(KillArgs),
    /// Zero the counters of a service, or of all (ipvsadm -Z).
    Zero(Target),
    /// Remove every service (ipvsadm -C).
    Clear,
    /// Print the services as YAML that `restore` and the config file accept (ipvsadm -S).
    Save,
    /// Replace the whole table from a file, or `-` for standard input (ipvsadm -R).
    Restore {
        /// The YAML (`services:` list, as `save` prints it).
        #[arg(default_value = "-")]
        file: String,
    },
    /// Re-read lbd's config file, replacing runtime changes (as SIGHUP).
    Reload,
    /// The directors registered in the cluster (`cluster:`), with the table revision each
    /// has applied and its role.
    Directors,
    /// Version, uptime, config file, counts of services, reals and flows; the HA role and
    /// the cluster's state.
    Status {
        /// Exit 1 unless this director may take over (keepalived's check): it is the master,
        /// or it holds the master's table, or no peer is master.
        #[arg(long)]
        ready: bool,
    },
}

/// Names a service: -t / -u VIP:PORT, or --service NAME (one of them; required by every
/// command but `list` and `zero`).
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub(super) struct Target {
    /// A TCP service.
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT", value_parser = vip_port)]
    pub(super) tcp: Option<std::net::SocketAddr>,
    /// A UDP service.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT", value_parser = vip_port)]
    pub(super) udp: Option<std::net::SocketAddr>,
    /// A service by name.
    #[arg(long = "service", value_name = "NAME")]
    pub(super) name: Option<String>,
}

/// Reads `-t`/`-u`'s VIP:PORT; anything else is a usage error (exit 2) that says so.
pub(super) fn vip_port(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not VIP:PORT (like 192.168.77.100:80, or [2001:db8::1]:80 for IPv6)")
    })
}

/// Reads `-w`: a weight within ipvsadm's range.
pub(super) fn weight(text: &str) -> Result<u32, String> {
    match text.parse::<i64>() {
        Ok(weight) if (0..=i64::from(MAX_WEIGHT)).contains(&weight) => Ok(weight as u32),
        Ok(weight) => Err(format!("weight {weight} is out of range 0..{MAX_WEIGHT}")),
        Err(_) => Err(format!("`{text}` is not a weight (a number 0..{MAX_WEIGHT})")),
    }
}

impl Target {
    /// The service's id in the API: `tcp:VIP:PORT`, `udp:VIP:PORT` or its name.
    pub(super) fn id(&self) -> Option<String> {
        match (&self.tcp, &self.udp, &self.name) {
            (Some(address), _, _) => Some(format!("tcp:{address}")),
            (_, Some(address), _) => Some(format!("udp:{address}")),
            (_, _, Some(name)) => Some(name.clone()),
            _ => None,
        }
    }

    /// The service's `route` (with `{service}`), when a service is named.
    pub(super) fn path(&self, route: &str) -> Option<String> {
        self.id().map(|id| routes::fill(route, &id, ""))
    }

    /// The service's `route`, which this command needs.
    pub(super) fn required(&self, route: &str) -> Result<String, Failure> {
        self.path(route).ok_or_else(|| {
            usage("name the service with -t VIP:PORT, -u VIP:PORT or --service NAME".to_owned())
        })
    }
}

#[derive(Debug, Clone, Args)]
pub(super) struct ListArgs {
    #[command(flatten)]
    pub(super) target: Target,
    /// Numeric output (always numeric; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    pub(super) numeric: bool,
    /// Counters: Conns InPkts OutPkts InBytes OutBytes.
    #[arg(long, group = "view")]
    pub(super) stats: bool,
    /// Rates: CPS InPPS OutPPS InBPS OutBPS.
    #[arg(long, group = "view")]
    pub(super) rate: bool,
    /// The connection table, as ipvsadm -L -c.
    #[arg(short = 'c', long, group = "view")]
    pub(super) conns: bool,
    /// Health check state and last result of each real.
    #[arg(long, group = "view")]
    pub(super) health: bool,
    /// Full numbers in --stats and --rate.
    #[arg(long)]
    pub(super) exact: bool,
}

/// The forwarding method flags.
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
pub(super) struct Forward {
    /// Direct routing (LVS/DR).
    #[arg(short = 'g', long = "gatewaying")]
    pub(super) dr: bool,
    /// NAT (LVS/NAT, masquerading).
    #[arg(short = 'm', long = "masquerading")]
    pub(super) nat: bool,
    /// IPIP tunnelling (LVS/TUN).
    #[arg(short = 'i', long = "ipip")]
    pub(super) tun: bool,
    /// The TCP/UDP proxy.
    #[arg(long)]
    pub(super) proxy: bool,
}

impl Forward {
    /// The method a flag chose, if any.
    pub(super) fn method(&self) -> Option<ForwardMethod> {
        [
            (self.dr, ForwardMethod::Dr),
            (self.nat, ForwardMethod::Nat),
            (self.tun, ForwardMethod::Tun),
            (self.proxy, ForwardMethod::Proxy),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

#[derive(Debug, Clone, Args)]
pub(super) struct ServiceArgs {
    #[command(flatten)]
    pub(super) target: Target,
    /// The scheduler: rr wrr lc wlc sed nq lblc lblcr dh sh mh fo ovf twos.
    #[arg(short = 's', long = "scheduler", value_parser = SchedulerKind::from_str)]
    pub(super) scheduler: Option<SchedulerKind>,
    /// Scheduler flags, comma-separated: sh-fallback, sh-port, mh-fallback, mh-port.
    #[arg(short = 'b', long = "sched-flags", value_delimiter = ',', value_parser = SchedulerFlag::from_str)]
    pub(super) flags: Option<Vec<SchedulerFlag>>,
    /// Persistence, with an optional timeout in seconds (default 360).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, default_missing_value = "360", value_name = "TIMEOUT")]
    pub(super) persistent: Option<u64>,
    /// Edit: stop being persistent.
    #[arg(long, conflicts_with = "persistent")]
    pub(super) no_persistent: bool,
    /// Persistence netmask, e.g. 255.255.255.0 or 24.
    #[arg(short = 'M', long = "netmask", value_parser = Netmask::from_str)]
    pub(super) netmask: Option<Netmask>,
    /// UDP: schedule every datagram on its own.
    #[arg(short = 'o', long = "ops")]
    pub(super) ops: bool,
    /// Slow start: a real that comes up or is added ramps its weight over this window (1s to
    /// 1h, e.g. 60s), as HAProxy's slowstart.
    #[arg(long = "slow-start", value_name = "DURATION", value_parser = crate::config::parse_slow_start)]
    pub(super) slow_start: Option<std::time::Duration>,
    /// Edit: no slow start (new reals take their whole weight at once).
    #[arg(long, conflicts_with = "slow_start")]
    pub(super) no_slow_start: bool,
    /// PROXY protocol header to the reals: v1, v2 or none (proxy mode).
    #[arg(long = "proxy-protocol", value_name = "VERSION", value_parser = ProxyProtocol::from_str)]
    pub(super) proxy_protocol: Option<ProxyProtocol>,
    /// Take a PROXY protocol header at the start of every connection, from these networks
    /// only (comma-separated CIDRs of the balancers in front).
    #[arg(long = "accept-proxy-from", value_name = "CIDR,...", value_parser = Prefixes::from_str)]
    pub(super) accept_proxy_from: Option<Prefixes>,
    /// Edit: take no PROXY headers any more.
    #[arg(long, conflicts_with = "accept_proxy_from")]
    pub(super) no_accept_proxy: bool,
    /// Serve only clients in these networks (comma-separated CIDRs).
    #[arg(long, value_name = "CIDR,...", value_parser = Prefixes::from_str)]
    pub(super) allow: Option<Prefixes>,
    /// Edit: serve clients of every network again.
    #[arg(long, conflicts_with = "allow")]
    pub(super) no_allow: bool,
    /// Refuse clients in these networks (comma-separated CIDRs; checked before --allow).
    #[arg(long, value_name = "CIDR,...", value_parser = Prefixes::from_str)]
    pub(super) deny: Option<Prefixes>,
    /// Edit: refuse no network any more.
    #[arg(long, conflicts_with = "deny")]
    pub(super) no_deny: bool,
    /// Flows one client may hold at once (sets source_limits with --source-rate).
    #[arg(long = "source-max-flows", value_name = "N")]
    pub(super) source_max_flows: Option<u32>,
    /// New flows one client may open per second (sets source_limits with
    /// --source-max-flows).
    #[arg(long = "source-rate", value_name = "N")]
    pub(super) source_rate: Option<u32>,
    /// Edit: no caps per client.
    #[arg(long, conflicts_with_all = ["source_max_flows", "source_rate"])]
    pub(super) no_source_limits: bool,
    /// A name for the service (with -t / -u).
    #[arg(long = "name")]
    pub(super) new_name: Option<String>,
    #[command(flatten)]
    pub(super) forward: Forward,
}

/// Names a service and, optionally, some of its reals.
#[derive(Debug, Clone, Args)]
pub(super) struct KillArgs {
    #[command(flatten)]
    pub(super) target: Target,
    /// Only the flows of these reals: RIP[:PORT], or a range like 10.0.0.[1-4]:80.
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    pub(super) real: Option<String>,
}

/// Names real servers of a service.
#[derive(Debug, Clone, Args)]
pub(super) struct RealTarget {
    #[command(flatten)]
    pub(super) target: Target,
    /// The real server(s): RIP[:PORT], or a range like 10.0.0.[1-4]:80.
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    pub(super) real: String,
}

#[derive(Debug, Clone, Args)]
pub(super) struct RealArgs {
    #[command(flatten)]
    pub(super) real: RealTarget,
    /// Weight, 0..65535 (0 = quiescent).
    #[arg(short = 'w', long = "weight", value_parser = weight)]
    pub(super) weight: Option<u32>,
    /// Upper connection threshold (0 = none).
    #[arg(short = 'x', long = "u-threshold")]
    pub(super) max_conns: Option<u32>,
    /// Lower connection threshold.
    #[arg(short = 'y', long = "l-threshold")]
    pub(super) min_conns: Option<u32>,
    /// This real's own PROXY protocol header: v1, v2 or none.
    #[arg(long = "proxy-protocol", value_name = "VERSION", value_parser = ProxyProtocol::from_str)]
    pub(super) proxy_protocol: Option<ProxyProtocol>,
    #[command(flatten)]
    pub(super) forward: Forward,
}
