//! Integration tests: the real `lbd` binary, driven as a user would, with real backends on
//! loopback.

mod config_files;
mod proxy_tcp;
mod proxy_udp;
mod support;
