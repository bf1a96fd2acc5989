//! `hyokctl xks`: SigV4 credentials for hyok-xks, and the dev cluster's hyok-xks (its keys,
//! credentials and configuration).

use anyhow::{Context, Result};
use hyok_frontend::ConfigFile as _;
use hyok_proto::v1 as pb;
use hyok_xks::credentials::{self, Credential};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The dev cluster's URI path prefix.
pub const DEV_PREFIX: &str = "dev/xks";
/// The dev cluster's SigV4 region.
pub const DEV_REGION: &str = "us-east-1";
/// The hyok key the deep health check uses.
pub const HEALTH_KEY: &str = "xks-health";

/// One external key of the dev key store.
#[derive(Debug, Clone, Copy)]
pub struct DevKey {
    /// Its role in dev.json (`encrypt_decrypt`, `encrypt_only`, …).
    pub role: &'static str,
    /// What KMS calls it.
    pub external_id: &'static str,
    /// The hyok key behind it.
    pub key_id: &'static str,
    /// The mapping's `usage`.
    pub usage: &'static str,
    /// The hyok key's usages.
    pub usages: &'static [pb::KeyUsage],
}

/// The dev key store's keys: one per kind of key the AWS conformance client exercises.
pub const DEV_KEYS: [DevKey; 4] = [
    DevKey {
        role: "encrypt_decrypt",
        external_id: "hyok-demo",
        key_id: "xks-demo",
        usage: "encrypt_decrypt",
        usages: &[pb::KeyUsage::Encrypt, pb::KeyUsage::Decrypt],
    },
    DevKey {
        role: "encrypt_only",
        external_id: "hyok-encrypt-only",
        key_id: "xks-encrypt-only",
        usage: "encrypt",
        usages: &[pb::KeyUsage::Encrypt],
    },
    DevKey {
        role: "decrypt_only",
        external_id: "hyok-decrypt-only",
        key_id: "xks-decrypt-only",
        usage: "decrypt",
        usages: &[pb::KeyUsage::Decrypt],
    },
    DevKey {
        role: "impotent",
        external_id: "hyok-impotent",
        key_id: "xks-impotent",
        usage: "none",
        usages: &[pb::KeyUsage::Wrap, pb::KeyUsage::Unwrap],
    },
];

