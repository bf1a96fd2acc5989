//! The node's in-memory view of its keys: unsealed shares and policy (the admin's flag and the
//! operator's veto), loaded from the store on first use and kept until the policy changes.
//! Shares are zeroized when an entry is dropped.

use hyok_store::{KeyMeta, Store, Veto};
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
    /// The generation of the share (see `hyok_store::generations`).
    pub generation: u32,
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
    /// Disabled on this node (the admin's flag).
    #[error("key is disabled on this node")]
    Disabled,
    /// Vetoed on this node by its operator.
    #[error("key is vetoed on this node by its operator")]
    Vetoed,
    /// Usage does not allow the operation.
    #[error("key usage does not allow this operation")]
    UsageNotAllowed,
    /// Storage trouble (details logged, not returned).
    #[error("internal storage error")]
    Internal,
}

/// A key's policy on this node: the admin's record (usages, enabled flag) and whether the
/// node's operator vetoes it. The key is usable only if it is enabled **and** not vetoed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The key's record, with the admin's `enabled` flag.
    pub meta: KeyMeta,
    /// This node's operator vetoed the key name.
    pub vetoed: bool,
}

impl Policy {
    /// Enabled by the admin and not vetoed: what this node reports as `enabled`.
    pub fn serves(&self) -> bool {
        self.meta.enabled && !self.vetoed
    }
}

/// Cache of unsealed versions and key policies.
#[derive(Debug, Default)]
pub struct KeyCache {
    versions: RwLock<HashMap<(String, u32, u32), Arc<LoadedVersion>>>,
    policies: RwLock<Policies>,
}

/// Cached key policies, and a count of policy changes. A reader that missed the cache notes
/// the count before it reads the store and caches what it read only if the count is unchanged:
/// a change committed in between (store written and flushed, then the count bumped, under this
/// lock) may have written the store after the read, so what was read may be the old policy.
/// Admin flag changes and operator vetoes and lifts all count as changes.
#[derive(Debug, Default)]
struct Policies {
    by_key: HashMap<String, Policy>,
    changes: u64,
}

impl KeyCache {
    /// The policy of the EC key `key_id` (cached).
    pub fn policy(&self, store: &Store, key_id: &str) -> Result<Policy, KeyError> {
        self.policy_from(key_id, || {
            let Some(meta) = store.ec().key(key_id)? else { return Ok(None) };
            Ok(Some(Policy { meta, vetoed: store.vetoed(key_id)?.is_some() }))
        })
    }

    /// The cached policy of `key_id`, or what `read` finds in the store, cached unless a policy
    /// change committed since this call began (see [`Policies`]).
    fn policy_from(
        &self,
        key_id: &str,
        read: impl FnOnce() -> hyok_store::Result<Option<Policy>>,
    ) -> Result<Policy, KeyError> {
        let changes = {
            let policies = self.policies.read().map_err(|_| KeyError::Internal)?;
            if let Some(policy) = policies.by_key.get(key_id) {
                return Ok(*policy);
            }
            policies.changes
        };
        let policy = read()
            .map_err(|e| {
                tracing::error!(error = %e, key_id, "reading key policy");
                KeyError::Internal
            })?
            .ok_or(KeyError::NotFound)?;
        let mut policies = self.policies.write().map_err(|_| KeyError::Internal)?;
        if policies.changes == changes {
            policies.by_key.insert(key_id.to_owned(), policy);
        }
        Ok(policy)
    }

    /// Turns the EC key `key_id` on or off in the store (flushed), then drops its cached policy
    /// so that no read in flight can cache the old one. Returns the new policy.
    pub fn set_enabled(&self, store: &Store, key_id: &str, enabled: bool) -> hyok_store::Result<KeyMeta> {
        let meta = store.ec().set_enabled(key_id, enabled)?;
        self.policy_changed(key_id);
        Ok(meta)
    }

    /// Records this node's operator's veto of the key name `key_id` (EC and RSA alike) in the
    /// store (flushed), then drops its cached policy the same way as [`KeyCache::set_enabled`],
    /// so that no read in flight can cache the policy from before the veto.
    pub fn veto(&self, store: &Store, key_id: &str, reason: &str, time_ms: u64) -> hyok_store::Result<Veto> {
        let veto = store.veto(key_id, reason, time_ms)?;
        self.policy_changed(key_id);
        Ok(veto)
    }

    /// Removes the operator's veto of `key_id` from the store (flushed), then drops its cached
    /// policy. Returns the veto removed, if any.
    pub fn lift(&self, store: &Store, key_id: &str) -> hyok_store::Result<Option<Veto>> {
        let lifted = store.lift(key_id)?;
        self.policy_changed(key_id);
        Ok(lifted)
    }

    /// Records that `key_id`'s policy changed in the store: forgets the cached policy and counts
    /// the change, so a read that began before it caches nothing. Call it after the store write
    /// is flushed. A poisoned lock is taken over rather than skipped: the change must land.
    fn policy_changed(&self, key_id: &str) {
        let mut policies = self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        policies.changes = policies.changes.wrapping_add(1);
        policies.by_key.remove(key_id);
    }

    /// Forgets every unsealed generation of `key_id`/`version` (a reshare committed or was
    /// finalized): the next use reads the store again.
    pub fn shares_changed(&self, key_id: &str, version: u32) {
        let mut versions = self.versions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        versions.retain(|(k, v, _), _| !(k == key_id && *v == version));
    }

    /// Forgets everything cached (the node left the cluster and deleted its keys).
    pub fn clear(&self) {
        self.versions.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        let mut policies = self.policies.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        policies.changes = policies.changes.wrapping_add(1);
        policies.by_key.clear();
    }

