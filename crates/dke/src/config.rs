//! `hyok-dke`'s TOML configuration: where it listens, how it reaches the coordinator, the URL
//! Office sees, how bearer tokens are checked, and one `[[keys]]` table per DKE key name.
//!
//! ```toml
//! listen = "0.0.0.0:443"
//! metrics_listen = "127.0.0.1:9703"   # Prometheus metrics over plain HTTP, or "off"
//! public_base_url = "https://dke.example.com"   # kid = public_base_url/{keyName}/{version}
//! cache_exp_s = 86400                            # cache.exp in GET answers; 0 leaves it out
//! [tls]                                          # the HTTPS server certificate
//! cert = "dke.pem"
//! key = "dke-key.pem"
//! [coordinator]                                  # a front-end certificate of the cluster
//! endpoint = "https://10.0.0.10:7100"
//! ca = "pki/ca.pem"
//! cert = "pki/frontend.pem"
//! key = "pki/frontend-key.pem"
//! [jwt]
//! issuers = ["https://sts.windows.net/<tenant id>/"]
//! audience = "https://dke.example.com"
//! jwks_url = "https://login.microsoftonline.com/common/discovery/keys"   # refreshed in the background
//! jwks_ca = "/etc/ssl/certs/ca-certificates.crt"                        # roots for jwks_url
//! # jwks_file = "extra-jwks.json"              # and/or a file, reloaded when it changes
//! authorization = "https://login.microsoftonline.com/common/oauth2/authorize"
//! # realm = "https://dke.example.com"          # default: audience
//! # resource = "https://dke.example.com"       # default: audience
//! # leeway_s = 60
//! [[keys]]
//! name = "confidential"                          # the DKE key name in the label's URL
//! rsa_key = "dke-confidential"                   # the hyok RSA key behind it
//! allowed_emails = ["alice@example.com"]         # case-insensitive: email, upn, preferred_username
//! allowed_roles = ["DKE.Readers"]                # any of the token's roles or groups
//! allowed_object_ids = ["<tid>/<oid>"]           # immutable Entra ID user ids
//! ```

use anyhow::{Context, Result, bail, ensure};
use hyok_frontend::config::{ConfigFile, resolve};
pub use hyok_frontend::config::{Coordinator, HttpsTls};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `host:port` to serve HTTPS on.
    pub listen: SocketAddr,
    /// The external URL clients call (`https://host[:port]`, no path or trailing slash); the
    /// `kid` of every key is this + `/{keyName}/{version}`. Behind a proxy, the proxy's URL.
    pub public_base_url: String,
    /// How long Office may cache a public key (`cache.exp` = now + this), in seconds; 0 leaves
    /// `cache` out of the answer.
    #[serde(default = "defaults::cache_exp_s")]
    pub cache_exp_s: u64,
    /// Time budget of one request, in milliseconds, from the moment its body has arrived.
    #[serde(default = "defaults::budget_ms")]
    pub budget_ms: u64,
    /// Requests served at once; one more is refused with 503.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// The HTTPS server's certificate.
    pub tls: HttpsTls,
    /// How to reach the coordinator.
    pub coordinator: Coordinator,
    /// Bearer token validation.
    pub jwt: Jwt,
    /// The DKE keys.
    pub keys: Vec<Key>,
    /// Where `GET /metrics` is served (plain HTTP), or `"off"`.
    #[serde(default = "defaults::metrics_listen")]
    pub metrics_listen: hyok_proto::metrics::Listen,
}

