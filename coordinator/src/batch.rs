//! Natural batching of partial requests to one node.
//!
//! Every request item goes into a bounded queue for its node. A worker takes whatever is
//! waiting (up to `max_batch` items) and sends it as one `EvaluateBatch` or `UnwrapBatch` call.
//! Under light load a batch holds one item and costs one round trip; under heavy load items
//! pile up while calls are in flight and travel together, so the node's per-call costs (TLS
//! record, task hop, the audit flush) are shared. How many calls may be in flight is sized
//! from the node's call time ([`next`]): waiting items get a call of their own unless one in
//! flight is due back soon, so a node far away is never a queue of items waiting for a slot;
//! a node close by has one call in flight (another only once that one is overdue), so under
//! load it gets full batches; `max_in_flight` is the ceiling.
//! A full queue is refused at once ([`Submit::Overloaded`]): the caller asks another node rather
//! than waiting in an unbounded line.

use crate::fanout::Reply;
use crate::metadata::KeyView;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::whole_body::WholeChannel;
use hyok_threshold::dprf::{self, BatchItem, BatchProof, HashedInput, PartialValue};
use hyok_threshold::{Coefficient, DeferredCheck, Wire};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// What one item comes back as: the node's answer for it, or the call's failure.
pub type ItemResult = Reply;

/// A kind of batched node call.
pub trait BatchKind: Send + 'static {
    /// One request item.
    type Item: Send + 'static;
    /// Sends the items as one call; the answer holds one reply per item, in order.
    fn call(
        client: NodeClient<WholeChannel>,
        items: Vec<Self::Item>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Reply>, Status>> + Send;
}

/// DPRF partial evaluations.
#[derive(Debug)]
pub struct Evaluate;

/// One DPRF evaluation to ask a node for, with what its answer is checked against.
#[derive(Debug)]
pub struct EvaluateJob {
    /// What the node is sent.
    pub item: pb::EvaluateItem,
    /// The input the node evaluates (for an encryption, on the seed it derives), hashed once
    /// for every node asked.
    pub input: Arc<HashedInput>,
    /// The key's view that holds `item.version`'s trusted package.
    pub view: Arc<KeyView>,
    /// The coefficient `item` asks the node to apply (as sent in `item.coefficient`).
    pub coefficient: Coefficient,
    /// What the value combines to is checked another way (decryption's AEAD tag): its batch
    /// proof may be checked only when that check fails, if every item it covers is so too.
    pub checked_by_result: bool,
}

impl BatchKind for Evaluate {
    type Item = EvaluateJob;
    async fn call(
        mut client: NodeClient<WholeChannel>,
        jobs: Vec<EvaluateJob>,
        deadline: Instant,
    ) -> Result<Vec<Reply>, Status> {
        let shares: Vec<Share> =
            jobs.iter().map(|j| (j.item.key_id.clone(), j.item.version, j.item.generation)).collect();
        let (items, expected): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .map(|j| {
                let checked_by_result = j.checked_by_result;
                (j.item, Expected { input: j.input, view: j.view, coefficient: j.coefficient, checked_by_result })
            })
            .unzip();
        let mut request = tonic::Request::new(pb::EvaluateBatchRequest { items });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let answer = client.evaluate_batch(request).await?.into_inner();
        Ok(check_proofs(&shares, &expected, answer))
    }
}

/// What names the share an item is answered with: key id, version, generation.
type Share = (String, u32, Option<u32>);

/// What an item's value is checked against: its input, the view holding its version's
/// package, and the coefficient the node was asked to apply; and whether the check may wait.
struct Expected {
    input: Arc<HashedInput>,
    view: Arc<KeyView>,
    coefficient: Coefficient,
    checked_by_result: bool,
}

/// A node's batch proof over values that are all checked by what they combine to (a tag): run
/// only when a value it covers must be verified, once for the batch.
#[derive(Debug)]
struct BatchCheck {
    view: Arc<KeyView>,
    version: u32,
    items: Vec<(Arc<HashedInput>, Coefficient)>,
    values: Vec<PartialValue>,
    proof: BatchProof,
    verdict: std::sync::OnceLock<bool>,
}

impl DeferredCheck for BatchCheck {
    fn holds(&self) -> bool {
        *self.verdict.get_or_init(|| {
            let items: Vec<BatchItem<'_>> = self.items.iter().map(|(input, c)| (input.as_ref(), *c)).collect();
            verify_group(&self.view, self.version, &items, &self.values, &self.proof).is_some()
        })
    }
}

