//! The store itself: one sled database per node.
//!
//! Trees: `meta` (the node's sealed long-term secrets under `identity`, the audit chain's head under
//! `audit_head`, the cluster manifest under `manifest`), a policy tree and a versions tree per key family — `keys` and `versions` for
//! EC keys, `rsa_keys` and `rsa_versions` for threshold RSA keys (see [`crate::keys`]) —
//! `vetoes` (operator vetoes, see [`crate::veto`]) and `audit` (the chain, see
//! [`crate::audit`]).
//!
//! Key records are reached through a family handle, [`Store::ec`] or [`Store::rsa`]: a
//! [`Keys`] over that family's trees, on which every key operation is written once.
//!
//! **Every mutating method flushes sled to disk before it returns `Ok`** — including calls that
//! find nothing left to change, since an earlier call may have changed it and then failed to
//! flush — so a node that acknowledges a change has made it durable. The one exception is the
//! audit append, on every request's path: it is made durable in the audit journal instead
//! ([`crate::journal`]), from which [`Store::open`] puts back what sled lost. Multi-record changes are
//! sled transactions, so a crash leaves all of a change or none of it (the audit append again
//! excepted: its entries and head are plain inserts, see [`Store::append_audit`]); one lock serializes the
//! writers of key records (both families) and another audit appends, so check-then-write
//! sequences do not race.

use crate::audit::{self, AuditBreak, AuditEntry, AuditEvent, Head};
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::keys::{
    Ec, Family, IDENTITY_AAD, KeyMeta, MAX_PACKAGE, MAX_SHARE, Rsa, Usages, VersionInfo, VersionRecord, check_key_id,
    decode_meta, encode_meta, share_aad, version_key, version_prefix,
};
use crate::seal::SealKey;
use crate::veto::{self, Veto};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use zeroize::Zeroizing;

const IDENTITY: &[u8] = b"identity";
/// Longest long-term secrets blob accepted.
const MAX_IDENTITY_LEN: usize = 1024;
pub(crate) const AUDIT_HEAD: &[u8] = b"audit_head";

/// sled's page cache, in bytes. With sled's default (1 GiB) a node under load grew by a third
/// to half a megabyte a second: the audit pages it appends and never reads again. The cache
/// takes about twice what sled counts (at 32 MiB a node levelled off 75 MiB above its start).
/// At 8 MiB a node levelled off near 110 MiB within about a minute of load, with no loss of
/// throughput: the hot path reads keys from the node's own cache, and an append touches only
/// the last pages.
const CACHE_CAPACITY: u64 = 8 * 1024 * 1024;
/// The node's pinned cluster manifest (its canonical encoding; public, so not sealed).
const MANIFEST: &[u8] = b"manifest";
/// A membership change this node's operator accepted, not yet executed (opaque here).
const PROPOSAL: &[u8] = b"proposal";
/// The node's evidence policy (its operator's; holds SigV4 secrets, so sealed).
const POLICY: &[u8] = b"policy";
const POLICY_AAD: &[u8] = b"hyok/v1/policy";
/// Longest policy accepted.
pub const MAX_POLICY_LEN: usize = 1024 * 1024;
/// Longest manifest accepted (1024 nodes of 34 bytes, 64 coordinator keys, headers).
pub const MAX_MANIFEST_LEN: usize = 40 * 1024;

/// One family's two trees (see [`Family`]).
pub(crate) struct Trees {
    pub(crate) keys: sled::Tree,
    pub(crate) versions: sled::Tree,
    /// Reshared shares not yet committed (see [`crate::generations`]).
    pub(crate) next: sled::Tree,
    /// The generation a committed reshare replaced, kept until the reshare is finalized.
    pub(crate) previous: sled::Tree,
    /// The current share's generation, where it is not 0.
    pub(crate) generations: sled::Tree,
}

impl Trees {
    fn open<F: Family>(db: &sled::Db) -> Result<Self> {
        Ok(Trees {
            keys: db.open_tree(F::KEYS_TREE)?,
            versions: db.open_tree(F::VERSIONS_TREE)?,
            next: db.open_tree(format!("{}_next", F::VERSIONS_TREE))?,
            previous: db.open_tree(format!("{}_previous", F::VERSIONS_TREE))?,
            generations: db.open_tree(format!("{}_generations", F::VERSIONS_TREE))?,
        })
    }
}

