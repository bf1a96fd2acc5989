//! A DER writer for just one structure: an RSA public key's `SubjectPublicKeyInfo`, whose
//! SHA-256 is the key's fingerprint ([`super::fingerprint`]).

/// DER `rsaEncryption` AlgorithmIdentifier: `SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }`.
const RSA_ENCRYPTION_ALGORITHM: [u8; 15] =
    [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];

/// Appends a DER tag and definite length (short form below 128, long form otherwise).
fn write_header(out: &mut Vec<u8>, tag: u8, len: usize) {
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// A DER INTEGER for a non-negative big-endian magnitude: leading zeros stripped, one zero byte
/// prepended when the top bit is set (so it does not read as negative).
fn write_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude.iter().take_while(|b| **b == 0).count();
    let m = &magnitude[start..];
    let pad = m.first().is_none_or(|b| b & 0x80 != 0);
    write_header(out, 0x02, m.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(m);
}

/// The DER `SubjectPublicKeyInfo` (RFC 5280 §4.1, RFC 8017 A.1.1) of the RSA key `(n, e)`:
/// `SEQUENCE { rsaEncryption, BIT STRING { SEQUENCE { INTEGER n, INTEGER e } } }` — the bytes
/// `openssl rsa -pubout -outform DER` writes.
pub(crate) fn spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 8);
    write_uint(&mut ints, n);
    write_uint(&mut ints, e);
    let mut rsa_public_key = Vec::with_capacity(ints.len() + 4);
    write_header(&mut rsa_public_key, 0x30, ints.len());
    rsa_public_key.extend_from_slice(&ints);
    let mut body = Vec::with_capacity(rsa_public_key.len() + 24);
    body.extend_from_slice(&RSA_ENCRYPTION_ALGORITHM);
    write_header(&mut body, 0x03, rsa_public_key.len() + 1);
    body.push(0); // no unused bits
    body.extend_from_slice(&rsa_public_key);
    let mut out = Vec::with_capacity(body.len() + 4);
    write_header(&mut out, 0x30, body.len());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers_are_minimal_der() {
        let mut out = Vec::new();
        write_header(&mut out, 0x30, 0x7f);
        write_header(&mut out, 0x30, 0x80);
        write_header(&mut out, 0x30, 0x10e);
        assert_eq!(out, [0x30, 0x7f, 0x30, 0x81, 0x80, 0x30, 0x82, 0x01, 0x0e]);
        let mut out = Vec::new();
        write_uint(&mut out, &[0x00, 0x00, 0x7f]);
        write_uint(&mut out, &[0x80]);
        write_uint(&mut out, &[0x01, 0x00, 0x01]);
        assert_eq!(out, [0x02, 0x01, 0x7f, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01]);
    }
}
