//! Every way the coordinator asks nodes, once.
//!
//! - [`request`]: a message whose gRPC timeout is the time left to the deadline.
//! - [`ask_every`]: the same call on every node (or every reachable one) at once, each answer
//!   bounded by the deadline; for DKG rounds, imports, enable/disable and state reads.
//! - [`all_ok`]: the answers of a call every node must accept, or one error naming the rest.
//! - [`gather`]: t valid partials for one request item, whatever the partial kind (DPRF and KEM
//!   through the per-node batcher, RSA by a direct call).
//!
//! Every path marks a node that failed at the transport level down for the configured
//! `down_ms`, so the next request does not wait on it.

use crate::error::CoordError;
use crate::pool::{NodeHandle, Pool, is_transport_failure};
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::RsaPartial;
use hyok_threshold::{NodeId, PartialEvaluation, Wire};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Status;
use tracing::Instrument as _;

/// `message` as a request whose gRPC timeout is what is left until `deadline`.
pub fn request<T>(message: T, deadline: Instant) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// `status`, unless it is the request's own deadline passing (tonic answers CANCELLED, "Timeout
/// expired", on either side), which says nothing about the node: then DEADLINE_EXCEEDED, which
/// never marks a node down.
pub fn past_deadline(status: Status, deadline: Instant) -> Status {
    if status.code() == tonic::Code::Cancelled && Instant::now() >= deadline {
        Status::deadline_exceeded(format!("no answer before the deadline ({})", status.message()))
    } else {
        status
    }
}

/// Which nodes [`ask_every`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Every configured node (a DKG, an import, enable/disable).
    Every,
    /// The nodes believed reachable, or every node when fewer than t are (state reads).
    Reachable,
}

/// How [`ask_every`] asks.
#[derive(Clone, Copy, Debug)]
pub struct Ask {
    /// Which nodes.
    pub who: Who,
    /// Once t nodes have answered successfully, how long to wait for the rest (`None`: until
    /// every node has answered or the deadline passed).
    pub grace: Option<Duration>,
}

impl Ask {
    /// Every node, every answer.
    pub const EVERY: Ask = Ask { who: Who::Every, grace: None };
    /// A metadata read on behalf of requests: reachable nodes; stragglers get a short grace once
    /// t have answered.
    pub const STATE: Ask = Ask { who: Who::Reachable, grace: Some(Duration::from_millis(25)) };
    /// A state read before a key change or for status (creation, rotation, import, reshare,
    /// repair, an epoch): every reachable node's answer, up to the deadline. A straggler cut off
    /// by a grace would read as holding nothing.
    pub const EVERY_STATE: Ask = Ask { who: Who::Reachable, grace: None };
}

/// One answer per asked node, in configuration order.
pub type Answers<T> = Vec<(NodeId, Result<T, Status>)>;

/// Calls `f` on the nodes `ask` names, concurrently, each bounded by `deadline` (a node that
/// does not answer in time, or within the grace once t have, is `DEADLINE_EXCEEDED`).
pub async fn ask_every<T, F, Fut>(pool: &Pool, ask: Ask, deadline: Instant, f: F) -> Answers<T>
where
    T: Send + 'static,
    F: Fn(Arc<NodeHandle>) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    let all = pool.all();
    let asked: Vec<(usize, &Arc<NodeHandle>)> = match ask.who {
        Who::Reachable if pool.up_count() >= pool.quorum() => {
            all.iter().enumerate().filter(|(_, n)| n.is_up()).collect()
        }
        _ => all.iter().enumerate().collect(),
    };
    let down_for = pool.down_for();
    let mut calls = JoinSet::new();
    let mut out: Vec<Option<(NodeId, Result<T, Status>)>> = (0..all.len()).map(|_| None).collect();
    for (index, node) in &asked {
        let (index, node) = (*index, Arc::clone(node));
        let call = f(node.clone());
        // In the request's log span, so that what a node's answer makes the pool log carries its id.
        calls.spawn(
            async move {
                let result = tokio::time::timeout_at(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer before the deadline")))
                    .map_err(|status| past_deadline(status, deadline));
                if let Err(status) = &result
                    && is_transport_failure(status)
                {
                    node.mark_down(down_for, status.message());
                }
                (index, result)
            }
            .in_current_span(),
        );
    }
    let mut soft_deadline = deadline;
    let mut succeeded = 0;
    while let Ok(Some(joined)) = tokio::time::timeout_at(soft_deadline, calls.join_next()).await {
        let Ok((index, result)) = joined else { continue };
        succeeded += usize::from(result.is_ok());
        out[index] = Some((all[index].id, result));
        if let Some(grace) = ask.grace
            && succeeded >= pool.quorum()
            && soft_deadline == deadline
        {
            soft_deadline = (Instant::now() + grace).min(deadline);
        }
    }
    asked
        .iter()
        .map(|(index, node)| {
            out[*index]
                .take()
                .unwrap_or_else(|| (node.id, Err(Status::deadline_exceeded("no answer within the grace period"))))
        })
        .collect()
}

