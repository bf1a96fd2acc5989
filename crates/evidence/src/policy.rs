//! A node's evidence policy: which XKS key stores (their SigV4 credentials and external-key
//! mappings), which DKE token issuers and users, and which gRPC caller keys may use which key —
//! and the judge that holds every partial a node computes to it ([`Policy::authorize`]).
//!
//! The policy is the node operator's: `hyok-node policy install FILE` reads the file below,
//! folds in the credentials and JWKS files it names, and hands the result to the node over its
//! operator socket; the node stores it sealed. Nothing the coordinator says changes it.
//!
//! ```toml
//! format = "hyok-node-policy/v1"
//!
//! [[xks]]                                  # one per XKS key store (as in hyok-xks)
//! uri_prefix = "keystores/prod"
//! region = "us-east-1"                     # optional: the SigV4 scope must name it
//! credentials_file = "prod-credentials.toml"   # or inline [[xks.credentials]] tables
//! [[xks.keys]]
//! external_id = "payments"
//! key_id = "payments-xks"
//! usage = "encrypt_decrypt"                # encrypt_decrypt | encrypt | decrypt | none
//!
//! [dke]                                    # DKE bearer tokens
//! issuers = ["https://sts.windows.net/<tenant id>/"]
//! audience = "https://dke.example.com"
//! jwks_file = "entra-jwks.json"            # or an inline `jwks = { keys = [...] }`
//! [[dke.keys]]                            # hyok-dke's [[keys]] tables, as they are
//! name = "confidential"
//! rsa_key = "dke-confidential"
//! allowed_emails = ["alice@example.com"]
//! allowed_roles = ["DKE.Readers"]
//! allowed_object_ids = ["<tid>/<oid>"]
//!
//! [[callers]]                              # gRPC KeyVault callers
//! name = "payments-app"
//! public_key = "…64 hex…"
//! keys = ["payments-xks"]                  # key names (EC or RSA); "*" is every key
//! rsa_import = false                       # may it deal RSA key versions of those names
//! ```

use crate::caller as signed;
use crate::credentials::{Credential, CredentialSet};
use crate::jwt::{self, Access, KeySet, Rules};
use crate::sigv4;
use crate::xks::{self, Usage};
use hyok_proto::v1 as pb;
use hyok_threshold::caller::{CallerRequest, CallerSignature};
use hyok_threshold::{CallerPublicKey, Wire};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `format` every policy carries.
pub const FORMAT: &str = "hyok-node-policy/v1";

/// The policy as its operator writes it (TOML) and as the node stores it (JSON, files folded
/// in). `Debug` never prints a secret access key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// XKS key stores.
    #[serde(default)]
    pub xks: Vec<XksStore>,
    /// DKE bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dke: Option<Dke>,
    /// gRPC callers.
    #[serde(default)]
    pub callers: Vec<Caller>,
}

/// One XKS key store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksStore {
    /// The path prefix before `/kms/xks/v1`, without leading or trailing slash; may be empty.
    pub uri_prefix: String,
    /// When set, the SigV4 credential scope must name this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The key store's SigV4 credentials.
    #[serde(default)]
    pub credentials: Vec<XksCredential>,
    /// A hyok-xks credentials file to read them from (folded in by [`PolicyFile::load`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// External key id → hyok key.
    #[serde(default)]
    pub keys: Vec<XksKey>,
}

/// One SigV4 credential. `Debug` prints the access key id only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksCredential {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for XksCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "XksCredential({}, <redacted>)", self.access_key_id)
    }
}

/// One external key of a key store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XksKey {
    /// What KMS calls the key.
    pub external_id: String,
    /// The hyok key behind it.
    pub key_id: String,
    /// What KMS may do with it.
    pub usage: Usage,
}

/// DKE bearer token rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dke {
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// The `aud` a token must carry.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// The issuers' JSON Web Key Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// A JWKS file to read it from (folded in by [`PolicyFile::load`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    /// Who may use which RSA key.
    #[serde(default)]
    pub keys: Vec<DkeKey>,
}

fn default_leeway_s() -> u64 {
    60
}

