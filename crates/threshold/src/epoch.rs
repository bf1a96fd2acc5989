//! A membership change, as pure data: a [`Proposal`] to move the cluster from one manifest (the
//! epoch in force) to the next (one epoch later: other nodes, another `t`, other coordinator
//! keys), and each node operator's [`Acceptance`] of it, signed with that node's identity key.
//!
//! The change is executed only with the acceptance of every node of the new manifest, and each
//! node checks every acceptance itself against the identity keys the proposal pins, so neither
//! the coordinator nor any one operator can move a node into a membership its operator refused.
//! (A node that leaves cannot hold the others hostage: its acceptance is asked, not required.)

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{IdentityPublicKey, IdentitySecret, NodeId};
use crate::manifest::Manifest;
use crate::schnorr;
use crate::transcript::Transcript;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// Longest encoded manifest a proposal may carry.
const MAX_MANIFEST: usize = 1 << 20;

/// A proposed membership change: the manifest in force and the one that replaces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    from: Manifest,
    to: Manifest,
}

impl Proposal {
    /// A checked proposal.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] unless `to` is exactly one epoch after `from`, or when it
    /// changes nothing.
    pub fn new(from: Manifest, to: Manifest) -> Result<Self> {
        if from.epoch().checked_add(1) != Some(to.epoch()) {
            return Err(Error::InvalidParameters("a membership change's manifest is one epoch after the one in force"));
        }
        if from.clone().with_epoch(to.epoch()) == to {
            return Err(Error::InvalidParameters("the proposed manifest changes nothing"));
        }
        Ok(Proposal { from, to })
    }

    /// The manifest in force.
    pub fn from(&self) -> &Manifest {
        &self.from
    }

    /// The manifest that replaces it.
    pub fn to(&self) -> &Manifest {
        &self.to
    }

    /// The epoch the change makes.
    pub fn epoch(&self) -> u64 {
        self.to.epoch()
    }

    /// The nodes whose acceptance the change needs: every node of the new manifest.
    pub fn required(&self) -> BTreeSet<NodeId> {
        self.to.nodes().keys().copied().collect()
    }

    /// Every node the change touches: the old manifest's and the new one's.
    pub fn affected(&self) -> BTreeSet<NodeId> {
        self.from.nodes().keys().chain(self.to.nodes().keys()).copied().collect()
    }

    /// The nodes that leave.
    pub fn leaving(&self) -> BTreeSet<NodeId> {
        self.from.nodes().keys().filter(|id| self.to.identity(**id).is_none()).copied().collect()
    }

    /// The identity key a node of the change has: the new manifest's, else the old one's.
    pub fn identity(&self, id: NodeId) -> Option<&IdentityPublicKey> {
        self.to.identity(id).or_else(|| self.from.identity(id))
    }

    /// `SHA-256("hyok/v1/epoch-proposal" ‖ encoding)`: names the change in audit logs, in
    /// acceptances and to operators comparing copies.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"hyok/v1/epoch-proposal");
        h.update(self.to_bytes());
        h.finalize().into()
    }
}

/// `version ‖ 0x0E ‖ bytes(from) ‖ bytes(to)`, each a length-prefixed manifest encoding.
impl Wire for Proposal {
    const NAME: &'static str = "membership change proposal";
    const TAG: u8 = 0x0E;

    fn encode_body(&self, w: &mut Writer) {
        w.bytes(&self.from.to_bytes());
        w.bytes(&self.to.to_bytes());
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let malformed = Error::Malformed { what: Self::NAME };
        let from = Manifest::from_bytes(r.bytes(MAX_MANIFEST)?).map_err(|_| malformed.clone())?;
        let to = Manifest::from_bytes(r.bytes(MAX_MANIFEST)?).map_err(|_| malformed.clone())?;
        Proposal::new(from, to).map_err(|_| malformed)
    }
}

/// One node operator's acceptance of a proposal: a Schnorr signature by the node's identity key
/// over `H("hyok/v1/epoch-accept", node, digest)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acceptance(schnorr::Proof);

fn context(node: NodeId, digest: &[u8; 32]) -> Transcript {
    let mut t = Transcript::new(b"hyok/v1/epoch-accept");
    t.append_u64(b"node", u64::from(node.get()));
    t.append(b"proposal", digest);
    t
}

