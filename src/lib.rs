//! ulvs: a user-space, LVS-style Layer-4 load balancer.
//!
//! # Layout
//! - [`config`]: the YAML config file → a typed, validated [`config::Config`]; nodeset ranges.
pub mod admin;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod health;
pub mod lbadm;
pub mod proxy;
pub mod sched;
mod sys;
pub mod table;
