//! Membership changes on the node, as epochs: the operator accepts (or rejects) a proposal
//! through the operator socket; the change's reshares run against the accepted proposal; the
//! coordinator commits it (`CommitEpoch`) with every new member's signed acceptance, or
//! abandons it (`AbortEpoch`) and the old epoch stays whole.
//!
//! What a lying party could try, and what stops it:
//! - *A coordinator executing a change some operator did not accept*: `CommitEpoch` carries the
//!   acceptances, and this node verifies every new member's signature itself against the
//!   identity keys the proposal pins. A node whose operator rejected the change holds no
//!   proposal and takes part in nothing of it.
//! - *A coordinator running a change's reshare with other receivers, another t, or outside
//!   dealers*: refused against the accepted proposal before anything is dealt (receivers are
//!   exactly the new manifest's nodes at its t; dealers nodes of the manifest in force).
//! - *A coordinator committing only some versions* (to drop a key on the way): a node that stays
//!   refuses unless every version it holds is in the commit.
//! - *A coordinator committing another run's shares*: each listed version commits only if the
//!   pending share is exactly that generation with exactly that package.
//! - *One operator's acceptance replayed for another change*: it signs the proposal's digest.
//!
//! The acceptance is kept once the change is in force here, so that a commit cut short on other
//! nodes can still be completed with every acceptance; the next accepted change replaces it.
//!
//! While a change is accepted here and not in force, other reshares (repair, refresh) are refused, so the change's
//! pending shares are never replaced under it; requests are served by the epoch in force
//! throughout, and the new shares are used only once committed.

use crate::manifest::{check_members, check_names};
use crate::node::{Node, NodeError};
use hyok_proto::v1 as pb;
use hyok_store::{Family, Keys};
use hyok_threshold::NodeId;
use hyok_threshold::Wire;
use hyok_threshold::epoch::{self, Acceptance, Proposal};
use std::collections::BTreeSet;

