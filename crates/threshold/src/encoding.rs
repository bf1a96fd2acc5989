//! Versioned, canonical byte encodings for every type that crosses the wire.
//!
//! Every encoded object starts with two bytes: the wire-format version ([`WIRE_VERSION`]) and a
//! tag naming the object's type, so an object can never be mistaken for another. Integers are
//! big-endian; variable-length fields carry a `u32be` length; points are 32-byte compressed
//! Ristretto encodings and scalars 32-byte little-endian, both rejected when non-canonical.

use crate::error::{Error, Result};
use crate::keys::NodeId;
use curve25519_dalek::{RistrettoPoint, Scalar, ristretto::CompressedRistretto};

/// The version byte that starts every encoding this build writes.
pub const WIRE_VERSION: u8 = 1;

/// A type with a versioned byte encoding.
pub trait Wire: Sized {
    /// Names the type in errors.
    const NAME: &'static str;
    /// The type tag, the second byte of every encoding.
    const TAG: u8;

    #[doc(hidden)]
    fn encode_body(&self, w: &mut Writer);
    #[doc(hidden)]
    fn decode_body(r: &mut Reader<'_>) -> Result<Self>;

    /// `version || tag || body`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128));
        w.u8(WIRE_VERSION);
        w.u8(Self::TAG);
        self.encode_body(&mut w);
        w.0
    }

    /// Decodes `version || tag || body`, rejecting any other version, tag or trailing bytes.
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        decode(bytes, Self::NAME, Self::TAG, Self::decode_body)
    }
}

/// Decodes `version || tag || body` with `body`, rejecting any other version, tag or trailing
/// bytes.
pub(crate) fn decode<T>(
    bytes: &[u8],
    what: &'static str,
    tag: u8,
    body: impl FnOnce(&mut Reader<'_>) -> Result<T>,
) -> Result<T> {
    let mut r = Reader { buf: bytes, what };
    let version = r.u8()?;
    if version != WIRE_VERSION {
        return Err(Error::UnsupportedVersion { what, version });
    }
    if r.u8()? != tag {
        return Err(r.malformed());
    }
    let value = body(&mut r)?;
    r.finish()?;
    Ok(value)
}

/// A canonical compressed point from exactly 32 bytes.
#[cfg(feature = "dangerous-testing")]
pub(crate) fn decode_point(bytes: &[u8; 32], what: &'static str) -> Result<(RistrettoPoint, CompressedRistretto)> {
    Reader { buf: bytes, what }.point()
}

/// Appends fields to a buffer.
#[derive(Debug)]
pub struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.fixed(&v.to_be_bytes());
    }
    pub(crate) fn node(&mut self, v: NodeId) {
        self.u16(v.get());
    }
    pub(crate) fn fixed(&mut self, v: &[u8]) {
        self.0.extend_from_slice(v);
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
    pub(crate) fn point(&mut self, v: &CompressedRistretto) {
        self.0.extend_from_slice(v.as_bytes());
    }
    pub(crate) fn scalar(&mut self, v: &Scalar) {
        self.0.extend_from_slice(v.as_bytes());
    }
}

/// Reads fields from a buffer; every failure is [`Error::Malformed`] naming the object.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn malformed(&self) -> Error {
        Error::Malformed { what: self.what }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn node(&mut self) -> Result<NodeId> {
        NodeId::new(self.u16()?).map_err(|_| self.malformed())
    }
    /// A `u32be`-length-prefixed field of at most `max` bytes.
    pub(crate) fn bytes(&mut self, max: usize) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(self.malformed());
        }
        self.take(len)
    }
    /// A count of items, bounded so that a hostile length cannot make us allocate.
    pub(crate) fn count(&mut self, max: usize) -> Result<usize> {
        let n = self.u16()? as usize;
        if n > max { Err(self.malformed()) } else { Ok(n) }
    }
    /// A canonical compressed point that decompresses; returns both forms.
    pub(crate) fn point(&mut self) -> Result<(RistrettoPoint, CompressedRistretto)> {
        let c = CompressedRistretto(self.array()?);
        let p = c.decompress().ok_or_else(|| self.malformed())?;
        Ok((p, c))
    }
    /// 32 bytes meant as a compressed point, not yet decompressed (whoever uses it does, and
    /// treats a failure as the object's own: a proof with such a commitment is false).
    pub(crate) fn compressed_point(&mut self) -> Result<CompressedRistretto> {
        Ok(CompressedRistretto(self.array()?))
    }
    /// A canonical scalar (< ℓ).
    pub(crate) fn scalar(&mut self) -> Result<Scalar> {
        Option::from(Scalar::from_canonical_bytes(self.array()?)).ok_or_else(|| self.malformed())
    }
    /// Whether every byte has been read (for an optional trailing field).
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    fn finish(&self) -> Result<()> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.malformed()) }
    }
}

/// Upper bound on the number of nodes any object may name (the node ids are `u16`, but no
/// sane cluster is larger than this, and it bounds allocations while decoding).
pub(crate) const MAX_NODES: usize = 1024;
