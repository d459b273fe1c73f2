//! `lbadm`, the admin CLI: ipvsadm's commands and flags, spoken to `lbd`'s admin API.
//!
//! Exit status: 0 done, 1 the director refused (nothing changed), 2 bad usage (clap's own, or
//! a file that cannot be read), 3 the director cannot be reached.

mod bodies;
mod cli;
mod client;
mod fan_out;
pub mod render;

use std::process::ExitCode;

use hyper::Method;
use serde_json::Value;

use self::{
    bodies::{
        new_real, new_service, no_services, parse, pretty, read_input, real_changes, real_path,
        service_changes,
    },
    cli::{Command, ListArgs, RealTarget},
};
pub use self::{
    cli::Cli,
    client::{Client, ClientError, Endpoint},
};
use crate::api::{self, routes};

/// A failure, with the exit status it maps to.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) status: u8,
    pub(super) message: String,
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

pub(super) fn usage(message: String) -> Failure {
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
    if let Some(nodeset) = cli.directors.clone() {
        return match runtime.block_on(fan_out(cli, &nodeset)) {
            Ok((output, status)) => {
                let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), output.as_bytes());
                ExitCode::from(status)
            }
            Err(failure) => {
                eprintln!("lbadm: {}", failure.message);
                ExitCode::from(failure.status)
            }
        };
    }
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

/// `lbadm -w NODESET …`: the command on every director named, in parallel; the answers
/// gathered, and the exit status.
async fn fan_out(cli: Cli, nodeset: &str) -> Result<(String, u8), Failure> {
    let endpoints = fan_out::endpoints(nodeset)?;
    if matches!(&cli.command, Command::Restore { file } if file == "-") {
        return Err(usage(
            "-w: give `restore` a file (standard input can be read once only)".to_owned(),
        ));
    }
    let mut running = tokio::task::JoinSet::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let mut one = cli.clone();
        one.admin.clone_from(endpoint);
        one.directors = None;
        running.spawn(async move { (index, execute(one).await) });
    }
    let mut answers: Vec<(String, fan_out::Outcome)> = endpoints
        .iter()
        .map(|endpoint| (endpoint.clone(), Err((3, "no answer".to_owned()))))
        .collect();
    while let Some(done) = running.join_next().await {
        if let Ok((index, outcome)) = done {
            answers[index].1 = outcome.map_err(|failure| (failure.status, failure.message));
        }
    }
    Ok(fan_out::gather(&answers))
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
    let client = Client::new(Endpoint::parse(&cli.admin), token).forced(cli.force);
    let json_out = cli.json;
    let changed =
        |bytes: hyper::body::Bytes| -> String { if json_out { pretty(&bytes) } else { String::new() } };
    match cli.command {
        Command::List(args) => list(&client, args, json_out).await,
        Command::AddService(args) => {
            let body = new_service(&args)?;
            Ok(changed(
                client.call(Method::POST, routes::SERVICES, Some(body)).await?,
            ))
        }
        Command::EditService(args) => {
            let path = args.target.required(routes::SERVICE)?;
            let body = service_changes(&args);
            Ok(changed(client.call(Method::PATCH, &path, Some(body)).await?))
        }
        Command::DelService(target) => Ok(changed(
            client
                .call(Method::DELETE, &target.required(routes::SERVICE)?, None)
                .await?,
        )),
        Command::AddReal(args) => {
            let path = args.real.target.required(routes::REALS)?;
            let body = new_real(&args);
            Ok(changed(client.call(Method::POST, &path, Some(body)).await?))
        }
        Command::EditReal(args) => {
            let body = real_changes(&args);
            let path = real_path(&args.real, routes::REAL)?;
            Ok(changed(client.call(Method::PATCH, &path, Some(body)).await?))
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
        Command::MaintReal(real) => {
            let path = real_path(&real, routes::MAINT)?;
            Ok(changed(client.call(Method::POST, &path, None).await?))
        }
        Command::ReadyReal(real) => {
            let path = real_path(&real, routes::READY)?;
            Ok(changed(client.call(Method::POST, &path, None).await?))
        }
        Command::KillFlows(args) => {
            let path = match &args.real {
                Some(real) => real_path(
                    &RealTarget {
                        target: args.target.clone(),
                        real: real.clone(),
                    },
                    routes::KILL_REAL_FLOWS,
                )?,
                None => args.target.required(routes::KILL_SERVICE_FLOWS)?,
            };
            let answer = client.call(Method::POST, &path, None).await?;
            if json_out {
                return Ok(pretty(&answer));
            }
            let killed: api::Killed = serde_json::from_slice(&answer).map_err(|error| Failure {
                status: 3,
                message: format!("the director's answer is not a kill-flows result: {error}"),
            })?;
            Ok(format!("{} flow(s) closed\n", killed.flows))
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
                .call(Method::PUT, routes::SERVICES, Some(no_services()))
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
        Command::Status { ready } => {
            let bytes = client.call(Method::GET, routes::STATUS, None).await?;
            let status: api::Status = parse(&bytes)?;
            if ready && let Some(ha) = status.ha.as_ref().filter(|ha| !ha.ready) {
                return Err(Failure {
                    status: 1,
                    message: format!(
                        "not ready to take over: this {} has not yet received the master's table",
                        ha.role
                    ),
                });
            }
            if json_out {
                return Ok(pretty(&bytes));
            }
            let mut text = format!(
                "lbd {} up {}s\nconfig file: {}\nstate file: {}\nworkers: {}\nservices: {}  reals: {}  flows: {}\n",
                status.version,
                status.uptime_seconds,
                status.config_file.as_deref().unwrap_or("(none)"),
                status.state_file.as_deref().unwrap_or("(none)"),
                status.workers,
                status.services,
                status.reals,
                status.flows
            );
            if let Some(ha) = &status.ha {
                let peers = if ha.peers.is_empty() {
                    "multicast".to_owned()
                } else {
                    ha.peers.join(", ")
                };
                let last = ha
                    .last_sync_seconds
                    .map_or_else(|| "never".to_owned(), |seconds| format!("{seconds}s ago"));
                let master = ha.master.as_deref().unwrap_or("-");
                let ready = if ha.ready { "ready" } else { "not ready" };
                text.push_str(&format!(
                    "ha: {} of {} ({ready})  generation: {}  master: {master}  sync peers: {peers}  sent: {}  received: {}  last sync: {last}  synced flows: {}\n",
                    ha.role, ha.instance, ha.generation, ha.messages_sent, ha.messages_received, ha.synced_flows
                ));
            }
            if let Some(cluster) = &status.cluster {
                let store = if cluster.connected {
                    "connected"
                } else {
                    "UNREACHABLE"
                };
                text.push_str(&format!(
                    "cluster: node {} of {}  etcd: {store}  revision: {} (table {})  directors: {}  registered reals: {}\n",
                    cluster.node,
                    cluster.prefix,
                    cluster.revision,
                    cluster.table_revision,
                    cluster.directors,
                    cluster.registered_reals
                ));
                if let Some(why) = &cluster.unreachable {
                    text.push_str(&format!("  etcd ({}): {why}\n", cluster.etcd.join(", ")));
                }
                if let Some(why) = &cluster.refused {
                    text.push_str(&format!("  stored table refused: {why}\n"));
                }
            }
            Ok(text)
        }
        Command::Directors => {
            let bytes = client.call(Method::GET, routes::DIRECTORS, None).await?;
            if json_out {
                return Ok(pretty(&bytes));
            }
            let directors: Vec<api::Director> = parse(&bytes)?;
            Ok(render::directors(&directors))
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
