//! The coordinator, as hyok-xks uses it: a few HTTP/2 connections (mutual TLS, front-end role),
//! every call bounded by the request's remaining budget, and every gRPC status turned into the
//! XKS error KMS should see.

use crate::config;
use crate::error::XksError;
use hyok_client::{Role, TlsFiles};
use hyok_proto::Reason;
use hyok_proto::v1 as pb;
use hyok_proto::v1::key_vault_client::KeyVaultClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use zeroize::Zeroizing;

/// Connections to the coordinator.
#[derive(Debug)]
pub struct Backend {
    clients: Vec<KeyVaultClient<Channel>>,
    next: AtomicUsize,
}

/// What a call was for, so a status maps to the right XKS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Key,
    Encrypt,
    Decrypt,
    Status,
}

/// Maps a coordinator status to the XKS error for `call`. Details go to the log, not to KMS.
fn map_status(status: &tonic::Status, call: Call, key_id: &str) -> XksError {
    let reason = Reason::of(status);
    match status.code() {
        Code::NotFound if call == Call::Decrypt && reason == Some(Reason::VersionNotFound) => {
            XksError::InvalidCiphertext("the ciphertext names a key version that does not exist".into())
        }
        Code::NotFound => XksError::KeyNotFound(format!("hyok key {key_id} does not exist in the cluster")),
        Code::FailedPrecondition if reason == Some(Reason::UsageNotAllowed) => {
            XksError::InvalidKeyUsage(format!("hyok key {key_id} does not allow this operation"))
        }
        Code::FailedPrecondition => XksError::InvalidState(format!("hyok key {key_id} is disabled")),
        Code::DataLoss => XksError::InvalidCiphertext(
            "ciphertext, initializationVector, authenticationTag, additionalAuthenticatedData or ciphertextMetadata \
             does not authenticate"
                .into(),
        ),
        Code::InvalidArgument if call == Call::Decrypt => XksError::InvalidCiphertext("ciphertext is malformed".into()),
        Code::InvalidArgument => XksError::Validation("the cluster refused the input as malformed".into()),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            XksError::DependencyTimeout("fewer than a threshold of hyok nodes answered in time".into())
        }
        _ => XksError::Internal("the hyok cluster failed the request".into()),
    }
}

/// An encryption's parts.
#[derive(Debug)]
pub struct Encrypted {
    /// The key version.
    pub version: u32,
    /// The 16-byte seed (the XKS IV).
    pub seed: Vec<u8>,
    /// As long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// The GCM tag.
    pub tag: Vec<u8>,
}

