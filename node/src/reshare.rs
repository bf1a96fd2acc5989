//! The node's side of a reshare, of an EC key's version (`hyok_threshold::reshare`) or a
//! threshold RSA key's (`hyok_threshold::rsa::reshare`): the same four RPCs as a DKG
//! (`DkgRound1` with `reshare` set, `DkgRound2`, `DkgFinish`, `DkgCommit`/`DkgAbort`), then
//! `FinalizeReshare`. Everything but the math is one code path for both families: the checks
//! before dealing, the store's generations, commit, abort, finalize and audit.
//!
//! What a lying party could try, and what stops it:
//! - *A coordinator naming another key, version, usage or generation to a receiver* (say, to a
//!   wiped node that cannot know better): the run's session is a hash of the coordinator's
//!   session id **and** all of these, and every dealer signs its package over it. A dealer
//!   deals only the share it holds for exactly that key version and generation, with the usages
//!   it stored, so a receiver told anything else finds no dealer package that verifies.
//! - *A coordinator handing receivers a made-up old package*: dealers refuse unless it is
//!   byte-for-byte the package they hold, and receivers check every dealer's constant term
//!   against it: an honest dealer's commitment never matches a package it did not sign.
//! - *A dealer dealing something other than its share*: its constant term differs from its old
//!   verification key, and it is disqualified; a bad sub-share draws a complaint that everyone
//!   judges. The run needs `t` honest old holders.
//! - *Receivers or dealers outside the manifest, or with other identity keys*: refused by the
//!   manifest check before anything is touched.
//!
//! A receiver stores its new share in the store's `next` slot; it is used only after the
//! commit, and the old generation keeps answering requests that name it until the reshare is
//! finalized.

use crate::node::{Node, NodeError, Session, SessionMeta, decode_all, ids, now_ms};
use hyok_proto::v1 as pb;
use hyok_store::{Family, Keys, Usages};
use hyok_threshold::reshare::{self, ComplaintPackage, DealerPackage};
use hyok_threshold::rsa::reshare as rsa_reshare;
use hyok_threshold::rsa::{RsaKeyShare, RsaPublicPackage};
use hyok_threshold::{KeyShare, NodeId, PublicKeyPackage, Wire};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The session a reshare's packages are bound to: the coordinator's session id and everything
/// the receivers must not be lied to about.
fn bound_session(req: &pb::DkgRound1Request, reshare: &pb::Reshare, usages: Usages) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"hyok/v1/reshare-session");
    for field in [&req.session_id[..], req.key_id.as_bytes(), &reshare.old_package] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.update(req.version.to_be_bytes());
    h.update(reshare.old_generation.to_be_bytes());
    h.update(reshare.generation.to_be_bytes());
    h.update([usages.0, u8::from(reshare.rsa)]);
    h.update(reshare.epoch.to_be_bytes());
    h.finalize().to_vec()
}

