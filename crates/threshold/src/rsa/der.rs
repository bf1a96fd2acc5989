//! A minimal reader for RSA private keys: PEM armour, base64, and just enough DER for
//! PKCS#1 `RSAPrivateKey` (RFC 8017 A.1.2) and PKCS#8 `PrivateKeyInfo` (RFC 5208 / 5958) with
//! `rsaEncryption`. Strict DER: definite, minimal lengths; minimal, non-negative integers;
//! no trailing bytes. Every failure is one [`Error::Malformed`]; nothing here panics.
//!
//! Every buffer that holds key bytes is zeroized when dropped.

use crate::error::{Error, Result};
use zeroize::Zeroizing;

const WHAT: &str = "RSA private key";

fn malformed() -> Error {
    Error::Malformed { what: WHAT }
}

/// The integers of a two-prime `RSAPrivateKey`, as big-endian magnitudes borrowed from the DER.
pub(crate) struct Pkcs1<'a> {
    pub(crate) n: &'a [u8],
    pub(crate) e: &'a [u8],
    pub(crate) d: &'a [u8],
    pub(crate) p: &'a [u8],
    pub(crate) q: &'a [u8],
    pub(crate) dp: &'a [u8],
    pub(crate) dq: &'a [u8],
    pub(crate) qinv: &'a [u8],
}

/// Which container a PEM block holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PemKind {
    /// `-----BEGIN RSA PRIVATE KEY-----`: PKCS#1.
    Pkcs1,
    /// `-----BEGIN PRIVATE KEY-----`: PKCS#8.
    Pkcs8,
}