/// A node's store. Share it between threads by reference (`&Store` / `Arc<Store>`).
pub struct Store {
    db: sled::Db,
    pub(crate) meta: sled::Tree,
    /// EC keys ([`Ec`]).
    ec: Trees,
    /// Threshold RSA keys ([`Rsa`]).
    rsa: Trees,
    audit: sled::Tree,
    /// Operator vetoes (see [`crate::veto`]).
    vetoes: sled::Tree,
    pub(crate) seal: SealKey,
    /// Serializes writers of key records (every family's trees).
    pub(crate) key_writes: Mutex<()>,
    /// Serializes audit appends.
    audit_writes: Mutex<()>,
    /// What makes an audit append durable (see [`crate::journal`]).
    pub(crate) journal: Journal,
    /// sled's log file, synced after each flush: sled's own flush only asks the kernel to write
    /// the range out (`sync_file_range`), which survives the process dying but not the machine
    /// losing power, nor a grown file's new size.
    log: std::fs::File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// The guarded data is `()`, so a panic elsewhere cannot leave it inconsistent.
pub(crate) fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn tx_error(e: TransactionError<Error>) -> Error {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => Error::Storage(e),
    }
}

pub(crate) fn name(key_id: &str, version: u32) -> String {
    format!("{key_id}/{version}")
}

impl Store {
    /// Opens (or creates) the store in directory `dir`, sealing with `seal`.
    pub fn open(dir: impl AsRef<Path>, seal: SealKey) -> Result<Self> {
        // No periodic background flush: every mutation flushes before it returns, and without
        // the flusher thread a dropped store releases its directory lock at once.
        let db = sled::Config::new().path(dir.as_ref()).flush_every_ms(None).cache_capacity(CACHE_CAPACITY).open()?;
        let (journal, journaled) = Journal::open(dir.as_ref())?;
        let log_path = dir.as_ref().join("db");
        let log = std::fs::File::open(&log_path)
            .map_err(|source| Error::File { path: log_path.display().to_string(), source })?;
        let store = Store {
            meta: db.open_tree("meta")?,
            ec: Trees::open::<Ec>(&db)?,
            rsa: Trees::open::<Rsa>(&db)?,
            audit: db.open_tree("audit")?,
            vetoes: db.open_tree("vetoes")?,
            db,
            seal,
            key_writes: Mutex::new(()),
            audit_writes: Mutex::new(()),
            journal,
            log,
        };
        store.recover_audit(journaled)?;
        Ok(store)
    }

    /// Puts back the journaled audit entries sled lost (it is flushed only now and then, see
    /// [`crate::journal`]): those that continue its chain from the recorded head, in order. Then
    /// flushes, and the journal starts over. An entry sled already holds up to the head is not
    /// touched (nor checked: the chain's verification does that); one past the head is replaced
    /// by the journal's. A journal that skips past the head — entries sled lost that the journal
    /// does not hold — is a corrupt store.
    ///
    /// An append inserts its entries and then the head, without a transaction (see
    /// [`Store::append_audit`]), and sled recovers a prefix of its writes: after a crash it may
    /// hold an append's entries without its head. If that append was acknowledged, the journal
    /// holds them and the head moves over them here. If not, nothing vouches for them: they stay
    /// past the head, and the verification reports them, as it does an entry forged there.
    fn recover_audit(&self, journaled: Vec<AuditEntry>) -> Result<()> {
        let mut head = self.audit_head_or_last()?;
        let mut lost = Vec::new();
        let held = head.seq;
        for entry in journaled.into_iter().filter(|e| e.seq > held) {
            if !head.continued_by(&entry) {
                return Err(Error::Corrupt(format!(
                    "audit journal: entry {} does not continue the chain at {}",
                    entry.seq, head.seq
                )));
            }
            head = Head::of(&entry);
            let mut value = audit::encode(entry.seq, &entry.event, &entry.prev_hash);
            value.extend_from_slice(&entry.hash);
            lost.push((entry.seq, value));
        }
        if !lost.is_empty() {
            (&self.audit, &self.meta)
                .transaction(|(audit_tree, meta)| {
                    for (seq, value) in &lost {
                        audit_tree.insert(&seq.to_be_bytes()[..], value.as_slice())?;
                    }
                    meta.insert(AUDIT_HEAD, &head.encode()[..])?;
                    Ok(())
                })
                .map_err(tx_error)?;
        }
        self.settle_in_sled()
    }

