//! Serving lbd's two small HTTP/1.1 endpoints, the admin API and `/metrics`, so that nobody who
//! can reach them can use up the director: every connection must send its request head within
//! [`Limits::header_timeout`] (an idle keep-alive connection too), every request must be
//! answered within [`Limits::request_timeout`] (a body trickled in counts against it), and at
//! most [`Limits::max_connections`] are open at once; one more is closed at accept and counted.
//!
//! It knows nothing of what it serves: it takes an `axum::Router` and a listener.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::Request, response::IntoResponse};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// What one endpoint allows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a connection may take to send a request head (also while idle between
    /// requests); then it is closed.
    pub(crate) header_timeout: Duration,
    /// How long a request may take from its head to its answer, body included; then it is
    /// answered `408` and the connection closed.
    pub(crate) request_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub(crate) max_connections: usize,
}

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 16 * 1024;

tokio::task_local! {
    /// The address of the client whose request is being answered.
    static CLIENT: String;
}

/// The address of the client whose request is being answered (for logs), as far as the
/// listener knows it.
pub(crate) fn client() -> String {
    CLIENT
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Connections refused because an endpoint was at its limit, for `/metrics`.
pub(crate) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Serves `app` on `listener` within `limits` until the task is dropped.
pub(crate) async fn serve<L>(mut listener: L, app: Router, limits: Limits)
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let warned = crate::log::Throttle::new(Duration::from_secs(10));
    loop {
        let (io, peer) = listener.accept().await;
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            REFUSED.fetch_add(1, Relaxed);
            if let Some(suppressed) = warned.ready() {
                tracing::warn!(
                    limit = limits.max_connections,
                    suppressed,
                    "too many open connections to an HTTP endpoint; closing new ones"
                );
            }
            drop(io);
            continue;
        };
        let app = app.clone();
        let peer = format!("{peer:?}");
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                CLIENT.scope(
                    peer.clone(),
                    answer(app.clone(), request.map(Body::new), limits.request_timeout),
                )
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(MAX_HEAD.max(8192))
                .serve_connection(TokioIo::new(io), service);
            let _ = connection.await;
            drop(permit);
        });
    }
}

async fn answer(
    app: Router,
    request: Request,
    timeout: Duration,
) -> Result<axum::response::Response, Infallible> {
    match tokio::time::timeout(timeout, app.oneshot(request)).await {
        Ok(response) => response,
        Err(_) => {
            let mut response = (
                axum::http::StatusCode::REQUEST_TIMEOUT,
                axum::Json(serde_json::json!({
                    "error": format!("the request took longer than {timeout:?}")
                })),
            )
                .into_response();
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            Ok(response)
        }
    }
}
