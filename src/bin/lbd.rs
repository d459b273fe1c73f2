//! `lbd`, the ulvs director. Parses the command line, loads the config without binding
//! anything, then hands over to [`ulvs::daemon`].

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use ulvs::daemon::{self, ConfigSource};

/// ulvs director: a user-space, LVS-style Layer-4 load balancer.
#[derive(Debug, Parser)]
#[command(name = "lbd", version, args_conflicts_with_subcommands = true)]
struct Args {
    /// The config file.
    #[arg(long, short = 'c', value_name = "FILE", default_value = "/etc/lbd/lbd.yaml")]
    config: PathBuf,
    /// Validate the config file and exit: 0 if valid, 1 if not.
    #[arg(long)]
    check: bool,
    /// lbd's own log lines on standard error: `text`, or `json` (one object per line, for
    /// log shippers). The access log has its own `format`.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// How lbd writes its own log.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a self-contained demo: three HTTP backends behind a wrr service.
    Demo {
        /// Where the demo service listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API listens (for lbadm).
        #[arg(long, default_value = "127.0.0.1:9900")]
        admin: SocketAddr,
        /// Where the demo serves /metrics.
        #[arg(long, default_value = "127.0.0.1:9901")]
        metrics: SocketAddr,
    },
    /// Run on a real server: register it in a cluster service's reals (in etcd) for as long
    /// as this runs and its check passes; on SIGTERM or SIGINT it is withdrawn at once.
    Register(ulvs::cluster::register::Registration),
    /// Real-server helper for tun mode on kernels without an ipip or ip6tnl device: takes
    /// the tunnelled packets for the VIP (inside IPv4 or IPv6) and hands them to the kernel.
    IpipDecap {
        /// The VIP carried by the real server (IPv4 or IPv6).
        #[arg(long)]
        vip: std::net::IpAddr,
        /// The TUN device to create.
        #[arg(long, default_value = "ipipdecap0")]
        dev: String,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().init(),
    }
    if args.check && args.command.is_none() {
        return match check(&args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err((code, message)) => {
                eprintln!("lbd: {message}");
                ExitCode::from(code)
            }
        };
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lbd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `lbd --check`: exit 0 when the config is valid and the host has what it needs, 1 when the
/// config is invalid, 2 when it is valid but the host lacks something (named).
fn check(path: &std::path::Path) -> Result<(), (u8, String)> {
    use std::fmt::Write as _;
    let config = &ConfigSource::File(path.to_owned())
        .load()
        .map_err(|error| (1, error.to_string()))?;
    let (mut stored, mut left_out) = (String::new(), Vec::new());
    let mut services = config.services.clone();
    let mut unread = None;
    if let Some(cluster) = &config.cluster {
        // The table is the cluster's: read it and check it as the director would take it.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| (1, format!("cannot start a runtime: {error}")))?;
        match runtime.block_on(ulvs::cluster::stored_table(config)) {
            Ok((revision, table, skipped)) => {
                stored = format!(" in etcd under {} at revision {revision}", cluster.prefix);
                left_out = skipped;
                services = table;
            }
            Err(error @ ulvs::cluster::StoredError::Unreachable { .. }) => {
                stored = format!(" in etcd under {}: not read", cluster.prefix);
                unread = Some(format!("the cluster's stored table: {error}"));
            }
            Err(error) => {
                return Err((
                    1,
                    format!("the cluster's stored table ({}): {error}", cluster.prefix),
                ));
            }
        }
    }
    let reals: usize = services.iter().map(|service| service.reals.len()).sum();
    let count = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let (services, reals) = (count(services.len(), "service"), count(reals, "real"));
    let mut problems = daemon::preflight::check(config);
    problems.extend(unread);
    let verdict = if problems.is_empty() { "OK" } else { "valid" };
    let mut text = format!("{}: {verdict} ({services}, {reals}{stored})\n", path.display());
    for why in left_out {
        let _ = writeln!(text, "  registered real left out: {why}");
    }
    if let Some(dataplane) = config
        .dataplane
        .as_ref()
        .filter(|_| ulvs::lvs::plane::needed(config))
    {
        let who = match dataplane.setup {
            ulvs::config::DataplaneSetup::Auto => "lbd applies at start and undoes at exit",
            ulvs::config::DataplaneSetup::Manual => "the host must already have (setup: manual)",
        };
        let _ = writeln!(text, "dataplane setup, which {who}:");
        let always = ulvs::lvs::plane::plan(config, false);
        for step in ulvs::lvs::plane::plan(config, true) {
            let master_only = config.ha.is_some() && !always.contains(&step);
            let when = if master_only { "   (while master)" } else { "" };
            let _ = writeln!(text, "  {step}{when}");
        }
        if let Some(announce) = &dataplane.announce {
            let _ = writeln!(
                text,
                "  ip route replace VIP/32 dev {} table {}   (each VIP while it has a real that can \
                 take flows: route health injection)",
                dataplane.tun, announce.table
            );
        }
    }
    // A reader that stops early (`lbd --check | head -1`) is not an error.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
    if !problems.is_empty() {
        return Err((
            2,
            format!(
                "{}: valid, but the host lacks what it needs:\n  {}",
                path.display(),
                problems.join("\n  ")
            ),
        ));
    }
    Ok(())
}

fn run(args: Args) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the control-plane runtime: {error}"))?;
    match args.command {
        Some(Command::Demo {
            listen,
            admin,
            metrics,
        }) => runtime
            .block_on(daemon::demo::run(listen, admin, metrics))
            .map_err(|e| e.to_string()),
        Some(Command::Register(registration)) => runtime.block_on(ulvs::cluster::register::run(registration)),
        Some(Command::IpipDecap { vip, dev }) => {
            ulvs::lvs::decap::run(vip, &dev).map_err(|error| error.to_string())
        }
        None => {
            let source = ConfigSource::File(args.config.clone());
            let config = source.load().map_err(|error| error.to_string())?;
            runtime
                .block_on(daemon::serve(source, config))
                .map_err(|error| error.to_string())
        }
    }
}