/// Every hyok key the dev hyok-xks needs, with its usages.
pub fn dev_cluster_keys() -> Vec<(&'static str, &'static [pb::KeyUsage])> {
    let mut keys: Vec<_> = DEV_KEYS.iter().map(|k| (k.key_id, k.usages)).collect();
    keys.push((HEALTH_KEY, &[pb::KeyUsage::Encrypt, pb::KeyUsage::Decrypt]));
    keys
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// `hyokctl xks credentials`: a new credential; added to `file` (created if missing, existing
/// credentials kept, so old and new both work during a rotation) when given. Returns the KMS
/// console's proxy configuration JSON for `prefix`.
pub fn credentials(prefix: &str, file: Option<&Path>) -> Result<String> {
    hyok_xks::config::validate_prefix(prefix)?;
    let credential = credentials::generate(&mut rand::rng());
    if let Some(file) = file {
        let mut all = if file.exists() { credentials::load_file(file)? } else { Vec::new() };
        all.push(credential.clone());
        write_private(file, &credentials::to_file_text(&all))?;
    }
    Ok(credentials::console_json(&hyok_xks::config::base_path(prefix), &credential).to_string())
}

/// A hyok-xks configuration serving the dev key store: HTTPS with the front-end certificate of
/// the PKI in `pki` (as the process sees that directory), the dev keys, a 1 s health refresh,
/// metrics on `metrics_listen` (an address or `off`).
pub fn config_text(
    listen: &str,
    metrics_listen: &str,
    coordinator: &str,
    pki: &Path,
    credentials_file: &Path,
    health_caller_key: &Path,
) -> String {
    let mut text = format!(
        "# Written by hyokctl.\nlisten = \"{listen}\"\nmetrics_listen = \"{metrics_listen}\"\n\n\
         [tls]\ncert = {:?}\nkey = {:?}\n\n\
         [coordinator]\nendpoint = \"{coordinator}\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
         [health]\nkey_id = \"{HEALTH_KEY}\"\nrefresh_ms = 1000\ncaller_key = {:?}\n\n\
         [[key_stores]]\nuri_prefix = \"{DEV_PREFIX}\"\ncredentials_file = {:?}\nregion = \"{DEV_REGION}\"\n",
        pki.join("frontend.pem"),
        pki.join("frontend-key.pem"),
        pki.join("ca.pem"),
        pki.join("frontend.pem"),
        pki.join("frontend-key.pem"),
        health_caller_key,
        credentials_file,
    );
    for key in DEV_KEYS {
        text.push_str(&format!(
            "\n[[key_stores.keys]]\nexternal_id = \"{}\"\nkey_id = \"{}\"\nusage = \"{}\"\n",
            key.external_id, key.key_id, key.usage
        ));
    }
    text
}

/// Makes `file` with one new credential unless it exists; returns its first credential.
pub fn ensure_credentials(file: &Path) -> Result<Credential> {
    if !file.exists() {
        let credential = credentials::generate(&mut rand::rng());
        write_private(file, &credentials::to_file_text(&[credential]))?;
    }
    credentials::load_file(file)?.into_iter().next().context("the credentials file is empty")
}

/// What the dev cluster's hyok-xks runs with.
#[derive(Debug)]
pub struct DevSetup {
    /// Its configuration file.
    pub config: PathBuf,
    /// The credential dev.json names.
    pub credential: Credential,
    /// `role → external key id`.
    pub keys: BTreeMap<String, String>,
}

/// Writes `DIR/xks/xks.toml` for a hyok-xks on `port` (metrics on `metrics_port`), reusing
/// `DIR/xks/credentials.toml` (made on the first run).
pub fn dev_prepare(dir: &Path, pki: &Path, coordinator: &str, port: u16, metrics_port: u16) -> Result<DevSetup> {
    let xks_dir = dir.join("xks");
    std::fs::create_dir_all(&xks_dir)?;
    let credentials_file = xks_dir.join("credentials.toml");
    let credential = ensure_credentials(&credentials_file)?;
    let health_key = xks_dir.join(crate::policy::HEALTH_CALLER_KEY_FILE);
    crate::policy::ensure_signer(&health_key)?;
    let config = xks_dir.join("xks.toml");
    let text = config_text(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{metrics_port}"),
        coordinator,
        pki,
        &credentials_file,
        &health_key,
    );
    std::fs::write(&config, text)?;
    hyok_xks::Config::load(&config).context("the dev hyok-xks configuration does not load")?;
    let keys = DEV_KEYS.iter().map(|k| (k.role.to_owned(), k.external_id.to_owned())).collect();
    Ok(DevSetup { config, credential, keys })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_added_to_the_file_and_printed_for_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.toml");
        let first: serde_json::Value = serde_json::from_str(&credentials("a/b", Some(&file)).unwrap()).unwrap();
        let second: serde_json::Value = serde_json::from_str(&credentials("a/b", Some(&file)).unwrap()).unwrap();
        assert_eq!(first["XksProxyUriPath"], "/a/b/kms/xks/v1");
        let stored = credentials::load_file(&file).unwrap();
        assert_eq!(stored.len(), 2, "a rotation keeps the old credential");
        for (printed, stored) in [first, second].iter().zip(&stored) {
            assert_eq!(printed["XksProxyAuthenticationCredential"]["AccessKeyId"], stored.access_key_id.as_str());
            assert_eq!(printed["XksProxyAuthenticationCredential"]["RawSecretAccessKey"], stored.secret());
        }
        assert!(credentials("/bad", None).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn dev_configuration_loads_and_keeps_its_credential() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let first = dev_prepare(dir.path(), &pki, "https://127.0.0.1:1", 8443, 9702).unwrap();
        let again = dev_prepare(dir.path(), &pki, "https://127.0.0.1:1", 9443, 9712).unwrap();
        assert_eq!(first.credential.access_key_id, again.credential.access_key_id);
        let config = hyok_xks::Config::load(&again.config).unwrap();
        assert_eq!(config.listen.port(), 9443);
        assert_eq!(config.metrics_listen, hyok_proto::metrics::Listen::loopback(9712));
        assert_eq!(config.key_stores[0].keys.len(), DEV_KEYS.len());
        assert_eq!(again.keys["encrypt_only"], "hyok-encrypt-only");
    }
}
