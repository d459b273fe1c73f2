//! `lbadm`, the admin CLI: ipvsadm's commands and flags, spoken to `lbd`'s admin API.
//!
//! Exit status: 0 done, 1 the director refused (nothing changed), 2 bad usage (clap's own, or
//! a file that cannot be read), 3 the director cannot be reached.

mod client;
pub mod render;

use std::{io::Read, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use hyper::Method;
use serde_json::{Map, Value, json};

pub use self::client::{Client, ClientError, Endpoint};
use crate::api::{self, routes};

/// lbadm: administer a running lbd, the way ipvsadm administers IPVS.
#[derive(Debug, Parser)]
#[command(name = "lbadm", version)]
pub struct Cli {
    /// The director's admin API: IP:PORT or unix:/path.
    #[arg(long, global = true, env = "LBADM_ADMIN", default_value = "127.0.0.1:9900")]
    admin: String,
    /// A file holding the admin API's bearer token.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print JSON instead of text (reads), or the new state (changes).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    /// Version, uptime, config file, counts of services, reals and flows.
    Status,
}

/// Names a service: -t / -u VIP:PORT, or --service NAME (one of them; required by every
/// command but `list` and `zero`).
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
struct Target {
    /// A TCP service.
    #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT", value_parser = vip_port)]
    tcp: Option<std::net::SocketAddr>,
    /// A UDP service.
    #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT", value_parser = vip_port)]
    udp: Option<std::net::SocketAddr>,
    /// A service by name.
    #[arg(long = "service", value_name = "NAME")]
    name: Option<String>,
}

/// Reads `-t`/`-u`'s VIP:PORT; anything else is a usage error (exit 2) that says so.
fn vip_port(text: &str) -> Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| {
        format!("`{text}` is not VIP:PORT (like 192.168.77.100:80, or [2001:db8::1]:80 for IPv6)")
    })
}

/// Reads `-s`: a scheduler name, with the list of them when it is not one.
fn scheduler_name(text: &str) -> Result<String, String> {
    text.parse::<crate::config::SchedulerKind>()
        .map(|scheduler| scheduler.name().to_owned())
}

impl Target {
    /// The service's id in the API: `tcp:VIP:PORT`, `udp:VIP:PORT` or its name.
    fn id(&self) -> Option<String> {
        match (&self.tcp, &self.udp, &self.name) {
            (Some(address), _, _) => Some(format!("tcp:{address}")),
            (_, Some(address), _) => Some(format!("udp:{address}")),
            (_, _, Some(name)) => Some(name.clone()),
            _ => None,
        }
    }

    /// The service's `route` (with `{service}`), when a service is named.
    fn path(&self, route: &str) -> Option<String> {
        self.id().map(|id| routes::fill(route, &id, ""))
    }

    /// The service's `route`, which this command needs.
    fn required(&self, route: &str) -> Result<String, Failure> {
        self.path(route).ok_or_else(|| {
            usage("name the service with -t VIP:PORT, -u VIP:PORT or --service NAME".to_owned())
        })
    }
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    target: Target,
    /// Numeric output (always numeric; accepted for ipvsadm habits).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// Counters: Conns InPkts OutPkts InBytes OutBytes.
    #[arg(long, group = "view")]
    stats: bool,
    /// Rates: CPS InPPS OutPPS InBPS OutBPS.
    #[arg(long, group = "view")]
    rate: bool,
    /// The connection table, as ipvsadm -L -c.
    #[arg(short = 'c', long, group = "view")]
    conns: bool,
    /// Health check state and last result of each real.
    #[arg(long, group = "view")]
    health: bool,
    /// Full numbers in --stats and --rate.
    #[arg(long)]
    exact: bool,
}

/// The forwarding method flags.
#[derive(Debug, Clone, Args)]
#[group(required = false, multiple = false)]
struct Forward {
    /// Direct routing (LVS/DR).
    #[arg(short = 'g', long = "gatewaying")]
    dr: bool,
    /// NAT (LVS/NAT, masquerading).
    #[arg(short = 'm', long = "masquerading")]
    nat: bool,
    /// IPIP tunnelling (LVS/TUN).
    #[arg(short = 'i', long = "ipip")]
    tun: bool,
    /// The TCP/UDP proxy.
    #[arg(long)]
    proxy: bool,
}

