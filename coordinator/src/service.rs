//! The tonic adapter for `KeyVault`: check the caller's role, call [`Vault`], convert back.

use crate::error::CoordError;
use crate::vault::Vault;
use hyok_proto::Role;
use hyok_proto::request_id;
use hyok_proto::tls::require_role;
use hyok_proto::v1 as pb;
use hyok_threshold::aead::Blob;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

/// Roles that may use keys.
const USERS: &[Role] = &[Role::Frontend, Role::Admin];
/// Roles that may administer keys.
const ADMINS: &[Role] = &[Role::Admin];

/// Longest data key GenerateDataKey makes.
const MAX_DATA_KEY: u32 = 1024;

/// The `KeyVault` gRPC service.
#[derive(Debug, Clone)]
pub struct VaultService {
    vault: Arc<Vault>,
}

impl VaultService {
    /// Serves `vault`.
    pub fn new(vault: Arc<Vault>) -> Self {
        VaultService { vault }
    }
}

/// The caller's gRPC deadline (`grpc-timeout`), if it sent one.
fn caller_timeout<T>(req: &Request<T>) -> Option<Duration> {
    let value = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn take_plaintext(bytes: Zeroizing<Vec<u8>>) -> Vec<u8> {
    // The response owns the bytes from here; tonic encodes and drops them.
    bytes.to_vec()
}

#[tonic::async_trait]
impl pb::key_vault_server::KeyVault for VaultService {
    async fn create_key(&self, req: Request<pb::CreateKeyRequest>) -> Result<Response<pb::KeyInfo>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.create_key(&r.key_id, &r.usages, &r.request_id).await?))
    }

    async fn get_key(&self, req: Request<pb::GetKeyRequest>) -> Result<Response<pb::KeyInfo>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        Ok(Response::new(self.vault.get_key(&req.into_inner().key_id, deadline).await?))
    }

    async fn list_keys(&self, req: Request<pb::ListKeysRequest>) -> Result<Response<pb::ListKeysResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        Ok(Response::new(pb::ListKeysResponse { keys: self.vault.list_keys(deadline).await? }))
    }

    async fn get_public_key(
        &self,
        req: Request<pb::GetPublicKeyRequest>,
    ) -> Result<Response<pb::GetPublicKeyResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let view = self.vault.view(&r.key_id, deadline).await?;
        let version = if r.version == 0 { view.primary() } else { view.versions.get(&r.version) }
            .ok_or_else(|| CoordError::VersionNotFound(format!("key {} has no version {}", r.key_id, r.version)))?;
        Ok(Response::new(pb::GetPublicKeyResponse {
            version: version.version,
            public_key: version.package.group_key().as_bytes().to_vec(),
            public_key_package: version.package_bytes.clone(),
        }))
    }

    async fn encrypt(&self, req: Request<pb::EncryptRequest>) -> Result<Response<pb::EncryptResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let d = self
            .vault
            .encrypt_detached(&r.key_id, &r.plaintext, &r.aad, &r.request_id, r.evidence.as_ref(), deadline)
            .await?;
        let blob = Blob { version: d.version, seed: d.seed, ciphertext: d.ciphertext, tag: d.tag };
        Ok(Response::new(pb::EncryptResponse { ciphertext: blob.to_bytes(), version: d.version }))
    }

    async fn decrypt(&self, req: Request<pb::DecryptRequest>) -> Result<Response<pb::DecryptResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let blob = Blob::from_bytes(&r.ciphertext).map_err(|e| CoordError::Invalid(e.to_string()))?;
        let plaintext = self
            .vault
            .decrypt_detached(
                &r.key_id,
                blob.version,
                &blob.seed,
                &blob.ciphertext,
                &blob.tag,
                &r.aad,
                &r.request_id,
                r.evidence.as_ref(),
                deadline,
            )
            .await?;
        Ok(Response::new(pb::DecryptResponse { plaintext: take_plaintext(plaintext), version: blob.version }))
    }

    async fn encrypt_detached(
        &self,
        req: Request<pb::EncryptDetachedRequest>,
    ) -> Result<Response<pb::EncryptDetachedResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let d = self
            .vault
            .encrypt_detached(&r.key_id, &r.plaintext, &r.aad, &r.request_id, r.evidence.as_ref(), deadline)
            .await?;
        Ok(Response::new(pb::EncryptDetachedResponse {
            seed: d.seed.to_vec(),
            ciphertext: d.ciphertext,
            tag: d.tag.to_vec(),
            version: d.version,
        }))
    }

    async fn decrypt_detached(
        &self,
        req: Request<pb::DecryptDetachedRequest>,
    ) -> Result<Response<pb::DecryptResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let plaintext = self
            .vault
            .decrypt_detached(
                &r.key_id,
                r.version,
                &r.seed,
                &r.ciphertext,
                &r.tag,
                &r.aad,
                &r.request_id,
                r.evidence.as_ref(),
                deadline,
            )
            .await?;
        Ok(Response::new(pb::DecryptResponse { plaintext: take_plaintext(plaintext), version: r.version }))
    }

    async fn generate_data_key(
        &self,
        req: Request<pb::GenerateDataKeyRequest>,
    ) -> Result<Response<pb::GenerateDataKeyResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let length = if r.length == 0 { 32 } else { r.length };
        if length > MAX_DATA_KEY {
            return Err(CoordError::Invalid(format!("data key length must be at most {MAX_DATA_KEY}")).into());
        }
        let mut data_key = Zeroizing::new(vec![0u8; length as usize]);
        rand::rng().fill_bytes(&mut data_key);
        let (wrapped, version) = self.vault.wrap(&r.key_id, &data_key, &r.label, deadline).await?;
        Ok(Response::new(pb::GenerateDataKeyResponse { plaintext: take_plaintext(data_key), wrapped, version }))
    }

    async fn wrap(&self, req: Request<pb::WrapRequest>) -> Result<Response<pb::WrapResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let (wrapped, version) = self.vault.wrap(&r.key_id, &r.data_key, &r.label, deadline).await?;
        Ok(Response::new(pb::WrapResponse { wrapped, version }))
    }

    async fn unwrap(&self, req: Request<pb::UnwrapRequest>) -> Result<Response<pb::UnwrapResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let data_key = self
            .vault
            .unwrap(&r.key_id, r.version, &r.wrapped, &r.label, &r.request_id, r.evidence.as_ref(), deadline)
            .await?;
        Ok(Response::new(pb::UnwrapResponse { data_key: take_plaintext(data_key) }))
    }

    async fn rotate_key(&self, req: Request<pb::RotateKeyRequest>) -> Result<Response<pb::KeyInfo>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.rotate_key(&r.key_id, &r.request_id).await?))
    }

    async fn reshare_keys(
        &self,
        req: Request<pb::ReshareKeysRequest>,
    ) -> Result<Response<pb::ReshareKeysResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        let key = (!r.key_id.is_empty()).then_some(r.key_id.as_str());
        Ok(Response::new(self.vault.reshare_keys(key, r.missing_only, &r.request_id).await?))
    }

    async fn execute_epoch(
        &self,
        req: Request<pb::ExecuteEpochRequest>,
    ) -> Result<Response<pb::ExecuteEpochResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.execute_epoch(&r.request_id).await?))
    }

    async fn abort_epoch(
        &self,
        req: Request<pb::AbortEpochVaultRequest>,
    ) -> Result<Response<pb::AbortEpochVaultResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.abort_epoch(&r.request_id).await?))
    }

    async fn enable_key(&self, req: Request<pb::EnableKeyRequest>) -> Result<Response<pb::KeyInfo>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.set_enabled(&r.key_id, true, &r.request_id).await?))
    }

    async fn disable_key(&self, req: Request<pb::DisableKeyRequest>) -> Result<Response<pb::KeyInfo>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        let r = req.into_inner();
        Ok(Response::new(self.vault.set_enabled(&r.key_id, false, &r.request_id).await?))
    }

    async fn import_rsa_key(&self, req: Request<pb::ImportRsaKeyRequest>) -> Result<Response<pb::RsaKeyInfo>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, ADMINS)?;
        Ok(Response::new(self.vault.import_rsa_key(req.into_inner()).await?))
    }

    async fn get_rsa_key(&self, req: Request<pb::GetRsaKeyRequest>) -> Result<Response<pb::RsaKeyInfo>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        Ok(Response::new(self.vault.get_rsa_key(&req.into_inner().name, deadline).await?))
    }

    async fn list_rsa_keys(
        &self,
        req: Request<pb::ListRsaKeysRequest>,
    ) -> Result<Response<pb::ListRsaKeysResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        Ok(Response::new(pb::ListRsaKeysResponse { keys: self.vault.list_rsa_keys(deadline).await? }))
    }

    async fn rsa_decrypt(
        &self,
        req: Request<pb::RsaDecryptRequest>,
    ) -> Result<Response<pb::RsaDecryptResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        require_role(&req, USERS)?;
        let deadline = self.vault.deadline(caller_timeout(&req));
        let r = req.into_inner();
        let plaintext = self
            .vault
            .rsa_decrypt(&r.name, r.version, &r.ciphertext, &r.request_id, r.evidence.as_ref(), deadline)
            .await?;
        Ok(Response::new(pb::RsaDecryptResponse { plaintext: take_plaintext(plaintext) }))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, USERS)?;
        Ok(Response::new(self.vault.cluster_status().await))
    }
}
