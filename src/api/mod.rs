//! The admin API's shared language: its routes, the requests and answers that pass between
//! the admin server and the director's control loop, and the JSON documents that `lbd` writes
//! and `lbadm` reads. A leaf of the module graph: the admin server, the control loop and
//! `lbadm` all use it, and it uses none of them.

mod documents;
mod requests;
pub mod routes;

pub use self::{
    documents::{
        ClusterStatus, Connection, Counters, Director, HaStatus, Health, Killed, Persistence, Problem, Rates,
        Real, Service, Status,
    },
    requests::{Answer, Change, ControlError, Request},
};
