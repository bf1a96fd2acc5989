//! The hash-chained audit log: every partial operation and admin change, in order.
//!
//! Entry `n` is stored under `u64be(n)` (from 1) as `encoding ‖ hash`, where
//!
//! ```text
//! encoding = u64be(seq) ‖ u64be(time_ms) ‖ str(key_id) ‖ u32be(version) ‖ str(operation)
//!          ‖ str(request_id) ‖ str(caller) ‖ prev_hash[32]        (str = u32be(len) ‖ bytes)
//! hash     = SHA-256(encoding)
//! ```
//!
//! and `prev_hash` is the previous entry's hash (32 zero bytes for entry 1). Changing, removing
//! or reordering any entry breaks the chain at that entry; removing entries from the end is
//! caught against the recorded head (`Head`, written atomically with each append). Rewriting
//! an entry *and* its hash consistently breaks the link of the entry after it. What a chain
//! cannot catch is a writer who rewrites everything from some entry to the end, head included:
//! for that, ship the entries (or the head hash) off the node.

use crate::error::{Error, Result};
use crate::keys::{MAX_CALLER, MAX_OPERATION, MAX_REQUEST_ID};
use sha2::{Digest, Sha256};

/// What happened (the store assigns sequence number and hashes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix milliseconds (the caller reads the clock).
    pub time_ms: u64,
    /// The key concerned (empty for node-wide events).
    pub key_id: String,
    /// The key version (0 when not applicable).
    pub version: u32,
    /// E.g. `evaluate:encrypt`, `unwrap`, `dkg:commit`, `disable`.
    pub operation: String,
    /// The caller's request id.
    pub request_id: String,
    /// Who asked (role and certificate name).
    pub caller: String,
    /// A digest of what was evaluated (the DPRF seed, or SHA-256 of a wrapped key or RSA
    /// ciphertext), at most [`MAX_DIGEST`] bytes; empty when not applicable. Entries without one
    /// encode exactly as before the field existed, so older chains still verify.
    pub digest: Vec<u8>,
}

/// Longest [`AuditEvent::digest`].
pub const MAX_DIGEST: usize = 64;

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// 1, 2, 3, …
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
    /// The previous entry's hash.
    pub prev_hash: [u8; 32],
    /// SHA-256 of this entry's encoding.
    pub hash: [u8; 32],
}

/// Where and why the chain is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("audit chain broken at entry {seq}: {reason}")]
pub struct AuditBreak {
    /// The first entry that does not verify or is missing.
    pub seq: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl AuditEvent {
    /// The event with `digest` (clipped to [`MAX_DIGEST`] bytes) as what was evaluated.
    pub fn with_digest(mut self, digest: &[u8]) -> Self {
        self.digest = digest[..digest.len().min(MAX_DIGEST)].to_vec();
        self
    }

    /// Checks the size limits: key id (empty, or a valid key id), operation (1 to
    /// [`MAX_OPERATION`] bytes), request id ≤ [`MAX_REQUEST_ID`], caller ≤ [`MAX_CALLER`].
    pub fn check(&self) -> Result<()> {
        if !self.key_id.is_empty() {
            crate::keys::check_key_id(&self.key_id)?;
        }
        if self.digest.len() > MAX_DIGEST {
            return Err(Error::Invalid("audit digest"));
        }
        if self.operation.is_empty() || self.operation.len() > MAX_OPERATION {
            return Err(Error::Invalid("audit operation"));
        }
        if self.request_id.len() > MAX_REQUEST_ID {
            return Err(Error::Invalid("audit request id"));
        }
        if self.caller.len() > MAX_CALLER {
            return Err(Error::Invalid("audit caller"));
        }
        Ok(())
    }
}

impl AuditEntry {
    /// The hash this entry's fields call for (compare with [`AuditEntry::hash`]).
    pub fn computed_hash(&self) -> [u8; 32] {
        hash(&encode(self.seq, &self.event, &self.prev_hash))
    }
}

/// Walks entries read from a node (for instance over `ReadAudit`), which must start at entry 1
/// and come in order: each must carry the next sequence number, link to its predecessor's hash,
/// and hash to what its fields call for. Returns the number checked or the first break. Entries
/// cut from the end cannot show here; the node's own [`crate::Store::verify_audit`] checks the
/// recorded head for that.
pub fn verify_entries(entries: impl IntoIterator<Item = AuditEntry>) -> std::result::Result<u64, AuditBreak> {
    let mut prev = [0u8; 32];
    let mut expected = 1u64;
    for entry in entries {
        if entry.seq != expected {
            return Err(AuditBreak { seq: expected, reason: "entry missing" });
        }
        if entry.prev_hash != prev {
            return Err(AuditBreak { seq: entry.seq, reason: "does not link to the previous entry" });
        }
        if entry.computed_hash() != entry.hash {
            return Err(AuditBreak { seq: entry.seq, reason: "contents altered (hash mismatch)" });
        }
        prev = entry.hash;
        expected += 1;
    }
    Ok(expected - 1)
}

/// Longest string field [`decode`] accepts (every limit in [`AuditEvent::check`] is below it).
const MAX_FIELD: usize = 1024;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(crate) fn encode(seq: u64, event: &AuditEvent, prev_hash: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + event.key_id.len() + event.request_id.len() + event.caller.len());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&event.time_ms.to_be_bytes());
    put_str(&mut out, &event.key_id);
    out.extend_from_slice(&event.version.to_be_bytes());
    put_str(&mut out, &event.operation);
    put_str(&mut out, &event.request_id);
    put_str(&mut out, &event.caller);
    if !event.digest.is_empty() {
        out.extend_from_slice(&(event.digest.len() as u32).to_be_bytes());
        out.extend_from_slice(&event.digest);
    }
    out.extend_from_slice(prev_hash);
    out
}

