//! The tonic adapter: check the caller's role, convert the request, call [`Node`], convert back.
//! Errors become gRPC statuses in one place (`From<NodeError> for Status`).

use crate::node::{Node, NodeError};
use hyok_proto::Role;
use hyok_proto::request_id;
use hyok_proto::tls::{caller_spki_sha256, require_role};
use hyok_proto::v1 as pb;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Roles that may read a node's key state and identity, and (on a node without a manifest only)
/// run operations and DKGs. With a manifest, calls that compute, store or change anything also
/// need a coordinator certificate key the manifest pins ([`NodeService::pinned`]).
const OPERATORS: &[Role] = &[Role::Coordinator, Role::Admin];
/// Roles that may read a node's audit log.
const AUDITORS: &[Role] = &[Role::Admin];

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Invalid(m) => Status::invalid_argument(m),
            NodeError::NotFound(m) => Status::not_found(m),
            NodeError::Precondition(m) => Status::failed_precondition(m),
            NodeError::Disabled(m) => hyok_proto::Reason::KeyDisabled.attach(Status::failed_precondition(m)),
            NodeError::Exists(m) => Status::already_exists(m),
            NodeError::Manifest(m) => Status::failed_precondition(format!("refused by the cluster manifest: {m}")),
            NodeError::Denied(m) => Status::permission_denied(m),
            NodeError::Internal => Status::internal("internal error"),
        }
    }
}

/// The largest batch a node runs on its gRPC worker rather than on the blocking pool: the
/// coordinator's default `max_batch`.
pub const INLINE_ITEMS: usize = hyok_proto::DEFAULT_MAX_BATCH;

/// The `Node` gRPC service.
#[derive(Debug, Clone)]
pub struct NodeService {
    node: Arc<Node>,
}

impl NodeService {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> Self {
        NodeService { node }
    }

    /// Runs CPU-heavy node work off the async executor (in the call's log span).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Node) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, Status> {
        let node = self.node.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&node)))
            .await
            .map_err(|_| Status::internal("worker failed"))?
            .map_err(Status::from)
    }
}

