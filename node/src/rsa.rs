//! The node's threshold RSA operations: store a sealed dealer share (PENDING), commit or drop
//! it, serve partial decryptions under this node's own policy, and report key state.
//!
//! A share arrives sealed to this node's seal key (published in its signed key bundle; never
//! the identity or DKG transport key) and bound to (name, version, node id,
//! public package); it is opened here, checked, re-sealed at rest under the node seal key and
//! flushed before the answer. Every partial is audited (flushed) before it is returned.

use crate::node::{Node, NodeError, now_ms};
use hyok_evidence::policy::Request;
use hyok_proto::v1 as pb;
use hyok_store::Usages;
use hyok_threshold::Wire;
use hyok_threshold::rsa::seal::{SealedRsaShare, ShareBinding};
use hyok_threshold::rsa::{RsaKeyShare, RsaPublicPackage, partial};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// One usable RSA key version: this node's share and the public package.
#[derive(Debug)]
pub struct LoadedRsaVersion {
    /// This node's share `s_i` (zeroized when the last reference drops).
    pub share: RsaKeyShare,
    /// `(N, e, t, n)`.
    pub package: RsaPublicPackage,
}

/// Cache of unsealed RSA versions, per share generation. Policy (enabled) is read from the
/// store on every partial, so a disable takes effect at once.
#[derive(Debug, Default)]
pub struct RsaKeyCache {
    versions: RwLock<HashMap<(String, u32, u32), Arc<LoadedRsaVersion>>>,
}