/// What the store keeps of an accepted change: `u32be(len) ‖ proposal ‖ acceptance`.
fn encode(proposal: &Proposal, acceptance: &Acceptance) -> Vec<u8> {
    let p = proposal.to_bytes();
    let mut out = (p.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&p);
    out.extend_from_slice(&acceptance.to_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<(Proposal, Acceptance)> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = u32::from_be_bytes(len.try_into().ok()?) as usize;
    let (p, a) = rest.split_at_checked(len)?;
    Some((Proposal::from_bytes(p).ok()?, Acceptance::from_bytes(a).ok()?))
}

/// A proposal and the acceptances it needs, checked: every new member's, valid.
pub fn check_acceptances(proposal: &Proposal, acceptances: &[pb::EpochAcceptance]) -> Result<(), String> {
    let mut accepted = BTreeSet::new();
    for a in acceptances {
        let id = u16::try_from(a.node_id).ok().and_then(|i| NodeId::new(i).ok());
        let Some(id) = id else { return Err(format!("an acceptance names node {}", a.node_id)) };
        let acceptance =
            Acceptance::from_bytes(&a.acceptance).map_err(|_| format!("node {id}'s acceptance is malformed"))?;
        epoch::vartime_verify_acceptance(proposal, id, &acceptance)
            .map_err(|_| format!("node {id}'s acceptance does not verify under its identity key"))?;
        accepted.insert(id);
    }
    let missing: Vec<String> = proposal.required().difference(&accepted).map(|n| n.to_string()).collect();
    if !missing.is_empty() {
        return Err(format!("not accepted by the operators of nodes {}", missing.join(", ")));
    }
    Ok(())
}

/// Whether a change's reshare round 1 agrees with `proposal`: its epoch and t; receivers every
/// node of the new manifest, each with the identity key it pins; dealers nodes of the manifest
/// in force with the keys it pins.
pub fn check_run(proposal: &Proposal, req: &pb::DkgRound1Request, reshare: &pb::Reshare) -> Result<(), String> {
    if reshare.epoch != proposal.epoch() {
        return Err(format!("the run is for epoch {}, the accepted change makes {}", reshare.epoch, proposal.epoch()));
    }
    let to = proposal.to();
    if req.threshold != u32::from(to.threshold()) {
        return Err(format!("threshold {} differs from the new manifest's t = {}", req.threshold, to.threshold()));
    }
    let receivers = check_members(to, &req.participants, "receiver")?;
    if receivers != to.nodes().len() {
        return Err(format!("a change's receivers are every node of the new manifest ({receivers} given)"));
    }
    check_members(proposal.from(), &reshare.dealers, "dealer")?;
    Ok(())
}

impl Node {
    /// The membership change this node's operator accepted and that has not taken effect here.
    pub fn pending_change(&self) -> Result<Option<(Proposal, Acceptance)>, NodeError> {
        let accepted = self.accepted()?;
        let in_force = self.manifest();
        Ok(accepted.filter(|(p, _)| in_force.as_ref() != Some(p.to())))
    }

    /// The membership change this node's operator accepted last, if any — pending, or in force
    /// here already (kept, with the acceptance, so that a commit cut short elsewhere can be
    /// completed with every acceptance).
    pub fn accepted(&self) -> Result<Option<(Proposal, Acceptance)>, NodeError> {
        match self.store().proposal()? {
            None => Ok(None),
            Some(bytes) => decode(&bytes).map(Some).ok_or_else(|| {
                tracing::error!("the stored membership change does not decode");
                NodeError::Internal
            }),
        }
    }

    /// The operator accepts `proposal`: it must name this node with its identity key, and its
    /// old manifest must be the one in force here (a node joining has none). Signed with the
    /// identity key, stored (flushed), audited `epoch:accept` with the digest. Only the node's
    /// own operator reaches this (the operator socket).
    pub fn accept_proposal(&self, proposal: &Proposal, caller: &str) -> Result<[u8; 32], NodeError> {
        let me = self.id();
        let identity = self.secrets().identity().public_key();
        if proposal.identity(me) != Some(&identity) {
            return Err(NodeError::Manifest(format!(
                "the change does not name this node (node {me}) with its identity key"
            )));
        }
        if proposal.to().identity(me).is_some() {
            check_names(proposal.to(), me, &identity)?;
        }
        match self.manifest() {
            Some(m) if &m != proposal.from() => {
                return Err(NodeError::Manifest(format!(
                    "the change starts from epoch {} ({}), but this node is at epoch {} ({})",
                    proposal.from().epoch(),
                    hex::encode(proposal.from().digest()),
                    m.epoch(),
                    hex::encode(m.digest())
                )));
            }
            None if proposal.from().identity(me).is_some() => {
                return Err(NodeError::Manifest("this node has no manifest but the change says it is a member".into()));
            }
            _ => {}
        }
        let acceptance = epoch::accept(self.secrets().identity(), me, proposal, &mut rand::rng());
        self.store().put_proposal(&encode(proposal, &acceptance))?;
        let digest = proposal.digest();
        let what = format!("epoch={} {}", proposal.epoch(), hex::encode(digest));
        self.audit(&[self.event("", 0, "epoch:accept", &what, caller)])?;
        tracing::warn!(epoch = proposal.epoch(), digest = hex::encode(digest), caller, "membership change accepted");
        Ok(digest)
    }

    /// The operator withdraws (or refuses) the accepted change: it is forgotten, with every
    /// share its reshares left here. Flushed, audited `epoch:reject`.
    pub fn reject_proposal(&self, caller: &str) -> Result<Option<[u8; 32]>, NodeError> {
        let Some((proposal, _)) = self.pending_change()? else { return Ok(None) };
        self.forget_pending()?;
        self.store().remove_proposal()?;
        let digest = proposal.digest();
        let what = format!("epoch={} {}", proposal.epoch(), hex::encode(digest));
        self.audit(&[self.event("", 0, "epoch:reject", &what, caller)])?;
        Ok(Some(digest))
    }

    fn forget_pending(&self) -> Result<usize, NodeError> {
        let n = self.store().ec().remove_all_next()? + self.store().rsa().remove_all_next()?;
        Ok(n)
    }

    /// The pending change `digest` names, or why not.
    fn accepted_named(&self, digest: &[u8]) -> Result<Proposal, NodeError> {
        match self.pending_change()? {
            Some((p, _)) if p.digest().as_slice() == digest => Ok(p),
            Some((p, _)) => Err(NodeError::Precondition(format!(
                "this node accepted another membership change ({})",
                hex::encode(p.digest())
            ))),
            None => Err(NodeError::Precondition("this node's operator accepted no membership change".into())),
        }
    }

    /// `CommitEpoch`: with every new member's acceptance, every listed version's change share
    /// becomes current, then the new manifest takes effect (a node that leaves deletes every
    /// share instead). Idempotent: a version already committed is skipped. Flushed, audited.
    pub fn commit_epoch(
        &self,
        req: &pb::CommitEpochRequest,
        caller: &str,
    ) -> Result<pb::CommitEpochResponse, NodeError> {
        if let (Some((p, _)), Some(m)) = (self.accepted()?, self.manifest())
            && p.digest().as_slice() == req.proposal_digest
            && &m == p.to()
        {
            // In force here already (a retry after a lost answer).
            return Ok(pb::CommitEpochResponse { epoch: m.epoch(), retired: false });
        }
        let proposal = self.accepted_named(&req.proposal_digest)?;
        let refused = |why: String| {
            let _ = self.audit(&[self.event("", 0, "refused:epoch:commit", &req.request_id, caller)]);
            tracing::warn!(caller, why, "membership change commit refused");
            NodeError::Precondition(why)
        };
        check_acceptances(&proposal, &req.acceptances).map_err(refused)?;
        let me = self.id();
        let digest = hex::encode(proposal.digest());
        if proposal.to().identity(me).is_none() {
            let retired = self.store().ec().retire()? + self.store().rsa().retire()?;
            self.store().remove_proposal()?;
            self.keys().clear();
            self.rsa_keys().clear();
            let what = format!("epoch={} {digest} keys={retired}", proposal.epoch());
            self.audit(&[self.event("", 0, "epoch:retire", &what, caller)])?;
            tracing::warn!(epoch = proposal.epoch(), keys = retired, "left the cluster: every share deleted");
            return Ok(pb::CommitEpochResponse { epoch: proposal.epoch(), retired: true });
        }
        let listed = |rsa: bool| -> BTreeSet<(String, u32)> {
            req.versions.iter().filter(|v| v.rsa == rsa).map(|v| (v.key_id.clone(), v.version)).collect()
        };
        let unlisted = [
            unlisted(self.store().ec(), &listed(false))?,
            unlisted(self.store().rsa(), &listed(true))?.into_iter().map(|n| format!("RSA {n}")).collect(),
        ]
        .concat();
        if !unlisted.is_empty() {
            return Err(refused(format!("the commit leaves out versions this node holds: {}", unlisted.join(", "))));
        }
        for v in &req.versions {
            hyok_proto::validate_key_id(&v.key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
            let committed = if v.rsa {
                self.store().rsa().commit_next(&v.key_id, v.version, v.generation, &v.public_key_package)
            } else {
                self.store().ec().commit_next(&v.key_id, v.version, v.generation, &v.public_key_package)
            };
            committed.map_err(|e| match e {
                hyok_store::Error::NotFound(what) => {
                    NodeError::Precondition(format!("no share of the change for {what} on this node"))
                }
                other => NodeError::from(other),
            })?;
            if v.rsa {
                self.rsa_keys().forget(&v.key_id, v.version);
            } else {
                self.keys().shares_changed(&v.key_id, v.version);
            }
        }
        self.store().put_manifest(&proposal.to().to_bytes())?;
        {
            let mut slot = self.manifest_slot().write().map_err(|_| NodeError::Internal)?;
            *slot = Some(proposal.to().clone());
        }
        let what = format!("epoch={} {digest} versions={}", proposal.epoch(), req.versions.len());
        self.audit(&[self.event("", 0, "epoch:commit", &what, caller)])?;
        tracing::warn!(epoch = proposal.epoch(), versions = req.versions.len(), "membership change committed");
        Ok(pb::CommitEpochResponse { epoch: proposal.epoch(), retired: false })
    }

    /// `AbortEpoch`: the change is abandoned here — its shares and the acceptance forgotten (to
    /// try again, the operators accept again); refused where it is in force already. Flushed,
    /// audited.
    pub fn abort_epoch(&self, req: &pb::AbortEpochRequest, caller: &str) -> Result<pb::AbortEpochResponse, NodeError> {
        let proposal = self.accepted_named(&req.proposal_digest)?;
        let forgotten = self.forget_pending()?;
        self.store().remove_proposal()?;
        let what = format!("epoch={} {} forgotten={forgotten}", proposal.epoch(), hex::encode(proposal.digest()));
        self.audit(&[self.event("", 0, "epoch:abort", &what, caller)])?;
        Ok(pb::AbortEpochResponse { forgotten: u32::try_from(forgotten).unwrap_or(u32::MAX) })
    }
}

/// The ACTIVE versions in `keys` that `listed` leaves out, as `key/version`.
fn unlisted<F: Family>(keys: Keys<'_, F>, listed: &BTreeSet<(String, u32)>) -> Result<Vec<String>, NodeError> {
    let mut out = Vec::new();
    for key in keys.list()? {
        for v in keys.versions(&key)? {
            if v.active && !listed.contains(&(key.clone(), v.version)) {
                out.push(format!("{key}/{}", v.version));
            }
        }
    }
    Ok(out)
}
