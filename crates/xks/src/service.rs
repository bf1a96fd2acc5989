//! The XKS API over plain types: route a request to its key store and API, authenticate it,
//! check it, ask the cluster, and answer in the spec's vocabulary. No network here beyond the
//! [`Backend`]; the HTTP adapter is `server`.

use crate::api::{self, Api, DecryptJson, EncryptJson, Limits, MetadataOnly, RequestMetadata};
use crate::backend::Backend;
use crate::config::{self, Config, KeyMapping};
use crate::credentials::CredentialSet;
use crate::envelope::{self, IV_LEN, TAG_LEN};
use crate::error::XksError;
use crate::health::HealthMonitor;
use crate::sigv4;
use hyok_proto::cache::Cache;
use hyok_proto::v1 as pb;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

/// One logical key store.
#[derive(Debug)]
pub struct Store {
    /// Its prefix (for logs).
    pub prefix: String,
    /// `/prefix/kms/xks/v1`.
    base: String,
    /// Its live SigV4 credentials.
    pub credentials: CredentialSet,
    region: Option<String>,
    keys: HashMap<String, KeyMapping>,
}

/// Where a path leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// Index of the key store.
    pub store: usize,
    /// The API.
    pub api: Api,
    /// The `externalKeyId`, for key APIs.
    pub external_id: Option<&'a str>,
}

/// A successful answer: a JSON body (zeroized on drop when it holds plaintext).
pub type Answer = zeroize::Zeroizing<Vec<u8>>;

/// The XKS service.
#[derive(Debug)]
pub struct Xks {
    stores: Vec<Store>,
    backend: Arc<Backend>,
    health: Arc<HealthMonitor>,
    limits: Limits,
    budget: Duration,
    fleet_size: u32,
    /// hyok key id → what the cluster says of its primary version (refreshed in the
    /// background: [`Xks::refresh_versions`]).
    versions: Cache<Primary, XksError>,
}

/// After how long a key's primary version in use is read again, in the background.
const VERSION_TTL: Duration = Duration::from_secs(5);
/// How long it is still used while those reads fail.
const VERSION_STALE: Duration = Duration::from_secs(60);

/// A key's primary version as the cluster reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Primary {
    /// Enabled, with this primary version.
    Version(u32),
    /// Disabled.
    Disabled,
    /// No usable version.
    None,
}

impl Primary {
    fn of(info: &pb::KeyInfo) -> Self {
        match (info.state == pb::KeyState::Enabled as i32, info.primary_version) {
            (false, _) => Primary::Disabled,
            (true, 0) => Primary::None,
            (true, v) => Primary::Version(v),
        }
    }
}

impl Xks {
    /// Builds the service; reads every key store's credentials file.
    pub fn new(config: &Config, backend: Arc<Backend>, health: Arc<HealthMonitor>) -> anyhow::Result<Self> {
        let mut stores = Vec::new();
        for store in &config.key_stores {
            let credentials = CredentialSet::from_file(&store.credentials_file)
                .map_err(|e| anyhow::anyhow!("key store {:?}: {e}", store.uri_prefix))?;
            stores.push(Store {
                prefix: store.uri_prefix.clone(),
                base: config::base_path(&store.uri_prefix),
                credentials,
                region: store.region.clone(),
                keys: store.keys.iter().map(|k| (k.external_id.clone(), k.clone())).collect(),
            });
        }
        Ok(Xks {
            stores,
            backend,
            health,
            limits: Limits { max_plaintext: config.max_plaintext, max_aad: config.max_aad },
            budget: config.budget(),
            fleet_size: config.health.fleet_size,
            versions: Cache::new(VERSION_TTL, VERSION_STALE),
        })
    }

    /// The key stores.
    pub fn stores(&self) -> &[Store] {
        &self.stores
    }

    /// The per-request budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Largest body worth reading: Base64 of the largest plaintext and AAD, plus room for
    /// request metadata (four ARNs of 2048 characters and more).
    pub fn max_body(&self) -> usize {
        (self.limits.max_plaintext + self.limits.max_aad).div_ceil(3) * 4 + 32 * 1024
    }