    /// Checks policy (`enabled`, not vetoed, `usage`) and returns the unsealed version: the
    /// generation named, or the current one for `None`.
    pub fn usable(
        &self,
        store: &Store,
        key_id: &str,
        version: u32,
        generation: Option<u32>,
        usage: u8,
    ) -> Result<Arc<LoadedVersion>, KeyError> {
        let policy = self.policy(store, key_id)?;
        if policy.vetoed {
            return Err(KeyError::Vetoed);
        }
        if !policy.meta.enabled {
            return Err(KeyError::Disabled);
        }
        if !policy.meta.usages.allows(usage) {
            return Err(KeyError::UsageNotAllowed);
        }
        let generation = match generation {
            Some(g) => g,
            None => store.ec().generation(key_id, version).map_err(|_| KeyError::Internal)?,
        };
        let cache_key = (key_id.to_owned(), version, generation);
        if let Some(v) = self.versions.read().map_err(|_| KeyError::Internal)?.get(&cache_key) {
            return Ok(v.clone());
        }
        let (share_bytes, package_bytes, generation) =
            store.ec().share_of(key_id, version, Some(generation)).map_err(|e| match e {
                hyok_store::Error::NotFound(_) => KeyError::NotFound,
                hyok_store::Error::Pending(_) => KeyError::Pending,
                other => {
                    tracing::error!(error = %other, key_id, version, "unsealing share");
                    KeyError::Internal
                }
            })?;
        let share = KeyShare::from_secret_bytes(&share_bytes).map_err(|_| KeyError::Internal)?;
        let package = PublicKeyPackage::from_bytes(&package_bytes).map_err(|_| KeyError::Internal)?;
        let loaded = Arc::new(LoadedVersion { share, package, generation });
        self.versions.write().map_err(|_| KeyError::Internal)?.insert(cache_key, loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_store::{SealKey, Usages};

    fn store_with_key(dir: &std::path::Path) -> Store {
        let seal = SealKey::create(dir.join("seal.key")).unwrap();
        let store = Store::open(dir.join("db"), seal).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"share", b"package", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
        store
    }

    /// The race: a partial misses the cache and reads the policy (enabled); the operator's
    /// disable is written, flushed and the cache entry dropped; then the partial caches what it
    /// read. The disable must still hold for every later request.
    #[test]
    fn a_policy_read_that_raced_a_disable_does_not_cache_the_old_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(dir.path());
        let cache = KeyCache::default();
        let before = store.ec().key("k").unwrap().map(|meta| Policy { meta, vetoed: false });
        assert!(before.is_some_and(|p| p.serves()));
        let raced = cache
            .policy_from("k", || {
                // Between the partial's store read and its cache insert, the disable commits.
                assert!(!cache.set_enabled(&store, "k", false).unwrap().enabled);
                Ok(before)
            })
            .unwrap();
        assert!(raced.meta.enabled, "the racing read itself was ordered before the disable");
        assert!(!cache.policy(&store, "k").unwrap().meta.enabled, "the disable is not lost");
        assert_eq!(cache.usable(&store, "k", 1, None, Usages::ENCRYPT).unwrap_err(), KeyError::Disabled);
    }

    #[test]
    fn a_policy_read_with_no_change_in_between_is_cached_and_a_change_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(dir.path());
        let cache = KeyCache::default();
        assert!(cache.policy(&store, "k").unwrap().serves());
        let cached = cache.policy_from("k", || panic!("a cached policy is not read again")).unwrap();
        assert!(cached.serves());
        cache.set_enabled(&store, "k", false).unwrap();
        assert!(!cache.policy(&store, "k").unwrap().serves());
        cache.set_enabled(&store, "k", true).unwrap();
        assert!(cache.policy(&store, "k").unwrap().serves());
        assert_eq!(cache.policy(&store, "none").unwrap_err(), KeyError::NotFound);
    }

    /// The same race with a veto: a read that missed the cache before the operator's veto
    /// committed must not cache the unvetoed policy, and an admin enable after it changes only
    /// the admin flag.
    #[test]
    fn a_policy_read_that_raced_a_veto_does_not_cache_the_old_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_key(dir.path());
        let cache = KeyCache::default();
        let before = store.ec().key("k").unwrap().map(|meta| Policy { meta, vetoed: false });
        let raced = cache
            .policy_from("k", || {
                cache.veto(&store, "k", "hold", 1).unwrap();
                Ok(before)
            })
            .unwrap();
        assert!(!raced.vetoed, "the racing read itself was ordered before the veto");
        assert!(cache.policy(&store, "k").unwrap().vetoed, "the veto is not lost");
        assert_eq!(cache.usable(&store, "k", 1, None, Usages::ENCRYPT).unwrap_err(), KeyError::Vetoed);
        cache.set_enabled(&store, "k", true).unwrap();
        let policy = cache.policy(&store, "k").unwrap();
        assert!(policy.meta.enabled && policy.vetoed && !policy.serves());
        assert_eq!(cache.usable(&store, "k", 1, None, Usages::ENCRYPT).unwrap_err(), KeyError::Vetoed);
        assert!(cache.lift(&store, "k").unwrap().is_some());
        // Lifted: the policy lets it through (the test share itself does not decode).
        assert!(cache.policy(&store, "k").unwrap().serves());
        assert!(!matches!(
            cache.usable(&store, "k", 1, None, Usages::ENCRYPT),
            Err(KeyError::Vetoed | KeyError::Disabled)
        ));
    }
}
