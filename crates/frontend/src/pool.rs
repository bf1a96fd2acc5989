//! The coordinator, as a front-end uses it: a few HTTP/2 connections (mutual TLS, front-end
//! role), every call bounded by the request's deadline (which also travels as the gRPC
//! deadline, so the coordinator stops asking nodes once the caller has given up), and every
//! gRPC status turned into a [`BackendError`] in one place. Each front-end then says what a
//! [`BackendError`] means in its own protocol.

use crate::config;
use hyok_proto::v1::key_vault_client::KeyVaultClient;
use hyok_proto::whole_body::{WholeBody, WholeChannel};
use hyok_proto::{Reason, Role};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Endpoint;

/// Largest answer accepted from the coordinator.
const MAX_DECODING_MESSAGE: usize = 8 * 1024 * 1024;

/// Why the cluster did not answer a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No such key.
    #[error("no such key")]
    KeyNotFound,
    /// The key has no such version.
    #[error("no such key version")]
    VersionNotFound,
    /// The input is malformed (`INVALID_ARGUMENT`: a ciphertext of the wrong length, …).
    #[error("malformed input")]
    Malformed,
    /// The ciphertext does not decrypt (`DATA_LOSS`: an AEAD tag or OAEP padding that fails).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The key is disabled.
    #[error("key disabled")]
    Disabled,
    /// The key's usages do not allow the operation.
    #[error("usage not allowed")]
    UsageNotAllowed,
    /// The nodes refused the request's evidence (`PERMISSION_DENIED`): their own policies do not
    /// accept the signature, token or key mapping.
    #[error("the nodes refused the request's evidence")]
    Denied,
    /// Fewer than a threshold of nodes answered (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, …).
    #[error("cluster unavailable")]
    Unavailable,
    /// The request's deadline passed before the cluster answered.
    #[error("deadline passed")]
    TimedOut,
    /// Anything else (the detail is logged where it happens).
    #[error("cluster error")]
    Internal,
}

/// Maps a coordinator status to a [`BackendError`].
pub fn map_status(status: &tonic::Status) -> BackendError {
    let reason = Reason::of(status);
    match status.code() {
        Code::NotFound if reason == Some(Reason::VersionNotFound) => BackendError::VersionNotFound,
        Code::NotFound => BackendError::KeyNotFound,
        Code::FailedPrecondition if reason == Some(Reason::UsageNotAllowed) => BackendError::UsageNotAllowed,
        Code::FailedPrecondition => BackendError::Disabled,
        Code::InvalidArgument => BackendError::Malformed,
        Code::DataLoss => BackendError::DecryptionFailed,
        Code::PermissionDenied if reason == Some(Reason::EvidenceRefused) => BackendError::Denied,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            BackendError::Unavailable
        }
        _ => BackendError::Internal,
    }
}

/// Connections to the coordinator.
#[derive(Debug)]
pub struct Pool {
    clients: Vec<KeyVaultClient<WholeChannel>>,
    next: AtomicUsize,
}

impl Pool {
    /// Prepares `config.connections` channels; they connect on first use, so the front-end
    /// starts (and answers health checks) while the coordinator is still down.
    ///
    /// # Errors
    /// If the certificate files cannot be read or the endpoint is not a URL.
    pub fn new(config: &config::Coordinator) -> anyhow::Result<Self> {
        let tls = config.tls_files().client_config(&Role::Coordinator.proof_name())?;
        let mut clients = Vec::with_capacity(config.connections);
        for _ in 0..config.connections.max(1) {
            let channel = Endpoint::from_shared(config.endpoint.clone())?
                .tls_config(tls.clone())?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .connect_lazy();
            clients.push(KeyVaultClient::new(WholeBody::new(channel)).max_decoding_message_size(MAX_DECODING_MESSAGE));
        }
        Ok(Pool { clients, next: AtomicUsize::new(0) })
    }

