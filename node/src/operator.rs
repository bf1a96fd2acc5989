//! The node-local operator endpoint: a Unix domain socket, `DATA_DIR/operator.sock`, on which
//! this node's own operator vetoes a key, lifts a veto, lists vetoes, or installs and shows the
//! node's cluster manifest or its evidence policy.
//!
//! The credential is local: the socket is created mode 0600 in the node's data directory, and
//! every connection's peer credentials (`SO_PEERCRED`) must name the account that owns the
//! socket — the account the node runs as, which also owns the seal key. No cluster certificate
//! reaches it: the coordinator, an admin, or whoever holds the CA key can sign any certificate,
//! but cannot open a socket on another operator's machine. The socket is removed on a clean
//! stop; a stale one left by a crash is replaced at the next start (the store's lock, taken
//! before, guarantees no other node serves this directory).
//!
//! Protocol: one request per connection, one JSON line each way.
//!
//! ```text
//! → {"op":"veto","key":"K","reason":"R"}   {"op":"lift","key":"K"}   {"op":"list"}
//!   {"op":"manifest_install","manifest":{…the manifest file…}}   {"op":"manifest_show"}
//! ← {"status":"ok","vetoes":[{"key":"K","time_ms":…,"reason":"R"}]}   (veto: the veto in force;
//!                                                 lift: the veto lifted; list: every veto)
//! ← {"status":"ok","vetoes":[],"manifest":{"digest":"…","manifest":{…}}}   (manifest_*: the
//!                                                 manifest in force; show: absent if none)
//!   {"op":"policy_install","policy":{…the policy, files folded in…}}   {"op":"policy_show"}
//! ← {"status":"ok","vetoes":[],"policy":{"digest":"…","policy":{…secrets redacted…}}}
//!   {"op":"epoch_accept","proposal":{"from":{…manifest…},"to":{…manifest…}}}
//!   {"op":"epoch_reject"}   {"op":"epoch_show"}
//! ← {"status":"ok","vetoes":[],"epoch":{"digest":"…","proposal":{…}}}   (accept: the change
//!                                          accepted; reject: the one withdrawn; show: absent if none)
//!   {"op":"state_show"}
//! ← {"status":"ok","vetoes":[],"state":{"identity":"…","versions":[{"rsa":false,"key":"K",
//!     "version":1,"active":true,"generation":2,"previous":1,"next":3},…]}}   (public facts only)
//! ← {"status":"error","message":"…"}
//! ```
//!
//! Every change is flushed and audited before the answer is written.

use crate::manifest::ManifestFile;
use crate::node::{Node, NodeError};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line, in bytes (a manifest of many nodes).
const MAX_REQUEST: u64 = 1024 * 1024;
/// Longest answer line, in bytes (a list of many vetoes).
const MAX_RESPONSE: u64 = 16 * 1024 * 1024;
/// How long one connection may take to send its request or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// `DATA_DIR/operator.sock`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("operator.sock")
}

/// What the operator asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum OperatorRequest {
    /// Veto the key name on this node.
    Veto {
        /// The key name (EC and RSA alike).
        key: String,
        /// Why (audited; may be empty).
        #[serde(default)]
        reason: String,
    },
    /// Lift this node's veto of the key name.
    Lift {
        /// The key name.
        key: String,
    },
    /// Every veto on this node.
    List,
    /// Install (or replace) this node's cluster manifest.
    #[serde(rename = "manifest_install")]
    ManifestInstall {
        /// The manifest, in its file form.
        manifest: ManifestFile,
    },
    /// The manifest in force.
    #[serde(rename = "manifest_show")]
    ManifestShow,
    /// Install (or replace) this node's evidence policy.
    #[serde(rename = "policy_install")]
    PolicyInstall {
        /// The policy, with the files it names folded in.
        policy: hyok_evidence::policy::PolicyFile,
    },
    /// The policy in force (secrets redacted).
    #[serde(rename = "policy_show")]
    PolicyShow,
    /// Accept a membership change (signed with this node's identity key).
    #[serde(rename = "epoch_accept")]
    EpochAccept {
        /// The change, in its file form.
        proposal: crate::manifest::ProposalFile,
    },
    /// Withdraw (or refuse) the accepted membership change.
    #[serde(rename = "epoch_reject")]
    EpochReject,
    /// The accepted membership change, if any.
    #[serde(rename = "epoch_show")]
    EpochShow,
    /// This node's identity key and every key version it holds (public facts only).
    #[serde(rename = "state_show")]
    StateShow,
}

