//! Why the packet data plane could not start (or take a new configuration).

use std::io;

use thiserror::Error;

use super::setup::SetupError;

/// The packet data plane could not start.
#[derive(Debug, Error)]
pub enum PlaneError {
    /// The TUN device could not be opened.
    #[error(
        "cannot open the TUN device {name}: {source} (lbd needs CAP_NET_ADMIN and /dev/net/tun for nat services)"
    )]
    Tun {
        /// The device.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// The host setup failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `setup: manual` and the host lacks steps.
    #[error("dataplane setup is manual and these are missing (run them, or set `setup: auto`):\n{0}")]
    Missing(String),
    /// The server-side interface or a raw socket could not be used.
    #[error("cannot send packets on {name}: {source}")]
    Interface {
        /// The interface or socket.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// A worker thread could not start.
    #[error("cannot start a packet worker: {0}")]
    Worker(io::Error),
}
