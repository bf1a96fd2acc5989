//! Key records: ids, usages, per-key policy, per-version records, their byte encodings, and the
//! key families ([`Family`]: [`Ec`], [`Rsa`]) that keep them in separate trees.
//!
//! Each family has two sled trees (see [`crate::store`]), with the same layout:
//!
//! ```text
//! keys:     key_id                           → 0x01 ‖ usages ‖ enabled ‖ u64be(created_at_ms)
//! versions: key_id ‖ 0x00 ‖ u32be(version)   → 0x01 ‖ state ‖ u64be(created_at_ms)
//!                                              ‖ u32be(len package) ‖ package ‖ sealed share
//! ```
//!
//! | family  | policy tree | versions tree  | share sealed under                        | usages       |
//! |---------|-------------|----------------|-------------------------------------------|--------------|
//! | [`Ec`]  | `keys`      | `versions`     | `"hyok/v1/share/{key_id}/{version}"`      | chosen       |
//! | [`Rsa`] | `rsa_keys`  | `rsa_versions` | `"hyok/v1/rsa-share/{key_id}/{version}"`  | decrypt only |
//!
//! `state` is `0` (pending) or `1` (active). A key id never contains `0x00`, so a scan of
//! `key_id ‖ 0x00` sees exactly that key's versions, in ascending version order. A share's
//! associated data names its family, key id and version, so a share sealed for one key version
//! does not open as another's, nor as the other family's, nor as the identity secret
//! (`"hyok/v1/identity"`). A name may exist in both families; the two never see each other.

use crate::error::{Error, Result};

/// Longest key id, in bytes (of `[A-Za-z0-9._-]`).
pub const MAX_KEY_ID: usize = 128;
/// Longest audit request id, in bytes.
pub const MAX_REQUEST_ID: usize = 256;
/// Longest audit caller name, in bytes.
pub const MAX_CALLER: usize = 512;
/// Longest audit operation name, in bytes.
pub const MAX_OPERATION: usize = 64;
/// Largest share (before sealing), in bytes.
pub const MAX_SHARE: usize = 64 * 1024;
/// Largest public package, in bytes.
pub const MAX_PACKAGE: usize = 1024 * 1024;

/// Checks a key id: 1 to [`MAX_KEY_ID`] bytes of `[A-Za-z0-9._-]`.
pub fn check_key_id(key_id: &str) -> Result<()> {
    let ok = !key_id.is_empty()
        && key_id.len() <= MAX_KEY_ID
        && key_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(Error::Invalid("key id")) }
}

/// What a key may be used for, as a bit set of [`Usages::ENCRYPT`], [`Usages::DECRYPT`],
/// [`Usages::WRAP`] and [`Usages::UNWRAP`].
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

    /// Whether every bit of `bit` is allowed.
    pub fn allows(self, bit: u8) -> bool {
        self.0 & bit == bit
    }

    /// At least one usage, and no bit outside [`Usages::ALL`].
    pub fn is_valid(self) -> bool {
        self.0 != 0 && self.0 & !Self::ALL.0 == 0
    }
}

/// A key's local policy on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMeta {
    /// Usage fixed at creation; every version of the key has it.
    pub usages: Usages,
    /// Whether this node serves the key (an operator can turn it off here alone).
    pub enabled: bool,
    /// When this node first stored the key, Unix milliseconds (from the caller's clock).
    pub created_at_ms: u64,
}

/// One version's public side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version number.
    pub version: u32,
    /// The public key package (opaque here).
    pub package: Vec<u8>,
    /// `true` once committed (ACTIVE, usable); `false` while PENDING.
    pub active: bool,
    /// Unix milliseconds (from the caller's clock).
    pub created_at_ms: u64,
}

const RECORD_FORMAT: u8 = 0x01;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Ec {}
    impl Sealed for super::Rsa {}
}

/// A family of keys: what differs between EC and threshold RSA keys in the store (the table in
/// the [module docs](self)). Everything else — records, life cycle, locking, flushing — is one
/// implementation, reached through [`crate::store::Keys`]. Sealed: the families are the store's.
pub trait Family: sealed::Sealed + 'static {
    /// What the family is called in logs and docs.
    const NAME: &'static str;
    /// The tree of per-key policy records.
    const KEYS_TREE: &'static str;
    /// The tree of version records.
    const VERSIONS_TREE: &'static str;
    /// The record kind in a share's associated data, `"hyok/v1/{SHARE_KIND}/{key_id}/{version}"`.
    const SHARE_KIND: &'static str;
    /// The usages every key of the family has, if the family fixes them; `None` lets each key
    /// choose its own at creation.
    const FIXED_USAGES: Option<Usages>;
}

/// EC keys (Ristretto255 shares from the DKG): DPRF encrypt/decrypt, wrap/unwrap.
#[derive(Debug)]
pub enum Ec {}

/// Threshold RSA keys (Shoup shares from the dealer ceremony): decrypt only.
#[derive(Debug)]
pub enum Rsa {}

impl Family for Ec {
    const NAME: &'static str = "EC";
    const KEYS_TREE: &'static str = "keys";
    const VERSIONS_TREE: &'static str = "versions";
    const SHARE_KIND: &'static str = "share";
    const FIXED_USAGES: Option<Usages> = None;
}

