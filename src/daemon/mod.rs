//! The director's lifecycle: start (workers, sockets, first table), reload (parse → validate →
//! bind new sockets → swap the table → close removed services), and drain on shutdown.
//!
//! A reload is all or nothing: if the new file is invalid or a new service address cannot be
//! bound, the running table and sockets stay exactly as they were.

mod announce;
mod cluster;
pub mod control;
pub mod demo;
pub mod plan;
pub mod preflight;
pub mod rates;
pub mod state_file;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use thiserror::Error;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{self, Config, ConfigError, ServiceKey},
    daemon::state_file::StateFileError,
    health::Monitor,
    proxy::{
        FlowTracker, Shared,
        socket::{self, BindError, Listeners},
        worker::{Command, Worker, WorkerSocket},
    },
    table::{ServiceTable, TableHandle},
};

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A file, re-read at every reload.
    File(PathBuf),
    /// Text held in memory (the demo), re-parsed at every reload.
    Text {
        /// Name used in error messages.
        origin: String,
        /// The YAML.
        text: String,
    },
}

impl ConfigSource {
    /// Reads and validates the configuration.
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            Self::File(path) => config::load(path),
            Self::Text { origin, text } => config::parse(text, origin),
        }
    }
}

/// The director could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A service address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A worker thread or runtime could not be created.
    #[error("cannot start the data-plane workers: {0}")]
    Workers(std::io::Error),
    /// The access log's writer thread could not be started.
    #[error("cannot start the access log's writer: {0}")]
    AccessLog(std::io::Error),
    /// The signal handlers (SIGHUP, SIGTERM, SIGINT) could not be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    /// `lbd demo` could not start its backends.
    #[error("cannot start the demo's backends on loopback: {0}")]
    Demo(std::io::Error),
    /// The host lacks what the configuration needs.
    #[error("the host lacks what the configuration needs:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// The admin API could not listen.
    #[error(transparent)]
    Admin(#[from] crate::admin::ServeError),
    /// The packet data plane could not start.
    #[error(transparent)]
    Plane(#[from] crate::lvs::plane::PlaneError),
    /// HA (the keepalived FIFO, the sync sockets) could not start.
    #[error(transparent)]
    Ha(#[from] crate::ha::HaError),
    /// The metrics endpoint could not listen.
    #[error("cannot serve /metrics on {address}: {source}")]
    Metrics {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A reload was refused; the running configuration is untouched.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// It could not be applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// A new table could not be applied; the running one is untouched.
#[derive(Debug, Error)]
pub enum ApplyError {
    /// The host lacks what the new configuration needs.
    #[error("the host lacks what the configuration needs:\n  {}", .0.join("\n  "))]
    Preflight(Vec<String>),
    /// A new service address could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// The packet data plane could not start.
    #[error(transparent)]
    Plane(#[from] crate::lvs::plane::PlaneError),
    /// A setting of a listening socket changed that only binding it anew can change.
    #[error("{0}")]
    Rebind(String),
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Services that are new.
    pub added: usize,
    /// Services that are gone.
    pub removed: usize,
    /// Services still there whose settings or reals changed.
    pub changed: usize,
}

/// A running director.
#[derive(Debug)]
pub struct Director {
    source: ConfigSource,
    config: Config,
    shared: Shared,
    workers: Vec<Worker>,
    health: Monitor,
    rates: rates::Estimator,
    started: Instant,
    /// The open-file limit in force (raised at start).
    open_files: u64,
    packet: Arc<crate::lvs::plane::PacketShared>,
    packets: Option<crate::lvs::plane::PacketPlane>,
    /// Whether this director draws the VIPs' traffic: always without `ha:`, else while
    /// keepalived says it is the master.
    master: bool,
    ha: Option<crate::ha::Ha>,
    /// The services' generation: +1 with every change applied here, the master's once taken
    /// from it.
    generation: u64,
    /// The master whose services were taken last.
    master_address: Option<std::net::SocketAddr>,
    /// With `cluster:`, the session with etcd and what it did with the stored table.
    cluster: Option<cluster::ClusterSide>,
    /// With `dataplane.announce`, the routes that announce the VIPs.
    announcer: Option<announce::Announcer>,
    /// Stopping: the VIPs are withdrawn and stay so.
    draining: bool,
}

impl Director {
    /// Starts the workers, binds every service, starts the health checks and publishes the
    /// first table. With a `state_file` that exists, the services come from it instead of the
    /// config file. Must run inside the control plane's tokio runtime.
    pub fn start(source: ConfigSource, mut config: Config) -> Result<Self, StartError> {
        let problems = preflight::problems(&config);
        if !problems.is_empty() {
            return Err(StartError::Preflight(problems));
        }
        if let Some(path) = &config.state_file
            && let Some(services) = state_file::load(path, &config)?
        {
            tracing::info!(
                state_file = %path.display(),
                services = services.len(),
                "services restored from the state file"
            );
            config.services = services;
        }
        let mut health = Monitor::new();
        health.sync(&config);
        let count = config.worker_count();
        let open_files = crate::host::raise_open_file_limit();
        let budget =
            crate::host::Descriptors::limit_for(open_files, plan::control_descriptors(&config, count));
        tracing::info!(
            open_files,
            proxy_descriptors = budget,
            "descriptor budget of the proxy's flows (two per TCP flow, one per UDP session)"
        );
        let table = Arc::new(TableHandle::new(ServiceTable::build(
            &config,
            None,
            health.view(),
        )));
        let access_log =
            crate::access_log::AccessLog::start(Arc::clone(&table)).map_err(StartError::AccessLog)?;
        access_log.configure(config.access_log.as_ref());
        let shared = Shared {
            table,
            flows: FlowTracker::default(),
            descriptors: crate::host::Descriptors::new(budget),
            access_log,
        };
        let bound: Vec<_> = config
            .services
            .iter()
            .filter(|service| !service.on_packet_plane())
            .map(|service| {
                socket::bind(service.key(), service.ipv6_only, count, config.ha.is_some())
                    .map(|listeners| (service.key(), listeners))
            })
            .collect::<Result<_, _>>()?;
        let packet = Arc::new(crate::lvs::plane::shared(&config, count));
        health.set_vip_paths(
            crate::health::VipPaths {
                table: Arc::clone(&shared.table),
                packet: Arc::clone(&packet),
            },
            &config,
        );
        // A director of an HA pair starts as a backup, until keepalived says otherwise.
        let master = config.ha.is_none();
        let packets = crate::lvs::plane::PacketPlane::start(
            &config,
            master,
            Arc::clone(&shared.table),
            Arc::clone(&packet),
        )?;
        let ha = match &config.ha {
            Some(settings) => {
                crate::telemetry::set_ha_master(false);
                Some(crate::ha::start(settings, &packet, &shared.table)?)
            }
            None => None,
        };
        let workers = (0..count)
            .map(|index| Worker::spawn(index, shared.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Workers)?;
        let mut director = Self {
            source,
            config,
            shared,
            workers,
            health,
            rates: rates::Estimator::default(),
            started: Instant::now(),
            open_files,
            packet,
            packets,
            master,
            ha,
            generation: 1,
            master_address: None,
            cluster: None,
            announcer: None,
            draining: false,
        };
        director.start_announcer();
        if let Some(settings) = &director.config.cluster {
            let info = director.cluster_registration(0);
            director.cluster = Some(cluster::ClusterSide::start(settings, info));
        }
        director.publish();
        director.refresh_announcements();
        for (key, listeners) in bound {
            director.hand_out(key, listeners);
        }
        director.log_started();
        Ok(director)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The shared service table.
    pub fn table(&self) -> &Arc<TableHandle> {
        &self.shared.table
    }

    /// The packet data plane's connection table and drop counters.
    pub fn packet(&self) -> &Arc<crate::lvs::plane::PacketShared> {
        &self.packet
    }

    /// Flows in progress.
    pub fn flows(&self) -> &FlowTracker {
        &self.shared.flows
    }

    /// Re-reads the configuration file and applies it without touching flows in progress; it
    /// replaces runtime changes (and the state file, if any).
    pub fn reload(&mut self) -> Result<ReloadSummary, ReloadError> {
        let loaded = self.source.load();
        self.reload_with(loaded)
    }

    /// Where the configuration comes from (to load it away from the control loop).
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// Applies a configuration loaded from [`source`](Self::source) (or the error loading
    /// it), as a reload, and counts the reload.
    pub fn reload_with(&mut self, loaded: Result<Config, ConfigError>) -> Result<ReloadSummary, ReloadError> {
        let result = self.reload_inner(loaded);
        crate::telemetry::count_reload(result.is_ok());
        result
    }

    fn reload_inner(&mut self, loaded: Result<Config, ConfigError>) -> Result<ReloadSummary, ReloadError> {
        let mut config = loaded?;
        if config.ha != self.config.ha {
            tracing::warn!("a change of `ha` takes effect at the next start");
            config.ha.clone_from(&self.config.ha);
        }
        let announce = |config: &Config| {
            config
                .dataplane
                .as_ref()
                .and_then(|dataplane| dataplane.announce.clone())
        };
        if announce(&config) != announce(&self.config) {
            tracing::warn!("a change of `dataplane.announce` takes effect at the next start");
            if let Some(dataplane) = config.dataplane.as_mut() {
                dataplane.announce = announce(&self.config);
            }
        }
        if config.cluster != self.config.cluster {
            tracing::warn!("a change of `cluster` takes effect at the next start");
            config.cluster.clone_from(&self.config.cluster);
        }
        if config.cluster.is_some() {
            // The table is the cluster's, not the file's (which has none).
            config.services.clone_from(&self.config.services);
        }
        if config.worker_count() != self.workers.len() {
            tracing::warn!(
                running = self.workers.len(),
                configured = config.worker_count(),
                "a change of `workers` takes effect at the next start"
            );
        }
        let summary = self.apply(config)?;
        // Reopened at every reload, so that logrotate's `postrotate lbadm reload` works.
        self.shared.access_log.configure(self.config.access_log.as_ref());
        Ok(summary)
    }

    /// Applies a whole new configuration (already validated): binds the new services, writes
    /// the state file, then swaps the table and closes the services that are gone. If binding
    /// or writing fails, nothing changed.
    fn apply(&mut self, config: Config) -> Result<ReloadSummary, ApplyError> {
        let links = config
            .dataplane
            .as_ref()
            .map_or_else(Default::default, |dataplane| {
                crate::lvs::setup::links(&dataplane.tun, dataplane.server_interface.as_deref())
            });
        let plan = plan::plan(&self.config, &config, self.workers.len(), &links, self.master);
        // A listening socket's IPV6_V6ONLY is set when it is bound.
        if let Some(service) = config.services.iter().find(|service| {
            self.config
                .services
                .iter()
                .any(|old| old.key() == service.key() && old.ipv6_only != service.ipv6_only)
        }) {
            return Err(ApplyError::Rebind(format!(
                "service `{}`: ipv6_only changes when the service is deleted and added again \
                 (its listening socket is bound anew), or at the next start",
                service.name
            )));
        }
        // Bind every new address before changing anything, so a failure leaves all as it was.
        let bound: Vec<_> = plan
            .bind
            .iter()
            .map(|&key| {
                let ipv6_only = config
                    .services
                    .iter()
                    .find(|service| service.key() == key)
                    .is_none_or(|service| service.ipv6_only);
                socket::bind(key, ipv6_only, self.workers.len(), config.ha.is_some())
                    .map(|listeners| (key, listeners))
            })
            .collect::<Result<_, _>>()?;
        let problems = preflight::dataplane_problems(&config);
        if !problems.is_empty() {
            return Err(ApplyError::Preflight(problems));
        }
        let started_plane = match &self.packets {
            None if plan.packet_plane => crate::lvs::plane::PacketPlane::start(
                &config,
                self.master,
                Arc::clone(&self.shared.table),
                Arc::clone(&self.packet),
            )?,
            _ => None,
        };
        // The host setup moves beside the old one; anything that fails from here on puts it
        // back, so a refused change leaves the host, the table and the state file as they were.
        let pending = match &mut self.packets {
            Some(plane) => Some(plane.prepare(plan.setup.clone(), plan.vips.clone())?),
            None => None,
        };
        if let Some(path) = &config.state_file
            && let Err(error) = state_file::store(path, &config.services)
        {
            if let (Some(plane), Some(pending)) = (&mut self.packets, pending) {
                plane.revert(pending);
            }
            return Err(error.into());
        }
        self.health.sync(&config);
        self.shared
            .descriptors
            .set_limit(crate::host::Descriptors::limit_for(
                self.open_files,
                plan.control_descriptors,
            ));
        let previous = self.shared.table.snapshot();
        self.shared
            .table
            .store(ServiceTable::build(&config, Some(&previous), self.health.view()));
        for (key, listeners) in bound {
            self.hand_out(key, listeners);
        }
        if let (Some(plane), Some(pending)) = (&mut self.packets, pending) {
            plane.commit(pending);
        }
        if started_plane.is_some() {
            self.packets = started_plane;
            self.start_announcer();
        }
        self.packet.flows.set_sloppy_tcp(
            config
                .dataplane
                .as_ref()
                .is_some_and(|dataplane| dataplane.sloppy_tcp),
        );
        for &key in &plan.close {
            for worker in &self.workers {
                worker.send(Command::Close(key));
            }
        }
        self.config = config;
        self.generation += 1;
        self.publish();
        self.refresh_announcements();
        Ok(plan.summary)
    }

    /// Offers the services and their generation to the backups (HA channel).
    fn publish(&self) {
        if let Some(ha) = &self.ha {
            ha.published.send_replace(crate::ha::Published {
                generation: self.generation,
                services: crate::config::services_yaml(&self.config.services).into(),
            });
        }
    }

    /// Applies the services the master sent, as a reload does (all or nothing, the state file
    /// written), and takes the master's generation. A master takes nothing.
    fn apply_received(&mut self, received: crate::ha::Received) {
        if self.master
            || self.cluster.is_some()
            || received.generation == self.generation && Some(received.from) == self.master_address
        {
            return;
        }
        let origin = format!("the master's services ({})", received.from);
        let services = match crate::config::parse_services(&received.services, &origin, &self.config) {
            Ok(services) => services,
            Err(error) => {
                tracing::error!("services from the master refused: {error}");
                return;
            }
        };
        let config = Config {
            services,
            ..self.config.clone_without_services()
        };
        match self.apply(config) {
            Ok(summary) => {
                self.generation = received.generation;
                self.master_address = Some(received.from);
                self.publish();
                tracing::info!(
                    master = %received.from,
                    generation = received.generation,
                    added = summary.added,
                    removed = summary.removed,
                    changed = summary.changed,
                    "services taken from the master"
                );
            }
            Err(error) => {
                tracing::error!(master = %received.from, "services from the master could not be applied: {error}")
            }
        }
    }

    /// Why an admin change is refused before it is looked at: on the backup of an HA pair
    /// that takes its services from the master, changes belong on the master (unless forced).
    pub(crate) fn refusal(&self, force: bool) -> Option<control::ControlError> {
        let syncs_config = self
            .config
            .ha
            .as_ref()
            .and_then(|ha| ha.sync.as_ref())
            .is_some_and(|sync| !sync.peers.is_empty());
        // In a cluster every director takes changes: they go to etcd and come back to all.
        let syncs_config = syncs_config && self.cluster.is_none();
        (syncs_config && !self.master && !force).then(|| control::ControlError::Backup {
            master: self.master_address.map(|address| address.ip().to_string()),
        })
    }

    /// Takes the role keepalived gave: a master draws the VIPs' traffic (their routes into the
    /// TUN device and proxy-ARP entries, announced with gratuitous ARP) and sends its flows; a
    /// backup removes those and takes the master's flows.
    fn set_role(&mut self, role: crate::ha::Role) {
        let master = role == crate::ha::Role::Master;
        if master == self.master {
            return;
        }
        let links = self
            .config
            .dataplane
            .as_ref()
            .map_or_else(Default::default, |dataplane| {
                crate::lvs::setup::links(&dataplane.tun, dataplane.server_interface.as_deref())
            });
        let plan = plan::plan(&self.config, &self.config, self.workers.len(), &links, master);
        if let Some(plane) = &mut self.packets {
            match plane.prepare(plan.setup, plan.vips.clone()) {
                Ok(pending) => plane.commit(pending),
                Err(error) => tracing::error!(
                    role = role.name(),
                    "the host setup of the new role failed: {error}"
                ),
            }
        }
        self.master = master;
        self.packet.flows.sync.set_master(master);
        crate::telemetry::count_ha_transition(master);
        tracing::info!(role = role.name(), "HA role taken");
        self.register_in_cluster();
        self.refresh_announcements();
        if master && self.packets.is_some() {
            let vips = plan.vips.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                for delay in crate::lvs::announce::SCHEDULE {
                    tokio::time::sleep_until(started + delay).await;
                    let (vips, interfaces) = (vips.clone(), links.clients.clone());
                    let sent = tokio::task::spawn_blocking(move || {
                        crate::lvs::announce::announce(&vips, &interfaces)
                    })
                    .await
                    .unwrap_or(0);
                    tracing::debug!(sent, "VIPs announced (gratuitous ARP, unsolicited NA)");
                }
            });
        }
    }

    /// Publishes a new snapshot with the health checks' current verdicts. Services whose
    /// reals' verdicts did not change are carried over as they are.
    pub fn publish_health(&self) {
        let previous = self.shared.table.snapshot();
        self.shared.table.store(ServiceTable::build(
            &self.config,
            Some(&previous),
            self.health.view(),
        ));
        self.shut_down_failed(&previous, &self.shared.table.snapshot());
        self.refresh_announcements();
    }

    /// Starts announcing (`dataplane.announce`) once the packet plane runs: at start, or when
    /// the first nat, dr or tun service arrives.
    fn start_announcer(&mut self) {
        if self.announcer.is_some() || self.packets.is_none() {
            return;
        }
        if let Some(dataplane) = &self.config.dataplane
            && let Some(announce) = &dataplane.announce
        {
            self.announcer = Some(announce::Announcer::start(announce, &dataplane.tun));
        }
    }

    /// Tells the announcer which VIPs to announce now: those with a real that can take
    /// flows, while this director draws the VIPs' traffic (the master of an HA pair) and is
    /// not stopping.
    fn refresh_announcements(&self) {
        if let Some(announcer) = &self.announcer {
            let ready = self.master && !self.draining && self.packets.is_some();
            let table = self.shared.table.snapshot();
            announcer.want(crate::lvs::inject::wanted(
                &table,
                ready,
                crate::clock::Millis::now(),
            ));
        }
    }

    /// Stopping: withdraws every announced VIP first, then goes on forwarding for
    /// `withdraw_wait`, so that the routers move the flows before this director goes.
    async fn withdraw(&mut self) {
        self.draining = true;
        let Some(announcer) = self.announcer.as_mut() else {
            return;
        };
        if announcer.withdraw_all(Duration::from_secs(5)).await {
            tracing::info!(
                "stopping: VIPs withdrawn; forwarding for another {:?} while the routers move the flows",
                announcer.withdraw_wait
            );
        } else {
            tracing::warn!("stopping: the VIPs' routes could not all be withdrawn within 5 s");
        }
        tokio::time::sleep(announcer.withdraw_wait).await;
    }

    /// Notified when a health verdict changes; then call
    /// [`publish_health`](Self::publish_health).
    pub fn health_changes(&self) -> Arc<tokio::sync::Notify> {
        self.health.changes()
    }

    /// Stops taking new flows; flows in progress go on.
    pub fn drain(&self) {
        for worker in &self.workers {
            worker.send(Command::Drain);
        }
    }

    fn hand_out(&self, key: ServiceKey, listeners: Listeners) {
        let sockets: Vec<WorkerSocket> = match listeners {
            Listeners::Tcp(listeners) => listeners.into_iter().map(WorkerSocket::Tcp).collect(),
            Listeners::Udp(sockets) => sockets.into_iter().map(WorkerSocket::Udp).collect(),
        };
        for (worker, socket) in self.workers.iter().zip(sockets) {
            worker.send(Command::Listen(key, socket));
        }
    }

    fn log_started(&self) {
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            workers = self.workers.len(),
            "lbd started"
        );
        for service in &self.config.services {
            let checks = match &service.health_check {
                Some(check) if check.kind != config::HealthCheckKind::None => format!(
                    "{} checks every {}",
                    check.kind.name(),
                    config::format_duration(check.interval)
                ),
                _ => "no health checks".to_owned(),
            };
            tracing::info!(
                "service {}: {} {} scheduler {}, {} real(s), forward {}, {checks}",
                service.name,
                service.protocol,
                service.listen,
                service.scheduler,
                service.reals.len(),
                service.forward.name()
            );
        }
        if self.config.admin.is_none() {
            tracing::info!("no `admin` section: the admin API is not served");
        }
        if self.config.metrics.is_none() {
            tracing::info!("no `metrics` section: /metrics is not served");
        }
    }
}

/// Starts a director and serves until SIGTERM or SIGINT, reloading on SIGHUP; then drains for
/// up to `drain_timeout`. Must run inside a tokio runtime (the control plane's).
pub async fn serve(source: ConfigSource, config: Config) -> Result<(), StartError> {
    // Install the handlers before binding, so a signal that arrives early is not fatal.
    let mut hangup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let admin_config = config.admin.clone();
    let admin_config_metrics = config.metrics.as_ref().map(|metrics| metrics.listen);
    crate::telemetry::recorder();
    let mut director = Director::start(source, config)?;
    let mut admin = match &admin_config {
        Some(settings) => {
            let handle = crate::admin::serve(settings).await?;
            tracing::info!(address = %handle.address, "admin API listening");
            Some(handle)
        }
        None => None,
    };
    let _metrics = match &admin_config_metrics {
        Some(address) => {
            let server =
                crate::telemetry::serve(*address, director.shared.clone(), Arc::clone(director.packet()))
                    .await
                    .map_err(|source| StartError::Metrics {
                        address: *address,
                        source,
                    })?;
            tracing::info!(address = %server.address, "metrics served at /metrics");
            Some(server)
        }
        None => None,
    };
    let health_changes = director.health_changes();
    let mut rate_clock = tokio::time::interval(rates::PERIOD);
    rate_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sample = Instant::now();
    // While a real is in its slow start, the table is rebuilt every step so its weight grows.
    let mut ramp_clock = tokio::time::interval(crate::table::RAMP_STEP);
    ramp_clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // Reloads read and parse the file on a blocking thread, so a large file never holds up
    // the control loop (and with it /metrics, signals and admin requests).
    let mut reloads = Reloads::default();
    loop {
        tokio::select! {
            () = health_changes.notified() => director.publish_health(),
            _ = ramp_clock.tick(), if director.shared.table.snapshot().ramping() => director.publish_health(),
            event = next_ha_event(&mut director.ha) => match event {
                HaEvent::Role(role) => director.set_role(role),
                HaEvent::Received(received) => director.apply_received(received),
            },
            input = cluster::ClusterSide::next(&mut director.cluster) => director.on_cluster(input),
            Some((request, reply)) = next_request(&mut admin) => match request {
                control::Request::Change { change: control::Change::Reload, client, force } => {
                    match director.refusal(force) {
                        Some(refused) => {
                            let _ = reply.send(Err(refused));
                        }
                        None => reloads.wanted(director.source(), Some((reply, client))),
                    }
                }
                request => director.answer(request, reply),
            },
            _ = rate_clock.tick() => {
                director.sample_rates(last_sample.elapsed());
                last_sample = Instant::now();
                director.cluster_tick();
                // A real's passive back-off ends with time, not with an event.
                director.refresh_announcements();
            }
            _ = hangup.recv() => reloads.wanted(director.source(), None),
            loaded = reloads.loaded(), if reloads.loading() => {
                let result = director.reload_with(loaded);
                match &result {
                    Ok(summary) => tracing::info!(
                        added = summary.added, removed = summary.removed, changed = summary.changed,
                        "configuration reloaded"
                    ),
                    Err(error) => tracing::error!("reload refused, running configuration kept: {error}"),
                }
                reloads.answer(&mut director, result);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    director.withdraw().await;
    drain(&director).await;
    Ok(())
}

/// An admin client waiting for a reload's outcome.
type ReloadWaiter = (
    tokio::sync::oneshot::Sender<Result<control::Answer, control::ControlError>>,
    String,
);

/// Reloads asked for (SIGHUP, `lbadm reload`): at most one load of the file runs at a time, on
/// a blocking thread; one asked for meanwhile runs after it, so the last edit is always read.
#[derive(Default)]
struct Reloads {
    running: Option<tokio::task::JoinHandle<Result<Config, ConfigError>>>,
    again: bool,
    waiting: Vec<ReloadWaiter>,
    next: Vec<ReloadWaiter>,
}

impl Reloads {
    /// A reload is asked for, by `waiter` if an admin client waits for its outcome.
    fn wanted(&mut self, source: &ConfigSource, waiter: Option<ReloadWaiter>) {
        if self.running.is_some() {
            self.again = true;
            self.next.extend(waiter);
            return;
        }
        self.waiting.extend(waiter);
        let source = source.clone();
        self.running = Some(tokio::task::spawn_blocking(move || source.load()));
    }

    fn loading(&self) -> bool {
        self.running.is_some()
    }

    /// The loaded configuration (or why it could not be loaded), once the load is done.
    async fn loaded(&mut self) -> Result<Config, ConfigError> {
        let Some(running) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let loaded = running.await.unwrap_or_else(|error| {
            Err(ConfigError::Invalid {
                origin: "the config file".to_owned(),
                line: None,
                column: None,
                message: format!("loading it failed: {error}"),
            })
        });
        self.running = None;
        loaded
    }

    /// Answers the admin clients that waited for this reload, and starts the next one if it
    /// was asked for meanwhile.
    fn answer(&mut self, director: &mut Director, result: Result<ReloadSummary, ReloadError>) {
        // Every waiter hears the outcome; the first gets the error itself, others (rare, two
        // `lbadm reload` at once) its message.
        let refused = result.as_ref().err().map(ToString::to_string);
        let mut result = Some(result.map(drop).map_err(control::ControlError::from));
        for (reply, client) in self.waiting.drain(..) {
            let outcome = result.take().unwrap_or_else(|| match &refused {
                Some(message) => Err(control::ControlError::Invalid(message.clone())),
                None => Ok(()),
            });
            let _ = reply.send(director.reloaded(outcome, &client));
        }
        if std::mem::take(&mut self.again) {
            let next = std::mem::take(&mut self.next);
            self.wanted(&director.source, None);
            self.waiting.extend(next);
        }
    }
}

/// The next admin request, or never when the admin API is not served.
async fn next_request(admin: &mut Option<crate::admin::AdminHandle>) -> Option<crate::admin::Envelope> {
    match admin {
        Some(handle) => handle.requests.recv().await,
        None => std::future::pending().await,
    }
}

/// What the HA side asks of the control loop.
enum HaEvent {
    /// keepalived gave a role.
    Role(crate::ha::Role),
    /// The master sent its services.
    Received(crate::ha::Received),
}

/// The next HA event (never, without `ha:`).
async fn next_ha_event(ha: &mut Option<crate::ha::Ha>) -> HaEvent {
    let Some(ha) = ha else {
        return std::future::pending().await;
    };
    let crate::ha::Ha { roles, received, .. } = ha;
    tokio::select! {
        Ok(()) = roles.changed() => HaEvent::Role(*roles.borrow_and_update()),
        Some(services) = received.recv() => HaEvent::Received(services),
        else => std::future::pending().await,
    }
}

/// Stops accepting and waits for flows in progress, at most `drain_timeout`.
async fn drain(director: &Director) {
    let timeout = director.config().drain_timeout;
    let flows = director.flows();
    tracing::info!(
        flows = flows.count(),
        "stopping: no new flows; waiting up to {timeout:?} for flows in progress"
    );
    director.drain();
    let started = Instant::now();
    while flows.count() > 0 && started.elapsed() < timeout {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match flows.count() {
        0 => tracing::info!("all flows finished; exiting"),
        left => tracing::warn!(flows = left, "drain timeout reached; closing the flows left"),
    }
}
