//! Prometheus metrics (names in docs/metrics.md), served at `GET /metrics` on `metrics.listen`.
//!
//! Two sources make one page:
//! - **The service table**, read at scrape time: every service and real counter and gauge is
//!   an atomic that the data plane already keeps ([`RealState`](crate::table::RealState),
//!   service totals, health check statuses, the flow registry). Recording a flow costs no lock
//!   and no allocation, series exist exactly while their service or real exists (zero-valued
//!   from the start), and a removed real's series are gone from the next scrape.
//! - **The `metrics` facade**, for events of the control plane: `lbd_build_info`,
//!   `lbd_config_reloads_total` and the `lbd_health_check_duration_seconds` histogram,
//!   recorded into `metrics-exporter-prometheus`'s recorder and rendered by it.

mod collect;
mod server;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub(crate) use self::server::serve;
use crate::{lvs::plane::PacketShared, proxy::Shared};

/// Histogram buckets of health check latency: 1 ms to 10 s.
pub(crate) const CHECK_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `lbd_config_reloads_total`.
pub(crate) const RELOADS: &str = "lbd_config_reloads_total";
/// `lbd_health_check_duration_seconds`.
pub(crate) const CHECK_DURATION: &str = "lbd_health_check_duration_seconds";

/// The process-wide recorder for the facade metrics, installed on first use.
pub(crate) fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(CHECK_DURATION.to_owned()), &CHECK_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a library user's); ours then only
        // renders what the table holds plus its own zero-valued facade series.
        let _ = metrics::set_global_recorder(recorder);
        metrics::describe_gauge!(
            "lbd_build_info",
            "Always 1; the version label says which lbd runs."
        );
        metrics::describe_counter!(
            RELOADS,
            "Configuration reloads (SIGHUP or lbadm reload), by result."
        );
        metrics::describe_histogram!(
            CHECK_DURATION,
            metrics::Unit::Seconds,
            "How long health checks take, by service."
        );
        metrics::gauge!("lbd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        for result in ["success", "failure"] {
            metrics::counter!(RELOADS, "result" => result).absolute(0);
        }
        handle
    })
}

/// Counts a configuration reload.
pub(crate) fn count_reload(success: bool) {
    let result = if success { "success" } else { "failure" };
    metrics::counter!(RELOADS, "result" => result).increment(1);
}

/// `lbd_ha_master`.
pub(crate) const HA_MASTER: &str = "lbd_ha_master";
/// `lbd_ha_transitions_total`.
pub(crate) const HA_TRANSITIONS: &str = "lbd_ha_transitions_total";

/// Sets `lbd_ha_master` (a director of an HA pair only).
pub(crate) fn set_ha_master(master: bool) {
    metrics::describe_gauge!(
        HA_MASTER,
        "1 while this director is the master of its HA pair, else 0."
    );
    metrics::describe_counter!(HA_TRANSITIONS, "Changes of HA role, by the role taken.");
    metrics::gauge!(HA_MASTER).set(if master { 1.0 } else { 0.0 });
    for role in ["master", "backup"] {
        metrics::counter!(HA_TRANSITIONS, "role" => role).increment(0);
    }
}

/// `lbd_cluster_connected`.
pub(crate) const CLUSTER_CONNECTED: &str = "lbd_cluster_connected";
/// `lbd_cluster_revision`.
pub(crate) const CLUSTER_REVISION: &str = "lbd_cluster_revision";
/// `lbd_cluster_changes_total`.
pub(crate) const CLUSTER_CHANGES: &str = "lbd_cluster_changes_total";

/// Sets `lbd_cluster_connected` and `lbd_cluster_revision` (a director of a cluster only).
pub(crate) fn set_cluster(connected: bool, revision: i64) {
    metrics::describe_gauge!(
        CLUSTER_CONNECTED,
        "1 while the cluster store (etcd) answers, else 0 (changes are refused)."
    );
    metrics::describe_gauge!(
        CLUSTER_REVISION,
        "The etcd revision of the service table in force on this director."
    );
    metrics::gauge!(CLUSTER_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    metrics::gauge!(CLUSTER_REVISION).set(revision as f64);
}

/// Counts a stored table taken (`applied`) or refused (`refused`: it fails the config
/// file's rules, or could not be applied here).
pub(crate) fn count_cluster_change(applied: bool) {
    metrics::describe_counter!(
        CLUSTER_CHANGES,
        "Changes of the cluster's stored service table, by whether this director applied them."
    );
    for result in ["applied", "refused"] {
        metrics::counter!(CLUSTER_CHANGES, "result" => result).increment(0);
    }
    let result = if applied { "applied" } else { "refused" };
    metrics::counter!(CLUSTER_CHANGES, "result" => result).increment(1);
}

/// Counts a change of HA role.
pub(crate) fn count_ha_transition(master: bool) {
    set_ha_master(master);
    let role = if master { "master" } else { "backup" };
    metrics::counter!(HA_TRANSITIONS, "role" => role).increment(1);
}

/// The whole `/metrics` page: the facade's metrics, then the table's.
pub(crate) fn render(proxy: &Shared, packet: &PacketShared) -> String {
    let mut page = recorder().render();
    let (tcp, udp) = proxy.flows.count_by_protocol();
    let (packet_tcp, packet_udp) = packet.flows.count_by_protocol();
    collect::table(
        &mut page,
        &proxy.table.load(),
        (tcp + packet_tcp, udp + packet_udp),
    );
    collect::packets(&mut page, packet);
    collect::bounds(&mut page, &proxy.descriptors);
    collect::access_log(&mut page, &proxy.access_log);
    page
}
