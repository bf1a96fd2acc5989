//! `hyok-xks`'s TOML configuration: where it listens, how it reaches the coordinator, and one
//! `[[key_stores]]` table per URI path prefix (each an isolated logical key store with its own
//! credentials and keys).
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! metrics_listen = "127.0.0.1:9702"   # Prometheus metrics over plain HTTP, or "off"
//! [tls]                          # the HTTPS server certificate
//! cert = "xks.pem"
//! key = "xks-key.pem"
//! # client_ca = "kms-ca.pem"    # optional mutual TLS: the CA and subject name KMS presents
//! # client_subject = "cks.kms.us-east-1.amazonaws.com"
//! [coordinator]                  # a front-end certificate of the cluster
//! endpoint = "https://10.0.0.10:7100"
//! ca = "pki/ca.pem"
//! cert = "pki/frontend.pem"
//! key = "pki/frontend-key.pem"
//! [[key_stores]]
//! uri_prefix = "keystores/prod"  # requests go to /keystores/prod/kms/xks/v1/...
//! credentials_file = "prod-credentials.toml"
//! region = "us-east-1"           # optional: the SigV4 scope must name it
//! [[key_stores.keys]]
//! external_id = "payments"       # what KMS calls the key
//! key_id = "payments-xks"        # the hyok key behind it
//! usage = "encrypt_decrypt"      # encrypt_decrypt | encrypt | decrypt | none
//! allowed_principals = ["arn:aws:iam::111122223333:role/*"]   # optional; `*` matches any run
//! ```

use anyhow::{Result, bail, ensure};
use hyok_frontend::config::{ConfigFile, resolve};
pub use hyok_frontend::config::{Coordinator, HttpsTls};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest `XksProxyUriPath` the spec allows (prefix plus `/kms/xks/v1`).
pub const MAX_URI_PATH: usize = 128;
/// The fixed tail of every XKS base path.
pub const API_PATH: &str = "/kms/xks/v1";

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to serve HTTPS on.
    pub listen: SocketAddr,
    /// The HTTPS server's certificate, and optional client-certificate checks.
    pub tls: HttpsTls,
    /// How to reach the coordinator.
    pub coordinator: Coordinator,
    /// The logical key stores, one per URI path prefix.
    pub key_stores: Vec<KeyStore>,
    /// Time budget of one request, in milliseconds, from the moment its headers arrive.
    /// KMS gives up after 250 ms, network included.
    #[serde(default = "defaults::budget_ms")]
    pub budget_ms: u64,
    /// Requests served at once; one more is refused with ThrottlingException.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Largest plaintext (and ciphertext) in bytes; larger → UnsupportedOperationException.
    /// The spec asks for at least 4300.
    #[serde(default = "defaults::max_plaintext")]
    pub max_plaintext: usize,
    /// Largest additional authenticated data in bytes; the spec asks for at least 8192.
    #[serde(default = "defaults::max_aad")]
    pub max_aad: usize,
    /// The deep health check.
    #[serde(default)]
    pub health: Health,
    /// Where `GET /metrics` is served (plain HTTP), or `"off"`.
    #[serde(default = "defaults::metrics_listen")]
    pub metrics_listen: hyok_proto::metrics::Listen,
}

/// The deep health check (`GetHealthStatus`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A hyok key used only by the health check (a real encrypt and decrypt each time).
    /// Without one the check is shallow: node reachability only.
    pub key_id: Option<String>,
    /// How often the check runs in the background, in milliseconds.
    #[serde(default = "defaults::health_refresh_ms")]
    pub refresh_ms: u64,
    /// Oldest result served, in milliseconds (at most 60 000, as the spec requires).
    #[serde(default = "defaults::health_max_age_ms")]
    pub max_age_ms: u64,
    /// A node answering slower than this is reported `DEGRADED`.
    #[serde(default = "defaults::degraded_ms")]
    pub degraded_ms: u64,
    /// Reported as `xksProxyFleetSize`: how many hyok-xks instances serve this endpoint.
    #[serde(default = "defaults::fleet_size")]
    pub fleet_size: u32,
    /// The caller key (`hyokctl caller new`) the deep check signs its own requests with: no AWS
    /// request backs them, and every node refuses a request without evidence. The nodes'
    /// policies should list it for the health key alone.
    pub caller_key: Option<PathBuf>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            key_id: None,
            refresh_ms: defaults::health_refresh_ms(),
            max_age_ms: defaults::health_max_age_ms(),
            degraded_ms: defaults::degraded_ms(),
            fleet_size: defaults::fleet_size(),
            caller_key: None,
        }
    }
}

