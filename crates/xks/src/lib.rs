//! `hyok-xks`: the AWS KMS External Key Store (XKS) proxy API v1, served over HTTPS in front of
//! a hyok cluster. Every cryptographic operation is a gRPC call to the coordinator, which
//! combines the nodes' partial results; this process holds no key material. What is not XKS —
//! the `[tls]` and `[coordinator]` tables, the HTTPS accept loop and its rustls configuration,
//! the coordinator connection pool, bounded bodies, the binary's entry point — is the
//! front-end toolkit's (`hyok_frontend`); [`App`] plugs this crate into it.
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
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod api;
mod backend;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod credentials;
mod envelope;
mod error;
mod health;
mod server;
mod service;
pub mod sigv4;

pub use config::Config;
pub use error::XksError;

use anyhow::Result;
use hyok_frontend::{ConfigFile, Frontend};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the XKS API on `listener` until `shutdown` completes.
///
/// # Errors
/// If the configuration, the certificates or the coordinator endpoint are unusable.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let tls = hyok_frontend::tls::server_config(&config.tls)?;
    let backend = Arc::new(backend::Backend::new(&config.coordinator)?);
    let health = Arc::new(health::HealthMonitor::new(backend.clone(), config.health.clone()));
    let xks = Arc::new(service::Xks::new(&config, backend, health.clone())?);
    let monitor = tokio::spawn(health.run());
    let pipeline = Arc::new(server::Pipeline::new(xks, config.max_in_flight));
    server::serve(pipeline, tokio_rustls::TlsAcceptor::from(tls), listener, shutdown).await;
    monitor.abort();
    Ok(())
}

/// hyok-xks as a front-end of the toolkit: `hyok_frontend::main::<App>()` is the binary.
#[derive(Debug)]
pub enum App {}

impl Frontend for App {
    const NAME: &'static str = "hyok-xks";
    const ABOUT: &'static str = "AWS KMS External Key Store proxy for a hyok cluster";
    const CONFIG_ENV: &'static str = "HYOK_XKS_CONFIG";
    type Config = Config;

    fn run(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send {
        crate::run(config, listener, shutdown)
    }
}

/// `hyok-xks --config FILE` (also `hyokctl xks serve`).
pub type Args = hyok_frontend::Args<App>;