/// JWT bearer validation (RS256 and ES256 only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jwt {
    /// Accepted `iss` values (exact match), e.g. one per Entra ID tenant.
    pub issuers: Vec<String>,
    /// The `aud` a token must carry: the service's own base URL, e.g. `https://dke.example.com`.
    pub audience: String,
    /// A JSON Web Key Set file, reloaded when it changes. Its keys and those of `jwks_url` are
    /// trusted together; at least one of the two is needed.
    pub jwks_file: Option<PathBuf>,
    /// The issuer's `jwks_uri` (`https://` only), fetched at start and every
    /// `jwks_refresh_s` (every 30 s while it fails; the last good set stays in use).
    pub jwks_url: Option<String>,
    /// The CA certificates (PEM) trusted for `jwks_url`, e.g. the system bundle; required with
    /// `jwks_url` (hyok-dke carries no root store of its own).
    pub jwks_ca: Option<PathBuf>,
    /// How often `jwks_url` is fetched, in seconds.
    #[serde(default = "defaults::jwks_refresh_s")]
    pub jwks_refresh_s: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "defaults::leeway_s")]
    pub leeway_s: u64,
    /// `authorization="…"` of the 401 challenge: the authorize URL the client gets a token from.
    pub authorization: String,
    /// `realm="…"` of the 401 challenge (default: `audience`).
    pub realm: Option<String>,
    /// `resource="…"` of the 401 challenge (default: `audience`).
    pub resource: Option<String>,
}

/// One DKE key name and who may use it (the same table every node's policy holds).
pub use hyok_evidence::policy::DkeKey as Key;

mod defaults {
    pub fn cache_exp_s() -> u64 {
        86_400
    }
    pub fn max_in_flight() -> usize {
        256
    }
    pub fn budget_ms() -> u64 {
        5_000
    }
    pub fn metrics_listen() -> hyok_proto::metrics::Listen {
        hyok_proto::metrics::Listen::loopback(9703)
    }
    pub fn leeway_s() -> u64 {
        60
    }
    pub fn jwks_refresh_s() -> u64 {
        3600
    }
}

impl Config {
    /// The per-request budget.
    pub fn budget(&self) -> Duration {
        Duration::from_millis(self.budget_ms)
    }
}

impl ConfigFile for Config {
    fn frontend(&mut self) -> (SocketAddr, &mut HttpsTls, &mut Coordinator) {
        (self.listen, &mut self.tls, &mut self.coordinator)
    }

    fn metrics_listen(&self) -> hyok_proto::metrics::Listen {
        self.metrics_listen
    }

    fn resolve_paths(&mut self, dir: &Path) {
        for p in [self.jwt.jwks_file.as_mut(), self.jwt.jwks_ca.as_mut()].into_iter().flatten() {
            resolve(dir, p);
        }
    }

    fn validate(&self) -> Result<()> {
        let base = &self.public_base_url;
        let rest = base.strip_prefix("https://").context("public_base_url must start with https://")?;
        ensure!(
            !rest.is_empty() && !rest.contains(['/', '?', '#', ' ']),
            "public_base_url must be https://host[:port] with no path, query or trailing slash"
        );
        ensure!((1..=60_000).contains(&self.budget_ms), "budget_ms must be 1..=60000");
        ensure!(self.max_in_flight >= 1, "max_in_flight must be at least 1");
        ensure!(!self.jwt.issuers.is_empty(), "jwt.issuers must name at least one issuer");
        ensure!(!self.jwt.audience.is_empty(), "jwt.audience must not be empty");
        ensure!(self.jwt.leeway_s <= 600, "jwt.leeway_s must be at most 600");
        ensure!(
            self.jwt.jwks_file.is_some() || self.jwt.jwks_url.is_some(),
            "jwt needs jwks_file or jwks_url (or both)"
        );
        if let Some(url) = &self.jwt.jwks_url {
            ensure!(url.starts_with("https://"), "jwt.jwks_url must be an https:// URL");
            ensure!(self.jwt.jwks_ca.is_some(), "jwt.jwks_url needs jwt.jwks_ca (the CA certificates to trust for it)");
        }
        ensure!(self.jwt.jwks_refresh_s >= 60, "jwt.jwks_refresh_s must be at least 60");
        for value in
            [Some(&self.jwt.authorization), self.jwt.realm.as_ref(), self.jwt.resource.as_ref()].into_iter().flatten()
        {
            ensure!(
                value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
                "jwt.authorization, realm and resource must be printable ASCII without quotes or spaces"
            );
        }
        ensure!(!self.keys.is_empty(), "at least one [[keys]] is needed");
        let mut names = HashSet::new();
        for key in &self.keys {
            hyok_proto::validate_key_id(&key.name).map_err(|e| anyhow::anyhow!("key name {:?}: {e}", key.name))?;
            hyok_proto::validate_key_id(&key.rsa_key).map_err(|e| anyhow::anyhow!("rsa_key {:?}: {e}", key.rsa_key))?;
            ensure!(
                !key.access().is_empty(),
                "key {:?} needs allowed_emails, allowed_roles or allowed_object_ids (nobody could decrypt)",
                key.name
            );
            if !names.insert(key.name.as_str()) {
                bail!("key name {:?} is configured twice", key.name);
            }
        }
        Ok(())
    }
}

