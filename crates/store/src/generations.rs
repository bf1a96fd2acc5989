//! Share generations: what a reshare changes in a node's store.
//!
//! A key version keeps its public key forever, but its shares are dealt afresh by every reshare
//! (repair, refresh, a membership change). Each dealing is a *generation*: 0 is the DKG's or the
//! ceremony's, and every reshare numbers its output one higher. Per family, three trees beside
//! the versions tree hold what a reshare moves:
//!
//! ```text
//! {versions}_next:        key_id ‖ 0x00 ‖ u32be(version) → u32be(generation) ‖ version record (pending)
//! {versions}_previous:    key_id ‖ 0x00 ‖ u32be(version) → u32be(generation) ‖ version record (active)
//! {versions}_generations: key_id ‖ 0x00 ‖ u32be(version) → u32be(generation of the current share)
//! ```
//!
//! A reshare's output is stored in `next` ([`Keys::put_next`]), never used, until the
//! coordinator commits it ([`Keys::commit_next`]): the current record moves to `previous` and
//! the new one takes its place, in one transaction. The previous generation still answers
//! requests that name it, so traffic that started before the change completes, until the
//! reshare is finalized ([`Keys::drop_previous`]) and the old share is gone from this node.
//! A share of generation `g ≥ 1` is sealed under its version's associated data followed by
//! `"/g{g}"`, so a share of one generation never opens as another's.

use crate::error::{Error, Result};
use crate::keys::{
    Family, KeyMeta, MAX_PACKAGE, MAX_SHARE, Usages, VersionRecord, encode_meta, share_aad, version_key,
};
use crate::store::{Keys, lock, name, tx_error};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;
use zeroize::Zeroizing;

/// One generation's public side, as a node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generation {
    /// The generation number (0: the original dealing).
    pub generation: u32,
    /// Its public key package (opaque here).
    pub package: Vec<u8>,
}

/// A reshare's output for one key version, as [`Keys::put_next`] stores it.
#[derive(Clone, Copy)]
pub struct Reshared<'a> {
    /// The generation it makes.
    pub generation: u32,
    /// This node's new share (sealed before it is stored).
    pub share: &'a [u8],
    /// The new public package.
    pub package: &'a [u8],
    /// When this node stored it, Unix milliseconds.
    pub created_at_ms: u64,
}

impl std::fmt::Debug for Reshared<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reshared").field("generation", &self.generation).finish_non_exhaustive()
    }
}

/// The associated data of generation `generation`'s share.
pub(crate) fn generation_aad<F: Family>(key_id: &str, version: u32, generation: u32) -> Vec<u8> {
    let mut aad = share_aad::<F>(key_id, version);
    if generation > 0 {
        aad.extend_from_slice(format!("/g{generation}").as_bytes());
    }
    aad
}

fn split_generation<'a>(name: &str, v: &'a [u8]) -> Result<(u32, VersionRecord<'a>)> {
    let (g, rest) = v.split_at_checked(4).ok_or_else(|| Error::Corrupt(name.to_owned()))?;
    let generation = u32::from_be_bytes(g.try_into().map_err(|_| Error::Corrupt(name.to_owned()))?);
    Ok((generation, VersionRecord::decode(name, rest)?))
}

fn with_generation(generation: u32, record: &VersionRecord<'_>) -> Vec<u8> {
    let mut v = generation.to_be_bytes().to_vec();
    v.extend_from_slice(&record.encode());
    v
}

