//! The store itself: one sled database per node.
//!
//! Trees: `meta` (the sealed identity secret), `keys` (per-key policy), `versions` (per key
//! version: sealed share, public package, state), `audit` (the chain, see [`crate::audit`]).
//! **Every mutating method flushes to disk before it returns `Ok`**, so a node that answers has
//! made durable what it answered about.

use crate::audit::{self, AuditBreak, AuditEntry, AuditEvent};
use crate::error::{Error, Result};
use crate::seal::SealKey;
use std::path::Path;
use std::sync::Mutex;
use zeroize::Zeroizing;

/// What a key may be used for, as a bit set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usages(pub u8);

impl Usages {
    /// DPRF encryption.
    pub const ENCRYPT: u8 = 1;
    /// DPRF decryption.
    pub const DECRYPT: u8 = 2;
    /// Server-side wrapping.
    pub const WRAP: u8 = 4;
    /// Threshold unwrapping.
    pub const UNWRAP: u8 = 8;
    /// Every usage.
    pub const ALL: Usages = Usages(15);
    /// Whether `bit` is allowed.
    pub fn allows(self, bit: u8) -> bool {
        self.0 & bit == bit
    }
}

/// A key's local policy on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    /// Usage fixed at creation.
    pub usages: Usages,
    /// Whether this node serves the key (an operator can turn it off here alone).
    pub enabled: bool,
    /// When this node first stored the key, Unix milliseconds.
    pub created_at_ms: u64,
}

/// One version's public side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// The public key package (opaque here).
    pub package: Vec<u8>,
    /// Committed (usable) or still pending.
    pub active: bool,
    /// Unix milliseconds.
    pub created_at_ms: u64,
}

/// Longest key id, request id and caller name.
pub const MAX_KEY_ID: usize = 128;
const MAX_REQUEST_ID: usize = 256;
const MAX_CALLER: usize = 512;

fn check_key_id(key_id: &str) -> Result<()> {
    let ok = !key_id.is_empty()
        && key_id.len() <= MAX_KEY_ID
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(Error::Invalid("key id")) }
}

fn version_key(key_id: &str, version: u32) -> Vec<u8> {
    let mut k = key_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

fn share_aad(key_id: &str, version: u32) -> Vec<u8> {
    format!("hyok/v1/share/{key_id}/{version}").into_bytes()
}

const IDENTITY_AAD: &[u8] = b"hyok/v1/identity";

/// `0x01 ‖ active ‖ u64be(created) ‖ u32be(len package) ‖ package ‖ sealed share`.
fn encode_version(active: bool, created_at_ms: u64, package: &[u8], sealed: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + package.len() + sealed.len());
    v.push(1);
    v.push(u8::from(active));
    v.extend_from_slice(&created_at_ms.to_be_bytes());
    v.extend_from_slice(&(package.len() as u32).to_be_bytes());
    v.extend_from_slice(package);
    v.extend_from_slice(sealed);
    v
}

struct VersionRecord<'a> {
    active: bool,
    created_at_ms: u64,
    package: &'a [u8],
    sealed: &'a [u8],
}

fn decode_version<'a>(name: &str, v: &'a [u8]) -> Result<VersionRecord<'a>> {
    let corrupt = || Error::Corrupt(name.to_owned());
    if v.len() < 14 || v[0] != 1 {
        return Err(corrupt());
    }
    let created_at_ms = u64::from_be_bytes(v[2..10].try_into().map_err(|_| corrupt())?);
    let len = u32::from_be_bytes(v[10..14].try_into().map_err(|_| corrupt())?) as usize;
    let rest = &v[14..];
    if rest.len() < len {
        return Err(corrupt());
    }
    let (package, sealed) = rest.split_at(len);
    Ok(VersionRecord { active: v[1] == 1, created_at_ms, package, sealed })
}

fn encode_meta(m: &KeyMeta) -> Vec<u8> {
    let mut v = vec![1, m.usages.0, u8::from(m.enabled)];
    v.extend_from_slice(&m.created_at_ms.to_be_bytes());
    v
}

