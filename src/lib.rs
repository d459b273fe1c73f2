//! ulvs: a user-space, LVS-style Layer-4 load balancer.
//!
//! # Layout
//! - [`config`]: the YAML config file → a typed, validated [`config::Config`]; nodeset ranges.
//! - [`table`]: the service table snapshot the data plane reads, and live per-real state.
//! - [`sched`]: the IPVS schedulers and persistence, pure functions of the snapshot.
//! - [`proxy`]: the TCP/UDP proxy data plane (worker threads).
//! - [`health`]: health checks (control plane).
//! - [`daemon`]: the director's lifecycle and control loop: start, reload, admin requests.
//! - [`admin`]: the admin API (HTTP/JSON) and its documents.
//! - [`lbadm`]: the admin CLI.
//! - [`telemetry`]: Prometheus metrics at `/metrics`.
//! - [`host`]: the host's limits: open files, the proxy's descriptor budget, local errors.
//! - `httpd`: serving the admin API and `/metrics` within limits (timeouts, connections).
//! - `log`: log lines that may repeat, throttled.
pub mod admin;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod health;
pub mod host;
mod httpd;
pub mod lbadm;
mod log;
pub mod lvs;
pub mod packet;
pub mod proxy;
pub mod sched;
mod sys;
pub mod table;
pub mod telemetry;