impl Backend {
    /// Prepares `config.connections` channels; they connect on first use, so hyok-xks starts
    /// (and answers health checks) while the coordinator is still down.
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
            clients.push(KeyVaultClient::new(channel).max_decoding_message_size(8 * 1024 * 1024));
        }
        Ok(Backend { clients, next: AtomicUsize::new(0) })
    }

    fn client(&self) -> KeyVaultClient<Channel> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// Runs one call within the deadline, which also travels to the coordinator as the gRPC
    /// deadline (so it stops asking nodes when the caller has given up).
    async fn call<T, F, Fut>(&self, deadline: Instant, key_id: &str, call: Call, f: F) -> Result<T, XksError>
    where
        F: FnOnce(KeyVaultClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(XksError::DependencyTimeout("the request's time budget ran out".into()));
        }
        match tokio::time::timeout_at(deadline, f(self.client(), remaining)).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => {
                let error = map_status(&status, call, key_id);
                tracing::debug!(key_id, code = ?status.code(), message = status.message(), "coordinator refused");
                if matches!(error, XksError::Internal(_)) {
                    tracing::warn!(key_id, code = ?status.code(), message = status.message(), "coordinator failed");
                }
                Err(error)
            }
            Err(_) => Err(XksError::DependencyTimeout("the hyok cluster did not answer within the time budget".into())),
        }
    }

    /// One key's metadata.
    pub async fn key(&self, key_id: &str, deadline: Instant) -> Result<pb::KeyInfo, XksError> {
        self.call(deadline, key_id, Call::Key, |mut c, t| {
            let mut req = tonic::Request::new(pb::GetKeyRequest { key_id: key_id.to_owned() });
            req.set_timeout(t);
            async move { c.get_key(req).await }
        })
        .await
    }

    /// Detached encryption under the key's primary version.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: Vec<u8>,
        request_id: &str,
        deadline: Instant,
    ) -> Result<Encrypted, XksError> {
        let r = self
            .call(deadline, key_id, Call::Encrypt, |mut c, t| {
                let mut req = tonic::Request::new(pb::EncryptDetachedRequest {
                    key_id: key_id.to_owned(),
                    plaintext: plaintext.to_vec(),
                    aad,
                    request_id: request_id.to_owned(),
                });
                req.set_timeout(t);
                async move { c.encrypt_detached(req).await }
            })
            .await?;
        Ok(Encrypted { version: r.version, seed: r.seed, ciphertext: r.ciphertext, tag: r.tag })
    }

    /// Detached decryption.
    #[allow(clippy::too_many_arguments)]
    pub async fn decrypt(
        &self,
        key_id: &str,
        version: u32,
        seed: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: Vec<u8>,
        request_id: &str,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        let r = self
            .call(deadline, key_id, Call::Decrypt, |mut c, t| {
                let mut req = tonic::Request::new(pb::DecryptDetachedRequest {
                    key_id: key_id.to_owned(),
                    seed: seed.to_vec(),
                    ciphertext: ciphertext.to_vec(),
                    tag: tag.to_vec(),
                    version,
                    aad,
                    request_id: request_id.to_owned(),
                });
                req.set_timeout(t);
                async move { c.decrypt_detached(req).await }
            })
            .await?;
        Ok(Zeroizing::new(r.plaintext))
    }

    /// Every node's reachability and latency as the coordinator sees them.
    pub async fn cluster_status(&self, deadline: Instant) -> Result<pb::ClusterStatusResponse, XksError> {
        self.call(deadline, "", Call::Status, |mut c, t| {
            let mut req = tonic::Request::new(pb::ClusterStatusRequest {});
            req.set_timeout(t);
            async move { c.cluster_status(req).await }
        })
        .await
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
    fn coordinator_statuses_become_the_xks_errors_kms_expects() {
        let disabled = with_reason(tonic::Status::failed_precondition("x"), Reason::KeyDisabled);
        assert!(matches!(map_status(&disabled, Call::Encrypt, "k"), XksError::InvalidState(_)));
        let usage = with_reason(tonic::Status::failed_precondition("x"), Reason::UsageNotAllowed);
        assert!(matches!(map_status(&usage, Call::Decrypt, "k"), XksError::InvalidKeyUsage(_)));
        let version = with_reason(tonic::Status::not_found("x"), Reason::VersionNotFound);
        assert!(matches!(map_status(&version, Call::Decrypt, "k"), XksError::InvalidCiphertext(_)));
        let key = with_reason(tonic::Status::not_found("x"), Reason::KeyNotFound);
        assert!(matches!(map_status(&key, Call::Decrypt, "k"), XksError::KeyNotFound(_)));
        assert!(matches!(
            map_status(&tonic::Status::data_loss("x"), Call::Decrypt, "k"),
            XksError::InvalidCiphertext(_)
        ));
        for code in [Code::Unavailable, Code::DeadlineExceeded] {
            assert!(matches!(
                map_status(&tonic::Status::new(code, "x"), Call::Encrypt, "k"),
                XksError::DependencyTimeout(_)
            ));
        }
        let denied = tonic::Status::permission_denied("wrong certificate");
        assert!(matches!(map_status(&denied, Call::Encrypt, "k"), XksError::Internal(_)));
    }
}
