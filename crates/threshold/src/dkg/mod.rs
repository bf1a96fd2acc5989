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
//! commitments `C_jk = a_jk·G`, a Schnorr proof of knowledge of `a_j0`, a fresh ephemeral
//! `E_j = e_j·G` with a Schnorr proof of knowledge of `e_j` bound to this run (session, `t`,
//! every participant's keys, dealer id), and each sub-share `f_j(i)` encrypted to recipient
//! `i`'s **DKG transport key** `T_i` (ECDH `e_j·T_i`, HKDF over the run transcript,
//! AES-256-GCM). The whole package is signed with `j`'s identity key, so the coordinator that
//! relays it can neither read a sub-share nor forge or alter a message. The participants' keys
//! come in [`KeyBundle`]s, verified under each participant's identity key before the run starts.
//!
//! Every recipient checks the ephemeral's proof **before anything else touches `E_j`**: a
//! replayed ephemeral (another run's, a sealed RSA share's) fails with
//! [`Error::InvalidEphemeralProof`] and is never multiplied by a secret. A recipient whose
//! sub-share fails the Feldman check files a complaint that reveals `tr_i·E_j` with a DLEQ
//! proof against `T_i`: anyone can then decrypt that one sub-share and see who lied. Because the
//! dealer proved it knows `e_j`, the complaint tells it nothing it could not compute itself
//! (`e_j·T_i`), and it tells everyone else only how to open this run's sub-share: the node is no
//! Diffie–Hellman oracle, and its identity and seal keys are never involved. Dealers with a
//! failed proof of knowledge of `a_j0` or a justified complaint, and nodes with an unjustified
//! complaint, are disqualified. Every node's share is `k_i = Σ_{j∈QUAL} f_j(i)`, the group key
//! `K = Σ_{j∈QUAL} C_j0`. At least `t` dealers must qualify, so at least one honest dealer's
//! randomness is in the key.
//!
//! The dealing, its checks, the complaints and their judging are `vss`'s, shared with
//! [`crate::reshare`]; this module adds what is the DKG's own (every participant deals a random
//! secret and keeps its own sub-share; the key is the sum over `QUAL`).

pub mod round1;
pub mod round2;

use crate::error::{Error, Result};
use crate::keys::{KeyShare, NodeId, PublicKeyPackage};
use crate::node_keys::KeyBundle;
use crate::transcript::Transcript;
use crate::vss::{Channel, Run};
use std::collections::BTreeMap;

pub use round1::part1;

/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;

/// What every participant of one DKG run agrees on before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    threshold: u16,
    participants: BTreeMap<NodeId, KeyBundle>,
    session: Vec<u8>,
}

impl Parameters {
    /// `threshold` of the given participants (each one's verified key bundle), for the run named
    /// by `session` (unique per run: e.g. key id, version and a random nonce).
    pub fn new(threshold: u16, participants: impl IntoIterator<Item = KeyBundle>, session: &[u8]) -> Result<Self> {
        let mut map = BTreeMap::new();
        for bundle in participants {
            if map.insert(bundle.node(), bundle).is_some() {
                return Err(Error::DuplicateNode { node: bundle.node() });
            }
        }
        let participants = map;
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
}

impl Channel for Parameters {
    const DOMAIN: &'static str = "hyok/v1/dkg";

    /// The session id, `t`, and every participant's identity and transport keys.
    fn bind(&self, t: &mut Transcript) {
        t.append(b"session", &self.session);
        t.append_u64(b"threshold", u64::from(self.threshold));
        for (id, keys) in &self.participants {
            t.append_u64(b"node", u64::from(id.get()));
            t.append_point(b"identity", &keys.identity().0.compressed);
            t.append_point(b"transport", &keys.transport().0.compressed);
        }
    }
    fn receiver_bundle(&self, node: NodeId) -> Result<&KeyBundle> {
        Run::bundle(self, node)
    }
    fn receiver_ids(&self) -> Vec<NodeId> {
        Run::receivers(self)
    }
}

impl Run for Parameters {
    type Dealing = round1::Package;
    type Complaints = round2::Package;

    fn bundle(&self, node: NodeId) -> Result<&KeyBundle> {
        self.participants.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }
    fn threshold(&self) -> u16 {
        self.threshold
    }
    fn is_dealer(&self, node: NodeId) -> bool {
        self.participants.contains_key(&node)
    }
    fn is_receiver(&self, node: NodeId) -> bool {
        self.participants.contains_key(&node)
    }
    fn dealers(&self) -> Vec<NodeId> {
        self.nodes().collect()
    }
    fn receivers(&self) -> Vec<NodeId> {
        self.nodes().collect()
    }
    /// Every other participant: a dealer keeps its own sub-share.
    fn encrypted_to(&self, dealer: NodeId) -> Vec<NodeId> {
        self.nodes().filter(|n| *n != dealer).collect()
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
