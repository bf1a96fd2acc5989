//! Executing a membership change (an epoch), of any shape: nodes added, nodes removed, `t`
//! changed, identities replaced.
//!
//! Every new member's operator has accepted the change on its node (`hyokctl cluster accept`;
//! each node reports its acceptance, signed with its identity key, in `GetIdentity`). Then:
//! 1. every version of every key, EC and RSA, is reshared from the old holders of its trusted
//!    generation to every node of the new manifest at its `t` — the outputs stay pending on the
//!    receivers while the old epoch serves every request;
//! 2. every new member commits (`CommitEpoch`, with every acceptance, which each node checks
//!    itself): the new shares become current and the new manifest takes effect; a node that
//!    leaves deletes its shares;
//! 3. after a grace period in which requests that chose the old generation complete, the old
//!    generations are dropped everywhere.
//!
//! A failure in step 1 abandons the change on every node (`AbortEpoch`): the old epoch is whole
//! and keeps serving. A failure in step 2 leaves some nodes in the new epoch and some in the old;
//! both generations serve meanwhile, and running the execution again completes it (a node that
//! has not committed commits its own pending shares).

use crate::error::CoordError;
use crate::fanout::{self, Ask, ask_every};
use crate::metadata::{self, Ec, Family, Rsa, flatten, read_states};
use crate::pool::Pool;
use crate::reshare::{self, Member, Outcome, Target};
use hyok_proto::v1 as pb;
use hyok_threshold::epoch::{Acceptance, Proposal, vartime_verify_acceptance};
use hyok_threshold::{NodeId, Wire};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A change as the nodes report it: the proposal, the valid acceptances, and every node's
/// identity answer.
struct Change {
    proposal: Proposal,
    acceptances: Vec<pb::EpochAcceptance>,
    identities: BTreeMap<NodeId, pb::GetIdentityResponse>,
}

impl Change {
    /// Whether node `id` is in the new epoch already.
    fn in_force(&self, id: NodeId) -> bool {
        self.identities.get(&id).is_some_and(|i| i.manifest == self.proposal.to().to_bytes())
    }

    /// Node `id` as a member, if it answered with identity key `key` and the pool reaches it.
    fn member(&self, pool: &Pool, id: NodeId, key: &hyok_threshold::IdentityPublicKey) -> Option<Member> {
        let identity = self.identities.get(&id).filter(|i| i.identity_public_key == key.as_bytes())?;
        Some(Member::new(pool.get(id)?, identity))
    }

    /// Every node of `manifest`, as members; UNAVAILABLE naming the first that is not reachable
    /// with the identity it pins.
    fn members(&self, pool: &Pool, manifest: &hyok_threshold::Manifest) -> Result<Vec<Member>, CoordError> {
        manifest
            .nodes()
            .iter()
            .map(|(id, key)| {
                self.member(pool, *id, key).ok_or_else(|| {
                    CoordError::Unavailable(format!(
                        "node {id} of epoch {} is unreachable (or not in the coordinator's node list)",
                        manifest.epoch()
                    ))
                })
            })
            .collect()
    }
}

/// Reads the change every node reports; the one of the highest epoch with the most valid
/// acceptances. FAILED_PRECONDITION if no node's operator accepted one.
async fn read_change(pool: &Pool, deadline: Instant) -> Result<Change, CoordError> {
    let answers = ask_every(pool, Ask::EVERY, deadline, |node| async move {
        node.client().get_identity(fanout::request(pb::GetIdentityRequest {}, deadline)).await.map(|r| r.into_inner())
    })
    .await;
    let identities: BTreeMap<NodeId, pb::GetIdentityResponse> =
        answers.into_iter().filter_map(|(id, r)| r.ok().map(|i| (id, i))).collect();
    let mut candidates: BTreeMap<(u64, [u8; 32]), (Proposal, Vec<pb::EpochAcceptance>)> = BTreeMap::new();
    for (id, identity) in &identities {
        let Ok(proposal) = Proposal::from_bytes(&identity.proposal) else { continue };
        let valid = Acceptance::from_bytes(&identity.acceptance)
            .is_ok_and(|a| vartime_verify_acceptance(&proposal, *id, &a).is_ok());
        if !valid {
            tracing::error!(node = id.get(), "a node reports an acceptance that does not verify");
            continue;
        }
        let entry = candidates.entry((proposal.epoch(), proposal.digest())).or_insert_with(|| (proposal, Vec::new()));
        entry.1.push(pb::EpochAcceptance { node_id: u32::from(id.get()), acceptance: identity.acceptance.clone() });
    }
    let best = candidates.into_values().max_by_key(|(p, accepted)| (p.epoch(), accepted.len()));
    let Some((proposal, acceptances)) = best else {
        return Err(CoordError::Precondition(
            "no node's operator has accepted a membership change (hyokctl cluster propose, then accept)".into(),
        ));
    };
    Ok(Change { proposal, acceptances, identities })
}

