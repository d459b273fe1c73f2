//! What an edit of the services table makes of the running configuration: the typed bodies
//! made on the services they name, and the result checked by the config file's rules. Pure:
//! nothing is applied here. Draining, weight 0 as `ipvsadm -e -w 0`, is decided here.

use std::{collections::HashSet, net::SocketAddr};

use super::{Change, ControlError};
use crate::config::{self, Config, RealEdit, ServiceConfig, nodeset};

/// The configuration an edit of the services table makes of `running`, checked by the config
/// file's rules, and the key of the service it touched (none for a deletion or a whole new
/// table). Pure: nothing is applied. `Zero` and `Reload` are not edits and are refused.
pub fn edited(
    running: &Config,
    change: Change,
) -> Result<(Config, Option<config::ServiceKey>), ControlError> {
    let mut services = running.services.clone();
    let touched = match change {
        Change::AddService(service) => {
            services.push(*service);
            Some(services.len() - 1)
        }
        Change::EditService { service, edit } => {
            let index = find(&services, &service)?;
            if let Some(key) = edit.fixed_key() {
                return Err(ControlError::FixedKey(key));
            }
            services[index] = edit.applied(&services[index]).map_err(ControlError::Invalid)?;
            Some(index)
        }
        Change::DeleteService(service) => {
            services.remove(find(&services, &service)?);
            None
        }
        Change::ReplaceServices(list) => {
            services = list.0;
            None
        }
        Change::AddReals { service, reals } => {
            let index = find(&services, &service)?;
            let added = services[index]
                .resolve_reals(reals.0)
                .map_err(ControlError::Invalid)?;
            let target = &mut services[index];
            let known: HashSet<SocketAddr> = target.reals.iter().map(|real| real.address).collect();
            for real in added {
                if known.contains(&real.address) {
                    return Err(ControlError::RealExists {
                        service: target.name.clone(),
                        real: real.address,
                    });
                }
                target.reals.push(real);
            }
            Some(index)
        }
        Change::EditReals {
            service,
            address,
            edit,
        } => {
            let index = find(&services, &service)?;
            if let Some(key) = edit.fixed_key() {
                return Err(ControlError::FixedKey(key));
            }
            let targets = reals_named(&services[index], &address)?;
            services[index] = edit
                .applied(&services[index], &targets)
                .map_err(ControlError::Invalid)?;
            Some(index)
        }
        Change::DrainReals { service, address } => {
            return edited(
                running,
                Change::EditReals {
                    service,
                    address,
                    edit: RealEdit::weight(0),
                },
            );
        }
        Change::MaintainReals { service, address, on } => {
            return edited(
                running,
                Change::EditReals {
                    service,
                    address,
                    edit: RealEdit::maintenance(on),
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
        Change::Zero(_) | Change::Reload | Change::KillFlows { .. } => {
            return Err(ControlError::Invalid(
                "zero, reload and kill-flows do not edit the services table".to_owned(),
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
    .ok_or_else(|| ControlError::NoService(id.to_owned()))
}

/// The addresses a real address or range names in `service`; every one must exist.
pub(super) fn reals_named(
    service: &ServiceConfig,
    address: &str,
) -> Result<HashSet<SocketAddr>, ControlError> {
    let known: HashSet<SocketAddr> = service.reals.iter().map(|real| real.address).collect();
    let texts = nodeset::expand(address).map_err(|error| ControlError::Invalid(error.to_string()))?;
    texts
        .iter()
        .map(|text| {
            let real = config::parse_real_addr(text, service.listen.port()).map_err(ControlError::Invalid)?;
            if known.contains(&real) {
                Ok(real)
            } else {
                Err(ControlError::NoReal {
                    service: service.name.clone(),
                    real,
                })
            }
        })
        .collect()
}
