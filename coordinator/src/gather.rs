//! Fan-out: collect t valid partials for one request item from the nodes.
//!
//! `t + extra_nodes` nodes are asked at once (reachable ones first, rotated per request). Each
//! failure — a transport error, a per-item refusal, a full queue, an invalid partial — asks the
//! next node at once; if t valid partials have not arrived after `hedge`, every remaining
//! reachable node is asked. Everything ends at the request's deadline. The caller's `attempt`
//! decides what "valid" means (combine-first with an AEAD check, or batch verification) and names
//! the nodes whose partials failed.

use crate::batch::{ItemResult, Submit};
use crate::error::CoordError;
use crate::pool::{NodeHandle, Pool, is_transport_failure};
use hyok_proto::v1 as pb;
use hyok_threshold::{NodeId, PartialEvaluation, Wire};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the caller makes of the partials gathered so far (at least t of them).
#[derive(Debug)]
pub enum Step<T> {
    /// Finished; the listed nodes' partials failed verification on the way (they are logged
    /// and counted).
    Done(T, Vec<NodeId>),
    /// These nodes' partials failed verification: drop them and wait for others.
    Exclude(Vec<NodeId>),
    /// Give up with this error (e.g. the ciphertext does not authenticate).
    Fail(CoordError),
}

/// How the request is spread.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// Nodes asked beyond t at once.
    pub extra: usize,
    /// When to ask every remaining node.
    pub hedge: Duration,
    /// When to give up.
    pub deadline: Instant,
}

/// Why one node gave no usable partial.
#[derive(Debug)]
enum Miss {
    Refused(pb::item_error::Code, String),
    Unreachable(String),
    Invalid,
}

/// Gathers partials until `attempt` is done. `submit` queues the item for one node.
pub async fn gather<T>(
    pool: &Pool,
    spread: Spread,
    (key_id, version): (&str, u32),
    submit: impl Fn(&NodeHandle) -> Result<oneshot::Receiver<ItemResult>, Submit>,
    mut attempt: impl FnMut(&[PartialEvaluation]) -> Step<T>,
) -> Result<T, CoordError> {
    let t = pool.threshold();
    let mut waiting: VecDeque<Arc<NodeHandle>> = pool.ordered().into();
    let mut inflight: JoinSet<(Arc<NodeHandle>, Result<ItemResult, oneshot::error::RecvError>)> = JoinSet::new();
    let mut misses: Vec<(NodeId, Miss)> = Vec::new();
    let mut partials: Vec<PartialEvaluation> = Vec::with_capacity(t + spread.extra);

    // Asks the next node that accepts the item; false when none is left.
    let mut launch = |inflight: &mut JoinSet<_>, misses: &mut Vec<(NodeId, Miss)>, only_up: bool| -> bool {
        while let Some(node) = waiting.front().cloned() {
            if only_up && !node.is_up() {
                return false;
            }
            waiting.pop_front();
            match submit(&node) {
                Ok(rx) => {
                    inflight.spawn(async move { (node, rx.await) });
                    return true;
                }
                Err(why) => misses.push((node.id, Miss::Unreachable(format!("queue {why:?}")))),
            }
        }
        false
    };

    for _ in 0..t + spread.extra {
        if !launch(&mut inflight, &mut misses, false) {
            break;
        }
    }
    let hedge_at = Instant::now() + spread.hedge;
    let mut hedged = false;
    loop {
        if partials.len() >= t {
            match attempt(&partials) {
                Step::Done(value, culprits) => {
                    for culprit in culprits {
                        if let Some(node) = pool.get(culprit) {
                            node.record_invalid_partial(key_id, version);
                        }
                    }
                    return Ok(value);
                }
                Step::Fail(e) => return Err(e),
                Step::Exclude(culprits) => {
                    for culprit in &culprits {
                        if let Some(node) = pool.get(*culprit) {
                            node.record_invalid_partial(key_id, version);
                        }
                        misses.push((*culprit, Miss::Invalid));
                    }
                    partials.retain(|p| !culprits.contains(&p.node()));
                    for _ in 0..culprits.len().max(1) {
                        launch(&mut inflight, &mut misses, false);
                    }
                    continue;
                }
            }
        }
        if inflight.is_empty() && !launch(&mut inflight, &mut misses, false) {
            return Err(shortfall(t, partials.len(), &misses));
        }
        tokio::select! {
            joined = inflight.join_next() => {
                let Some(Ok((node, answer))) = joined else { continue };
                match answer {
                    Ok(Ok(pb::PartialResult { result: Some(pb::partial_result::Result::Partial(bytes)) })) => {
                        match PartialEvaluation::from_bytes(&bytes) {
                            Ok(p) if p.node() == node.id && !partials.iter().any(|q| q.node() == node.id) => {
                                partials.push(p);
                            }
                            _ => {
                                node.record_invalid_partial(key_id, version);
                                misses.push((node.id, Miss::Invalid));
                                launch(&mut inflight, &mut misses, false);
                            }
                        }
                    }
                    Ok(Ok(pb::PartialResult { result: Some(pb::partial_result::Result::Error(e)) })) => {
                        let code = pb::item_error::Code::try_from(e.code).unwrap_or(pb::item_error::Code::Internal);
                        misses.push((node.id, Miss::Refused(code, e.message)));
                        launch(&mut inflight, &mut misses, false);
                    }
                    Ok(Ok(pb::PartialResult { result: None })) => {
                        misses.push((node.id, Miss::Refused(pb::item_error::Code::Internal, "empty result".into())));
                        launch(&mut inflight, &mut misses, false);
                    }
                    Ok(Err(status)) => {
                        if is_transport_failure(&status) {
                            node.mark_down(pool.down_for(), status.message());
                        }
                        misses.push((node.id, Miss::Unreachable(format!("{}: {}", status.code(), status.message()))));
                        launch(&mut inflight, &mut misses, false);
                    }
                    Err(_) => {
                        misses.push((node.id, Miss::Unreachable("dropped".into())));
                        launch(&mut inflight, &mut misses, false);
                    }
                }
            }
            _ = tokio::time::sleep_until(hedge_at), if !hedged => {
                hedged = true;
                while launch(&mut inflight, &mut misses, true) {}
            }
            _ = tokio::time::sleep_until(spread.deadline) => {
                return Err(CoordError::Unavailable(format!(
                    "only {} of the {t} partials needed arrived before the deadline",
                    partials.len()
                )));
            }
        }
    }
}