/// Why `change` cannot be executed yet, if it cannot: a new member whose operator has not
/// accepted it (or rejected it), or that did not answer.
fn unaccepted(change: &Change) -> Option<String> {
    let accepted: Vec<u32> = change.acceptances.iter().map(|a| a.node_id).collect();
    let missing: Vec<String> = change
        .proposal
        .required()
        .into_iter()
        .filter(|id| !accepted.contains(&u32::from(id.get())))
        .map(|id| match change.identities.get(&id) {
            None => format!("node {id} did not answer"),
            Some(_) => format!("node {id}'s operator has not accepted it (or rejected it)"),
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the change to epoch {} ({}) cannot be executed: {}",
            change.proposal.epoch(),
            hex::encode(change.proposal.digest()),
            missing.join("; ")
        )
    })
}

/// Every trusted version of every key of family `F`, reshared to `target`; stops at the first
/// failure.
async fn reshare_family<F: Family>(
    pool: &Pool,
    target: &Target<'_>,
    request_id: &str,
    out: &mut Vec<Outcome>,
) -> Result<(), CoordError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for view in metadata::list::<F>(pool, deadline).await? {
        for version in view.versions.keys() {
            let deadline = Instant::now() + Duration::from_secs(120);
            let (outcome, _) = reshare::run::<F>(pool, &view.name, *version, request_id, deadline, target)
                .await
                .map_err(|e| e.context(&format!("resharing {} {}/{version}", F::WHAT, view.name)))?;
            out.push(outcome);
        }
    }
    Ok(())
}

