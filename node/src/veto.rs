//! The sovereign veto, as node logic: this node's operator refuses a key name on this node
//! alone, and only they lift it. Reached only through the node-local operator endpoint
//! ([`crate::operator`]), never through the Node gRPC service, so no cluster certificate — the
//! coordinator's, an admin's, the CA's — can set or clear it.
//!
//! A veto is its own record in the store (apart from the admin's `enabled` flag), written and
//! flushed, then audited (`veto` / `lift`, the reason as the request id), before the operator
//! hears back. EC partials see it through the key cache's policy (the same change counter as
//! an admin disable, so a read racing the veto cannot cache the unvetoed policy); RSA partials
//! read it from the store on every request.

use crate::node::{Node, NodeError, now_ms};
use hyok_store::{MAX_VETO_REASON, Veto};

impl Node {
    /// Vetoes the key name `key_id` (its EC key and its threshold RSA key alike) on this node.
    /// Returns the veto in force (an earlier one, if the name was already vetoed).
    /// [`NodeError::NotFound`] if no key of that name is on this node.
    pub fn veto(&self, key_id: &str, reason: &str, caller: &str) -> Result<Veto, NodeError> {
        hyok_proto::validate_key_id(key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        if reason.len() > MAX_VETO_REASON || reason.chars().any(char::is_control) {
            return Err(NodeError::Invalid(format!("a veto reason is one line of at most {MAX_VETO_REASON} bytes")));
        }
        if self.store().ec().key(key_id)?.is_none() && self.store().rsa().key(key_id)?.is_none() {
            return Err(NodeError::NotFound(format!("no key {key_id} on this node")));
        }
        let veto = self.keys().veto(self.store(), key_id, reason, now_ms())?;
        self.audit(&[self.event(key_id, 0, "veto", reason, caller)])?;
        tracing::warn!(key_id, reason, caller, "key vetoed by this node's operator");
        Ok(veto)
    }

    /// Lifts this node's veto of `key_id`; returns the veto lifted. [`NodeError::NotFound`] if
    /// the name is not vetoed here. The admin's flag is unchanged: a key disabled by the admin
    /// stays disabled.
    pub fn lift(&self, key_id: &str, caller: &str) -> Result<Veto, NodeError> {
        hyok_proto::validate_key_id(key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        let lifted = self
            .keys()
            .lift(self.store(), key_id)?
            .ok_or_else(|| NodeError::NotFound(format!("{key_id} is not vetoed on this node")))?;
        self.audit(&[self.event(key_id, 0, "lift", "", caller)])?;
        tracing::warn!(key_id, caller, "veto lifted by this node's operator");
        Ok(lifted)
    }

    /// Every veto on this node, by key name.
    pub fn vetoes(&self) -> Result<Vec<(String, Veto)>, NodeError> {
        Ok(self.store().vetoes()?)
    }
}
