//! Integration tests: the real `lbd` binary, driven as a user would, with real backends on
//! loopback.

// A test crate: `pub` only shares helpers between its modules.
#![allow(unreachable_pub, missing_docs)]

mod access;
mod access_log;
mod admin;
mod chaos;
mod cluster;
mod config_files;
mod ecmp;
mod ha;
mod health;
mod ipv6;
mod lvs;
mod metrics;
mod netns;
mod proxy_protocol;
mod proxy_tcp;
mod proxy_udp;
mod schedulers;
mod support;
