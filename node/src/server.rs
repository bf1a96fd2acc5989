//! Opening a node's data directory and serving it over mutual TLS until shutdown.

use crate::node::Node;
use crate::service::NodeService;
use anyhow::{Context, Result, bail};
use hyok_proto::TlsFiles;
use hyok_proto::v1::node_server::NodeServer;
use hyok_store::{SealKey, Store};
use hyok_threshold::{NodeId, NodeSecrets};
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

fn db_path(data_dir: &Path) -> PathBuf {
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
        tracing::info!(node = id.get(), "added DKG transport, seal and audit keys to a legacy identity");
    }
    Ok(Node::new(id, secrets, store))
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
        .tls_config(tls.server_config()?)?
        .add_service(NodeServer::new(NodeService::new(node)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
