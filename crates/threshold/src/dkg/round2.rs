//! DKG round 2: complaints, disqualification, and each node's share and the public package.

use super::{Output, Parameters, round1};
use crate::dleq::DleqProof;
use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::feldman;
use crate::keys::{Element, GroupPublicKey, IdentitySecret, KeyShare, NodeId, PublicKeyPackage, VerificationKey};
use crate::schnorr;
use crate::transcript::Transcript;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use zeroize::Zeroizing;

/// "The sub-share `accused` dealt me does not verify": reveals the ECDH value `tr_i·E_j` of that
/// one channel (`tr_i` the accuser's DKG transport secret), with a DLEQ proof against `T_i`, so
/// anyone can decrypt the sub-share and judge who lied. `E_j` carries a proof of knowledge
/// bound to this run, so the value is one the dealer could compute itself: it opens nothing in
/// any other run, and nothing sealed to the node's identity or seal key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    pub(crate) accused: NodeId,
    pub(crate) dh: Element,
    pub(crate) proof: DleqProof,
}

impl Complaint {
    /// The dealer accused.
    pub fn accused(&self) -> NodeId {
        self.accused
    }
    /// The revealed ECDH value, for tests that try to misuse it elsewhere.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_dh(&self) -> [u8; 32] {
        self.dh.compressed.to_bytes()
    }
}

/// Round 2's broadcast message: this node's complaints and a digest of the round 1 packages it
/// saw (so that a dealer or relay showing different nodes different packages is caught), signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    sender: NodeId,
    complaints: Vec<Complaint>,
    view: [u8; 64],
    signature: schnorr::Proof,
}

impl Package {
    /// The node that sent it.
    pub fn sender(&self) -> NodeId {
        self.sender
    }
    /// Its complaints.
    pub fn complaints(&self) -> &[Complaint] {
        &self.complaints
    }

    fn write_unsigned(sender: NodeId, complaints: &[Complaint], view: &[u8; 64], w: &mut Writer) {
        w.node(sender);
        w.u16(complaints.len() as u16);
        for c in complaints {
            w.node(c.accused);
            c.dh.write(w);
            c.proof.write(w);
        }
        w.fixed(view);
    }

    fn signature_context(params: &Parameters, sender: NodeId, complaints: &[Complaint], view: &[u8; 64]) -> Transcript {
        let mut w = Writer(Vec::new());
        Self::write_unsigned(sender, complaints, view, &mut w);
        let mut t = params.transcript(b"hyok/v1/dkg/round2-signature");
        t.append(b"package", &w.0);
        t
    }
}

impl Wire for Package {
    const NAME: &'static str = "DKG round 2 package";
    const TAG: u8 = 0x51;
    fn encode_body(&self, w: &mut Writer) {
        Self::write_unsigned(self.sender, &self.complaints, &self.view, w);
        self.signature.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let sender = r.node()?;
        let n = r.count(MAX_NODES)?;
        let mut complaints = Vec::with_capacity(n);
        for _ in 0..n {
            complaints.push(Complaint { accused: r.node()?, dh: Element::read(r)?, proof: DleqProof::read(r)? });
        }
        let view = r.array()?;
        let signature = schnorr::Proof::read(r)?;
        Ok(Package { sender, complaints, view, signature })
    }
}

/// `H(all round 1 packages)`, in node order.
fn view_of(params: &Parameters, packages: &BTreeMap<NodeId, round1::Package>) -> [u8; 64] {
    let mut t = params.transcript(b"hyok/v1/dkg/view");
    for p in packages.values() {
        t.append(b"package", &p.to_bytes());
    }
    t.digest()
}

/// What a node keeps between round 2 and the end: the sub-shares it accepted, and everything
/// public it needs to judge complaints.
pub struct SecretPackage {
    me: NodeId,
    params: Parameters,
    round1: BTreeMap<NodeId, round1::Package>,
    received: BTreeMap<NodeId, Zeroizing<Scalar>>,
    bad_proofs: Vec<NodeId>,
    own_package: Package,
}

impl fmt::Debug for SecretPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("round2::SecretPackage").field("me", &self.me).finish_non_exhaustive()
    }
}

