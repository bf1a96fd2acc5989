//! A hyok node's durable store, on sled.
//!
//! # Layout
//! - [`seal`]: the node seal key (its own file, mode 0600) and AES-256-GCM sealing of secrets.
//! - [`store`]: [`Store`] — sealed identity, key versions (PENDING → ACTIVE), per-key policy,
//!   and the audit log; every mutation is flushed before it returns.
//! - [`audit`]: the hash-chained audit log's format and verification.
//! - `error`: [`Error`].
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
mod error;
pub mod seal;
pub mod store;

pub use audit::{AuditBreak, AuditEntry, AuditEvent};
pub use error::{Error, Result};
pub use seal::SealKey;
pub use store::{KeyMeta, Store, Usages, VersionInfo};
