//! The HTTP side of the admin API: routes, bearer-token check, body limit, listeners.

use std::{io, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request as HttpRequest, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

use crate::{
    api::{Answer, Change, ControlError, Problem, Request, routes},
    config::{AdminConfig, AdminListen},
};

/// The largest request body accepted (a `restore` of some ten thousand reals fits).
const BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What one admin client may hold: a request head within 10 s, an answer within 60 s (a body
/// trickled in counts), 64 connections at once.
const LIMITS: crate::httpd::Limits = crate::httpd::Limits {
    header_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(60),
    max_connections: 64,
};

/// Bodies parsed at once, each on a blocking thread: the control loop never parses.
const PARSERS: usize = 2;

/// A request on its way to the director, with where to send the answer.
pub(crate) type Envelope = (Request, oneshot::Sender<Result<Answer, ControlError>>);

/// The admin API could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen for the admin API on {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// Why.
        source: io::Error,
    },
    /// The token file could not be read, or is empty.
    #[error("cannot use admin.token_file {path}: {reason}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The running admin API: the requests it receives, for the director's loop.
#[derive(Debug)]
pub(crate) struct AdminHandle {
    /// Requests to answer.
    pub requests: mpsc::Receiver<Envelope>,
    /// Where it listens, for the log.
    pub address: String,
    socket_path: Option<PathBuf>,
    _server: AbortOnDropHandle<()>,
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        if let Some(path) = &self.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<Envelope>,
    token: Option<Arc<[u8]>>,
    parsers: Arc<tokio::sync::Semaphore>,
}

/// Starts serving the admin API as `config` says. Must run inside a tokio runtime.
pub(crate) async fn serve(config: &AdminConfig) -> Result<AdminHandle, ServeError> {
    let token = match &config.token_file {
        Some(path) => Some(read_token(path)?),
        None => None,
    };
    let (sender, requests) = mpsc::channel(64);
    let state = AppState {
        requests: sender,
        token,
        parsers: Arc::new(tokio::sync::Semaphore::new(PARSERS)),
    };
    let app = router(state);
    let (address, socket_path, server) = match &config.listen {
        AdminListen::Tcp(address) => {
            let listener =
                tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(|source| ServeError::Listen {
                        address: address.to_string(),
                        source,
                    })?;
            let server = tokio::spawn(crate::httpd::serve(listener, app, LIMITS));
            (address.to_string(), None, server)
        }
        AdminListen::Unix(path) => {
            let listener = bind_unix(path).map_err(|source| ServeError::Listen {
                address: format!("unix:{}", path.display()),
                source,
            })?;
            let server = tokio::spawn(crate::httpd::serve(listener, app, LIMITS));
            (format!("unix:{}", path.display()), Some(path.clone()), server)
        }
    };
    Ok(AdminHandle {
        requests,
        address,
        socket_path,
        _server: AbortOnDropHandle::new(server),
    })
}

fn read_token(path: &std::path::Path) -> Result<Arc<[u8]>, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|error| ServeError::Token {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ServeError::Token {
            path: path.to_owned(),
            reason: "the file is empty".to_owned(),
        });
    }
    Ok(Arc::from(token.as_bytes()))
}