impl NodeService {
    /// Runs a batch of `items` partials: on the gRPC worker itself up to [`INLINE_ITEMS`],
    /// on the blocking pool beyond.
    ///
    /// A batch is bounded work (tens of microseconds of curve arithmetic per item, then one
    /// journal append and its `fdatasync`, a fraction of a millisecond), and it is nearly all a
    /// node does: handing it to the blocking pool and back cost two thread wake-ups per call,
    /// more than the work itself for small batches. Run in place, the nodes used 8 % less CPU per
    /// XKS encrypt near, and far (50 ms each way, 32 concurrent) p50 / p99 went from
    /// 113.6 / 136.0 ms to 105.7 / 118.5 ms (README, stop 32). The price is paid when the disk
    /// stalls: the worker waits in the `fdatasync` with it, and with as many batches in flight
    /// as workers (one per core) the node serves nothing else meanwhile — a 100 ms stall here
    /// held every node's runtime for about 90 ms (README, stop 33). Its partials would wait for
    /// the disk either way. Larger batches, which only a coordinator configured past its
    /// default `max_batch` (or a hostile one) sends, go to the pool as before, so that no call
    /// holds a worker for long.
    async fn batch<T: Send + 'static>(
        &self,
        items: usize,
        f: impl FnOnce(&Node) -> Result<T, NodeError> + Send + 'static,
    ) -> Result<T, Status> {
        if items <= INLINE_ITEMS { f(&self.node).map_err(Status::from) } else { self.blocking(f).await }
    }

    /// The caller of a call that makes this node compute, store or change anything: admitted by
    /// role, and — once a manifest is installed — holding a coordinator certificate whose key
    /// the manifest pins. A refused caller is audited (`refused:RPC:unpinned`) and gets
    /// `PERMISSION_DENIED`.
    async fn pinned<T>(&self, req: &Request<T>, rpc: &'static str) -> Result<String, Status> {
        let role = require_role(req, OPERATORS)?;
        let spki = caller_spki_sha256(req);
        if self.node.caller_pinned(role == Role::Coordinator, spki.as_ref()) {
            return Ok(role.to_string());
        }
        let caller = role.to_string();
        tracing::warn!(rpc, caller, "refused a caller whose certificate key the cluster manifest does not pin");
        self.blocking(move |n| n.refuse_unpinned(rpc, &caller)).await?;
        Err(Status::permission_denied(
            "the caller's certificate key is not a coordinator key pinned in this node's cluster manifest",
        ))
    }
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeService {
    async fn get_identity(
        &self,
        req: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::GetIdentityResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, OPERATORS)?;
        Ok(Response::new(self.blocking(|n| n.identity()).await?))
    }

    async fn dkg_round1(&self, req: Request<pb::DkgRound1Request>) -> Result<Response<pb::DkgRound1Response>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        let caller = self.pinned(&req, "dkg_round1").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.dkg_round1(&req, &caller)).await?))
    }

    async fn dkg_round2(&self, req: Request<pb::DkgRound2Request>) -> Result<Response<pb::DkgRound2Response>, Status> {
        request_id::of_call(&req);
        self.pinned(&req, "dkg_round2").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.dkg_round2(&req)).await?))
    }

    async fn dkg_finish(&self, req: Request<pb::DkgFinishRequest>) -> Result<Response<pb::DkgFinishResponse>, Status> {
        request_id::of_call(&req);
        self.pinned(&req, "dkg_finish").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.dkg_finish(&req)).await?))
    }

    async fn dkg_commit(&self, req: Request<pb::DkgCommitRequest>) -> Result<Response<pb::DkgCommitResponse>, Status> {
        request_id::of_call(&req);
        let caller = self.pinned(&req, "dkg_commit").await?;
        let req = req.into_inner();
        self.blocking(move |n| n.dkg_commit(&req, &caller)).await?;
        Ok(Response::new(pb::DkgCommitResponse {}))
    }

    async fn dkg_abort(&self, req: Request<pb::DkgAbortRequest>) -> Result<Response<pb::DkgAbortResponse>, Status> {
        request_id::of_call(&req);
        self.pinned(&req, "dkg_abort").await?;
        let req = req.into_inner();
        self.blocking(move |n| n.dkg_abort(&req)).await?;
        Ok(Response::new(pb::DkgAbortResponse {}))
    }

    async fn finalize_reshare(
        &self,
        req: Request<pb::FinalizeReshareRequest>,
    ) -> Result<Response<pb::FinalizeReshareResponse>, Status> {
        request_id::of_call(&req);
        let caller = self.pinned(&req, "finalize_reshare").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.finalize_reshare(&req, &caller)).await?))
    }

    async fn commit_epoch(
        &self,
        req: Request<pb::CommitEpochRequest>,
    ) -> Result<Response<pb::CommitEpochResponse>, Status> {
        request_id::of_call(&req);
        let caller = self.pinned(&req, "commit_epoch").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.commit_epoch(&req, &caller)).await?))
    }

    async fn abort_epoch(
        &self,
        req: Request<pb::AbortEpochRequest>,
    ) -> Result<Response<pb::AbortEpochResponse>, Status> {
        request_id::of_call(&req);
        let caller = self.pinned(&req, "abort_epoch").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.abort_epoch(&req, &caller)).await?))
    }

    async fn evaluate_batch(
        &self,
        req: Request<pb::EvaluateBatchRequest>,
    ) -> Result<Response<pb::EvaluateBatchResponse>, Status> {
        request_id::record_batch(req.get_ref().items.iter().map(|i| i.request_id.as_str()));
        let caller = self.pinned(&req, "evaluate_batch").await?;
        let items = req.into_inner().items;
        Ok(Response::new(self.batch(items.len(), move |n| n.evaluate_batch(&items, &caller)).await?))
    }

    async fn unwrap_batch(
        &self,
        req: Request<pb::UnwrapBatchRequest>,
    ) -> Result<Response<pb::UnwrapBatchResponse>, Status> {
        request_id::record_batch(req.get_ref().items.iter().map(|i| i.request_id.as_str()));
        let caller = self.pinned(&req, "unwrap_batch").await?;
        let items = req.into_inner().items;
        let results = self.batch(items.len(), move |n| n.unwrap_batch(&items, &caller)).await?;
        Ok(Response::new(pb::UnwrapBatchResponse { results }))
    }

    async fn get_key_state(&self, req: Request<pb::GetKeyStateRequest>) -> Result<Response<pb::NodeKeyState>, Status> {
        request_id::of_call(&req);
        require_role(&req, OPERATORS)?;
        let key_id = req.into_inner().key_id;
        Ok(Response::new(self.blocking(move |n| n.key_state(&key_id)).await?))
    }

    async fn list_key_states(
        &self,
        req: Request<pb::ListKeyStatesRequest>,
    ) -> Result<Response<pb::ListKeyStatesResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, OPERATORS)?;
        let keys = self.blocking(|n| n.key_states()).await?;
        Ok(Response::new(pb::ListKeyStatesResponse { keys }))
    }

    async fn set_key_enabled(
        &self,
        req: Request<pb::SetKeyEnabledRequest>,
    ) -> Result<Response<pb::NodeKeyState>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        let caller = self.pinned(&req, "set_key_enabled").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.set_enabled(&req, &caller)).await?))
    }

    async fn rsa_store(&self, req: Request<pb::RsaStoreRequest>) -> Result<Response<pb::RsaStoreResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        let caller = self.pinned(&req, "rsa_store").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.rsa_store(&req, &caller)).await?))
    }

    async fn rsa_commit(&self, req: Request<pb::RsaCommitRequest>) -> Result<Response<pb::RsaCommitResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        let caller = self.pinned(&req, "rsa_commit").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.rsa_commit(&req, &caller)).await?))
    }

    async fn rsa_partial(
        &self,
        req: Request<pb::RsaPartialRequest>,
    ) -> Result<Response<pb::RsaPartialResponse>, Status> {
        let req = request_id::adopt(req, |r| &mut r.request_id);
        let caller = self.pinned(&req, "rsa_partial").await?;
        let req = req.into_inner();
        Ok(Response::new(self.blocking(move |n| n.rsa_partial(&req, &caller)).await?))
    }

    async fn get_rsa_key_state(
        &self,
        req: Request<pb::GetRsaKeyStateRequest>,
    ) -> Result<Response<pb::NodeRsaKeyState>, Status> {
        request_id::of_call(&req);
        require_role(&req, OPERATORS)?;
        let name = req.into_inner().name;
        Ok(Response::new(self.blocking(move |n| n.rsa_key_state(&name)).await?))
    }

    async fn list_rsa_key_states(
        &self,
        req: Request<pb::ListRsaKeyStatesRequest>,
    ) -> Result<Response<pb::ListRsaKeyStatesResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, OPERATORS)?;
        let keys = self.blocking(|n| n.rsa_key_states()).await?;
        Ok(Response::new(pb::ListRsaKeyStatesResponse { keys }))
    }

    async fn read_audit(&self, req: Request<pb::ReadAuditRequest>) -> Result<Response<pb::ReadAuditResponse>, Status> {
        request_id::of_call(&req);
        require_role(&req, AUDITORS)?;
        let req = req.into_inner();
        let (entries, head) =
            self.blocking(move |n| Ok((n.read_audit(req.from_seq, req.limit)?, n.signed_audit_head()?))).await?;
        Ok(Response::new(pb::ReadAuditResponse { entries, head: Some(head) }))
    }
}
