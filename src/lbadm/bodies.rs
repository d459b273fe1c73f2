//! What lbadm sends and how it reads answers: request paths, the API's typed bodies made from
//! the command's flags, input files, and the director's JSON.

use std::io::Read;

use std::time::Duration;

use serde_json::Value;

use super::{
    Failure,
    cli::{RealArgs, RealTarget, ServiceArgs},
    usage,
};
use crate::{
    api::routes,
    config::{
        Patch, Persistence, Protocol, RealEdit, RealSpec, ServiceEdit, ServiceList, ServiceSpec, SourceLimits,
    },
};

/// The real's `route` (with `{service}` and `{address}`).
pub(super) fn real_path(real: &RealTarget, route: &str) -> Result<String, Failure> {
    let id = real.target.id().ok_or_else(|| {
        usage("name the service with -t VIP:PORT, -u VIP:PORT or --service NAME".to_owned())
    })?;
    Ok(routes::fill(route, &id, &real.real))
}

/// The keys a service command's flags set (every one of them optional).
fn service_edit(args: &ServiceArgs) -> ServiceEdit {
    let mut edit = ServiceEdit::default();
    if let Some(name) = &args.new_name {
        edit.name = Patch::Set(name.clone());
    }
    if let Some(scheduler) = args.scheduler {
        edit.scheduler = Patch::Set(scheduler);
    }
    if let Some(flags) = &args.flags {
        edit.scheduler_flags = Patch::Set(flags.clone());
    }
    if let Some(timeout) = args.persistent {
        edit.persistence = Patch::Set(Persistence {
            timeout: Duration::from_secs(timeout),
            netmask: args.netmask.unwrap_or_default(),
        });
    } else if args.no_persistent {
        edit.persistence = Patch::Remove;
    }
    if args.ops {
        edit.one_packet = Patch::Set(true);
    }
    if let Some(window) = args.slow_start {
        edit.slow_start = Patch::Set(window);
    } else if args.no_slow_start {
        edit.slow_start = Patch::Remove;
    }
    if let Some(forward) = args.forward.method() {
        edit.forward = Patch::Set(forward);
    }
    if let Some(version) = args.proxy_protocol {
        edit.proxy_protocol = Patch::Set(version);
    }
    if let Some(from) = &args.accept_proxy_from {
        edit.accept_proxy = Patch::Set(true);
        edit.accept_proxy_from = Patch::Set(from.clone());
    } else if args.no_accept_proxy {
        edit.accept_proxy = Patch::Remove;
        edit.accept_proxy_from = Patch::Remove;
    }
    if let Some(allow) = &args.allow {
        edit.allow = Patch::Set(allow.clone());
    } else if args.no_allow {
        edit.allow = Patch::Remove;
    }
    if let Some(deny) = &args.deny {
        edit.deny = Patch::Set(deny.clone());
    } else if args.no_deny {
        edit.deny = Patch::Remove;
    }
    if args.source_max_flows.is_some() || args.source_rate.is_some() {
        edit.source_limits = Patch::Set(SourceLimits {
            max_flows: args.source_max_flows,
            new_flows_per_second: args.source_rate,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        });
    } else if args.no_source_limits {
        edit.source_limits = Patch::Remove;
    }
    edit
}

/// The body of add-service: the service the flags describe.
pub(super) fn new_service(args: &ServiceArgs) -> Result<Vec<u8>, Failure> {
    let (protocol, listen) = match (args.target.tcp, args.target.udp) {
        (Some(address), _) => (Protocol::Tcp, address),
        (_, Some(address)) => (Protocol::Udp, address),
        _ => return Err(usage("add-service needs -t VIP:PORT or -u VIP:PORT".to_owned())),
    };
    let mut spec = ServiceSpec::new(protocol, listen.to_string());
    service_edit(args).apply_to(&mut spec);
    if let Some(name) = &args.target.name {
        spec.name = Some(name.clone());
    }
    Ok(json(&spec))
}

/// The body of edit-service: only the keys the flags change.
pub(super) fn service_changes(args: &ServiceArgs) -> Vec<u8> {
    json(&service_edit(args))
}

/// The keys a real's flags change.
fn real_edit(args: &RealArgs) -> RealEdit {
    let mut edit = RealEdit::default();
    if let Some(weight) = args.weight {
        edit.weight = Patch::Set(weight);
    }
    if let Some(max) = args.max_conns {
        edit.max_conns = Patch::Set(max);
    }
    if let Some(min) = args.min_conns {
        edit.min_conns = Patch::Set(min);
    }
    if let Some(forward) = args.forward.method() {
        edit.forward = Patch::Set(forward);
    }
    if let Some(version) = args.proxy_protocol {
        edit.proxy_protocol = Patch::Set(version);
    }
    edit
}

/// The body of add-real: the real (or range) the flags describe.
pub(super) fn new_real(args: &RealArgs) -> Vec<u8> {
    let mut spec = RealSpec::new(args.real.real.clone());
    real_edit(args).apply_to(&mut spec);
    json(&spec)
}

/// The body of edit-real: only the keys the flags change.
pub(super) fn real_changes(args: &RealArgs) -> Vec<u8> {
    json(&real_edit(args))
}

/// The body of clear: an empty table.
pub(super) fn no_services() -> Vec<u8> {
    json(&ServiceList::default())
}

fn json<T: serde::Serialize>(document: &T) -> Vec<u8> {
    serde_json::to_vec(document).unwrap_or_default()
}

pub(super) fn read_input(file: &str) -> Result<Vec<u8>, Failure> {
    if file == "-" {
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|error| usage(format!("cannot read standard input: {error}")))?;
        return Ok(text);
    }
    std::fs::read(file).map_err(|error| usage(format!("cannot read {file}: {error}")))
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Failure> {
    serde_json::from_slice(bytes).map_err(|error| Failure {
        status: 3,
        message: format!(
            "the director's answer is not what lbadm expects ({error}); are lbd and lbadm the same version?"
        ),
    })
}

pub(super) fn pretty(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default()),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}