    fn client(&self) -> KeyVaultClient<WholeChannel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// Sends `message` with `f` (`|mut c, req| async move { c.get_key(req).await }`) on the next
    /// connection, with the time left until `deadline` as its gRPC timeout and the id of the
    /// request being served ([`crate::request_id::current`]) in its metadata, and waits at most
    /// until `deadline`. `key` names what the call is about, in logs only.
    ///
    /// # Errors
    /// [`BackendError::TimedOut`] when the deadline has passed or passes; else the status's
    /// [`map_status`]. An [`BackendError::Internal`] is logged as a warning, the rest at debug.
    pub async fn call<M, T, F, Fut>(&self, deadline: Instant, key: &str, message: M, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(KeyVaultClient<WholeChannel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(BackendError::TimedOut);
        }
        let mut request = tonic::Request::new(message);
        request.set_timeout(remaining);
        if let Some(id) = crate::request_id::current()
            && let Ok(value) = tonic::metadata::MetadataValue::try_from(&*id)
        {
            request.metadata_mut().insert(hyok_proto::request_id::HEADER, value);
        }
        match tokio::time::timeout_at(deadline, f(self.client(), request)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                let error = map_status(&status);
                if error == BackendError::Internal {
                    tracing::warn!(key, code = ?status.code(), message = status.message(), "coordinator failed");
                } else {
                    tracing::debug!(key, code = ?status.code(), message = status.message(), "coordinator refused");
                }
                Err(error)
            }
            Err(_) => Err(BackendError::TimedOut),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_statuses_map_to_backend_errors() {
        let cases = [
            (Reason::KeyNotFound.attach(tonic::Status::not_found("x")), BackendError::KeyNotFound),
            (tonic::Status::not_found("x"), BackendError::KeyNotFound),
            (Reason::VersionNotFound.attach(tonic::Status::not_found("x")), BackendError::VersionNotFound),
            (tonic::Status::invalid_argument("x"), BackendError::Malformed),
            (tonic::Status::data_loss("x"), BackendError::DecryptionFailed),
            (Reason::KeyDisabled.attach(tonic::Status::failed_precondition("x")), BackendError::Disabled),
            (Reason::UsageNotAllowed.attach(tonic::Status::failed_precondition("x")), BackendError::UsageNotAllowed),
            (tonic::Status::unavailable("x"), BackendError::Unavailable),
            (tonic::Status::deadline_exceeded("x"), BackendError::Unavailable),
            (tonic::Status::resource_exhausted("x"), BackendError::Unavailable),
            (tonic::Status::unimplemented("x"), BackendError::Internal),
            (tonic::Status::permission_denied("wrong certificate"), BackendError::Internal),
            (Reason::EvidenceRefused.attach(tonic::Status::permission_denied("x")), BackendError::Denied),
        ];
        for (status, expected) in cases {
            assert_eq!(map_status(&status), expected, "{status:?}");
        }
    }

    #[tokio::test]
    async fn a_passed_deadline_is_a_timeout_without_a_call() {
        let dir = tempfile::tempdir().unwrap();
        let pki = hyok_test_pki(dir.path());
        let pool = Pool::new(&pki).unwrap();
        let called = std::sync::atomic::AtomicBool::new(false);
        let result: Result<(), _> = pool
            .call(Instant::now(), "k", (), |_c, _r| {
                called.store(true, Ordering::SeqCst);
                async { Err(tonic::Status::internal("unreachable")) }
            })
            .await;
        assert_eq!(result, Err(BackendError::TimedOut));
        assert!(!called.load(Ordering::SeqCst));
    }

    /// A `[coordinator]` table over a throwaway self-signed certificate (no coordinator runs).
    fn hyok_test_pki(dir: &Path) -> config::Coordinator {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        config::Coordinator {
            endpoint: "https://127.0.0.1:1".into(),
            ca: dir.join("ca.pem"),
            cert: dir.join("ca.pem"),
            key: dir.join("key.pem"),
            connections: 2,
        }
    }

    use std::path::Path;
}