/// A node's batch proof checked over `values` for `items` of `version`: the partials when it
/// holds; `None` (logged) when it does not, or the view holds no such version.
fn verify_group(
    view: &KeyView,
    version: u32,
    items: &[BatchItem<'_>],
    values: &[PartialValue],
    proof: &BatchProof,
) -> Option<Vec<hyok_threshold::PartialEvaluation>> {
    let trusted = view.version(version).ok()?;
    let verified = dprf::vartime_verify_batch(&trusted.package, items, values, proof, &mut rand::rng()).ok();
    if verified.is_none() {
        tracing::warn!(key_id = %view.name, version, node = %proof.node(), "a node's batch proof does not verify");
    }
    verified
}

/// One reply per item of a node's batch answer: a value becomes a partial only through the
/// batch proof that covers it, and every value of a proof that fails (or of none, or of one
/// that mixes key versions or lists an item twice) is an invalid partial of this node.
fn check_proofs(items: &[Share], expected: &[Expected], answer: pb::EvaluateBatchResponse) -> Vec<Reply> {
    let n = items.len();
    if answer.results.len() != n {
        let status = Status::internal(format!("node answered {} items of {n}", answer.results.len()));
        return (0..n).map(|_| Reply::Failed(status.clone())).collect();
    }
    let mut values: Vec<Option<PartialValue>> = Vec::with_capacity(n);
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(n);
    for result in answer.results {
        match result.result {
            Some(pb::partial_result::Result::Partial(bytes)) => {
                // A value not proven below stays invalid.
                values.push(PartialValue::from_bytes(&bytes).ok());
                replies.push(Some(Reply::Invalid));
            }
            other => {
                values.push(None);
                replies.push(Some(Reply::from(Ok(pb::PartialResult { result: other }))));
            }
        }
    }
    let mut covered = vec![false; n];
    for group in answer.proofs {
        let indices: Vec<usize> = group.items.iter().map(|i| *i as usize).collect();
        let fits = !indices.is_empty()
            && indices.iter().all(|i| *i < n && !covered[*i] && values[*i].is_some())
            && indices.windows(2).all(|w| w[0] < w[1])
            && indices.iter().all(|i| items[*i] == items[indices[0]]);
        if !fits {
            continue;
        }
        for i in &indices {
            covered[*i] = true;
        }
        let (_, version, _) = &items[indices[0]];
        let view = &expected[indices[0]].view;
        let Ok(proof) = BatchProof::from_bytes(&group.proof) else { continue };
        let group_values: Vec<PartialValue> = indices.iter().filter_map(|i| values[*i].clone()).collect();
        if indices.iter().all(|i| expected[*i].checked_by_result) {
            let check: Arc<dyn DeferredCheck> = Arc::new(BatchCheck {
                view: Arc::clone(view),
                version: *version,
                items: indices.iter().map(|i| (Arc::clone(&expected[*i].input), expected[*i].coefficient)).collect(),
                values: group_values.clone(),
                proof,
                verdict: std::sync::OnceLock::new(),
            });
            for (i, value) in indices.iter().zip(&group_values) {
                let partial = value.with_deferred_check(expected[*i].coefficient, Arc::clone(&check));
                replies[*i] = Some(Reply::Verified(Box::new(partial)));
            }
            continue;
        }
        let inputs: Vec<BatchItem<'_>> =
            indices.iter().map(|i| (expected[*i].input.as_ref(), expected[*i].coefficient)).collect();
        for (i, partial) in
            indices.iter().zip(verify_group(view, *version, &inputs, &group_values, &proof).into_iter().flatten())
        {
            replies[*i] = Some(Reply::Verified(Box::new(partial)));
        }
    }
    replies.into_iter().map(|r| r.unwrap_or(Reply::Invalid)).collect()
}

/// KEM partial unwraps.
#[derive(Debug)]
pub struct Unwrap;

impl BatchKind for Unwrap {
    type Item = pb::UnwrapItem;
    async fn call(
        mut client: NodeClient<WholeChannel>,
        items: Vec<pb::UnwrapItem>,
        deadline: Instant,
    ) -> Result<Vec<Reply>, Status> {
        let mut request = tonic::Request::new(pb::UnwrapBatchRequest { items });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        Ok(client.unwrap_batch(request).await?.into_inner().results.into_iter().map(|r| Reply::from(Ok(r))).collect())
    }
}

struct Job<I> {
    item: I,
    deadline: Instant,
    reply: oneshot::Sender<ItemResult>,
}

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Submit {
    /// The node's queue is full.
    Overloaded,
    /// The worker is gone (the coordinator is shutting down).
    Closed,
}

/// The queue in front of one node for one kind of call.
#[derive(Debug)]
pub struct Batcher<K: BatchKind> {
    tx: mpsc::Sender<Job<K::Item>>,
}

impl<I> std::fmt::Debug for Job<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl<K: BatchKind> Batcher<K> {
    /// Starts the worker for `client` (must run inside a Tokio runtime).
    pub fn spawn(client: NodeClient<WholeChannel>, max_batch: usize, max_in_flight: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue);
        tokio::spawn(worker::<K>(client, rx, max_batch, max_in_flight));
        Batcher { tx }
    }

    /// Queues `item`; the returned receiver yields its result.
    pub fn submit(&self, item: K::Item, deadline: Instant) -> Result<oneshot::Receiver<ItemResult>, Submit> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(Job { item, deadline, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Submit::Overloaded,
            mpsc::error::TrySendError::Closed(_) => Submit::Closed,
        })?;
        Ok(rx)
    }

    /// Queues `item` and waits for its result, as one node's [`Reply`] to a gather. A full
    /// queue or a stopped worker is a failure of this node (not a transport failure), so the
    /// gather asks another.
    pub fn ask(&self, item: K::Item, deadline: Instant) -> impl Future<Output = Reply> + Send + use<K> {
        let queued = self.submit(item, deadline);
        async move {
            match queued {
                Ok(rx) => rx.await.unwrap_or_else(|_| Reply::Failed(Status::aborted("batch worker dropped the item"))),
                Err(why) => Reply::Failed(Status::resource_exhausted(format!("node queue: {why:?}"))),
            }
        }
    }
}