/// Calls `f` on each of `nodes` concurrently; all must succeed ([`all_ok`]; answers in the
/// order given).
pub async fn on_each<T, F, Fut>(
    nodes: &[Arc<NodeHandle>],
    deadline: Instant,
    what: &str,
    f: F,
) -> Result<Vec<T>, CoordError>
where
    T: Send + 'static,
    F: Fn(Arc<NodeHandle>) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    let mut calls = JoinSet::new();
    for (index, node) in nodes.iter().enumerate() {
        let call = f(node.clone());
        calls.spawn(
            async move {
                let result = tokio::time::timeout_at(deadline, call)
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer before the deadline")));
                (index, result)
            }
            .in_current_span(),
        );
    }
    let mut out: Vec<Option<Result<T, Status>>> = (0..nodes.len()).map(|_| None).collect();
    while let Some(joined) = calls.join_next().await {
        if let Ok((index, result)) = joined {
            out[index] = Some(result);
        }
    }
    let answers = nodes
        .iter()
        .zip(out)
        .map(|(n, r)| (n.id, r.unwrap_or_else(|| Err(Status::internal("the call was lost")))))
        .collect();
    all_ok(answers, what)
}

/// The values of a call every node had to accept, in configuration order; otherwise one error:
/// UNAVAILABLE when a node could not be reached, FAILED_PRECONDITION when every failure was
/// one, INTERNAL else.
pub fn all_ok<T>(answers: Answers<T>, what: &str) -> Result<Vec<T>, CoordError> {
    let unreachable = answers.iter().any(|(_, r)| {
        matches!(r, Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown | tonic::Code::Cancelled))
    });
    let failures: Vec<&Status> = answers.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    if failures.is_empty() {
        return Ok(answers.into_iter().filter_map(|(_, r)| r.ok()).collect());
    }
    let message = format!("{what} failed: {}", describe(&answers));
    Err(if unreachable {
        CoordError::Unavailable(message)
    } else if failures.iter().all(|s| s.code() == tonic::Code::FailedPrecondition) {
        CoordError::Precondition(message)
    } else {
        CoordError::Internal(message)
    })
}

/// The nodes' failures in one line: `node 2: Unavailable: …; node 5: …`.
pub fn describe<T>(answers: &Answers<T>) -> String {
    answers
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|s| format!("node {}: {}: {}", id.get(), s.code(), s.message())))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A partial result as it comes off the wire: it names the node that computed it.
pub trait Partial: Wire + Send + 'static {
    /// The node that computed it.
    fn node(&self) -> NodeId;
    /// A DPRF partial whose node's batch proof the batcher verified, if this is that kind.
    fn from_verified(partial: PartialEvaluation) -> Option<Self>;
}

impl Partial for PartialEvaluation {
    fn node(&self) -> NodeId {
        PartialEvaluation::node(self)
    }
    fn from_verified(partial: PartialEvaluation) -> Option<Self> {
        Some(partial)
    }
}

impl Partial for RsaPartial {
    fn node(&self) -> NodeId {
        RsaPartial::node(self)
    }
    fn from_verified(_: PartialEvaluation) -> Option<Self> {
        None
    }
}

/// One node's answer to one item.
#[derive(Debug)]
pub enum Reply {
    /// The partial's wire bytes.
    Partial(Vec<u8>),
    /// A DPRF partial proven by its node's batch proof, which the batcher checked.
    Verified(Box<PartialEvaluation>),
    /// A value whose batch proof failed or was missing: the node's partial is wrong.
    Invalid,
    /// The node refused this item (batched calls answer item by item).
    Refused(pb::item_error::Code, String),
    /// The call failed as a whole: a transport failure, or a refusal as a gRPC status.
    Failed(Status),
}