/// What a node holds, as the endpoint reports it: its identity key and, per key version, the
/// generations of its shares. Nothing secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateShown {
    /// Its identity public key, hex (what a manifest pins for it).
    pub identity: String,
    /// Every key version it holds anything of, EC and RSA.
    pub versions: Vec<VersionShown>,
}

/// One key version on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionShown {
    /// A threshold RSA key (else an EC key).
    pub rsa: bool,
    /// The key's id (EC) or name (RSA).
    pub key: String,
    /// The version.
    pub version: u32,
    /// Whether its share is ACTIVE here.
    pub active: bool,
    /// The current share's generation.
    pub generation: u32,
    /// A replaced generation still kept (until a reshare is finalized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u32>,
    /// A reshare's output not yet committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u32>,
}

/// A membership change, as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochShown {
    /// Its digest, hex (as audited by `epoch:accept` and `epoch:reject`).
    pub digest: String,
    /// The change.
    pub proposal: crate::manifest::ProposalFile,
}

/// An evidence policy, as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyShown {
    /// Its digest, hex (as audited by `policy:install`).
    pub digest: String,
    /// The policy, every secret access key replaced by `<sealed>`.
    pub policy: hyok_evidence::policy::PolicyFile,
}

/// A manifest, as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestShown {
    /// Its digest, hex (as audited by `manifest:install`).
    pub digest: String,
    /// The manifest.
    pub manifest: ManifestFile,
}

/// One veto, as the endpoint reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VetoEntry {
    /// The key name.
    pub key: String,
    /// When it was vetoed, Unix milliseconds.
    pub time_ms: u64,
    /// The operator's reason.
    pub reason: String,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum OperatorResponse {
    /// Done: what the request concerned.
    Ok(Shown),
    /// Refused or failed.
    Error {
        /// What went wrong.
        message: String,
    },
}

/// What a request that succeeded concerned; each request fills in its own part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// The vetoes concerned (see the module docs).
    pub vetoes: Vec<VetoEntry>,
    /// The manifest concerned (manifest requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestShown>,
    /// The policy concerned (policy requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<PolicyShown>>,
    /// The membership change concerned (epoch requests only: accepted, withdrawn, shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Box<EpochShown>>,
    /// The node's identity and holdings (`state_show` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<StateShown>>,
}

/// The bound endpoint; the socket file is removed when this (or the [`Endpoint::serve`] that
/// consumes it) is dropped.
#[derive(Debug)]
pub struct Endpoint {
    path: PathBuf,
    listener: UnixListener,
    owner_uid: u32,
}