impl Forward {
    fn method(&self) -> Option<&'static str> {
        [
            (self.dr, "dr"),
            (self.nat, "nat"),
            (self.tun, "tun"),
            (self.proxy, "proxy"),
        ]
        .into_iter()
        .find_map(|(set, name)| set.then_some(name))
    }
}

#[derive(Debug, Args)]
struct ServiceArgs {
    #[command(flatten)]
    target: Target,
    /// The scheduler: rr wrr lc wlc sed nq lblc lblcr dh sh mh fo ovf twos.
    #[arg(short = 's', long = "scheduler", value_parser = scheduler_name)]
    scheduler: Option<String>,
    /// Scheduler flags, comma-separated: sh-fallback, sh-port, mh-fallback, mh-port.
    #[arg(short = 'b', long = "sched-flags", value_delimiter = ',')]
    flags: Option<Vec<String>>,
    /// Persistence, with an optional timeout in seconds (default 360).
    #[arg(short = 'p', long = "persistent", num_args = 0..=1, default_missing_value = "360", value_name = "TIMEOUT")]
    persistent: Option<u64>,
    /// Edit: stop being persistent.
    #[arg(long, conflicts_with = "persistent")]
    no_persistent: bool,
    /// Persistence netmask, e.g. 255.255.255.0 or 24.
    #[arg(short = 'M', long = "netmask")]
    netmask: Option<String>,
    /// UDP: schedule every datagram on its own.
    #[arg(short = 'o', long = "ops")]
    ops: bool,
    /// A name for the service (with -t / -u).
    #[arg(long = "name")]
    new_name: Option<String>,
    #[command(flatten)]
    forward: Forward,
}

/// Names real servers of a service.
#[derive(Debug, Args)]
struct RealTarget {
    #[command(flatten)]
    target: Target,
    /// The real server(s): RIP[:PORT], or a range like 10.0.0.[1-4]:80.
    #[arg(short = 'r', long = "real-server", value_name = "RIP[:PORT]")]
    real: String,
}

#[derive(Debug, Args)]
struct RealArgs {
    #[command(flatten)]
    real: RealTarget,
    /// Weight, 0..65535 (0 = quiescent).
    #[arg(short = 'w', long = "weight")]
    weight: Option<i64>,
    /// Upper connection threshold (0 = none).
    #[arg(short = 'x', long = "u-threshold")]
    max_conns: Option<u32>,
    /// Lower connection threshold.
    #[arg(short = 'y', long = "l-threshold")]
    min_conns: Option<u32>,
    #[command(flatten)]
    forward: Forward,
}

/// A failure, with the exit status it maps to.
#[derive(Debug)]
struct Failure {
    status: u8,
    message: String,
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let status = match error {
            ClientError::Unreachable { .. } => 3,
            ClientError::Rejected { .. } => 1,
        };
        Self {
            status,
            message: error.to_string(),
        }
    }
}

fn usage(message: String) -> Failure {
    Failure { status: 2, message }
}

/// Runs `lbadm` with parsed arguments; prints results on stdout and errors on stderr.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lbadm: cannot start: {error}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(output) => {
            // A reader that stops early (`lbadm list | head -1`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), output.as_bytes());
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("lbadm: {}", failure.message);
            ExitCode::from(failure.status)
        }
    }
}

