//! `ImportRsaKey`: every node stores its sealed share PENDING; only if all of them did, every
//! node commits. Otherwise every node drops the version and nothing is usable.

use crate::error::CoordError;
use crate::fanout::{self, Ask, ask_every, describe};
use crate::metadata::{Rsa, flatten, read_states};
use crate::vault::Vault;
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::RsaPublicPackage;
use hyok_threshold::rsa::seal::SealedRsaShare;
use hyok_threshold::{NodeId, Wire};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// An import gets more time than a single operation (every node opens and stores a share).
const IMPORT_BUDGET: Duration = Duration::from_secs(30);

impl Vault {
    /// `ImportRsaKey`: all or nothing across every node.
    pub async fn import_rsa_key(&self, req: pb::ImportRsaKeyRequest) -> Result<pb::RsaKeyInfo, CoordError> {
        let deadline = Instant::now() + IMPORT_BUDGET;
        hyok_proto::validate_key_id(&req.name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        if req.version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        let package = RsaPublicPackage::from_bytes(&req.public_package)
            .map_err(|_| CoordError::Invalid("malformed RSA public package".into()))?;
        let n = self.pool.all().len();
        if usize::from(package.threshold()) != self.pool.threshold() || usize::from(package.nodes()) != n {
            return Err(CoordError::Invalid(format!(
                "the package is {}-of-{}; this cluster is {}-of-{n}",
                package.threshold(),
                package.nodes(),
                self.pool.threshold()
            )));
        }
        let mut sealed: HashMap<NodeId, Vec<u8>> = HashMap::new();
        for share in &req.shares {
            let id = u16::try_from(share.node_id).ok().and_then(|i| NodeId::new(i).ok());
            let Some(id) = id.filter(|id| self.pool.get(*id).is_some()) else {
                return Err(CoordError::Invalid(format!("share for unknown node {}", share.node_id)));
            };
            SealedRsaShare::from_bytes(&share.sealed)
                .map_err(|_| CoordError::Invalid(format!("malformed sealed share for node {}", id.get())))?;
            if sealed.insert(id, share.sealed.clone()).is_some() {
                return Err(CoordError::Invalid(format!("two shares for node {}", id.get())));
            }
        }
        if sealed.len() != n {
            return Err(CoordError::Invalid(format!(
                "one sealed share per node is needed ({n}), got {}",
                sealed.len()
            )));
        }
        let _one_at_a_time = tokio::time::timeout_at(deadline, self.rsa_import.lock())
            .await
            .map_err(|_| CoordError::Unavailable("another RSA import is in progress".into()))?;
        // A version held ACTIVE anywhere exists (PENDING leftovers of a failed import do not).
        let states = read_states::<Rsa>(&self.pool, Ask::EVERY_STATE, Some(&req.name), deadline).await;
        let highest = flatten::<Rsa>(&states)
            .iter()
            .flat_map(|(_, s)| s.versions.iter().filter(|v| v.active).map(|v| v.version))
            .max()
            .unwrap_or(0);
        if req.version <= highest {
            return Err(CoordError::Exists(format!("RSA key {} already has version {highest}", req.name)));
        }

        // The dealer's signature travels to every node, which checks it against its own policy.
        let evidence = crate::vault::required(req.evidence.as_ref())?.clone();
        let sealed = Arc::new(sealed);
        let stored = ask_every(&self.pool, Ask::EVERY, deadline, |node| {
            let message = pb::RsaStoreRequest {
                name: req.name.clone(),
                version: req.version,
                public_package: req.public_package.clone(),
                sealed_share: sealed.get(&node.id).cloned().unwrap_or_default(),
                request_id: req.request_id.clone(),
                evidence: Some(evidence.clone()),
            };
            async move { node.client().rsa_store(fanout::request(message, deadline)).await.map(|_| ()) }
        })
        .await;
        let failed = stored.len() < n || stored.iter().any(|(_, r)| r.is_err());
        let commit = !failed;
        let committed = ask_every(&self.pool, Ask::EVERY, deadline, |node| {
            let message = pb::RsaCommitRequest {
                name: req.name.clone(),
                version: req.version,
                commit,
                request_id: req.request_id.clone(),
            };
            async move { node.client().rsa_commit(fanout::request(message, deadline)).await.map(|_| ()) }
        })
        .await;
        self.rsa_metadata.invalidate(&req.name);
        if failed {
            let detail = describe(&stored);
            let any = |code: tonic::Code| stored.iter().any(|(_, r)| matches!(r, Err(s) if s.code() == code));
            return Err(if any(tonic::Code::AlreadyExists) {
                CoordError::Exists(format!("RSA key {}/{} already exists: {detail}", req.name, req.version))
            } else if any(tonic::Code::InvalidArgument) {
                CoordError::Invalid(format!("a node refused its share: {detail}"))
            } else {
                CoordError::Unavailable(format!("every node must store its share; aborted: {detail}"))
            });
        }
        let ok = committed.iter().filter(|(_, r)| r.is_ok()).count();
        if ok < n {
            tracing::warn!(
                name = req.name,
                version = req.version,
                detail = describe(&committed),
                "RSA commit missed nodes"
            );
        }
        if ok < self.pool.threshold() {
            return Err(CoordError::Unavailable(format!(
                "committed on {ok} nodes, {} needed: {}",
                self.pool.threshold(),
                describe(&committed)
            )));
        }
        let view = self.rsa_metadata.refresh(&self.pool, &req.name, deadline).await?;
        Ok(self.rsa_info(&view))
    }
}
