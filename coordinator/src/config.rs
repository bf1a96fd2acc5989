//! The coordinator's configuration: a TOML file (see README, "Configuration").
//!
//! ```toml
//! listen = "127.0.0.1:7100"
//! threshold = 3
//! metrics_listen = "127.0.0.1:9700"   # Prometheus metrics over plain HTTP, or "off"
//!
//! [tls]
//! ca = "pki/ca.pem"
//! cert = "pki/coordinator.pem"
//! key = "pki/coordinator-key.pem"
//!
//! [[nodes]]
//! id = 1
//! endpoint = "https://127.0.0.1:7101"
//! ```

use anyhow::{Context, Result, bail};
use hyok_proto::TlsFiles;
use hyok_proto::metrics::Listen;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One node as the coordinator reaches it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node's id (its Shamir evaluation point, 1..=65535).
    pub id: u16,
    /// `https://host:port`. The node must present a certificate for `node-<id>.role.hyok`.
    pub endpoint: String,
}

/// The coordinator's own TLS files.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// The coordinator's certificate (role `coordinator`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Everything `hyok-coordinator` needs.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to serve KeyVault on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The cluster's threshold t at its first epoch, and always the least number of distinct
    /// nodes whose agreement the coordinator trusts (key metadata, the cluster's manifest). After
    /// a membership change, the t in force is the one the nodes' manifests agree on.
    pub threshold: u16,
    /// Every node of the cluster. Re-read while running when the file changes, so that a
    /// membership change can add nodes and retire them.
    pub nodes: Vec<NodeConfig>,
    /// Mutual TLS.
    pub tls: TlsConfig,
    /// Budget of one request, unless the caller's gRPC deadline is shorter (milliseconds).
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Nodes asked at once beyond t, only when the request's deadline leaves no room to make up
    /// a miss (t are asked otherwise; more as soon as one fails or is late for that node).
    #[serde(default = "default_extra_nodes")]
    pub extra_nodes: u16,
    /// When a node that has not answered a partial request yet counts as late, and another
    /// node is asked in its place; afterwards, its own observed answer time decides.
    #[serde(default = "default_hedge_ms")]
    pub hedge_ms: u64,
    /// How long a node that failed at the transport level is skipped (milliseconds).
    #[serde(default = "default_down_ms")]
    pub down_ms: u64,
    /// How often every node is probed (milliseconds).
    #[serde(default = "default_probe_ms")]
    pub probe_ms: u64,
    /// How long key metadata read from the nodes is reused (milliseconds).
    #[serde(default = "default_metadata_ttl_ms")]
    pub metadata_ttl_ms: u64,
    /// Items per batched call to one node.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// The most batched calls in flight to one node (1 for a node close by — its fastest recent
    /// call back within 5 ms — unless it is overdue; for a farther one, how many are is sized
    /// from its call time: see `batch`).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Items waiting for one node before it counts as overloaded and the next node is asked.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Where `GET /metrics` is served (plain HTTP), or `"off"`.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: Listen,
    /// How often the coordinator looks for key versions a reachable node lacks and repairs them
    /// by resharing (milliseconds; 0: never on its own).
    #[serde(default = "default_repair_ms")]
    pub repair_ms: u64,
    /// The file this was loaded from (re-read for the node list while running).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

fn default_repair_ms() -> u64 {
    5000
}

/// The default metrics listener: loopback only.
pub const DEFAULT_METRICS_LISTEN: Listen = Listen::loopback(9700);

fn default_metrics_listen() -> Listen {
    DEFAULT_METRICS_LISTEN
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7100))
}
fn default_request_timeout_ms() -> u64 {
    2000
}
fn default_extra_nodes() -> u16 {
    1
}
fn default_hedge_ms() -> u64 {
    50
}
fn default_down_ms() -> u64 {
    3000
}
fn default_probe_ms() -> u64 {
    1000
}
fn default_metadata_ttl_ms() -> u64 {
    10_000
}
fn default_max_batch() -> usize {
    hyok_proto::DEFAULT_MAX_BATCH
}
fn default_max_in_flight() -> usize {
    32
}
fn default_queue() -> usize {
    4096
}

impl Config {
    /// A configuration with every tunable at its default.
    pub fn new(threshold: u16, nodes: Vec<NodeConfig>, tls: TlsConfig) -> Self {
        Config {
            listen: default_listen(),
            threshold,
            nodes,
            tls,
            request_timeout_ms: default_request_timeout_ms(),
            extra_nodes: default_extra_nodes(),
            hedge_ms: default_hedge_ms(),
            down_ms: default_down_ms(),
            probe_ms: default_probe_ms(),
            metadata_ttl_ms: default_metadata_ttl_ms(),
            max_batch: default_max_batch(),
            max_in_flight: default_max_in_flight(),
            queue: default_queue(),
            metrics_listen: default_metrics_listen(),
            repair_ms: default_repair_ms(),
            source: None,
        }
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.validate()?;
        config.source = Some(path.to_owned());
        Ok(config)
    }

    /// Checks what serde cannot: 1 ≤ t ≤ n, distinct non-zero ids, https endpoints.
    pub fn validate(&self) -> Result<()> {
        let n = self.nodes.len();
        if self.threshold == 0 || usize::from(self.threshold) > n {
            bail!("threshold must be between 1 and the number of nodes ({n})");
        }
        let mut ids = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                bail!("node ids start at 1");
            }
            if !ids.insert(node.id) {
                bail!("node {} is listed twice", node.id);
            }
            if !node.endpoint.starts_with("https://") {
                bail!("node {} endpoint must be https://host:port", node.id);
            }
        }
        if self.max_batch == 0 || self.max_in_flight == 0 || self.queue == 0 {
            bail!("max_batch, max_in_flight and queue must be at least 1");
        }
        Ok(())
    }

    /// The TLS files as `hyok_proto::TlsFiles` takes them.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles { ca: self.tls.ca.clone(), cert: self.tls.cert.clone(), key: self.tls.key.clone() }
    }

    /// The request budget.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        threshold = 2
        [tls]
        ca = "ca.pem"
        cert = "c.pem"
        key = "k.pem"
        [[nodes]]
        id = 1
        endpoint = "https://127.0.0.1:1"
        [[nodes]]
        id = 2
        endpoint = "https://127.0.0.1:2"
    "#;

    #[test]
    fn defaults_fill_the_tunables() {
        let c: Config = toml::from_str(GOOD).unwrap();
        c.validate().unwrap();
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.metrics_listen, Listen::loopback(9700));
        let off: Config = toml::from_str(&format!("metrics_listen = \"off\"\n{GOOD}")).unwrap();
        assert_eq!(off.metrics_listen, Listen::Off);
        assert_eq!(c.request_timeout(), Duration::from_secs(2));
        assert_eq!(c.nodes[1], NodeConfig { id: 2, endpoint: "https://127.0.0.1:2".into() });
    }

    #[test]
    fn bad_configurations_are_refused() {
        let too_high = GOOD.replace("threshold = 2", "threshold = 3");
        let c: Config = toml::from_str(&too_high).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("threshold"));
        let dup = GOOD.replace("id = 2", "id = 1");
        let c: Config = toml::from_str(&dup).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("twice"));
        let plain = GOOD.replace("https://127.0.0.1:2", "http://127.0.0.1:2");
        let c: Config = toml::from_str(&plain).unwrap();
        assert!(c.validate().is_err());
        assert!(toml::from_str::<Config>(&format!("{GOOD}\nbogus = 1")).is_err(), "unknown keys are refused");
    }
}