impl Family for Rsa {
    const NAME: &'static str = "RSA";
    const KEYS_TREE: &'static str = "rsa_keys";
    const VERSIONS_TREE: &'static str = "rsa_versions";
    const SHARE_KIND: &'static str = "rsa-share";
    const FIXED_USAGES: Option<Usages> = Some(Usages(Usages::DECRYPT));
}

/// The associated data a share of family `F` is sealed under: the record kind, key id and
/// version.
pub(crate) fn share_aad<F: Family>(key_id: &str, version: u32) -> Vec<u8> {
    format!("hyok/v1/{}/{key_id}/{version}", F::SHARE_KIND).into_bytes()
}

/// The associated data the identity secret is sealed under.
pub(crate) const IDENTITY_AAD: &[u8] = b"hyok/v1/identity";

/// `key_id ‖ 0x00`: the prefix of every version of a key.
pub(crate) fn version_prefix(key_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(key_id.len() + 5);
    k.extend_from_slice(key_id.as_bytes());
    k.push(0);
    k
}

/// `key_id ‖ 0x00 ‖ u32be(version)`.
pub(crate) fn version_key(key_id: &str, version: u32) -> Vec<u8> {
    let mut k = version_prefix(key_id);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// A decoded `versions` value, borrowing from the stored bytes.
pub(crate) struct VersionRecord<'a> {
    pub active: bool,
    pub created_at_ms: u64,
    pub package: &'a [u8],
    pub sealed: &'a [u8],
}

impl VersionRecord<'_> {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(14 + self.package.len() + self.sealed.len());
        v.push(RECORD_FORMAT);
        v.push(u8::from(self.active));
        v.extend_from_slice(&self.created_at_ms.to_be_bytes());
        // The store bounds packages by MAX_PACKAGE, far below u32::MAX.
        v.extend_from_slice(&(self.package.len() as u32).to_be_bytes());
        v.extend_from_slice(self.package);
        v.extend_from_slice(self.sealed);
        v
    }

    pub(crate) fn decode<'a>(name: &str, v: &'a [u8]) -> Result<VersionRecord<'a>> {
        let corrupt = || Error::Corrupt(name.to_owned());
        let (header, rest) = v.split_at_checked(14).ok_or_else(corrupt)?;
        if header[0] != RECORD_FORMAT || header[1] > 1 {
            return Err(corrupt());
        }
        let created_at_ms = u64::from_be_bytes(header[2..10].try_into().map_err(|_| corrupt())?);
        let len = u32::from_be_bytes(header[10..14].try_into().map_err(|_| corrupt())?) as usize;
        let (package, sealed) = rest.split_at_checked(len).ok_or_else(corrupt)?;
        Ok(VersionRecord { active: header[1] == 1, created_at_ms, package, sealed })
    }

    pub(crate) fn info(&self, version: u32) -> VersionInfo {
        VersionInfo { version, package: self.package.to_vec(), active: self.active, created_at_ms: self.created_at_ms }
    }
}

pub(crate) fn encode_meta(m: &KeyMeta) -> Vec<u8> {
    let mut v = vec![RECORD_FORMAT, m.usages.0, u8::from(m.enabled)];
    v.extend_from_slice(&m.created_at_ms.to_be_bytes());
    v
}

pub(crate) fn decode_meta(name: &str, v: &[u8]) -> Result<KeyMeta> {
    let corrupt = || Error::Corrupt(name.to_owned());
    let v: &[u8; 11] = v.try_into().map_err(|_| corrupt())?;
    let usages = Usages(v[1]);
    if v[0] != RECORD_FORMAT || !usages.is_valid() || v[2] > 1 {
        return Err(corrupt());
    }
    let created_at_ms = u64::from_be_bytes(v[3..11].try_into().map_err(|_| corrupt())?);
    Ok(KeyMeta { usages, enabled: v[2] == 1, created_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_truncations_are_corrupt() {
        let r = VersionRecord { active: true, created_at_ms: 7, package: b"pkg", sealed: b"sealed" };
        let bytes = r.encode();
        let d = VersionRecord::decode("k/1", &bytes).unwrap();
        assert_eq!((d.active, d.created_at_ms, d.package, d.sealed), (true, 7, &b"pkg"[..], &b"sealed"[..]));
        for cut in 0..14 + 3 {
            assert!(matches!(VersionRecord::decode("k/1", &bytes[..cut]), Err(Error::Corrupt(_))), "cut {cut}");
        }
        let meta = KeyMeta { usages: Usages(Usages::WRAP | Usages::UNWRAP), enabled: false, created_at_ms: 9 };
        assert_eq!(decode_meta("k", &encode_meta(&meta)).unwrap(), meta);
        let mut bad = encode_meta(&meta);
        bad[1] = 0x10;
        assert!(decode_meta("k", &bad).is_err(), "unknown usage bit");
    }

    #[test]
    fn key_ids_are_bounded_and_restricted() {
        assert!(check_key_id("Key-1.v2_x").is_ok());
        assert!(check_key_id(&"x".repeat(MAX_KEY_ID)).is_ok());
        for bad in ["", "a/b", "a b", "a\0b", "é", &"x".repeat(MAX_KEY_ID + 1)] {
            assert!(check_key_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn usages_validity() {
        assert!(Usages::ALL.is_valid() && Usages(Usages::ENCRYPT).is_valid());
        assert!(!Usages(0).is_valid() && !Usages(0x10).is_valid());
        assert!(Usages::ALL.allows(Usages::UNWRAP) && !Usages(Usages::ENCRYPT).allows(Usages::DECRYPT));
    }
}
