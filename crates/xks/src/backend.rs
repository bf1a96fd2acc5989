//! The coordinator, as hyok-xks uses it: the front-end toolkit's [`Pool`] (a few HTTP/2
//! connections, every call bounded by the request's remaining budget), and what each
//! [`BackendError`] means to KMS.

use crate::error::XksError;
use hyok_frontend::config;
use hyok_frontend::{BackendError, Pool};
use hyok_proto::v1 as pb;
use hyok_proto::v1::key_vault_client::KeyVaultClient;
use hyok_proto::whole_body::WholeChannel;
use std::future::Future;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Connections to the coordinator.
#[derive(Debug)]
pub struct Backend {
    pool: Pool,
}

/// What a call was for, so a cluster error maps to the right XKS error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Key,
    Encrypt,
    Decrypt,
    Status,
}

/// The XKS error KMS should see for `error` in `call`. Details go to the log, not to KMS.
fn xks_error(error: BackendError, call: Call, key_id: &str) -> XksError {
    match error {
        BackendError::VersionNotFound if call == Call::Decrypt => {
            XksError::InvalidCiphertext("the ciphertext names a key version that does not exist".into())
        }
        BackendError::KeyNotFound | BackendError::VersionNotFound => {
            XksError::KeyNotFound(format!("hyok key {key_id} does not exist in the cluster"))
        }
        BackendError::UsageNotAllowed => {
            XksError::InvalidKeyUsage(format!("hyok key {key_id} does not allow this operation"))
        }
        BackendError::Disabled => XksError::InvalidState(format!("hyok key {key_id} is disabled")),
        BackendError::Denied => XksError::AccessDenied(
            "the hyok nodes refused the request: their own policies do not accept its signature for this key".into(),
        ),
        BackendError::DecryptionFailed => XksError::InvalidCiphertext(
            "ciphertext, initializationVector, authenticationTag, additionalAuthenticatedData or ciphertextMetadata \
             does not authenticate"
                .into(),
        ),
        BackendError::Malformed if call == Call::Decrypt => {
            XksError::InvalidCiphertext("ciphertext is malformed".into())
        }
        BackendError::Malformed => XksError::Validation("the cluster refused the input as malformed".into()),
        BackendError::Unavailable => {
            XksError::DependencyTimeout("fewer than a threshold of hyok nodes answered in time".into())
        }
        BackendError::TimedOut => {
            XksError::DependencyTimeout("the hyok cluster did not answer within the time budget".into())
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
    /// Prepares the connections; they connect on first use, so hyok-xks starts (and answers
    /// health checks) while the coordinator is still down.
    pub fn new(config: &config::Coordinator) -> anyhow::Result<Self> {
        Ok(Backend { pool: Pool::new(config)? })
    }

    /// One call through the pool, its error in XKS terms.
    async fn call<M, T, F, Fut>(
        &self,
        deadline: Instant,
        key_id: &str,
        call: Call,
        message: M,
        f: F,
    ) -> Result<T, XksError>
    where
        F: FnOnce(KeyVaultClient<WholeChannel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.pool.call(deadline, key_id, message, f).await.map_err(|e| xks_error(e, call, key_id))
    }

    /// One key's metadata.
    pub async fn key(&self, key_id: &str, deadline: Instant) -> Result<pb::KeyInfo, XksError> {
        let request = pb::GetKeyRequest { key_id: key_id.to_owned() };
        self.call(deadline, key_id, Call::Key, request, |mut c, r| async move { c.get_key(r).await }).await
    }

    /// Detached encryption under the key's primary version.
    pub async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: Vec<u8>,
        request_id: &str,
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> Result<Encrypted, XksError> {
        let request = pb::EncryptDetachedRequest {
            key_id: key_id.to_owned(),
            plaintext: plaintext.to_vec(),
            aad,
            request_id: request_id.to_owned(),
            evidence: Some(evidence),
        };
        let r = self
            .call(deadline, key_id, Call::Encrypt, request, |mut c, r| async move { c.encrypt_detached(r).await })
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
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, XksError> {
        let request = pb::DecryptDetachedRequest {
            key_id: key_id.to_owned(),
            seed: seed.to_vec(),
            ciphertext: ciphertext.to_vec(),
            tag: tag.to_vec(),
            version,
            aad,
            request_id: request_id.to_owned(),
            evidence: Some(evidence),
        };
        let r = self
            .call(deadline, key_id, Call::Decrypt, request, |mut c, r| async move { c.decrypt_detached(r).await })
            .await?;
        Ok(Zeroizing::new(r.plaintext))
    }

    /// Every node's reachability and latency as the coordinator sees them.
    pub async fn cluster_status(&self, deadline: Instant) -> Result<pb::ClusterStatusResponse, XksError> {
        let request = pb::ClusterStatusRequest {};
        self.call(deadline, "", Call::Status, request, |mut c, r| async move { c.cluster_status(r).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_frontend::pool::map_status;
    use hyok_proto::Reason;

    fn mapped(status: &tonic::Status, call: Call) -> XksError {
        xks_error(map_status(status), call, "k")
    }

    #[test]
    fn coordinator_statuses_become_the_xks_errors_kms_expects() {
        let disabled = Reason::KeyDisabled.attach(tonic::Status::failed_precondition("x"));
        assert!(matches!(mapped(&disabled, Call::Encrypt), XksError::InvalidState(_)));
        let usage = Reason::UsageNotAllowed.attach(tonic::Status::failed_precondition("x"));
        assert!(matches!(mapped(&usage, Call::Decrypt), XksError::InvalidKeyUsage(_)));
        let version = Reason::VersionNotFound.attach(tonic::Status::not_found("x"));
        assert!(matches!(mapped(&version, Call::Decrypt), XksError::InvalidCiphertext(_)));
        assert!(matches!(mapped(&version, Call::Key), XksError::KeyNotFound(_)));
        let key = Reason::KeyNotFound.attach(tonic::Status::not_found("x"));
        assert!(matches!(mapped(&key, Call::Decrypt), XksError::KeyNotFound(_)));
        assert!(matches!(mapped(&tonic::Status::data_loss("x"), Call::Decrypt), XksError::InvalidCiphertext(_)));
        assert!(matches!(mapped(&tonic::Status::invalid_argument("x"), Call::Decrypt), XksError::InvalidCiphertext(_)));
        assert!(matches!(mapped(&tonic::Status::invalid_argument("x"), Call::Encrypt), XksError::Validation(_)));
        for code in [tonic::Code::Unavailable, tonic::Code::DeadlineExceeded] {
            assert!(matches!(mapped(&tonic::Status::new(code, "x"), Call::Encrypt), XksError::DependencyTimeout(_)));
        }
        assert!(matches!(xks_error(BackendError::TimedOut, Call::Status, ""), XksError::DependencyTimeout(_)));
        let denied = tonic::Status::permission_denied("wrong certificate");
        assert!(matches!(mapped(&denied, Call::Encrypt), XksError::Internal(_)));
    }
}
