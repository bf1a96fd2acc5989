//! CreateKey and RotateKey: the coordinator relays a DKG between every node.
//!
//! The coordinator only moves opaque, signed packages (sub-shares inside are encrypted to their
//! recipient), so it learns nothing secret. Every reachable node takes part, at least `t` of them:
//! a node that is down gets its share by a reshare when it is back (the coordinator's repair
//! loop). If a participant fails during the run, it is aborted on all of them and nothing
//! becomes usable. Shares are stored PENDING by `DkgFinish`, and made ACTIVE by `DkgCommit` only
//! after every participant reported the same public key package.

use crate::error::CoordError;
use crate::fanout::{self, Ask, ask_every, on_each};
use crate::pool::{NodeHandle, Pool};
use hyok_proto::v1 as pb;
use rand::Rng;
use std::sync::Arc;
use tokio::time::Instant;

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

/// Runs the DKG for `req` across every reachable node of `pool` (at least `t`); returns the
/// agreed public key package.
pub async fn run(pool: &Pool, req: DkgRequest, deadline: Instant) -> Result<Vec<u8>, CoordError> {
    let threshold = pool.threshold() as u32;
    // A short look at who is there: a node that does not answer now is left out, not waited for.
    let look = Instant::now() + std::time::Duration::from_secs(2);
    let answers = ask_every(pool, Ask::EVERY, look.min(deadline), |node| async move {
        node.client().get_identity(fanout::request(pb::GetIdentityRequest {}, deadline)).await.map(|r| r.into_inner())
    })
    .await;
    let missing = fanout::describe(&answers);
    let reachable: Vec<(Arc<NodeHandle>, pb::GetIdentityResponse)> =
        answers.into_iter().filter_map(|(id, r)| Some((pool.get(id)?.clone(), r.ok()?))).collect();
    if reachable.len() < pool.threshold() {
        return Err(CoordError::Unavailable(format!(
            "{} reachable nodes are fewer than t = {threshold}: {missing}",
            reachable.len()
        )));
    }
    if reachable.len() < pool.all().len() {
        tracing::warn!(
            key_id = req.key_id,
            missing,
            "creating without the nodes that are down; they get shares on return"
        );
    }
    let nodes: Vec<Arc<NodeHandle>> = reachable.iter().map(|(n, _)| n.clone()).collect();
    let participants: Vec<pb::Participant> = reachable
        .iter()
        .map(|(_, id)| pb::Participant {
            node_id: id.node_id,
            identity_public_key: id.identity_public_key.clone(),
            key_bundle: id.key_bundle.clone(),
        })
        .collect();
    let mut session_id = vec![0u8; 32];
    rand::rng().fill_bytes(&mut session_id);

    let result = rounds(&nodes, &req, threshold, participants, &session_id, deadline).await;
    match result {
        Ok(package) => {
            let sid = session_id.clone();
            // Commit on every node. A node that fails here keeps its share PENDING (never used).
            on_each(&nodes, deadline, "committing the key", move |node| {
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
            abort(&nodes, &session_id).await;
            tracing::warn!(key_id = req.key_id, version = req.version, error = %e, "DKG aborted");
            Err(e)
        }
    }
}

async fn rounds(
    nodes: &[Arc<NodeHandle>],
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
        reshare: None,
    };
    let packages1: Vec<Vec<u8>> = on_each(nodes, deadline, "DKG round 1", |node| {
        let r = round1.clone();
        async move { node.client().dkg_round1(fanout::request(r, deadline)).await.map(|r| r.into_inner().package) }
    })
    .await?;
    let round2 = pb::DkgRound2Request { session_id: session_id.to_vec(), packages: packages1 };
    let packages2: Vec<Vec<u8>> = on_each(nodes, deadline, "DKG round 2", |node| {
        let r = round2.clone();
        async move { node.client().dkg_round2(fanout::request(r, deadline)).await.map(|r| r.into_inner().package) }
    })
    .await?;
    let finish = pb::DkgFinishRequest { session_id: session_id.to_vec(), packages: packages2 };
    let finished: Vec<pb::DkgFinishResponse> = on_each(nodes, deadline, "DKG finish", |node| {
        let r = finish.clone();
        async move { node.client().dkg_finish(fanout::request(r, deadline)).await.map(|r| r.into_inner()) }
    })
    .await?;
    let first = finished.first().ok_or_else(|| CoordError::Internal("no nodes".into()))?;
    if let Some((node, _)) = nodes.iter().zip(&finished).find(|(_, f)| f.public_key_package != first.public_key_package)
    {
        return Err(CoordError::Internal(format!("node {} derived a different public key package", node.id.get())));
    }
    let disqualified: Vec<u32> = finished.iter().flat_map(|f| f.disqualified.iter().copied()).collect();
    if !disqualified.is_empty() {
        tracing::warn!(key_id = req.key_id, ?disqualified, "DKG excluded dealers (their shares still count)");
    }
    Ok(first.public_key_package.clone())
}

/// Aborts session `session_id` on `nodes`, best effort, within 2 s (the nodes also drop stale
/// sessions and PENDING versions on their own). For a DKG and a reshare alike.
pub async fn abort(nodes: &[Arc<NodeHandle>], session_id: &[u8]) {
    let sid = session_id.to_vec();
    let abort_deadline = Instant::now() + std::time::Duration::from_secs(2);
    let _ = on_each(nodes, abort_deadline, "aborting", move |node| {
        let sid = sid.clone();
        async move {
            node.client().dkg_abort(fanout::request(pb::DkgAbortRequest { session_id: sid }, abort_deadline)).await
        }
    })
    .await;
}