    /// Finds the key store and API of `path`. Anything else is InvalidUriPathException.
    pub fn route<'p>(&self, path: &'p str) -> Result<Route<'p>, XksError> {
        let unknown = || XksError::InvalidUriPath(format!("no XKS API at {}", truncate(path, 300)));
        for (index, store) in self.stores.iter().enumerate() {
            let Some(rest) = path.strip_prefix(store.base.as_str()) else { continue };
            let (api, external_id) = match rest.split('/').collect::<Vec<_>>().as_slice() {
                ["", "health"] => (Api::GetHealthStatus, None),
                ["", "keys", id, op] if !id.is_empty() => {
                    let api = match *op {
                        "metadata" => Api::GetKeyMetadata,
                        "encrypt" => Api::Encrypt,
                        "decrypt" => Api::Decrypt,
                        _ => return Err(unknown()),
                    };
                    (api, Some(*id))
                }
                _ => continue,
            };
            return Ok(Route { store: index, api, external_id });
        }
        Err(unknown())
    }

    /// Verifies the SigV4 signature against the key store's credentials. Every failure is the
    /// same 401; the reason is logged.
    pub fn authenticate(
        &self,
        route: &Route<'_>,
        method: &http::Method,
        uri: &http::Uri,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<String, XksError> {
        let store = &self.stores[route.store];
        sigv4::verify(method, uri, headers, body, store.region.as_deref(), SystemTime::now(), |akid| {
            store.credentials.secret_for(akid)
        })
        .map_err(|e| {
            tracing::info!(prefix = %store.prefix, reason = %e, "SigV4 authentication failed");
            XksError::AuthenticationFailed
        })
    }

    /// Serves an authenticated request. `meta` receives the request metadata as soon as it is
    /// known, for the caller's log line.
    pub async fn serve(
        &self,
        route: &Route<'_>,
        signed: &Signed<'_>,
        body: &[u8],
        started: Instant,
        meta: &mut Option<RequestMetadata>,
    ) -> Result<Answer, XksError> {
        let deadline = started + self.budget;
        let store = &self.stores[route.store];
        match route.api {
            Api::GetHealthStatus => {
                let parsed: MetadataOnly = api::parse(body)?;
                *meta = Some(RequestMetadata::check(parsed.request_metadata, Api::GetHealthStatus)?);
                self.health_status(deadline).await
            }
            Api::GetKeyMetadata => {
                let parsed: MetadataOnly = api::parse(body)?;
                let checked = meta.insert(RequestMetadata::check(parsed.request_metadata, Api::GetKeyMetadata)?);
                let key = authorize(store, route, checked)?;
                self.key_metadata(key, deadline).await
            }
            Api::Encrypt => {
                let mut parsed: EncryptJson = api::parse(body)?;
                let checked = meta.insert(RequestMetadata::check(parsed.request_metadata.take(), Api::Encrypt)?);
                let key = authorize(store, route, checked)?;
                let request = parsed.check(self.limits)?;
                let request_id = checked.request_id.clone();
                // The nodes get what KMS signed, and only the body's hash: never the plaintext.
                let evidence = hyok_evidence::xks::to_evidence(signed.method, signed.uri, signed.headers, body, false);
                self.encrypt(key, request, &request_id, evidence, deadline).await
            }
            Api::Decrypt => {
                let mut parsed: DecryptJson = api::parse(body)?;
                let checked = meta.insert(RequestMetadata::check(parsed.request_metadata.take(), Api::Decrypt)?);
                let key = authorize(store, route, checked)?;
                let request = parsed.check(self.limits)?;
                let request_id = checked.request_id.clone();
                // The nodes read the IV and the key version from the signed body themselves.
                let evidence = hyok_evidence::xks::to_evidence(signed.method, signed.uri, signed.headers, body, true);
                self.decrypt(key, request, &request_id, evidence, deadline).await
            }
        }
    }

    async fn health_status(&self, deadline: Instant) -> Result<Answer, XksError> {
        let snapshot = self.health.current(deadline).await;
        let response = api::HealthResponse {
            xks_proxy_fleet_size: self.fleet_size,
            xks_proxy_vendor: "hyok",
            xks_proxy_model: format!("hyok-xks {}", env!("CARGO_PKG_VERSION")),
            ekm_vendor: "hyok",
            ekm_fleet_details: snapshot.fleet.clone(),
        };
        json(&response)
    }

    async fn key_metadata(&self, key: &KeyMapping, deadline: Instant) -> Result<Answer, XksError> {
        let info = self.backend.key(&key.key_id, deadline).await?;
        let cluster = |usage: pb::KeyUsage| info.usages.is_empty() || info.usages.contains(&(usage as i32));
        let mut usages = Vec::new();
        if key.usage.encrypt() && cluster(pb::KeyUsage::Encrypt) {
            usages.push("ENCRYPT");
        }
        if key.usage.decrypt() && cluster(pb::KeyUsage::Decrypt) {
            usages.push("DECRYPT");
        }
        let enabled = info.state == pb::KeyState::Enabled as i32;
        json(&api::KeyMetadataResponse {
            key_spec: "AES_256",
            key_usage: usages,
            key_status: if enabled { "ENABLED" } else { "DISABLED" },
        })
    }

    async fn encrypt(
        &self,
        key: &KeyMapping,
        request: api::EncryptRequest,
        request_id: &str,
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> Result<Answer, XksError> {
        if !key.usage.encrypt() {
            return Err(usage_error(key, "encrypt"));
        }
        // A CDIV promises a decryptable ciphertext, which is proven by decrypting it: a key
        // that may not decrypt cannot give one.
        if request.cdiv && !key.usage.decrypt() {
            return Err(usage_error(key, "decrypt (needed to verify a ciphertextDataIntegrityValue)"));
        }
        // The metadata (bound into the AAD) names the key version, which the coordinator picks:
        // encrypt under the primary version known here, and if the coordinator used another (the
        // key rotated), learn the new one and encrypt once more.
        let mut fresh = false;
        let (version, metadata, aad, sealed) = loop {
            let version = self.primary_version(key, fresh, deadline).await?;
            let metadata = envelope::metadata(version);
            let aad = envelope::cipher_aad(&request.aad, &metadata)?;
            let sealed = self
                .backend
                .encrypt(&key.key_id, &request.plaintext, aad.clone(), request_id, evidence.clone(), deadline)
                .await?;
            if sealed.version == version {
                break (version, metadata, aad, sealed);
            }
            if fresh {
                return Err(XksError::DependencyTimeout("the key's version changed twice during the request".into()));
            }
            fresh = true;
        };
        if sealed.seed.len() != IV_LEN
            || sealed.tag.len() != TAG_LEN
            || sealed.ciphertext.len() != request.plaintext.len()
        {
            return Err(XksError::Internal("the cluster returned a malformed encryption".into()));
        }
        let cdiv = request
            .cdiv
            .then(|| envelope::cdiv(&request.aad, &metadata, &sealed.seed, &sealed.ciphertext, &sealed.tag));
        if request.cdiv {
            // Appendix C: compute the CDIV first, then prove the output decrypts, then answer. The
            // encryption's own signed request is the evidence: the nodes evaluate it again.
            let opened = self
                .backend
                .decrypt(
                    &key.key_id,
                    version,
                    &sealed.seed,
                    &sealed.ciphertext,
                    &sealed.tag,
                    aad,
                    request_id,
                    evidence,
                    deadline,
                )
                .await?;
            if !bool::from(opened.as_slice().ct_eq(&request.plaintext)) {
                return Err(XksError::Internal("the verification decrypt did not return the plaintext".into()));
            }
        }
        json(&api::EncryptResponse {
            ciphertext: api::b64(&sealed.ciphertext),
            ciphertext_metadata: api::b64(&metadata),
            initialization_vector: api::b64(&sealed.seed),
            authentication_tag: api::b64(&sealed.tag),
            ciphertext_data_integrity_value: cdiv.map(|c| api::b64(&c)),
        })
    }

    /// The key's primary version, from the cache unless `fresh` (a request never waits for a
    /// read of a key in use: [`Xks::refresh_versions`] keeps it current). A disabled key is
    /// refused by the nodes themselves, so the cache never decides whether a key may be used.
    async fn primary_version(&self, key: &KeyMapping, fresh: bool, deadline: Instant) -> Result<u32, XksError> {
        let read = || async { self.backend.key(&key.key_id, deadline).await.map(|info| Primary::of(&info)) };
        let primary = if fresh {
            self.versions.newer(&key.key_id, Instant::now(), read).await?
        } else {
            self.versions.get(&key.key_id, read).await?
        };
        match primary {
            Primary::Version(v) => Ok(v),
            Primary::Disabled => Err(XksError::InvalidState(format!("external key {} is disabled", key.external_id))),
            Primary::None => {
                Err(XksError::InvalidState(format!("external key {} has no usable version", key.external_id)))
            }
        }
    }

    /// Reads again, every second, the primary version of every key in use whose cached one is
    /// [`VERSION_TTL`] old, while requests keep using the cached one. Runs until dropped.
    /// Every configured key is read once at start (retried each second until it answers), so
    /// that a key's first request finds its version here too.
    pub async fn refresh_versions(self: Arc<Self>) {
        let mut unread: Vec<String> =
            self.stores.iter().flat_map(|s| s.keys.values().map(|k| k.key_id.clone())).collect();
        unread.sort();
        unread.dedup();
        loop {
            let mut still = Vec::new();
            for key_id in unread {
                let deadline = Instant::now() + self.budget.max(Duration::from_secs(1));
                let read = || async { self.backend.key(&key_id, deadline).await.map(|info| Primary::of(&info)) };
                if self.versions.newer(&key_id, Instant::now(), read).await.is_err() {
                    still.push(key_id);
                }
            }
            unread = still;
            tokio::time::sleep(Duration::from_secs(1)).await;
            for key_id in self.versions.due() {
                let deadline = Instant::now() + self.budget.max(Duration::from_secs(1));
                let read = || async { self.backend.key(&key_id, deadline).await.map(|info| Primary::of(&info)) };
                if let Err(error) = self.versions.newer(&key_id, Instant::now(), read).await {
                    tracing::warn!(key_id, %error, "background read of the primary version failed; using the cached one");
                }
            }
        }
    }

    async fn decrypt(
        &self,
        key: &KeyMapping,
        request: api::DecryptRequest,
        request_id: &str,
        evidence: pb::Evidence,
        deadline: Instant,
    ) -> Result<Answer, XksError> {
        if !key.usage.decrypt() {
            return Err(usage_error(key, "decrypt"));
        }
        if request.iv.len() != IV_LEN {
            return Err(XksError::InvalidCiphertext(format!("initializationVector must be {IV_LEN} bytes")));
        }
        if request.tag.len() != TAG_LEN {
            return Err(XksError::InvalidCiphertext(format!("authenticationTag must be {TAG_LEN} bytes")));
        }
        let version = envelope::parse_metadata(&request.metadata)?;
        let aad = envelope::cipher_aad(&request.aad, &request.metadata)?;
        let plaintext = self
            .backend
            .decrypt(
                &key.key_id,
                version,
                &request.iv,
                &request.ciphertext,
                &request.tag,
                aad,
                request_id,
                evidence,
                deadline,
            )
            .await?;
        if plaintext.len() != request.ciphertext.len() {
            return Err(XksError::Internal("the cluster returned a plaintext of the wrong length".into()));
        }
        Ok(api::decrypt_body(&plaintext))
    }
}

/// The signed parts of a request (with its body), which travel to the nodes as evidence.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The request target.
    pub uri: &'a http::Uri,
    /// Every header.
    pub headers: &'a http::HeaderMap,
}