/// One logical key store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStore {
    /// The path prefix before `/kms/xks/v1`, without leading or trailing slash; may be empty.
    pub uri_prefix: String,
    /// The SigV4 credentials file (reloaded when it changes).
    pub credentials_file: PathBuf,
    /// When set, the SigV4 credential scope must name this region.
    pub region: Option<String>,
    /// The keys KMS may use through this key store.
    #[serde(default)]
    pub keys: Vec<KeyMapping>,
}

pub use hyok_evidence::xks::Usage;

/// External key id → hyok key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyMapping {
    /// The `externalKeyId` KMS sends: `[A-Za-z0-9._-]{1,128}`.
    pub external_id: String,
    /// The hyok key behind it.
    pub key_id: String,
    /// What KMS may do with it.
    pub usage: Usage,
    /// Secondary authorization: `awsPrincipalArn` patterns (`*` matches any run of
    /// characters). Empty: any principal.
    #[serde(default)]
    pub allowed_principals: Vec<String>,
}

mod defaults {
    pub fn metrics_listen() -> hyok_proto::metrics::Listen {
        hyok_proto::metrics::Listen::loopback(9702)
    }
    pub fn budget_ms() -> u64 {
        200
    }
    pub fn max_in_flight() -> usize {
        512
    }
    pub fn max_plaintext() -> usize {
        8192
    }
    pub fn max_aad() -> usize {
        16384
    }
    pub fn health_refresh_ms() -> u64 {
        5000
    }
    pub fn health_max_age_ms() -> u64 {
        60_000
    }
    pub fn degraded_ms() -> u64 {
        100
    }
    pub fn fleet_size() -> u32 {
        1
    }
}

/// Whether `prefix` is a valid URI path prefix: `[A-Za-z0-9/_-]`, no leading, trailing or
/// doubled slash, and short enough that `/prefix/kms/xks/v1` fits in 128 characters.
pub fn validate_prefix(prefix: &str) -> Result<()> {
    ensure!(
        prefix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-')),
        "uri_prefix {prefix:?} may contain only A-Z, a-z, 0-9, '/', '_' and '-'"
    );
    ensure!(
        !prefix.starts_with('/') && !prefix.ends_with('/') && !prefix.contains("//"),
        "uri_prefix {prefix:?} must not start or end with '/' or contain '//'"
    );
    ensure!(
        base_path(prefix).len() <= MAX_URI_PATH,
        "uri_prefix {prefix:?} is too long: the URI path must fit in {MAX_URI_PATH} characters"
    );
    Ok(())
}

/// `/prefix/kms/xks/v1` (or `/kms/xks/v1` for the empty prefix).
pub fn base_path(prefix: &str) -> String {
    if prefix.is_empty() { API_PATH.to_owned() } else { format!("/{prefix}{API_PATH}") }
}

impl ConfigFile for Config {
    fn frontend(&mut self) -> (SocketAddr, &mut HttpsTls, &mut Coordinator) {
        (self.listen, &mut self.tls, &mut self.coordinator)
    }

    fn metrics_listen(&self) -> hyok_proto::metrics::Listen {
        self.metrics_listen
    }

    fn resolve_paths(&mut self, dir: &Path) {
        for store in &mut self.key_stores {
            resolve(dir, &mut store.credentials_file);
        }
        if let Some(key) = &mut self.health.caller_key {
            resolve(dir, key);
        }
    }