impl Jwt {
    /// The `WWW-Authenticate` value of every 401:
    /// `Bearer resource="…", authorization="…", realm="…"`.
    pub fn challenge(&self) -> String {
        let resource = self.resource.as_deref().unwrap_or(&self.audience);
        let realm = self.realm.as_deref().unwrap_or(&self.audience);
        format!("Bearer resource=\"{resource}\", authorization=\"{}\", realm=\"{realm}\"", self.authorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        listen = "127.0.0.1:0"
        public_base_url = "https://dke.example.com"
        [tls]
        cert = "c.pem"
        key = "k.pem"
        [coordinator]
        endpoint = "https://127.0.0.1:1"
        ca = "ca.pem"
        cert = "f.pem"
        key = "f-key.pem"
        [jwt]
        issuers = ["https://issuer.example.com/"]
        audience = "https://dke.example.com"
        jwks_file = "jwks.json"
        authorization = "https://login.example.com/authorize"
        [[keys]]
        name = "confidential"
        rsa_key = "dke-confidential"
        allowed_emails = ["alice@example.com"]
    "#;

    #[test]
    fn minimal_file_takes_the_defaults_and_resolves_paths() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.cache_exp_s, 86_400);
        assert_eq!(config.jwt.leeway_s, 60);
        assert_eq!(
            config.jwt.challenge(),
            "Bearer resource=\"https://dke.example.com\", authorization=\"https://login.example.com/authorize\", \
             realm=\"https://dke.example.com\""
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dke.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.jwt.jwks_file, Some(dir.path().join("jwks.json")));
    }

    #[test]
    fn invalid_settings_are_refused() {
        for (from, to) in [
            ("\"https://dke.example.com\"\n        [tls]", "\"http://dke.example.com\"\n        [tls]"),
            ("\"https://dke.example.com\"\n        [tls]", "\"https://dke.example.com/\"\n        [tls]"),
            ("name = \"confidential\"", "name = \"a/b\""),
            ("allowed_emails = [\"alice@example.com\"]", ""),
            ("issuers = [\"https://issuer.example.com/\"]", "issuers = []"),
            ("authorization = \"https://login.example.com/authorize\"", "authorization = \"a\\\"b\""),
            ("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\nunknown = 1"),
            ("jwks_file = \"jwks.json\"", ""),
            ("jwks_file = \"jwks.json\"", "jwks_url = \"https://login.example.com/keys\""),
            ("jwks_file = \"jwks.json\"", "jwks_url = \"http://login.example.com/keys\"\njwks_ca = \"ca.pem\""),
        ] {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL, "{from}");
            assert!(Config::from_toml(&text).is_err(), "{to}");
        }
        let url = MINIMAL
            .replace("jwks_file = \"jwks.json\"", "jwks_url = \"https://l.example.com/k\"\njwks_ca = \"ca.pem\"");
        assert!(Config::from_toml(&url).is_ok());
        let twice = format!("{MINIMAL}\n[[keys]]\nname = \"confidential\"\nrsa_key = \"x\"\nallowed_roles = [\"r\"]\n");
        assert!(Config::from_toml(&twice).is_err());
    }
}