    /// The recorded audit head, or for a store written before heads were recorded its last
    /// entry, or the empty head.
    fn audit_head_or_last(&self) -> Result<Head> {
        if let Some(v) = self.meta.get(AUDIT_HEAD)? {
            return Head::decode(&v);
        }
        match self.audit.last()? {
            Some((_, last)) => audit::decode(&last).map(|e| Head::of(&e)),
            None => Ok(Head::EMPTY),
        }
    }

    /// Every tree's name (for [`Store::export`]).
    pub(crate) fn tree_names(&self) -> Vec<sled::IVec> {
        self.db.tree_names()
    }

    /// The tree called `name`, created if missing (for [`Store::import`]).
    pub(crate) fn tree(&self, name: &[u8]) -> Result<sled::Tree> {
        Ok(self.db.open_tree(name)?)
    }

    /// Makes everything written so far durable: sled's flush, then its log file synced.
    pub(crate) fn flush(&self) -> Result<()> {
        self.db.flush()?;
        self.log.sync_all().map_err(|source| Error::File { path: "sled log".into(), source })?;
        Ok(())
    }

    // ---- operator vetoes ----------------------------------------------------------------

    /// Records this node's operator's veto of the key name `key_id` (both families), unless
    /// one is already recorded. Returns the veto in force — the earlier one if the name was
    /// already vetoed. Flushed. Only a [`Store::lift`] removes it; nothing that changes a key's
    /// policy record touches it.
    pub fn veto(&self, key_id: &str, reason: &str, time_ms: u64) -> Result<Veto> {
        check_key_id(key_id)?;
        veto::check_reason(reason)?;
        let _guard = lock(&self.key_writes);
        let existing = self.vetoed(key_id)?;
        let veto = match existing {
            Some(v) => v,
            None => {
                let v = Veto { time_ms, reason: reason.to_owned() };
                self.vetoes.insert(key_id.as_bytes(), veto::encode(&v))?;
                v
            }
        };
        self.flush()?;
        Ok(veto)
    }

    /// Removes the veto of `key_id`; returns the veto it removed, if there was one. Flushed.
    pub fn lift(&self, key_id: &str) -> Result<Option<Veto>> {
        check_key_id(key_id)?;
        let _guard = lock(&self.key_writes);
        let removed = self.vetoes.remove(key_id.as_bytes())?.map(|v| veto::decode(key_id, &v)).transpose()?;
        self.flush()?;
        Ok(removed)
    }

    /// The veto of `key_id`, if its name is vetoed here.
    pub fn vetoed(&self, key_id: &str) -> Result<Option<Veto>> {
        check_key_id(key_id)?;
        self.vetoes.get(key_id.as_bytes())?.map(|v| veto::decode(key_id, &v)).transpose()
    }