impl Node {
    /// `DkgRound1` for a reshare (called after the manifest check): a dealer deals its share of
    /// the old generation; a receiver opens a session for the dealers' packages.
    pub(crate) fn reshare_round1(
        &self,
        req: &pb::DkgRound1Request,
        reshare: &pb::Reshare,
        usages: Usages,
        caller: &str,
    ) -> Result<pb::DkgRound1Response, NodeError> {
        if reshare.generation <= reshare.old_generation {
            return Err(NodeError::Invalid("a reshare produces a generation above the old one".into()));
        }
        if reshare.rsa && usages != Usages(Usages::DECRYPT) {
            return Err(NodeError::Invalid("a threshold RSA key's only usage is DECRYPT".into()));
        }
        let receivers = self.bundles(req, &req.participants, caller)?;
        let dealers = self.bundles(req, &reshare.dealers, caller)?;
        let me = self.id();
        let is_dealer = dealers.contains_key(&me);
        let is_receiver = receivers.contains_key(&me);
        if !is_dealer && !is_receiver {
            return Err(NodeError::Invalid("this node neither deals nor receives in this reshare".into()));
        }
        let threshold = u16::try_from(req.threshold).map_err(|_| NodeError::Invalid("bad threshold".into()))?;
        let session = bound_session(req, reshare, usages);
        let invalid = |e: hyok_threshold::Error| NodeError::Invalid(e.to_string());
        let (receivers, dealers) = (receivers.into_values(), dealers.into_values());
        let meta = SessionMeta {
            key_id: req.key_id.clone(),
            version: req.version,
            usages,
            generation: Some(reshare.generation),
            package: Vec::new(),
            rsa: reshare.rsa,
            epoch: reshare.epoch,
        };
        let (package, session) = if reshare.rsa {
            if is_receiver {
                self.check_receiver(self.store().rsa(), req, reshare)?;
            }
            let old = RsaPublicPackage::from_bytes(&reshare.old_package)
                .map_err(|e| NodeError::Invalid(format!("old package: {e}")))?;
            let params = rsa_reshare::Parameters::new(old, dealers, receivers, threshold, &session).map_err(invalid)?;
            let package = match self.dealer_share(self.store().rsa(), req, reshare, usages, caller)? {
                Some(share) if is_dealer => {
                    let share = RsaKeyShare::from_secret_bytes(&share).map_err(|_| NodeError::Internal)?;
                    rsa_reshare::deal(me, self.secrets(), &share, &params, &mut rand::rng())
                        .map_err(invalid)?
                        .to_bytes()
                }
                _ => Vec::new(),
            };
            (package, Session::RsaReshareRound1(meta, Box::new(params)))
        } else {
            if is_receiver {
                self.check_receiver(self.store().ec(), req, reshare)?;
            }
            let old = PublicKeyPackage::from_bytes(&reshare.old_package)
                .map_err(|e| NodeError::Invalid(format!("old package: {e}")))?;
            let params = reshare::Parameters::new(old, dealers, receivers, threshold, &session).map_err(invalid)?;
            let package = match self.dealer_share(self.store().ec(), req, reshare, usages, caller)? {
                Some(share) if is_dealer => {
                    let share = KeyShare::from_secret_bytes(&share).map_err(|_| NodeError::Internal)?;
                    reshare::deal(me, self.secrets(), &share, &params, &mut rand::rng()).map_err(invalid)?.to_bytes()
                }
                _ => Vec::new(),
            };
            (package, Session::ReshareRound1(meta, Box::new(params)))
        };
        if is_receiver {
            self.put_session(&req.session_id, session)?;
        }
        let what = format!("generation={} dealer={is_dealer} receiver={is_receiver}", reshare.generation);
        let what = format!("{what} {}", req.request_id);
        self.audit(&[self.event(&req.key_id, req.version, "reshare:round1", &what, caller)])?;
        Ok(pb::DkgRound1Response { package })
    }