/// The first PEM block of `pem` that is an RSA private key, base64-decoded.
pub(crate) fn pem_decode(pem: &str) -> Result<(PemKind, Zeroizing<Vec<u8>>)> {
    let mut lines = pem.lines().map(str::trim);
    let kind = loop {
        let line = lines.next().ok_or_else(malformed)?;
        match line {
            "-----BEGIN RSA PRIVATE KEY-----" => break PemKind::Pkcs1,
            "-----BEGIN PRIVATE KEY-----" => break PemKind::Pkcs8,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----" => {
                return Err(Error::InvalidParameters("encrypted private keys are not supported"));
            }
            _ => {}
        }
    };
    let end = match kind {
        PemKind::Pkcs1 => "-----END RSA PRIVATE KEY-----",
        PemKind::Pkcs8 => "-----END PRIVATE KEY-----",
    };
    let mut text = Zeroizing::new(Vec::with_capacity(pem.len()));
    loop {
        let line = lines.next().ok_or_else(malformed)?;
        if line == end {
            break;
        }
        if line.contains(':') {
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: …`): an encrypted key.
            return Err(Error::InvalidParameters("encrypted private keys are not supported"));
        }
        text.extend_from_slice(line.as_bytes());
    }
    Ok((kind, base64_decode(&text)?))
}

/// The 6-bit value of a base64 character, or `0xff`; branch-free in the character.
fn base64_value(c: u8) -> u8 {
    let c = i16::from(c);
    // Each term is (value + 1) when `c` is in its range and 0 otherwise.
    let in_range = |lo: i16, hi: i16| -> i16 { (((lo - 1 - c) & (c - hi - 1)) >> 8) & 1 };
    let v = in_range(65, 90) * (c - 65 + 1)
        + in_range(97, 122) * (c - 97 + 26 + 1)
        + in_range(48, 57) * (c - 48 + 52 + 1)
        + in_range(43, 43) * (62 + 1)
        + in_range(47, 47) * (63 + 1);
    (v - 1) as u8
}

/// Standard base64 with `=` padding (RFC 4648 §4), no whitespace.
fn base64_decode(text: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return Err(malformed());
    }
    let pad = text.iter().rev().take_while(|c| **c == b'=').count();
    if pad > 2 {
        return Err(malformed());
    }
    let body = &text[..text.len() - pad];
    let mut out = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3));
    let mut acc: u32 = 0;
    let mut nbits = 0u32;
    let mut bad = 0u8;
    for &c in body {
        let v = base64_value(c);
        bad |= (v >> 7) & 1;
        acc = (acc << 6) | u32::from(v & 0x3f);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
    }
    // Leftover bits must be zero (canonical encoding).
    if bad != 0 || acc & ((1 << nbits) - 1) != 0 {
        return Err(malformed());
    }
    Ok(out)
}

/// A DER cursor.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// One TLV with tag `tag`; returns its contents.
    fn tlv(&mut self, tag: u8) -> Result<&'a [u8]> {
        let (&t, rest) = self.0.split_first().ok_or_else(malformed)?;
        if t != tag {
            return Err(malformed());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(malformed)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 3 || rest.len() < count || rest[0] == 0 {
                return Err(malformed());
            }
            let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return Err(malformed());
            }
            rest = &rest[count..];
            len
        };
        if rest.len() < len {
            return Err(malformed());
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Ok(contents)
    }

    /// The next tag byte, if any.
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// A non-negative, minimally encoded INTEGER; returns its magnitude without the sign byte.
    fn uint(&mut self) -> Result<&'a [u8]> {
        let bytes = self.tlv(0x02)?;
        match bytes {
            [] => Err(malformed()),
            [b, ..] if b & 0x80 != 0 => Err(malformed()),
            [0, b, ..] if b & 0x80 == 0 => Err(malformed()),
            [0, rest @ ..] if !rest.is_empty() => Ok(rest),
            _ => Ok(bytes),
        }
    }

    /// A small INTEGER (a version number).
    fn small(&mut self) -> Result<u8> {
        match self.uint()? {
            [] => Ok(0),
            [v] => Ok(*v),
            _ => Err(malformed()),
        }
    }

    fn finish(&self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(malformed()) }
    }
}

/// `RSAPrivateKey ::= SEQUENCE { version 0, n, e, d, p, q, dP, dQ, qInv }` (two primes only).
pub(crate) fn parse_pkcs1(der: &[u8]) -> Result<Pkcs1<'_>> {
    let mut outer = Der(der);
    let mut seq = Der(outer.tlv(0x30)?);
    outer.finish()?;
    if seq.small()? != 0 {
        return Err(Error::InvalidParameters("multi-prime RSA keys are not supported"));
    }
    let key = Pkcs1 {
        n: seq.uint()?,
        e: seq.uint()?,
        d: seq.uint()?,
        p: seq.uint()?,
        q: seq.uint()?,
        dp: seq.uint()?,
        dq: seq.uint()?,
        qinv: seq.uint()?,
    };
    seq.finish()?;
    Ok(key)
}

/// DER of the `rsaEncryption` OID, 1.2.840.113549.1.1.1.
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// `PrivateKeyInfo ::= SEQUENCE { version 0|1, AlgorithmIdentifier { rsaEncryption, NULL },
/// privateKey OCTET STRING (RSAPrivateKey), [0] attributes OPTIONAL, [1] publicKey OPTIONAL }`.
pub(crate) fn parse_pkcs8(der: &[u8]) -> Result<Pkcs1<'_>> {
    let mut outer = Der(der);
    let mut seq = Der(outer.tlv(0x30)?);
    outer.finish()?;
    if seq.small()? > 1 {
        return Err(malformed());
    }
    let mut algorithm = Der(seq.tlv(0x30)?);
    if algorithm.tlv(0x06)? != RSA_ENCRYPTION {
        return Err(Error::InvalidParameters("only rsaEncryption private keys are supported"));
    }
    if algorithm.peek().is_some() && !algorithm.tlv(0x05)?.is_empty() {
        return Err(malformed());
    }
    algorithm.finish()?;
    let inner = seq.tlv(0x04)?;
    if seq.peek() == Some(0xa0) {
        seq.tlv(0xa0)?;
    }
    if seq.peek() == Some(0x81) {
        seq.tlv(0x81)?;
    }
    seq.finish()?;
    parse_pkcs1(inner)
}

/// The base64 character of a 6-bit value; branch-free in the value.
fn base64_char(v: u8) -> u8 {
    let v = i16::from(v);
    // Each term is the offset to add when `v` is in its range, 0 otherwise.
    let lt = |x: i16| -> i16 { ((v - x) >> 8) & 1 };
    let c = 65 + v + (1 - lt(26)) * 6 - (1 - lt(52)) * 75 - (1 - lt(62)) * 15 + (1 - lt(63)) * 3;
    c as u8
}

/// Standard base64 with padding, in lines of 64 characters (PEM).
fn base64_lines(data: &[u8]) -> Zeroizing<String> {
    let mut out = Zeroizing::new(Vec::with_capacity(data.len() / 3 * 4 + data.len() / 48 + 8));
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let group = [b[0] >> 2, ((b[0] & 3) << 4) | (b[1] >> 4), ((b[1] & 15) << 2) | (b[2] >> 6), b[2] & 63];
        for (i, v) in group.into_iter().enumerate() {
            out.push(if i <= chunk.len() { base64_char(v) } else { b'=' });
        }
    }
    let mut text = Zeroizing::new(String::with_capacity(out.len() + out.len() / 64 + 1));
    for line in out.chunks(64) {
        text.extend(line.iter().map(|c| char::from(*c)));
        text.push('\n');
    }
    text
}

/// PKCS#8 DER in PEM armour.
pub(crate) fn pem_encode_pkcs8(der: &[u8]) -> Zeroizing<String> {
    let mut pem = Zeroizing::new(String::from("-----BEGIN PRIVATE KEY-----\n"));
    pem.push_str(&base64_lines(der));
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// Appends a DER TLV.
fn write_tlv(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

/// Appends a non-negative INTEGER from a big-endian magnitude (leading zeros stripped, a zero
/// byte added when the top bit is set).
fn write_uint(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude.iter().position(|b| *b != 0).unwrap_or(magnitude.len());
    let trimmed = &magnitude[start..];
    let mut contents = Zeroizing::new(Vec::with_capacity(trimmed.len() + 1));
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend_from_slice(trimmed);
    write_tlv(out, 0x02, &contents);
}

/// The contents of the `rsaEncryption` AlgorithmIdentifier: `OID 1.2.840.113549.1.1.1, NULL`.
fn rsa_algorithm() -> Vec<u8> {
    let mut algorithm = Vec::with_capacity(16);
    write_tlv(&mut algorithm, 0x06, RSA_ENCRYPTION);
    write_tlv(&mut algorithm, 0x05, &[]);
    algorithm
}

/// The PKCS#8 `PrivateKeyInfo` (version 0, `rsaEncryption`, NULL parameters) around the PKCS#1
/// `RSAPrivateKey` (version 0) of `key`: what [`parse_pkcs8`] reads.
pub(crate) fn write_pkcs8(key: &Pkcs1<'_>) -> Zeroizing<Vec<u8>> {
    let mut ints = Zeroizing::new(Vec::with_capacity(8 * 256 + 16));
    write_uint(&mut ints, &[0]);
    for value in [key.n, key.e, key.d, key.p, key.q, key.dp, key.dq, key.qinv] {
        write_uint(&mut ints, value);
    }
    let mut pkcs1 = Zeroizing::new(Vec::with_capacity(ints.len() + 8));
    write_tlv(&mut pkcs1, 0x30, &ints);
    let mut body = Zeroizing::new(Vec::with_capacity(pkcs1.len() + 32));
    write_uint(&mut body, &[0]);
    write_tlv(&mut body, 0x30, &rsa_algorithm());
    write_tlv(&mut body, 0x04, &pkcs1);
    let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 8));
    write_tlv(&mut out, 0x30, &body);
    out
}

/// The DER `SubjectPublicKeyInfo` (RFC 5280 §4.1, RFC 8017 A.1.1) of the RSA key `(n, e)`:
/// `SEQUENCE { rsaEncryption, BIT STRING { SEQUENCE { INTEGER n, INTEGER e } } }` — the bytes
/// `openssl rsa -pubout -outform DER` writes.
pub(crate) fn spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 8);
    write_uint(&mut ints, n);
    write_uint(&mut ints, e);
    let mut bits = vec![0]; // no unused bits
    write_tlv(&mut bits, 0x30, &ints);
    let mut body = Vec::with_capacity(bits.len() + 24);
    write_tlv(&mut body, 0x30, &rsa_algorithm());
    write_tlv(&mut body, 0x03, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    write_tlv(&mut out, 0x30, &body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers_are_minimal_der() {
        for (len, header) in
            [(0x7f, vec![0x30, 0x7f]), (0x80, vec![0x30, 0x81, 0x80]), (0x10e, vec![0x30, 0x82, 0x01, 0x0e])]
        {
            let mut out = Vec::new();
            write_tlv(&mut out, 0x30, &vec![0; len]);
            assert_eq!(out[..header.len()], header[..], "{len}");
            assert_eq!(out.len(), header.len() + len);
        }
        let mut out = Vec::new();
        write_uint(&mut out, &[0x00, 0x00, 0x7f]);
        write_uint(&mut out, &[0x80]);
        write_uint(&mut out, &[0x01, 0x00, 0x01]);
        assert_eq!(out, [0x02, 0x01, 0x7f, 0x02, 0x02, 0x00, 0x80, 0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    #[test]
    fn base64_round_trips_known_vectors() {
        for (text, raw) in
            [("Zm9vYmFy", "foobar"), ("Zm9vYg==", "foob"), ("Zm9vYmE=", "fooba"), ("+/8=", "\u{fb}\u{ff}")]
        {
            let raw: Vec<u8> = raw.chars().map(|c| c as u32 as u8).collect();
            assert_eq!(*base64_decode(text.as_bytes()).unwrap(), raw, "{text}");
        }
        for bad in ["", "Zm9", "Zm9v!A==", "Zm9vYh==", "Z===", "Zm=v"] {
            assert!(base64_decode(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_encoding_round_trips_every_length() {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (v, c) in alphabet.iter().enumerate() {
            assert_eq!(base64_char(v as u8), *c, "{v}");
        }
        for len in 0..100usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text: String = base64_lines(&data).lines().collect();
            if len > 0 {
                assert_eq!(*base64_decode(text.as_bytes()).unwrap(), data, "{len}");
            }
        }
        assert_eq!(&*base64_lines(b"foob"), "Zm9vYg==\n");
    }

    #[test]
    fn der_integers_are_written_minimally() {
        let mut out = Vec::new();
        write_uint(&mut out, &[0, 0, 0x85]);
        write_uint(&mut out, &[0, 5]);
        write_uint(&mut out, &[]);
        assert_eq!(out, [0x02, 0x02, 0x00, 0x85, 0x02, 0x01, 0x05, 0x02, 0x01, 0x00]);
        let mut long = Vec::new();
        write_tlv(&mut long, 0x04, &[7; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(Der(&long).tlv(0x04).unwrap(), &[7; 300][..]);
    }

    #[test]
    fn der_rejects_non_minimal_lengths_and_integers() {
        assert!(Der(&[0x02, 0x81, 0x01, 0x05]).uint().is_err());
        assert!(Der(&[0x02, 0x02, 0x00, 0x05]).uint().is_err());
        assert!(Der(&[0x02, 0x01, 0x85]).uint().is_err());
        assert_eq!(Der(&[0x02, 0x02, 0x00, 0x85]).uint().unwrap(), &[0x85]);
        assert!(Der(&[0x02, 0x05, 0x01]).uint().is_err());
        assert!(Der(&[0x02, 0x80]).uint().is_err());
    }
}
