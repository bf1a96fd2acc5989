//! The dev and compose clusters' evidence policy. Playing every node's operator, hyokctl writes
//! one policy — the XKS key store's SigV4 credential and key mapping, the dev DKE token issuer
//! and who may use the DKE key, and two caller keys: the operator's own tools (`DIR/caller.key`,
//! every key, and the RSA dealer ceremony) and hyok-xks's deep health check (its health key only) — and installs it into
//! every node's store. A real cluster's operators each write their own
//! (`hyok-node policy install`).

use anyhow::{Context, Result};
use hyok_evidence::caller::Signer;
use hyok_evidence::policy::{Caller, Dke, DkeKey, FORMAT, PolicyFile, XksKey, XksStore};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The operator tools' caller key in a dev (or compose) directory: hyokctl's encrypt, decrypt
/// and bench sign with it; the policy lets it use every key.
pub const CALLER_KEY_FILE: &str = "caller.key";
/// hyok-xks's deep-check caller key, in the `xks` directory; the policy lets it use the health
/// key only.
pub const HEALTH_CALLER_KEY_FILE: &str = "health-caller.key";

/// The caller key in `path`, made (mode 0600) unless it exists.
///
/// # Errors
/// If it cannot be written or read.
pub fn ensure_signer(path: &Path) -> Result<Signer> {
    if !path.exists() {
        let signer = Signer::generate(&mut rand::rng());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
        file.write_all(signer.to_file_text().as_bytes())?;
        file.sync_all()?;
    }
    Signer::load(path)
}

/// The operators' policy file in a dev (or compose) directory: JSON naming the XKS credentials
/// file and the DKE JWKS file, which `hyok-node policy install` folds in. After a credential
/// rotation (`hyokctl xks credentials --file`), install it again on every node.
pub const POLICY_FILE: &str = "policy.json";

/// What the cluster's front-ends and tools present to the nodes. Paths are relative to the
/// directory the policy file is in.
#[derive(Debug)]
pub struct Parties<'a> {
    /// The XKS key store's credentials file (prefix and region are the dev ones).
    pub xks_credentials: &'a Path,
    /// The DKE token audience (hyok-dke's public base URL).
    pub dke_audience: &'a str,
    /// The dev token issuer's JWKS file.
    pub dke_jwks: &'a Path,
    /// The operator tools' caller key.
    pub operator: &'a Signer,
    /// hyok-xks's deep-check caller key.
    pub health: &'a Signer,
}

/// The policy every dev node gets, in its file form.
///
/// # Errors
/// If a usage does not parse (never, for the dev keys).
pub fn cluster_policy(parties: &Parties<'_>) -> Result<PolicyFile> {
    let keys = crate::xks::DEV_KEYS
        .iter()
        .map(|k| {
            let usage = serde_json::from_value(serde_json::Value::String(k.usage.to_owned()))
                .with_context(|| format!("usage {:?}", k.usage))?;
            Ok(XksKey { external_id: k.external_id.to_owned(), key_id: k.key_id.to_owned(), usage })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(PolicyFile {
        format: FORMAT.to_owned(),
        xks: vec![XksStore {
            uri_prefix: crate::xks::DEV_PREFIX.to_owned(),
            region: Some(crate::xks::DEV_REGION.to_owned()),
            credentials: Vec::new(),
            credentials_file: Some(parties.xks_credentials.to_owned()),
            keys,
        }],
        dke: Some(Dke {
            issuers: vec![crate::dke::DEV_ISSUER.to_owned()],
            audience: parties.dke_audience.to_owned(),
            leeway_s: 60,
            jwks: None,
            jwks_file: Some(parties.dke_jwks.to_owned()),
            keys: vec![DkeKey {
                name: crate::dke::DEV_KEY_NAME.to_owned(),
                rsa_key: crate::dke::DEV_RSA_KEY.to_owned(),
                allowed_emails: vec![crate::dke::DEV_EMAIL.to_owned()],
                allowed_roles: vec![crate::dke::DEV_ROLE.to_owned()],
                allowed_object_ids: Vec::new(),
            }],
        }),
        callers: vec![
            Caller {
                name: "operator".to_owned(),
                public_key: hex::encode(parties.operator.public_key().as_bytes()),
                keys: vec!["*".to_owned()],
                rsa_import: true,
            },
            Caller {
                name: "hyok-xks-health".to_owned(),
                public_key: hex::encode(parties.health.public_key().as_bytes()),
                keys: vec![crate::xks::HEALTH_KEY.to_owned()],
                rsa_import: false,
            },
        ],
    })
}

/// Writes `policy` to `DIR/policy.json` and reads it back as `hyok-node policy install` does,
/// with the files it names folded in.
///
/// # Errors
/// If the file cannot be written, or a file it names cannot be read.
pub fn write(dir: &Path, policy: &PolicyFile) -> Result<PolicyFile> {
    let path = dir.join(POLICY_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(policy)?).with_context(|| format!("writing {}", path.display()))?;
    PolicyFile::load(&path)
}

/// As every node's operator: installs `policy` (as [`write`] returns it) into the store of every
/// node in `nodes` (id, data directory; none running), audited as by `caller`.
///
/// # Errors
/// If a store cannot be opened or the policy is refused.
pub fn install(nodes: &[(u16, PathBuf)], policy: &PolicyFile, caller: &str) -> Result<()> {
    for (id, data_dir) in nodes {
        hyok_node::server::install_policy(data_dir, policy, caller)
            .with_context(|| format!("installing the evidence policy into node {id}"))?;
    }
    Ok(())
}

/// As every node's operator: installs `policy` into every running node in `nodes` through its
/// operator socket.
///
/// # Errors
/// If a node refuses it or cannot be reached.
#[cfg(unix)]
pub async fn install_running(nodes: &[(u16, PathBuf)], policy: &PolicyFile) -> Result<()> {
    let request = hyok_node::operator::OperatorRequest::PolicyInstall { policy: policy.clone() };
    for (id, data_dir) in nodes {
        hyok_node::operator::exchange_policy(data_dir, &request)
            .await
            .with_context(|| format!("installing the evidence policy into node {id}"))?;
    }
    Ok(())
}
