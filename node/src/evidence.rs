//! The node's evidence policy in force, and the judge every partial passes before the node
//! computes it: the requester's own evidence (a SigV4-signed XKS request, a DKE user's token, a
//! gRPC caller's signature) must cover exactly the key, version, operation and input asked for
//! (see `hyok_evidence::policy`). The coordinator only carries the evidence.
//!
//! The policy is the node operator's alone: installed through the operator socket, or against
//! the stopped node's store (`hyok-node policy install`), stored sealed (it holds SigV4
//! secrets), audited as `policy:install`. No gRPC call reads or changes it.

use crate::node::{Node, NodeError};
use hyok_evidence::policy::{Denied, Grant, Policy, PolicyFile, Request};
use hyok_proto::v1 as pb;
use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Why everything is refused on a node without a policy.
pub const NO_POLICY: &str =
    "no evidence policy installed: the node's operator must install one (`hyok-node policy install`)";

const REPLAYED: &str = "the caller's signature was used before (a replay)";

fn deny(why: String) -> pb::ItemError {
    pb::ItemError { code: pb::item_error::Code::PermissionDenied as i32, message: why }
}

/// How long a caller signature is remembered: past this, the freshness check refuses it anyway.
const REMEMBER_MS: u64 = 2 * hyok_evidence::caller::MAX_SKEW_MS + 60_000;

/// Signatures already served (each caller signature is good for one partial per node).
#[derive(Debug, Default)]
struct Seen {
    order: VecDeque<(u64, [u8; 32])>,
    set: HashSet<[u8; 32]>,
}

impl Seen {
    /// Records `tag` at `now_ms`; false if it was seen already.
    fn first_time(&mut self, tag: [u8; 32], now_ms: u64) -> bool {
        while let Some((at, old)) = self.order.front().copied() {
            if now_ms.saturating_sub(at) <= REMEMBER_MS {
                break;
            }
            self.order.pop_front();
            self.set.remove(&old);
        }
        if !self.set.insert(tag) {
            return false;
        }
        self.order.push_back((now_ms, tag));
        true
    }
}

/// A policy in force: compiled, its digest, and its redacted file form (for `policy show`).
type InForce = (Arc<Policy>, [u8; 32], PolicyFile);

/// The policy in force and the signatures seen.
#[derive(Debug, Default)]
pub struct Evidence {
    policy: RwLock<Option<InForce>>,
    seen: Mutex<Seen>,
}

/// The JSON the node stores for `file`, and its digest.
fn encode(file: &PolicyFile) -> Result<(zeroize::Zeroizing<Vec<u8>>, [u8; 32]), NodeError> {
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(file).map_err(|_| NodeError::Internal)?);
    let digest = crate::node::sha256(&bytes);
    Ok((bytes, digest))
}

impl Evidence {
    /// The policy a store holds, compiled (none if the operator never installed one).
    ///
    /// # Errors
    /// If the stored policy does not decode or compile.
    pub fn load(store: &hyok_store::Store) -> Result<Self, NodeError> {
        let evidence = Evidence::default();
        if let Some(bytes) = store.policy()? {
            let file: PolicyFile = serde_json::from_slice(&bytes).map_err(|e| {
                tracing::error!(error = %e, "the stored evidence policy does not decode");
                NodeError::Internal
            })?;
            let policy = Policy::compile(&file).map_err(|e| {
                tracing::error!(error = %e, "the stored evidence policy does not compile");
                NodeError::Internal
            })?;
            let digest = crate::node::sha256(&bytes);
            *evidence.policy.write().map_err(|_| NodeError::Internal)? =
                Some((Arc::new(policy), digest, file.redacted()));
        }
        Ok(evidence)
    }

    /// The policy in force, secrets redacted, and its digest.
    pub fn shown(&self) -> Option<([u8; 32], PolicyFile)> {
        self.policy.read().ok().and_then(|p| p.as_ref().map(|(_, d, f)| (*d, f.clone())))
    }
}

/// Stores `file` in a stopped node's store (checked, sealed, flushed) and audits it; returns
/// its digest.
///
/// # Errors
/// If the policy does not compile or cannot be stored.
pub fn store_policy(store: &hyok_store::Store, file: &PolicyFile) -> Result<[u8; 32], NodeError> {
    Policy::compile(file).map_err(|e| NodeError::Invalid(format!("the policy: {e}")))?;
    let (bytes, digest) = encode(file)?;
    store.put_policy(&bytes)?;
    Ok(digest)
}

impl Node {
    /// Judges one request by its evidence, against this node's policy. The refusal says why
    /// (never a secret). A grant for a single-use signature must be [`Node::consume`]d right
    /// before the node computes: a refusal for another reason (a PENDING version, a disabled
    /// key) does not use it up.
    pub(crate) fn authorize(
        &self,
        request: &Request<'_>,
        evidence: Option<&pb::Evidence>,
    ) -> Result<Grant, pb::ItemError> {
        let policy = {
            let slot = self.evidence().policy.read().map_err(|_| deny("policy lock poisoned".into()))?;
            match slot.as_ref() {
                Some((p, _, _)) => p.clone(),
                None => return Err(deny(NO_POLICY.into())),
            }
        };
        let grant = policy.authorize(request, evidence, SystemTime::now()).map_err(|Denied(why)| deny(why))?;
        if let Some(tag) = grant.once {
            let seen = self.evidence().seen.lock().map_err(|_| deny("replay cache lock poisoned".into()))?;
            if seen.set.contains(&tag) {
                return Err(deny(REPLAYED.into()));
            }
        }
        Ok(grant)
    }

    /// Uses up a single-use grant: refused if another request used it first.
    pub(crate) fn consume(&self, grant: &Grant) -> Result<(), pb::ItemError> {
        let Some(tag) = grant.once else { return Ok(()) };
        let mut seen = self.evidence().seen.lock().map_err(|_| deny("replay cache lock poisoned".into()))?;
        if seen.first_time(tag, crate::node::now_ms()) { Ok(()) } else { Err(deny(REPLAYED.into())) }
    }

    /// Installs (or replaces) this node's evidence policy: checked, stored sealed (flushed),
    /// audited as `policy:install` with its digest, then in force. Only the node's own operator
    /// reaches this (the operator socket); no gRPC call does.
    pub fn install_policy(&self, file: &PolicyFile, caller: &str) -> Result<[u8; 32], NodeError> {
        let policy = Policy::compile(file).map_err(|e| NodeError::Invalid(format!("the policy: {e}")))?;
        let digest = store_policy(self.store(), file)?;
        self.audit(&[self.event("", 0, "policy:install", &hex::encode(digest), caller).with_digest(&digest)])?;
        *self.evidence().policy.write().map_err(|_| NodeError::Internal)? =
            Some((Arc::new(policy), digest, file.redacted()));
        tracing::warn!(digest = hex::encode(digest), caller, "evidence policy installed by this node's operator");
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_seen_once_and_forgotten_only_after_the_window() {
        let mut seen = Seen::default();
        assert!(seen.first_time([1; 32], 1_000));
        assert!(!seen.first_time([1; 32], 2_000));
        assert!(seen.first_time([2; 32], 2_000));
        // Long after, both are forgotten (the freshness check refuses such signatures anyway).
        assert!(seen.first_time([1; 32], 1_000 + REMEMBER_MS + 1));
        assert!(!seen.first_time([1; 32], 1_000 + REMEMBER_MS + 2));
    }
}