impl<F: Family> Keys<'_, F> {
    /// The generation of the current share of `key_id`/`version` (0 if never reshared).
    pub fn generation(&self, key_id: &str, version: u32) -> Result<u32> {
        let vkey = version_key(key_id, version);
        match self.trees.generations.get(&vkey)? {
            None => Ok(0),
            Some(g) => {
                Ok(u32::from_be_bytes(g.as_ref().try_into().map_err(|_| Error::Corrupt(name(key_id, version)))?))
            }
        }
    }

    /// The reshared share waiting to be committed, if any.
    pub fn next(&self, key_id: &str, version: u32) -> Result<Option<Generation>> {
        self.side(&self.trees.next, key_id, version)
    }

    /// The generation a committed reshare replaced, while it is kept.
    pub fn previous(&self, key_id: &str, version: u32) -> Result<Option<Generation>> {
        self.side(&self.trees.previous, key_id, version)
    }

    fn side(&self, tree: &sled::Tree, key_id: &str, version: u32) -> Result<Option<Generation>> {
        let name = name(key_id, version);
        let Some(v) = tree.get(version_key(key_id, version))? else { return Ok(None) };
        let (generation, record) = split_generation(&name, &v)?;
        Ok(Some(Generation { generation, package: record.package.to_vec() }))
    }

    /// Stores a reshare's output for `key_id`/`version` as the pending generation `generation`,
    /// replacing any earlier pending one. A node that never held the version (it was down at
    /// creation, or its disk was wiped) gets the key's policy record with `usages`; an existing
    /// key's usages must equal them. The generation must be above the current one. Flushed.
    pub fn put_next(&self, key_id: &str, version: u32, usages: Usages, next: Reshared<'_>) -> Result<()> {
        let Reshared { generation, share, package, created_at_ms } = next;
        crate::keys::check_key_id(key_id)?;
        if !usages.is_valid() || F::FIXED_USAGES.is_some_and(|fixed| fixed != usages) {
            return Err(Error::Invalid("usages"));
        }
        if share.len() > MAX_SHARE || package.len() > MAX_PACKAGE {
            return Err(Error::Invalid("share or package too large"));
        }
        let vkey = version_key(key_id, version);
        let _guard = lock(&self.store.key_writes);
        let current = self.trees.versions.get(&vkey)?;
        if current.is_some() && generation <= self.generation(key_id, version)? {
            return Err(Error::Invalid("a reshare's generation must be above the current one"));
        }
        let sealed = self.store.seal.seal(&generation_aad::<F>(key_id, version, generation), share)?;
        let record =
            with_generation(generation, &VersionRecord { active: false, created_at_ms, package, sealed: &sealed });
        let meta = encode_meta(&KeyMeta { usages, enabled: true, created_at_ms });
        (&self.trees.keys, &self.trees.next)
            .transaction(|(keys, next)| {
                match keys.get(key_id)? {
                    Some(existing) => {
                        let existing =
                            crate::keys::decode_meta(key_id, &existing).map_err(ConflictableTransactionError::Abort)?;
                        if existing.usages != usages {
                            return Err(ConflictableTransactionError::Abort(Error::Invalid(
                                "usages differ from the key's existing usages",
                            )));
                        }
                    }
                    None => {
                        keys.insert(key_id.as_bytes(), meta.as_slice())?;
                    }
                }
                next.insert(vkey.as_slice(), record.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.store.flush()
    }

    /// Commits the pending generation `generation` with public package `package` (the run's own
    /// output, so a later run's that replaced it is never committed in its name): the current
    /// record (if any) becomes the previous one, and the reshared share becomes current and
    /// ACTIVE, in one transaction. Idempotent once committed; [`Error::NotFound`] if no such
    /// pending generation exists. Flushed.
    pub fn commit_next(&self, key_id: &str, version: u32, generation: u32, package: &[u8]) -> Result<()> {
        let vkey = version_key(key_id, version);
        let name = name(key_id, version);
        let _guard = lock(&self.store.key_writes);
        let current_generation = self.generation(key_id, version)?;
        let current = self.trees.versions.get(&vkey)?;
        if current.is_some() && current_generation == generation {
            return self.store.flush();
        }
        let pending =
            self.trees.next.get(&vkey)?.ok_or_else(|| Error::NotFound(format!("{name} generation {generation}")))?;
        let (pending_generation, record) = split_generation(&name, &pending)?;
        if pending_generation != generation || record.package != package {
            return Err(Error::NotFound(format!("{name} generation {generation}")));
        }
        let promoted = VersionRecord { active: true, ..record }.encode();
        let previous = match &current {
            Some(bytes) => {
                let old = VersionRecord::decode(&name, bytes)?;
                // A pending leftover is not worth keeping: only an active share ever served.
                old.active.then(|| with_generation(current_generation, &old))
            }
            None => None,
        };
        let trees = (&self.trees.versions, &self.trees.next, &self.trees.previous, &self.trees.generations);
        trees
            .transaction(|(versions, next, previous_tree, generations)| {
                versions.insert(vkey.as_slice(), promoted.as_slice())?;
                next.remove(vkey.as_slice())?;
                match &previous {
                    Some(p) => previous_tree.insert(vkey.as_slice(), p.as_slice())?,
                    None => previous_tree.remove(vkey.as_slice())?,
                };
                generations.insert(vkey.as_slice(), &generation.to_be_bytes())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.store.flush()
    }

    /// Forgets a pending reshare of `key_id`/`version` (an aborted run). Flushed.
    pub fn remove_next(&self, key_id: &str, version: u32) -> Result<()> {
        let _guard = lock(&self.store.key_writes);
        self.trees.next.remove(version_key(key_id, version))?;
        self.store.flush()
    }

    /// Every pending reshare output: `(key_id, version, generation)`.
    pub fn pending(&self) -> Result<Vec<(String, u32, u32)>> {
        let mut out = Vec::new();
        for item in self.trees.next.iter() {
            let (k, v) = item?;
            let corrupt = || Error::Corrupt("a pending reshare's key".to_owned());
            let (key_id, version) = k.len().checked_sub(5).map(|at| k.split_at(at)).ok_or_else(corrupt)?;
            let key_id = std::str::from_utf8(key_id).map_err(|_| corrupt())?.to_owned();
            let version = u32::from_be_bytes(version[1..].try_into().map_err(|_| corrupt())?);
            let (generation, _) = split_generation(&name(&key_id, version), &v)?;
            out.push((key_id, version, generation));
        }
        Ok(out)
    }

    /// Forgets every pending reshare output (a membership change aborted). Flushed.
    pub fn remove_all_next(&self) -> Result<usize> {
        let _guard = lock(&self.store.key_writes);
        let n = self.trees.next.len();
        self.trees.next.clear()?;
        self.store.flush()?;
        Ok(n)
    }

    /// Deletes every key of this family, every share of every generation with it: the node
    /// left the cluster. Returns how many keys it held. Flushed.
    pub fn retire(&self) -> Result<usize> {
        let _guard = lock(&self.store.key_writes);
        let n = self.trees.keys.len();
        for tree in [&self.trees.next, &self.trees.previous, &self.trees.versions, &self.trees.generations] {
            tree.clear()?;
        }
        self.trees.keys.clear()?;
        self.store.flush()?;
        Ok(n)
    }

    /// Drops the previous generation of `key_id`/`version` if it is older than `generation`
    /// (the reshare to `generation` is finalized): from here on this node holds only the new
    /// share, and the old one is gone. Flushed.
    pub fn drop_previous(&self, key_id: &str, version: u32, generation: u32) -> Result<bool> {
        let _guard = lock(&self.store.key_writes);
        let vkey = version_key(key_id, version);
        let dropped = match self.previous(key_id, version)? {
            Some(p) if p.generation < generation => {
                self.trees.previous.remove(&vkey)?;
                true
            }
            _ => false,
        };
        self.store.flush()?;
        Ok(dropped)
    }

    /// The unsealed share and package of generation `generation` of an ACTIVE version (the
    /// current one for `None`), with its generation number. A generation this node no longer
    /// (or never) held is [`Error::NotFound`].
    pub fn share_of(
        &self,
        key_id: &str,
        version: u32,
        generation: Option<u32>,
    ) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>, u32)> {
        let current = self.generation(key_id, version)?;
        let wanted = generation.unwrap_or(current);
        if wanted == current {
            let (share, package) = self.active_share(key_id, version)?;
            return Ok((share, package, current));
        }
        let name = name(key_id, version);
        let stale = || Error::NotFound(format!("{name} generation {wanted}"));
        let value = self.trees.previous.get(version_key(key_id, version))?.ok_or_else(stale)?;
        let (generation, record) = split_generation(&name, &value)?;
        if generation != wanted {
            return Err(stale());
        }
        let share = self.store.seal.open(&generation_aad::<F>(key_id, version, generation), record.sealed)?;
        Ok((share, record.package.to_vec(), generation))
    }
}

#[cfg(test)]
mod tests {
    use super::Reshared;
    use crate::{SealKey, Store, Usages};

    fn next<'a>(generation: u32, share: &'a [u8], package: &'a [u8]) -> Reshared<'a> {
        Reshared { generation, share, package, created_at_ms: 2 }
    }

    fn store(dir: &std::path::Path) -> Store {
        let seal = SealKey::create(dir.join("seal.key")).unwrap();
        let store = Store::open(dir.join("db"), seal).unwrap();
        store.ec().put_pending("k", 1, Usages::ALL, b"share-0", b"package-0", 1).unwrap();
        store.ec().activate("k", 1).unwrap();
        store
    }

    #[test]
    fn a_reshare_is_unused_until_committed_then_the_old_generation_serves_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let ec = store.ec();
        assert!(ec.put_next("k", 1, Usages::ALL, next(0, b"x", b"y")).is_err(), "generation must grow");
        ec.put_next("k", 1, Usages::ALL, next(1, b"share-1", b"package-1")).unwrap();
        assert_eq!(ec.next("k", 1).unwrap().unwrap().generation, 1);
        assert_eq!(&ec.share_of("k", 1, None).unwrap().0[..], b"share-0", "pending is never used");
        assert!(ec.share_of("k", 1, Some(1)).is_err());
        assert!(ec.commit_next("k", 1, 2, b"package-1").is_err(), "only the pending generation commits");
        assert!(ec.commit_next("k", 1, 1, b"package-x").is_err(), "only the run's own output commits");
        ec.commit_next("k", 1, 1, b"package-1").unwrap();
        ec.commit_next("k", 1, 1, b"package-1").unwrap();
        assert_eq!(ec.generation("k", 1).unwrap(), 1);
        assert!(ec.next("k", 1).unwrap().is_none());
        let (share, package, g) = ec.share_of("k", 1, None).unwrap();
        assert_eq!((&share[..], &package[..], g), (&b"share-1"[..], &b"package-1"[..], 1));
        let (share, _, g) = ec.share_of("k", 1, Some(0)).unwrap();
        assert_eq!((&share[..], g), (&b"share-0"[..], 0), "requests naming the old generation still complete");
        assert!(ec.drop_previous("k", 1, 1).unwrap());
        assert!(ec.share_of("k", 1, Some(0)).is_err(), "the old share is gone");
        assert!(ec.previous("k", 1).unwrap().is_none());
        // Reopened: everything above was flushed.
        drop(store);
        let store = Store::open(dir.path().join("db"), SealKey::load(dir.path().join("seal.key")).unwrap()).unwrap();
        assert_eq!(&store.ec().share_of("k", 1, None).unwrap().0[..], b"share-1");
    }

    #[test]
    fn a_node_that_never_held_a_version_gets_it_from_a_reshare() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let ec = store.ec();
        assert!(ec.put_next("new", 3, Usages(Usages::WRAP), next(2, b"s", b"p")).is_ok());
        assert!(ec.put_next("k", 2, Usages(Usages::WRAP), next(1, b"s", b"p")).is_err(), "usages must match");
        ec.commit_next("new", 3, 2, b"p").unwrap();
        assert_eq!(ec.versions("new").unwrap().len(), 1);
        assert!(ec.versions("new").unwrap()[0].active);
        assert_eq!(&ec.share_of("new", 3, None).unwrap().0[..], b"s");
        assert!(ec.previous("new", 3).unwrap().is_none());
        ec.put_next("k", 1, Usages::ALL, next(4, b"s4", b"p4")).unwrap();
        ec.remove_next("k", 1).unwrap();
        assert!(ec.commit_next("k", 1, 4, b"p4").is_err(), "an aborted reshare cannot be committed");
    }

    #[test]
    fn a_membership_change_lists_and_forgets_pending_outputs_and_a_leaving_node_retires_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let ec = store.ec();
        ec.put_next("k", 1, Usages::ALL, next(3, b"s3", b"p3")).unwrap();
        ec.put_next("new", 7, Usages::ALL, next(1, b"s", b"p")).unwrap();
        let mut pending = ec.pending().unwrap();
        pending.sort();
        assert_eq!(pending, vec![("k".to_owned(), 1, 3), ("new".to_owned(), 7, 1)]);
        assert_eq!(ec.remove_all_next().unwrap(), 2);
        assert!(ec.pending().unwrap().is_empty());
        assert_eq!(&ec.share_of("k", 1, None).unwrap().0[..], b"share-0", "the current share is untouched");

        store.put_proposal(b"change").unwrap();
        assert_eq!(store.proposal().unwrap().as_deref(), Some(&b"change"[..]));
        store.remove_proposal().unwrap();
        assert_eq!(store.proposal().unwrap(), None);

        ec.put_next("k", 1, Usages::ALL, next(3, b"s3", b"p3")).unwrap();
        ec.commit_next("k", 1, 3, b"p3").unwrap();
        assert_eq!(ec.retire().unwrap(), 2, "\"k\" and \"new\", whose key record the removed output left");
        assert!(ec.share_of("k", 1, None).is_err() && ec.share_of("k", 1, Some(0)).is_err());
        assert!(ec.key("k").unwrap().is_none() && ec.versions("k").unwrap().is_empty());
        drop(store);
        let store = Store::open(dir.path().join("db"), SealKey::load(dir.path().join("seal.key")).unwrap()).unwrap();
        assert!(store.ec().key("k").unwrap().is_none(), "flushed");
    }
}