/// A node whose fastest recent call came back within this is close by (same host or same
/// site): items wait for the call in flight (one at a time), unless it is overdue. Judged on the
/// fastest call, not the smoothed one, so that load (which lengthens every call) does not make a
/// close node look far, and distance (which no call beats) is never taken for load.
const NEAR: Duration = Duration::from_millis(5);

/// How long the fastest call time is remembered before the window starts again.
const FLOOR_WINDOW: Duration = Duration::from_secs(10);

/// The longest items wait for a call in flight to come back rather than open their own.
const PATIENCE: Duration = Duration::from_millis(1);

/// What the worker does with items waiting for a call.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Send them now, in a call of their own.
    Open,
    /// Wait for a call in flight to come back (they travel in the next one), or until `Some`
    /// instant, when the call they wait on becomes overdue.
    Wait(Option<Instant>),
}

/// Whether items that start waiting now get a call of their own. `started` holds the start
/// times of the calls in flight, oldest first; `srtt` is the smoothed call time and `floor` the
/// fastest in the last [`FLOOR_WINDOW`].
///
/// With no call in flight, always. At the ceiling, never. For a node close by (`floor` within
/// [`NEAR`]), only once every call in flight is overdue (older than twice `srtt` and a
/// patience): otherwise the items wait for it and travel together in the next call, so the
/// node's per-call costs — the thread hand-offs, the audit flush, the TLS record — are shared
/// by all that queued meanwhile (one call in flight instead of two raised the items per call
/// from 4 to 7 at 32 concurrent XKS encrypts, and cut the nodes' CPU per encrypt by about a
/// tenth). For a node farther away,
/// when no call in flight is due back within [`PATIENCE`] (or `srtt / 8`, if less): waiting
/// for a slot would cost a good part of a round trip, a call costs far less; items that do
/// wait go as soon as a call comes back (the worker does that), or when the call they wait on
/// is a patience late. A call older than twice `srtt` is not expected back soon.
fn next(
    started: &VecDeque<Instant>,
    now: Instant,
    (srtt, floor): (Option<Duration>, Option<Duration>),
    ceiling: usize,
) -> Next {
    if started.is_empty() {
        return Next::Open;
    }
    if started.len() >= ceiling {
        return Next::Wait(None);
    }
    let Some(srtt) = srtt else { return Next::Wait(None) };
    if floor.is_some_and(|f| f < NEAR) {
        // Close by: the newest call is due back within milliseconds; a stalled one is not
        // waited on past twice its usual time.
        let overdue = started.back().map(|newest| *newest + srtt * 2 + PATIENCE);
        return match overdue {
            Some(at) if at > now => Next::Wait(Some(at)),
            _ => Next::Open,
        };
    }
    let patience = (srtt / 8).min(PATIENCE);
    // The call due back soonest among those not yet overdue.
    let due = started.iter().map(|s| *s + srtt).find(|due| *due + srtt > now);
    match due {
        Some(due) if due.saturating_duration_since(now) <= patience => Next::Wait(Some(due + patience)),
        _ => Next::Open,
    }
}