impl SecretPackage {
    pub(super) fn new<R: CryptoRng + ?Sized>(
        previous: round1::SecretPackage,
        round1: BTreeMap<NodeId, round1::Package>,
        received: BTreeMap<NodeId, Zeroizing<Scalar>>,
        bad_proofs: Vec<NodeId>,
        complaints: Vec<Complaint>,
        rng: &mut R,
    ) -> Result<(SecretPackage, Package)> {
        let me = previous.me;
        let identity: &IdentitySecret = &previous.identity;
        let view = view_of(&previous.params, &round1);
        let context = Package::signature_context(&previous.params, me, &complaints, &view);
        let signature = schnorr::Proof::prove(identity.scalar(), &identity.public_key().0, &context, rng);
        let package = Package { sender: me, complaints, view, signature };
        let state = SecretPackage {
            me,
            params: previous.params.clone(),
            round1,
            received,
            bad_proofs,
            own_package: package.clone(),
        };
        Ok((state, package))
    }

    /// Judges one complaint: `Ok(true)` if the accused dealt a bad sub-share, `Ok(false)` if the
    /// accuser lied (bad proof, or the revealed sub-share verifies).
    fn judge(&self, accuser: NodeId, complaint: &Complaint) -> Result<bool> {
        let Some(accused) = self.round1.get(&complaint.accused) else {
            return Ok(false);
        };
        if complaint.accused == accuser {
            return Ok(false);
        }
        let accuser_key = self.params.transport(accuser)?;
        let context = round1::complaint_context(&self.params, accuser, complaint.accused);
        if !crate::dleq::vartime_verify_revealed_dh(
            accuser_key,
            accused.ephemeral(),
            &complaint.dh,
            &complaint.proof,
            &context,
        ) {
            return Ok(false);
        }
        let share = accused.open_share(&self.params, accuser, &complaint.dh.point);
        Ok(!share.is_some_and(|s| feldman::verify(&accused.commitment_points(), accuser, &s)))
    }

    /// The end of the run: check every round 2 package, judge every complaint, fix the set of
    /// qualified dealers `QUAL`, and compute `k_i = Σ_{j∈QUAL} f_j(i)`,
    /// `K = Σ_{j∈QUAL} C_j0` and every `K_m = Σ_{j∈QUAL} Σ_k C_jk·m^k`.
    pub fn finish(self, packages: &[Package]) -> Result<Output> {
        let mut all = BTreeMap::new();
        for p in packages {
            let identity = self.params.identity(p.sender)?;
            let context = Package::signature_context(&self.params, p.sender, &p.complaints, &p.view);
            if !p.signature.vartime_verify(&identity.0, &context) {
                return Err(Error::InvalidSignature { node: p.sender });
            }
            if p.sender == self.me {
                continue;
            }
            if all.insert(p.sender, p).is_some() {
                return Err(Error::DuplicateNode { node: p.sender });
            }
        }
        for node in self.params.nodes() {
            if node != self.me && !all.contains_key(&node) {
                return Err(Error::MissingMessage { node });
            }
        }
        all.insert(self.me, &self.own_package);

        let mut disqualified: BTreeSet<NodeId> = self.bad_proofs.iter().copied().collect();
        for (sender, package) in &all {
            if package.view != self.own_package.view {
                return Err(Error::InconsistentView { node: *sender });
            }
            for complaint in &package.complaints {
                if self.judge(*sender, complaint)? {
                    disqualified.insert(complaint.accused);
                } else {
                    disqualified.insert(*sender);
                }
            }
        }
        let qualified: Vec<NodeId> = self.params.nodes().filter(|n| !disqualified.contains(n)).collect();
        let t = usize::from(self.params.threshold);
        if qualified.len() < t {
            return Err(Error::NotEnoughQualifiedDealers {
                qualified: qualified.len(),
                needed: t,
                disqualified: disqualified.into_iter().collect(),
            });
        }

        let mut secret = Zeroizing::new(Scalar::ZERO);
        for dealer in &qualified {
            let sub_share = self.received.get(dealer).ok_or(Error::MissingMessage { node: *dealer })?;
            *secret += **sub_share;
        }
        let share = KeyShare::new(self.me, *secret);

        let group_key: RistrettoPoint = qualified.iter().map(|d| self.round1[d].group_commitment()).sum();
        let mut verification_keys = BTreeMap::new();
        for node in self.params.nodes() {
            let k: RistrettoPoint = qualified
                .iter()
                .map(|d| feldman::vartime_evaluate(&self.round1[d].commitment_points(), node.scalar()))
                .sum();
            verification_keys.insert(node, VerificationKey(Element::new(k)));
        }
        if verification_keys.get(&self.me) != Some(&share.verification_key()) {
            return Err(Error::InconsistentPackage);
        }
        let package =
            PublicKeyPackage::new(self.params.threshold, verification_keys, GroupPublicKey(Element::new(group_key)))?;
        Ok(Output { share, package, disqualified: disqualified.into_iter().collect() })
    }
}
