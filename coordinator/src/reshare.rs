//! Resharing one key version, of either family (EC keys, threshold RSA keys): repair of a node
//! that lacks it (wiped, replaced, down at creation, or left with a PENDING leftover) and
//! proactive refresh are the same run.
//!
//! The coordinator relays, as for a DKG: the old holders of the trusted generation deal their
//! shares afresh (`DkgRound1` with `reshare` set), the receivers check and complain
//! (`DkgRound2`), finish (`DkgFinish`, the new share stored PENDING as the next generation) and
//! commit (`DkgCommit`). Only then, after a grace period in which requests that chose the old
//! generation complete, `FinalizeReshare` drops the old generation everywhere: from then on no
//! old share exists. A failure before every receiver committed aborts the run on all of them;
//! the old generation is untouched and keeps serving.
//!
//! A threshold RSA version's receivers are always every node (its shares are dealt for ids
//! `1..=n`), so it is reshared only when every node is reachable.
//!
//! Receivers are the reachable nodes whose identity key at least `t − 1` other nodes' manifests
//! pin (with its own, `t`: a node with a new identity joins once its operators accepted it);
//! each node checks the run against its own manifest regardless.

use crate::error::CoordError;
use crate::fanout::{self, Answers, Ask, ask_every};
use crate::metadata::{Family, View, flatten, merge, read_states};
use crate::pool::{NodeHandle, Pool};
use hyok_proto::v1 as pb;
use hyok_threshold::{Manifest, NodeId, Wire};
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long requests that chose the old generation get before it is dropped.
pub const FINALIZE_GRACE: Duration = Duration::from_millis(1500);

/// One reshared version.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The key.
    pub key_id: String,
    /// The version.
    pub version: u32,
    /// The generation now trusted.
    pub generation: u32,
    /// The nodes that hold it.
    pub receivers: Vec<u16>,
    /// A threshold RSA key's version.
    pub rsa: bool,
    /// The new generation's public package (wire bytes).
    pub package: Vec<u8>,
}

/// A reachable node with its identity, as the coordinator asks it to take part.
#[derive(Clone)]
pub struct Member {
    handle: Arc<NodeHandle>,
    participant: pb::Participant,
}

impl Member {
    /// Node `handle` as it described itself in `identity`.
    pub fn new(handle: Arc<NodeHandle>, identity: &pb::GetIdentityResponse) -> Self {
        let participant = pb::Participant {
            node_id: identity.node_id,
            identity_public_key: identity.identity_public_key.clone(),
            key_bundle: identity.key_bundle.clone(),
        };
        Member { handle, participant }
    }

    /// Its channel.
    pub fn handle(&self) -> &Arc<NodeHandle> {
        &self.handle
    }
}

/// Who a reshare deals to, at what threshold: the current members at the current t (repair,
/// refresh; committed at once), or a membership change's new members at its t (left pending
/// until the change commits).
pub struct Target<'a> {
    /// The receivers.
    pub receivers: &'a [Member],
    /// The nodes that may deal (those that hold the trusted generation deal).
    pub dealers: &'a [Member],
    /// The new threshold.
    pub threshold: usize,
    /// A membership change's epoch; 0 for none.
    pub epoch: u64,
}