async fn worker<K: BatchKind>(
    client: NodeClient<WholeChannel>,
    mut rx: mpsc::Receiver<Job<K::Item>>,
    max_batch: usize,
    max_in_flight: usize,
) {
    // Calls in flight (id, start), oldest first; their ends come back on `done`.
    let mut started: VecDeque<(u64, Instant)> = VecDeque::new();
    let (done_tx, mut done) = mpsc::unbounded_channel::<(u64, Duration)>();
    let mut pending: VecDeque<Job<K::Item>> = VecDeque::new();
    let mut srtt: Option<Duration> = None;
    // The fastest call since `.1`.
    let mut floor: Option<(Duration, Instant)> = None;
    let mut ids = 0u64;
    let mut open = true;
    // A call came back (or the one waited on is overdue): what waits for it goes now.
    let mut freed = false;
    loop {
        let mut wake = None;
        freed &= !pending.is_empty();
        while !pending.is_empty() {
            let now = Instant::now();
            if !std::mem::take(&mut freed) || started.len() >= max_in_flight {
                let starts: VecDeque<Instant> = started.iter().map(|(_, s)| *s).collect();
                if let Next::Wait(at) = next(&starts, now, (srtt, floor.map(|f| f.0)), max_in_flight) {
                    wake = at;
                    break;
                }
            }
            // Whatever queued up meanwhile travels together.
            while pending.len() < max_batch {
                match rx.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(_) => break,
                }
            }
            let take = pending.len().min(max_batch);
            let mut batch: Vec<Job<K::Item>> = pending.drain(..take).collect();
            // Items whose caller gave up (deadline passed or receiver dropped) are not sent.
            batch.retain(|job| job.deadline > now && !job.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            ids += 1;
            started.push_back((ids, now));
            tokio::spawn(send::<K>(client.clone(), batch, (ids, done_tx.clone())));
        }
        if !open && pending.is_empty() && started.is_empty() {
            return;
        }
        tokio::select! {
            job = rx.recv(), if open && pending.len() < max_batch => match job {
                Some(job) => pending.push_back(job),
                None => open = false,
            },
            Some((id, took)) = done.recv() => {
                started.retain(|(i, _)| *i != id);
                srtt = Some(srtt.map_or(took, |s| (s * 7 + took) / 8));
                let now = Instant::now();
                floor = match floor {
                    Some((fastest, since)) if now.duration_since(since) < FLOOR_WINDOW => Some((fastest.min(took), since)),
                    _ => Some((took, now)),
                };
                freed = true;
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => freed = true,
        }
    }
}

/// Sends one batch and hands each item its result; reports the call's end on `done`.
async fn send<K: BatchKind>(
    client: NodeClient<WholeChannel>,
    batch: Vec<Job<K::Item>>,
    (id, done): (u64, mpsc::UnboundedSender<(u64, Duration)>),
) {
    let started = Instant::now();
    let deadline = batch.iter().map(|j| j.deadline).max().unwrap_or(started);
    let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.item, j.reply)).unzip();
    let expected = items.len();
    // The requests' own deadline passing is no sign that the node is down.
    let answer =
        K::call(client, items, deadline).await.map_err(|status| crate::fanout::past_deadline(status, deadline));
    let _ = done.send((id, started.elapsed()));
    match answer {
        Ok(results) if results.len() == expected => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Ok(results) => {
            let status = Status::internal(format!("node answered {} items of {expected}", results.len()));
            for reply in replies {
                let _ = reply.send(Reply::Failed(status.clone()));
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Reply::Failed(status.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_call_in_flight_items_always_go_and_at_the_ceiling_never() {
        let now = Instant::now();
        assert_eq!(next(&VecDeque::new(), now, (None, None), 32), Next::Open);
        assert_eq!(next(&VecDeque::new(), now, (Some(ms(100)), Some(ms(100))), 1), Next::Open);
        let full: VecDeque<Instant> = (0..4).map(|_| now).collect();
        assert_eq!(next(&full, now, (Some(ms(100)), Some(ms(100))), 4), Next::Wait(None));
        // A ceiling of one is honoured too.
        assert_eq!(next(&VecDeque::from([now]), now, (Some(ms(100)), Some(ms(100))), 1), Next::Wait(None));
        assert_eq!(next(&VecDeque::from([now]), now, (Some(ms(1)), Some(ms(1))), 1), Next::Wait(None));
    }

    #[tokio::test(start_paused = true)]
    async fn close_by_items_wait_for_the_call_in_flight_unless_it_is_overdue() {
        let start = Instant::now();
        tokio::time::advance(ms(3)).await;
        let now = Instant::now();
        // Calls of 2 ms, one sent 3 ms ago: wait for it, at most until it is overdue (2 · 2 ms
        // and a patience after it was sent).
        assert_eq!(
            next(&VecDeque::from([start]), now, (Some(ms(2)), Some(ms(1))), 32),
            Next::Wait(Some(start + ms(5)))
        );
        // Two in flight: the newest decides.
        let two = VecDeque::from([start - ms(10), start]);
        assert_eq!(next(&two, now, (Some(ms(2)), Some(ms(1))), 32), Next::Wait(Some(start + ms(5))));
        // Overdue (a stalled call): a call of their own.
        tokio::time::advance(ms(2)).await;
        assert_eq!(next(&VecDeque::from([start]), Instant::now(), (Some(ms(2)), Some(ms(1))), 32), Next::Open);
        // Loaded (calls of 11 ms, the fastest 1 ms), sent 3 ms ago: still waited on.
        assert_eq!(
            next(&VecDeque::from([start]), now, (Some(ms(11)), Some(ms(1))), 32),
            Next::Wait(Some(start + ms(23)))
        );
        // No call faster than 16 ms: not close by, whatever the load; none due back within the
        // patience, so a call of their own.
        assert_eq!(next(&VecDeque::from([start]), now, (Some(ms(17)), Some(ms(16))), 32), Next::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn far_away_items_get_a_call_of_their_own_close_by_they_wait_for_one_due_back() {
        let start = Instant::now();
        tokio::time::advance(ms(10)).await;
        let now = Instant::now();
        // A node 100 ms away: two calls just sent, neither back for ~90 ms: open a third.
        let far = VecDeque::from([start, start + ms(5)]);
        assert_eq!(next(&far, now, (Some(ms(100)), Some(ms(100))), 32), Next::Open);
        // Calls of 30 ms, the first due back in 1 ms, within the patience: wait for it, at most
        // a patience past its due time.
        let calls = VecDeque::from([start - ms(19), start + ms(5)]);
        assert_eq!(next(&calls, now, (Some(ms(30)), Some(ms(30))), 32), Next::Wait(Some(start + ms(12))));
        // Due back in 2 ms: more than the patience, a call of their own.
        assert_eq!(next(&calls, now, (Some(ms(31)), Some(ms(31))), 32), Next::Open);
        // Close by (the fastest call 1 ms; loaded, calls of 11 ms), items wait for the newest
        // call until it is overdue.
        let near = VecDeque::from([start, start + ms(5)]);
        assert_eq!(next(&near, now, (Some(ms(11)), Some(ms(1))), 32), Next::Wait(Some(start + ms(28))));
        // A call overdue (older than twice srtt) is not waited on.
        tokio::time::advance(ms(20)).await;
        let later = Instant::now();
        let stuck = VecDeque::from([start - ms(40), start + ms(25)]);
        assert_eq!(next(&stuck, later, (Some(ms(30)), Some(ms(30))), 32), Next::Open);
    }

    mod proofs {
        use super::super::*;
        use crate::metadata::{Trusted, View};
        use curve25519_dalek::Scalar;
        use hyok_threshold::dealer::dangerous_deal;
        use hyok_threshold::dprf::DprfInput;
        use hyok_threshold::{KeyShare, NodeId};
        use std::collections::BTreeMap;

        fn node(i: u16) -> NodeId {
            NodeId::new(i).unwrap()
        }

        struct Setup {
            shares: Vec<KeyShare>,
            items: Vec<Share>,
            expected: Vec<Expected>,
        }

        /// Five nodes, t = 3; items 0–2 under key `k` version 1, each asking node 2 for its
        /// Lagrange coefficient over nodes 1–3; item 3 under key `other`, with none.
        fn setup() -> Setup {
            let mut rng = rand::rng();
            let ids: Vec<NodeId> = (1..=5).map(|i| NodeId::new(i).unwrap()).collect();
            let (shares, package) = dangerous_deal(&Scalar::random(&mut rng), 3, &ids, &mut rng).unwrap();
            let trusted = Trusted { version: 1, generation: 0, package, package_bytes: Vec::new(), created_at_ms: 0 };
            let view = Arc::new(View {
                name: "k".into(),
                usages: Vec::new(),
                versions: BTreeMap::from([(1, trusted)]),
                enabled_on: Vec::new(),
                inconsistent: Vec::new(),
            });
            let keys = ["k", "k", "k", "other"];
            let items = keys.iter().map(|k| ((*k).to_owned(), 1, Some(0))).collect();
            let planned = &ids[..3];
            let expected = keys
                .iter()
                .map(|k| Expected {
                    checked_by_result: false,
                    input: Arc::new(HashedInput::new(DprfInput::random(k, 1, &mut rng).unwrap())),
                    view: Arc::clone(&view),
                    coefficient: if *k == "k" {
                        Coefficient::lagrange(planned, ids[1]).unwrap()
                    } else {
                        Coefficient::ONE
                    },
                })
                .collect();
            Setup { shares, items, expected }
        }

        /// Node `node + 1`'s values and proof for items `at`, with the coefficients asked.
        fn values(setup: &Setup, node: usize, at: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
            values_with(setup, node, at, |i| setup.expected[i].coefficient)
        }

        fn values_with(
            setup: &Setup,
            node: usize,
            at: &[usize],
            coefficient: impl Fn(usize) -> Coefficient,
        ) -> (Vec<Vec<u8>>, Vec<u8>) {
            let inputs: Vec<BatchItem<'_>> =
                at.iter().map(|i| (setup.expected[*i].input.as_ref(), coefficient(*i))).collect();
            let (values, proof) = dprf::evaluate_batch(&setup.shares[node], &inputs, &mut rand::rng());
            (values.iter().map(Wire::to_bytes).collect(), proof.to_bytes())
        }

        fn answer(results: Vec<Option<Vec<u8>>>, proofs: Vec<(Vec<u32>, Vec<u8>)>) -> pb::EvaluateBatchResponse {
            pb::EvaluateBatchResponse {
                results: results
                    .into_iter()
                    .map(|r| pb::PartialResult {
                        result: Some(match r {
                            Some(bytes) => pb::partial_result::Result::Partial(bytes),
                            None => pb::partial_result::Result::Error(pb::ItemError {
                                code: pb::item_error::Code::NotFound as i32,
                                message: "no such key".into(),
                            }),
                        }),
                    })
                    .collect(),
                proofs: proofs.into_iter().map(|(items, proof)| pb::BatchProof { items, proof }).collect(),
            }
        }

        fn kinds(replies: &[Reply]) -> Vec<&'static str> {
            replies
                .iter()
                .map(|r| match r {
                    Reply::Verified(p) if p.node() == NodeId::new(2).unwrap() => "verified",
                    Reply::Verified(_) => "verified as another node",
                    Reply::Invalid => "invalid",
                    Reply::Refused(..) => "refused",
                    Reply::Partial(_) => "unchecked",
                    Reply::Failed(_) => "failed",
                })
                .collect()
        }

        /// Node 2's honest answer verifies, whether it proves items 0–2 together or apart; the
        /// refused item 3 stays a refusal.
        #[test]
        fn an_honest_batch_verifies_in_one_proof_or_several() {
            let s = setup();
            let (v, proof) = values(&s, 1, &[0, 1, 2]);
            let results = vec![Some(v[0].clone()), Some(v[1].clone()), Some(v[2].clone()), None];
            let one = check_proofs(&s.items, &s.expected, answer(results.clone(), vec![(vec![0, 1, 2], proof)]));
            assert_eq!(kinds(&one), ["verified", "verified", "verified", "refused"]);
            let (a, pa) = values(&s, 1, &[0, 2]);
            let (b, pb_) = values(&s, 1, &[1]);
            let split = answer(
                vec![Some(a[0].clone()), Some(b[0].clone()), Some(a[1].clone()), None],
                vec![(vec![1], pb_), (vec![0, 2], pa)],
            );
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, split)),
                ["verified", "verified", "verified", "refused"]
            );
        }

        /// What a lying node can send instead: every value of a batch whose proof fails, or
        /// that no proof covers, is invalid, and nothing unchecked gets through.
        #[test]
        fn a_lying_nodes_values_are_all_invalid() {
            let s = setup();
            let (v, proof) = values(&s, 1, &[0, 1, 2]);
            let honest =
                |proofs| answer(vec![Some(v[0].clone()), Some(v[1].clone()), Some(v[2].clone()), None], proofs);
            let all_invalid = ["invalid", "invalid", "invalid", "refused"];
            // A value swapped for another item's.
            let swapped = answer(
                vec![Some(v[0].clone()), Some(v[0].clone()), Some(v[2].clone()), None],
                vec![(vec![0, 1, 2], proof.clone())],
            );
            assert_eq!(kinds(&check_proofs(&s.items, &s.expected, swapped)), all_invalid);
            // No proof; a proof over fewer items than it was made for; items out of order or twice.
            assert_eq!(kinds(&check_proofs(&s.items, &s.expected, honest(vec![]))), all_invalid);
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, honest(vec![(vec![0, 1], proof.clone())]))),
                all_invalid
            );
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, honest(vec![(vec![1, 0, 2], proof.clone())]))),
                all_invalid
            );
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, honest(vec![(vec![0, 0, 1, 2], proof.clone())]))),
                all_invalid
            );
            // The same proof twice, or one more proof that lists a covered item again.
            let twice = honest(vec![(vec![0, 1, 2], proof.clone()), (vec![0, 1, 2], proof.clone())]);
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, twice)),
                ["verified", "verified", "verified", "refused"]
            );
            // A proof over the refused item, or over items of two keys.
            let (w, mixed) = values(&s, 1, &[0, 3]);
            let over_two_keys =
                answer(vec![Some(w[0].clone()), None, None, Some(w[1].clone())], vec![(vec![0, 3], mixed)]);
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, over_two_keys)),
                ["invalid", "refused", "refused", "invalid"]
            );
            assert_eq!(
                kinds(&check_proofs(&s.items, &s.expected, honest(vec![(vec![0, 1, 2, 3], proof.clone())]))),
                all_invalid
            );
            // Another node's values and proof under node 2's answer are node 3's, never node 2's.
            let (x, theirs) = values(&s, 2, &[0, 1, 2]);
            let foreign = answer(
                vec![Some(x[0].clone()), Some(x[1].clone()), Some(x[2].clone()), None],
                vec![(vec![0, 1, 2], theirs)],
            );
            assert_eq!(kinds(&check_proofs(&s.items, &s.expected, foreign))[..3], ["verified as another node"; 3]);
            // Too few results.
            let short = answer(vec![Some(v[0].clone())], vec![(vec![0], proof)]);
            assert_eq!(kinds(&check_proofs(&s.items, &s.expected, short)), ["failed"; 4]);
            // Values made with no coefficient, or another node's, where node 2's was asked.
            for wrong in [Coefficient::ONE, Coefficient::lagrange(&[node(1), node(2), node(3)], node(3)).unwrap()] {
                let (u, made) = values_with(&s, 1, &[0, 1, 2], |_| wrong);
                let other = answer(
                    vec![Some(u[0].clone()), Some(u[1].clone()), Some(u[2].clone()), None],
                    vec![(vec![0, 1, 2], made)],
                );
                assert_eq!(kinds(&check_proofs(&s.items, &s.expected, other)), all_invalid);
            }
        }

        /// Values whose results a tag checks (decryption) keep their batch's check for later: an
        /// honest batch's values pass it when it runs, a lying node's fail it and name the node;
        /// one item of the batch whose result nothing checks (an encryption) makes the whole batch
        /// checked at once.
        #[test]
        fn a_batch_checked_by_its_results_is_checked_only_when_asked_and_then_names_a_liar() {
            let mut s = setup();
            for e in &mut s.expected[..3] {
                e.checked_by_result = true;
            }
            let (v, proof) = values(&s, 1, &[0, 1, 2]);
            let check = |results: Vec<Option<Vec<u8>>>, s: &Setup| {
                let replies =
                    check_proofs(&s.items, &s.expected, answer(results, vec![(vec![0, 1, 2], proof.clone())]));
                let kinds = kinds(&replies);
                let partials: Vec<hyok_threshold::PartialEvaluation> = replies
                    .into_iter()
                    .filter_map(|r| if let Reply::Verified(p) = r { Some(*p) } else { None })
                    .collect();
                (kinds, partials)
            };
            let package = &s.expected[0].view.version(1).unwrap().package;
            let input = s.expected[0].input.input().clone();
            let (honest_kinds, honest) =
                check(vec![Some(v[0].clone()), Some(v[1].clone()), Some(v[2].clone()), None], &s);
            assert_eq!(honest_kinds, ["verified", "verified", "verified", "refused"]);
            assert!(dprf::vartime_find_invalid(package, &input, &honest[..1], &mut rand::rng()).unwrap().is_empty());
            // Item 1's value swapped for item 0's: nothing checked yet, then node 2 is named.
            let (lying_kinds, lying) =
                check(vec![Some(v[0].clone()), Some(v[0].clone()), Some(v[2].clone()), None], &s);
            assert_eq!(lying_kinds, ["verified", "verified", "verified", "refused"]);
            let culprits = dprf::vartime_find_invalid(package, &input, &lying[..1], &mut rand::rng()).unwrap();
            assert_eq!(culprits, vec![node(2)], "the batch's check fails for every value it covers");
            // Item 2 an encryption: the batch is checked now, and the lie found at once.
            s.expected[2].checked_by_result = false;
            let (eager_kinds, _) = check(vec![Some(v[0].clone()), Some(v[0].clone()), Some(v[2].clone()), None], &s);
            assert_eq!(eager_kinds, ["invalid", "invalid", "invalid", "refused"]);
        }
    }

    /// A fake node `MS` milliseconds away: answers every item with its own bytes after `MS` ms,
    /// recording `(MS, items)` for each call.
    struct Fake<const MS: u64>;

    static CALLS: std::sync::Mutex<Vec<(u64, usize)>> = std::sync::Mutex::new(Vec::new());

    /// The sizes of the calls made to fakes `ms` away (the tests share one process under `cargo test`).
    fn calls(ms: u64) -> Vec<usize> {
        CALLS.lock().unwrap().iter().filter(|(d, _)| *d == ms).map(|(_, n)| *n).collect()
    }

    impl<const MS: u64> BatchKind for Fake<MS> {
        type Item = u32;
        async fn call(_: NodeClient<WholeChannel>, items: Vec<u32>, _: Instant) -> Result<Vec<Reply>, Status> {
            CALLS.lock().unwrap().push((MS, items.len()));
            tokio::time::sleep(ms(MS)).await;
            Ok(items.iter().map(|i| Reply::Partial(i.to_be_bytes().to_vec())).collect())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn far_away_items_are_not_held_back_for_a_slot() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let batcher =
            Batcher::<Fake<100>>::spawn(NodeClient::new(hyok_proto::whole_body::WholeBody::new(channel)), 64, 32, 1024);
        let deadline = Instant::now() + Duration::from_secs(5);
        // A first call teaches the worker how long calls take.
        batcher.submit(0, deadline).unwrap().await.unwrap();
        // Then one item every 15 ms: every one is answered one call time after it was queued,
        // none waits for a call in flight to come back.
        let mut waits = Vec::new();
        for i in 1..=6 {
            let queued = Instant::now();
            let rx = batcher.submit(i, deadline).unwrap();
            waits.push(tokio::spawn(async move {
                let result = rx.await.unwrap();
                (result, queued.elapsed())
            }));
            tokio::time::sleep(ms(15)).await;
        }
        for (i, wait) in waits.into_iter().enumerate() {
            let (result, took) = wait.await.unwrap();
            let expected = u32::try_from(i + 1).unwrap().to_be_bytes().to_vec();
            assert!(matches!(result, Reply::Partial(bytes) if bytes == expected), "item {}", i + 1);
            assert_eq!(took, ms(100), "item {} waited for a slot", i + 1);
        }
        assert_eq!(calls(100).len(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn close_by_items_queued_during_a_call_travel_together_in_the_next() {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        let batcher =
            Batcher::<Fake<2>>::spawn(NodeClient::new(hyok_proto::whole_body::WholeBody::new(channel)), 64, 32, 1024);
        let deadline = Instant::now() + Duration::from_secs(5);
        batcher.submit(0, deadline).unwrap().await.unwrap();
        // One item goes at once; nine queued while its call is in flight wait for it, then go
        // as one call.
        let first = batcher.submit(1, deadline).unwrap();
        tokio::task::yield_now().await;
        let rest: Vec<_> = (2..=10).map(|i| batcher.submit(i, deadline).unwrap()).collect();
        first.await.unwrap();
        for rx in rest {
            rx.await.unwrap();
        }
        assert_eq!(calls(2), vec![1, 1, 9]);
    }
}
