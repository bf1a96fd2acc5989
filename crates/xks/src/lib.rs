//! `hyok-xks`: the AWS KMS External Key Store (XKS) proxy API v1, served over HTTPS in front of
//! a hyok cluster. Every cryptographic operation is a gRPC call to the coordinator, which
//! combines the nodes' partial results; this process holds no key material.
//!
//! # Layout
//! - [`config`]: the TOML configuration (key stores, key mapping, limits); [`cli`]: the binary's
//!   command line.
//! - [`server`]: HTTPS accept loop, HTTP/1.1 and HTTP/2, the per-request pipeline; [`tls`]: the
//!   rustls configuration and the optional client-certificate subject check.
//! - [`service`]: the four APIs over plain types; [`api`]: their JSON bodies; [`envelope`]:
//!   ciphertext metadata, the AAD construction and the CDIV; [`error`]: the XKS error names and
//!   HTTP statuses, in one place.
//! - [`sigv4`]: AWS Signature Version 4 verification (and signing, for tests and benchmarks);
//!   [`credentials`]: SigV4 credentials, generated and reloaded.
//! - [`backend`]: the coordinator client; [`health`]: the deep health check.
//! - [`client`]: a signed XKS client, as KMS calls the proxy (for `hyokctl bench` and tests).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod backend;
pub mod cli;
pub mod client;
pub mod config;
pub mod credentials;
pub mod envelope;
pub mod error;
pub mod health;
pub mod server;
pub mod service;
pub mod sigv4;
pub mod tls;

pub use config::Config;

use anyhow::Result;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Serves the XKS API on `listener` until `shutdown` completes.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let tls = tls::server_config(&config.tls)?;
    let backend = Arc::new(backend::Backend::new(&config.coordinator)?);
    let health = Arc::new(health::HealthMonitor::new(backend.clone(), config.health.clone()));
    let xks = Arc::new(service::Xks::new(&config, backend, health.clone())?);
    let monitor = tokio::spawn(health.run());
    let pipeline = Arc::new(server::Pipeline::new(xks, config.max_in_flight));
    server::serve(pipeline, tokio_rustls::TlsAcceptor::from(tls), listener, shutdown).await;
    monitor.abort();
    Ok(())
}