async fn execute(cli: Cli) -> Result<String, Failure> {
    let token = match &cli.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| usage(format!("cannot read the token file {}: {error}", path.display())))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let client = Client::new(Endpoint::parse(&cli.admin), token);
    let json_out = cli.json;
    let changed =
        |bytes: hyper::body::Bytes| -> String { if json_out { pretty(&bytes) } else { String::new() } };
    match cli.command {
        Command::List(args) => list(&client, args, json_out).await,
        Command::AddService(args) => {
            if args.target.tcp.is_none() && args.target.udp.is_none() {
                return Err(usage("add-service needs -t VIP:PORT or -u VIP:PORT".to_owned()));
            }
            let body = service_body(&args, true);
            Ok(changed(
                client
                    .call(Method::POST, routes::SERVICES, Some(to_bytes(&body)))
                    .await?,
            ))
        }
        Command::EditService(args) => {
            let path = args.target.required(routes::SERVICE)?;
            let body = service_body(&args, false);
            Ok(changed(
                client.call(Method::PATCH, &path, Some(to_bytes(&body))).await?,
            ))
        }
        Command::DelService(target) => Ok(changed(
            client
                .call(Method::DELETE, &target.required(routes::SERVICE)?, None)
                .await?,
        )),
        Command::AddReal(args) => {
            let path = args.real.target.required(routes::REALS)?;
            let mut body = real_body(&args);
            body.insert("address".to_owned(), json!(args.real.real));
            Ok(changed(
                client
                    .call(Method::POST, &path, Some(to_bytes(&Value::Object(body))))
                    .await?,
            ))
        }
        Command::EditReal(args) => {
            let body = real_body(&args);
            let path = real_path(&args.real, routes::REAL)?;
            Ok(changed(
                client
                    .call(Method::PATCH, &path, Some(to_bytes(&Value::Object(body))))
                    .await?,
            ))
        }
        Command::DelReal(real) => Ok(changed(
            client
                .call(Method::DELETE, &real_path(&real, routes::REAL)?, None)
                .await?,
        )),
        Command::DrainReal(real) => {
            let path = real_path(&real, routes::DRAIN)?;
            Ok(changed(client.call(Method::POST, &path, None).await?))
        }
        Command::Zero(target) => {
            let path = match target.path(routes::ZERO_SERVICE) {
                Some(service) => service,
                None => routes::ZERO.to_owned(),
            };
            Ok(changed(client.call(Method::POST, &path, None).await?))
        }
        Command::Clear => Ok(changed(
            client
                .call(Method::PUT, routes::SERVICES, Some(b"services: []\n".to_vec()))
                .await?,
        )),
        Command::Save => {
            let text = client.call(Method::GET, routes::SAVE, None).await?;
            if json_out {
                // The same table as JSON, which `restore` accepts too.
                let value: Value = serde_yaml::from_slice(&text).map_err(|error| Failure {
                    status: 3,
                    message: format!("the director's save is not valid YAML: {error}"),
                })?;
                return Ok(format!(
                    "{}\n",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ));
            }
            Ok(String::from_utf8_lossy(&text).into_owned())
        }
        Command::Restore { file } => {
            let text = read_input(&file)?;
            let answer = client.call(Method::PUT, routes::SERVICES, Some(text)).await;
            Ok(changed(answer.map_err(|error| {
                let failure = Failure::from(error);
                Failure {
                    message: format!("restore {file}: {}", failure.message),
                    ..failure
                }
            })?))
        }
        Command::Reload => Ok(changed(client.call(Method::POST, routes::RELOAD, None).await?)),
        Command::Status => {
            let bytes = client.call(Method::GET, routes::STATUS, None).await?;
            if json_out {
                return Ok(pretty(&bytes));
            }
            let status: api::Status = parse(&bytes)?;
            Ok(format!(
                "lbd {} up {}s\nconfig file: {}\nstate file: {}\nworkers: {}\nservices: {}  reals: {}  flows: {}\n",
                status.version,
                status.uptime_seconds,
                status.config_file.as_deref().unwrap_or("(none)"),
                status.state_file.as_deref().unwrap_or("(none)"),
                status.workers,
                status.services,
                status.reals,
                status.flows
            ))
        }
    }
}

