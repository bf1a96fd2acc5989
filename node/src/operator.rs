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
    /// Done: the vetoes concerned.
    Ok {
        /// See the module docs.
        vetoes: Vec<VetoEntry>,
        /// The manifest concerned (manifest requests only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        manifest: Option<ManifestShown>,
        /// The policy concerned (policy requests only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        policy: Option<Box<PolicyShown>>,
        /// The membership change concerned (epoch requests only: accepted, withdrawn, shown).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<Box<EpochShown>>,
    },
    /// Refused or failed.
    Error {
        /// What went wrong.
        message: String,
    },
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
                Ok(m) => {
                    OperatorResponse::Ok { vetoes: Vec::new(), manifest: Some(shown(&m)), policy: None, epoch: None }
                }
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        OperatorRequest::ManifestShow => {
            return OperatorResponse::Ok {
                vetoes: Vec::new(),
                manifest: node.manifest().as_ref().map(shown),
                policy: None,
                epoch: None,
            };
        }
        OperatorRequest::PolicyInstall { policy } => {
            return match node.install_policy(policy, caller) {
                Ok(_) => {
                    OperatorResponse::Ok { vetoes: Vec::new(), manifest: None, policy: policy_shown(node), epoch: None }
                }
                Err(e) => OperatorResponse::Error { message: e.to_string() },
            };
        }
        OperatorRequest::PolicyShow => {
            return OperatorResponse::Ok {
                vetoes: Vec::new(),
                manifest: None,
                policy: policy_shown(node),
                epoch: None,
            };
        }
        OperatorRequest::EpochAccept { .. } | OperatorRequest::EpochReject | OperatorRequest::EpochShow => {
            return match epoch_answer(node, request, caller) {
                Ok(epoch) => OperatorResponse::Ok { vetoes: Vec::new(), manifest: None, policy: None, epoch },
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
        | OperatorRequest::EpochShow => Ok(Vec::new()),
    };
    match result {
        Ok(vetoes) => OperatorResponse::Ok { vetoes, manifest: None, policy: None, epoch: None },
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

fn policy_shown(node: &Node) -> Option<Box<PolicyShown>> {
    node.evidence().shown().map(|(digest, policy)| Box::new(PolicyShown { digest: hex::encode(digest), policy }))
}

/// Sends `request` to the node serving `data_dir` and returns the vetoes it reports; the node's
/// refusal is an error with its message.
pub async fn request(data_dir: &Path, request: &OperatorRequest) -> Result<Vec<VetoEntry>> {
    Ok(exchange(data_dir, request).await?.0)
}

/// [`request`], with the manifest the node reports (manifest requests).
pub async fn exchange(data_dir: &Path, request: &OperatorRequest) -> Result<(Vec<VetoEntry>, Option<ManifestShown>)> {
    let (vetoes, manifest, ..) = exchange_all(data_dir, request).await?;
    Ok((vetoes, manifest))
}

/// [`request`], with the policy the node reports (policy requests).
pub async fn exchange_policy(data_dir: &Path, request: &OperatorRequest) -> Result<Option<PolicyShown>> {
    Ok(exchange_all(data_dir, request).await?.2.map(|b| *b))
}

/// [`request`], with the membership change the node reports (epoch requests).
pub async fn exchange_epoch(data_dir: &Path, request: &OperatorRequest) -> Result<Option<EpochShown>> {
    Ok(exchange_all(data_dir, request).await?.3.map(|b| *b))
}

type Answer = (Vec<VetoEntry>, Option<ManifestShown>, Option<Box<PolicyShown>>, Option<Box<EpochShown>>);

async fn exchange_all(data_dir: &Path, request: &OperatorRequest) -> Result<Answer> {
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
        OperatorResponse::Ok { vetoes, manifest, policy, epoch } => Ok((vetoes, manifest, policy, epoch)),
        OperatorResponse::Error { message } => bail!("the node refused: {message}"),
    }
}