/// One DKE key name, the RSA key behind it, and who may use it: the `[[keys]]` table of
/// hyok-dke's configuration, which a node's operator copies into the node's policy as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkeKey {
    /// The DKE key name (the first path segment; case-sensitive), `[A-Za-z0-9._-]{1,128}`.
    pub name: String,
    /// The hyok RSA key behind it.
    pub rsa_key: String,
    /// Users who may decrypt: compared case-insensitively with the token's `email`, `upn` and
    /// `preferred_username` claims.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    /// Role or group values that may decrypt: any of the token's `roles` or `groups`.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Immutable user ids that may decrypt, `tid/oid` (Entra ID's tenant and object ids).
    #[serde(default)]
    pub allowed_object_ids: Vec<String>,
}

impl DkeKey {
    /// Who may use the key.
    pub fn access(&self) -> Access {
        Access {
            allowed_emails: self.allowed_emails.clone(),
            allowed_roles: self.allowed_roles.clone(),
            allowed_object_ids: self.allowed_object_ids.clone(),
        }
    }
}

/// One gRPC caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caller {
    /// A name for logs and the audit log.
    pub name: String,
    /// Its public key, 64 hex digits.
    pub public_key: String,
    /// The key names (EC or RSA) it may use; `"*"` is every key.
    pub keys: Vec<String>,
    /// Whether it may also add RSA key versions of those names: sign the dealer ceremony's
    /// import (`hyokctl rsa create|import`).
    #[serde(default)]
    pub rsa_import: bool,
}

impl PolicyFile {
    /// The same policy with every secret access key replaced by `<sealed>`: what a node shows.
    pub fn redacted(&self) -> PolicyFile {
        let mut out = self.clone();
        for store in &mut out.xks {
            for c in &mut store.credentials {
                c.secret_access_key = "<sealed>".into();
            }
        }
        out
    }

    /// Reads an operator's policy file (TOML; JSON when it ends in `.json`) and folds in the
    /// files it names (relative to its directory), then checks it compiles.
    ///
    /// # Errors
    /// If a file cannot be read or the policy is not valid.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        );
        let mut file: PolicyFile = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        } else {
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        for store in &mut file.xks {
            if let Some(creds) = store.credentials_file.take() {
                for c in crate::credentials::load_file(dir.join(creds))? {
                    store.credentials.push(XksCredential {
                        access_key_id: c.access_key_id.clone(),
                        secret_access_key: c.secret().to_owned(),
                    });
                }
            }
        }
        if let Some(dke) = &mut file.dke
            && let Some(jwks) = dke.jwks_file.take()
        {
            let path = dir.join(jwks);
            let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            dke.jwks = Some(serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?);
        }
        Policy::compile(&file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(file)
    }
}

/// One key store, ready to judge.
#[derive(Debug)]
struct Store {
    base: String,
    region: Option<String>,
    credentials: CredentialSet,
    keys: HashMap<String, (String, Usage)>,
}

/// DKE token rules, ready to judge.
#[derive(Debug)]
struct DkeRules {
    keys: KeySet,
    rules: Rules,
    /// RSA key → who may use it (under each DKE name that maps to it).
    access: Vec<(String, Access)>,
}

/// The policy, compiled: what a node judges every partial request by.
#[derive(Debug, Default)]
pub struct Policy {
    stores: Vec<Store>,
    dke: Option<DkeRules>,
    callers: HashMap<[u8; 32], ListedCaller>,
}

/// A caller the policy lists.
#[derive(Debug)]
struct ListedCaller {
    name: String,
    key: CallerPublicKey,
    keys: Vec<String>,
    rsa_import: bool,
}

/// What a node is asked to compute, as far as the evidence must cover it.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// A DPRF partial: for DECRYPT on `seed`; for ENCRYPT on the seed derived from the nonce
    /// `seed`.
    Evaluate {
        /// The key.
        key_id: &'a str,
        /// The version.
        version: u32,
        /// The item's 16 bytes.
        seed: &'a [u8; 16],
        /// ENCRYPT or DECRYPT.
        operation: pb::Operation,
    },
    /// A KEM partial unwrap.
    Unwrap {
        /// The key.
        key_id: &'a str,
        /// The version.
        version: u32,
        /// The wrapped key.
        wrapped: &'a [u8],
        /// Its label.
        label: &'a [u8],
    },
    /// Storing a share of a new RSA key version (the dealer ceremony).
    RsaImport {
        /// The RSA key.
        name: &'a str,
        /// The version added.
        version: u32,
        /// Its public package (wire encoding).
        package: &'a [u8],
    },
    /// An RSA partial decryption.
    RsaDecrypt {
        /// The RSA key.
        name: &'a str,
        /// The version.
        version: u32,
        /// The ciphertext.
        ciphertext: &'a [u8],
    },
}