pub(crate) fn hash(encoding: &[u8]) -> [u8; 32] {
    Sha256::digest(encoding).into()
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        (self.0.len() >= n).then(|| {
            let (a, b) = self.0.split_at(n);
            self.0 = b;
            a
        })
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        if len > MAX_FIELD {
            return None;
        }
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// Decodes a stored `encoding ‖ hash` value.
pub(crate) fn decode(value: &[u8]) -> Result<AuditEntry> {
    let corrupt = || Error::Corrupt("audit entry".into());
    let mut c = Cursor(value);
    let seq = c.u64().ok_or_else(corrupt)?;
    let time_ms = c.u64().ok_or_else(corrupt)?;
    let key_id = c.str().ok_or_else(corrupt)?;
    let version = c.u32().ok_or_else(corrupt)?;
    let operation = c.str().ok_or_else(corrupt)?;
    let request_id = c.str().ok_or_else(corrupt)?;
    let caller = c.str().ok_or_else(corrupt)?;
    // An entry with a digest has more than the two hashes left.
    let digest = if c.0.len() > 64 {
        let len = c.u32().ok_or_else(corrupt)? as usize;
        if len == 0 || len > MAX_DIGEST {
            return Err(corrupt());
        }
        c.take(len).ok_or_else(corrupt)?.to_vec()
    } else {
        Vec::new()
    };
    let prev_hash: [u8; 32] = c.take(32).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?;
    let hash: [u8; 32] = c.take(32).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?;
    if !c.0.is_empty() {
        return Err(corrupt());
    }
    let event = AuditEvent { time_ms, key_id, version, operation, request_id, caller, digest };
    Ok(AuditEntry { seq, event, prev_hash, hash })
}

/// The chain's head as last recorded by an append: `u64be(seq) ‖ hash[32]`, stored in the `meta`
/// tree under `audit_head`, inserted after the entries. It lets [`verify`] notice entries
/// removed from the end, which the links alone cannot show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    /// The head of an empty chain: seq 0 and the all-zero hash entry 1 links to.
    pub(crate) const EMPTY: Head = Head { seq: 0, hash: [0; 32] };

    /// The head that `entry` makes, as the last entry of a chain.
    pub(crate) fn of(entry: &AuditEntry) -> Head {
        Head { seq: entry.seq, hash: entry.hash }
    }

    /// Whether `entry` is the next one after this head: the next `seq`, linked to this hash
    /// (its own hash is not checked here).
    pub(crate) fn continued_by(&self, entry: &AuditEntry) -> bool {
        entry.seq == self.seq + 1 && entry.prev_hash == self.hash
    }

    pub(crate) fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..].copy_from_slice(&self.hash);
        out
    }

    pub(crate) fn decode(v: &[u8]) -> Result<Head> {
        let corrupt = || Error::Corrupt("audit head".into());
        let v: &[u8; 40] = v.try_into().map_err(|_| corrupt())?;
        let seq = u64::from_be_bytes(v[..8].try_into().map_err(|_| corrupt())?);
        let hash = v[8..].try_into().map_err(|_| corrupt())?;
        Ok(Head { seq, hash })
    }
}

/// Walks `(stored key, stored value)` pairs in key order and reports the first break, or the
/// number of entries checked.
///
/// `before` and `after` are the recorded heads read just before and just after the walk (so
/// appends running concurrently with the walk are not mistaken for tampering): every entry up
/// to `before` must be present and end in `before.hash`, and no entry may lie beyond `after`.
/// A chain with entries but no recorded head is broken.
pub(crate) fn verify(
    entries: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>,
    before: Option<Head>,
    after: impl FnOnce() -> Result<Option<Head>>,
) -> Result<Result<u64, AuditBreak>> {
    let before = before.unwrap_or(Head::EMPTY);
    let mut expected_seq = 1u64;
    let mut prev = [0u8; 32];
    for item in entries {
        let (key, value) = item?;
        let broken = |reason| Ok(Err(AuditBreak { seq: expected_seq, reason }));
        let Ok(stored_seq) = <[u8; 8]>::try_from(key.as_slice()).map(u64::from_be_bytes) else {
            return broken("malformed key");
        };
        if stored_seq != expected_seq {
            return broken("entry missing");
        }
        let Ok(entry) = decode(&value) else {
            return broken("entry does not decode");
        };
        if entry.seq != expected_seq {
            return broken("sequence number altered");
        }
        if entry.prev_hash != prev {
            return broken("previous-hash link broken");
        }
        if hash(&encode(entry.seq, &entry.event, &entry.prev_hash)) != entry.hash {
            return broken("entry altered (hash mismatch)");
        }
        if entry.seq == before.seq && entry.hash != before.hash {
            return broken("entry differs from the recorded head");
        }
        prev = entry.hash;
        expected_seq += 1;
    }
    let last = expected_seq - 1;
    if last < before.seq {
        return Ok(Err(AuditBreak { seq: expected_seq, reason: "entries missing at the end" }));
    }
    match after()? {
        None if last > 0 => Ok(Err(AuditBreak { seq: expected_seq, reason: "recorded head missing" })),
        Some(head) if last > head.seq => {
            Ok(Err(AuditBreak { seq: head.seq + 1, reason: "entry beyond the recorded head" }))
        }
        _ => Ok(Ok(last)),
    }
}