/// The error when every node has been tried and fewer than t gave valid partials. When every
/// miss is the same refusal (all nodes up, all say "disabled"), that refusal is the answer;
/// otherwise the cluster is short of nodes: UNAVAILABLE.
fn shortfall(t: usize, got: usize, misses: &[(NodeId, Miss)]) -> CoordError {
    use pb::item_error::Code;
    let detail: Vec<String> = misses
        .iter()
        .map(|(n, m)| match m {
            Miss::Refused(code, msg) => format!("node {}: {} ({msg})", n.get(), code.as_str_name()),
            Miss::Unreachable(why) => format!("node {}: unreachable ({why})", n.get()),
            Miss::Invalid => format!("node {}: invalid partial", n.get()),
        })
        .collect();
    let summary = format!("{got} of {t} partials; {}", detail.join("; "));
    let refusals: Vec<(Code, &str)> = misses
        .iter()
        .filter_map(|(_, m)| match m {
            Miss::Refused(c, msg) => Some((*c, msg.as_str())),
            _ => None,
        })
        .collect();
    let all_refused = refusals.len() == misses.len() && !refusals.is_empty();
    let any = |code: Code| refusals.iter().find(|(c, _)| *c == code);
    if let Some((_, msg)) = any(Code::Invalid) {
        return CoordError::Invalid((*msg).to_owned());
    }
    if all_refused {
        if any(Code::Disabled).is_some() {
            return CoordError::Disabled(format!("key is disabled on too many nodes: {summary}"));
        }
        if any(Code::UsageNotAllowed).is_some() {
            return CoordError::UsageNotAllowed(format!("key usage does not allow this operation: {summary}"));
        }
        if any(Code::NotFound).is_some() {
            return CoordError::VersionNotFound(format!("key version not found: {summary}"));
        }
    }
    CoordError::Unavailable(format!("not enough nodes answered: {summary}"))
}
