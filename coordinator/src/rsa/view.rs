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
            primary_version: view.primary_version(),
            versions: view.each_version(|v| {
                let key = v.package.public_key();
                pb::RsaKeyVersion {
                    version: v.version,
                    public_package: v.package_bytes.clone(),
                    modulus: key.modulus_bytes(),
                    exponent: key.exponent_bytes(),
                    fingerprint: fingerprint(key),
                    created_at_ms: v.created_at_ms,
                    generation: v.generation,
                }
            }),
            state: view.state(self.pool.threshold()) as i32,
        }
    }

    /// `GetRsaKey`: read fresh from the nodes.
    pub async fn get_rsa_key(&self, name: &str, deadline: Instant) -> Result<pb::RsaKeyInfo, CoordError> {
        Ok(self.rsa_info(&*self.rsa_metadata.fresh(&self.pool, name, deadline).await?))
    }

    /// `ListRsaKeys`: every RSA key that t nodes agree on.
    pub async fn list_rsa_keys(&self, deadline: Instant) -> Result<Vec<pb::RsaKeyInfo>, CoordError> {
        Ok(metadata::list::<Rsa>(&self.pool, deadline).await?.iter().map(|v| self.rsa_info(v)).collect())
    }
}
