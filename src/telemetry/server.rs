//! The `/metrics` endpoint: its own listener, answered straight from the shared table (a
//! scrape never waits for the control loop).

use std::{io, net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use tokio_util::task::AbortOnDropHandle;

use crate::{lvs::plane::PacketShared, proxy::FlowTracker, table::TableHandle};

/// The running endpoint; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    /// Where it listens.
    pub address: SocketAddr,
    _server: AbortOnDropHandle<()>,
}

#[derive(Clone)]
struct Sources {
    table: Arc<TableHandle>,
    flows: FlowTracker,
    packet: Arc<PacketShared>,
}

/// Serves `GET /metrics` on `address`. Must run inside a tokio runtime.
pub async fn serve(
    address: SocketAddr,
    table: Arc<TableHandle>,
    flows: FlowTracker,
    packet: Arc<PacketShared>,
) -> io::Result<MetricsServer> {
    super::recorder();
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .with_state(Sources { table, flows, packet });
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "metrics endpoint stopped");
        }
    });
    Ok(MetricsServer {
        address,
        _server: AbortOnDropHandle::new(server),
    })
}

async fn metrics(State(sources): State<Sources>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        super::render(&sources.table, &sources.flows, &sources.packet),
    )
}
