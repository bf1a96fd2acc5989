//! `hyok-xks`: the AWS KMS External Key Store (XKS) proxy API v1, served over HTTPS in front of
//! a hyok cluster. Every cryptographic operation is a gRPC call to the coordinator, which
//! combines the nodes' partial results; this process holds no key material. What is not XKS —
//! the `[tls]` and `[coordinator]` tables, the HTTPS accept loop and its rustls configuration,
//! the coordinator connection pool, bounded bodies, the binary's entry point — is the
//! front-end toolkit's (`hyok_frontend`): [`Config`] implements its `Frontend`, so
//! `hyok_frontend::main::<Config>()` is the binary and `config.run(listener, shutdown)` serves.
//!
//! # Layout
//! - [`config`]: the TOML configuration (key stores, key mapping, limits, and the toolkit's
//!   `[tls]` and `[coordinator]` tables).
//! - `server`: the per-request pipeline (body, route, method, concurrency, SigV4, API; one log
//!   line per request) and the credentials reloader, over `hyok_frontend::https::serve`.
//! - `service`: the four APIs over plain types; `api`: their JSON bodies; `envelope`:
//!   ciphertext metadata, the AAD construction and the CDIV; `error`: the XKS error names and
//!   HTTP statuses, in one place.
//! - [`sigv4`]: AWS Signature Version 4 verification (and signing, for tests and benchmarks);
//!   [`credentials`]: SigV4 credentials, generated and reloaded.
//! - `backend`: the coordinator calls and what their failures mean to KMS; `health`: the deep
//!   health check.
//! - [`client`] (feature `client`): a signed XKS client, as KMS calls the proxy (for
//!   `hyokctl bench` and tests).

mod api;
mod backend;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub use hyok_evidence::credentials;
mod envelope;
mod error;
mod health;
mod server;
mod service;
pub use hyok_evidence::sigv4;

pub use config::Config;
pub use error::XksError;

use anyhow::Result;
use hyok_frontend::{Binary, ConfigFile, Frontend, Shutdown};
use std::sync::Arc;
use tokio::net::TcpListener;

impl Frontend for Config {
    const BINARY: Binary =
        Binary::new("hyok-xks", "HYOK_XKS_CONFIG", "AWS KMS External Key Store proxy for a hyok cluster");

    /// Serves the XKS API on `listener` until `shutdown` completes.
    async fn run(mut self, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
        self.check()?;
        let tls = hyok_frontend::tls::server_config(&self.tls)?;
        let backend = Arc::new(backend::Backend::new(&self.coordinator)?);
        let health = Arc::new(health::HealthMonitor::new(backend.clone(), self.health.clone())?);
        let xks = Arc::new(service::Xks::new(&self, backend, health.clone())?);
        let monitor = tokio::spawn(health.run());
        let versions = tokio::spawn(xks.clone().refresh_versions());
        let pipeline = Arc::new(server::Pipeline::new(xks, self.max_in_flight));
        server::serve(pipeline, tokio_rustls::TlsAcceptor::from(tls), listener, shutdown).await;
        monitor.abort();
        versions.abort();
        Ok(())
    }
}

/// `hyok-xks --config FILE` (also `hyokctl xks serve`).
pub type Args = hyok_frontend::Args<Config>;