    /// Every veto, by key name, ascending.
    pub fn vetoes(&self) -> Result<Vec<(String, Veto)>> {
        self.vetoes
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let name = String::from_utf8_lossy(&k).into_owned();
                let veto = veto::decode(&name, &v)?;
                Ok((name, veto))
            })
            .collect()
    }

    // ---- identity ----------------------------------------------------------------------

    /// Stores (or replaces) the node's long-term secrets (an encoded `NodeSecrets`; a legacy
    /// store holds a bare 32-byte identity secret here), sealed under `"hyok/v1/identity"`.
    /// Flushed.
    pub fn put_identity(&self, secrets: &[u8]) -> Result<()> {
        if secrets.is_empty() || secrets.len() > MAX_IDENTITY_LEN {
            return Err(Error::Corrupt("identity".into()));
        }
        self.meta.insert(IDENTITY, self.seal.seal(IDENTITY_AAD, secrets)?)?;
        self.flush()
    }

    /// The node's long-term secrets as stored by [`Store::put_identity`], if any.
    pub fn identity(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(sealed) = self.meta.get(IDENTITY)? else { return Ok(None) };
        let bytes = self.seal.open(IDENTITY_AAD, &sealed)?;
        if bytes.is_empty() || bytes.len() > MAX_IDENTITY_LEN {
            return Err(Error::Corrupt("identity".into()));
        }
        Ok(Some(bytes))
    }

    // ---- manifest --------------------------------------------------------------------

    /// Stores (or replaces) the node's cluster manifest, an encoded `Manifest` that the caller
    /// has checked. Flushed.
    pub fn put_manifest(&self, encoded: &[u8]) -> Result<()> {
        if encoded.is_empty() || encoded.len() > MAX_MANIFEST_LEN {
            return Err(Error::Invalid("manifest size"));
        }
        self.meta.insert(MANIFEST, encoded)?;
        self.flush()
    }

    /// The manifest stored by [`Store::put_manifest`], if any.
    pub fn manifest(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(MANIFEST)?.map(|v| v.to_vec()))
    }

    /// Stores (or replaces) the membership change this node's operator accepted (the caller's
    /// encoding: the proposal and the node's signed acceptance). Flushed.
    pub fn put_proposal(&self, encoded: &[u8]) -> Result<()> {
        if encoded.is_empty() || encoded.len() > 3 * MAX_MANIFEST_LEN {
            return Err(Error::Invalid("proposal size"));
        }
        self.meta.insert(PROPOSAL, encoded)?;
        self.flush()
    }

    /// The accepted membership change stored by [`Store::put_proposal`], if any.
    pub fn proposal(&self) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(PROPOSAL)?.map(|v| v.to_vec()))
    }

    /// Forgets the accepted membership change (rejected, aborted). Flushed.
    pub fn remove_proposal(&self) -> Result<()> {
        self.meta.remove(PROPOSAL)?;
        self.flush()
    }

    // ---- evidence policy -------------------------------------------------------------

    /// Stores (or replaces) the node's evidence policy (its operator's, as checked by the
    /// caller), sealed under `"hyok/v1/policy"`: it holds SigV4 secrets. Flushed.
    pub fn put_policy(&self, encoded: &[u8]) -> Result<()> {
        if encoded.is_empty() || encoded.len() > MAX_POLICY_LEN {
            return Err(Error::Invalid("policy size"));
        }
        self.meta.insert(POLICY, self.seal.seal(POLICY_AAD, encoded)?)?;
        self.flush()
    }

    /// The policy stored by [`Store::put_policy`], if any.
    pub fn policy(&self) -> Result<Option<Zeroizing<Vec<u8>>>> {
        let Some(sealed) = self.meta.get(POLICY)? else { return Ok(None) };
        Ok(Some(self.seal.open(POLICY_AAD, &sealed)?))
    }

    // ---- keys ------------------------------------------------------------------------

    /// EC keys (shares from the DKG).
    pub fn ec(&self) -> Keys<'_, Ec> {
        Keys { store: self, trees: &self.ec, family: PhantomData }
    }

    /// Threshold RSA keys (shares from the dealer ceremony; usages [`Usages::DECRYPT`]).
    pub fn rsa(&self) -> Keys<'_, Rsa> {
        Keys { store: self, trees: &self.rsa, family: PhantomData }
    }

    // ---- audit -------------------------------------------------------------------------

    /// Appends `events` to the audit chain, in order, and makes them durable once: in the audit
    /// journal (see [`crate::journal`]), or, when the journal is full or failed, by a flush,
    /// after which the journal starts over. Entry `n` gets `seq = n`, `prev_hash` = entry
    /// `n − 1`'s hash (zeros for the first) and `hash = SHA-256(encoding)` (see [`crate::audit`]). Every event
    /// is checked ([`AuditEvent::check`]) before anything is written.
    ///
    /// The entries go into sled as plain inserts, then the recorded head: no transaction. A sled
    /// transaction seals and writes out sled's IO buffer twice (before and after it), which
    /// made sled's IO threads write and wake on every append. The journal is the durable copy,
    /// and sled's inserts, made in order under the audit lock, are recovered as a prefix: a
    /// crash leaves at worst an append's entries without its head, which [`Store::open`] moves
    /// over from the journal. Readers that compare the entries with the head
    /// ([`Store::verify_audit`]) read the head under the same lock.
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<Vec<AuditEntry>> {
        events.iter().try_for_each(AuditEvent::check)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let guard = lock(&self.audit_writes);
        let head = self.audit_head_or_last()?;
        let mut entries = Vec::with_capacity(events.len());
        let mut values = Vec::with_capacity(events.len());
        let (mut seq, mut prev) = (head.seq, head.hash);
        for event in events {
            seq += 1;
            let mut value = audit::encode(seq, event, &prev);
            let hash = audit::hash(&value);
            value.extend_from_slice(&hash);
            values.push(value);
            entries.push(AuditEntry { seq, event: event.clone(), prev_hash: prev, hash });
            prev = hash;
        }
        for (entry, value) in entries.iter().zip(&values) {
            self.audit.insert(entry.seq.to_be_bytes(), value.as_slice())?;
        }
        self.meta.insert(AUDIT_HEAD, &Head { seq, hash: prev }.encode()[..])?;
        // Into the journal in the lock, so that its records go in chain order.
        let end = match self.journal.append(&values) {
            Ok(Some(end)) => end,
            // Full, or the journal failed (now or earlier): one flush makes sled hold
            // everything, and the journal starts over. Were the append to fail instead, sled
            // would still hold these entries and the next append would journal entries that
            // do not continue the journal's records: acknowledged, yet lost to a crash.
            Ok(None) | Err(_) => {
                self.settle_in_sled()?;
                return Ok(entries);
            }
        };
        // Synced outside the lock: one sync makes everything written so far durable, so
        // concurrent appends share one (group commit) instead of queueing one each; each caller
        // still returns only once its own entries are on disk.
        drop(guard);
        if self.journal.sync(end).is_err() {
            // The journal vouches for nothing since its last reset: a flush of sled does, for
            // these entries and every other appended so far.
            let _guard = lock(&self.audit_writes);
            self.settle_in_sled()?;
        }
        Ok(entries)
    }

    /// Flushes sled, which then holds every audit entry the journal does, and starts the journal
    /// over. With the audit lock held, or before the store is shared (at open).
    fn settle_in_sled(&self) -> Result<()> {
        self.flush()?;
        self.journal.reset();
        Ok(())
    }

    /// The number of audit entries: the last entry's `seq` (0 for an empty log).
    pub fn audit_len(&self) -> Result<u64> {
        Ok(match self.audit.last()? {
            Some((key, _)) => key.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0),
            None => 0,
        })
    }

    /// Up to `limit` entries with `seq ≥ from_seq`, ascending.
    pub fn read_audit(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.audit.range(from_seq.to_be_bytes()..).take(limit).map(|item| audit::decode(&item?.1)).collect()
    }

    /// Test-only: rewrites the stored fields of audit entry `seq` with `edit`, keeping its stored
    /// hashes — what an attacker editing the log on disk would do. Flushed.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_edit_audit(&self, seq: u64, edit: impl FnOnce(&mut AuditEvent)) -> Result<()> {
        let key = seq.to_be_bytes();
        let value = self.audit.get(key)?.ok_or_else(|| Error::NotFound(format!("audit entry {seq}")))?;
        let mut entry = audit::decode(&value)?;
        edit(&mut entry.event);
        let mut value = audit::encode(entry.seq, &entry.event, &entry.prev_hash);
        value.extend_from_slice(&entry.hash);
        self.audit.insert(key, value)?;
        self.flush()
    }

    /// The audit chain's head: how many entries it holds and the last one's hash (`(0, [0; 32])`
    /// for an empty log).
    pub fn audit_head(&self) -> Result<(u64, [u8; 32])> {
        Ok(self
            .meta
            .get(AUDIT_HEAD)?
            .map(|v| audit::Head::decode(&v))
            .transpose()?
            .map_or((0, [0; 32]), |h| (h.seq, h.hash)))
    }

    /// Walks the whole chain from entry 1: `Ok(Ok(n))` with `n` entries verified, or
    /// `Ok(Err(break))` naming the first entry that is altered, missing, mislinked, or beyond /
    /// short of the recorded head. The outer `Err` is a storage failure, not a verdict.
    pub fn verify_audit(&self) -> Result<Result<u64, AuditBreak>> {
        // Under the audit lock: an append in progress has then inserted its head as well as its
        // entries, so an entry the walk saw is not mistaken for one past the head.
        let head = || {
            let _appends = lock(&self.audit_writes);
            self.meta.get(AUDIT_HEAD)?.map(|v| Head::decode(&v)).transpose()
        };
        let before = head()?;
        let entries = self.audit.iter().map(|item| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        });
        audit::verify(entries, before, head)
    }
}

