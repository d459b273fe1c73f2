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
    vip_path::{self, VipPaths},
};
use crate::config::{HealthCheckConfig, HealthCheckKind};

/// Runs one check of `target`; `vip_paths` carries the checks through a VIP's path.
pub(super) async fn run(check: &HealthCheckConfig, target: &Target, vip_paths: Option<&VipPaths>) -> Outcome {
    let address = target.checked(check);
    let timeout = check.timeout;
    if let Some(vip) = target.via_vip {
        let Some(paths) = vip_paths else {
            return Outcome::fail("via_vip: the packet plane is not running");
        };
        return through_vip(check, target, paths, vip).await;
    }
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
        HealthCheckKind::Http { .. } => {
            let Some(request) = http_request(&check.kind, address, target) else {
                return Outcome::fail("not an http check");
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

/// A `tcp` or `http` check of `target`'s real through the VIP's path: connected to `vip`, the
/// connection pinned to the real.
async fn through_vip(
    check: &HealthCheckConfig,
    target: &Target,
    paths: &VipPaths,
    vip: SocketAddr,
) -> Outcome {
    let timeout = check.timeout;
    within(timeout, "no answer through the VIP", async {
        let (mut stream, _pinned) = match vip_path::connect(paths, target, vip, timeout).await {
            Ok(connected) => connected,
            Err(failed) => return failed,
        };
        match http_request(&check.kind, vip, target) {
            Some(request) => http::exchange_on(stream, &request).await,
            None => {
                let sent = send_proxy(&mut stream, target.send_proxy).await;
                close_with_reset(&stream);
                sent.map_or_else(|failed| failed, |()| Outcome::pass("connected through the VIP"))
            }
        }
    })
    .await
}

/// The GET an `http` check sends, its Host header by default `address` (what it connects to).
fn http_request<'a>(
    kind: &'a HealthCheckKind,
    address: SocketAddr,
    target: &Target,
) -> Option<http::Request<'a>> {
    let HealthCheckKind::Http {
        path,
        host,
        expect_status,
        expect_body,
    } = kind
    else {
        return None;
    };
    Some(http::Request {
        path,
        host: host.clone().unwrap_or_else(|| address.to_string()),
        expect_status,
        expect_body: expect_body.as_deref(),
        send_proxy: target.send_proxy,
    })
}
