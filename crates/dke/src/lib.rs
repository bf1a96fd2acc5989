//! `hyok-dke`: the Microsoft 365 Double Key Encryption (DKE) key service, served over HTTPS in
//! front of a hyok cluster. `GET /{keyName}` answers the public key of the key's active
//! version; `POST /{keyName}/{keyId}/decrypt` unwraps an RSA-OAEP-256 ciphertext through the
//! coordinator's threshold RSA decryption (no process ever holds the private key), for a user
//! whose JWT bearer token validates and who is allowed to use the key.
//!
//! What is not DKE — the `[tls]` and `[coordinator]` tables, the HTTPS accept loop and its
//! rustls configuration, the coordinator connection pool, bounded bodies, the binary's entry
//! point — is the front-end toolkit's (`hyok_frontend`): [`Config`] implements its
//! `Frontend`, so `hyok_frontend::main::<Config>()` is the binary.
//!
//! # Layout
//! - [`config`]: the TOML configuration (keys and who may use them, token rules, and the
//!   toolkit's `[tls]` and `[coordinator]` tables).
//! - `server`: the per-request pipeline (body, route, method, concurrency, service; one log
//!   line per request), the JWKS file watcher and URL refresher, over
//!   `hyok_frontend::https::serve`.
//! - `service`: the two operations over plain types; [`error`]: HTTP statuses and bodies, in
//!   one place.
//! - [`jwt`]: JWT validation (RS256, ES256) against a JWKS, and RS256 minting for dev issuers;
//!   `jwks_url`: fetching the issuer's JWKS over HTTPS.
//! - [`backend`]: the [`backend::Backend`] trait (the two cluster calls) and the coordinator
//!   client behind it.
//! - [`client`] (feature `client`): a small HTTPS client, as Office calls the service (tests,
//!   tools).

pub mod backend;
#[cfg(feature = "client")]
pub mod client;
pub mod config;
pub mod error;
mod jwks_url;
pub use hyok_evidence::jwt;
mod server;
mod service;

pub use config::Config;

use anyhow::Result;
use hyok_frontend::{Binary, ConfigFile, Frontend, Shutdown};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

impl Frontend for Config {
    const BINARY: Binary =
        Binary::new("hyok-dke", "HYOK_DKE_CONFIG", "Microsoft 365 DKE key service for a hyok cluster");

    /// Serves DKE on `listener` until `shutdown` completes, with the coordinator of the
    /// configuration.
    async fn run(self, listener: TcpListener, shutdown: impl Shutdown) -> Result<()> {
        let backend = Arc::new(backend::Coordinator::new(&self.coordinator)?);
        run_with_backend(self, backend, listener, shutdown).await
    }
}

/// `Frontend::run` over any [`backend::Backend`] (tests use an in-process threshold RSA fake).
///
/// # Errors
/// If the configuration, certificates or JWKS are unusable.
pub async fn run_with_backend<B: backend::Backend>(
    mut config: Config,
    backend: Arc<B>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    config.check()?;
    let tls = hyok_frontend::tls::server_config(&config.tls)?;
    let dke = Arc::new(service::Dke::new(&config, backend)?);
    let pipeline = Arc::new(server::Pipeline::new(dke, config.max_in_flight));
    server::serve(pipeline, tokio_rustls::TlsAcceptor::from(tls), listener, shutdown).await;
    Ok(())
}

/// `hyok-dke --config FILE` (also `hyokctl dke serve`).
pub type Args = hyok_frontend::Args<Config>;
