//! One check of one real, by type: what to do, and how to read the answer. Each check finishes
//! within its `timeout` and turns every error into a failed [`Outcome`] whose reason says
//! what went wrong.

use std::net::SocketAddr;

use super::{
    agent,
    common::{Target, close_with_reset, connect, handshake, send_proxy, within},
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
        HealthCheckKind::Tcp if target.send_proxy.is_some() => {
            within(timeout, "no connection", async {
                let mut stream = match connect(address, timeout).await {
                    Ok(stream) => stream,
                    Err(failed) => return failed,
                };
                let sent = send_proxy(&mut stream, target.send_proxy).await;
                close_with_reset(&stream);
                sent.map_or_else(
                    |failed| failed,
                    |()| Outcome::pass("connected, PROXY header sent"),
                )
            })
            .await
        }
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
                send_proxy: target.send_proxy,
            };
            within(
                timeout,
                "no HTTP response",
                http::check(address, &request, timeout),
            )
            .await
        }
        HealthCheckKind::Udp { send, expect } => {
            udp::check(address, send, expect, target.send_proxy.is_some(), timeout).await
        }
        HealthCheckKind::Exec { command } => exec::check(command, target, address, timeout).await,
        HealthCheckKind::Agent { agent_port } => {
            let agent = SocketAddr::new(address.ip(), *agent_port);
            within(timeout, "no agent reply", agent::check(agent, timeout)).await
        }
    }
}
