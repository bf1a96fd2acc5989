//! Which cluster a command talks to: explicit `--endpoint/--ca/--cert/--key`, or the cluster
//! in `--dev-dir DIR` (default `./.hyok-dev`): the dev cluster `DIR/dev.json` describes, or the
//! compose cluster of `DIR/compose.json` (its coordinator published on the host's loopback,
//! reached with `DIR/pki`'s admin certificate).

use crate::devfile::DevFile;
use anyhow::{Context, Result, bail};
use clap::Args;
use hyok_proto::{TlsFiles, VaultClient};
use std::path::PathBuf;

/// Default directory of `hyokctl dev`.
pub const DEFAULT_DEV_DIR: &str = ".hyok-dev";

/// Connection options shared by every client command.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The dev cluster's directory (its dev.json), or a compose cluster's (its compose.json):
    /// the cluster to use when --endpoint is not given, and where hyokctl finds each node's
    /// data directory when it plays the node's operator.
    #[arg(long, default_value = DEFAULT_DEV_DIR, env = "HYOK_DEV_DIR", global = true, visible_alias = "compose-dir")]
    pub dev_dir: PathBuf,
    /// Coordinator endpoint, e.g. https://127.0.0.1:7100.
    #[arg(long, env = "HYOK_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Cluster CA certificate (with --endpoint).
    #[arg(long, env = "HYOK_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (with --endpoint).
    #[arg(long, env = "HYOK_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (with --endpoint).
    #[arg(long, env = "HYOK_KEY")]
    pub key: Option<PathBuf>,
    /// The caller key that signs cryptographic requests (every node checks the signature
    /// against its own policy); default: the dev cluster's `DIR/caller.key`.
    #[arg(long, env = "HYOK_CALLER_KEY", global = true)]
    pub caller_key: Option<PathBuf>,
}

impl Target {
    /// The coordinator endpoint and client TLS files.
    pub fn resolve(&self) -> Result<(String, TlsFiles)> {
        match (&self.endpoint, &self.ca, &self.cert, &self.key) {
            (Some(endpoint), Some(ca), Some(cert), Some(key)) => {
                Ok((endpoint.clone(), TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() }))
            }
            (Some(_), _, _, _) => bail!("--endpoint needs --ca, --cert and --key"),
            (None, ..)
                if crate::compose::ComposeFile::path(&self.dev_dir).exists()
                    && !DevFile::path(&self.dev_dir).exists() =>
            {
                let pki = crate::pki::Pki::new(self.dev_dir.join("pki"));
                let admin = pki.identity(hyok_proto::Role::Admin);
                let tls = TlsFiles {
                    ca: self.ca.clone().unwrap_or_else(|| pki.ca()),
                    cert: self.cert.clone().unwrap_or(admin.cert),
                    key: self.key.clone().unwrap_or(admin.key),
                };
                Ok((crate::compose::ComposeFile::coordinator_endpoint(), tls))
            }
            (None, ..) => {
                let dev = DevFile::load(&self.dev_dir)?;
                let tls = self.dev_tls(&dev);
                Ok((dev.coordinator.endpoint, tls))
            }
        }
    }

    fn dev_tls(&self, dev: &DevFile) -> TlsFiles {
        TlsFiles {
            ca: self.ca.clone().unwrap_or_else(|| dev.tls.ca.clone()),
            cert: self.cert.clone().unwrap_or_else(|| dev.tls.client_cert.clone()),
            key: self.key.clone().unwrap_or_else(|| dev.tls.client_key.clone()),
        }
    }

    /// The caller key that signs this tool's cryptographic requests.
    ///
    /// # Errors
    /// If there is none, or it cannot be read.
    pub fn signer(&self) -> Result<hyok_evidence::caller::Signer> {
        let path = self.caller_key.clone().unwrap_or_else(|| self.dev_dir.join(crate::dev::CALLER_KEY_FILE));
        hyok_evidence::caller::Signer::load(&path).with_context(
            || "a caller key is needed to sign encrypt/decrypt requests (--caller-key, or a dev cluster's caller.key)",
        )
    }

    /// A connected KeyVault client.
    pub async fn connect(&self) -> Result<VaultClient> {
        let (endpoint, tls) = self.resolve()?;
        hyok_proto::connect_vault(&endpoint, &tls).await
    }

    /// The nodes (id, endpoint) and client TLS files, for commands that talk to nodes
    /// directly (`audit verify`); only the dev cluster knows them.
    pub fn nodes(&self) -> Result<(Vec<(u16, String)>, TlsFiles)> {
        let dev = DevFile::load(&self.dev_dir)?;
        let nodes = dev.nodes.iter().map(|n| (n.id, n.endpoint.clone())).collect();
        Ok((nodes, self.dev_tls(&dev)))
    }
}

/// For `hyokctl node veto|lift|vetoes --node N`: fills in the data directory of node N from the
/// dev cluster's dev.json (in `target.dev_dir`), where hyokctl plays every node's operator.
/// Commands other than the operator's, and an explicit --data-dir, are left alone.
pub fn operator_data_dir(
    target: &Target,
    node_id: Option<u16>,
    command: &mut hyok_node::cli::NodeCommand,
) -> Result<()> {
    let Some(at) = command.operator_at() else {
        if node_id.is_some() {
            bail!("--node only selects the node of `veto`, `lift` and `vetoes`");
        }
        return Ok(());
    };
    match (node_id, &at.data_dir) {
        (Some(_), Some(_)) => bail!("give --data-dir or --node, not both"),
        (None, Some(_)) => Ok(()),
        (None, None) => bail!("which node? --data-dir DIR, or --node N with the dev cluster"),
        (Some(id), None) => {
            let dev = DevFile::load(&target.dev_dir)?;
            let node = dev
                .nodes
                .iter()
                .find(|n| n.id == id)
                .with_context(|| format!("no node {id} in {}", DevFile::path(&target.dev_dir).display()))?;
            at.data_dir = Some(node.data_dir.clone());
            Ok(())
        }
    }
}
