//! The `/metrics` endpoint: its own listener, answered straight from the shared table (a
//! scrape never waits for the control loop).

use std::{io, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio_util::task::AbortOnDropHandle;

use crate::{lvs::plane::PacketShared, proxy::Shared};

/// What scrapers may hold: a request head within 10 s, an answer within 30 s, 32 connections
/// at once. The endpoint needs no token, so these are what keep it from using up the
/// director's descriptors.
const LIMITS: crate::httpd::Limits = crate::httpd::Limits {
    header_timeout: std::time::Duration::from_secs(10),
    request_timeout: std::time::Duration::from_secs(30),
    max_connections: 32,
};

/// The running endpoint; dropping it stops it.
#[derive(Debug)]
pub(crate) struct MetricsServer {
    /// Where it listens.
    pub address: SocketAddr,
    _server: AbortOnDropHandle<()>,
}

#[derive(Clone)]
struct Sources {
    proxy: Shared,
    packet: Arc<PacketShared>,
}

/// Serves `GET /metrics` on `address` from what the proxy and the packet data plane share.
/// Must run inside a tokio runtime.
pub(crate) async fn serve(
    address: SocketAddr,
    proxy: Shared,
    packet: Arc<PacketShared>,
) -> io::Result<MetricsServer> {
    super::recorder();
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Sources { proxy, packet });
    let server = tokio::spawn(crate::httpd::serve(listener, app, LIMITS));
    Ok(MetricsServer {
        address,
        _server: AbortOnDropHandle::new(server),
    })
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        super::render(&sources.proxy, &sources.packet),
    )
}