/// The reachable nodes, with their identities, that at least `t − 1` other nodes' manifests pin.
pub async fn members(pool: &Pool, deadline: Instant) -> Vec<Member> {
    let answers = ask_every(pool, Ask::EVERY, deadline, |node| async move {
        node.client().get_identity(fanout::request(pb::GetIdentityRequest {}, deadline)).await.map(|r| r.into_inner())
    })
    .await;
    let identities: Vec<pb::GetIdentityResponse> = answers.into_iter().filter_map(|(_, r)| r.ok()).collect();
    let manifests: Vec<(u32, Manifest)> =
        identities.iter().filter_map(|i| Manifest::from_bytes(&i.manifest).ok().map(|m| (i.node_id, m))).collect();
    let t = pool.threshold();
    identities
        .into_iter()
        .filter(|i| {
            let pinned_by = manifests
                .iter()
                .filter(|(by, m)| {
                    *by != i.node_id
                        && u16::try_from(i.node_id)
                            .ok()
                            .and_then(|id| NodeId::new(id).ok())
                            .and_then(|id| m.identity(id))
                            .is_some_and(|k| k.as_bytes() == i.identity_public_key.as_slice())
                })
                .count();
            pinned_by >= t.saturating_sub(1).max(1)
        })
        .filter_map(|i| {
            let id = NodeId::new(u16::try_from(i.node_id).ok()?).ok()?;
            let handle = pool.get(id)?.clone();
            let participant = pb::Participant {
                node_id: i.node_id,
                identity_public_key: i.identity_public_key,
                key_bundle: i.key_bundle,
            };
            Some(Member { handle, participant })
        })
        .collect()
}

/// Whether `state` (one node's) holds `version` of the trusted view ACTIVE at its trusted
/// generation — with `settled`, as its current share, with no reshare output pending.
fn holds_trusted<F: Family>(state: &F::State, view: &View<F>, version: u32, settled: bool) -> bool {
    let Some(trusted) = view.versions.get(&version) else { return false };
    F::versions(state).any(|v| {
        v.version == version
            && v.active
            && v.generation == trusted.generation
            && v.package == trusted.package_bytes.as_slice()
            && !(settled && (v.next.is_some() || v.replaced))
    })
}

/// The versions of key `key_id` that one of `members` says it lacks at the trusted generation:
/// it answered without them, or answered that it holds nothing of the key. A member that did not
/// answer (slow, down) is not known to lack anything and triggers no reshare; the next pass asks
/// it again.
pub async fn needing_repair<F: Family>(
    pool: &Pool,
    members: &[Member],
    key_id: &str,
    deadline: Instant,
) -> Result<Vec<u32>, CoordError> {
    let states = read_states::<F>(pool, Ask::EVERY_STATE, Some(key_id), deadline).await;
    let answers = flatten::<F>(&states);
    let Some(view) = merge::<F>(key_id, &answers, pool.quorum()) else { return Ok(Vec::new()) };
    let ids: Vec<NodeId> = members.iter().map(|m| m.handle.id).collect();
    Ok(versions_lacking::<F>(&view, &answered_states(&states), &ids))
}

/// The trusted versions of `view` that one of `members` said it lacks (see [`answered_states`]).
fn versions_lacking<F: Family>(
    view: &View<F>,
    answered: &BTreeMap<NodeId, Option<&F::State>>,
    members: &[NodeId],
) -> Vec<u32> {
    view.versions
        .keys()
        .copied()
        .filter(|version| {
            members.iter().any(|m| match answered.get(m) {
                Some(state) => !state.is_some_and(|s| holds_trusted::<F>(s, view, *version, true)),
                None => false,
            })
        })
        .collect()
}

/// What each node that answered said about one key: its state, or `None` for "not found".
/// Nodes whose read failed otherwise are absent.
fn answered_states<S>(states: &Answers<Vec<S>>) -> BTreeMap<NodeId, Option<&S>> {
    states
        .iter()
        .filter_map(|(node, answer)| match answer {
            Ok(held) => Some((*node, held.first())),
            Err(status) if status.code() == tonic::Code::NotFound => Some((*node, None)),
            Err(_) => None,
        })
        .collect()
}

