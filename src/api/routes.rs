//! The admin API's routes, one constant each: the admin server routes them and `lbadm` calls
//! them, so a route cannot exist on one side only. `{service}` is a service's name or
//! `tcp:VIP:PORT` / `udp:VIP:PORT`; `{address}` a real's address or range.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// `GET`: version, uptime, counts.
pub const STATUS: &str = "/v1/status";
/// `GET` every service, `POST` one, `PUT` them all.
pub const SERVICES: &str = "/v1/services";
/// `GET`, `PATCH`, `DELETE` one service.
pub const SERVICE: &str = "/v1/services/{service}";
/// `POST` reals to a service.
pub const REALS: &str = "/v1/services/{service}/reals";
/// `PATCH`, `DELETE` reals of a service.
pub const REAL: &str = "/v1/services/{service}/reals/{address}";
/// `POST`: drain reals (weight 0).
pub const DRAIN: &str = "/v1/services/{service}/reals/{address}/drain";
/// `POST`: put reals in maintenance (no new flows, no health checks).
pub const MAINT: &str = "/v1/services/{service}/reals/{address}/maint";
/// `POST`: take reals out of maintenance.
pub const READY: &str = "/v1/services/{service}/reals/{address}/ready";
/// `POST`: close the flows of a service.
pub const KILL_SERVICE_FLOWS: &str = "/v1/services/{service}/kill-flows";
/// `POST`: close the flows of reals.
pub const KILL_REAL_FLOWS: &str = "/v1/services/{service}/reals/{address}/kill-flows";
/// `POST`: zero a service's counters.
pub const ZERO_SERVICE: &str = "/v1/services/{service}/zero";
/// `POST`: zero every counter.
pub const ZERO: &str = "/v1/zero";
/// `POST`: reload the config file.
pub const RELOAD: &str = "/v1/reload";
/// `GET`: flows in progress.
pub const CONNECTIONS: &str = "/v1/connections";
/// `GET`: the directors registered in the cluster.
pub const DIRECTORS: &str = "/v1/directors";
/// `GET`: the services as config YAML.
pub const SAVE: &str = "/v1/save";

/// `route` with `{service}` and `{address}` filled in, each percent-encoded as one segment.
pub fn fill(route: &str, service: &str, address: &str) -> String {
    route
        .replace(
            "{service}",
            &utf8_percent_encode(service, NON_ALPHANUMERIC).to_string(),
        )
        .replace(
            "{address}",
            &utf8_percent_encode(address, NON_ALPHANUMERIC).to_string(),
        )
}

/// The request header with which `lbadm --force` makes a change on the backup of an HA pair
/// (which refuses changes without it: they belong on the master).
pub const FORCE_HEADER: &str = "lbd-force";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_encoded_whole() {
        assert_eq!(
            fill(REAL, "tcp:10.0.0.1:80", "10.0.0.[1-2]:80"),
            "/v1/services/tcp%3A10%2E0%2E0%2E1%3A80/reals/10%2E0%2E0%2E%5B1%2D2%5D%3A80"
        );
    }
}