/// One key family's records in a [`Store`]: [`Store::ec`] or [`Store::rsa`]. Each family has its
/// own trees and share sealing (see [`Family`]), so a name may exist in both and a share of one
/// never opens as the other's; the life cycle is the same: a version is stored PENDING (its
/// DKG or ceremony not yet committed), becomes ACTIVE on commit, and only ACTIVE versions are
/// ever used.
pub struct Keys<'s, F: Family> {
    pub(crate) store: &'s Store,
    pub(crate) trees: &'s Trees,
    family: PhantomData<F>,
}

impl<F: Family> Clone for Keys<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Family> Copy for Keys<'_, F> {}

impl<F: Family> std::fmt::Debug for Keys<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("family", &F::NAME).finish_non_exhaustive()
    }
}

impl<F: Family> Keys<'_, F> {
    /// Stores a new version as PENDING: its share sealed under
    /// `"hyok/v1/{F::SHARE_KIND}/{key_id}/{version}"`, its public package, `created_at_ms`. A new
    /// key also gets its policy record (enabled, with `usages`); an existing key's usages must
    /// equal `usages`. One transaction; flushed.
    ///
    /// Errors: [`Error::Invalid`] for a bad key id, empty or unknown usages, usages other than
    /// the family's [fixed ones](Family::FIXED_USAGES), a share over [`MAX_SHARE`] or a package
    /// over [`MAX_PACKAGE`] bytes, or usages that differ from the key's; [`Error::Exists`] if
    /// the version exists (pending or active).
    pub fn put_pending(
        &self,
        key_id: &str,
        version: u32,
        usages: Usages,
        share: &[u8],
        package: &[u8],
        created_at_ms: u64,
    ) -> Result<()> {
        check_key_id(key_id)?;
        if !usages.is_valid() || F::FIXED_USAGES.is_some_and(|fixed| fixed != usages) {
            return Err(Error::Invalid("usages"));
        }
        if share.len() > MAX_SHARE {
            return Err(Error::Invalid("share too large"));
        }
        if package.len() > MAX_PACKAGE {
            return Err(Error::Invalid("package too large"));
        }
        let sealed = self.store.seal.seal(&share_aad::<F>(key_id, version), share)?;
        let record = VersionRecord { active: false, created_at_ms, package, sealed: &sealed }.encode();
        let meta = encode_meta(&KeyMeta { usages, enabled: true, created_at_ms });
        let vkey = version_key(key_id, version);
        let _guard = lock(&self.store.key_writes);
        (&self.trees.keys, &self.trees.versions)
            .transaction(|(keys, versions)| {
                if versions.get(&vkey)?.is_some() {
                    return Err(ConflictableTransactionError::Abort(Error::Exists(name(key_id, version))));
                }
                match keys.get(key_id)? {
                    Some(existing) => {
                        let existing = decode_meta(key_id, &existing).map_err(ConflictableTransactionError::Abort)?;
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
                versions.insert(vkey.as_slice(), record.as_slice())?;
                Ok(())
            })
            .map_err(tx_error)?;
        self.store.flush()
    }

    /// PENDING → ACTIVE (the DKG or ceremony committed). Idempotent; flushed.
    /// [`Error::NotFound`] if the version does not exist.
    pub fn activate(&self, key_id: &str, version: u32) -> Result<()> {
        check_key_id(key_id)?;
        let vkey = version_key(key_id, version);
        let name = name(key_id, version);
        let _guard = lock(&self.store.key_writes);
        let value = self.trees.versions.get(&vkey)?.ok_or_else(|| Error::NotFound(name.clone()))?;
        let r = VersionRecord::decode(&name, &value)?;
        if !r.active {
            self.trees.versions.insert(vkey, VersionRecord { active: true, ..r }.encode())?;
        }
        self.store.flush()
    }

    /// Removes a PENDING version (an aborted DKG or ceremony), and the key's policy record if no
    /// version is left. An ACTIVE version is never removed ([`Error::Exists`]); a missing one is
    /// `Ok`. One transaction; flushed.
    pub fn remove_pending(&self, key_id: &str, version: u32) -> Result<()> {
        check_key_id(key_id)?;
        let vkey = version_key(key_id, version);
        let name = name(key_id, version);
        let _guard = lock(&self.store.key_writes);
        if let Some(value) = self.trees.versions.get(&vkey)? {
            if VersionRecord::decode(&name, &value)?.active {
                return Err(Error::Exists(name));
            }
            // Writers are serialized, so no version can appear between this scan and the commit.
            let others =
                self.trees.versions.scan_prefix(version_prefix(key_id)).keys().any(|k| k.is_ok_and(|k| k != vkey));
            (&self.trees.keys, &self.trees.versions)
                .transaction(|(keys, versions)| {
                    versions.remove(vkey.as_slice())?;
                    if !others {
                        keys.remove(key_id.as_bytes())?;
                    }
                    Ok(())
                })
                .map_err(tx_error)?;
        }
        self.store.flush()
    }

    /// The unsealed share and public package of an ACTIVE version: the only lookup operations
    /// use. A PENDING version is [`Error::Pending`] and a missing one [`Error::NotFound`], so an
    /// uncommitted key is never used.
    pub fn active_share(&self, key_id: &str, version: u32) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        check_key_id(key_id)?;
        let name = name(key_id, version);
        let value =
            self.trees.versions.get(version_key(key_id, version))?.ok_or_else(|| Error::NotFound(name.clone()))?;
        let r = VersionRecord::decode(&name, &value)?;
        if !r.active {
            return Err(Error::Pending(name));
        }
        let generation = self.generation(key_id, version)?;
        let aad = crate::generations::generation_aad::<F>(key_id, version, generation);
        let share = self.store.seal.open(&aad, r.sealed)?;
        Ok((share, r.package.to_vec()))
    }

    /// Test-only: replaces an existing version's share with `share`, sealed like a real one —
    /// what an attacker holding the seal key could do. Flushed.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_replace_share(&self, key_id: &str, version: u32, share: &[u8]) -> Result<()> {
        let vkey = version_key(key_id, version);
        let name = name(key_id, version);
        let _guard = lock(&self.store.key_writes);
        let value = self.trees.versions.get(&vkey)?.ok_or_else(|| Error::NotFound(name.clone()))?;
        let r = VersionRecord::decode(&name, &value)?;
        let aad = crate::generations::generation_aad::<F>(key_id, version, self.generation(key_id, version)?);
        let sealed = self.store.seal.seal(&aad, share)?;
        self.trees.versions.insert(vkey, VersionRecord { sealed: &sealed, ..r }.encode())?;
        self.store.flush()
    }

    /// One version's public side (pending or active), if it exists.
    pub fn version(&self, key_id: &str, version: u32) -> Result<Option<VersionInfo>> {
        check_key_id(key_id)?;
        let Some(value) = self.trees.versions.get(version_key(key_id, version))? else { return Ok(None) };
        Ok(Some(VersionRecord::decode(&name(key_id, version), &value)?.info(version)))
    }

    /// Every version of a key (pending ones included), ascending.
    pub fn versions(&self, key_id: &str) -> Result<Vec<VersionInfo>> {
        check_key_id(key_id)?;
        let prefix = version_prefix(key_id);
        let mut out = Vec::new();
        for item in self.trees.versions.scan_prefix(&prefix) {
            let (k, v) = item?;
            let version = k
                .get(prefix.len()..)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| Error::Corrupt(key_id.into()))?;
            out.push(VersionRecord::decode(&name(key_id, version), &v)?.info(version));
        }
        Ok(out)
    }

    // ---- per-key policy ----------------------------------------------------------------

    /// A key's local policy, if the key exists.
    pub fn key(&self, key_id: &str) -> Result<Option<KeyMeta>> {
        check_key_id(key_id)?;
        self.trees.keys.get(key_id)?.map(|v| decode_meta(key_id, &v)).transpose()
    }

    /// Every key id (with at least one version, pending or active), ascending.
    pub fn list(&self) -> Result<Vec<String>> {
        self.trees.keys.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect()
    }

    /// Turns this node's service of a key on or off; returns the new policy. Flushed.
    /// [`Error::NotFound`] if the key does not exist.
    pub fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<KeyMeta> {
        check_key_id(key_id)?;
        let _guard = lock(&self.store.key_writes);
        let mut meta = self.key(key_id)?.ok_or_else(|| Error::NotFound(key_id.into()))?;
        meta.enabled = enabled;
        self.trees.keys.insert(key_id, encode_meta(&meta))?;
        self.store.flush()?;
        Ok(meta)
    }
}
