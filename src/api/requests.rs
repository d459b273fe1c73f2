//! What the admin API asks of the director and what the director answers: requests, changes,
//! answers and refusals, shared by the admin server (which makes them) and the control loop
//! (which answers them).

use serde_yaml::Value;
use thiserror::Error;

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
    /// A change, and who asked for it (for the log).
    Change {
        /// What to change.
        change: Change,
        /// The admin client's address.
        client: String,
    },
}

/// A change to the services table. Bodies are YAML or JSON in the config file's format.
#[derive(Debug)]
pub enum Change {
    /// Add a service.
    AddService(Value),
    /// Change some keys of a service (`null` removes an optional key).
    EditService {
        /// Which.
        service: String,
        /// The keys to change.
        patch: Value,
    },
    /// Remove a service; its flows finish on their own.
    DeleteService(String),
    /// Replace every service (`restore`, and `clear` with an empty list).
    ReplaceServices(Value),
    /// Add reals (one mapping or a list; `address` may be a range).
    AddReals {
        /// To which service.
        service: String,
        /// The reals.
        reals: Value,
    },
    /// Change some keys of reals.
    EditReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
        /// The keys to change.
        patch: Value,
    },
    /// Drain reals: no new flows (weight 0); flows in progress go on.
    DrainReals {
        /// Whose.
        service: String,
        /// Which: an address or a range.
        address: String,
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

/// A refused request; nothing changed. Each kind is an HTTP status: 404, 400, 500.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The service or real named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request is invalid: a bad body, a bad value, a config file that does not load
    /// (400).
    #[error("{0}")]
    Invalid(String),
    /// The change could not be applied: an address in use, the state file, the host setup
    /// (500).
    #[error("{0}")]
    Failed(String),
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
            Self::Zero(Some(service)) => write!(f, "zero {service}"),
            Self::Zero(None) => f.write_str("zero (every service)"),
            Self::Reload => f.write_str("reload"),
        }
    }
}
