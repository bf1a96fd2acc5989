//! DKG round 2: complaints, disqualification, and each node's share and the public package.

use super::{Output, Parameters};
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::feldman;
use crate::keys::{Element, GroupPublicKey, KeyShare, NodeId, PublicKeyPackage, VerificationKey};
use crate::vss::{self, ComplaintsMessage, Run, SignedComplaints};
use curve25519_dalek::{RistrettoPoint, Scalar};
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

pub use crate::vss::Complaint;

/// Round 2's broadcast message: this node's complaints and a digest of the round 1 packages it
/// saw (so that a dealer or relay showing different nodes different packages is caught), signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package(SignedComplaints);

impl Package {
    /// The node that sent it.
    pub fn sender(&self) -> NodeId {
        self.0.sender()
    }
    /// Its complaints.
    pub fn complaints(&self) -> &[Complaint] {
        self.0.complaints()
    }
}

impl ComplaintsMessage for Package {
    fn wrap(complaints: SignedComplaints) -> Self {
        Package(complaints)
    }
    fn complaints(&self) -> &SignedComplaints {
        &self.0
    }
}

impl Wire for Package {
    const NAME: &'static str = "DKG round 2 package";
    const TAG: u8 = 0x51;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        SignedComplaints::read(r).map(Package)
    }
}

/// What a node keeps between round 2 and the end: the sub-shares it accepted, and everything
/// public it needs to judge complaints.
pub struct SecretPackage(vss::Received<Parameters>);

impl fmt::Debug for SecretPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("round2::SecretPackage").field("me", &self.0.me).finish_non_exhaustive()
    }
}

impl SecretPackage {
    pub(super) fn new(received: vss::Received<Parameters>) -> Self {
        SecretPackage(received)
    }

    /// The end of the run: check every round 2 package, judge every complaint, fix the set of
    /// qualified dealers `QUAL` (dealers with a failed proof or a justified complaint, and
    /// nodes with an unjustified complaint, are out), and compute `k_i = Σ_{j∈QUAL} f_j(i)`,
    /// `K = Σ_{j∈QUAL} C_j0` and every `K_m = Σ_{j∈QUAL} Σ_k C_jk·m^k`.
    pub fn finish(self, packages: &[Package]) -> Result<Output> {
        let state = &self.0;
        let verdict = state.judge(packages)?;
        let mut disqualified = verdict.bad_dealers;
        disqualified.extend(verdict.false_accusers);
        let params = &state.run;
        let qualified: Vec<NodeId> = params.nodes().filter(|n| !disqualified.contains(n)).collect();
        let t = usize::from(params.threshold());
        if qualified.len() < t {
            return Err(Error::NotEnoughQualifiedDealers {
                qualified: qualified.len(),
                needed: t,
                disqualified: disqualified.into_iter().collect(),
            });
        }

        let mut secret = Zeroizing::new(Scalar::ZERO);
        for dealer in &qualified {
            let sub_share = state.received.get(dealer).ok_or(Error::MissingMessage { node: *dealer })?;
            *secret += **sub_share;
        }
        let share = KeyShare::new(state.me, *secret);

        let dealing = |d: &NodeId| vss::DealingMessage::dealing(&state.dealings[d]);
        let group_key: RistrettoPoint = qualified.iter().map(|d| dealing(d).constant_term()).sum();
        let mut verification_keys = BTreeMap::new();
        for node in params.receivers() {
            let k: RistrettoPoint = qualified
                .iter()
                .map(|d| feldman::vartime_evaluate(&dealing(d).commitment_points(), node.scalar()))
                .sum();
            verification_keys.insert(node, VerificationKey(Element::new(k)));
        }
        if verification_keys.get(&state.me) != Some(&share.verification_key()) {
            return Err(Error::InconsistentPackage);
        }
        let package =
            PublicKeyPackage::new(params.threshold(), verification_keys, GroupPublicKey(Element::new(group_key)))?;
        Ok(Output { share, package, disqualified: disqualified.into_iter().collect() })
    }
}
