//! The admin API client: one HTTP/1.1 request per call, over TCP or a Unix socket (hyper).

use std::{path::PathBuf, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    Method, StatusCode,
    body::Bytes,
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::api::Problem;

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the director's admin API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `HOST:PORT`.
    Tcp(String),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads `IP:PORT` or `unix:/path`.
    pub fn parse(text: &str) -> Self {
        match text.strip_prefix("unix:") {
            Some(path) => Self::Unix(PathBuf::from(path)),
            None => Self::Tcp(text.to_owned()),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(address) => f.write_str(address),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A call that did not succeed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The director could not be reached (exit status 3).
    #[error(
        "cannot reach the director at {endpoint}: {reason} (is lbd running with an `admin:` section? \
         choose the address with --admin or LBADM_ADMIN)"
    )]
    Unreachable {
        /// Where we tried.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// The director refused the request; nothing changed (exit status 1).
    #[error("{message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The director's explanation.
        message: String,
    },
}

/// A client of one director.
#[derive(Debug, Clone)]
pub struct Client {
    force: bool,
    endpoint: Endpoint,
    token: Option<String>,
}

impl Client {
    /// A client of the director at `endpoint`, sending `token` if given.
    pub fn new(endpoint: Endpoint, token: Option<String>) -> Self {
        Self {
            endpoint,
            token,
            force: false,
        }
    }

    /// The same client, asking a backup to take changes anyway (`lbadm --force`).
    pub fn forced(self, force: bool) -> Self {
        Self { force, ..self }
    }

    /// Sends one request; returns the body of a 2xx answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(self.unreachable(format!("no answer within {}s", CALL_TIMEOUT.as_secs()))),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        match &self.endpoint {
            Endpoint::Tcp(address) => {
                let stream = tokio::net::TcpStream::connect(address)
                    .await
                    .map_err(|error| self.unreachable(error.to_string()))?;
                self.request(stream, method, path, body).await
            }
            Endpoint::Unix(socket) => {
                let stream = tokio::net::UnixStream::connect(socket)
                    .await
                    .map_err(|error| self.unreachable(error.to_string()))?;
                self.request(stream, method, path, body).await
            }
        }
    }

    async fn request<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| self.unreachable(error.to_string()))?;
        tokio::spawn(connection);
        let host = match &self.endpoint {
            Endpoint::Tcp(address) => address.clone(),
            Endpoint::Unix(_) => "localhost".to_owned(),
        };
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, host);
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/yaml");
        }
        if self.force {
            request = request.header(crate::api::routes::FORCE_HEADER, "yes");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|error| self.unreachable(format!("cannot build the request: {error}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| self.unreachable(error.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|error| self.unreachable(error.to_string()))?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let message = serde_json::from_slice::<Problem>(&bytes)
            .map(|problem| problem.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_owned());
        Err(ClientError::Rejected {
            status: status.as_u16(),
            message: match status {
                StatusCode::UNAUTHORIZED => format!("{message} (the director wants a token)"),
                _ => message,
            },
        })
    }

    fn unreachable(&self, reason: String) -> ClientError {
        ClientError::Unreachable {
            endpoint: self.endpoint.to_string(),
            reason,
        }
    }
}