impl Reply {
    /// The kind of answer, as a metric label.
    fn outcome(&self) -> &'static str {
        match self {
            Reply::Partial(_) | Reply::Verified(_) => "partial",
            Reply::Invalid => "invalid",
            Reply::Refused(..) => "refused",
            Reply::Failed(_) => "failed",
        }
    }
}

impl From<Result<pb::PartialResult, Status>> for Reply {
    fn from(result: Result<pb::PartialResult, Status>) -> Self {
        match result {
            Ok(pb::PartialResult { result: Some(pb::partial_result::Result::Partial(bytes)) }) => Reply::Partial(bytes),
            Ok(pb::PartialResult { result: Some(pb::partial_result::Result::Error(e)) }) => Reply::Refused(
                pb::item_error::Code::try_from(e.code).unwrap_or(pb::item_error::Code::Internal),
                e.message,
            ),
            Ok(pb::PartialResult { result: None }) => {
                Reply::Refused(pb::item_error::Code::Internal, "empty result".into())
            }
            Err(status) => Reply::Failed(status),
        }
    }
}

/// What the caller makes of the partials gathered so far (at least `need` of them).
pub enum Step<T> {
    /// Finished; the listed nodes' partials were wrong (they are logged and counted).
    Done(T, Vec<NodeId>),
    /// Drop the listed nodes' partials (they are wrong) and try again once `need` partials
    /// are at hand (at least t; more when no t-subset is known to be good).
    Retry {
        /// Nodes whose partials were wrong.
        culprits: Vec<NodeId>,
        /// How many partials the next attempt needs.
        need: usize,
    },
    /// Give up with this error (e.g. the ciphertext does not authenticate).
    Fail(CoordError),
}

/// The value may be a plaintext: never printed.
impl<T> std::fmt::Debug for Step<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Done(_, culprits) => f.debug_tuple("Done").field(&"<redacted>").field(culprits).finish(),
            Step::Retry { culprits, need } => {
                f.debug_struct("Retry").field("culprits", culprits).field("need", need).finish()
            }
            Step::Fail(e) => f.debug_tuple("Fail").field(e).finish(),
        }
    }
}

/// How a request is spread.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    /// Nodes asked beyond t at once when the deadline leaves no room to make up a miss.
    pub extra: usize,
    /// When a node that has not answered anything yet counts as late.
    pub hedge: Duration,
    /// When to give up.
    pub deadline: Instant,
}

/// Why a refusal was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    NotFound,
    Disabled,
    UsageNotAllowed,
    Invalid,
    /// The node's policy does not accept the request's evidence.
    Denied,
    Other,
}

impl Refusal {
    /// The reason as a metric label.
    fn name(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Disabled => "disabled",
            Refusal::UsageNotAllowed => "usage_not_allowed",
            Refusal::Invalid => "invalid",
            Refusal::Denied => "permission_denied",
            Refusal::Other => "other",
        }
    }
}

/// Why one node gave no usable partial.
#[derive(Debug)]
enum Miss {
    Refused(Refusal, String),
    Unreachable(String),
    Invalid,
}

impl Miss {
    fn of_item(code: pb::item_error::Code, message: String) -> Miss {
        use pb::item_error::Code;
        let refusal = match code {
            Code::NotFound => Refusal::NotFound,
            Code::Disabled => Refusal::Disabled,
            Code::UsageNotAllowed => Refusal::UsageNotAllowed,
            Code::Invalid => Refusal::Invalid,
            Code::PermissionDenied => Refusal::Denied,
            _ => Refusal::Other,
        };
        Miss::Refused(refusal, message)
    }

    fn of_status(status: &Status) -> Miss {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Miss::Refused(Refusal::NotFound, message),
            tonic::Code::InvalidArgument => Miss::Refused(Refusal::Invalid, message),
            tonic::Code::PermissionDenied => Miss::Refused(Refusal::Denied, message),
            tonic::Code::FailedPrecondition => match hyok_proto::Reason::of(status) {
                Some(hyok_proto::Reason::KeyDisabled) => Miss::Refused(Refusal::Disabled, message),
                Some(hyok_proto::Reason::UsageNotAllowed) => Miss::Refused(Refusal::UsageNotAllowed, message),
                _ => Miss::Refused(Refusal::Other, message),
            },
            code => Miss::Unreachable(format!("{code}: {message}")),
        }
    }
}

