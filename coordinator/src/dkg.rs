//! CreateKey and RotateKey: the coordinator relays a DKG between every node.
//!
//! The coordinator only moves opaque, signed packages (sub-shares inside are encrypted to their
//! recipient), so it learns nothing secret. Every configured node must take part; if one cannot,
//! the run is aborted on all of them and nothing becomes usable. Shares are stored PENDING by
//! `DkgFinish`, and made ACTIVE by `DkgCommit` only after every node reported the same public
//! key package.

use crate::error::CoordError;
use crate::fanout::{self, Ask, all_ok, ask_every};
use crate::pool::{NodeHandle, Pool};
use hyok_proto::v1 as pb;
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;
use tonic::Status;

/// What to create.
#[derive(Debug, Clone)]
pub struct DkgRequest {
    /// The key.
    pub key_id: String,
    /// The version to create.
    pub version: u32,
    /// Usages (`KeyUsage` values).
    pub usages: Vec<i32>,
    /// Logged by the nodes.
    pub request_id: String,
}

/// Calls `f` on every node concurrently; all must succeed (answers in configuration order).
async fn on_all<T, F, Fut>(pool: &Pool, deadline: Instant, what: &str, f: F) -> Result<Vec<T>, CoordError>
where
    T: Send + 'static,
    F: Fn(Arc<NodeHandle>) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    all_ok(ask_every(pool, Ask::EVERY, deadline, f).await, what)
}

/// Runs the DKG for `req` across every node of `pool`; returns the agreed public key package.
pub async fn run(pool: &Pool, req: DkgRequest, deadline: Instant) -> Result<Vec<u8>, CoordError> {
    let threshold = pool.threshold() as u32;
    let identities = on_all(pool, deadline, "reaching every node", |node| async move {
        node.client().get_identity(fanout::request(pb::GetIdentityRequest {}, deadline)).await.map(|r| r.into_inner())
    })
    .await?;
    let participants: Vec<pb::Participant> = identities
        .iter()
        .map(|id| pb::Participant {
            node_id: id.node_id,
            identity_public_key: id.identity_public_key.clone(),
            key_bundle: id.key_bundle.clone(),
        })
        .collect();
    let mut session_id = vec![0u8; 32];
    rand::rng().fill_bytes(&mut session_id);

    let result = rounds(pool, &req, threshold, participants, &session_id, deadline).await;
    match result {
        Ok(package) => {
            let sid = session_id.clone();
            // Commit on every node. A node that fails here keeps its share PENDING (never used).
            on_all(pool, deadline, "committing the key", move |node| {
                let sid = sid.clone();
                async move {
                    node.client().dkg_commit(fanout::request(pb::DkgCommitRequest { session_id: sid }, deadline)).await
                }
            })
            .await?;
            tracing::info!(key_id = req.key_id, version = req.version, "key version created by DKG on every node");
            Ok(package)
        }
        Err(e) => {
            // Best effort: the nodes also drop stale sessions and PENDING versions on their own.
            let sid = session_id.clone();
            let abort_deadline = Instant::now() + std::time::Duration::from_secs(2);
            let _ = on_all(pool, abort_deadline, "aborting", move |node| {
                let sid = sid.clone();
                async move {
                    node.client()
                        .dkg_abort(fanout::request(pb::DkgAbortRequest { session_id: sid }, abort_deadline))
                        .await
                }
            })
            .await;
            tracing::warn!(key_id = req.key_id, version = req.version, error = %e, "DKG aborted");
            Err(e)
        }
    }
}

async fn rounds(
    pool: &Pool,
    req: &DkgRequest,
    threshold: u32,
    participants: Vec<pb::Participant>,
    session_id: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, CoordError> {
    let round1 = pb::DkgRound1Request {
        session_id: session_id.to_vec(),
        key_id: req.key_id.clone(),
        version: req.version,
        threshold,
        participants,
        usages: req.usages.clone(),
        request_id: req.request_id.clone(),
    };
    let packages1: Vec<Vec<u8>> = on_all(pool, deadline, "DKG round 1", |node| {
        let r = round1.clone();
        async move { node.client().dkg_round1(fanout::request(r, deadline)).await.map(|r| r.into_inner().package) }
    })
    .await?;
    let round2 = pb::DkgRound2Request { session_id: session_id.to_vec(), packages: packages1 };
    let packages2: Vec<Vec<u8>> = on_all(pool, deadline, "DKG round 2", |node| {
        let r = round2.clone();
        async move { node.client().dkg_round2(fanout::request(r, deadline)).await.map(|r| r.into_inner().package) }
    })
    .await?;
    let finish = pb::DkgFinishRequest { session_id: session_id.to_vec(), packages: packages2 };
    let finished: Vec<pb::DkgFinishResponse> = on_all(pool, deadline, "DKG finish", |node| {
        let r = finish.clone();
        async move { node.client().dkg_finish(fanout::request(r, deadline)).await.map(|r| r.into_inner()) }
    })
    .await?;
    let first = finished.first().ok_or_else(|| CoordError::Internal("no nodes".into()))?;
    if let Some((node, _)) =
        pool.all().iter().zip(&finished).find(|(_, f)| f.public_key_package != first.public_key_package)
    {
        return Err(CoordError::Internal(format!("node {} derived a different public key package", node.id.get())));
    }
    let disqualified: Vec<u32> = finished.iter().flat_map(|f| f.disqualified.iter().copied()).collect();
    if !disqualified.is_empty() {
        tracing::warn!(key_id = req.key_id, ?disqualified, "DKG excluded dealers (their shares still count)");
    }
    Ok(first.public_key_package.clone())
}
