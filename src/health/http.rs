//! The `http` check: one HTTP/1.1 GET per check (hyper's client), passing when the status is
//! one of `expect_status` and, with `expect_body`, the body contains it.

use std::{net::SocketAddr, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::{
    body::Bytes,
    header::{CONNECTION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;

use super::{
    common::{self, contains},
    machine::Outcome,
};
use crate::proxy_header::Version;

/// The most of a body searched for `expect_body`.
const BODY_LIMIT: usize = 64 * 1024;

/// What to ask and what to expect.
#[derive(Debug)]
pub(super) struct Request<'a> {
    pub(super) path: &'a str,
    pub(super) host: String,
    pub(super) expect_status: &'a [(u16, u16)],
    pub(super) expect_body: Option<&'a str>,
    /// The PROXY header to send first, if any.
    pub(super) send_proxy: Option<Version>,
}

/// Sends the GET and judges the response. The caller bounds the whole exchange by the
/// check's timeout; `timeout` bounds the connect.
pub(super) async fn check(address: SocketAddr, request: &Request<'_>, timeout: Duration) -> Outcome {
    let stream = match common::connect(address, timeout).await {
        Ok(stream) => stream,
        Err(failed) => return failed,
    };
    exchange_on(stream, request).await
}

/// Sends the GET on a connected `stream` (after the PROXY header, if any) and judges the
/// response.
pub(super) async fn exchange_on(mut stream: tokio::net::TcpStream, request: &Request<'_>) -> Outcome {
    if let Err(failed) = common::send_proxy(&mut stream, request.send_proxy).await {
        return failed;
    }
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(error) => return Outcome::fail(format!("HTTP handshake failed: {error}")),
    };
    let get = hyper::Request::get(request.path)
        .header(HOST, &request.host)
        .header(USER_AGENT, "lbd-health-check")
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new());
    let get = match get {
        Ok(get) => get,
        Err(error) => return Outcome::fail(format!("cannot build the request: {error}")),
    };
    // The connection is driven in this task, beside the exchange, and dropped with it.
    let exchange = exchange(&mut sender, get, request);
    tokio::pin!(exchange, connection);
    let mut connection_over = false;
    loop {
        tokio::select! {
            outcome = &mut exchange => return outcome,
            _ = &mut connection, if !connection_over => connection_over = true,
        }
    }
}

/// Sends `get` and judges the response.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    get: hyper::Request<Empty<Bytes>>,
    request: &Request<'_>,
) -> Outcome {
    let response = match sender.send_request(get).await {
        Ok(response) => response,
        Err(error) => return Outcome::fail(format!("no HTTP response: {error}")),
    };
    let status = response.status().as_u16();
    if !request
        .expect_status
        .iter()
        .any(|&(low, high)| (low..=high).contains(&status))
    {
        return Outcome::fail(format!("HTTP {status}"));
    }
    let Some(expected) = request.expect_body else {
        return Outcome::pass(format!("HTTP {status}"));
    };
    let mut body = response.into_body();
    let mut seen = Vec::new();
    while seen.len() < BODY_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    seen.extend_from_slice(data);
                    if contains(&seen, expected.as_bytes()) {
                        return Outcome::pass(format!("HTTP {status}, body matches"));
                    }
                }
            }
            Some(Err(error)) => return Outcome::fail(format!("HTTP {status}, body cut short: {error}")),
            None => break,
        }
    }
    Outcome::fail(format!("HTTP {status}, body lacks {expected:?}"))
}
