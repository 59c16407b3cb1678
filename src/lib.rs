//! isogate: OAuth 2.0 resource isolation for any HTTP API.
//!
//! One resource file (see [`config`]) drives a token service ([`issuer`]) that mints RFC 9068
//! access tokens cut down to one API resource (RFC 8707), and a gateway that lets a request
//! through only with a token minted for the API it targets.

pub(crate) mod admin;
pub mod clock;
pub mod config;
pub mod dpop;
pub mod grants;
pub(crate) mod http;
pub mod issuer;
pub mod jwt;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod positions;
pub(crate) mod protocol;
pub mod proxy;
pub mod reload;
pub mod resources;
pub mod secret;
mod server;
pub(crate) mod state;

pub use memory::BLOCKING_KEEP_ALIVE;
pub use server::{BindError, Server, StartError};

use std::fmt;

use crate::config::Config;

/// A listener's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The token service.
    Issuer,
    /// The gateway.
    Proxy,
    /// Health and metrics.
    Admin,
}

impl Role {
    /// `issuer`, `proxy` or `admin`: the name in log lines and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Role::Issuer => "issuer",
            Role::Proxy => "proxy",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Something stopped a running server.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be bound or the grant store opened.
    #[error(transparent)]
    Start(#[from] StartError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Serves `config` until SIGTERM or SIGINT, reloading the file on SIGHUP.
pub async fn run(config: Config) -> Result<(), RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(RunError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RunError::Signals)?;
    let mut hup = signal(SignalKind::hangup()).map_err(RunError::Signals)?;
    let server = Server::start(config).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => server.reload(),
        }
    }
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
