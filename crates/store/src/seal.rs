//! Sealing at rest: AES-256-GCM under the node's seal key, kept in its own file.
//!
//! A sealed blob is `0x01 ‖ nonce[12] ‖ ciphertext ‖ tag[16]`, with a fresh random nonce per
//! seal and the record's name as associated data, so a sealed share cannot be moved to another
//! key, version or record kind.

use crate::error::{Error, Result};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use rand::Rng;
use std::fmt;
use std::io::Write;
use std::path::Path;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

const FORMAT: u8 = 0x01;

/// The node's 32-byte seal key. Zeroized on drop, never printed, not `Clone`.
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
    /// Writes a fresh random key to `path` (mode 0600), refusing to overwrite a file.
    pub fn create(path: &Path) -> Result<Self> {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| file_error(path, e))?;
        file.write_all(&key).and_then(|()| file.sync_all()).map_err(|e| file_error(path, e))?;
        Ok(SealKey(key))
    }

    /// Reads the key at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| file_error(path, e))?);
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| Error::Corrupt(path.display().to_string()))?;
        Ok(SealKey(key))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&self.0.into())
    }

    /// Seals `plaintext` for the record named `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(1 + 12 + plaintext.len() + 16);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        match self.cipher().encrypt_inout_detached(&nonce.into(), aad, (&mut out[start..]).into()) {
            Ok(tag) => out.extend_from_slice(&tag),
            // Only inputs beyond 2^36 bytes fail; never store plaintext in that case.
            Err(_) => out.truncate(0),
        }
        out
    }

    /// Opens a blob sealed for the record named `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let name = || String::from_utf8_lossy(aad).into_owned();
        if sealed.len() < 1 + 12 + 16 || sealed[0] != FORMAT {
            return Err(Error::Unseal(name()));
        }
        let (nonce, rest) = sealed[1..].split_at(12);
        let (ciphertext, tag) = rest.split_at(rest.len() - 16);
        let mut nonce_arr = [0u8; 12];
        nonce_arr.copy_from_slice(nonce);
        let mut tag_arr = [0u8; 16];
        tag_arr.copy_from_slice(tag);
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.cipher()
            .decrypt_inout_detached(&nonce_arr.into(), aad, buffer.as_mut_slice().into(), &tag_arr.into())
            .map_err(|_| Error::Unseal(name()))?;
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::create(&dir.path().join("seal.key")).unwrap();
        let sealed = key.seal(b"share/k/1", b"secret share bytes");
        assert_eq!(&key.open(b"share/k/1", &sealed).unwrap()[..], b"secret share bytes");
        assert!(key.open(b"share/k/2", &sealed).is_err(), "moved to another record");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(key.open(b"share/k/1", &bad).is_err(), "flipped byte {i}");
        }
        let other = SealKey::create(&dir.path().join("other.key")).unwrap();
        assert!(other.open(b"share/k/1", &sealed).is_err());
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }

    #[test]
    fn seal_key_file_is_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let key = SealKey::create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(SealKey::create(&path).is_err());
        let loaded = SealKey::load(&path).unwrap();
        assert_eq!(&loaded.open(b"x", &key.seal(b"x", b"y")).unwrap()[..], b"y");
    }
}
