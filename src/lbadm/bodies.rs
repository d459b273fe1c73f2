//! What lbadm sends and how it reads answers: request paths and JSON bodies built from the
//! command's flags, input files, and the director's JSON.

use std::io::Read;

use serde_json::{Map, Value, json};

use super::{
    Failure,
    cli::{RealArgs, RealTarget, ServiceArgs},
    usage,
};
use crate::api::routes;

/// The real's `route` (with `{service}` and `{address}`).
pub(super) fn real_path(real: &RealTarget, route: &str) -> Result<String, Failure> {
    let id = real.target.id().ok_or_else(|| {
        usage("name the service with -t VIP:PORT, -u VIP:PORT or --service NAME".to_owned())
    })?;
    Ok(routes::fill(route, &id, &real.real))
}

/// The body of add-service (everything given) or edit-service (only what changes).
pub(super) fn service_body(args: &ServiceArgs, adding: bool) -> Value {
    let mut body = Map::new();
    if adding {
        let (protocol, listen) = match (&args.target.tcp, &args.target.udp) {
            (Some(address), _) => ("tcp", address.to_string()),
            (_, Some(address)) => ("udp", address.to_string()),
            _ => ("tcp", String::new()),
        };
        body.insert("protocol".to_owned(), json!(protocol));
        body.insert("listen".to_owned(), json!(listen));
        if let Some(name) = args.target.name.as_ref().or(args.new_name.as_ref()) {
            body.insert("name".to_owned(), json!(name));
        }
    } else if let Some(name) = &args.new_name {
        body.insert("name".to_owned(), json!(name));
    }
    if let Some(scheduler) = &args.scheduler {
        body.insert("scheduler".to_owned(), json!(scheduler));
    }
    if let Some(flags) = &args.flags {
        body.insert("scheduler_flags".to_owned(), json!(flags));
    }
    if let Some(timeout) = args.persistent {
        let mut persistence = Map::new();
        persistence.insert("timeout".to_owned(), json!(format!("{timeout}s")));
        if let Some(mask) = &args.netmask {
            persistence.insert("netmask".to_owned(), json!(mask));
        }
        body.insert("persistence".to_owned(), Value::Object(persistence));
    } else if args.no_persistent {
        body.insert("persistence".to_owned(), Value::Null);
    }
    if args.ops {
        body.insert("one_packet".to_owned(), json!(true));
    }
    if let Some(forward) = args.forward.method() {
        body.insert("forward".to_owned(), json!(forward));
    }
    Value::Object(body)
}

/// The keys a real's options set.
pub(super) fn real_body(args: &RealArgs) -> Map<String, Value> {
    let mut body = Map::new();
    if let Some(weight) = args.weight {
        body.insert("weight".to_owned(), json!(weight));
    }
    if let Some(max) = args.max_conns {
        body.insert("max_conns".to_owned(), json!(max));
    }
    if let Some(min) = args.min_conns {
        body.insert("min_conns".to_owned(), json!(min));
    }
    if let Some(forward) = args.forward.method() {
        body.insert("forward".to_owned(), json!(forward));
    }
    body
}

pub(super) fn to_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
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
