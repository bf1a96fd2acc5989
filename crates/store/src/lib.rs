//! A hyok node's durable store, on sled: sealed secrets, key versions, per-key policy and a
//! hash-chained audit log. A synchronous library: no async runtime, no clock (callers pass
//! times in), and every mutation is on disk before it returns `Ok`.
//!
//! # Layout
//! - [`seal`]: the node seal key ([`SealKey`], its own file, mode 0600) and AES-256-GCM sealing
//!   of secrets with the record's identity as associated data.
//! - [`keys`]: key ids and size limits, [`Usages`], [`KeyMeta`] (per-key policy),
//!   [`VersionInfo`], the byte layout of a family's policy and versions trees, and the key
//!   families: [`Family`] (what differs: trees, share sealing, usages), [`Ec`], [`Rsa`].
//! - [`audit`]: the hash-chained audit log's format, limits and verification.
//! - [`journal`]: what makes an audit append durable (a preallocated file, data-synced) without
//!   a sled flush on every request's path.
//! - [`store`]: [`Store`] — the sled database (trees `meta`, `keys`, `versions`, `rsa_keys`,
//!   `rsa_versions`, `vetoes`, `audit`), its transactions, locking and flushing — and [`Keys`], the
//!   handle on one family's keys ([`Store::ec`], [`Store::rsa`]) on which every key operation
//!   is written once for both families.
//! - [`veto`]: operator vetoes ([`Veto`]), kept apart from the admin's `enabled` flag.
//! - `error`: [`Error`], the one error type; it never carries secret bytes.

pub mod audit;
pub mod backup;
mod error;
pub mod generations;
pub mod journal;
pub mod keys;
pub mod seal;
pub mod store;
pub mod veto;

pub use audit::{AuditBreak, AuditEntry, AuditEvent};
pub use error::{Error, Result};
pub use generations::{Generation, Reshared};
pub use keys::{Ec, Family, KeyMeta, Rsa, Usages, VersionInfo};
pub use seal::SealKey;
pub use store::{Keys, Store};
pub use veto::{MAX_VETO_REASON, Veto};