/// Reshares `version` of `key_id` from the reachable holders of its trusted generation to every
/// reachable member. Returns when the new generation is committed on every receiver (the old
/// one is finalized by the caller, after the grace).
pub async fn reshare<F: Family>(
    pool: &Pool,
    key_id: &str,
    version: u32,
    request_id: &str,
    deadline: Instant,
) -> Result<Outcome, CoordError> {
    let t = pool.threshold();
    let members = members(pool, deadline).await;
    if members.len() < t || (F::RSA && members.len() != pool.all().len()) {
        return Err(CoordError::Unavailable(format!(
            "{} reachable members of {}: a reshare needs t = {t}, an RSA key's every node",
            members.len(),
            pool.all().len()
        )));
    }
    let target = Target { receivers: &members, dealers: &members, threshold: t, epoch: 0 };
    let (outcome, session_id) = run::<F>(pool, key_id, version, request_id, deadline, &target).await?;
    fanout::on_each(&handles(&members), deadline, "committing the reshare", move |node| {
        let sid = session_id.clone();
        async move { node.client().dkg_commit(fanout::request(pb::DkgCommitRequest { session_id: sid }, deadline)).await }
    })
    .await?;
    tracing::info!(key_id, version, generation = outcome.generation, receivers = members.len(), "reshare committed");
    Ok(outcome)
}

fn handles(members: &[Member]) -> Vec<Arc<NodeHandle>> {
    members.iter().map(|m| m.handle.clone()).collect()
}

/// One reshare run of `version` of `key_id` to `target`, up to every receiver holding the new
/// generation pending (or, on failure, aborted everywhere): the outcome and the session id to
/// commit (a membership change's runs are committed by the change instead).
pub async fn run<F: Family>(
    pool: &Pool,
    key_id: &str,
    version: u32,
    request_id: &str,
    deadline: Instant,
    target: &Target<'_>,
) -> Result<(Outcome, Vec<u8>), CoordError> {
    let quorum = pool.quorum();
    let states = read_states::<F>(pool, Ask::EVERY_STATE, Some(key_id), deadline).await;
    let answers = flatten::<F>(&states);
    let view = merge::<F>(key_id, &answers, quorum)
        .ok_or_else(|| CoordError::NotFound(format!("no {} {key_id} (held by fewer than {quorum} nodes)", F::WHAT)))?;
    let trusted = view
        .versions
        .get(&version)
        .ok_or_else(|| CoordError::NotFound(format!("no trusted version {version} of {} {key_id}", F::WHAT)))?;
    let by_node: BTreeMap<NodeId, &F::State> = answers.iter().map(|(n, s)| (*n, s)).collect();
    let dealers: Vec<&Member> = target
        .dealers
        .iter()
        .filter(|m| by_node.get(&m.handle.id).is_some_and(|s| holds_trusted(*s, &view, version, false)))
        .collect();
    let old_t = F::threshold(&trusted.package);
    if dealers.len() < old_t {
        return Err(CoordError::Unavailable(format!(
            "{} reachable holders of {key_id}/{version} are fewer than its t = {old_t}",
            dealers.len()
        )));
    }
    // Above every generation any node holds of this version, trusted or not: a reshare that
    // committed on fewer than t nodes left a newer, untrusted one behind.
    let highest = answers
        .iter()
        .flat_map(|(_, s)| {
            F::versions(s).filter(|v| v.version == version).map(|v| v.generation.max(v.next.unwrap_or(0)))
        })
        .max()
        .unwrap_or(trusted.generation)
        .max(trusted.generation);
    let generation = highest
        .checked_add(1)
        .ok_or_else(|| CoordError::Precondition(format!("{key_id}/{version} is at the last generation")))?;
    let mut session_id = vec![0u8; 32];
    rand::rng().fill_bytes(&mut session_id);
    let round1 = pb::DkgRound1Request {
        session_id: session_id.clone(),
        key_id: key_id.to_owned(),
        version,
        threshold: target.threshold as u32,
        participants: target.receivers.iter().map(|m| m.participant.clone()).collect(),
        usages: if F::RSA { vec![pb::KeyUsage::Decrypt as i32] } else { view.usages.clone() },
        request_id: request_id.to_owned(),
        reshare: Some(pb::Reshare {
            dealers: dealers.iter().map(|m| m.participant.clone()).collect(),
            old_package: trusted.package_bytes.clone(),
            generation,
            old_generation: trusted.generation,
            rsa: F::RSA,
            epoch: target.epoch,
        }),
    };
    let receivers = handles(target.receivers);
    let mut everyone: Vec<Arc<NodeHandle>> = receivers.clone();
    for d in &dealers {
        if !everyone.iter().any(|n| n.id == d.handle.id) {
            everyone.push(d.handle.clone());
        }
    }
    let result = rounds(&everyone, &receivers, &dealers, round1, deadline).await;
    let package = match result {
        Ok(package) => package,
        Err(e) => {
            crate::dkg::abort(&everyone, &session_id).await;
            tracing::warn!(key_id, version, error = %e, "reshare aborted; the old generation serves on");
            return Err(e);
        }
    };
    let outcome = Outcome {
        key_id: key_id.to_owned(),
        version,
        generation,
        receivers: receivers.iter().map(|n| n.id.get()).collect(),
        rsa: F::RSA,
        package,
    };
    Ok((outcome, session_id))
}

