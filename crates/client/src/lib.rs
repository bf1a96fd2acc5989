//! The client side of hyok's gRPC API, and the cluster's mutual-TLS conventions.
//!
//! # Layout
//! - `roles`: the roles in the cluster and how certificates carry them.
//! - `tls`: mutual-TLS configuration for servers and clients, and role checks on callers.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod roles;
pub mod tls;

pub use roles::Role;
pub use tls::TlsFiles;