async fn list(client: &Client, args: ListArgs, json_out: bool) -> Result<String, Failure> {
    if args.conns {
        let bytes = client.call(Method::GET, routes::CONNECTIONS, None).await?;
        if json_out {
            return Ok(pretty(&bytes));
        }
        let flows: Vec<api::Connection> = parse(&bytes)?;
        return Ok(render::connections(&flows));
    }
    let services: Vec<api::Service> = match args.target.path(routes::SERVICE) {
        Some(path) => {
            let bytes = client.call(Method::GET, &path, None).await?;
            if json_out {
                return Ok(pretty(&bytes));
            }
            vec![parse(&bytes)?]
        }
        None => {
            let bytes = client.call(Method::GET, routes::SERVICES, None).await?;
            if json_out {
                return Ok(pretty(&bytes));
            }
            parse(&bytes)?
        }
    };
    let status: api::Status = parse(&client.call(Method::GET, routes::STATUS, None).await?)?;
    let columns = if args.stats {
        render::Columns::Stats
    } else if args.rate {
        render::Columns::Rate
    } else if args.health {
        render::Columns::Health
    } else {
        render::Columns::Table
    };
    let options = render::Options {
        columns,
        exact: args.exact,
    };
    Ok(render::services(
        &status.version,
        status.flows,
        &services,
        options,
    ))
}

/// The real's `route` (with `{service}` and `{address}`).
fn real_path(real: &RealTarget, route: &str) -> Result<String, Failure> {
    let id = real.target.id().ok_or_else(|| {
        usage("name the service with -t VIP:PORT, -u VIP:PORT or --service NAME".to_owned())
    })?;
    Ok(routes::fill(route, &id, &real.real))
}

/// The body of add-service (everything given) or edit-service (only what changes).
fn service_body(args: &ServiceArgs, adding: bool) -> Value {
    let mut body = Map::new();
    if adding {
        let (protocol, listen) = match (&args.target.tcp, &args.target.udp) {
            (Some(address), _) => ("tcp", address.to_string()),
            (_, Some(address)) => ("udp", address.to_string()),
            _ => ("tcp", String::new()),
        };
        body.insert("protocol".to_owned(), json!(protocol));
        body.insert("listen".to_owned(), json!(listen));
        if let Some(name) = args.target.name.as_ref().or(args.new_name.as_ref()) {
            body.insert("name".to_owned(), json!(name));
        }
    } else if let Some(name) = &args.new_name {
        body.insert("name".to_owned(), json!(name));
    }
    if let Some(scheduler) = &args.scheduler {
        body.insert("scheduler".to_owned(), json!(scheduler));
    }
    if let Some(flags) = &args.flags {
        body.insert("scheduler_flags".to_owned(), json!(flags));
    }
    if let Some(timeout) = args.persistent {
        let mut persistence = Map::new();
        persistence.insert("timeout".to_owned(), json!(format!("{timeout}s")));
        if let Some(mask) = &args.netmask {
            persistence.insert("netmask".to_owned(), json!(mask));
        }
        body.insert("persistence".to_owned(), Value::Object(persistence));
    } else if args.no_persistent {
        body.insert("persistence".to_owned(), Value::Null);
    }
    if args.ops {
        body.insert("one_packet".to_owned(), json!(true));
    }
    if let Some(forward) = args.forward.method() {
        body.insert("forward".to_owned(), json!(forward));
    }
    Value::Object(body)
}

/// The keys a real's options set.
fn real_body(args: &RealArgs) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(weight) = args.weight {
        body.insert("weight".to_owned(), json!(weight));
    }
    if let Some(max) = args.max_conns {
        body.insert("max_conns".to_owned(), json!(max));
    }
    if let Some(min) = args.min_conns {
        body.insert("min_conns".to_owned(), json!(min));
    }
    if let Some(forward) = args.forward.method() {
        body.insert("forward".to_owned(), json!(forward));
    }
    body
}

fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn read_input(file: &str) -> Result<Vec<u8>, Failure> {
    if file == "-" {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|error| usage(format!("cannot read standard input: {error}")))?;
        return Ok(text);
    }
    std::fs::read(file).map_err(|error| usage(format!("cannot read {file}: {error}")))
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|error| Failure {
        status: 3,
        message: format!(
            "the director's answer is not what lbadm expects ({error}); are lbd and lbadm the same version?"
        ),
    })
}

fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