impl Endpoint {
    /// Binds `DATA_DIR/operator.sock` (mode 0600), replacing a stale socket. Call it after the
    /// node's store is open (its lock keeps a second node off the directory). Needs a Tokio
    /// runtime.
    pub fn bind(data_dir: &Path) -> Result<Self> {
        let path = socket_path(data_dir);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(&path).with_context(|| format!("removing stale {}", path.display()))?;
            }
            Ok(_) => bail!("{} exists and is not a socket; move it away", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
        }
        let listener = UnixListener::bind(&path)
            .with_context(|| format!("binding the operator socket {} (path too long?)", path.display()))?;
        let mut endpoint = Endpoint { path, listener, owner_uid: u32::MAX };
        // Between bind and chmod the socket may be reachable under the umask; the peer
        // credential check on every connection closes that window.
        std::fs::set_permissions(&endpoint.path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 600 {}", endpoint.path.display()))?;
        endpoint.owner_uid = std::fs::metadata(&endpoint.path)?.uid();
        Ok(endpoint)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves operator requests for `node` until `shutdown` completes, then removes the socket.
    pub async fn serve(self, node: Arc<Node>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let node = node.clone();
                        let owner = self.owner_uid;
                        tokio::spawn(async move {
                            if let Err(e) = handle(stream, node, owner).await {
                                tracing::warn!(error = %e, "operator connection");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "operator socket accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle(stream: UnixStream, node: Arc<Node>, owner_uid: u32) -> Result<()> {
    let uid = stream.peer_cred().context("reading peer credentials")?.uid();
    let (read, mut write) = stream.into_split();
    let response = if uid != owner_uid {
        tracing::warn!(uid, "operator socket: refused a connection from another account");
        OperatorResponse::Error { message: format!("uid {uid} is not this node's operator (uid {owner_uid})") }
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(MAX_REQUEST));
        match tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line)).await {
            Err(_) => OperatorResponse::Error { message: "timed out waiting for the request".into() },
            Ok(Err(e)) => OperatorResponse::Error { message: format!("reading the request: {e}") },
            Ok(Ok(_)) if !line.ends_with('\n') => {
                OperatorResponse::Error { message: format!("a request is one line of at most {MAX_REQUEST} bytes") }
            }
            Ok(Ok(_)) => match serde_json::from_str::<OperatorRequest>(&line) {
                Err(e) => OperatorResponse::Error { message: format!("malformed request: {e}") },
                Ok(request) => {
                    let caller = format!("local-operator:uid={uid}");
                    tokio::task::spawn_blocking(move || answer(&node, &request, &caller))
                        .await
                        .unwrap_or_else(|_| OperatorResponse::Error { message: "internal error".into() })
                }
            },
        }
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    tokio::time::timeout(IO_TIMEOUT, write.write_all(&out)).await.context("writing the answer timed out")??;
    write.shutdown().await.ok();
    Ok(())
}

fn entry(key: String, veto: hyok_store::Veto) -> VetoEntry {
    VetoEntry { key, time_ms: veto.time_ms, reason: veto.reason }
}

/// Runs one request against `node` (blocking: store writes and flushes).
pub fn answer(node: &Node, request: &OperatorRequest, caller: &str) -> OperatorResponse {
    let shown = |m: &hyok_threshold::Manifest| ManifestShown {
        digest: crate::manifest::digest_hex(m),
        manifest: ManifestFile::from_manifest(m),
    };
    match request {
        OperatorRequest::ManifestInstall { manifest } => {
            let installed = manifest
                .to_manifest()
                .map_err(|e| NodeError::Invalid(format!("the manifest: {e}")))
                .and_then(|m| node.install_manifest(&m, caller).map(|_| m));
            return match installed {
                Ok(m) => OperatorResponse::Ok(Shown { manifest: Some(shown(&m)), ..Shown::default() }),
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        OperatorRequest::ManifestShow => {
            return OperatorResponse::Ok(Shown { manifest: node.manifest().as_ref().map(shown), ..Shown::default() });
        }
        OperatorRequest::PolicyInstall { policy } => {
            return match node.install_policy(policy, caller) {
                Ok(_) => OperatorResponse::Ok(Shown { policy: policy_shown(node), ..Shown::default() }),
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        OperatorRequest::PolicyShow => {
            return OperatorResponse::Ok(Shown { policy: policy_shown(node), ..Shown::default() });
        }
        OperatorRequest::EpochAccept { .. } | OperatorRequest::EpochReject | OperatorRequest::EpochShow => {
            return match epoch_answer(node, request, caller) {
                Ok(epoch) => OperatorResponse::Ok(Shown { epoch, ..Shown::default() }),
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        OperatorRequest::StateShow => {
            return match state(node) {
                Ok(state) => OperatorResponse::Ok(Shown { state: Some(Box::new(state)), ..Shown::default() }),
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        _ => {}
    }
    let result: Result<Vec<VetoEntry>, NodeError> = match request {
        OperatorRequest::Veto { key, reason } => node.veto(key, reason, caller).map(|v| vec![entry(key.clone(), v)]),
        OperatorRequest::Lift { key } => node.lift(key, caller).map(|v| vec![entry(key.clone(), v)]),
        OperatorRequest::List => node.vetoes().map(|all| all.into_iter().map(|(k, v)| entry(k, v)).collect()),
        OperatorRequest::ManifestInstall { .. }
        | OperatorRequest::ManifestShow
        | OperatorRequest::PolicyInstall { .. }
        | OperatorRequest::PolicyShow
        | OperatorRequest::EpochAccept { .. }
        | OperatorRequest::EpochReject
        | OperatorRequest::EpochShow
        | OperatorRequest::StateShow => Ok(Vec::new()),
    };
    match result {
        Ok(vetoes) => OperatorResponse::Ok(Shown { vetoes, ..Shown::default() }),
        Err(e) => OperatorResponse::Error { message: e.to_string() },
    }
}

fn epoch_answer(node: &Node, request: &OperatorRequest, caller: &str) -> Result<Option<Box<EpochShown>>, NodeError> {
    let shown = |p: &hyok_threshold::epoch::Proposal| {
        Box::new(EpochShown {
            digest: hex::encode(p.digest()),
            proposal: crate::manifest::ProposalFile::from_proposal(p),
        })
    };
    match request {
        OperatorRequest::EpochAccept { proposal } => {
            let p = proposal.to_proposal().map_err(|e| NodeError::Invalid(format!("the membership change: {e}")))?;
            node.accept_proposal(&p, caller)?;
            Ok(Some(shown(&p)))
        }
        OperatorRequest::EpochReject => {
            let before = node.accepted()?;
            node.reject_proposal(caller)?;
            Ok(before.map(|(p, _)| shown(&p)))
        }
        _ => Ok(node.accepted()?.map(|(p, _)| shown(&p))),
    }
}

/// The node's identity key and every version of every key it holds, EC and RSA.
fn state(node: &Node) -> Result<StateShown, NodeError> {
    let generation = |g: &Option<hyok_proto::v1::NodeKeyGeneration>| g.as_ref().map(|g| g.generation);
    let mut versions = Vec::new();
    for s in node.key_states()? {
        versions.extend(s.versions.iter().map(|v| VersionShown {
            rsa: false,
            key: s.key_id.clone(),
            version: v.version,
            active: v.active,
            generation: v.generation,
            previous: generation(&v.previous),
            next: generation(&v.next),
        }));
    }
    for s in node.rsa_key_states()? {
        versions.extend(s.versions.iter().map(|v| VersionShown {
            rsa: true,
            key: s.name.clone(),
            version: v.version,
            active: v.active,
            generation: v.generation,
            previous: generation(&v.previous),
            next: generation(&v.next),
        }));
    }
    Ok(StateShown { identity: hex::encode(node.identity_public_key().as_bytes()), versions })
}

fn policy_shown(node: &Node) -> Option<Box<PolicyShown>> {
    node.evidence().shown().map(|(digest, policy)| Box::new(PolicyShown { digest: hex::encode(digest), policy }))
}

/// Sends `request` to the node serving `data_dir` and returns the vetoes it reports; the node's
/// refusal is an error with its message.
pub async fn request(data_dir: &Path, request: &OperatorRequest) -> Result<Vec<VetoEntry>> {
    Ok(exchange_all(data_dir, request).await?.vetoes)
}

/// [`request`], with the manifest the node reports (manifest requests).
pub async fn exchange(data_dir: &Path, request: &OperatorRequest) -> Result<(Vec<VetoEntry>, Option<ManifestShown>)> {
    let shown = exchange_all(data_dir, request).await?;
    Ok((shown.vetoes, shown.manifest))
}

/// [`request`], with the policy the node reports (policy requests).
pub async fn exchange_policy(data_dir: &Path, request: &OperatorRequest) -> Result<Option<PolicyShown>> {
    Ok(exchange_all(data_dir, request).await?.policy.map(|b| *b))
}

/// [`request`], with the membership change the node reports (epoch requests).
pub async fn exchange_epoch(data_dir: &Path, request: &OperatorRequest) -> Result<Option<EpochShown>> {
    Ok(exchange_all(data_dir, request).await?.epoch.map(|b| *b))
}

/// The identity and holdings of the node serving `data_dir` (`state_show`).
pub async fn state_of(data_dir: &Path) -> Result<StateShown> {
    let shown = exchange_all(data_dir, &OperatorRequest::StateShow).await?;
    shown.state.map(|b| *b).with_context(|| format!("{} answered state_show without a state", data_dir.display()))
}

async fn exchange_all(data_dir: &Path, request: &OperatorRequest) -> Result<Shown> {
    let path = socket_path(data_dir);
    let exchange = async {
        let mut stream = UnixStream::connect(&path).await.with_context(|| {
            format!("connecting to {} (is the node running, and is this its operator's account?)", path.display())
        })?;
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        stream.write_all(&line).await?;
        let mut answer = String::new();
        BufReader::new(stream.take(MAX_RESPONSE)).read_line(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(IO_TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {}", path.display()))??;
    match serde_json::from_str(&answer).with_context(|| format!("malformed answer from {}", path.display()))? {
        OperatorResponse::Ok(shown) => Ok(shown),
        OperatorResponse::Error { message } => bail!("the node refused: {message}"),
    }
}
