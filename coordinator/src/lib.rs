//! `hyok-coordinator`: the stateless centre of a hyok cluster. It serves the public `KeyVault`
//! API, fans each request out to the nodes, verifies their partial results and combines them in
//! the exponent. It never holds a share and never rebuilds a key.
//!
//! # Layout
//! - [`config`]: the TOML configuration; [`cli`]: the command line.
//! - `pool`: channels to the nodes and their health; `batch`: per-node request batching;
//!   `latency`: each node's answer time estimate, from which a gather hedges.
//! - `fanout`: every way of asking nodes, once — gather t partials (any partial kind) with
//!   hedging and retries within the deadline, ask every node, the timeout helper.
//! - `metadata`: key metadata of both key families, trusted when t distinct nodes agree, cached
//!   and refreshed in the background (`hyok_proto::cache`).
//! - `vault`: encrypt, decrypt, wrap, unwrap; `admin`: create, rotate, enable, disable,
//!   status; `dkg`: the DKG relay; `reshare`: repair and refresh of one version; `epoch`:
//!   membership changes (every version reshared to the new members, then committed).
//! - `rsa`: threshold RSA — `view` (metadata), `import` (a dealt key), `decrypt`.
//! - `service`: the tonic adapter; `error`: errors → gRPC status codes.
//! - `metrics`: what the coordinator knows of each node (partial latency, refusals, invalid
//!   partials, reachability); per-RPC metrics are `hyok_proto::metrics::GrpcLayer`'s.

mod admin;
mod batch;
pub mod cli;
pub mod config;
mod dkg;
mod epoch;
mod error;
mod fanout;
mod latency;
mod metadata;
mod metrics;
mod pool;
mod reshare;
mod rsa;
mod service;
mod vault;

pub use config::Config;
pub use vault::Vault;

use anyhow::Result;
use hyok_proto::v1::key_vault_server::KeyVaultServer;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// When `path` was last modified, if it can be read.
fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The gRPC health service name clients check.
pub const HEALTH_SERVICE: &str = "hyok.v1.KeyVault";

/// Serves KeyVault (with gRPC reflection and health) on `listener` until `shutdown` completes.
/// Health reports SERVING while at least t nodes answer the periodic probe.
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<()> {
    config.validate()?;
    let vault = Arc::new(Vault::new(&config)?);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status(HEALTH_SERVICE, ServingStatus::NotServing).await;
    reporter.set_service_status("", ServingStatus::NotServing).await;
    let prober = {
        let vault = vault.clone();
        let source = config.source.clone();
        let period = Duration::from_millis(config.probe_ms.max(50));
        tokio::spawn(async move {
            let mut last = None;
            let mut monitor = hyok_proto::metrics::ThresholdMonitor::new(
                "hyok_coordinator",
                vault.pool().all().len(),
                vault.pool().threshold(),
            );
            let mut watched = source.map(|path| (modified(&path), path));
            loop {
                if let Some((seen, path)) = &mut watched {
                    let now = modified(path);
                    if now != *seen {
                        *seen = now;
                        match Config::load(path).and_then(|c| vault.pool().reconfigure(&c)) {
                            Ok(()) => {}
                            Err(e) => {
                                tracing::error!(error = %e, "the reloaded configuration is refused; keeping the last")
                            }
                        }
                    }
                }
                vault.pool().probe_all(period.min(Duration::from_secs(1))).await;
                let up = vault.pool().up_count();
                monitor.observe(up);
                let status =
                    if up >= vault.pool().threshold() { ServingStatus::Serving } else { ServingStatus::NotServing };
                if last != Some(status) {
                    tracing::info!(reachable = up, threshold = vault.pool().threshold(), ?status, "cluster health");
                    reporter.set_service_status(HEALTH_SERVICE, status).await;
                    reporter.set_service_status("", status).await;
                    last = Some(status);
                }
                tokio::time::sleep(period).await;
            }
        })
    };
    let repairer = (config.repair_ms > 0).then(|| {
        let vault = vault.clone();
        let period = Duration::from_millis(config.repair_ms.max(500));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if vault.pool().change_pending() {
                    continue;
                }
                // Versions a reachable node lacks (down at creation, wiped, a PENDING leftover)
                // are reshared to it: nobody has to ask.
                match vault.reshare_keys(None, true, "auto-repair").await {
                    Ok(done) if !done.versions.is_empty() => {
                        for v in done.versions {
                            tracing::info!(key_id = v.key_id, version = v.version, generation = v.generation,
                                receivers = ?v.receivers, error = v.error, "auto-repair");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "auto-repair skipped"),
                }
            }
        })
    });
    // Key metadata in use is read again in the background, so no request waits for it.
    let refresher = {
        let vault = vault.clone();
        let budget = config.request_timeout();
        tokio::spawn(async move {
            // Every key the nodes hold is listed at start and once per TTL (one call per node
            // for all keys), so that a key's first request, whenever it comes, finds its view.
            let mut listed: Option<tokio::time::Instant> = None;
            loop {
                if listed.is_none_or(|at| at.elapsed() >= vault.metadata.ttl()) {
                    let ec = vault.metadata.preload(&vault.pool, budget).await;
                    let rsa = vault.rsa_metadata.preload(&vault.pool, budget).await;
                    if let (Ok(ec), Ok(rsa)) = (&ec, &rsa) {
                        if listed.is_none() {
                            tracing::info!(keys = ec, rsa_keys = rsa, "key metadata preloaded");
                        }
                        listed = Some(tokio::time::Instant::now());
                    }
                }
                tokio::time::sleep(vault.metadata.refresh_period()).await;
                vault.metadata.refresh_due(&vault.pool, budget).await;
                vault.rsa_metadata.refresh_due(&vault.pool, budget).await;
            }
        })
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(hyok_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let result = Server::builder()
        .layer(hyok_proto::metrics::GrpcLayer::new())
        .layer(hyok_proto::request_id::SpanLayer::new("coordinator"))
        .tls_config(config.tls_files().server_config()?)?
        .add_service(health)
        .add_service(reflection)
        .add_service(
            KeyVaultServer::new(service::VaultService::new(vault))
                .max_decoding_message_size(4 * 1024 * 1024)
                .max_encoding_message_size(4 * 1024 * 1024),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    prober.abort();
    refresher.abort();
    if let Some(repairer) = repairer {
        repairer.abort();
    }
    result?;
    Ok(())
}
