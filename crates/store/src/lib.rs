//! A hyok node's durable store, on sled: sealed secrets, key versions, per-key policy and a
//! hash-chained audit log. A synchronous library: no async runtime, no clock (callers pass
//! times in), and every mutation is flushed to disk before it returns `Ok`.
//!
//! # Layout
//! - [`seal`]: the node seal key ([`SealKey`], its own file, mode 0600) and AES-256-GCM sealing
//!   of secrets with the record's identity as associated data.
//! - [`keys`]: key ids and size limits, [`Usages`], [`KeyMeta`] (per-key policy),
//!   [`VersionInfo`], and the byte layout of the `keys` and `versions` trees.
//! - [`audit`]: the hash-chained audit log's format, limits and verification.
//! - [`store`]: [`Store`] — the sled database (trees `meta`, `keys`, `versions`, `rsa_keys`,
//!   `rsa_versions`, `audit`), its
//!   transactions, locking and flushing.
//! - `error`: [`Error`], the one error type; it never carries secret bytes.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
mod error;
pub mod keys;
pub mod seal;
pub mod store;

pub use audit::{AuditBreak, AuditEntry, AuditEvent};
pub use error::{Error, Result};
pub use keys::{KeyMeta, Usages, VersionInfo};
pub use seal::SealKey;
pub use store::Store;
