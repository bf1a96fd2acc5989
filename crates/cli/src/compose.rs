//! `hyokctl compose`: what `docker-compose.yml` mounts, made on the host (`init`), and the
//! one-shot key bootstrap its `init` service runs (`bootstrap`). No secret is baked into an
//! image: the PKI, the SigV4 credentials and the configurations live in the directory `init`
//! writes, and each container mounts only the files it needs, read-only.
//!
//! Inside the containers that directory is `/etc/hyok`; node N's data directory is `DIR/node-N`
//! on the host, bind-mounted at `/data` in its container, so its operator socket is on the host
//! too: hyokctl plays every node's operator for compose as for `hyokctl dev`
//! ([`crate::operated`]). The coordinator's configuration is `DIR/coordinator/coordinator.toml`,
//! in a directory of its own that the coordinator's container mounts, so a node list rewritten
//! on the host (by a membership change) reaches the running coordinator.

use crate::pki::Pki;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Where the containers see the directory `init` writes.
pub const MOUNT: &str = "/etc/hyok";
/// Nodes in the compose cluster as `init` makes it (`docker-compose.yml` has services for up to
/// [`MAX_NODES`]; the ones past `NODES` start only when a membership change adds them).
pub const NODES: u16 = 5;
/// Node services in `docker-compose.yml`.
pub const MAX_NODES: u16 = 7;
/// Its threshold.
pub const THRESHOLD: u16 = 3;
/// The port every process serves its metrics on inside its container (for a Prometheus on the
/// compose network; not published to the host).
pub const METRICS_PORT: u16 = 9700;
/// The port every node listens on inside its container.
pub const NODE_PORT: u16 = 7101;
/// The coordinator's port (inside its container; published on the host's loopback at
/// `HYOK_COORDINATOR_PORT`, by default the same).
pub const COORDINATOR_PORT: u16 = 7100;
/// hyok-xks's port inside its container.
pub const XKS_PORT: u16 = 8443;
/// hyok-dke's port inside its container (and, by default, on the host).
pub const DKE_PORT: u16 = 8444;

/// `compose.json`: how to reach the compose cluster's hyok-xks from the host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComposeFile {
    /// Threshold t.
    pub threshold: u16,
    /// Node count n (nodes `1..=n`).
    pub nodes: u16,
    /// Nodes a pending membership change started, beyond `1..=n`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub started: Vec<u16>,
    /// The XKS URI path prefix.
    pub uri_prefix: String,
    /// SigV4 region.
    pub region: String,
    /// SigV4 access key id.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// External key ids by kind, as in dev.json.
    pub keys: BTreeMap<String, String>,
    /// hyok-dke: what dev.json's `dke` section says (its base URL depends on the published port).
    pub dke: ComposeDke,
}

/// The compose cluster's hyok-dke and its dev token issuer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ComposeDke {
    /// The base of every `kid` (and the token audience): `https://localhost:8444`.
    pub public_base_url: String,
    /// The DKE key name.
    pub key_name: String,
    /// The hyok RSA key behind it (made by `bootstrap`).
    pub rsa_key: String,
    /// Token issuer (`iss`).
    pub issuer: String,
    /// The issuer's private key on the host (never mounted into a container).
    pub issuer_key: std::path::PathBuf,
    /// Its `kid`.
    pub issuer_kid: String,
    /// An email the key authorizes.
    pub authorized_email: String,
}

impl ComposeFile {
    /// `DIR/compose.json`.
    pub fn path(dir: &Path) -> std::path::PathBuf {
        dir.join("compose.json")
    }

