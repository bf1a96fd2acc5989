//! The client side of hyok's gRPC API, and the cluster's mutual-TLS conventions.
//!
//! # Layout
//! - `roles`: the roles in the cluster and how certificates carry them.
//! - `tls`: mutual-TLS configuration for servers and clients, and role checks on callers.
//! - `connect`: a typed `KeyVault` client over mutual TLS.
//! - `https`: the HTTPS accept loop the HTTP front-ends share.
//! - [`shutdown_signal`]: Ctrl-C / SIGTERM for the binaries.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod connect;
pub mod https;
pub mod roles;
mod signal;
pub mod tls;

pub use connect::{VaultClient, connect_vault};
pub use roles::Role;
pub use signal::shutdown_signal;
pub use tls::TlsFiles;
