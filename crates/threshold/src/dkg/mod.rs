//! Distributed key generation: joint Feldman (Pedersen) DKG with proofs of knowledge, run as a
//! per-node state machine. No dealer: the key never exists in one place.
//!
//! ```text
//! part1(me, identity, params)        -> round1::SecretPackage (kept), round1::Package (broadcast)
//! round1::SecretPackage::receive(all round1 packages)
//!                                    -> round2::SecretPackage (kept), round2::Package (broadcast)
//! round2::SecretPackage::finish(all round2 packages)
//!                                    -> Output { KeyShare, PublicKeyPackage, disqualified }
//! ```
//!
//! Every node `j` deals a random polynomial `f_j` of degree `t − 1`, broadcasts Feldman
//! commitments `C_jk = a_jk·G`, a Schnorr proof of knowledge of `a_j0`, and each sub-share
//! `f_j(i)` encrypted to recipient `i` (ECDH between a fresh ephemeral `E_j = e_j·G` and `i`'s
//! identity key, HKDF, AES-256-GCM). The whole package is signed with `j`'s identity key, so the
//! coordinator that relays it can neither read a sub-share nor forge or alter a message.
//!
//! A recipient whose sub-share fails the Feldman check files a complaint that reveals the
//! ECDH value `id_i·E_j` with a DLEQ proof: anyone can then decrypt that one sub-share and see
//! who lied. Dealers with a failed proof of knowledge or a justified complaint, and nodes with an
//! unjustified complaint, are disqualified. Every node's share is `k_i = Σ_{j∈QUAL} f_j(i)`,
//! the group key `K = Σ_{j∈QUAL} C_j0`. At least `t` dealers must qualify, so at least one honest
//! dealer's randomness is in the key.

pub mod round1;
pub mod round2;

use crate::error::{Error, Result};
use crate::keys::{IdentityPublicKey, IdentitySecret, KeyShare, NodeId, PublicKeyPackage};
use crate::transcript::Transcript;
use std::collections::BTreeMap;

pub use round1::part1;

/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;

/// What every participant of one DKG run agrees on before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    threshold: u16,
    participants: BTreeMap<NodeId, IdentityPublicKey>,
    session: Vec<u8>,
}

impl Parameters {
    /// `threshold` of the given participants (node id → identity key), for the run named by
    /// `session` (unique per run: e.g. key id, version and a random nonce).
    pub fn new(threshold: u16, participants: BTreeMap<NodeId, IdentityPublicKey>, session: &[u8]) -> Result<Self> {
        if threshold == 0 || usize::from(threshold) > participants.len() {
            return Err(Error::InvalidParameters("threshold must satisfy 1 ≤ t ≤ n"));
        }
        if participants.len() > crate::encoding::MAX_NODES {
            return Err(Error::InvalidParameters("too many participants"));
        }
        if session.is_empty() || session.len() > MAX_SESSION_LEN {
            return Err(Error::InvalidParameters("session id must be 1..=256 bytes"));
        }
        Ok(Parameters { threshold, participants, session: session.to_vec() })
    }
    /// The threshold `t`.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }
    /// The participants' node ids, ascending.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.participants.keys().copied()
    }
    fn identity(&self, node: NodeId) -> Result<&IdentityPublicKey> {
        self.participants.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }
    /// A transcript bound to this run: the session id, `t`, and every participant's identity.
    fn transcript(&self, domain: &[u8]) -> Transcript {
        let mut t = Transcript::new(domain);
        t.append(b"session", &self.session);
        t.append_u64(b"threshold", u64::from(self.threshold));
        for (id, key) in &self.participants {
            t.append_u64(b"node", u64::from(id.get()));
            t.append_point(b"identity", &key.0.compressed);
        }
        t
    }
}

/// What a node keeps from a successful run.
#[derive(Debug)]
pub struct Output {
    /// This node's share `k_i`.
    pub share: KeyShare,
    /// The key's public package (identical on every honest node).
    pub package: PublicKeyPackage,
    /// Participants disqualified as dealers (bad proof, bad sub-share, false complaint).
    pub disqualified: Vec<NodeId>,
}

/// The state machine keeps its own zeroizing copy of the identity secret (which is not `Clone`).
fn copy_identity(identity: &IdentitySecret) -> IdentitySecret {
    IdentitySecret::from_scalar_unchecked(*identity.scalar())
}