/// A request the evidence covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Who asked, for the audit log: `xks:PREFIX:AKID`, `user:NAME` (DKE) or `caller:NAME`.
    pub principal: String,
    /// For a caller's signature over a decryption, unwrap or RSA decryption: what a node must
    /// see only once (a hash of the signature).
    pub once: Option<[u8; 32]>,
}

/// Why the evidence does not cover a request (for the refusal and the log; never a secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

fn denied(why: impl Into<String>) -> Denied {
    Denied(why.into())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Only printable ASCII, at most `max` characters: what a value from a token may put in a log.
fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ').take(max).collect()
}

impl Policy {
    /// Compiles a policy file.
    ///
    /// # Errors
    /// A reason naming the first entry that is not valid.
    pub fn compile(file: &PolicyFile) -> Result<Self, String> {
        if file.format != FORMAT {
            return Err(format!("format must be {FORMAT:?}, not {:?}", file.format));
        }
        let mut stores = Vec::with_capacity(file.xks.len());
        for store in &file.xks {
            if store.credentials_file.is_some() {
                return Err("credentials_file must be folded in before installing".into());
            }
            let mut creds = Vec::with_capacity(store.credentials.len());
            for c in &store.credentials {
                creds.push(
                    Credential::new(c.access_key_id.clone(), c.secret_access_key.clone())
                        .map_err(|e| format!("key store {:?}: {e}", store.uri_prefix))?,
                );
            }
            let mut keys = HashMap::new();
            for k in &store.keys {
                hyok_proto::validate_key_id(&k.key_id).map_err(|e| format!("key {:?}: {e}", k.key_id))?;
                if keys.insert(k.external_id.clone(), (k.key_id.clone(), k.usage)).is_some() {
                    return Err(format!("external key {:?} is listed twice", k.external_id));
                }
            }
            let base = xks::base_path(&store.uri_prefix);
            if stores.iter().any(|s: &Store| s.base == base) {
                return Err(format!("key store {:?} is listed twice", store.uri_prefix));
            }
            stores.push(Store { base, region: store.region.clone(), credentials: CredentialSet::fixed(creds), keys });
        }
        let dke = match &file.dke {
            None => None,
            Some(d) => {
                let jwks = d.jwks.as_ref().ok_or("dke needs a jwks (or jwks_file)")?;
                let keys = KeySet::parse(jwks.to_string().as_bytes()).map_err(|e| format!("dke jwks: {e}"))?;
                let access = d.keys.iter().map(|k| (k.rsa_key.clone(), k.access())).collect();
                let rules = Rules { issuers: d.issuers.clone(), audience: d.audience.clone(), leeway_s: d.leeway_s };
                Some(DkeRules { keys, rules, access })
            }
        };
        let mut callers = HashMap::new();
        for c in &file.callers {
            let bytes: [u8; 32] = hex::decode(c.public_key.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("caller {:?}: public_key must be 64 hex digits", c.name))?;
            let key = CallerPublicKey::from_slice(&bytes)
                .map_err(|_| format!("caller {:?}: public_key is not a valid key", c.name))?;
            let listed = ListedCaller { name: c.name.clone(), key, keys: c.keys.clone(), rsa_import: c.rsa_import };
            if callers.insert(bytes, listed).is_some() {
                return Err(format!("caller key of {:?} is listed twice", c.name));
            }
        }
        Ok(Policy { stores, dke, callers })
    }

