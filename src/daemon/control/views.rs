//! The documents that reads answer (`lbadm list`, status, connections), built from the live
//! table and the configuration in force.

use std::{net::SocketAddr, time::SystemTime};

use super::Director;
use crate::{
    api::{self, Counters},
    clock::Millis,
    config::{self, ServiceConfig},
    daemon::{
        ConfigSource,
        rates::{self, real_counters, service_counters},
    },
    proxy::flows::FlowState,
    table::{self, ServiceTable},
};

impl Director {
    pub(super) fn status(&self) -> api::Status {
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_seconds: self.started.elapsed().as_secs(),
            config_file: match &self.source {
                ConfigSource::File(path) => Some(path.display().to_string()),
                ConfigSource::Text { .. } => None,
            },
            state_file: self
                .config
                .state_file
                .as_ref()
                .map(|path| path.display().to_string()),
            workers: self.workers.len(),
            services: self.config.services.len(),
            reals: self
                .config
                .services
                .iter()
                .map(|service| service.reals.len())
                .sum(),
            flows: self.shared.flows.count(),
            ha: self.config.ha.as_ref().map(|ha| {
                let counters = &self.packet.flows.sync.counters;
                let last = counters.last_received.load(std::sync::atomic::Ordering::Relaxed);
                api::HaStatus {
                    role: if self.master { "master" } else { "backup" }.to_owned(),
                    instance: ha.instance.clone(),
                    peers: ha
                        .sync
                        .iter()
                        .flat_map(|sync| sync.peers.iter().map(ToString::to_string))
                        .collect(),
                    messages_sent: counters.messages_sent.load(std::sync::atomic::Ordering::Relaxed),
                    messages_received: counters
                        .messages_received
                        .load(std::sync::atomic::Ordering::Relaxed),
                    last_sync_seconds: (last != 0).then(|| Millis::now().0.saturating_sub(last) / 1000),
                    synced_flows: self.packet.flows.synced(),
                    ready: self.master || self.ha.as_ref().is_some_and(crate::ha::Ha::ready),
                    generation: self.generation,
                    master: self.master_address.map(|address| address.ip().to_string()),
                }
            }),
            cluster: self
                .config
                .cluster
                .as_ref()
                .zip(self.cluster.as_ref())
                .map(|(config, side)| side.status(config, &self.config.services)),
        }
    }

    /// Flows in progress, as `ipvsadm -L -c` lists them, oldest activity first.
    pub(super) fn connections(&self) -> Vec<api::Connection> {
        let now = Millis::now();
        let timeouts = self.config.timeouts;
        let mut flows = self.shared.flows.list();
        flows.sort_by_key(|flow| flow.last_activity());
        let packets = self.packet.flows.list().into_iter().map(|flow| api::Connection {
            protocol: flow.key.protocol.to_string(),
            state: flow.state.name().to_owned(),
            expires_seconds: flow.expires.0.saturating_sub(now.0) / 1000,
            source: flow.key.client.to_string(),
            virtual_address: flow.key.vip.to_string(),
            destination: flow.real.to_string(),
            synced: flow.synced,
        });
        flows
            .iter()
            .map(|flow| {
                let state = flow.state();
                let timeout = match state {
                    FlowState::Established => timeouts.tcp,
                    FlowState::FinWait => timeouts.tcp_fin,
                    FlowState::Udp => timeouts.udp,
                };
                let idle = std::time::Duration::from_millis(now.0.saturating_sub(flow.last_activity().0));
                api::Connection {
                    protocol: flow.protocol.to_string(),
                    state: state.name().to_owned(),
                    expires_seconds: timeout.saturating_sub(idle).as_secs(),
                    source: flow.client.to_string(),
                    virtual_address: flow.service.to_string(),
                    destination: flow.real.to_string(),
                    synced: false,
                }
            })
            .chain(packets)
            .collect()
    }

    pub(super) fn service_views(&self) -> Vec<api::Service> {
        let mut order: Vec<usize> = (0..self.config.services.len()).collect();
        order.sort_by_key(|&index| self.config.services[index].key());
        order.into_iter().map(|index| self.service_view(index)).collect()
    }

    pub(super) fn service_view(&self, index: usize) -> api::Service {
        let table = self.shared.table.snapshot();
        service_view(&self.config.services[index], &table, &self.rates)
    }
}

fn service_view(config: &ServiceConfig, table: &ServiceTable, rates: &rates::Estimator) -> api::Service {
    let key = config.key();
    let live = table.service(&key);
    let mut reals: Vec<api::Real> = config
        .reals
        .iter()
        .map(|real| {
            let current = live.and_then(|service| service.real(real.address));
            api::Real {
                address: real.address.to_string(),
                forward: real.forward_in(config).name().to_owned(),
                proxy_protocol: real.proxy_protocol_in(config).name().to_owned(),
                weight: current.map_or(real.weight, |current| current.weight),
                configured_weight: real.weight,
                max_conns: real.max_conns,
                min_conns: real.min_conns,
                active: current.map_or(0, |current| current.state.active()),
                inactive: current.map_or(0, |current| current.state.inactive()),
                overloaded: current.is_some_and(|current| current.state.is_overloaded()),
                registered: real.registered,
                maintenance: real.maintenance,
                health: if real.maintenance {
                    Some(api::Health {
                        state: "maint".to_owned(),
                        since_seconds: 0,
                        last_passed: None,
                        last_reason: Some("in maintenance: checks paused".to_owned()),
                    })
                } else {
                    current.and_then(health_view)
                },
                stats: current.map_or_else(Counters::default, |current| real_counters(&current.state)),
                rate: rates.rates(&key, Some(real.address)),
            }
        })
        .collect();
    reals.sort_by_key(|real| real.address.parse::<SocketAddr>().ok());
    api::Service {
        name: config.name.clone(),
        protocol: config.protocol.to_string(),
        listen: config.listen.to_string(),
        scheduler: config.scheduler.to_string(),
        scheduler_flags: config
            .scheduler_flags
            .iter()
            .map(|flag| flag.name().to_owned())
            .collect(),
        forward: config.forward.name().to_owned(),
        persistence: config.persistence.map(|persistence| api::Persistence {
            timeout_seconds: persistence.timeout.as_secs(),
            netmask_prefix: persistence.netmask.prefix,
        }),
        one_packet: config.one_packet,
        slow_start: config.slow_start.map(config::format_duration),
        proxy_protocol: config.proxy_protocol.name().to_owned(),
        accept_proxy_from: written(&config.accept_proxy_from),
        allow: written(&config.allow),
        deny: written(&config.deny),
        source_limits: config.source_limits,
        sorry_server: config.sorry_server.map(|address| address.to_string()),
        health_check: config
            .health_check
            .as_ref()
            .filter(|check| check.kind != config::HealthCheckKind::None)
            .map(|check| check.kind.name().to_owned()),
        stats: live.map_or_else(Counters::default, |service| service_counters(service)),
        rate: rates.rates(&key, None),
        reals,
    }
}

/// A list of networks as the config file writes them.
fn written(networks: &config::Prefixes) -> Vec<String> {
    networks.written().iter().map(ToString::to_string).collect()
}

fn health_view(real: &table::Real) -> Option<api::Health> {
    let record = real.check.as_ref()?.record();
    Some(api::Health {
        state: if record.up { "up" } else { "down" }.to_owned(),
        since_seconds: SystemTime::now()
            .duration_since(record.since)
            .map_or(0, |elapsed| elapsed.as_secs()),
        last_passed: record.last.as_ref().map(|last| last.passed),
        last_reason: record.last.map(|last| last.reason),
    })
}