/// The versions node `id` holds pending, as its `CommitEpoch` lists them (a commit that was cut
/// short: the node's own outputs of the change).
async fn pending_of(pool: &Pool, id: NodeId, deadline: Instant) -> Vec<pb::EpochVersion> {
    fn of<F: Family>(states: &fanout::Answers<Vec<F::State>>, id: NodeId, out: &mut Vec<pb::EpochVersion>) {
        for (node, state) in flatten::<F>(states) {
            if node != id {
                continue;
            }
            for v in F::versions(&state).filter(|v| !v.replaced) {
                if let Some(generation) = v.next {
                    out.push(pb::EpochVersion {
                        rsa: F::RSA,
                        key_id: F::name(&state).to_owned(),
                        version: v.version,
                        generation,
                        public_key_package: v.next_package.to_vec(),
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    of::<Ec>(&read_states::<Ec>(pool, Ask::EVERY_STATE, None, deadline).await, id, &mut out);
    of::<Rsa>(&read_states::<Rsa>(pool, Ask::EVERY_STATE, None, deadline).await, id, &mut out);
    out
}

fn epoch_version(o: &Outcome) -> pb::EpochVersion {
    pb::EpochVersion {
        rsa: o.rsa,
        key_id: o.key_id.clone(),
        version: o.version,
        generation: o.generation,
        public_key_package: o.package.clone(),
    }
}

/// `ExecuteEpoch`: see the module docs.
/// `committed` runs once the new epoch is committed, before the grace period (the caller
/// forgets its cached metadata, so that new requests choose the new generations).
pub async fn execute(
    pool: &Pool,
    request_id: &str,
    committed: impl Fn(),
) -> Result<pb::ExecuteEpochResponse, CoordError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let change = read_change(pool, deadline).await?;
    if let Some(why) = unaccepted(&change) {
        return Err(CoordError::Precondition(why));
    }
    let proposal = change.proposal.clone();
    let digest = proposal.digest().to_vec();
    let receivers = change.members(pool, proposal.to())?;
    let started = receivers.iter().any(|m| change.in_force(m.handle().id));
    let mut outcomes = Vec::new();
    if !started {
        // The old members that answered; those holding each version's trusted generation deal it.
        let dealers: Vec<Member> =
            proposal.from().nodes().iter().filter_map(|(id, key)| change.member(pool, *id, key)).collect();
        let target = Target {
            receivers: &receivers,
            dealers: &dealers,
            threshold: usize::from(proposal.to().threshold()),
            epoch: proposal.epoch(),
        };
        let mut result = reshare_family::<Ec>(pool, &target, request_id, &mut outcomes).await;
        if result.is_ok() {
            result = reshare_family::<Rsa>(pool, &target, request_id, &mut outcomes).await;
        }
        if let Err(e) = result {
            let _ = abort_on(pool, &digest, request_id).await;
            tracing::warn!(epoch = proposal.epoch(), error = %e, "membership change abandoned; the old epoch serves on");
            return Err(e.context("the membership change was abandoned and the old epoch serves on"));
        }
    }
    // Commit on every new member not in the new epoch yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = Vec::new();
    for member in receivers.iter().filter(|m| !change.in_force(m.handle().id)) {
        let versions = if started {
            pending_of(pool, member.handle().id, deadline).await
        } else {
            outcomes.iter().map(epoch_version).collect()
        };
        let req = pb::CommitEpochRequest {
            proposal_digest: digest.clone(),
            versions,
            acceptances: change.acceptances.clone(),
            request_id: request_id.to_owned(),
        };
        if let Err(status) = member.handle().client().commit_epoch(fanout::request(req, deadline)).await {
            failed.push(format!("node {}: {}", member.handle().id, status.message()));
        }
    }
    if !failed.is_empty() {
        return Err(CoordError::Unavailable(format!(
            "the change to epoch {} is committed on some nodes, not on {}: execute it again to complete it",
            proposal.epoch(),
            failed.join("; ")
        )));
    }
    // The nodes that leave delete their shares (a node that is down keeps them, useless: every
    // version was reshared without it).
    let mut retired = Vec::new();
    for id in proposal.leaving() {
        let Some(handle) = pool.get(id) else { continue };
        let req = pb::CommitEpochRequest {
            proposal_digest: digest.clone(),
            versions: Vec::new(),
            acceptances: change.acceptances.clone(),
            request_id: request_id.to_owned(),
        };
        match handle.client().commit_epoch(fanout::request(req, deadline)).await {
            Ok(r) if r.get_ref().retired => retired.push(u32::from(id.get())),
            Ok(_) => {}
            Err(status) => tracing::warn!(node = id.get(), error = status.message(), "a leaving node did not retire"),
        }
    }
    tracing::warn!(epoch = proposal.epoch(), versions = outcomes.len(), ?retired, "membership change executed");
    committed();
    // The new epoch's t from here on (a key created right after is dealt at it).
    pool.probe_all(Duration::from_secs(1)).await;
    // Requests that chose the old generations complete, then those are dropped everywhere.
    if !outcomes.is_empty() {
        tokio::time::sleep(reshare::FINALIZE_GRACE).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        for outcome in &outcomes {
            reshare::finalize(pool, outcome, request_id, deadline).await?;
        }
    }
    let versions = outcomes
        .iter()
        .map(|o| pb::ResharedVersion {
            key_id: o.key_id.clone(),
            version: o.version,
            generation: o.generation,
            receivers: o.receivers.iter().map(|r| u32::from(*r)).collect(),
            error: String::new(),
            rsa: o.rsa,
        })
        .collect();
    Ok(pb::ExecuteEpochResponse { epoch: proposal.epoch(), versions, retired })
}

/// Abandons the change `digest` names on every node that holds it.
async fn abort_on(pool: &Pool, digest: &[u8], request_id: &str) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let req = pb::AbortEpochRequest { proposal_digest: digest.to_vec(), request_id: request_id.to_owned() };
    let answers = ask_every(pool, Ask::EVERY, deadline, |node| {
        let r = req.clone();
        async move { node.client().abort_epoch(fanout::request(r, deadline)).await.map(|r| r.into_inner()) }
    })
    .await;
    answers.into_iter().filter(|(_, r)| r.is_ok()).map(|(id, _)| u32::from(id.get())).collect()
}

/// `AbortEpoch`: the accepted change abandoned on every node that holds it (none may have it in
/// force yet).
pub async fn abort(pool: &Pool, request_id: &str) -> Result<pb::AbortEpochVaultResponse, CoordError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let change = read_change(pool, deadline).await?;
    if let Some((id, _)) = change.identities.iter().find(|(id, _)| change.in_force(**id)) {
        return Err(CoordError::Precondition(format!(
            "the change to epoch {} is in force on node {id} already: execute it again to complete it",
            change.proposal.epoch()
        )));
    }
    let nodes = abort_on(pool, &change.proposal.digest(), request_id).await;
    Ok(pb::AbortEpochVaultResponse { nodes })
}