fn decode_meta(name: &str, v: &[u8]) -> Result<KeyMeta> {
    let corrupt = || Error::Corrupt(name.to_owned());
    if v.len() != 11 || v[0] != 1 {
        return Err(corrupt());
    }
    let created_at_ms = u64::from_be_bytes(v[3..11].try_into().map_err(|_| corrupt())?);
    Ok(KeyMeta { usages: Usages(v[1]), enabled: v[2] == 1, created_at_ms })
}

struct AuditHead {
    next_seq: u64,
    prev_hash: [u8; 32],
}

/// A node's store.
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    keys: sled::Tree,
    versions: sled::Tree,
    audit: sled::Tree,
    seal: SealKey,
    head: Mutex<AuditHead>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, sealing with `seal`.
    pub fn open(dir: &Path, seal: SealKey) -> Result<Self> {
        let db = sled::Config::new().path(dir).open()?;
        let audit = db.open_tree("audit")?;
        let head = match audit.last()? {
            Some((_, value)) => {
                let last = audit::decode(&value)?;
                AuditHead { next_seq: last.seq + 1, prev_hash: last.hash }
            }
            None => AuditHead { next_seq: 1, prev_hash: [0; 32] },
        };
        Ok(Store {
            meta: db.open_tree("meta")?,
            keys: db.open_tree("keys")?,
            versions: db.open_tree("versions")?,
            audit,
            db,
            seal,
            head: Mutex::new(head),
        })
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Stores the node's identity secret, sealed. Flushed.
    pub fn put_identity(&self, secret: &[u8; 32]) -> Result<()> {
        self.meta.insert("identity", self.seal.seal(IDENTITY_AAD, secret))?;
        self.flush()
    }

    /// The node's identity secret, if one was stored.
    pub fn identity(&self) -> Result<Option<Zeroizing<[u8; 32]>>> {
        let Some(sealed) = self.meta.get("identity")? else { return Ok(None) };
        let bytes = self.seal.open(IDENTITY_AAD, &sealed)?;
        let mut out = Zeroizing::new([0u8; 32]);
        if bytes.len() != 32 {
            return Err(Error::Corrupt("identity".into()));
        }
        out.copy_from_slice(&bytes);
        Ok(Some(out))
    }

    /// Stores a new version's share (sealed) and public package as PENDING, creating the key's
    /// policy record (enabled, with `usages`) if the key is new. Flushed. Refuses an existing
    /// version.
    pub fn put_pending_version(
        &self,
        key_id: &str,
        version: u32,
        usages: Usages,
        share: &[u8],
        package: &[u8],
        now_ms: u64,
    ) -> Result<()> {
        check_key_id(key_id)?;
        let vkey = version_key(key_id, version);
        let name = format!("{key_id}/{version}");
        if self.versions.contains_key(&vkey)? {
            return Err(Error::Exists(name));
        }
        if !self.keys.contains_key(key_id)? {
            let meta = KeyMeta { usages, enabled: true, created_at_ms: now_ms };
            self.keys.insert(key_id, encode_meta(&meta))?;
        }
        let sealed = self.seal.seal(&share_aad(key_id, version), share);
        self.versions.insert(vkey, encode_version(false, now_ms, package, &sealed))?;
        self.flush()
    }

    /// PENDING → ACTIVE. Flushed. Idempotent.
    pub fn activate_version(&self, key_id: &str, version: u32) -> Result<()> {
        let vkey = version_key(key_id, version);
        let name = format!("{key_id}/{version}");
        let value = self.versions.get(&vkey)?.ok_or_else(|| Error::NotFound(name.clone()))?;
        let r = decode_version(&name, &value)?;
        if !r.active {
            self.versions.insert(vkey, encode_version(true, r.created_at_ms, r.package, r.sealed))?;
            self.flush()?;
        }
        Ok(())
    }

    /// Removes a PENDING version (an aborted DKG); an ACTIVE one is never removed. Removes the
    /// key's policy record too if no version is left. Flushed.
    pub fn remove_pending_version(&self, key_id: &str, version: u32) -> Result<()> {
        let vkey = version_key(key_id, version);
        let name = format!("{key_id}/{version}");
        let Some(value) = self.versions.get(&vkey)? else { return Ok(()) };
        if decode_version(&name, &value)?.active {
            return Err(Error::Exists(name));
        }
        self.versions.remove(vkey)?;
        if self.versions(key_id)?.is_empty() {
            self.keys.remove(key_id)?;
        }
        self.flush()
    }

    /// The unsealed share and public package of an ACTIVE version. A pending or missing
    /// version is an error: operations never see an uncommitted key.
    pub fn active_share(&self, key_id: &str, version: u32) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        let name = format!("{key_id}/{version}");
        let value = self.versions.get(version_key(key_id, version))?.ok_or_else(|| Error::NotFound(name.clone()))?;
        let r = decode_version(&name, &value)?;
        if !r.active {
            return Err(Error::Pending(name));
        }
        let share = self.seal.open(&share_aad(key_id, version), r.sealed)?;
        Ok((share, r.package.to_vec()))
    }

    /// A key's local policy.
    pub fn key(&self, key_id: &str) -> Result<Option<KeyMeta>> {
        self.keys.get(key_id)?.map(|v| decode_meta(key_id, &v)).transpose()
    }

    /// Every version of a key (pending ones included), ascending.
    pub fn versions(&self, key_id: &str) -> Result<Vec<VersionInfo>> {
        let mut prefix = key_id.as_bytes().to_vec();
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.versions.scan_prefix(&prefix) {
            let (k, v) = item?;
            let version = u32::from_be_bytes(k[prefix.len()..].try_into().map_err(|_| Error::Corrupt(key_id.into()))?);
            let r = decode_version(key_id, &v)?;
            out.push(VersionInfo {
                version,
                package: r.package.to_vec(),
                active: r.active,
                created_at_ms: r.created_at_ms,
            });
        }
        Ok(out)
    }

    /// Every key id, ascending.
    pub fn list_keys(&self) -> Result<Vec<String>> {
        self.keys.iter().keys().map(|k| Ok(String::from_utf8_lossy(&k?).into_owned())).collect()
    }

    /// Turns this node's service of a key on or off. Flushed.
    pub fn set_enabled(&self, key_id: &str, enabled: bool) -> Result<KeyMeta> {
        let mut meta = self.key(key_id)?.ok_or_else(|| Error::NotFound(key_id.into()))?;
        meta.enabled = enabled;
        self.keys.insert(key_id, encode_meta(&meta))?;
        self.flush()?;
        Ok(meta)
    }

    /// Appends events to the audit chain, in order, and flushes once.
    pub fn append_audit(&self, events: &[AuditEvent]) -> Result<Vec<AuditEntry>> {
        for e in events {
            if e.key_id.len() > MAX_KEY_ID || e.request_id.len() > MAX_REQUEST_ID || e.caller.len() > MAX_CALLER {
                return Err(Error::Invalid("audit field too long"));
            }
            if e.operation.len() > 64 {
                return Err(Error::Invalid("audit operation"));
            }
        }
        let mut head = self.head.lock().map_err(|_| Error::Corrupt("audit head".into()))?;
        let mut batch = sled::Batch::default();
        let mut entries = Vec::with_capacity(events.len());
        let (mut seq, mut prev) = (head.next_seq, head.prev_hash);
        for event in events {
            let mut value = audit::encode(seq, event, &prev);
            let hash = audit::hash(&value);
            value.extend_from_slice(&hash);
            batch.insert(&seq.to_be_bytes(), value);
            entries.push(AuditEntry { seq, event: event.clone(), prev_hash: prev, hash });
            prev = hash;
            seq += 1;
        }
        self.audit.apply_batch(batch)?;
        self.flush()?;
        head.next_seq = seq;
        head.prev_hash = prev;
        Ok(entries)
    }

    /// Up to `limit` entries from `from_seq` on.
    pub fn read_audit(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        self.audit.range(from_seq.to_be_bytes()..).take(limit).map(|item| audit::decode(&item?.1)).collect()
    }

    /// Walks the whole chain: `Ok(Ok(n))` with `n` entries verified, or the first break.
    pub fn verify_audit(&self) -> Result<Result<u64, AuditBreak>> {
        audit::verify(self.audit.iter().map(|item| {
            let (k, v) = item?;
            Ok((k.to_vec(), v.to_vec()))
        }))
    }

    /// Raw access to the audit tree, for tests that tamper with it.
    #[doc(hidden)]
    pub fn dangerous_audit_tree(&self) -> &sled::Tree {
        &self.audit
    }
}