/// Binds a Unix socket readable and writable by its owner only, replacing a stale socket.
fn bind_unix(path: &std::path::Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(metadata) = std::fs::symlink_metadata(path) {
        if !metadata.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process serves this socket",
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(routes::STATUS, get(|s: State<AppState>| ask(s, Request::Status)))
        .route(
            routes::SERVICES,
            get(|s: State<AppState>| ask(s, Request::Services))
                .post(|s: State<AppState>, body: Bytes| async move {
                    change(s, body, |service| Change::AddService(Box::new(service))).await
                })
                .put(|s: State<AppState>, body: Bytes| async move {
                    change(s, body, Change::ReplaceServices).await
                }),
        )
        .route(
            routes::SERVICE,
            get(|s: State<AppState>, Path(service): Path<String>| ask(s, Request::Service(service)))
                .patch(
                    |s: State<AppState>, Path(service): Path<String>, body: Bytes| async move {
                        change(s, body, |edit| Change::EditService {
                            service,
                            edit: Box::new(edit),
                        })
                        .await
                    },
                )
                .delete(|s: State<AppState>, Path(service): Path<String>| {
                    ask(s, change_request(Change::DeleteService(service)))
                }),
        )
        .route(
            routes::REALS,
            post(
                |s: State<AppState>, Path(service): Path<String>, body: Bytes| async move {
                    change(s, body, |reals| Change::AddReals { service, reals }).await
                },
            ),
        )
        .route(
            routes::REAL,
            axum::routing::patch(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>, body: Bytes| async move {
                    change(s, body, |edit| Change::EditReals {
                        service,
                        address,
                        edit,
                    })
                    .await
                },
            )
            .delete(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>| {
                    ask(s, change_request(Change::DeleteReals { service, address }))
                },
            ),
        )
        .route(
            routes::DRAIN,
            post(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>| {
                    ask(s, change_request(Change::DrainReals { service, address }))
                },
            ),
        )
        .route(
            routes::MAINT,
            post(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>| {
                    ask(s, change_request(Change::MaintainReals { service, address, on: true }))
                },
            ),
        )
        .route(
            routes::READY,
            post(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>| {
                    ask(s, change_request(Change::MaintainReals { service, address, on: false }))
                },
            ),
        )
        .route(
            routes::KILL_SERVICE_FLOWS,
            post(|s: State<AppState>, Path(service): Path<String>| {
                ask(s, change_request(Change::KillFlows { service, address: None }))
            }),
        )
        .route(
            routes::KILL_REAL_FLOWS,
            post(
                |s: State<AppState>, Path((service, address)): Path<(String, String)>| {
                    ask(
                        s,
                        change_request(Change::KillFlows {
                            service,
                            address: Some(address),
                        }),
                    )
                },
            ),
        )
        .route(
            routes::ZERO_SERVICE,
            post(|s: State<AppState>, Path(service): Path<String>| {
                ask(s, change_request(Change::Zero(Some(service))))
            }),
        )
        .route(
            routes::ZERO,
            post(|s: State<AppState>| ask(s, change_request(Change::Zero(None)))),
        )
        .route(
            routes::RELOAD,
            post(|s: State<AppState>| ask(s, change_request(Change::Reload))),
        )
        .route(
            routes::CONNECTIONS,
            get(|s: State<AppState>| ask(s, Request::Connections)),
        )
        .route(routes::SAVE, get(|s: State<AppState>| ask(s, Request::Save)))
        .route(
            routes::DIRECTORS,
            get(|s: State<AppState>| ask(s, Request::Directors)),
        )
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "no such resource: see docs/api.md for the routes under /v1/".to_owned(),
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Gives every error a JSON body, including the ones axum answers by itself (a path that
/// does not decode, a body over the limit, a method not allowed).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    problem(status, if text.is_empty() { reason } else { text })
}

/// With a token configured, every request needs `Authorization: Bearer <token>`.
async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: HttpRequest,
    next: Next,
) -> Response {
    if let Some(token) = &state.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), token)) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (lbadm --token-file FILE)".to_owned(),
            );
        }
    }
    let force = headers.contains_key(routes::FORCE_HEADER);
    FORCE.scope(force, next.run(request)).await
}

/// Compares without a timing that depends on where the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Reads a YAML or JSON body (empty = `null`) as the document `make` takes, and sends the
/// change it makes.
async fn change<T: DeserializeOwned + Send + 'static>(
    state: State<AppState>,
    body: Bytes,
    make: impl FnOnce(T) -> Change,
) -> Response {
    match parse_body(&state.parsers, body).await {
        Ok(document) => ask(state, change_request(make(document))).await,
        Err(error) => refusal(&error),
    }
}

/// Reads a body on a blocking thread (at most [`PARSERS`] at once), after a one-pass check
/// of its size and nesting: neither the control loop nor this runtime ever waits on a parse.
async fn parse_body<T: DeserializeOwned + Send + 'static>(
    parsers: &tokio::sync::Semaphore,
    body: Bytes,
) -> Result<T, ControlError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"null")
    } else {
        body
    };
    crate::config::check_shape(&body).map_err(ControlError::Body)?;
    let _permit = parsers
        .acquire()
        .await
        .map_err(|_| ControlError::Failed("the director is stopping".to_owned()))?;
    tokio::task::spawn_blocking(move || serde_yaml::from_slice(&body))
        .await
        .map_err(|_| ControlError::Body("it could not be read".to_owned()))?
        .map_err(|error| ControlError::Body(error.to_string()))
}

tokio::task_local! {
    /// Whether the request being served carries `lbd-force` (`lbadm --force`).
    static FORCE: bool;
}

/// A change request from the client of the request being served.
fn change_request(change: Change) -> Request {
    Request::Change {
        change,
        client: crate::httpd::client(),
        force: FORCE.try_with(|force| *force).unwrap_or(false),
    }
}

/// Sends `request` to the director and turns its answer into a response.
async fn ask(State(state): State<AppState>, request: Request) -> Response {
    let (reply, answer) = oneshot::channel();
    if state.requests.send((request, reply)).await.is_err() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the director is stopping".to_owned(),
        );
    }
    match answer.await {
        Ok(Ok(Answer::Json(bytes))) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Ok(Answer::Yaml(text))) => ([(header::CONTENT_TYPE, "application/yaml")], text).into_response(),
        Ok(Err(error)) => refusal(&error),
        Err(_) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the director is stopping".to_owned(),
        ),
    }
}

fn refusal(error: &ControlError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    problem(status, error.to_string())
}

fn problem(status: StatusCode, error: String) -> Response {
    (status, axum::Json(Problem { error })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
