//! Natural batching of partial requests to one node.
//!
//! Every request item goes into a bounded queue for its node. A worker takes whatever is
//! waiting (up to `max_batch` items) and sends it as one `EvaluateBatch` or `UnwrapBatch` call,
//! with at most `max_in_flight` calls outstanding. Under light load a batch holds one item and
//! costs one round trip; under heavy load items pile up while calls are in flight and travel
//! together, so the node's per-call costs (TLS record, task hop, the audit flush) are shared.
//! A full queue is refused at once ([`Submit::Overloaded`]): the caller asks another node rather
//! than waiting in an unbounded line.

use crate::fanout::Reply;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

/// What one item comes back as: the node's per-item result, or the call's failure.
pub type ItemResult = Result<pb::PartialResult, Status>;

/// A kind of batched node call.
pub trait BatchKind: Send + 'static {
    /// One request item.
    type Item: Send + 'static;
    /// Sends the items as one call; the answer holds one result per item, in order.
    fn call(
        client: NodeClient<Channel>,
        items: Vec<Self::Item>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<pb::PartialResult>, Status>> + Send;
}

/// DPRF partial evaluations.
#[derive(Debug)]
pub struct Evaluate;

impl BatchKind for Evaluate {
    type Item = pb::EvaluateItem;
    async fn call(
        mut client: NodeClient<Channel>,
        items: Vec<pb::EvaluateItem>,
        deadline: Instant,
    ) -> Result<Vec<pb::PartialResult>, Status> {
        let mut request = tonic::Request::new(pb::EvaluateBatchRequest { items });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        Ok(client.evaluate_batch(request).await?.into_inner().results)
    }
}

/// KEM partial unwraps.
#[derive(Debug)]
pub struct Unwrap;

impl BatchKind for Unwrap {
    type Item = pb::UnwrapItem;
    async fn call(
        mut client: NodeClient<Channel>,
        items: Vec<pb::UnwrapItem>,
        deadline: Instant,
    ) -> Result<Vec<pb::PartialResult>, Status> {
        let mut request = tonic::Request::new(pb::UnwrapBatchRequest { items });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        Ok(client.unwrap_batch(request).await?.into_inner().results)
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
    pub fn spawn(client: NodeClient<Channel>, max_batch: usize, max_in_flight: usize, queue: usize) -> Self {
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
                Ok(rx) => rx
                    .await
                    .map_or_else(|_| Reply::Failed(Status::aborted("batch worker dropped the item")), Reply::from),
                Err(why) => Reply::Failed(Status::resource_exhausted(format!("node queue: {why:?}"))),
            }
        }
    }
}

async fn worker<K: BatchKind>(
    client: NodeClient<Channel>,
    mut rx: mpsc::Receiver<Job<K::Item>>,
    max_batch: usize,
    max_in_flight: usize,
) {
    let slots = Arc::new(Semaphore::new(max_in_flight));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued up while we waited for a slot travels together.
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        // Items whose caller gave up (deadline passed or receiver dropped) are not sent.
        batch.retain(|job| job.deadline > now && !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let deadline = batch.iter().map(|j| j.deadline).max().unwrap_or(now);
        let client = client.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (items, replies): (Vec<_>, Vec<_>) = batch.into_iter().map(|j| (j.item, j.reply)).unzip();
            let expected = items.len();
            match K::call(client, items, deadline).await {
                Ok(results) if results.len() == expected => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Ok(results) => {
                    let status = Status::internal(format!("node answered {} items of {expected}", results.len()));
                    for reply in replies {
                        let _ = reply.send(Err(status.clone()));
                    }
                }
                Err(status) => {
                    for reply in replies {
                        let _ = reply.send(Err(status.clone()));
                    }
                }
            }
        });
    }
}