/// Node side, on its operator's word: signs its acceptance of `proposal`.
pub fn accept<R: CryptoRng + ?Sized>(
    secret: &IdentitySecret,
    node: NodeId,
    proposal: &Proposal,
    rng: &mut R,
) -> Acceptance {
    let public = secret.public_key();
    Acceptance(schnorr::Proof::prove(secret.scalar(), &public.0, &context(node, &proposal.digest()), rng))
}

/// Checks that node `node`, with the identity key `proposal` gives it, accepted `proposal`.
///
/// # Errors
/// [`Error::UnknownNode`] for a node the change does not touch; [`Error::InvalidSignature`]
/// naming `node` for a signature that does not verify.
pub fn vartime_verify_acceptance(proposal: &Proposal, node: NodeId, acceptance: &Acceptance) -> Result<()> {
    let public = proposal.identity(node).ok_or(Error::UnknownNode { node: node.get() })?;
    if acceptance.0.vartime_verify(&public.0, &context(node, &proposal.digest())) {
        Ok(())
    } else {
        Err(Error::InvalidSignature { node })
    }
}

/// `version ‖ 0x0F ‖ signature (64)`.
impl Wire for Acceptance {
    const NAME: &'static str = "membership change acceptance";
    const TAG: u8 = 0x0F;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Acceptance(schnorr::Proof::read(r)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: u16) -> Vec<(NodeId, IdentitySecret)> {
        let mut rng = rand::rng();
        (1..=n).map(|i| (NodeId::new(i).unwrap(), IdentitySecret::generate(&mut rng))).collect()
    }

    fn manifest(t: u16, nodes: &[(NodeId, IdentitySecret)]) -> Manifest {
        Manifest::new(t, nodes.iter().map(|(id, s)| (*id, s.public_key())), [[1u8; 32]]).unwrap()
    }

    #[test]
    fn a_proposal_is_one_epoch_on_changes_something_and_round_trips() {
        let nodes = cluster(7);
        let from = manifest(3, &nodes[..5]);
        let to = manifest(4, &nodes).with_epoch(1);
        let p = Proposal::new(from.clone(), to.clone()).unwrap();
        assert_eq!(p.epoch(), 1);
        assert_eq!(p.required().len(), 7);
        assert!(p.leaving().is_empty());
        assert_eq!(Proposal::from_bytes(&p.to_bytes()).unwrap(), p);
        assert!(Proposal::new(from.clone(), to.clone().with_epoch(2)).is_err(), "skips an epoch");
        assert!(Proposal::new(from.clone(), from.clone().with_epoch(1)).is_err(), "changes nothing");
        let back = Proposal::new(to.clone(), manifest(3, &nodes[..5]).with_epoch(2)).unwrap();
        assert_eq!(back.leaving().into_iter().map(NodeId::get).collect::<Vec<_>>(), vec![6, 7]);
        assert_eq!(back.affected().len(), 7);
        let bytes = p.to_bytes();
        for cut in 0..bytes.len() {
            assert!(Proposal::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn an_acceptance_verifies_only_for_its_node_its_key_and_its_proposal() {
        let nodes = cluster(6);
        let from = manifest(3, &nodes[..5]);
        let p = Proposal::new(from.clone(), manifest(4, &nodes).with_epoch(1)).unwrap();
        let other = Proposal::new(from, manifest(3, &nodes).with_epoch(1)).unwrap();
        let mut rng = rand::rng();
        let (six, six_secret) = &nodes[5];
        let a = accept(six_secret, *six, &p, &mut rng);
        vartime_verify_acceptance(&p, *six, &a).unwrap();
        assert_eq!(Acceptance::from_bytes(&a.to_bytes()).unwrap(), a);
        assert_eq!(vartime_verify_acceptance(&other, *six, &a), Err(Error::InvalidSignature { node: *six }));
        let one = nodes[0].0;
        assert_eq!(vartime_verify_acceptance(&p, one, &a), Err(Error::InvalidSignature { node: one }));
        // Signed by another node's key.
        let forged = accept(&nodes[0].1, *six, &p, &mut rng);
        assert!(vartime_verify_acceptance(&p, *six, &forged).is_err());
        let stranger = NodeId::new(9).unwrap();
        assert_eq!(vartime_verify_acceptance(&p, stranger, &a), Err(Error::UnknownNode { node: 9 }));
    }
}
