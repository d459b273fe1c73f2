//! The admin API's HTTP side (control plane): HTTP/JSON under `/v1/` on loopback TCP or a Unix
//! socket, optionally behind a bearer token. Handlers pass each request to the director's loop
//! as an [`api::Request`](crate::api::Request) and wait for its answer, so requests are applied
//! one at a time, in order. What the requests mean is the control loop's (`daemon::control`);
//! the shared types and routes are in [`api`](crate::api).

mod server;

pub(crate) use server::{AdminHandle, Envelope, ServeError, serve};
