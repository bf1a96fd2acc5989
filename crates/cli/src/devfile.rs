//! `DIR/dev.json`: what `hyokctl dev` runs and how to reach it. Written once everything is
//! ready, to a temporary file renamed into place, so a reader never sees half of it.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The client TLS files (the admin's certificate).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevTls {
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// A client certificate with the admin role.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// The coordinator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevCoordinator {
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its process id.
    pub pid: u32,
    /// Its Prometheus metrics, `http://127.0.0.1:PORT/metrics`.
    #[serde(default)]
    pub metrics_url: String,
}

/// One node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevNode {
    /// Its id.
    pub id: u16,
    /// `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its process id.
    pub pid: u32,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The exact command line that restarts it by hand.
    pub argv: Vec<String>,
    /// Its Prometheus metrics, `http://127.0.0.1:PORT/metrics`.
    #[serde(default)]
    pub metrics_url: String,
}

/// The dev cluster's hyok-xks (AWS KMS XKS proxy).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevXks {
    /// `https://localhost:PORT/<prefix>/kms/xks/v1`.
    pub base_url: String,
    /// The URI path prefix.
    pub uri_prefix: String,
    /// The SigV4 region.
    pub region: String,
    /// A SigV4 access key id of the key store.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// hyok-xks's process id.
    pub pid: u32,
    /// External key ids by kind: `encrypt_decrypt`, `encrypt_only`, `decrypt_only`, `impotent`.
    pub keys: BTreeMap<String, String>,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its Prometheus metrics, `http://127.0.0.1:PORT/metrics`.
    #[serde(default)]
    pub metrics_url: String,
}

/// The dev cluster's hyok-dke (Microsoft 365 Double Key Encryption key service).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevDke {
    /// `https://localhost:PORT`.
    pub base_url: String,
    /// The base of every `kid` it publishes.
    pub public_base_url: String,
    /// The DKE key name (`GET {base_url}/{key_name}`).
    pub key_name: String,
    /// The hyok RSA key behind it.
    pub rsa_key: String,
    /// The dev token issuer (`iss`).
    pub issuer: String,
    /// The token audience (`aud`).
    pub audience: String,
    /// The dev issuer's private key (PKCS#8 PEM), for minting tokens.
    pub issuer_key: PathBuf,
    /// Its `kid`.
    pub issuer_kid: String,
    /// An email the key authorizes.
    pub authorized_email: String,
    /// hyok-dke's process id.
    pub pid: u32,
    /// Its configuration file.
    pub config: PathBuf,
    /// Its Prometheus metrics, `http://127.0.0.1:PORT/metrics`.
    #[serde(default)]
    pub metrics_url: String,
}

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DevFile {
    /// Threshold t.
    pub threshold: u16,
    /// Client TLS files.
    pub tls: DevTls,
    /// The coordinator.
    pub coordinator: DevCoordinator,
    /// Every node.
    pub nodes: Vec<DevNode>,
    /// Demo keys by role (`demo` → key id).
    pub keys: BTreeMap<String, String>,
    /// hyok-xks, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xks: Option<DevXks>,
    /// hyok-dke, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dke: Option<DevDke>,
}

impl DevFile {
    /// `DIR/dev.json`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("dev.json")
    }

    /// Reads `DIR/dev.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {} (is `hyokctl dev` running?)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes `DIR/dev.json` atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = Self::path(dir);
        let tmp = dir.join(".dev.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = DevFile {
            threshold: 3,
            tls: DevTls { ca: "ca.pem".into(), client_cert: "a.pem".into(), client_key: "a-key.pem".into() },
            coordinator: DevCoordinator {
                endpoint: "https://127.0.0.1:1".into(),
                pid: 7,
                metrics_url: "http://127.0.0.1:11/metrics".into(),
            },
            nodes: vec![DevNode {
                id: 1,
                endpoint: "https://127.0.0.1:2".into(),
                pid: 8,
                data_dir: "n1".into(),
                argv: vec!["hyokctl".into(), "node".into()],
                metrics_url: "http://127.0.0.1:12/metrics".into(),
            }],
            keys: [("demo".to_string(), "demo".to_string())].into(),
            xks: Some(DevXks {
                base_url: "https://localhost:3/dev/xks/kms/xks/v1".into(),
                uri_prefix: "dev/xks".into(),
                region: "us-east-1".into(),
                access_key_id: "A".repeat(26),
                secret_access_key: "s".repeat(44),
                pid: 9,
                keys: [("impotent".to_string(), "hyok-impotent".to_string())].into(),
                config: "xks.toml".into(),
                metrics_url: "http://127.0.0.1:13/metrics".into(),
            }),
            dke: None,
        };
        file.save(dir.path()).unwrap();
        assert_eq!(DevFile::load(dir.path()).unwrap(), file);
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(DevFile::path(dir.path())).unwrap()).unwrap();
        assert_eq!(json["coordinator"]["endpoint"], "https://127.0.0.1:1");
        assert_eq!(json["nodes"][0]["argv"][1], "node");
        assert_eq!(json["nodes"][0]["metrics_url"], "http://127.0.0.1:12/metrics");
        assert_eq!(json["coordinator"]["metrics_url"], "http://127.0.0.1:11/metrics");
        assert_eq!(json["xks"]["metrics_url"], "http://127.0.0.1:13/metrics");
        assert_eq!(json["xks"]["keys"]["impotent"], "hyok-impotent");
        assert_eq!(json["xks"]["secret_access_key"], "s".repeat(44));
        assert!(!dir.path().join(".dev.json.tmp").exists());
    }
}