    /// Reads `DIR/compose.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `DIR/compose.json` (a temporary file renamed into place).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join(".compose.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, Self::path(dir))?;
        Ok(())
    }

    /// The ids of the nodes that run: `1..=n` and any a pending change started.
    pub fn node_ids(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = (1..=self.nodes).chain(self.started.iter().copied()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The coordinator's endpoint from the host: its published port on the loopback
    /// (`HYOK_COORDINATOR_PORT`, as docker-compose.yml reads it).
    pub fn coordinator_endpoint() -> String {
        let port = std::env::var("HYOK_COORDINATOR_PORT").ok().and_then(|p| p.parse::<u16>().ok());
        format!("https://localhost:{}", port.unwrap_or(COORDINATOR_PORT))
    }

    /// hyok-xks's base URL when its port is published on the host's loopback at `port`.
    pub fn xks_base_url(&self, port: u16) -> String {
        format!("https://localhost:{port}{}", hyok_xks::config::base_path(&self.uri_prefix))
    }
}

/// Where the coordinator's container reaches node `id`.
pub fn node_endpoint(id: u16) -> String {
    format!("https://node-{id}:{NODE_PORT}")
}

/// `DIR/coordinator/coordinator.toml`.
pub fn coordinator_config(dir: &Path) -> std::path::PathBuf {
    dir.join("coordinator").join("coordinator.toml")
}

/// `hyokctl compose init --dir DIR`: the PKI, the coordinator's and hyok-xks's configurations,
/// SigV4 credentials and `compose.json`. Refuses a directory that already holds a PKI.
pub fn init(dir: &Path) -> Result<ComposeFile> {
    let pki = Pki::new(dir.join("pki"));
    if pki.exists() {
        bail!("{} already holds a compose cluster's PKI", dir.display());
    }
    let ids: Vec<u16> = (1..=NODES).collect();
    // Every certificate is valid for localhost too, so the host reaches hyok-xks by that name.
    pki.init(&ids, &[])?;
    // Playing every node's operator: each node's data directory (mounted at /data in its
    // container) is initialized here, and the manifest installed into it, before any container
    // starts.
    let nodes: Vec<(u16, std::path::PathBuf)> = ids.iter().map(|id| (*id, dir.join(format!("node-{id}")))).collect();
    for (_, data_dir) in &nodes {
        hyok_node::server::init(data_dir)?;
    }
    let coordinator_cert = pki.identity(hyok_proto::Role::Coordinator).cert;
    crate::dev::install_manifest(
        &dir.join(crate::dev::MANIFEST_FILE),
        &coordinator_cert,
        THRESHOLD,
        &nodes,
        "hyokctl-compose:operator",
    )?;
    let mount = Path::new(MOUNT);
    let mut coordinator = format!(
        "# Written by `hyokctl compose init`.\nlisten = \"0.0.0.0:{COORDINATOR_PORT}\"\nthreshold = {THRESHOLD}\n\
         metrics_listen = \"0.0.0.0:{METRICS_PORT}\"\n\n\
         [tls]\nca = \"{MOUNT}/pki/ca.pem\"\ncert = \"{MOUNT}/pki/coordinator.pem\"\nkey = \"{MOUNT}/pki/coordinator-key.pem\"\n"
    );
    for id in &ids {
        coordinator.push_str(&format!("\n[[nodes]]\nid = {id}\nendpoint = \"{}\"\n", node_endpoint(*id)));
    }
    let config = coordinator_config(dir);
    std::fs::create_dir_all(config.parent().context("a directory of its own")?)?;
    std::fs::write(&config, coordinator)?;
    let xks_dir = dir.join("xks");
    std::fs::create_dir_all(&xks_dir)?;
    let credential = crate::xks::ensure_credentials(&xks_dir.join("credentials.toml"))?;
    let health = crate::policy::ensure_signer(&xks_dir.join(crate::policy::HEALTH_CALLER_KEY_FILE))?;
    let text = crate::xks::config_text(
        &format!("0.0.0.0:{XKS_PORT}"),
        &format!("0.0.0.0:{METRICS_PORT}"),
        &format!("https://coordinator:{COORDINATOR_PORT}"),
        &mount.join("pki"),
        &mount.join("xks/credentials.toml"),
        &mount.join("xks").join(crate::policy::HEALTH_CALLER_KEY_FILE),
    );
    std::fs::write(xks_dir.join("xks.toml"), text)?;
    let issuer = crate::dke::ensure_dev_issuer(&dir.join("dke"))?;
    let public_base_url = format!("https://localhost:{DKE_PORT}");
    let text = crate::dke::config_text(
        &format!("0.0.0.0:{DKE_PORT}"),
        &format!("0.0.0.0:{METRICS_PORT}"),
        &public_base_url,
        &format!("https://coordinator:{COORDINATOR_PORT}"),
        &mount.join("pki"),
        &mount.join("dke").join(crate::dke::JWKS_FILE),
    );
    std::fs::write(dir.join("dke/dke.toml"), text)?;
    // As every node's operator again: the evidence policy, into every node's store.
    let operator = crate::policy::ensure_signer(&dir.join(crate::policy::CALLER_KEY_FILE))?;
    let policy = crate::policy::cluster_policy(&crate::policy::Parties {
        xks_credentials: Path::new("xks/credentials.toml"),
        dke_audience: &public_base_url,
        dke_jwks: &Path::new("dke").join(crate::dke::JWKS_FILE),
        operator: &operator,
        health: &health,
    })?;
    crate::policy::install(&nodes, &crate::policy::write(dir, &policy)?, "hyokctl-compose:operator")?;
    let file = ComposeFile {
        threshold: THRESHOLD,
        nodes: NODES,
        started: Vec::new(),
        uri_prefix: crate::xks::DEV_PREFIX.to_owned(),
        region: crate::xks::DEV_REGION.to_owned(),
        access_key_id: credential.access_key_id.clone(),
        secret_access_key: credential.secret().to_owned(),
        keys: crate::xks::DEV_KEYS.iter().map(|k| (k.role.to_owned(), k.external_id.to_owned())).collect(),
        dke: ComposeDke {
            public_base_url,
            key_name: crate::dke::DEV_KEY_NAME.to_owned(),
            rsa_key: crate::dke::DEV_RSA_KEY.to_owned(),
            issuer: issuer.issuer,
            issuer_key: std::path::absolute(&issuer.key_pem)?,
            issuer_kid: issuer.kid,
            authorized_email: crate::dke::DEV_EMAIL.to_owned(),
        },
    };
    file.save(dir)?;
    Ok(file)
}

/// `hyokctl compose bootstrap`: waits for the coordinator and every node, then creates the demo
/// and XKS keys that do not exist yet, and hyok-dke's RSA key by the dealer ceremony (safe to run
/// again).
pub async fn bootstrap(target: &Target) -> Result<()> {
    let (endpoint, tls) = target.resolve()?;
    let mut last = None;
    for _ in 0..120 {
        match crate::dev::ensure_keys(&endpoint, &tls).await {
            Ok(()) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(e) = last {
        return Err(e);
    }
    let mut client = target.connect().await?;
    let name = crate::dke::DEV_RSA_KEY;
    match client.get_rsa_key(hyok_proto::v1::GetRsaKeyRequest { name: name.into() }).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let trust = crate::rsa::Trust::load(&Path::new(MOUNT).join(crate::dev::MANIFEST_FILE), &[])?;
            crate::rsa::create(target, name, 2048, &trust).await.map(|_| ())
        }
        Err(s) => bail!("reading RSA key {name}: {}", s.message()),
    }
}

/// `hyokctl probe ADDR`: whether something accepts TCP connections at `addr` (container health
/// checks: the images hold no shell or curl).
pub async fn probe(addr: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .with_context(|| format!("{addr}: no answer within 2 s"))?
        .with_context(|| format!("{addr}: connection refused"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_writes_configurations_that_load_and_refuses_to_run_twice() {
        let dir = tempfile::tempdir().unwrap();
        let file = init(dir.path()).unwrap();
        assert_eq!(ComposeFile::load(dir.path()).unwrap(), file);
        let coordinator = std::fs::read_to_string(coordinator_config(dir.path())).unwrap();
        assert!(coordinator.contains("endpoint = \"https://node-5:7101\""));
        let xks = std::fs::read_to_string(dir.path().join("xks/xks.toml")).unwrap();
        let parsed: toml::Value = toml::from_str(&xks).unwrap();
        assert_eq!(parsed["coordinator"]["endpoint"].as_str(), Some("https://coordinator:7100"));
        assert_eq!(parsed["tls"]["cert"].as_str(), Some("/etc/hyok/pki/frontend.pem"));
        assert_eq!(file.xks_base_url(9443), "https://localhost:9443/dev/xks/kms/xks/v1");
        let dke = std::fs::read_to_string(dir.path().join("dke/dke.toml")).unwrap();
        let parsed: toml::Value = toml::from_str(&dke).unwrap();
        assert_eq!(parsed["jwt"]["jwks_file"].as_str(), Some("/etc/hyok/dke/dke-jwks.json"));
        assert!(file.dke.issuer_key.is_absolute() && file.dke.issuer_key.exists());
        assert!(init(dir.path()).is_err(), "a second init would replace the PKI");
    }
}
