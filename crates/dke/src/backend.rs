//! The cluster, as hyok-dke uses it: [`Backend`] is the two calls the service needs
//! (`GetRsaKey`, `RsaDecrypt`), so the service can be tested against an in-process fake;
//! [`Coordinator`] is the real one — the front-end toolkit's [`Pool`] (a few HTTP/2
//! connections, each call bounded by the request's deadline, every gRPC status turned into a
//! [`BackendError`] in one place).

pub use hyok_frontend::BackendError;
use hyok_frontend::{Pool, config};
use hyok_proto::v1 as pb;
use std::future::Future;
use tokio::time::Instant;
use zeroize::Zeroizing;

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
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>, BackendError>> + Send;
}

/// The coordinator over gRPC.
#[derive(Debug)]
pub struct Coordinator {
    pool: Pool,
}

impl Coordinator {
    /// Prepares the connections; they connect on first use, so hyok-dke starts while the
    /// coordinator is still down.
    ///
    /// # Errors
    /// If the certificate files cannot be read or the endpoint is not a URL.
    pub fn new(config: &config::Coordinator) -> anyhow::Result<Self> {
        Ok(Coordinator { pool: Pool::new(config)? })
    }
}

impl Backend for Coordinator {
    async fn get_rsa_key(&self, name: &str, deadline: Instant) -> Result<pb::RsaKeyInfo, BackendError> {
        let request = pb::GetRsaKeyRequest { name: name.to_owned() };
        self.pool.call(deadline, name, request, |mut c, r| async move { c.get_rsa_key(r).await }).await
    }

    async fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let request = pb::RsaDecryptRequest {
            name: name.to_owned(),
            version,
            ciphertext: ciphertext.to_vec(),
            // The id of the HTTP request being served, in front of the service's description.
            request_id: hyok_frontend::request_id::tagged(request_id),
            evidence: Some(evidence),
        };
        let response =
            self.pool.call(deadline, name, request, |mut c, r| async move { c.rsa_decrypt(r).await }).await?;
        Ok(Zeroizing::new(response.plaintext))
    }
}