/// After [`FINALIZE_GRACE`]: every reachable node drops the generations older than `outcome`'s.
/// (The caller waits the grace once for a batch of outcomes.)
pub async fn finalize(pool: &Pool, outcome: &Outcome, request_id: &str, deadline: Instant) -> Result<(), CoordError> {
    let req = pb::FinalizeReshareRequest {
        key_id: outcome.key_id.clone(),
        version: outcome.version,
        generation: outcome.generation,
        request_id: request_id.to_owned(),
        rsa: outcome.rsa,
    };
    let answers = ask_every(pool, Ask::EVERY, deadline, |node| {
        let r = req.clone();
        async move { node.client().finalize_reshare(fanout::request(r, deadline)).await.map(|r| r.into_inner()) }
    })
    .await;
    let failed: Vec<String> = answers
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|s| format!("node {}: {}", id.get(), s.message())))
        .collect();
    if !failed.is_empty() {
        // A node that missed the finalize drops its old generation at the next reshare's.
        tracing::warn!(
            key_id = outcome.key_id,
            version = outcome.version,
            failed = failed.join("; "),
            "finalize missed"
        );
    }
    Ok(())
}

async fn rounds(
    everyone: &[Arc<NodeHandle>],
    receivers: &[Arc<NodeHandle>],
    dealers: &[&Member],
    round1: pb::DkgRound1Request,
    deadline: Instant,
) -> Result<Vec<u8>, CoordError> {
    let session_id = round1.session_id.clone();
    let answers: Vec<(NodeId, Vec<u8>)> = fanout::on_each(everyone, deadline, "reshare round 1", |node| {
        let r = round1.clone();
        async move {
            let id = node.id;
            node.client().dkg_round1(fanout::request(r, deadline)).await.map(|r| (id, r.into_inner().package))
        }
    })
    .await?;
    let packages: Vec<Vec<u8>> = answers
        .into_iter()
        .filter(|(id, p)| dealers.iter().any(|d| d.handle.id == *id) && !p.is_empty())
        .map(|(_, p)| p)
        .collect();
    if packages.len() != dealers.len() {
        return Err(CoordError::Internal("a dealer sent no package".into()));
    }
    let round2 = pb::DkgRound2Request { session_id: session_id.clone(), packages };
    let complaints: Vec<Vec<u8>> = fanout::on_each(receivers, deadline, "reshare round 2", |node| {
        let r = round2.clone();
        async move { node.client().dkg_round2(fanout::request(r, deadline)).await.map(|r| r.into_inner().package) }
    })
    .await?;
    let finish = pb::DkgFinishRequest { session_id, packages: complaints };
    let finished: Vec<pb::DkgFinishResponse> = fanout::on_each(receivers, deadline, "reshare finish", |node| {
        let r = finish.clone();
        async move { node.client().dkg_finish(fanout::request(r, deadline)).await.map(|r| r.into_inner()) }
    })
    .await?;
    let first = finished.first().ok_or_else(|| CoordError::Internal("no receivers".into()))?;
    if let Some((node, _)) =
        receivers.iter().zip(&finished).find(|(_, f)| f.public_key_package != first.public_key_package)
    {
        return Err(CoordError::Internal(format!("node {} derived a different package", node.id.get())));
    }
    let disqualified: Vec<u32> = finished.iter().flat_map(|f| f.disqualified.iter().copied()).collect();
    if !disqualified.is_empty() {
        tracing::warn!(?disqualified, "reshare excluded dealers");
    }
    Ok(first.public_key_package.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    fn id(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    #[test]
    fn a_node_that_did_not_answer_is_not_counted_as_holding_nothing() {
        let states: Answers<Vec<&str>> = vec![
            (id(1), Ok(vec!["state of 1"])),
            (id(2), Err(Status::not_found("no key k"))),
            (id(3), Err(Status::deadline_exceeded("no answer before the deadline"))),
            (id(4), Err(Status::unavailable("connection refused"))),
            (id(5), Ok(vec![])),
        ];
        let answered = answered_states(&states);
        assert_eq!(answered.get(&id(1)), Some(&Some(&"state of 1")));
        // "Not found" is an answer: the node holds nothing of the key and is repaired.
        assert_eq!(answered.get(&id(2)), Some(&None));
        // A late or unreachable node said nothing: it is not known to lack the key.
        assert!(!answered.contains_key(&id(3)));
        assert!(!answered.contains_key(&id(4)));
        assert_eq!(answered.get(&id(5)), Some(&None));
    }

    fn holding(versions: &[(u32, &[u8])]) -> pb::NodeKeyState {
        pb::NodeKeyState {
            key_id: "k".into(),
            enabled: true,
            usages: vec![1],
            versions: versions
                .iter()
                .map(|(v, p)| pb::NodeKeyVersion {
                    version: *v,
                    public_key_package: p.to_vec(),
                    active: true,
                    ..Default::default()
                })
                .collect(),
            vetoed: false,
        }
    }

    /// Under load a node's state read can time out; only a node that says it lacks a version
    /// (or holds nothing) makes the repair loop reshare it.
    #[test]
    fn repair_reshares_only_what_an_answering_member_lacks() {
        let ids: Vec<NodeId> = (1..=5).map(id).collect();
        let mut rng = rand::rng();
        let (_, one) =
            hyok_threshold::dealer::dangerous_deal(&curve25519_dalek::Scalar::from(5u64), 3, &ids, &mut rng).unwrap();
        let (_, two) =
            hyok_threshold::dealer::dangerous_deal(&curve25519_dalek::Scalar::from(6u64), 3, &ids, &mut rng).unwrap();
        let (one, two) = (one.to_bytes(), two.to_bytes());
        let full = holding(&[(1, &one), (2, &two)]);
        let only_one = holding(&[(1, &one)]);
        let answers: Vec<(NodeId, pb::NodeKeyState)> = (1..=3).map(|i| (id(i), full.clone())).collect();
        let view = crate::metadata::merge::<crate::metadata::Ec>("k", &answers, 3).unwrap();
        let mut answered: BTreeMap<NodeId, Option<&pb::NodeKeyState>> = (1..=3).map(|i| (id(i), Some(&full))).collect();
        // Nodes 4 and 5 did not answer: nothing to repair.
        assert!(versions_lacking::<crate::metadata::Ec>(&view, &answered, &ids).is_empty());
        // Node 4 answers with version 1 only: version 2 is repaired.
        answered.insert(id(4), Some(&only_one));
        assert_eq!(versions_lacking::<crate::metadata::Ec>(&view, &answered, &ids), vec![2]);
        // Node 5 answers "not found" (a wiped node): both versions.
        answered.insert(id(5), None);
        assert_eq!(versions_lacking::<crate::metadata::Ec>(&view, &answered, &ids), vec![1, 2]);
        // A node outside the members is not repaired.
        assert_eq!(versions_lacking::<crate::metadata::Ec>(&view, &answered, &ids[..4]), vec![2]);
    }
}
