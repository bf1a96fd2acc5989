//! The node's side of a reshare: the same four RPCs as a DKG (`DkgRound1` with `reshare` set,
//! `DkgRound2`, `DkgFinish`, `DkgCommit`/`DkgAbort`), then `FinalizeReshare`.
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
use hyok_store::Usages;
use hyok_threshold::reshare::{self, ComplaintPackage, DealerPackage};
use hyok_threshold::{KeyShare, PublicKeyPackage, Wire};
use sha2::{Digest, Sha256};

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
    h.update([usages.0]);
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
        if reshare.generation != reshare.old_generation.checked_add(1).unwrap_or(0) || reshare.generation == 0 {
            return Err(NodeError::Invalid("a reshare produces the generation after the old one".into()));
        }
        let receivers = self.bundles(req, &req.participants, caller)?;
        let dealers = self.bundles(req, &reshare.dealers, caller)?;
        let me = self.id();
        let is_dealer = dealers.contains_key(&me);
        let is_receiver = receivers.contains_key(&me);
        if !is_dealer && !is_receiver {
            return Err(NodeError::Invalid("this node neither deals nor receives in this reshare".into()));
        }
        let old = PublicKeyPackage::from_bytes(&reshare.old_package)
            .map_err(|e| NodeError::Invalid(format!("old package: {e}")))?;
        let threshold = u16::try_from(req.threshold).map_err(|_| NodeError::Invalid("bad threshold".into()))?;
        let session = bound_session(req, reshare, usages);
        let params = reshare::Parameters::new(old, dealers.into_values(), receivers.into_values(), threshold, &session)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;

        let ec = self.store().ec();
        let package = if is_dealer {
            let meta = ec.key(&req.key_id)?.ok_or_else(|| NodeError::NotFound(req.key_id.clone()))?;
            if meta.usages != usages {
                return Err(NodeError::Precondition("usage differs from the key's usage on this node".into()));
            }
            if ec.generation(&req.key_id, req.version)? != reshare.old_generation {
                return Err(NodeError::Precondition(format!(
                    "{}/{} is not at generation {} on this node",
                    req.key_id, req.version, reshare.old_generation
                )));
            }
            let (share, package) = ec.active_share(&req.key_id, req.version)?;
            if package != reshare.old_package {
                self.audit(&[self.event(
                    &req.key_id,
                    req.version,
                    "refused:reshare:package",
                    &req.request_id,
                    caller,
                )])?;
                return Err(NodeError::Precondition("the old package is not the one this node holds".into()));
            }
            let share = KeyShare::from_secret_bytes(&share).map_err(|_| NodeError::Internal)?;
            let dealt = reshare::deal(me, self.secrets(), &share, &params, &mut rand::rng())
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            dealt.to_bytes()
        } else {
            Vec::new()
        };
        if is_receiver {
            if ec.versions(&req.key_id)?.iter().any(|v| v.version == req.version && v.active)
                && ec.generation(&req.key_id, req.version)? >= reshare.generation
            {
                return Err(NodeError::Precondition(format!(
                    "{}/{} is already at generation {} here",
                    req.key_id, req.version, reshare.generation
                )));
            }
            let meta = SessionMeta {
                key_id: req.key_id.clone(),
                version: req.version,
                usages,
                generation: Some(reshare.generation),
                package: Vec::new(),
            };
            self.put_session(&req.session_id, Session::ReshareRound1(meta, Box::new(params)))?;
        }
        let what = format!("generation={} dealer={is_dealer} receiver={is_receiver}", reshare.generation);
        let what = format!("{what} {}", req.request_id);
        self.audit(&[self.event(&req.key_id, req.version, "reshare:round1", &what, caller)])?;
        Ok(pb::DkgRound1Response { package })
    }

    /// `DkgRound2` for a reshare's receiver: check every dealer's package, open and check its
    /// sub-share, complain about the bad ones.
    pub(crate) fn reshare_round2(
        &self,
        req: &pb::DkgRound2Request,
        meta: SessionMeta,
        params: reshare::Parameters,
    ) -> Result<pb::DkgRound2Response, NodeError> {
        let packages: Vec<DealerPackage> = decode_all(&req.packages)?;
        let (state, complaints) = match reshare::receive(self.id(), self.secrets(), params, &packages, &mut rand::rng())
        {
            Ok(received) => received,
            Err(e) => {
                let blamed = format!("culprits={}", ids(&e.culprits()));
                let _ = self.audit(&[self.event(&meta.key_id, meta.version, "reshare:abort:round2", &blamed, "")]);
                return Err(NodeError::Precondition(e.to_string()));
            }
        };
        let accused = complaints.complaints();
        if !accused.is_empty() {
            let what = format!("accused={}", ids(&accused));
            self.audit(&[self.event(&meta.key_id, meta.version, "reshare:complaint", &what, "")])?;
        }
        self.put_session(&req.session_id, Session::ReshareRound2(meta, Box::new(state)))?;
        Ok(pb::DkgRound2Response { package: complaints.to_bytes() })
    }

    /// `DkgFinish` for a reshare's receiver: judge the complaints, compute the new share and
    /// package, store them as the pending next generation (flushed).
    pub(crate) fn reshare_finish(
        &self,
        req: &pb::DkgFinishRequest,
        meta: SessionMeta,
        state: reshare::ReceiverState,
    ) -> Result<pb::DkgFinishResponse, NodeError> {
        let packages: Vec<ComplaintPackage> = decode_all(&req.packages)?;
        let output = match state.finish(&packages) {
            Ok(output) => output,
            Err(e) => {
                let blamed = format!("culprits={}", ids(&e.culprits()));
                let _ = self.audit(&[self.event(&meta.key_id, meta.version, "reshare:abort:finish", &blamed, "")]);
                return Err(NodeError::Precondition(e.to_string()));
            }
        };
        let generation = meta.generation.ok_or(NodeError::Internal)?;
        if !output.disqualified.is_empty() || !output.false_accusers.is_empty() {
            let what = format!("dealers={} false_accusers={}", ids(&output.disqualified), ids(&output.false_accusers));
            self.audit(&[self.event(&meta.key_id, meta.version, "reshare:disqualified", &what, "")])?;
        }
        let package = output.package.to_bytes();
        let share = output.share.to_secret_bytes();
        let next = hyok_store::Reshared { generation, share: &share, package: &package, created_at_ms: now_ms() };
        self.store().ec().put_next(&meta.key_id, meta.version, meta.usages, next)?;
        let what = format!("generation={generation}");
        self.audit(&[self.event(&meta.key_id, meta.version, "reshare:finish", &what, "")])?;
        let to_wire = |nodes: &[hyok_threshold::NodeId]| nodes.iter().map(|n| u32::from(n.get())).collect();
        let response = pb::DkgFinishResponse {
            public_key_package: package,
            disqualified: to_wire(&output.disqualified),
            false_accusers: to_wire(&output.false_accusers),
        };
        let meta = SessionMeta { package: response.public_key_package.clone(), ..meta };
        self.put_session(&req.session_id, Session::Finished(meta))?;
        Ok(response)
    }

    /// `FinalizeReshare`: drops the generation the reshare replaced; from here on the old share
    /// is gone from this node. Flushed and audited.
    pub fn finalize_reshare(
        &self,
        req: &pb::FinalizeReshareRequest,
        caller: &str,
    ) -> Result<pb::FinalizeReshareResponse, NodeError> {
        hyok_proto::validate_key_id(&req.key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        let dropped = self.store().ec().drop_previous(&req.key_id, req.version, req.generation)?;
        self.keys().shares_changed(&req.key_id, req.version);
        let what = format!("generation={} dropped={dropped}", req.generation);
        self.audit(&[self.event(&req.key_id, req.version, "reshare:finalize", &what, caller)])?;
        Ok(pb::FinalizeReshareResponse { dropped })
    }
}
