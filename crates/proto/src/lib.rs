//! hyok's gRPC API, generated from `proto/hyok/v1/*.proto` by protox + tonic-prost-build, and
//! the cluster's conventions around it that every component shares (node, coordinator,
//! front-ends, `hyokctl`, tests).
//!
//! # Layout
//! - [`v1`]: the generated messages, the `KeyVault` and `Node` clients and servers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`validate_key_id`]: the one key-id syntax every component enforces.
//! - [`Reason`]: why a `KeyVault` call failed, where the status code alone is ambiguous.
//! - [`roles`]: the roles in the cluster and how certificates carry them ([`Role`]).
//! - [`tls`]: mutual-TLS configuration for servers and clients ([`TlsFiles`]), and role checks
//!   on callers.
//! - [`connect`]: a typed `KeyVault` client over mutual TLS ([`connect_vault`]).
//! - `process`: what every binary's `main` needs: [`init_logging`] (text or JSON, by
//!   [`LOG_FORMAT_ENV`]) and [`shutdown_signal`].
//! - [`request_id`]: one request id through every hop: the gRPC servers' per-call log span
//!   ([`request_id::SpanLayer`]) and how handlers adopt, pass on or make the id.
//! - [`metrics`]: the process-wide Prometheus registry and its listener, process metrics, the
//!   gRPC servers' per-RPC layer and the threshold monitor.

pub mod cache;
pub mod connect;
pub mod metrics;
mod process;
pub mod request_id;
pub mod roles;
pub mod tls;
pub mod whole_body;

pub use connect::{VaultClient, connect_vault};
pub use process::{LOG_FORMAT_ENV, LogFormat, init_logging, shutdown_signal};
pub use roles::Role;
pub use tls::TlsFiles;

/// How many partial requests the coordinator puts in one call to a node by default (its
/// `max_batch`); a node runs a batch up to this size on its gRPC worker, larger ones on its
/// blocking pool.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Generated code for package `hyok.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("hyok.v1");

    /// Says which kind of evidence it is, nothing more: a bearer token or a signed request is a
    /// credential, and never reaches a log.
    impl std::fmt::Debug for Evidence {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let kind = match &self.kind {
                Some(evidence::Kind::Xks(_)) => "xks",
                Some(evidence::Kind::BearerToken(_)) => "bearer-token",
                Some(evidence::Kind::Caller(_)) => "caller",
                None => "none",
            };
            write!(f, "Evidence({kind}, <redacted>)")
        }
    }
}

/// The `FileDescriptorSet` of every hyok proto file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hyok_descriptor.bin"));

/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Key ids are `[A-Za-z0-9._-]{1,128}`.
pub fn validate_key_id(key_id: &str) -> Result<(), &'static str> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err("key id must be 1 to 128 characters");
    }
    if !key_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("key id may contain only A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

/// The gRPC metadata entry that carries a [`Reason`] on `NOT_FOUND` and `FAILED_PRECONDITION`
/// statuses from the coordinator.
pub const REASON_HEADER: &str = "hyok-reason";

/// Why a `KeyVault` call was refused, for callers that must answer in another protocol's
/// vocabulary (a disabled key and a forbidden usage are both `FAILED_PRECONDITION`; a missing
/// key and a missing version both `NOT_FOUND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No such key.
    KeyNotFound,
    /// The key exists; the version does not.
    VersionNotFound,
    /// The key is disabled on too many nodes to be used.
    KeyDisabled,
    /// The key's usages do not allow the operation.
    UsageNotAllowed,
    /// The request carries no evidence, or the nodes' policies refused it (PERMISSION_DENIED,
    /// as opposed to a caller certificate without the role).
    EvidenceRefused,
}

impl Reason {
    const ALL: [Reason; 5] = [
        Reason::KeyNotFound,
        Reason::VersionNotFound,
        Reason::KeyDisabled,
        Reason::UsageNotAllowed,
        Reason::EvidenceRefused,
    ];

    /// The metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::KeyNotFound => "key-not-found",
            Reason::VersionNotFound => "version-not-found",
            Reason::KeyDisabled => "key-disabled",
            Reason::UsageNotAllowed => "usage-not-allowed",
            Reason::EvidenceRefused => "evidence-refused",
        }
    }

    /// `status` carrying this reason (the one place the metadata entry is written).
    pub fn attach(self, mut status: tonic::Status) -> tonic::Status {
        status.metadata_mut().insert(REASON_HEADER, tonic::metadata::MetadataValue::from_static(self.as_str()));
        status
    }

    /// The reason a status carries, if any.
    pub fn of(status: &tonic::Status) -> Option<Reason> {
        let value = status.metadata().get(REASON_HEADER)?.to_str().ok()?;
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn reasons_round_trip_through_status_metadata() {
        for reason in Reason::ALL {
            let status = reason.attach(tonic::Status::failed_precondition("x"));
            assert_eq!(Reason::of(&status), Some(reason));
        }
        assert_eq!(Reason::of(&tonic::Status::not_found("x")), None);
    }

    #[test]
    fn key_ids_follow_the_documented_syntax() {
        for ok in ["a", "demo", "Key_1.v-2", &"x".repeat(128)] {
            assert_eq!(validate_key_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", &"x".repeat(129), "a b", "a/b", "ключ", "a\0", "key:1"] {
            assert!(validate_key_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descriptor_set_holds_both_services() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> =
            fds.file.iter().flat_map(|f| f.service.iter().map(|s| format!("{}.{}", f.package(), s.name()))).collect();
        assert!(services.contains(&"hyok.v1.KeyVault".to_string()), "{services:?}");
        assert!(services.contains(&"hyok.v1.Node".to_string()), "{services:?}");
    }

    #[test]
    fn messages_round_trip() {
        let req = v1::EvaluateBatchRequest {
            items: vec![v1::EvaluateItem {
                key_id: "k".into(),
                version: 3,
                seed: vec![7; 16],
                operation: v1::Operation::Decrypt as i32,
                request_id: "r-1".into(),
                evidence: None,
                generation: None,
                coefficient: vec![1; 32],
            }],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(v1::EvaluateBatchRequest::decode(&bytes[..]).unwrap(), req);
    }
}