    /// A dealer's share of the old generation (`None` if this node does not deal): refused
    /// unless this node holds exactly that generation of exactly that package — as its current
    /// share, or as the one a later reshare replaced, should that reshare not have reached t
    /// nodes — with the usages the run names.
    fn dealer_share<F: Family>(
        &self,
        keys: Keys<'_, F>,
        req: &pb::DkgRound1Request,
        reshare: &pb::Reshare,
        usages: Usages,
        caller: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, NodeError> {
        let me = u32::from(self.id().get());
        if !reshare.dealers.iter().any(|d| d.node_id == me) {
            return Ok(None);
        }
        let meta = keys.key(&req.key_id)?.ok_or_else(|| NodeError::NotFound(req.key_id.clone()))?;
        if meta.usages != usages {
            return Err(NodeError::Precondition("usage differs from the key's usage on this node".into()));
        }
        let (share, package, _) =
            keys.share_of(&req.key_id, req.version, Some(reshare.old_generation)).map_err(|e| match e {
                hyok_store::Error::NotFound(_) => NodeError::Precondition(format!(
                    "{}/{} generation {} is not on this node",
                    req.key_id, req.version, reshare.old_generation
                )),
                other => NodeError::from(other),
            })?;
        if package != reshare.old_package {
            self.audit(&[self.event(&req.key_id, req.version, "refused:reshare:package", &req.request_id, caller)])?;
            return Err(NodeError::Precondition("the old package is not the one this node holds".into()));
        }
        Ok(Some(share))
    }

    /// A receiver never takes a generation it already holds (or an older one).
    fn check_receiver<F: Family>(
        &self,
        keys: Keys<'_, F>,
        req: &pb::DkgRound1Request,
        reshare: &pb::Reshare,
    ) -> Result<(), NodeError> {
        if keys.versions(&req.key_id)?.iter().any(|v| v.version == req.version && v.active)
            && keys.generation(&req.key_id, req.version)? >= reshare.generation
        {
            return Err(NodeError::Precondition(format!(
                "{}/{} is already at generation {} here",
                req.key_id, req.version, reshare.generation
            )));
        }
        Ok(())
    }

    /// The end of round 2 or of the run in either family: a run that died is audited with its
    /// culprits; the error goes back to the coordinator.
    fn aborted(&self, meta: &SessionMeta, step: &str, e: &hyok_threshold::Error) -> NodeError {
        let blamed = format!("culprits={}", ids(&e.culprits()));
        let _ = self.audit(&[self.event(&meta.key_id, meta.version, &format!("reshare:abort:{step}"), &blamed, "")]);
        NodeError::Precondition(e.to_string())
    }

    /// Round 2's complaints, audited, and the session moved on.
    fn complained(
        &self,
        req: &pb::DkgRound2Request,
        key_id: &str,
        version: u32,
        accused: &[NodeId],
        session: Session,
        package: Vec<u8>,
    ) -> Result<pb::DkgRound2Response, NodeError> {
        if !accused.is_empty() {
            let what = format!("accused={}", ids(accused));
            self.audit(&[self.event(key_id, version, "reshare:complaint", &what, "")])?;
        }
        self.put_session(&req.session_id, session)?;
        Ok(pb::DkgRound2Response { package })
    }

    /// `DkgRound2` for an EC reshare's receiver: check every dealer's package, open and check
    /// its sub-share, complain about the bad ones.
    pub(crate) fn reshare_round2(
        &self,
        req: &pb::DkgRound2Request,
        meta: SessionMeta,
        params: reshare::Parameters,
    ) -> Result<pb::DkgRound2Response, NodeError> {
        let packages: Vec<DealerPackage> = decode_all(&req.packages)?;
        let (state, complaints) = reshare::receive(self.id(), self.secrets(), params, &packages, &mut rand::rng())
            .map_err(|e| self.aborted(&meta, "round2", &e))?;
        let accused = complaints.complaints();
        let package = complaints.to_bytes();
        let (key_id, version) = (meta.key_id.clone(), meta.version);
        self.complained(req, &key_id, version, &accused, Session::ReshareRound2(meta, Box::new(state)), package)
    }

    /// `DkgRound2` for a threshold RSA reshare's receiver.
    pub(crate) fn rsa_reshare_round2(
        &self,
        req: &pb::DkgRound2Request,
        meta: SessionMeta,
        params: rsa_reshare::Parameters,
    ) -> Result<pb::DkgRound2Response, NodeError> {
        let packages: Vec<rsa_reshare::DealerPackage> = decode_all(&req.packages)?;
        let (state, complaints) = rsa_reshare::receive(self.id(), self.secrets(), params, &packages, &mut rand::rng())
            .map_err(|e| self.aborted(&meta, "round2", &e))?;
        let accused: Vec<NodeId> = complaints.complaints().iter().map(|c| c.accused()).collect();
        let package = complaints.to_bytes();
        let (key_id, version) = (meta.key_id.clone(), meta.version);
        self.complained(req, &key_id, version, &accused, Session::RsaReshareRound2(meta, Box::new(state)), package)
    }

    /// `DkgFinish` for an EC reshare's receiver: judge the complaints, compute the new share
    /// and package, store them as the pending next generation (flushed).
    pub(crate) fn reshare_finish(
        &self,
        req: &pb::DkgFinishRequest,
        meta: SessionMeta,
        state: reshare::ReceiverState,
    ) -> Result<pb::DkgFinishResponse, NodeError> {
        let packages: Vec<ComplaintPackage> = decode_all(&req.packages)?;
        let output = state.finish(&packages).map_err(|e| self.aborted(&meta, "finish", &e))?;
        let reshared = Reshared {
            share: output.share.to_secret_bytes(),
            package: output.package.to_bytes(),
            disqualified: output.disqualified,
            false_accusers: output.false_accusers,
        };
        self.store_reshared(self.store().ec(), req, meta, reshared)
    }

    /// `DkgFinish` for a threshold RSA reshare's receiver.
    pub(crate) fn rsa_reshare_finish(
        &self,
        req: &pb::DkgFinishRequest,
        meta: SessionMeta,
        state: rsa_reshare::ReceiverState,
    ) -> Result<pb::DkgFinishResponse, NodeError> {
        let packages: Vec<rsa_reshare::ComplaintPackage> = decode_all(&req.packages)?;
        let output = state.finish(&packages).map_err(|e| self.aborted(&meta, "finish", &e))?;
        let reshared = Reshared {
            share: output.share.to_secret_bytes(),
            package: output.package.to_bytes(),
            disqualified: output.disqualified,
            false_accusers: output.false_accusers,
        };
        self.store_reshared(self.store().rsa(), req, meta, reshared)
    }

    /// Stores a receiver's output as the pending next generation (flushed, audited) and answers
    /// with the package, the disqualified dealers and the false accusers.
    fn store_reshared<F: Family>(
        &self,
        keys: Keys<'_, F>,
        req: &pb::DkgFinishRequest,
        meta: SessionMeta,
        out: Reshared,
    ) -> Result<pb::DkgFinishResponse, NodeError> {
        let generation = meta.generation.ok_or(NodeError::Internal)?;
        if !out.disqualified.is_empty() || !out.false_accusers.is_empty() {
            let what = format!("dealers={} false_accusers={}", ids(&out.disqualified), ids(&out.false_accusers));
            self.audit(&[self.event(&meta.key_id, meta.version, "reshare:disqualified", &what, "")])?;
        }
        let next =
            hyok_store::Reshared { generation, share: &out.share, package: &out.package, created_at_ms: now_ms() };
        keys.put_next(&meta.key_id, meta.version, meta.usages, next)?;
        let what = format!("generation={generation}");
        self.audit(&[self.event(&meta.key_id, meta.version, "reshare:finish", &what, "")])?;
        let to_wire = |nodes: &[NodeId]| nodes.iter().map(|n| u32::from(n.get())).collect();
        let response = pb::DkgFinishResponse {
            public_key_package: out.package.clone(),
            disqualified: to_wire(&out.disqualified),
            false_accusers: to_wire(&out.false_accusers),
        };
        let meta = SessionMeta { package: out.package, ..meta };
        self.put_session(&req.session_id, Session::Finished(meta))?;
        Ok(response)
    }

    /// `DkgCommit` of a finished reshare: the run's own output becomes the current generation
    /// (the old one kept as previous), and the cached shares are forgotten. Flushed, audited.
    pub(crate) fn reshare_commit(&self, meta: &SessionMeta, generation: u32, caller: &str) -> Result<(), NodeError> {
        if meta.rsa {
            self.store().rsa().commit_next(&meta.key_id, meta.version, generation, &meta.package)?;
        } else {
            self.store().ec().commit_next(&meta.key_id, meta.version, generation, &meta.package)?;
        }
        self.shares_changed(meta.rsa, &meta.key_id, meta.version);
        let what = format!("generation={generation}");
        self.audit(&[self.event(&meta.key_id, meta.version, "reshare:commit", &what, caller)])
    }

    fn shares_changed(&self, rsa: bool, key_id: &str, version: u32) {
        if rsa {
            self.rsa_keys().forget(key_id, version);
        } else {
            self.keys().shares_changed(key_id, version);
        }
    }

    /// `FinalizeReshare`: drops the generation the reshare replaced; from here on the old share
    /// is gone from this node. Flushed and audited.
    pub fn finalize_reshare(
        &self,
        req: &pb::FinalizeReshareRequest,
        caller: &str,
    ) -> Result<pb::FinalizeReshareResponse, NodeError> {
        hyok_proto::validate_key_id(&req.key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        let dropped = if req.rsa {
            self.store().rsa().drop_previous(&req.key_id, req.version, req.generation)?
        } else {
            self.store().ec().drop_previous(&req.key_id, req.version, req.generation)?
        };
        self.shares_changed(req.rsa, &req.key_id, req.version);
        let what = format!("generation={} dropped={dropped}", req.generation);
        self.audit(&[self.event(&req.key_id, req.version, "reshare:finalize", &what, caller)])?;
        Ok(pb::FinalizeReshareResponse { dropped })
    }
}

/// What a node reports of a version's generations, in either family: the current share's, the
/// one a committed reshare replaced (still served), and a reshare's uncommitted output.
pub(crate) type Generations = (u32, Option<pb::NodeKeyGeneration>, Option<pb::NodeKeyGeneration>);

/// [`Generations`] of `key_id`/`version` in `keys`.
pub(crate) fn generations<F: Family>(keys: Keys<'_, F>, key_id: &str, version: u32) -> Result<Generations, NodeError> {
    let wire =
        |g: hyok_store::Generation| pb::NodeKeyGeneration { generation: g.generation, public_key_package: g.package };
    Ok((
        keys.generation(key_id, version)?,
        keys.previous(key_id, version)?.map(wire),
        keys.next(key_id, version)?.map(wire),
    ))
}

/// A receiver's output in either family, as the store and the coordinator take it.
struct Reshared {
    share: Zeroizing<Vec<u8>>,
    package: Vec<u8>,
    disqualified: Vec<NodeId>,
    false_accusers: Vec<NodeId>,
}
