//! A node's signed audit chain head: `(node, seq, hash)` signed with the node's audit key, so
//! that whoever reads the log through the coordinator or any relay can tell the node's own
//! chain from one rewritten on the way, and from another node's.
//!
//! The signature is a Schnorr signature over `H("hyok/v1/audit-head", node, seq, hash)` under
//! the audit key `A_i` certified in the node's key bundle.

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{AuditPublicKey, AuditSecret, NodeId};
use crate::schnorr;
use crate::transcript::Transcript;
use rand_core::CryptoRng;

/// The signature of one audit chain head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadSignature(schnorr::Proof);

fn context(node: NodeId, seq: u64, hash: &[u8; 32]) -> Transcript {
    let mut t = Transcript::new(b"hyok/v1/audit-head");
    t.append_u64(b"node", u64::from(node.get()));
    t.append_u64(b"seq", seq);
    t.append(b"hash", hash);
    t
}

/// Node side: signs its chain head (`seq` entries, the last one hashing to `hash`).
pub fn sign_head<R: CryptoRng + ?Sized>(
    secret: &AuditSecret,
    node: NodeId,
    seq: u64,
    hash: &[u8; 32],
    rng: &mut R,
) -> HeadSignature {
    HeadSignature(schnorr::Proof::prove(secret.scalar(), &secret.public_key().0, &context(node, seq, hash), rng))
}

/// Checks that `node`'s audit key signed the head `(seq, hash)`.
///
/// # Errors
/// [`Error::InvalidAuditHead`] naming `node`.
pub fn vartime_verify_head(
    public: &AuditPublicKey,
    node: NodeId,
    seq: u64,
    hash: &[u8; 32],
    signature: &HeadSignature,
) -> Result<()> {
    if signature.0.vartime_verify(&public.0, &context(node, seq, hash)) {
        Ok(())
    } else {
        Err(Error::InvalidAuditHead { node })
    }
}

/// `version ‖ 0x07 ‖ signature (64)`.
impl Wire for HeadSignature {
    const NAME: &'static str = "audit head signature";
    const TAG: u8 = 0x07;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(HeadSignature(schnorr::Proof::read(r)?))
    }
}