    /// Judges `request` by `evidence` at `now`: the evidence must be valid, fresh, and name
    /// exactly this key, version, operation and input.
    ///
    /// # Errors
    /// [`Denied`], with the reason.
    pub fn authorize(
        &self,
        request: &Request<'_>,
        evidence: Option<&pb::Evidence>,
        now: SystemTime,
    ) -> Result<Grant, Denied> {
        match evidence.and_then(|e| e.kind.as_ref()) {
            None => Err(denied("the request carries no evidence")),
            Some(pb::evidence::Kind::Xks(x)) => self.xks(request, x, now),
            Some(pb::evidence::Kind::BearerToken(token)) => self.bearer(request, token, now),
            Some(pb::evidence::Kind::Caller(c)) => self.caller(request, c, now),
        }
    }

    fn xks(&self, request: &Request<'_>, x: &pb::XksRequest, now: SystemTime) -> Result<Grant, Denied> {
        let Request::Evaluate { key_id, version, seed, operation } = *request else {
            return Err(denied("an XKS request authorizes only DPRF evaluations"));
        };
        let (method, uri, headers) = xks::request_parts(x).map_err(|e| denied(format!("XKS request: {e}")))?;
        let (store, external_id, op) =
            self.stores.iter().find_map(|s| xks::route(uri.path(), &s.base).map(|(id, op)| (s, id, op))).ok_or_else(
                || denied("the XKS request's path is no encrypt or decrypt of a key store this node serves"),
            )?;
        let hash: [u8; 32];
        let payload = match op {
            xks::Operation::Decrypt => sigv4::Payload::Body(&x.body),
            xks::Operation::Encrypt if !x.body.is_empty() => sigv4::Payload::Body(&x.body),
            xks::Operation::Encrypt => {
                hash = x.body_sha256.as_slice().try_into().map_err(|_| denied("body_sha256 must be 32 bytes"))?;
                sigv4::Payload::Sha256(&hash)
            }
        };
        let verified = sigv4::verify_request(&method, &uri, &headers, payload, store.region.as_deref(), now, |akid| {
            store.credentials.secret_for(akid)
        })
        .map_err(|e| denied(format!("XKS request: {e}")))?;
        let (mapped, usage) = store
            .keys
            .get(external_id)
            .ok_or_else(|| denied("the XKS request names an external key this node does not map"))?;
        if mapped != key_id {
            return Err(denied("the XKS request is for another key"));
        }
        if !usage.allows(op) {
            return Err(denied("the external key's usage does not allow the XKS request's operation"));
        }
        if op.dprf() != operation {
            return Err(denied("the XKS request is for another operation"));
        }
        match op {
            xks::Operation::Encrypt => {
                if xks::encryption_nonce(&verified.signature) != *seed {
                    return Err(denied("the nonce is not the one the XKS request's signature gives"));
                }
            }
            xks::Operation::Decrypt => {
                let (iv, signed_version) =
                    xks::decrypt_inputs(&x.body).map_err(|e| denied(format!("XKS request: {e}")))?;
                if iv != *seed || signed_version != version {
                    return Err(denied("the seed or version is not the one the XKS request names"));
                }
            }
        }
        let prefix = store.base.trim_end_matches(xks::API_PATH).trim_start_matches('/');
        Ok(Grant { principal: format!("xks:{prefix}:{}", verified.access_key_id), once: None })
    }

    fn bearer(&self, request: &Request<'_>, token: &str, now: SystemTime) -> Result<Grant, Denied> {
        let Request::RsaDecrypt { name, .. } = *request else {
            return Err(denied("a bearer token authorizes only RSA decryptions"));
        };
        let dke = self.dke.as_ref().ok_or_else(|| denied("this node accepts no bearer tokens"))?;
        let now_s = unix_ms(now) / 1000;
        let claims =
            jwt::validate(token, &dke.keys, &dke.rules, now_s).map_err(|e| denied(format!("bearer token: {e}")))?;
        let user = printable(claims.object_id.as_deref().unwrap_or(claims.user()), 200);
        let user = if claims.object_id.is_some() { format!("{}|{user}", printable(claims.user(), 200)) } else { user };
        let mut rules = dke.access.iter().filter(|(rsa_key, _)| rsa_key == name).peekable();
        if rules.peek().is_none() {
            return Err(denied(format!("no DKE user may use key {name}")));
        }
        if !rules.any(|(_, access)| access.permits(&claims)) {
            return Err(denied(format!("user {user} may not use key {name}")));
        }
        Ok(Grant { principal: format!("user:{user}"), once: None })
    }

