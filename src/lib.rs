//! ulvs: a user-space, LVS-style Layer-4 load balancer.
//!
//! # Layout
//! - [`config`]: the YAML config file → a typed, validated [`config::Config`]; nodeset ranges.
//! - `live`: what is live about a real (snapshot view, counters, health status): the leaf the
//!   schedulers and the table share.
//! - [`table`]: the service table snapshot the data plane reads.
//! - [`sched`]: the IPVS schedulers and persistence, pure functions of the snapshot.
//! - `proxy`: the TCP/UDP proxy data plane (worker threads).
//! - [`lvs`]: the packet data plane (nat, dr, tun) over a TUN device: host setup, workers, the
//!   connection table, eBPF steering.
//! - [`packet`]: IPv4 parsing and in-place rewrites with incremental checksums (pure).
//! - [`proxy_header`]: the PROXY protocol header, v1 and v2: written to reals, read from a
//!   balancer in front (pure).
//! - `access_log`: one line per finished proxied flow, written off the data path.
//! - `health`: health checks (control plane).
//! - [`daemon`]: the director's lifecycle and control loop: start, reload, admin requests.
//! - [`ha`]: active/backup: the role keepalived gives, the flow sync sockets.
//! - [`cluster`]: many directors sharing their table through etcd; reals that register
//!   themselves (`lbd register`).
//! - [`api`]: the admin API's routes, requests, answers and JSON documents, shared by the
//!   admin server, the control loop and `lbadm`.
//! - `admin`: the admin API's HTTP server.
//! - [`lbadm`]: the admin CLI.
//! - `telemetry`: Prometheus metrics at `/metrics`.
//! - `host`: the host's limits: open files, the proxy's descriptor budget, local errors.
//! - `httpd`: serving the admin API and `/metrics` within limits (timeouts, connections).
//! - `log`: log lines that may repeat, throttled.
//! - [`clock`]: a coarse monotonic clock in milliseconds, and overflow-free deadlines.
//! - `sys`: the only module with `unsafe` code and raw syscalls (eBPF, TUN steering, sockets).
//!
//! Modules in code spans are internal to the crate; the ones in links are what the binaries,
//! the benchmarks and the fuzz targets use.
//!
//! Data and control flow one way: config → live → sched → table → data planes; the control
//! plane (daemon, health, admin) builds new snapshots and never the other way round.
//! `.ci/module-cycles` checks in CI that no module uses one that uses it back.
mod access_log;
mod admin;
pub mod api;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod ha;
mod health;
mod host;
mod httpd;
pub mod lbadm;
mod live;
mod log;
pub mod lvs;
pub mod packet;
mod proxy;
pub mod proxy_header;
pub mod sched;
mod sys;
pub mod table;
mod telemetry;
