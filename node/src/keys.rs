//! The node's in-memory view of its keys: unsealed shares and policy, loaded from the store on
//! first use and kept until the policy changes. Shares are zeroized when an entry is dropped.

use hyok_store::{KeyMeta, Store};
use hyok_threshold::{KeyShare, PublicKeyPackage, Wire};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One usable key version.
#[derive(Debug)]
pub struct LoadedVersion {
    /// This node's share.
    pub share: KeyShare,
    /// The version's public package.
    pub package: PublicKeyPackage,
}

/// Why a key version cannot be used here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No such key or version on this node.
    #[error("no such key or version")]
    NotFound,
    /// Its DKG was not committed.
    #[error("key version is pending")]
    Pending,
    /// Disabled on this node.
    #[error("key is disabled on this node")]
    Disabled,
    /// Usage does not allow the operation.
    #[error("key usage does not allow this operation")]
    UsageNotAllowed,
    /// Storage trouble (details logged, not returned).
    #[error("internal storage error")]
    Internal,
}

/// Cache of unsealed versions and key policies.
#[derive(Debug, Default)]
pub struct KeyCache {
    versions: RwLock<HashMap<(String, u32), Arc<LoadedVersion>>>,
    policies: RwLock<HashMap<String, KeyMeta>>,
}

impl KeyCache {
    /// The policy of `key_id` (cached).
    pub fn policy(&self, store: &Store, key_id: &str) -> Result<KeyMeta, KeyError> {
        if let Some(meta) = self.policies.read().map_err(|_| KeyError::Internal)?.get(key_id) {
            return Ok(*meta);
        }
        let meta = store
            .key(key_id)
            .map_err(|e| {
                tracing::error!(error = %e, key_id, "reading key policy");
                KeyError::Internal
            })?
            .ok_or(KeyError::NotFound)?;
        self.policies.write().map_err(|_| KeyError::Internal)?.insert(key_id.to_owned(), meta);
        Ok(meta)
    }

    /// Checks policy (`enabled`, `usage`) and returns the unsealed version.
    pub fn usable(&self, store: &Store, key_id: &str, version: u32, usage: u8) -> Result<Arc<LoadedVersion>, KeyError> {
        let meta = self.policy(store, key_id)?;
        if !meta.enabled {
            return Err(KeyError::Disabled);
        }
        if !meta.usages.allows(usage) {
            return Err(KeyError::UsageNotAllowed);
        }
        let cache_key = (key_id.to_owned(), version);
        if let Some(v) = self.versions.read().map_err(|_| KeyError::Internal)?.get(&cache_key) {
            return Ok(v.clone());
        }
        let (share_bytes, package_bytes) = store.active_share(key_id, version).map_err(|e| match e {
            hyok_store::Error::NotFound(_) => KeyError::NotFound,
            hyok_store::Error::Pending(_) => KeyError::Pending,
            other => {
                tracing::error!(error = %other, key_id, version, "unsealing share");
                KeyError::Internal
            }
        })?;
        let share = KeyShare::from_secret_bytes(&share_bytes).map_err(|_| KeyError::Internal)?;
        let package = PublicKeyPackage::from_bytes(&package_bytes).map_err(|_| KeyError::Internal)?;
        let loaded = Arc::new(LoadedVersion { share, package });
        self.versions.write().map_err(|_| KeyError::Internal)?.insert(cache_key, loaded.clone());
        Ok(loaded)
    }

    /// Forgets a key's cached policy (after it changed in the store).
    pub fn invalidate_policy(&self, key_id: &str) {
        if let Ok(mut p) = self.policies.write() {
            p.remove(key_id);
        }
    }
}
