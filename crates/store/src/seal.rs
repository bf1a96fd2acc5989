//! Sealing at rest: AES-256-GCM under the node's seal key, kept in its own file.
//!
//! A sealed blob is
//!
//! ```text
//! 0x01 ‖ nonce[12] ‖ AES-256-GCM(seal key, nonce, aad, plaintext) ‖ tag[16]
//! ```
//!
//! with a fresh random 96-bit nonce per seal and the record's identity (kind, key id, version)
//! as associated data, so a sealed share cannot be moved to another key, version or record kind.
//! Random nonces stay safe for far more seals than a node performs (2³² per key for a 2⁻³²
//! collision bound).

use crate::error::{Error, Result};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use rand::Rng;
use std::fmt;
use std::io::Write;
use std::path::Path;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const FORMAT: u8 = 0x01;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its plaintext: format byte, nonce and tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// The node's 32-byte AES-256-GCM seal key. Zeroized on drop, never printed, not `Clone`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

fn file_error(path: &Path, source: std::io::Error) -> Error {
    Error::File { path: path.display().to_string(), source }
}

impl SealKey {
    /// Writes a fresh random key to `path` with mode 0600 and syncs it (and, on Unix, its
    /// directory). Refuses to overwrite an existing file; leaves no partial file on failure.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let mut key = SealKey([0u8; 32]);
        rand::rng().fill_bytes(&mut key.0);
        key.write_new(path.as_ref())?;
        Ok(key)
    }

    /// Writes `bytes` (a key from [`SealKey::to_backup_bytes`]) to `path` the way
    /// [`SealKey::create`] writes a fresh one: a node restored from its backup.
    pub fn restore(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Self> {
        let path = path.as_ref();
        let mut key = SealKey([0u8; 32]);
        if bytes.len() != key.0.len() {
            return Err(Error::Corrupt(path.display().to_string()));
        }
        key.0.copy_from_slice(bytes);
        key.write_new(path)?;
        Ok(key)
    }

    /// The raw key, for a sealed backup of the node (the caller seals it under another key).
    pub fn to_backup_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_vec())
    }

    fn write_new(&self, path: &Path) -> Result<()> {
        let key = self;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| file_error(path, e))?;
        if let Err(e) = file.write_all(&key.0).and_then(|()| file.sync_all()) {
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(file_error(path, e));
        }
        #[cfg(unix)]
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| file_error(dir, e))?;
        }
        Ok(())
    }

    /// Reads the key at `path`: exactly 32 bytes, and on Unix not readable or writable by group
    /// or others ([`Error::InsecureKeyFile`] otherwise).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| file_error(path, e))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::InsecureKeyFile { path: path.display().to_string(), mode });
            }
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| file_error(path, e))?);
        let mut key = SealKey([0u8; 32]);
        if bytes.len() != key.0.len() {
            return Err(Error::Corrupt(path.display().to_string()));
        }
        key.0.copy_from_slice(&bytes);
        Ok(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// Seals `plaintext` for the record named `aad`: `0x01 ‖ nonce ‖ ciphertext ‖ tag`.
    ///
    /// Fails only for plaintexts beyond AES-GCM's limit (2³⁶ − 32 bytes).
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(OVERHEAD + plaintext.len());
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        match self.cipher().encrypt_inout_detached(&nonce.into(), aad, (&mut out[start..]).into()) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(out)
            }
            Err(_) => {
                // The buffer still holds plaintext.
                out.zeroize();
                Err(Error::Invalid("plaintext too large to seal"))
            }
        }
    }

    /// Opens a blob sealed for the record named `aad`; fails with [`Error::Unseal`] on a wrong
    /// key, wrong `aad`, unknown format or any altered byte.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let fail = || Error::Unseal(String::from_utf8_lossy(aad).into_owned());
        let Some((&FORMAT, rest)) = sealed.split_first() else { return Err(fail()) };
        let (nonce, rest) = rest.split_at_checked(NONCE_LEN).ok_or_else(fail)?;
        let split = rest.len().checked_sub(TAG_LEN).ok_or_else(fail)?;
        let (ciphertext, tag) = rest.split_at(split);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| fail())?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| fail())?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.cipher()
            .decrypt_inout_detached(&nonce.into(), aad, buffer.as_mut_slice().into(), &tag.into())
            .map_err(|_| fail())?;
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::create(dir.path().join("seal.key")).unwrap();
        let sealed = key.seal(b"share/k/1", b"secret share bytes").unwrap();
        assert_eq!(sealed.len(), OVERHEAD + 18);
        assert_eq!(sealed[0], FORMAT);
        assert_eq!(&key.open(b"share/k/1", &sealed).unwrap()[..], b"secret share bytes");
        // Fresh nonce per seal: the same input seals differently.
        assert_ne!(sealed, key.seal(b"share/k/1", b"secret share bytes").unwrap());
        assert_eq!(&key.open(b"", &key.seal(b"", b"").unwrap()).unwrap()[..], b"");
    }

    #[test]
    fn open_with_wrong_aad_flipped_bit_wrong_key_or_truncation_fails() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::create(dir.path().join("seal.key")).unwrap();
        let sealed = key.seal(b"share/k/1", b"secret share bytes").unwrap();
        assert!(matches!(key.open(b"share/k/2", &sealed), Err(Error::Unseal(_))), "moved to another record");
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(matches!(key.open(b"share/k/1", &bad), Err(Error::Unseal(_))), "flipped bit {i}");
        }
        for cut in 0..sealed.len() {
            assert!(key.open(b"share/k/1", &sealed[..cut]).is_err(), "truncated to {cut}");
        }
        let other = SealKey::create(dir.path().join("other.key")).unwrap();
        assert!(matches!(other.open(b"share/k/1", &sealed), Err(Error::Unseal(_))));
    }

    #[test]
    fn errors_and_debug_never_show_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::create(dir.path().join("seal.key")).unwrap();
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
        let sealed = key.seal(b"aad", b"TOPSECRET").unwrap();
        let err = key.open(b"other", &sealed).unwrap_err();
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"));
    }

    #[cfg(unix)]
    #[test]
    fn seal_key_file_is_0600_never_overwritten_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let key = SealKey::create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(SealKey::create(&path), Err(Error::File { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), before, "the existing key is untouched");
        let loaded = SealKey::load(&path).unwrap();
        assert_eq!(&loaded.open(b"x", &key.seal(b"x", b"y").unwrap()).unwrap()[..], b"y");
    }

    #[cfg(unix)]
    #[test]
    fn loading_a_group_readable_or_malformed_key_file_fails() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        SealKey::create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(SealKey::load(&path), Err(Error::InsecureKeyFile { mode: 0o640, .. })));
        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 31]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(SealKey::load(&short), Err(Error::Corrupt(_))));
        assert!(matches!(SealKey::load(dir.path().join("missing.key")), Err(Error::File { .. })));
    }
}
