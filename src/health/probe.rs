//! One check of one real, by type: what to do, and how to read the answer. Each check finishes
//! within its `timeout` and turns every error into a failed [`Outcome`] whose reason says
//! what went wrong.

use std::net::SocketAddr;

use super::{
    agent,
    common::{Target, handshake, within},
    exec, http,
    machine::Outcome,
    udp,
};
use crate::config::{HealthCheckConfig, HealthCheckKind};

/// Runs one check of `target`.
pub(super) async fn run(check: &HealthCheckConfig, target: &Target) -> Outcome {
    let address = target.checked(check);
    let timeout = check.timeout;
    match &check.kind {
        HealthCheckKind::None => Outcome::pass("not checked"),
        HealthCheckKind::Tcp => match handshake(address, timeout).await {
            Ok(()) => Outcome::pass("connected"),
            Err(failed) => failed,
        },
        HealthCheckKind::Http {
            path,
            host,
            expect_status,
            expect_body,
        } => {
            let request = http::Request {
                path,
                host: host.clone().unwrap_or_else(|| address.to_string()),
                expect_status,
                expect_body: expect_body.as_deref(),
            };
            within(
                timeout,
                "no HTTP response",
                http::check(address, &request, timeout),
            )
            .await
        }
        HealthCheckKind::Udp { send, expect } => udp::check(address, send, expect, timeout).await,
        HealthCheckKind::Exec { command } => exec::check(command, target, address, timeout).await,
        HealthCheckKind::Agent { agent_port } => {
            let agent = SocketAddr::new(address.ip(), *agent_port);
            within(timeout, "no agent reply", agent::check(agent, timeout)).await
        }
    }
}