/// A node asked for a partial whose answer is still awaited.
struct Outstanding {
    node: NodeId,
    /// When its answer becomes late ([`crate::latency::Latency::late_after`]).
    late_at: Instant,
    /// A replacement has been asked for it.
    hedged: bool,
}

/// Gathers partials of kind `P` until `attempt` is done. `ask` asks one node for the item; `t`
/// is the threshold of the version's package.
///
/// Exactly t nodes are asked at once (reachable ones first, rotated per request), or t +
/// `extra` when a miss is likely (a node is believed down) or the deadline leaves no room to
/// make up one: when the slowest of them being late and a replacement answering in its usual
/// time would not fit before it. Each miss — a
/// transport error, a refusal, a full queue, an invalid partial — asks the next node at once.
/// Each asked node whose answer is late for *that node* (its own latency estimate, see
/// [`crate::latency`]; `hedge` before it has answered anything) gets a replacement, so neither
/// distance nor load, which every answer shares, makes a gather ask more nodes. Everything
/// ends at the deadline. `attempt` decides what "valid" means (combine first and check, or
/// verify first) and names the nodes whose partials failed.
///
/// `ask` is also given the *planned* set: the t nodes asked first, whose partials the attempt
/// combines when they all answer. A DPRF node of that set is asked to apply its own Lagrange
/// coefficient over it, so that combining is a sum ([`hyok_threshold::Coefficient`]).
pub async fn gather<P, T, F, Fut>(
    pool: &Pool,
    spread: Spread,
    (key_id, version, t): (&str, u32, usize),
    ask: F,
    mut attempt: impl FnMut(&[P]) -> Step<T>,
) -> Result<T, CoordError>
where
    P: Partial,
    F: Fn(&Arc<NodeHandle>, &[NodeId]) -> Fut,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let mut need = t;
    let mut retried = false;
    let mut waiting: VecDeque<Arc<NodeHandle>> = pool.ordered().into();
    let mut inflight: JoinSet<(Arc<NodeHandle>, Reply)> = JoinSet::new();
    let mut outstanding: Vec<Outstanding> = Vec::with_capacity(waiting.len());
    let mut misses: Vec<(NodeId, Miss)> = Vec::new();
    let mut partials: Vec<P> = Vec::with_capacity(t + spread.extra);
    // Asking t nodes suffices unless a miss among them is likely (a node is believed down: the
    // cluster is in trouble, and a restarted node is slow to answer at first) or could not be
    // made up before the deadline.
    let late = |node: &Arc<NodeHandle>| node.latency.late_after(spread.hedge);
    let slowest = waiting.iter().take(t).map(late).max().unwrap_or_default();
    let replacement = waiting.get(t).map(late).unwrap_or_default();
    let degraded = waiting.iter().any(|node| !node.is_up());
    let extra = if degraded || Instant::now() + slowest + replacement > spread.deadline { spread.extra } else { 0 };
    let planned: Vec<NodeId> = waiting.iter().take(t).map(|node| node.id).collect();

    // Asks the next node; false when none is left (or, `only_up`, none believed reachable).
    let mut launch = |inflight: &mut JoinSet<_>, outstanding: &mut Vec<Outstanding>, only_up: bool| -> bool {
        let Some(node) = waiting.front().cloned() else { return false };
        if only_up && !node.is_up() {
            return false;
        }
        waiting.pop_front();
        let call = ask(&node, &planned);
        let asked = Instant::now();
        outstanding.push(Outstanding {
            node: node.id,
            late_at: asked + node.latency.late_after(spread.hedge),
            hedged: false,
        });
        inflight.spawn(
            async move {
                let reply = call.await;
                let took = asked.elapsed();
                // An answer, even a refusal, is what this node takes now; a failed call is not.
                if !matches!(reply, Reply::Failed(_)) {
                    node.latency.observe(took);
                }
                crate::metrics::partial(node.id, reply.outcome(), took);
                (node, reply)
            }
            .in_current_span(),
        );
        true
    };
    let blame = |culprits: &[NodeId]| {
        for culprit in culprits {
            if let Some(node) = pool.get(*culprit) {
                node.record_invalid_partial(key_id, version);
            }
        }
    };

    for _ in 0..t + extra {
        if !launch(&mut inflight, &mut outstanding, false) {
            break;
        }
    }
    loop {
        if partials.len() >= need {
            match attempt(&partials) {
                Step::Done(value, culprits) => {
                    blame(&culprits);
                    return Ok(value);
                }
                Step::Fail(e) => return Err(e),
                Step::Retry { culprits, need: next } => {
                    retried = true;
                    blame(&culprits);
                    misses.extend(culprits.iter().map(|c| (*c, Miss::Invalid)));
                    partials.retain(|p| !culprits.contains(&p.node()));
                    // Never the same attempt twice: at least one partial more than now.
                    need = next.max(t).max(if culprits.is_empty() { partials.len() + 1 } else { 0 });
                    if partials.len() >= need {
                        need = partials.len() + 1;
                    }
                    while partials.len() + inflight.len() < need && launch(&mut inflight, &mut outstanding, false) {}
                    continue;
                }
            }
        }
        if inflight.is_empty() && !launch(&mut inflight, &mut outstanding, false) {
            let error = shortfall(need, partials.len(), &misses, retried);
            if matches!(error, CoordError::Unavailable(_)) {
                tracing::warn!(key_id, version, %error, "too few partials");
            }
            return Err(error);
        }
        let next_late = outstanding.iter().filter(|o| !o.hedged).map(|o| o.late_at).min();
        tokio::select! {
            joined = inflight.join_next() => {
                let Some(Ok((node, reply))) = joined else { continue };
                outstanding.retain(|o| o.node != node.id);
                let got = match reply {
                    Reply::Partial(bytes) => Ok(P::from_bytes(&bytes).ok()),
                    Reply::Verified(partial) => Ok(P::from_verified(*partial)),
                    Reply::Invalid => Ok(None),
                    Reply::Refused(code, message) => Err(Miss::of_item(code, message)),
                    Reply::Failed(status) => {
                        if is_transport_failure(&status) {
                            node.mark_down(pool.down_for(), status.message());
                        }
                        Err(Miss::of_status(&status))
                    }
                };
                let miss = match got {
                    Ok(Some(p)) if p.node() == node.id && !partials.iter().any(|q| q.node() == node.id) => {
                        partials.push(p);
                        continue;
                    }
                    Ok(_) => {
                        node.record_invalid_partial(key_id, version);
                        Miss::Invalid
                    }
                    Err(miss) => miss,
                };
                if let Miss::Refused(refusal, _) = &miss {
                    crate::metrics::refusal(node.id, refusal.name());
                }
                misses.push((node.id, miss));
                launch(&mut inflight, &mut outstanding, false);
            }
            _ = tokio::time::sleep_until(next_late.unwrap_or(spread.deadline)), if next_late.is_some() => {
                // Late nodes still count if they answer; replacements cover what they owe.
                let now = Instant::now();
                for o in outstanding.iter_mut().filter(|o| o.late_at <= now) {
                    o.hedged = true;
                }
                // Reachable nodes first; a node believed down rather than none.
                while partials.len() + outstanding.iter().filter(|o| !o.hedged).count() < need
                    && (launch(&mut inflight, &mut outstanding, true) || launch(&mut inflight, &mut outstanding, false))
                {}
            }
            _ = tokio::time::sleep_until(spread.deadline) => {
                let error = CoordError::Unavailable(format!(
                    "only {} of the {need} partials needed arrived before the deadline",
                    partials.len()
                ));
                tracing::warn!(key_id, version, %error, asked = misses.len() + partials.len() + inflight.len(), "deadline");
                return Err(error);
            }
        }
    }
}

