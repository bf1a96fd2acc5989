//! Opening a node's data directory and serving it over mutual TLS until shutdown.

use crate::node::Node;
use crate::service::NodeService;
use anyhow::{Context, Result, bail};
use hyok_proto::TlsFiles;
use hyok_proto::v1::node_server::NodeServer;
use hyok_store::{AuditEvent, SealKey, Store};
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId, NodeSecrets, Wire};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// Files in a node's data directory.
pub fn seal_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("seal.key")
}

pub(crate) fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// `hyok-node init`: a seal key (its own file, mode 0600) and fresh long-term keys (identity,
/// DKG transport, RSA seal, audit), sealed in the store. Refuses an initialized directory.
pub fn init(data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let seal = SealKey::create(seal_key_path(data_dir)).context("creating the seal key (already initialized?)")?;
    let store = Store::open(db_path(data_dir), seal)?;
    let secrets = NodeSecrets::generate(&mut rand::rng());
    store.put_identity(&secrets.to_secret_bytes())?;
    Ok(())
}

/// Opens an initialized data directory.
pub fn open(id: NodeId, data_dir: &Path) -> Result<Node> {
    let (store, secrets) = open_store(data_dir)?;
    Ok(Node::new(id, secrets, store)?)
}

/// `hyok-node manifest install` against a stopped node: stores `m` (flushed) and audits
/// `manifest:install` with its digest. `m` must list this node's identity key; returns the id
/// it gives the node, and the digest. Replaces a manifest already stored.
pub fn install_manifest(data_dir: &Path, m: &Manifest, caller: &str) -> Result<(NodeId, [u8; 32])> {
    let (store, secrets) = open_store(data_dir)?;
    let identity = secrets.identity().public_key();
    let Some(id) = m.node_with_identity(&identity) else {
        bail!(
            "the manifest does not list this node's identity key {} ({}): it is another cluster's",
            hex::encode(identity.as_bytes()),
            data_dir.display()
        );
    };
    store.put_manifest(&m.to_bytes())?;
    let digest = m.digest();
    audit_install(&store, "manifest:install", &digest, caller)?;
    Ok((id, digest))
}

/// Playing this node's operator against its stopped store: stores the evidence policy (checked,
/// sealed, flushed) and audits `policy:install`; returns the node id and the digest.
pub fn install_policy(
    data_dir: &Path,
    policy: &hyok_evidence::policy::PolicyFile,
    caller: &str,
) -> Result<(Option<NodeId>, [u8; 32])> {
    let (store, secrets) = open_store(data_dir)?;
    let digest = crate::evidence::store_policy(&store, policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    audit_install(&store, "policy:install", &digest, caller)?;
    let id = store
        .manifest()?
        .and_then(|b| Manifest::from_bytes(&b).ok())
        .and_then(|m| m.node_with_identity(&secrets.identity().public_key()));
    Ok((id, digest))
}

/// The evidence policy stored in a stopped node's data directory, if any, and its digest.
pub fn stored_policy(data_dir: &Path) -> Result<Option<([u8; 32], hyok_evidence::policy::PolicyFile)>> {
    let (store, _) = open_store(data_dir)?;
    let Some(bytes) = store.policy()? else { return Ok(None) };
    let policy = serde_json::from_slice(&bytes).context("the stored evidence policy")?;
    Ok(Some((crate::node::sha256(&bytes), policy)))
}

/// Audits an operator's offline installation (`manifest:install`, `policy:install`): the
/// digest as request id and as the entry's digest.
fn audit_install(store: &Store, operation: &str, digest: &[u8; 32], caller: &str) -> Result<()> {
    store.append_audit(&[AuditEvent {
        time_ms: crate::node::now_ms(),
        key_id: String::new(),
        version: 0,
        operation: operation.to_owned(),
        request_id: hex::encode(digest),
        caller: caller.to_owned(),
        digest: digest.to_vec(),
    }])?;
    Ok(())
}

/// The manifest stored in a stopped node's data directory, if any.
pub fn stored_manifest(data_dir: &Path) -> Result<Option<Manifest>> {
    let (store, _) = open_store(data_dir)?;
    let Some(bytes) = store.manifest()? else { return Ok(None) };
    Ok(Some(Manifest::from_bytes(&bytes).context("the stored cluster manifest")?))
}

/// The node's public identity key, read from a stopped node's data directory.
pub fn stored_identity(data_dir: &Path) -> Result<IdentityPublicKey> {
    let (_, secrets) = open_store(data_dir)?;
    Ok(secrets.identity().public_key())
}

/// The store and long-term keys of an initialized data directory (upgrading legacy keys).
pub(crate) fn open_store(data_dir: &Path) -> Result<(Store, NodeSecrets)> {
    // A store of this directory dropped a moment ago in this process (`run --init`) holds the
    // directory lock until sled's IO threads let go: wait for that, briefly.
    let started = std::time::Instant::now();
    let store = loop {
        let seal = SealKey::load(seal_key_path(data_dir))
            .with_context(|| format!("no seal key in {} (run `hyok-node init` first)", data_dir.display()))?;
        match Store::open(db_path(data_dir), seal) {
            Ok(store) => break store,
            Err(e) if format!("{e:?}").contains("could not acquire lock") && started.elapsed().as_secs() < 5 => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let Some(stored) = store.identity()? else {
        bail!("no identity in {} (run `hyok-node init` first)", data_dir.display());
    };
    let (secrets, upgraded) = NodeSecrets::from_stored(&stored, &mut rand::rng()).context("the stored node keys")?;
    if upgraded {
        // A data directory from before keys per purpose held only the identity secret: it is
        // kept (operators pinned it); the new keys are written back before the node serves.
        store.put_identity(&secrets.to_secret_bytes()).context("storing the upgraded node keys")?;
        tracing::info!("added DKG transport, seal and audit keys to a legacy identity");
    }
    Ok((store, secrets))
}

/// Serves `node` on `listener` with `tls` until `shutdown` completes.
pub async fn run(
    node: Arc<Node>,
    tls: &TlsFiles,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    if let Ok(identity) = node.identity() {
        // Public: operators pin it (`hyokctl rsa --expect-identity`); every other key of the node
        // is certified under it in the key bundle.
        let hex: String = identity.identity_public_key.iter().map(|b| format!("{b:02x}")).collect();
        tracing::info!(node = identity.node_id, identity_public_key = hex, "node identity");
    }
    crate::metrics::watch(&node);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .layer(hyok_proto::metrics::GrpcLayer::new())
        .layer(hyok_proto::request_id::SpanLayer::new("node"))
        .tls_config(tls.server_config()?)?
        .add_service(NodeServer::new(NodeService::new(node)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