    fn validate(&self) -> Result<()> {
        ensure!(!self.key_stores.is_empty(), "at least one [[key_stores]] is needed");
        ensure!(
            self.health.key_id.is_none() || self.health.caller_key.is_some(),
            "health.key_id needs health.caller_key: the nodes refuse the deep check's requests without a signature"
        );
        ensure!((1..=10_000).contains(&self.budget_ms), "budget_ms must be 1..=10000");
        ensure!(self.max_in_flight >= 1, "max_in_flight must be at least 1");
        ensure!(self.max_plaintext >= 4300, "max_plaintext must be at least 4300 (the spec's minimum)");
        ensure!(self.max_plaintext <= 1024 * 1024, "max_plaintext must be at most 1 MiB (the coordinator's limit)");
        ensure!(
            (8192..=usize::from(u16::MAX)).contains(&self.max_aad),
            "max_aad must be 8192..=65535 (the spec's minimum; its length travels in two bytes)"
        );
        ensure!(self.health.max_age_ms <= 60_000, "health.max_age_ms must be at most 60000 (the spec's limit)");
        ensure!(self.health.refresh_ms >= 100, "health.refresh_ms must be at least 100");
        ensure!(self.health.fleet_size >= 1, "health.fleet_size must be at least 1");
        if let Some(key) = &self.health.key_id {
            hyok_proto::validate_key_id(key).map_err(|e| anyhow::anyhow!("health.key_id: {e}"))?;
        }
        let mut prefixes = HashSet::new();
        for store in &self.key_stores {
            validate_prefix(&store.uri_prefix)?;
            if !prefixes.insert(store.uri_prefix.as_str()) {
                bail!("uri_prefix {:?} is configured twice", store.uri_prefix);
            }
            let mut ids = HashSet::new();
            for key in &store.keys {
                hyok_proto::validate_key_id(&key.external_id)
                    .map_err(|e| anyhow::anyhow!("external_id {:?}: {e}", key.external_id))?;
                hyok_proto::validate_key_id(&key.key_id)
                    .map_err(|e| anyhow::anyhow!("key_id {:?}: {e}", key.key_id))?;
                if !ids.insert(key.external_id.as_str()) {
                    bail!("external_id {:?} appears twice under uri_prefix {:?}", key.external_id, store.uri_prefix);
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The per-request budget.
    pub fn budget(&self) -> Duration {
        Duration::from_millis(self.budget_ms)
    }
}

/// Whether `principal` matches `pattern`, where `*` matches any run of characters (possibly
/// empty) and everything else matches itself.
pub fn principal_matches(pattern: &str, principal: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == principal;
    };
    if parts.len() == 1 {
        return pattern == principal;
    }
    let Some(mut rest) = principal.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        listen = "127.0.0.1:0"
        tls = { cert = "c.pem", key = "k.pem" }
        coordinator = { endpoint = "https://127.0.0.1:1", ca = "ca.pem", cert = "f.pem", key = "f-key.pem" }
        [[key_stores]]
        uri_prefix = "example/uri/path/prefix"
        credentials_file = "creds.toml"
        [[key_stores.keys]]
        external_id = "foo"
        key_id = "xks-main"
        usage = "encrypt_decrypt"
    "#;

    #[test]
    fn minimal_file_takes_the_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.budget_ms, 200);
        assert_eq!(config.max_plaintext, 8192);
        assert_eq!(config.health.max_age_ms, 60_000);
        assert_eq!(config.key_stores[0].keys[0].usage, Usage::EncryptDecrypt);
    }

    #[test]
    fn relative_paths_are_taken_from_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xks.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.tls.cert, dir.path().join("c.pem"));
        assert_eq!(config.key_stores[0].credentials_file, dir.path().join("creds.toml"));
    }

    #[test]
    fn invalid_settings_are_refused() {
        for (from, to) in [
            ("uri_prefix = \"example/uri/path/prefix\"", "uri_prefix = \"/leading\""),
            ("uri_prefix = \"example/uri/path/prefix\"", "uri_prefix = \"bad prefix\""),
            ("uri_prefix = \"example/uri/path/prefix\"", "uri_prefix = \"a//b\""),
            ("external_id = \"foo\"", "external_id = \"no/slash\""),
            ("usage = \"encrypt_decrypt\"", "usage = \"sign\""),
            ("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nmax_plaintext = 4299"),
            ("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nmax_aad = 70000"),
            ("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nunknown = 1"),
            ("key = \"k.pem\"", "key = \"k.pem\", client_ca = \"ca.pem\""),
        ] {
            assert!(Config::from_toml(&MINIMAL.replace(from, to)).is_err(), "{to}");
        }
        let long = "p".repeat(MAX_URI_PATH - API_PATH.len());
        assert!(Config::from_toml(&MINIMAL.replace("example/uri/path/prefix", &long)).is_err());
        assert!(Config::from_toml(&MINIMAL.replace("example/uri/path/prefix", &long[1..])).is_ok());
        let twice =
            format!("{MINIMAL}\n[[key_stores]]\nuri_prefix = \"example/uri/path/prefix\"\ncredentials_file = \"c\"\n");
        assert!(Config::from_toml(&twice).is_err());
    }

    #[test]
    fn the_empty_prefix_serves_the_bare_api_path() {
        assert_eq!(base_path(""), "/kms/xks/v1");
        assert_eq!(base_path("a/b"), "/a/b/kms/xks/v1");
        assert!(validate_prefix("").is_ok());
    }

    #[test]
    fn principal_patterns_match_runs_with_star() {
        let arn = "arn:aws:iam::123456789012:user/Alice";
        assert!(principal_matches(arn, arn));
        assert!(principal_matches("*", arn));
        assert!(principal_matches("arn:aws:iam::123456789012:*", arn));
        assert!(principal_matches("arn:aws:iam::*:user/Alice", arn));
        assert!(principal_matches("*Alice", arn));
        assert!(!principal_matches("arn:aws:iam::123456789012:user/Bob", arn));
        assert!(!principal_matches("arn:aws:iam::999999999999:*", arn));
        assert!(!principal_matches("*Alice*x", arn));
        assert!(!principal_matches("a*a", "a"));
        assert!(principal_matches("a*a", "aa"));
    }
}