impl RsaKeyCache {
    fn get(&self, name: &str, version: u32, generation: u32) -> Option<Arc<LoadedRsaVersion>> {
        self.versions.read().ok()?.get(&(name.to_owned(), version, generation)).cloned()
    }
    fn put(&self, name: &str, version: u32, generation: u32, loaded: Arc<LoadedRsaVersion>) {
        if let Ok(mut v) = self.versions.write() {
            v.insert((name.to_owned(), version, generation), loaded);
        }
    }
    /// Forgets every generation of `name`/`version` (dropped, or reshared).
    pub(crate) fn forget(&self, name: &str, version: u32) {
        let mut v = self.versions.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        v.retain(|(n, ver, _), _| !(n == name && *ver == version));
    }
    /// Forgets every cached version (the node left the cluster).
    pub(crate) fn clear(&self) {
        self.versions.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

fn check_name_version(name: &str, version: u32) -> Result<(), NodeError> {
    hyok_proto::validate_key_id(name).map_err(|e| NodeError::Invalid(e.to_owned()))?;
    if version == 0 {
        return Err(NodeError::Invalid("version must be at least 1".into()));
    }
    Ok(())
}

impl Node {
    /// `RsaStore`: opens this node's sealed share of `name`/`version` with the seal secret,
    /// checks it is this node's share of the given package, and stores it PENDING (flushed,
    /// audited). A PENDING leftover of an aborted ceremony is replaced; an ACTIVE version is
    /// [`NodeError::Exists`].
    pub fn rsa_store(&self, req: &pb::RsaStoreRequest, caller: &str) -> Result<pb::RsaStoreResponse, NodeError> {
        check_name_version(&req.name, req.version)?;
        let package = RsaPublicPackage::from_bytes(&req.public_package)
            .map_err(|_| NodeError::Invalid("malformed RSA public package".into()))?;
        let agreed = match self.manifest() {
            None => Err(crate::manifest::NO_MANIFEST.to_owned()),
            Some(m) => crate::manifest::check_rsa(&m, package.threshold(), package.nodes(), self.id()),
        };
        if let Err(why) = agreed {
            self.audit(&[self.event(&req.name, req.version, "refused:rsa:store:manifest", &req.request_id, caller)])?;
            tracing::warn!(name = req.name, caller, why, "RSA share refused by the cluster manifest");
            return Err(NodeError::Manifest(why));
        }
        // Only a dealer this node's operator lists stores a key: the coordinator relays the
        // ceremony but cannot deal a key of its own.
        let request = Request::RsaImport { name: &req.name, version: req.version, package: &req.public_package };
        let grant = match self.authorize(&request, req.evidence.as_ref()) {
            Ok(grant) => grant,
            Err(e) => {
                let op = "refused:rsa:store:permission_denied";
                self.audit(&[self.event(&req.name, req.version, op, &req.request_id, caller)])?;
                tracing::warn!(name = req.name, caller, why = e.message, "RSA share refused: not a listed dealer's");
                return Err(NodeError::Denied(e.message));
            }
        };
        let sealed = SealedRsaShare::from_bytes(&req.sealed_share)
            .map_err(|_| NodeError::Invalid("malformed sealed RSA share".into()))?;
        let binding = ShareBinding::new(&req.name, req.version, self.id(), &package);
        let share = sealed.open(self.secrets().seal(), &binding, &package).map_err(|_| {
            NodeError::Invalid("sealed RSA share does not open for this node's seal key, key and version".into())
        })?;
        // The share must work with the package: a partial of a fixed test value computes.
        let mut probe = vec![0u8; package.public_key().size()];
        if let Some(last) = probe.last_mut() {
            *last = 2;
        }
        partial::evaluate(&share, &package, &probe)
            .map_err(|_| NodeError::Invalid("RSA share does not fit its package".into()))?;
        match self.store().rsa().version(&req.name, req.version)? {
            Some(v) if v.active => {
                return Err(NodeError::Exists(format!("RSA key {}/{} already exists", req.name, req.version)));
            }
            Some(_) => {
                self.store().rsa().remove_pending(&req.name, req.version)?;
                self.rsa_keys().forget(&req.name, req.version);
            }
            None => {}
        }
        self.consume(&grant).map_err(|e| NodeError::Denied(e.message))?;
        self.store().rsa().put_pending(
            &req.name,
            req.version,
            Usages(Usages::DECRYPT),
            &share.to_secret_bytes(),
            &package.to_bytes(),
            now_ms(),
        )?;
        let who = format!("{caller} for {}", grant.principal);
        self.audit(&[self.event(&req.name, req.version, "rsa:store", &req.request_id, &who)])?;
        Ok(pb::RsaStoreResponse {})
    }

    /// `RsaCommit`: PENDING → ACTIVE (`commit`), or drop the PENDING share. Flushed, audited.
    /// Dropping an ACTIVE version is [`NodeError::Exists`]; dropping a missing one is `Ok`.
    pub fn rsa_commit(&self, req: &pb::RsaCommitRequest, caller: &str) -> Result<pb::RsaCommitResponse, NodeError> {
        check_name_version(&req.name, req.version)?;
        if req.commit {
            self.store().rsa().activate(&req.name, req.version)?;
        } else {
            if self.store().rsa().version(&req.name, req.version)?.is_some_and(|v| v.active) {
                return Err(NodeError::Exists(format!("RSA key {}/{} is active", req.name, req.version)));
            }
            self.store().rsa().remove_pending(&req.name, req.version)?;
            self.rsa_keys().forget(&req.name, req.version);
        }
        let op = if req.commit { "rsa:commit" } else { "rsa:abort" };
        self.audit(&[self.event(&req.name, req.version, op, &req.request_id, caller)])?;
        Ok(pb::RsaCommitResponse {})
    }

    /// `RsaPartial`: `x_i = c^(2Δ·s_i) mod N` if the key is enabled here, not vetoed by this
    /// node's operator, and the version is ACTIVE; audited (flushed) before it is returned.
    pub fn rsa_partial(&self, req: &pb::RsaPartialRequest, caller: &str) -> Result<pb::RsaPartialResponse, NodeError> {
        let computed = (|| {
            check_name_version(&req.name, req.version)?;
            let request = Request::RsaDecrypt { name: &req.name, version: req.version, ciphertext: &req.ciphertext };
            let grant = self.authorize(&request, req.evidence.as_ref()).map_err(|e| NodeError::Denied(e.message))?;
            let meta = self
                .store()
                .rsa()
                .key(&req.name)?
                .ok_or_else(|| NodeError::NotFound(format!("RSA key {}", req.name)))?;
            if self.store().vetoed(&req.name)?.is_some() {
                return Err(NodeError::Disabled(format!(
                    "RSA key {} is vetoed on this node by its operator",
                    req.name
                )));
            }
            if !meta.enabled {
                return Err(NodeError::Disabled(format!("RSA key {} is disabled on this node", req.name)));
            }
            let loaded = self.rsa_loaded(&req.name, req.version, req.generation)?;
            self.consume(&grant).map_err(|e| NodeError::Denied(e.message))?;
            partial::evaluate(&loaded.share, &loaded.package, &req.ciphertext)
                .map(|x| (x, grant))
                .map_err(|_| NodeError::Invalid("ciphertext must be as long as the modulus and below it".into()))
        })();
        match computed {
            Ok((x, grant)) => {
                let digest = crate::node::sha256(&req.ciphertext);
                let who = format!("{caller} for {}", grant.principal);
                self.audit(&[self
                    .event(&req.name, req.version, "rsa:partial", &req.request_id, &who)
                    .with_digest(&digest)])?;
                Ok(pb::RsaPartialResponse { partial: x.to_bytes() })
            }
            Err(e) => {
                let operation = format!("refused:rsa:partial:{}", e.kind());
                // A refusal that cannot be audited is still a refusal.
                let digest = crate::node::sha256(&req.ciphertext);
                let _ = self.audit(&[self
                    .event(&req.name, req.version, &operation, &req.request_id, caller)
                    .with_digest(&digest)]);
                Err(e)
            }
        }
    }

    fn rsa_loaded(
        &self,
        name: &str,
        version: u32,
        generation: Option<u32>,
    ) -> Result<Arc<LoadedRsaVersion>, NodeError> {
        let generation = match generation {
            Some(g) => g,
            None => self.store().rsa().generation(name, version)?,
        };
        if let Some(v) = self.rsa_keys().get(name, version, generation) {
            return Ok(v);
        }
        let shared = self.store().rsa().share_of(name, version, Some(generation));
        let (share, package, _) = shared.map_err(|e| match e {
            hyok_store::Error::NotFound(_) => NodeError::NotFound(format!("RSA key version {name}/{version}")),
            hyok_store::Error::Pending(_) => {
                NodeError::Precondition(format!("RSA key version {name}/{version} is pending"))
            }
            other => NodeError::from(other),
        })?;
        let share = RsaKeyShare::from_secret_bytes(&share).map_err(|_| {
            tracing::error!(name, version, "stored RSA share does not decode");
            NodeError::Internal
        })?;
        let package = RsaPublicPackage::from_bytes(&package).map_err(|_| {
            tracing::error!(name, version, "stored RSA package does not decode");
            NodeError::Internal
        })?;
        let loaded = Arc::new(LoadedRsaVersion { share, package });
        self.rsa_keys().put(name, version, generation, loaded.clone());
        Ok(loaded)
    }

    /// This node's view of one RSA key (`enabled` effective, as in [`Node::key_state`]).
    pub fn rsa_key_state(&self, name: &str) -> Result<pb::NodeRsaKeyState, NodeError> {
        hyok_proto::validate_key_id(name).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        let meta = self.store().rsa().key(name)?.ok_or_else(|| NodeError::NotFound(format!("RSA key {name}")))?;
        let vetoed = self.store().vetoed(name)?.is_some();
        let mut versions = Vec::new();
        for v in self.store().rsa().versions(name)? {
            let (generation, previous, next) = crate::reshare::generations(self.store().rsa(), name, v.version)?;
            versions.push(pb::NodeRsaKeyVersion {
                version: v.version,
                public_package: v.package,
                active: v.active,
                created_at_ms: v.created_at_ms,
                generation,
                previous,
                next,
            });
        }
        Ok(pb::NodeRsaKeyState { name: name.to_owned(), enabled: meta.enabled && !vetoed, versions, vetoed })
    }

    /// Every RSA key on this node.
    pub fn rsa_key_states(&self) -> Result<Vec<pb::NodeRsaKeyState>, NodeError> {
        self.store().rsa().list()?.iter().map(|k| self.rsa_key_state(k)).collect()
    }
}
