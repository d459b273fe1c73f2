//! The admin API (control plane): HTTP/JSON under `/v1/` on loopback TCP or a Unix socket,
//! optionally behind a bearer token. Handlers pass each request to the director's loop
//! ([`Request`](crate::daemon::control::Request)) and wait for its answer, so requests are
//! applied one at a time, in order.

pub mod api;
mod server;

pub use server::{AdminHandle, Envelope, ServeError, serve};
