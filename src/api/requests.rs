//! What the admin API asks of the director and what the director answers: requests, changes,
//! answers and refusals, shared by the admin server (which makes them) and the control loop
//! (which answers them).

use std::net::SocketAddr;

use thiserror::Error;

use crate::config::{RealEdit, RealList, ServiceConfig, ServiceEdit, ServiceList};

/// A question or a change from the admin API.
#[derive(Debug)]
pub enum Request {
    /// Version, uptime, counts.
    Status,
    /// Every service.
    Services,
    /// One service, by name or `tcp:VIP:PORT` / `udp:VIP:PORT`.
    Service(String),
    /// The services as config YAML (`lbadm save`).
    Save,
    /// Flows in progress.
    Connections,
    /// The directors registered in the cluster.
    Directors,
    /// A change, and who asked for it (for the log).
    Change {
        /// What to change.
        change: Change,
        /// The admin client's address.
        client: String,
        /// `lbadm --force`: a backup of an HA pair takes it anyway.
        force: bool,
    },
}

/// A change to the services table, its body read and typed by the admin server. Bodies are
/// YAML or JSON in the config file's format.
#[derive(Debug)]
pub enum Change {
    /// Add a service.
    AddService(Box<ServiceConfig>),
    /// Change some keys of a service.
    EditService {
        /// Which.
        service: String,
        /// The keys to change.
        edit: Box<ServiceEdit>,
    },
    /// Remove a service; its flows finish on their own.
    DeleteService(String),
    /// Replace every service (`restore`, and `clear` with an empty list).
    ReplaceServices(ServiceList),
    /// Add reals (`address` may be a range).
    AddReals {
        /// To which service.
        service: String,
        /// The reals.
        reals: RealList,
    },
    /// Change some keys of reals.
    EditReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
        /// The keys to change.
        edit: RealEdit,
    },
    /// Drain reals: no new flows; flows in progress go on.
    DrainReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
    },
    /// Put reals in maintenance (`true`: no new flows, no health checks) or take them out.
    MaintainReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
        /// In maintenance, or ready.
        on: bool,
    },
    /// Close flows in progress: a service's, or only those of some of its reals. Not a
    /// change of the table: every director kills its own.
    KillFlows {
        /// Whose.
        service: String,
        /// Which reals: an address or a range; `None`: every flow of the service.
        address: Option<String>,
    },
    /// Remove reals; their flows finish on their own.
    DeleteReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
    },
    /// Zero the counters of one service, or of all.
    Zero(Option<String>),
    /// Re-read the config file.
    Reload,
}

/// What the director answers.
#[derive(Debug)]
pub enum Answer {
    /// A JSON document, serialized.
    Json(Vec<u8>),
    /// YAML text (`save`).
    Yaml(String),
}

/// A refused request; nothing changed. [`status`](Self::status) is its HTTP status.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The body is not the document the request takes (400).
    #[error("the body is refused: {0}")]
    Body(String),
    /// No service of that name or `tcp:VIP:PORT` (404).
    #[error("no service `{0}`")]
    NoService(String),
    /// No such real in the service (404).
    #[error("no real {real} in service `{service}`; nothing was changed")]
    NoReal {
        /// The service's name.
        service: String,
        /// The real asked for.
        real: SocketAddr,
    },
    /// A real to add is in the service already (409).
    #[error("real {real} is already in service `{service}`; nothing was added")]
    RealExists {
        /// The service's name.
        service: String,
        /// The real.
        real: SocketAddr,
    },
    /// The body names a key that identifies what it edits (400).
    #[error("`{0}` cannot be edited (delete and add instead)")]
    FixedKey(&'static str),
    /// The change would make a configuration that breaks the config file's rules, or the
    /// config file does not load (400). The message names the key and value.
    #[error("{0}")]
    Invalid(String),
    /// This director is the backup of an HA pair: changes belong on the master (409).
    #[error(
        "this director is the backup of an HA pair: make changes on the master{}, which passes \
         them on (lbadm --force changes this director alone)",
        master.as_ref().map(|master| format!(" ({master})")).unwrap_or_default()
    )]
    Backup {
        /// The master it takes its services from, when known.
        master: Option<String>,
    },
    /// A director of a cluster: another change to what this one touches came first (409).
    #[error("{0}")]
    Conflict(String),
    /// A director of a cluster: the cluster store cannot be reached, or the change was
    /// written but not applied here in time (503).
    #[error("{0}")]
    Store(String),
    /// The change could not be applied to the host: an address in use, the state file, the
    /// host setup (500). Nothing of it stays applied.
    #[error("{0}")]
    Failed(String),
}

impl ControlError {
    /// The HTTP status that answers this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoService(_) | Self::NoReal { .. } => 404,
            Self::RealExists { .. } | Self::Backup { .. } | Self::Conflict(_) => 409,
            Self::Store(_) => 503,
            Self::Body(_) | Self::FixedKey(_) | Self::Invalid(_) => 400,
            Self::Failed(_) => 500,
        }
    }
}

/// What the change is, for the log: its lbadm command and what it names.
impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AddService(_) => f.write_str("add-service"),
            Self::EditService { service, .. } => write!(f, "edit-service {service}"),
            Self::DeleteService(service) => write!(f, "del-service {service}"),
            Self::ReplaceServices(_) => f.write_str("restore (every service replaced)"),
            Self::AddReals { service, .. } => write!(f, "add-real to {service}"),
            Self::EditReals { service, address, .. } => write!(f, "edit-real {address} of {service}"),
            Self::DrainReals { service, address } => write!(f, "drain-real {address} of {service}"),
            Self::DeleteReals { service, address } => write!(f, "del-real {address} of {service}"),
            Self::MaintainReals {
                service,
                address,
                on: true,
            } => write!(f, "maint-real {address} of {service}"),
            Self::MaintainReals { service, address, .. } => write!(f, "ready-real {address} of {service}"),
            Self::KillFlows {
                service,
                address: Some(address),
            } => write!(f, "kill-flows of {address} of {service}"),
            Self::KillFlows { service, .. } => write!(f, "kill-flows of {service}"),
            Self::Zero(Some(service)) => write!(f, "zero {service}"),
            Self::Zero(None) => f.write_str("zero (every service)"),
            Self::Reload => f.write_str("reload"),
        }
    }
}
