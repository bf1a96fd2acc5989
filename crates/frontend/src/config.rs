//! The configuration tables every front-end has, with their defaults and checks, and the
//! loading of a front-end's TOML file.
//!
//! ```toml
//! [tls]                          # the HTTPS server certificate
//! cert = "server.pem"
//! key = "server-key.pem"
//! # client_ca = "client-ca.pem"  # optional mutual TLS: the CA and subject name clients present
//! # client_subject = "cks.kms.us-east-1.amazonaws.com"
//! [coordinator]                  # a front-end certificate of the cluster
//! endpoint = "https://10.0.0.10:7100"
//! ca = "pki/ca.pem"
//! cert = "pki/frontend.pem"
//! key = "pki/frontend-key.pem"
//! # connections = 2
//! ```

use anyhow::{Context, Result, ensure};
use hyok_proto::TlsFiles;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// HTTPS server certificate and optional mutual TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsTls {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA(s) a client certificate must chain to; set together with `client_subject`.
    pub client_ca: Option<PathBuf>,
    /// The subject name (DNS SAN or common name) a client certificate must carry.
    pub client_subject: Option<String>,
}

impl HttpsTls {
    /// Takes relative paths from `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for p in [Some(&mut self.cert), Some(&mut self.key), self.client_ca.as_mut()].into_iter().flatten() {
            resolve(dir, p);
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.client_ca.is_some() == self.client_subject.is_some(),
            "tls.client_ca and tls.client_subject go together"
        );
        Ok(())
    }
}

/// The coordinator and this front-end's cluster certificate (role `frontend`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Coordinator {
    /// `https://host:port`.
    pub endpoint: String,
    /// The cluster CA.
    pub ca: PathBuf,
    /// A certificate with the front-end role.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// HTTP/2 connections to spread requests over.
    #[serde(default = "default_connections")]
    pub connections: usize,
}

fn default_connections() -> usize {
    2
}

impl Coordinator {
    /// Takes relative paths from `dir`.
    pub fn resolve_paths(&mut self, dir: &Path) {
        for p in [&mut self.ca, &mut self.cert, &mut self.key] {
            resolve(dir, p);
        }
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.connections >= 1, "coordinator.connections must be at least 1");
        Ok(())
    }

    /// The cluster TLS files of this front-end.
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }
}

/// `p`, if relative, taken from `dir`.
pub fn resolve(dir: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = dir.join(&*p);
    }
}

/// A front-end's whole configuration file.
pub trait ConfigFile: DeserializeOwned {
    /// The toolkit's part of the file: `listen` (`host:port` to serve HTTPS on), `[tls]` and
    /// `[coordinator]`.
    fn frontend(&mut self) -> (SocketAddr, &mut HttpsTls, &mut Coordinator);

    /// Takes the front-end's own relative paths from `dir` (the file's directory); the
    /// toolkit's tables are done by [`ConfigFile::load`].
    fn resolve_paths(&mut self, dir: &Path);

    /// Where the front-end serves its Prometheus metrics (its `metrics_listen` key): plain
    /// HTTP on loopback by default, or `off`.
    fn metrics_listen(&self) -> hyok_proto::metrics::Listen;

    /// Checks the front-end's own settings; [`ConfigFile::check`] checks the rest.
    ///
    /// # Errors
    /// Naming the first setting that is out of range or inconsistent.
    fn validate(&self) -> Result<()>;

    /// Checks the whole file: the toolkit's tables, then [`ConfigFile::validate`].
    ///
    /// # Errors
    /// Naming the first setting that is out of range or inconsistent.
    fn check(&mut self) -> Result<()> {
        let (_, tls, coordinator) = self.frontend();
        tls.validate()?;
        coordinator.validate()?;
        self.validate()
    }

    /// Parses and checks `text` (relative paths stay as they are).
    ///
    /// # Errors
    /// If `text` does not parse (unknown fields included) or is not valid.
    fn from_toml(text: &str) -> Result<Self> {
        let mut config: Self = toml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    /// Reads, parses and checks the file at `path`; relative paths in it are taken from the
    /// file's directory.
    ///
    /// # Errors
    /// If the file cannot be read, does not parse (unknown fields included) or is not valid.
    fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Self = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(dir) = path.parent() {
            let (_, tls, coordinator) = config.frontend();
            tls.resolve_paths(dir);
            coordinator.resolve_paths(dir);
            config.resolve_paths(dir);
        }
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        listen: SocketAddr,
        tls: HttpsTls,
        coordinator: Coordinator,
    }

    impl ConfigFile for File {
        fn frontend(&mut self) -> (SocketAddr, &mut HttpsTls, &mut Coordinator) {
            (self.listen, &mut self.tls, &mut self.coordinator)
        }
        fn resolve_paths(&mut self, _: &Path) {}
        fn metrics_listen(&self) -> hyok_proto::metrics::Listen {
            hyok_proto::metrics::Listen::Off
        }
        fn validate(&self) -> Result<()> {
            Ok(())
        }
    }

    const MINIMAL: &str = r#"
        listen = "127.0.0.1:0"
        [tls]
        cert = "c.pem"
        key = "/abs/k.pem"
        [coordinator]
        endpoint = "https://127.0.0.1:1"
        ca = "ca.pem"
        cert = "f.pem"
        key = "f-key.pem"
    "#;

    fn load_text(text: &str) -> Result<File> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frontend.toml");
        std::fs::write(&path, text).unwrap();
        File::load(&path)
    }

    #[test]
    fn defaults_apply_and_relative_paths_are_taken_from_the_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frontend.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let mut file = File::load(&path).unwrap();
        assert_eq!(file.coordinator.connections, 2);
        assert_eq!(file.tls.cert, dir.path().join("c.pem"));
        assert_eq!(file.tls.key, PathBuf::from("/abs/k.pem"));
        assert_eq!(file.coordinator.tls_files().ca, dir.path().join("ca.pem"));
        assert_eq!(file.frontend().0.port(), 0);
    }

    #[test]
    fn inconsistent_tables_are_refused_with_the_setting_named() {
        for (to, named) in [
            ("key = \"/abs/k.pem\"\nclient_ca = \"ca.pem\"", "client_subject"),
            ("key = \"/abs/k.pem\"\nclient_subject = \"x\"", "client_ca"),
            ("key = \"f-key.pem\"\nconnections = 0", "connections"),
            ("key = \"f-key.pem\"\nunknown = 1", "unknown"),
        ] {
            let from = if to.starts_with("key = \"/abs") { "key = \"/abs/k.pem\"" } else { "key = \"f-key.pem\"" };
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL);
            let err = format!("{:#}", load_text(&text).unwrap_err());
            assert!(err.contains(named), "{to}: {err}");
        }
        let err = format!("{:#}", File::load(Path::new("/nonexistent/frontend.toml")).unwrap_err());
        assert!(err.contains("/nonexistent/frontend.toml"), "{err}");
    }
}