fn usage_error(key: &KeyMapping, what: &str) -> XksError {
    XksError::InvalidKeyUsage(format!("external key {} may not {what}", key.external_id))
}

/// The key behind the route, if this key store has it and the principal may use it.
fn authorize<'s>(store: &'s Store, route: &Route<'_>, meta: &RequestMetadata) -> Result<&'s KeyMapping, XksError> {
    let id = route.external_id.unwrap_or_default();
    let key = store
        .keys
        .get(id)
        .ok_or_else(|| XksError::KeyNotFound(format!("no external key {} in this key store", truncate(id, 128))))?;
    if !key.allowed_principals.is_empty() {
        let principal = meta.principal.as_deref().unwrap_or_default();
        if !key.allowed_principals.iter().any(|p| config::principal_matches(p, principal)) {
            tracing::warn!(
                prefix = %store.prefix, external_id = id, principal, operation = %meta.operation,
                kms_request_id = %meta.request_id, "secondary authorization denied: no allowed_principals pattern matches"
            );
            return Err(XksError::AccessDenied(format!("{} may not use external key {id}", truncate(principal, 200))));
        }
    }
    Ok(key)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<Answer, XksError> {
    serde_json::to_vec(value).map(Answer::new).map_err(|e| XksError::Internal(format!("encoding the answer: {e}")))
}
