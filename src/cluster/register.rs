//! `lbd register`: run on a real server, it puts the server into a cluster service's reals
//! for as long as it runs (and its check passes), under an etcd lease: when the process, its
//! host or its check dies, the lease ends within its time to live and every director drops
//! the real.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use etcd_client::{Client, PutOptions};
use tokio::signal::unix::{SignalKind, signal};

use super::{Keys, REQUEST_TIMEOUT, connect};
use crate::config::{self, MAX_WEIGHT, RealSpec};

/// What to register: `lbd register`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Registration {
    /// etcd's client URLs (comma-separated or repeated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// The cluster's prefix (its directors' `cluster.prefix`).
    #[arg(long)]
    pub prefix: String,
    /// The service's name.
    #[arg(long)]
    pub service: String,
    /// This real server's IP:PORT, as the directors reach it.
    #[arg(long)]
    pub address: SocketAddr,
    /// Its weight (0..65535).
    #[arg(long, short = 'w', default_value_t = 1)]
    pub weight: u32,
    /// How long the registration outlives this process or host (1s to 1h).
    #[arg(long, default_value = "5s", value_parser = config::parse_duration)]
    pub ttl: Duration,
    /// A shell command that must exit 0 for the real to stay registered (run every third of
    /// the TTL).
    #[arg(long)]
    pub check: Option<String>,
}

impl Registration {
    /// Checks every field; the message names the one that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.etcd.is_empty() {
            return Err("--etcd: at least one endpoint is needed".to_owned());
        }
        for url in &self.etcd {
            config::check_endpoint(url).map_err(|message| format!("--etcd: {message}"))?;
        }
        config::check_prefix(&self.prefix).map_err(|message| format!("--prefix: {message}"))?;
        if self.service.is_empty() || self.service.chars().any(char::is_control) {
            return Err(format!("--service: `{}` is not a service name", self.service));
        }
        if self.address.port() == 0 {
            return Err(format!("--address: {} needs a port", self.address));
        }
        if self.weight > MAX_WEIGHT {
            return Err(format!(
                "--weight: {} is out of range 0..{MAX_WEIGHT}",
                self.weight
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3_600)).contains(&self.ttl) {
            return Err(format!(
                "--ttl: {} is out of range: it must be 1s to 1h",
                config::format_duration(self.ttl)
            ));
        }
        Ok(())
    }
}

/// Keeps the real registered until SIGTERM or SIGINT, then removes it at once.
pub async fn run(registration: Registration) -> Result<(), String> {
    registration.validate()?;
    let mut terminate = signal(SignalKind::terminate()).map_err(|error| error.to_string())?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(|error| error.to_string())?;
    let keys = Keys::new(&registration.prefix);
    let key = keys.real(&registration.service, &registration.address.to_string());
    let mut spec = RealSpec::new(registration.address.to_string());
    spec.weight = registration.weight;
    let value = serde_yaml::to_string(&spec).map_err(|error| error.to_string())?;
    let period = (registration.ttl / 3).max(Duration::from_millis(300));
    let mut state = State::default();
    let mut clock = tokio::time::interval(period);
    clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = clock.tick() => {
                let healthy = match &registration.check {
                    Some(command) => passes(command, period).await,
                    None => true,
                };
                if let Err(why) = state.step(&registration, &key, &value, healthy).await {
                    if !state.told {
                        tracing::error!(key, "cannot keep the registration: {why}; retrying");
                        state.told = true;
                    }
                    state.reset();
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    state.withdraw().await;
    tracing::info!(key, "registration withdrawn");
    Ok(())
}

/// The connection and lease of a registration.
#[derive(Default)]
struct State {
    client: Option<Client>,
    /// The lease the key is under, while registered.
    lease: Option<i64>,
    /// Whether the current trouble has been logged.
    told: bool,
}

impl State {
    /// One period: connect if needed; register (a new lease) when healthy and not yet, renew
    /// when healthy and registered, withdraw when not healthy.
    async fn step(
        &mut self,
        registration: &Registration,
        key: &str,
        value: &str,
        healthy: bool,
    ) -> Result<(), String> {
        if self.client.is_none() {
            self.client = Some(connect(&registration.etcd).await?);
        }
        let Some(client) = self.client.as_mut() else {
            return Ok(());
        };
        match (healthy, self.lease) {
            (true, Some(lease)) => {
                let (mut keeper, mut stream) = timed(client.lease_keep_alive(lease)).await?;
                timed(keeper.keep_alive()).await?;
                match timed(stream.message()).await? {
                    Some(renewal) if renewal.ttl() > 0 => {}
                    _ => {
                        // Expired while etcd was away: register again.
                        self.lease = None;
                        return Err("the lease had expired".to_owned());
                    }
                }
            }
            (true, None) => {
                let ttl = registration.ttl.as_secs().max(1) as i64;
                let lease = timed(client.lease_grant(ttl, None)).await?.id();
                timed(client.put(key, value, Some(PutOptions::new().with_lease(lease)))).await?;
                self.lease = Some(lease);
                self.told = false;
                tracing::info!(key, ttl, "registered");
            }
            (false, Some(lease)) => {
                tracing::warn!(key, "the check failed: registration withdrawn");
                self.lease = None;
                timed(client.lease_revoke(lease)).await?;
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// Forgets the connection (and the lease, which ends on its own).
    fn reset(&mut self) {
        self.client = None;
        self.lease = None;
    }

    /// Removes the registration at once, if there is one.
    async fn withdraw(&mut self) {
        if let (Some(client), Some(lease)) = (self.client.as_mut(), self.lease.take()) {
            let _ = timed(client.lease_revoke(lease)).await;
        }
    }
}

async fn timed<T>(request: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, String> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| "etcd did not answer in time".to_owned())?
        .map_err(|error| error.to_string())
}

/// Whether `command` (run by `sh -c`) exits 0 within `limit`.
async fn passes(command: &str, limit: Duration) -> bool {
    let child = tokio::process::Command::new("sh")
        .args(["-c", command])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        tracing::warn!(command, "the check could not be started");
        return false;
    };
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => status.success(),
        _ => false,
    }
}
