//! What an edit of the services table makes of the running configuration: the YAML-merge
//! engine (an edit merges the changed keys into the YAML form of the service or real and reads
//! it back through the config file's own deserialisers), and the checks of the result. Pure:
//! nothing is applied here.

use std::{collections::HashSet, net::SocketAddr};

use serde_yaml::{Mapping, Value};

use super::{Change, ControlError};
use crate::config::{self, Config, ServiceConfig, nodeset};

/// The configuration an edit of the services table makes of `running`, checked by the config
/// file's rules, and the key of the service it touched (none for a deletion or a whole new
/// table). Pure: nothing is applied. `Zero` and `Reload` are not edits and are refused.
pub fn edited(
    running: &Config,
    change: Change,
) -> Result<(Config, Option<config::ServiceKey>), ControlError> {
    let mut services = running.services.clone();
    let touched = match change {
        Change::AddService(body) => {
            services.push(service_from(body)?);
            Some(services.len() - 1)
        }
        Change::EditService { service, patch } => {
            let index = find(&services, &service)?;
            let mut value = config::service_value(&services[index]);
            merge(&mut value, patch, &["protocol", "listen", "reals"])?;
            services[index] = service_from(value)?;
            Some(index)
        }
        Change::DeleteService(service) => {
            services.remove(find(&services, &service)?);
            None
        }
        Change::ReplaceServices(body) => {
            services = services_from(body)?;
            None
        }
        Change::AddReals { service, reals } => {
            let index = find(&services, &service)?;
            let added = reals_from(&services[index], reals)?;
            let target = &mut services[index];
            let known: HashSet<SocketAddr> = target.reals.iter().map(|real| real.address).collect();
            for real in added {
                if known.contains(&real.address) {
                    return Err(ControlError::Invalid(format!(
                        "real {} is already in service `{}`; nothing was added",
                        real.address, target.name
                    )));
                }
                target.reals.push(real);
            }
            Some(index)
        }
        Change::EditReals {
            service,
            address,
            patch,
        } => {
            let index = find(&services, &service)?;
            let targets = reals_named(&services[index], &address)?;
            // Only the reals named are re-read through the config rules.
            let mut edited = Vec::with_capacity(targets.len());
            for real in services[index]
                .reals
                .iter()
                .filter(|real| targets.contains(&real.address))
            {
                let mut value = config::real_value(real);
                merge(&mut value, patch.clone(), &["address"])?;
                edited.push(value);
            }
            let edited = reals_from(&services[index], Value::Sequence(edited))?;
            for (real, new) in services[index]
                .reals
                .iter_mut()
                .filter(|real| targets.contains(&real.address))
                .zip(edited)
            {
                *real = new;
            }
            Some(index)
        }
        Change::DrainReals { service, address } => {
            // Draining is weight 0, as `ipvsadm -e -w 0`: the drain policy lives here.
            let mut patch = Mapping::new();
            patch.insert("weight".into(), 0.into());
            return edited(
                running,
                Change::EditReals {
                    service,
                    address,
                    patch: Value::Mapping(patch),
                },
            );
        }
        Change::DeleteReals { service, address } => {
            let index = find(&services, &service)?;
            let targets = reals_named(&services[index], &address)?;
            services[index]
                .reals
                .retain(|real| !targets.contains(&real.address));
            Some(index)
        }
        Change::Zero(_) | Change::Reload => {
            return Err(ControlError::Invalid(
                "zero and reload do not edit the services table".to_owned(),
            ));
        }
    };
    let key = touched.map(|index| services[index].key());
    let config = Config {
        services,
        ..running.clone_without_services()
    };
    config::check(&config).map_err(ControlError::Invalid)?;
    Ok((config, key))
}

/// The index of the service `id` in `services`: `tcp:VIP:PORT` / `udp:VIP:PORT` finds a
/// service by its key alone; anything else is a name. (A name never reads as another
/// service's key.)
pub(super) fn find(services: &[ServiceConfig], id: &str) -> Result<usize, ControlError> {
    match config::ServiceKey::parse(id) {
        Some(key) => services.iter().position(|service| service.key() == key),
        None => services.iter().position(|service| service.name == id),
    }
    .ok_or_else(|| ControlError::NotFound(format!("no service `{id}`")))
}

/// The addresses a real address or range names in `service`; every one must exist.
fn reals_named(service: &ServiceConfig, address: &str) -> Result<HashSet<SocketAddr>, ControlError> {
    let known: HashSet<SocketAddr> = service.reals.iter().map(|real| real.address).collect();
    let texts = nodeset::expand(address).map_err(|error| ControlError::Invalid(error.to_string()))?;
    texts
        .iter()
        .map(|text| {
            let real = config::parse_real_addr(text, service.listen.port()).map_err(ControlError::Invalid)?;
            if known.contains(&real) {
                Ok(real)
            } else {
                Err(ControlError::NotFound(format!(
                    "no real {real} in service `{}`; nothing was changed",
                    service.name
                )))
            }
        })
        .collect()
}

fn invalid(error: impl std::fmt::Display) -> ControlError {
    ControlError::Invalid(error.to_string())
}

fn service_from(value: Value) -> Result<ServiceConfig, ControlError> {
    serde_yaml::from_value(value).map_err(invalid)
}

/// A services list: `{services: [...]}` or `[...]`.
fn services_from(value: Value) -> Result<Vec<ServiceConfig>, ControlError> {
    let list = match value {
        Value::Mapping(mut mapping) => {
            let list = mapping.remove("services").unwrap_or(Value::Sequence(Vec::new()));
            if let Some((key, _)) = mapping.into_iter().next() {
                return Err(ControlError::Invalid(format!(
                    "unknown key {}: expected only `services`",
                    serde_yaml::to_string(&key).unwrap_or_default().trim()
                )));
            }
            list
        }
        Value::Null => Value::Sequence(Vec::new()),
        other => other,
    };
    serde_yaml::from_value(list).map_err(invalid)
}

/// The reals a body describes (one mapping or a list), ranges expanded and defaults filled in
/// as the config file would for `service`.
fn reals_from(service: &ServiceConfig, body: Value) -> Result<Vec<config::RealConfig>, ControlError> {
    let list = match body {
        Value::Sequence(list) => list,
        other => vec![other],
    };
    let bare = ServiceConfig {
        reals: Vec::new(),
        ..service.clone()
    };
    let mut value = config::service_value(&bare);
    if let Value::Mapping(mapping) = &mut value {
        mapping.insert("reals".into(), Value::Sequence(list));
    }
    Ok(service_from(value)?.reals)
}

/// Sets the keys of `patch` in `base`; a `null` removes the key. `fixed` keys cannot change.
fn merge(base: &mut Value, patch: Value, fixed: &[&str]) -> Result<(), ControlError> {
    let Value::Mapping(patch) = patch else {
        return Err(ControlError::Invalid(
            "the body must be a mapping of the keys to change".to_owned(),
        ));
    };
    let Value::Mapping(base) = base else {
        return Err(ControlError::Invalid("nothing to edit".to_owned()));
    };
    apply_patch(base, patch, fixed)
}

fn apply_patch(base: &mut Mapping, patch: Mapping, fixed: &[&str]) -> Result<(), ControlError> {
    for (key, value) in patch {
        let name = key.as_str().unwrap_or_default().to_owned();
        if fixed.contains(&name.as_str()) {
            return Err(ControlError::Invalid(format!(
                "`{name}` cannot be edited (delete and add instead)"
            )));
        }
        if value.is_null() {
            base.remove(&key);
        } else {
            base.insert(key, value);
        }
    }
    Ok(())
}
