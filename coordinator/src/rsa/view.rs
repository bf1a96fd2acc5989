//! RSA key metadata: a version is trusted only when t distinct nodes hold it ACTIVE with
//! byte-identical packages ([`crate::metadata::merge`]).

use crate::error::CoordError;
use crate::metadata::{self, Rsa, RsaKeyView};
use crate::vault::Vault;
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::fingerprint;
use tokio::time::Instant;

impl Vault {
    /// `RsaKeyInfo` for a trusted view.
    pub(crate) fn rsa_info(&self, view: &RsaKeyView) -> pb::RsaKeyInfo {
        pb::RsaKeyInfo {
            name: view.name.clone(),
            primary_version: view.primary().map_or(0, |v| v.version),
            versions: view
                .versions
                .values()
                .map(|v| pb::RsaKeyVersion {
                    version: v.version,
                    public_package: v.package_bytes.clone(),
                    modulus: v.package.public_key().modulus_bytes(),
                    exponent: v.package.public_key().exponent_bytes(),
                    fingerprint: fingerprint(v.package.public_key()),
                    created_at_ms: v.created_at_ms,
                })
                .collect(),
            state: view.state(self.pool.threshold()) as i32,
        }
    }

    /// `GetRsaKey`: read fresh from the nodes.
    pub async fn get_rsa_key(&self, name: &str, deadline: Instant) -> Result<pb::RsaKeyInfo, CoordError> {
        hyok_proto::validate_key_id(name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let view = self.rsa_metadata.refresh(&self.pool, name, deadline).await?;
        Ok(self.rsa_info(&view))
    }

    /// `ListRsaKeys`: every RSA key that t nodes agree on.
    pub async fn list_rsa_keys(&self, deadline: Instant) -> Result<Vec<pb::RsaKeyInfo>, CoordError> {
        let views = metadata::list::<Rsa>(&self.pool, deadline).await?;
        Ok(views.iter().map(|view| self.rsa_info(view)).collect())
    }
}