    fn caller(&self, request: &Request<'_>, c: &pb::CallerSignature, now: SystemTime) -> Result<Grant, Denied> {
        let public: [u8; 32] =
            c.public_key.as_slice().try_into().map_err(|_| denied("the caller key must be 32 bytes"))?;
        let listed = self.callers.get(&public).ok_or_else(|| denied("the caller key is not listed"))?;
        let (name, key) = (&listed.name, &listed.key);
        let key_name = match request {
            Request::Evaluate { key_id, .. } | Request::Unwrap { key_id, .. } => key_id,
            Request::RsaDecrypt { name, .. } | Request::RsaImport { name, .. } => name,
        };
        if !listed.keys.iter().any(|k| k == "*" || k == key_name) {
            return Err(denied(format!("caller {name} may not use key {key_name}")));
        }
        if matches!(request, Request::RsaImport { .. }) && !listed.rsa_import {
            return Err(denied(format!("caller {name} may not add RSA key versions")));
        }
        if unix_ms(now).abs_diff(c.time_ms) > signed::MAX_SKEW_MS {
            return Err(denied("the caller's signature is more than 5 minutes away from the node's clock"));
        }
        let nonce: [u8; 16] = c.nonce.as_slice().try_into().map_err(|_| denied("the caller nonce must be 16 bytes"))?;
        let signature = CallerSignature::from_bytes(&c.signature).map_err(|_| denied("malformed caller signature"))?;
        let digest: [u8; 32];
        let (operation, version, subject): (&str, u32, &[u8]) = match *request {
            Request::Evaluate { version, seed, operation: pb::Operation::Decrypt, .. } => {
                (signed::op::DECRYPT, version, seed.as_slice())
            }
            Request::Evaluate { version, operation: pb::Operation::Encrypt, .. } => {
                if c.version != 0 && c.version != version {
                    return Err(denied("the caller signed an encryption under another version"));
                }
                (signed::op::ENCRYPT, c.version, c.content_digest.as_slice())
            }
            Request::Evaluate { .. } => return Err(denied("unknown operation")),
            Request::Unwrap { version, wrapped, label, .. } => {
                digest = signed::wrapped_digest(wrapped, label);
                (signed::op::UNWRAP, version, digest.as_slice())
            }
            Request::RsaDecrypt { version, ciphertext, .. } => {
                digest = signed::ciphertext_digest(ciphertext);
                (signed::op::RSA_DECRYPT, version, digest.as_slice())
            }
            Request::RsaImport { version, package, .. } => {
                digest = signed::package_digest(package);
                (signed::op::RSA_IMPORT, version, digest.as_slice())
            }
        };
        let statement = CallerRequest { operation, key: key_name, version, subject, time_ms: c.time_ms, nonce: &nonce };
        hyok_threshold::caller::vartime_verify(key, &statement, &signature)
            .map_err(|_| denied("the caller's signature does not cover this request"))?;
        if let Request::Evaluate { seed, operation: pb::Operation::Encrypt, .. } = *request
            && signed::encryption_nonce(&c.signature) != *seed
        {
            return Err(denied("the nonce is not the one the caller's signature gives"));
        }
        // A decryption's signature opens once per node. An encryption's may come again: the
        // nonce is the signature's, so a replay yields exactly the seed it yielded before; an
        // import's too: it can only store that same version's same share again.
        let single_use = operation != signed::op::ENCRYPT && operation != signed::op::RSA_IMPORT;
        let once = single_use.then(|| Sha256::digest(&c.signature).into());
        Ok(Grant { principal: format!("caller:{name}"), once })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    const AKID: &str = "AKIA4GBY3I6JCE5M2HPM";
    const SECRET: &str = "1234567890123456789012345678901234567890123=";

    fn policy(signer: &signed::Signer) -> Policy {
        let file = PolicyFile {
            format: FORMAT.into(),
            xks: vec![XksStore {
                uri_prefix: "ks".into(),
                region: Some("us-east-1".into()),
                credentials: vec![XksCredential { access_key_id: AKID.into(), secret_access_key: SECRET.into() }],
                credentials_file: None,
                keys: vec![
                    XksKey { external_id: "a".into(), key_id: "key-a".into(), usage: Usage::EncryptDecrypt },
                    XksKey { external_id: "b".into(), key_id: "key-b".into(), usage: Usage::Encrypt },
                ],
            }],
            dke: None,
            callers: vec![Caller {
                name: "app".into(),
                public_key: hex::encode(signer.public_key().as_bytes()),
                keys: vec!["key-a".into()],
                rsa_import: false,
            }],
        };
        Policy::compile(&file).unwrap()
    }

    fn xks_evidence(external: &str, op: &str, body: &[u8], with_body: bool, at: SystemTime) -> pb::Evidence {
        let path = format!("/ks/kms/xks/v1/keys/{external}/{op}");
        let signed = sigv4::sign(&path, "xks.example", body, AKID, SECRET, "us-east-1", at);
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        headers.insert("host", http::HeaderValue::from_static("xks.example"));
        headers.insert("x-amz-date", signed.amz_date.parse().unwrap());
        headers.insert("authorization", signed.authorization.parse().unwrap());
        xks::to_evidence(&http::Method::POST, &path.parse().unwrap(), &headers, body, with_body)
    }

    fn decrypt_body(iv: [u8; 16], version: u32) -> Vec<u8> {
        format!(
            r#"{{"ciphertext":"AA==","initializationVector":"{}","ciphertextMetadata":"{}"}}"#,
            STANDARD.encode(iv),
            STANDARD.encode(xks::metadata(version))
        )
        .into_bytes()
    }

    fn evaluate<'a>(key_id: &'a str, version: u32, seed: &'a [u8; 16], operation: pb::Operation) -> Request<'a> {
        Request::Evaluate { key_id, version, seed, operation }
    }

    #[test]
    fn an_xks_decrypt_covers_only_its_own_key_seed_and_version() {
        let signer = signed::Signer::generate(&mut rand::rng());
        let p = policy(&signer);
        let now = SystemTime::now();
        let body = decrypt_body([5; 16], 2);
        let e = xks_evidence("a", "decrypt", &body, true, now);
        let grant = p.authorize(&evaluate("key-a", 2, &[5; 16], pb::Operation::Decrypt), Some(&e), now).unwrap();
        assert_eq!(grant.principal, format!("xks:ks:{AKID}"));
        for (what, request) in [
            ("another seed", evaluate("key-a", 2, &[6; 16], pb::Operation::Decrypt)),
            ("another version", evaluate("key-a", 3, &[5; 16], pb::Operation::Decrypt)),
            ("another key", evaluate("key-b", 2, &[5; 16], pb::Operation::Decrypt)),
            ("another operation", evaluate("key-a", 2, &[5; 16], pb::Operation::Encrypt)),
        ] {
            assert!(p.authorize(&request, Some(&e), now).is_err(), "{what}");
        }
        // Stale, and tampered bodies.
        let later = now + std::time::Duration::from_secs(6 * 60);
        assert!(p.authorize(&evaluate("key-a", 2, &[5; 16], pb::Operation::Decrypt), Some(&e), later).is_err());
        let mut tampered = e.clone();
        if let Some(pb::evidence::Kind::Xks(x)) = &mut tampered.kind {
            x.body = decrypt_body([6; 16], 2);
        }
        let err =
            p.authorize(&evaluate("key-a", 2, &[6; 16], pb::Operation::Decrypt), Some(&tampered), now).unwrap_err();
        assert!(err.0.contains("signature"), "{err}");
        // No evidence at all.
        assert!(p.authorize(&evaluate("key-a", 2, &[5; 16], pb::Operation::Decrypt), None, now).is_err());
    }

    #[test]
    fn an_xks_encrypt_covers_only_the_nonce_its_signature_gives_and_the_usage_holds() {
        let signer = signed::Signer::generate(&mut rand::rng());
        let p = policy(&signer);
        let now = SystemTime::now();
        let e = xks_evidence("a", "encrypt", br#"{"plaintext":"AA=="}"#, false, now);
        let nonce = crate::encryption_nonce(&e).unwrap();
        assert!(p.authorize(&evaluate("key-a", 1, &nonce, pb::Operation::Encrypt), Some(&e), now).is_ok());
        assert!(p.authorize(&evaluate("key-a", 1, &[0; 16], pb::Operation::Encrypt), Some(&e), now).is_err());
        // A decrypt under an encrypt-only external key.
        let body = decrypt_body([5; 16], 1);
        let e = xks_evidence("b", "decrypt", &body, true, now);
        let err = p.authorize(&evaluate("key-b", 1, &[5; 16], pb::Operation::Decrypt), Some(&e), now).unwrap_err();
        assert!(err.0.contains("usage"), "{err}");
    }

    #[test]
    fn a_caller_signature_covers_only_its_request_and_listed_keys() {
        let signer = signed::Signer::generate(&mut rand::rng());
        let p = policy(&signer);
        let now = SystemTime::now();
        let e = signer.decrypt("key-a", 4, &[9; 16]);
        let grant = p.authorize(&evaluate("key-a", 4, &[9; 16], pb::Operation::Decrypt), Some(&e), now).unwrap();
        assert_eq!(grant.principal, "caller:app");
        assert!(grant.once.is_some());
        assert!(p.authorize(&evaluate("key-a", 4, &[8; 16], pb::Operation::Decrypt), Some(&e), now).is_err());
        assert!(p.authorize(&evaluate("key-a", 5, &[9; 16], pb::Operation::Decrypt), Some(&e), now).is_err());
        let for_b = signer.decrypt("key-b", 4, &[9; 16]);
        let err = p.authorize(&evaluate("key-b", 4, &[9; 16], pb::Operation::Decrypt), Some(&for_b), now).unwrap_err();
        assert!(err.0.contains("may not use"), "{err}");
        let stranger = signed::Signer::generate(&mut rand::rng()).decrypt("key-a", 4, &[9; 16]);
        assert!(p.authorize(&evaluate("key-a", 4, &[9; 16], pb::Operation::Decrypt), Some(&stranger), now).is_err());
        let later = now + std::time::Duration::from_secs(6 * 60);
        assert!(p.authorize(&evaluate("key-a", 4, &[9; 16], pb::Operation::Decrypt), Some(&e), later).is_err());

        let e = signer.encrypt("key-a", b"hello", b"aad");
        let nonce = crate::encryption_nonce(&e).unwrap();
        assert!(p.authorize(&evaluate("key-a", 7, &nonce, pb::Operation::Encrypt), Some(&e), now).is_ok());
        assert!(p.authorize(&evaluate("key-a", 7, &[1; 16], pb::Operation::Encrypt), Some(&e), now).is_err());
        // An encryption's signature does not decrypt.
        assert!(p.authorize(&evaluate("key-a", 7, &nonce, pb::Operation::Decrypt), Some(&e), now).is_err());

        let e = signer.unwrap("key-a", 1, b"wrapped", b"label");
        let unwrap = |label: &'static [u8]| Request::Unwrap { key_id: "key-a", version: 1, wrapped: b"wrapped", label };
        assert!(p.authorize(&unwrap(b"label"), Some(&e), now).is_ok());
        assert!(p.authorize(&unwrap(b"other"), Some(&e), now).is_err());
    }

    #[test]
    fn debug_never_prints_a_secret_and_bad_policies_are_refused() {
        let signer = signed::Signer::generate(&mut rand::rng());
        let file = PolicyFile {
            format: FORMAT.into(),
            xks: vec![XksStore {
                uri_prefix: String::new(),
                region: None,
                credentials: vec![XksCredential { access_key_id: AKID.into(), secret_access_key: SECRET.into() }],
                credentials_file: None,
                keys: Vec::new(),
            }],
            dke: None,
            callers: Vec::new(),
        };
        assert!(!format!("{file:?}").contains(SECRET));
        assert!(!format!("{:?}", policy(&signer)).contains(SECRET));
        let mut wrong = file.clone();
        wrong.format = "x".into();
        assert!(Policy::compile(&wrong).is_err());
        let mut twice = file;
        twice.xks.push(twice.xks[0].clone());
        assert!(Policy::compile(&twice).is_err());
    }
}
