//! The cluster, as hyok-dke uses it: [`Backend`] is the two calls the service needs
//! (`GetRsaKey`, `RsaDecrypt`), so the service can be tested against an in-process fake;
//! [`Coordinator`] is the real one — a few HTTP/2 connections to the coordinator (mutual TLS,
//! front-end role), each call bounded by the request's deadline, every gRPC status turned into
//! a [`BackendError`] in one place.

use crate::config;
use hyok_client::{Role, TlsFiles};
use hyok_proto::Reason;
use hyok_proto::v1 as pb;
use hyok_proto::v1::key_vault_client::KeyVaultClient;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

/// Why the cluster did not answer a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No RSA key of that name.
    #[error("no such RSA key")]
    KeyNotFound,
    /// The key has no such version.
    #[error("no such RSA key version")]
    VersionNotFound,
    /// The ciphertext is malformed (wrong length, not below the modulus).
    #[error("malformed ciphertext")]
    Malformed,
    /// The ciphertext does not decrypt (OAEP failure).
    #[error("decryption failed")]
    DecryptionFailed,
    /// The key is disabled.
    #[error("key disabled")]
    Disabled,
    /// Fewer than a threshold of nodes answered, or the deadline passed.
    #[error("cluster unavailable")]
    Unavailable,
    /// Anything else (the detail is logged where it happens).
    #[error("cluster error")]
    Internal,
}

/// The calls hyok-dke makes to the cluster.
pub trait Backend: Send + Sync + 'static {
    /// An RSA key's metadata and public keys (`GetRsaKey`).
    fn get_rsa_key(
        &self,
        name: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<pb::RsaKeyInfo, BackendError>> + Send;

    /// Threshold RSA-OAEP-256 decryption (`RsaDecrypt`): the OAEP-decoded plaintext.
    fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        deadline: Instant,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, BackendError>> + Send;
}

/// Maps a coordinator status to a [`BackendError`].
pub fn map_status(status: &tonic::Status) -> BackendError {
    match status.code() {
        Code::NotFound if Reason::of(status) == Some(Reason::VersionNotFound) => BackendError::VersionNotFound,
        Code::NotFound => BackendError::KeyNotFound,
        Code::InvalidArgument => BackendError::Malformed,
        Code::DataLoss => BackendError::DecryptionFailed,
        Code::FailedPrecondition => BackendError::Disabled,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            BackendError::Unavailable
        }
        _ => BackendError::Internal,
    }
}

/// The coordinator over gRPC.
#[derive(Debug)]
pub struct Coordinator {
    clients: Vec<KeyVaultClient<Channel>>,
    next: AtomicUsize,
}

impl Coordinator {
    /// Prepares `config.connections` channels; they connect on first use, so hyok-dke starts
    /// while the coordinator is still down.
    ///
    /// # Errors
    /// If the certificate files cannot be read or the endpoint is not a URL.
    pub fn new(config: &config::Coordinator) -> anyhow::Result<Self> {
        let tls = TlsFiles { ca: config.ca.clone(), cert: config.cert.clone(), key: config.key.clone() };
        let tls = tls.client_config(&Role::Coordinator.proof_name())?;
        let mut clients = Vec::with_capacity(config.connections);
        for _ in 0..config.connections {
            let channel = Endpoint::from_shared(config.endpoint.clone())?
                .tls_config(tls.clone())?
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_while_idle(true)
                .connect_lazy();
            clients.push(KeyVaultClient::new(channel));
        }
        Ok(Coordinator { clients, next: AtomicUsize::new(0) })
    }

    fn client(&self) -> KeyVaultClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// Runs one call within the deadline, which also travels as the gRPC deadline.
    async fn call<T, F, Fut>(&self, deadline: Instant, name: &str, f: F) -> Result<T, BackendError>
    where
        F: FnOnce(KeyVaultClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(BackendError::Unavailable);
        }
        match tokio::time::timeout_at(deadline, f(self.client(), remaining)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                let error = map_status(&status);
                if error == BackendError::Internal {
                    tracing::warn!(rsa_key = name, code = ?status.code(), message = status.message(), "coordinator failed");
                } else {
                    tracing::debug!(rsa_key = name, code = ?status.code(), message = status.message(), "coordinator refused");
                }
                Err(error)
            }
            Err(_) => Err(BackendError::Unavailable),
        }
    }
}

impl Backend for Coordinator {
    async fn get_rsa_key(&self, name: &str, deadline: Instant) -> Result<pb::RsaKeyInfo, BackendError> {
        self.call(deadline, name, |mut c, t| {
            let mut req = tonic::Request::new(pb::GetRsaKeyRequest { name: name.to_owned() });
            req.set_timeout(t);
            async move { c.get_rsa_key(req).await }
        })
        .await
    }

    async fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let response = self
            .call(deadline, name, |mut c, t| {
                let mut req = tonic::Request::new(pb::RsaDecryptRequest {
                    name: name.to_owned(),
                    version,
                    ciphertext: ciphertext.to_vec(),
                    request_id: request_id.to_owned(),
                });
                req.set_timeout(t);
                async move { c.rsa_decrypt(req).await }
            })
            .await?;
        Ok(Zeroizing::new(response.plaintext))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_reason(mut status: tonic::Status, reason: Reason) -> tonic::Status {
        status
            .metadata_mut()
            .insert(hyok_proto::REASON_HEADER, tonic::metadata::MetadataValue::from_static(reason.as_str()));
        status
    }

    #[test]
    fn coordinator_statuses_map_to_backend_errors() {
        let cases = [
            (with_reason(tonic::Status::not_found("x"), Reason::KeyNotFound), BackendError::KeyNotFound),
            (with_reason(tonic::Status::not_found("x"), Reason::VersionNotFound), BackendError::VersionNotFound),
            (tonic::Status::invalid_argument("x"), BackendError::Malformed),
            (tonic::Status::data_loss("x"), BackendError::DecryptionFailed),
            (with_reason(tonic::Status::failed_precondition("x"), Reason::KeyDisabled), BackendError::Disabled),
            (tonic::Status::unavailable("x"), BackendError::Unavailable),
            (tonic::Status::deadline_exceeded("x"), BackendError::Unavailable),
            (tonic::Status::unimplemented("x"), BackendError::Internal),
            (tonic::Status::permission_denied("x"), BackendError::Internal),
        ];
        for (status, expected) in cases {
            assert_eq!(map_status(&status), expected, "{status:?}");
        }
    }
}
