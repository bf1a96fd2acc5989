//! The bytes around an XKS ciphertext: `ciphertextMetadata` (format and key version), the AAD
//! actually fed to AES-GCM (which binds the metadata), and the ciphertext data integrity value.

use crate::error::XksError;
use sha2::{Digest, Sha256};

pub use hyok_evidence::xks::{IV_LEN, METADATA_LEN, metadata};
/// The AES-GCM tag.
pub const TAG_LEN: usize = 16;

/// The key version in a `ciphertextMetadata`; anything hyok did not write is
/// InvalidCiphertextException (the AAD binding would refuse it anyway). The nodes read it the
/// same way (`hyok_evidence::xks::metadata_version`).
pub fn parse_metadata(bytes: &[u8]) -> Result<u32, XksError> {
    match hyok_evidence::xks::metadata_version(bytes) {
        Some(version) => Ok(version),
        None if bytes.is_empty() => Err(XksError::InvalidCiphertext("ciphertextMetadata is missing".into())),
        None if bytes.len() == METADATA_LEN && bytes[0] == hyok_evidence::xks::METADATA_FORMAT => {
            Err(XksError::InvalidCiphertext("ciphertextMetadata names no key version".into()))
        }
        None => Err(XksError::InvalidCiphertext("ciphertextMetadata is not one hyok-xks wrote".into())),
    }
}

/// The AAD given to AES-GCM, as the spec constructs it:
/// `u16be(|aad|) ‖ aad ‖ u8(|metadata|) ‖ metadata`. Lengths make the split unambiguous, so
/// metadata moved into the AAD (or back) fails to authenticate.
pub fn cipher_aad(aad: &[u8], metadata: &[u8]) -> Result<Vec<u8>, XksError> {
    let aad_len = u16::try_from(aad.len())
        .map_err(|_| XksError::UnsupportedOperation("additionalAuthenticatedData is longer than 65535 bytes".into()))?;
    let md_len = u8::try_from(metadata.len())
        .map_err(|_| XksError::InvalidCiphertext("ciphertextMetadata is longer than 255 bytes".into()))?;
    let mut out = Vec::with_capacity(3 + aad.len() + metadata.len());
    out.extend_from_slice(&aad_len.to_be_bytes());
    out.extend_from_slice(aad);
    out.push(md_len);
    out.extend_from_slice(metadata);
    Ok(out)
}

/// The ciphertext data integrity value: `SHA-256(aad ‖ metadata ‖ iv ‖ ciphertext ‖ tag)` over
/// the raw bytes, no lengths (Appendix C of the spec).
pub fn cdiv(aad: &[u8], metadata: &[u8], iv: &[u8], ciphertext: &[u8], tag: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [aad, metadata, iv, ciphertext, tag] {
        hash.update(part);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn cdiv_matches_the_example_in_the_spec() {
        // Appendix C: 33 bytes of AAD, 13 of metadata, 12 of IV, 12 of ciphertext, 16 of tag.
        let aad = b"project=nile,department=marketing";
        let metadata = b"key_version=1";
        let iv = hex::decode("1ccae5470f39700254779031").unwrap();
        let ciphertext = hex::decode("821c642b5b71783367deaf18").unwrap();
        let tag = hex::decode("bc1c4dda7707d6812447c5955e99b261").unwrap();
        let value = cdiv(aad, metadata, &iv, &ciphertext, &tag);
        assert_eq!(hex::encode(value), "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7");
        assert_eq!(STANDARD.encode(value), "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
    }

    #[test]
    fn metadata_round_trips_and_rejects_foreign_bytes() {
        for version in [1, 2, 0xdead_beef] {
            assert_eq!(parse_metadata(&metadata(version)).unwrap(), version);
        }
        for bad in [&[][..], &[1, 0, 0, 0, 0], &[2, 0, 0, 0, 1], &[1, 0, 0, 1], &[1, 0, 0, 0, 1, 0]] {
            assert!(matches!(parse_metadata(bad), Err(XksError::InvalidCiphertext(_))), "{bad:?}");
        }
    }

    #[test]
    fn cipher_aad_is_length_prefixed_so_parts_cannot_slide() {
        assert_eq!(cipher_aad(b"", b"").unwrap(), vec![0, 0, 0]);
        assert_eq!(cipher_aad(b"ab", &[1, 0, 0, 0, 7]).unwrap(), vec![0, 2, b'a', b'b', 5, 1, 0, 0, 0, 7]);
        // Metadata passed as AAD instead of as metadata gives a different AAD.
        let md = metadata(1);
        assert_ne!(cipher_aad(b"", &md).unwrap(), cipher_aad(&md, b"").unwrap());
        assert!(cipher_aad(&vec![0; 65535], b"").is_ok());
        assert!(matches!(cipher_aad(&vec![0; 65536], b""), Err(XksError::UnsupportedOperation(_))));
    }
}
