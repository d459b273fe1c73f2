//! Arbitrary admin API requests: the first byte picks the change (and the service or real it
//! names), the rest is the body, which goes through what the admin server does with a body
//! (the size and nesting check, then the YAML parse) and what the director does with the
//! change (`daemon::control::edited`) against a running table of a TCP, a UDP and a nat
//! service. Every step must answer Ok or an error, never panic or hang; an accepted change
//! must build a table snapshot.
//! Run: `cargo +nightly fuzz run admin_body -- -max_total_time=600`.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ulvs::{
    config::{self, Config},
    daemon::control::{Change, edited},
    table::{HealthView, ServiceTable},
};

fn running() -> &'static Config {
    static RUNNING: OnceLock<Config> = OnceLock::new();
    RUNNING.get_or_init(|| {
        config::parse(
            "dataplane: { tun: lbtun0, server_interface: br0 }\nservices:\n  - { name: web, protocol: tcp, listen: '127.0.0.1:80', scheduler: wrr, persistence: { timeout: 60s }, health_check: { type: http, path: / }, reals: [{address: '10.0.0.[1-4]:8080', weight: 3}] }\n  - { name: dns, protocol: udp, listen: '127.0.0.1:53', udp_responses: 1, reals: [{address: '10.0.1.1'}] }\n  - { name: nat, protocol: tcp, listen: '192.0.2.1:80', forward: nat, reals: [{address: '10.0.2.[1-2]:8080'}] }\n",
            "running",
        )
        .expect("the fuzz target's running config is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body_bytes)) = data.split_first() else {
        return;
    };
    if config::check_shape(body_bytes).is_err() {
        return;
    }
    fn body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        serde_yaml::from_slice(body).ok()
    }
    let services = ["web", "dns", "nat", "tcp:127.0.0.1:80", "udp:127.0.0.1:53", "nope"];
    let reals = ["10.0.0.1:8080", "10.0.0.[1-2]:8080", "10.0.1.1", "10.0.2.2:8080", "bad"];
    let service = services[usize::from(selector >> 3) % services.len()].to_owned();
    let address = reals[usize::from(selector >> 5) % reals.len()].to_owned();
    let change = match selector % 6 {
        0 => body(body_bytes).map(|service| Change::AddService(Box::new(service))),
        1 => body(body_bytes).map(|edit| Change::EditService {
            service,
            edit: Box::new(edit),
        }),
        2 => body(body_bytes).map(Change::ReplaceServices),
        3 => body(body_bytes).map(|reals| Change::AddReals { service, reals }),
        4 => body(body_bytes).map(|edit| Change::EditReals { service, address, edit }),
        _ => Some(Change::DeleteReals { service, address }),
    };
    let Some(change) = change else {
        return;
    };
    if let Ok((config, _)) = edited(running(), change) {
        let _table = ServiceTable::build(&config, None, &HealthView::default());
    }
});