/// The error when every node has been asked and too few partials served: an invalid request
/// is INVALID_ARGUMENT; a refusal every node that answered agrees on (disabled, usage, not
/// found) is that refusal; anything else means the cluster is short of nodes: UNAVAILABLE.
fn shortfall(need: usize, got: usize, misses: &[(NodeId, Miss)], retried: bool) -> CoordError {
    let detail: Vec<String> = misses
        .iter()
        .map(|(n, m)| match m {
            Miss::Refused(refusal, msg) => format!("node {}: {refusal:?} ({msg})", n.get()),
            Miss::Unreachable(why) => format!("node {}: unreachable ({why})", n.get()),
            Miss::Invalid => format!("node {}: invalid partial", n.get()),
        })
        .collect();
    let summary = format!("{got} of {need} partials; {}", detail.join("; "));
    let refusals: Vec<(Refusal, &str)> = misses
        .iter()
        .filter_map(|(_, m)| match m {
            Miss::Refused(r, msg) => Some((*r, msg.as_str())),
            _ => None,
        })
        .collect();
    let any = |refusal: Refusal| refusals.iter().find(|(r, _)| *r == refusal);
    if let Some((_, msg)) = any(Refusal::Invalid) {
        return CoordError::Invalid((*msg).to_owned());
    }
    if refusals.len() == misses.len() && !refusals.is_empty() {
        // The evidence decides before anything else: a node refuses a request it does not
        // cover before it looks at the key.
        if any(Refusal::Denied).is_some() {
            return CoordError::PermissionDenied(format!("the nodes refused the request's evidence: {summary}"));
        }
        if any(Refusal::Disabled).is_some() {
            return CoordError::Disabled(format!("key is disabled on too many nodes: {summary}"));
        }
        if any(Refusal::UsageNotAllowed).is_some() {
            return CoordError::UsageNotAllowed(format!("key usage does not allow this operation: {summary}"));
        }
        if any(Refusal::NotFound).is_some() {
            return CoordError::VersionNotFound(format!("key version not found: {summary}"));
        }
    }
    if retried {
        return CoordError::Unavailable(format!(
            "partials did not combine to a valid result and no consistent set was found: {summary}"
        ));
    }
    CoordError::Unavailable(format!("not enough nodes answered: {summary}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    fn refused(r: Refusal) -> Miss {
        Miss::Refused(r, "no".into())
    }

    #[test]
    fn shortfalls_map_to_the_refusal_every_node_agrees_on() {
        let disabled = [
            (node(1), refused(Refusal::Disabled)),
            (node(2), refused(Refusal::Disabled)),
            (node(3), refused(Refusal::NotFound)),
        ];
        assert!(matches!(shortfall(3, 0, &disabled, false), CoordError::Disabled(_)));
        assert!(matches!(
            shortfall(3, 0, &[(node(1), refused(Refusal::NotFound))], false),
            CoordError::VersionNotFound(_)
        ));
        assert!(matches!(
            shortfall(3, 0, &[(node(1), refused(Refusal::UsageNotAllowed))], false),
            CoordError::UsageNotAllowed(_)
        ));
        let mixed = [(node(1), refused(Refusal::Disabled)), (node(2), Miss::Unreachable("down".into()))];
        assert!(matches!(shortfall(3, 1, &mixed, false), CoordError::Unavailable(_)));
        let invalid = [(node(1), refused(Refusal::Invalid)), (node(2), Miss::Unreachable("down".into()))];
        assert!(matches!(shortfall(3, 1, &invalid, false), CoordError::Invalid(_)));
        assert!(
            matches!(shortfall(4, 3, &[(node(2), Miss::Invalid)], true), CoordError::Unavailable(m) if m.contains("consistent"))
        );
    }

    #[test]
    fn refusals_as_statuses_and_as_items_mean_the_same() {
        let disabled = hyok_proto::Reason::KeyDisabled.attach(Status::failed_precondition("disabled"));
        assert!(matches!(Miss::of_status(&disabled), Miss::Refused(Refusal::Disabled, _)));
        assert!(matches!(
            Miss::of_item(pb::item_error::Code::Disabled, String::new()),
            Miss::Refused(Refusal::Disabled, _)
        ));
        assert!(matches!(Miss::of_status(&Status::not_found("x")), Miss::Refused(Refusal::NotFound, _)));
        assert!(matches!(
            Miss::of_item(pb::item_error::Code::NotFound, String::new()),
            Miss::Refused(Refusal::NotFound, _)
        ));
        assert!(matches!(Miss::of_status(&Status::unavailable("x")), Miss::Unreachable(_)));
        assert!(matches!(Miss::of_status(&Status::resource_exhausted("queue full")), Miss::Unreachable(_)));
    }

    #[test]
    fn the_requests_own_deadline_passing_never_marks_a_node_down() {
        let past = Instant::now() - Duration::from_millis(1);
        let timed_out = past_deadline(Status::cancelled("Timeout expired"), past);
        assert_eq!(timed_out.code(), tonic::Code::DeadlineExceeded);
        assert!(!is_transport_failure(&timed_out));
        // Before the deadline, a cancelled call is the transport's doing.
        let future = Instant::now() + Duration::from_secs(5);
        assert!(is_transport_failure(&past_deadline(Status::cancelled("connection closed"), future)));
        assert_eq!(past_deadline(Status::not_found("k"), past).code(), tonic::Code::NotFound);
    }
}
