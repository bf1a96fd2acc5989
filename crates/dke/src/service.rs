//! The two DKE operations over plain types: the public key of a key name, and decryption with
//! bearer authentication and per-key authorization. No HTTP here beyond the header map.

use crate::backend::{Backend, BackendError};
use crate::config::{self, Config};
use crate::error::{DECRYPTION_FAILED, DkeError};
use crate::jwt::{self, Claims, KeySet, Rules};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use hyok_frontend::calendar;
use hyok_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The only `alg` a decrypt request may name.
pub const DECRYPT_ALG: &str = "RSA-OAEP-256";
/// Ciphertexts outside these lengths (2048- to 4096-bit moduli) are refused without asking
/// the cluster, which checks the exact length.
const CIPHERTEXT_LEN: std::ops::RangeInclusive<usize> = 256..=512;

/// A request, by route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /{keyName}`.
    PublicKey {
        /// The key name.
        name: &'a str,
    },
    /// `POST /{keyName}/{keyId}/decrypt`.
    Decrypt {
        /// The key name.
        name: &'a str,
        /// The key id (a version number).
        key_id: &'a str,
    },
}

/// The route of a path (the query is not part of `path`): one segment is a public key, three
/// ending in `decrypt` (any case) a decryption. Anything else is [`DkeError::NotFound`].
pub fn route(path: &str) -> Result<Route<'_>, DkeError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        [name] if !name.is_empty() => Ok(Route::PublicKey { name }),
        [name, key_id, op] if !name.is_empty() && !key_id.is_empty() && op.eq_ignore_ascii_case("decrypt") => {
            Ok(Route::Decrypt { name, key_id })
        }
        _ => Err(DkeError::NotFound),
    }
}

/// `GET /{keyName}`'s answer.
#[derive(Debug, Serialize)]
struct PublicKeyAnswer {
    key: PublicKeyJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<CacheJson>,
}

#[derive(Debug, Serialize)]
struct PublicKeyJson {
    kty: &'static str,
    n: String,
    e: u64,
    alg: &'static str,
    kid: String,
}

#[derive(Debug, Serialize)]
struct CacheJson {
    exp: String,
}

/// A decrypt request's body.
#[derive(Debug, Deserialize)]
struct DecryptRequest {
    alg: String,
    value: String,
}

/// The service: configuration, the current JWKS, and the cluster.
#[derive(Debug)]
pub struct Dke<B> {
    backend: Arc<B>,
    keys: HashMap<String, config::Key>,
    public_base_url: String,
    cache_exp_s: u64,
    budget: Duration,
    rules: Rules,
    challenge: String,
    /// The keys tokens are checked against: the file's and the URL's together.
    jwks: RwLock<Arc<KeySet>>,
    /// The two sources, and the file's modification time when last read.
    sources: Mutex<Sources>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<(String, Arc<rustls::ClientConfig>)>,
    jwks_refresh: Duration,
}

#[derive(Debug, Default)]
struct Sources {
    file: KeySet,
    url: KeySet,
    file_modified: Option<SystemTime>,
}

fn bad(message: &str) -> DkeError {
    DkeError::BadRequest(message.to_owned())
}

/// `yyyy-MM-ddTHH:mm:ss` (UTC, no zone suffix) of `secs` since the epoch.
pub fn format_utc(secs: u64) -> String {
    let (days, hour, minute, second) = calendar::split_seconds(secs);
    let (year, month, day) = calendar::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}")
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A big-endian public exponent as a JSON number.
fn exponent_number(bytes: &[u8]) -> Option<u64> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    (trimmed.len() <= 8 && !trimmed.is_empty()).then(|| trimmed.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// A key id is a version number: decimal, no sign or leading zero, `1..=u32::MAX`.
fn parse_key_id(key_id: &str) -> Option<u32> {
    if key_id.starts_with('0') || !key_id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key_id.parse().ok()
}

/// Printable ASCII, at most 128 characters: safe in a log line or an audit request id.
fn sanitized(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_graphic() { c } else { '?' }).take(128).collect()
}

impl<B: Backend> Dke<B> {
    /// The service for `config` over `backend`; reads the JWKS file.
    ///
    /// # Errors
    /// If the JWKS file cannot be read or holds no usable key.
    pub fn new(config: &Config, backend: Arc<B>) -> anyhow::Result<Self> {
        let mut sources = Sources::default();
        if let Some(file) = &config.jwt.jwks_file {
            sources.file = KeySet::load(file)?;
            sources.file_modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        }
        let jwks_url = match (&config.jwt.jwks_url, &config.jwt.jwks_ca) {
            (Some(url), Some(ca)) => Some((url.clone(), crate::jwks_url::client_config(ca)?)),
            _ => None,
        };
        Ok(Dke {
            backend,
            keys: config.keys.iter().map(|k| (k.name.clone(), k.clone())).collect(),
            public_base_url: config.public_base_url.clone(),
            cache_exp_s: config.cache_exp_s,
            budget: config.budget(),
            rules: Rules {
                issuers: config.jwt.issuers.clone(),
                audience: config.jwt.audience.clone(),
                leeway_s: config.jwt.leeway_s,
            },
            challenge: config.jwt.challenge(),
            jwks: RwLock::new(Arc::new(sources.file.clone())),
            sources: Mutex::new(sources),
            jwks_file: config.jwt.jwks_file.clone(),
            jwks_url,
            jwks_refresh: Duration::from_secs(config.jwt.jwks_refresh_s),
        })
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// The per-request budget.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Reloads the JWKS file if its modification time changed; a file that does not parse
    /// leaves the old key set in place (and is reported once, until it changes again).
    ///
    /// # Errors
    /// If the changed file cannot be read or parsed.
    pub fn reload_jwks_if_changed(&self) -> anyhow::Result<bool> {
        let Some(file) = &self.jwks_file else {
            return Ok(false);
        };
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        let mut sources = self.sources.lock().map_err(|_| anyhow::anyhow!("JWKS lock poisoned"))?;
        if modified == sources.file_modified {
            return Ok(false);
        }
        // Remember this version of the file either way: a broken file is reported once, and
        // the next change is tried again.
        sources.file_modified = modified;
        sources.file = KeySet::load(file)?;
        self.publish(&sources)?;
        Ok(true)
    }

    /// Fetches the JWKS URL, if one is configured, and trusts its keys (with the file's).
    /// Returns when to fetch next: the configured interval after a success, 30 s after a
    /// failure (the last good keys stay in use); `None` without a URL.
    pub async fn refresh_jwks_url(&self) -> Option<Duration> {
        let (url, tls) = self.jwks_url.as_ref()?;
        match crate::jwks_url::fetch(url, tls.clone()).await {
            Ok(set) => {
                let count = set.len();
                let published =
                    self.sources.lock().map_err(|_| anyhow::anyhow!("JWKS lock poisoned")).and_then(|mut s| {
                        s.url = set;
                        self.publish(&s)
                    });
                match published {
                    Ok(()) => tracing::info!(url = %url, keys = count, "JWKS fetched"),
                    Err(e) => tracing::warn!(error = %e, "JWKS not updated"),
                }
                Some(self.jwks_refresh)
            }
            Err(e) => {
                tracing::warn!(url = %url, error = %e, "JWKS fetch failed; keeping the last keys");
                Some(Duration::from_secs(30))
            }
        }
    }

    fn publish(&self, sources: &Sources) -> anyhow::Result<()> {
        *self.jwks.write().map_err(|_| anyhow::anyhow!("JWKS lock poisoned"))? =
            Arc::new(sources.file.union(&sources.url));
        Ok(())
    }

    fn key(&self, name: &str) -> Result<&config::Key, DkeError> {
        self.keys.get(name).ok_or_else(|| bad("unknown key name"))
    }

    /// `GET /{keyName}`: the key's active version as DKE JSON, with `cache.exp` = `now` +
    /// the configured time.
    ///
    /// # Errors
    /// 400 for an unknown key name, 403 for a disabled key, 503 when the cluster cannot answer.
    pub async fn public_key(&self, name: &str, now: SystemTime, deadline: Instant) -> Result<Vec<u8>, DkeError> {
        let key = self.key(name)?;
        let info = self.backend.get_rsa_key(&key.rsa_key, deadline).await.map_err(|e| self.backend_error(e))?;
        if info.state == hyok_proto::v1::KeyState::Disabled as i32 {
            return Err(DkeError::Forbidden("the key is disabled".into()));
        }
        let version = info.versions.iter().find(|v| v.version == info.primary_version).ok_or_else(|| {
            tracing::warn!(rsa_key = %key.rsa_key, primary = info.primary_version, "the cluster names a primary version it does not list");
            DkeError::Internal("the key has no usable version".into())
        })?;
        let e = exponent_number(&version.exponent)
            .ok_or_else(|| DkeError::Internal("the key's public exponent does not fit a JSON number".into()))?;
        let answer = PublicKeyAnswer {
            key: PublicKeyJson {
                kty: "RSA",
                n: STANDARD.encode(&version.modulus),
                e,
                alg: "RS256",
                kid: format!("{}/{}/{}", self.public_base_url, name, version.version),
            },
            cache: (self.cache_exp_s > 0)
                .then(|| CacheJson { exp: format_utc(unix_seconds(now).saturating_add(self.cache_exp_s)) }),
        };
        serde_json::to_vec(&answer).map_err(|_| DkeError::Internal("encoding the answer failed".into()))
    }

    /// The bearer token's claims.
    ///
    /// # Errors
    /// 401 for a missing, malformed or invalid token (the reason is logged).
    pub fn authenticate(&self, headers: &HeaderMap, now: SystemTime) -> Result<Claims, DkeError> {
        let Some(token) = bearer_token(headers) else {
            tracing::info!("no bearer token");
            return Err(DkeError::Unauthorized);
        };
        let keys = self.jwks.read().map(|k| k.clone()).map_err(|_| DkeError::Internal("JWKS lock poisoned".into()))?;
        jwt::validate(token, &keys, &self.rules, unix_seconds(now)).map_err(|e| {
            tracing::info!(reason = %e, "bearer token refused");
            DkeError::Unauthorized
        })
    }

    /// Whether the token's user may use `key`: an email-like claim in `allowed_emails`
    /// (case-insensitive), a role or group in `allowed_roles`, or its `tid/oid` in
    /// `allowed_object_ids`.
    ///
    /// # Errors
    /// 403 otherwise.
    pub fn authorize(key: &config::Key, claims: &Claims) -> Result<(), DkeError> {
        if key.access().permits(claims) {
            Ok(())
        } else {
            Err(DkeError::Forbidden("the user is not authorized for this key".into()))
        }
    }

    /// `POST /{keyName}/{keyId}/decrypt`: authenticates, authorizes, parses the body, asks the
    /// cluster, and answers `{"value": base64(plaintext)}`. Logs the user and key version,
    /// never the plaintext.
    ///
    /// # Errors
    /// 401, 403, 400 (one message for every ciphertext that does not decrypt), 503.
    pub async fn decrypt(
        &self,
        name: &str,
        key_id: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, DkeError> {
        let claims = self.authenticate(headers, now)?;
        let user = sanitized(claims.user());
        let key = self.key(name)?;
        if let Err(e) = Self::authorize(key, &claims) {
            tracing::warn!(key = name, user = %user, "decrypt refused: user not authorized for the key");
            return Err(e);
        }
        let version = parse_key_id(key_id).ok_or_else(|| bad("unknown key id"))?;
        let request: DecryptRequest = serde_json::from_slice(body)
            .map_err(|_| bad("the body must be {\"alg\":\"RSA-OAEP-256\",\"value\":\"<Base64>\"}"))?;
        if request.alg != DECRYPT_ALG {
            return Err(bad("alg must be RSA-OAEP-256"));
        }
        let ciphertext = STANDARD.decode(request.value.as_bytes()).map_err(|_| bad("value is not valid Base64"))?;
        if !CIPHERTEXT_LEN.contains(&ciphertext.len()) {
            return Err(bad(DECRYPTION_FAILED));
        }
        let request_id = format!("dke {name}/{version} user={user}");
        // Every node verifies the user's token and applies its own authorization again.
        let token = bearer_token(headers).unwrap_or_default().to_owned();
        let evidence = pb::Evidence { kind: Some(pb::evidence::Kind::BearerToken(token)) };
        let result =
            self.backend.rsa_decrypt(&key.rsa_key, version, &ciphertext, &request_id, evidence, deadline).await;
        match result {
            Ok(plaintext) => {
                tracing::info!(key = name, rsa_key = %key.rsa_key, version, user = %user, "decrypted");
                let value = Zeroizing::new(STANDARD.encode(&*plaintext));
                let answer = Zeroizing::new(format!("{{\"value\":\"{}\"}}", &*value));
                Ok(Zeroizing::new(answer.as_bytes().to_vec()))
            }
            Err(e) => {
                tracing::info!(key = name, rsa_key = %key.rsa_key, version, user = %user, error = %e, "decrypt failed");
                Err(self.backend_error(e))
            }
        }
    }

    /// What the client sees of a cluster error.
    fn backend_error(&self, error: BackendError) -> DkeError {
        match error {
            BackendError::KeyNotFound => bad("unknown key name"),
            BackendError::VersionNotFound => bad("unknown key id"),
            BackendError::Malformed | BackendError::DecryptionFailed => bad(DECRYPTION_FAILED),
            BackendError::Disabled => DkeError::Forbidden("the key is disabled".into()),
            BackendError::UsageNotAllowed => DkeError::Forbidden("the key does not allow this operation".into()),
            BackendError::Denied => DkeError::Forbidden("the hyok nodes refused the user's token for this key".into()),
            BackendError::Unavailable | BackendError::TimedOut => {
                DkeError::Unavailable("the hyok cluster cannot answer now; retry".into())
            }
            _ => DkeError::Internal("the hyok cluster failed the request".into()),
        }
    }
}

/// The token of an `Authorization: Bearer …` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = header.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_one_key_name_or_a_decrypt_in_any_case() {
        assert_eq!(route("/conf").unwrap(), Route::PublicKey { name: "conf" });
        assert_eq!(route("/conf/3/decrypt").unwrap(), Route::Decrypt { name: "conf", key_id: "3" });
        assert_eq!(route("/conf/3/DeCrYpT").unwrap(), Route::Decrypt { name: "conf", key_id: "3" });
        for path in ["/", "", "/conf/", "/conf/3", "/conf/3/encrypt", "//3/decrypt", "/conf//decrypt", "/a/b/c/d"] {
            assert_eq!(route(path), Err(DkeError::NotFound), "{path}");
        }
    }

    #[test]
    fn key_ids_are_canonical_positive_decimals() {
        assert_eq!(parse_key_id("1"), Some(1));
        assert_eq!(parse_key_id("4294967295"), Some(u32::MAX));
        for bad in ["0", "01", "+1", "-1", "", "1a", "4294967296", " 1"] {
            assert_eq!(parse_key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn utc_dates_are_formatted_without_a_zone() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31T23:59:59");
        assert_eq!(format_utc(4_102_444_800), "2100-01-01T00:00:00");
    }

    #[test]
    fn exponents_become_json_numbers() {
        assert_eq!(exponent_number(&[1, 0, 1]), Some(65_537));
        assert_eq!(exponent_number(&[0, 3]), Some(3));
        assert_eq!(exponent_number(&[1; 9]), None);
        assert_eq!(exponent_number(&[]), None);
    }

    #[test]
    fn authorization_matches_emails_case_insensitively_and_roles_and_object_ids_exactly() {
        let key = config::Key {
            name: "k".into(),
            rsa_key: "r".into(),
            allowed_emails: vec!["Alice@Example.com".into()],
            allowed_roles: vec!["DKE.Readers".into()],
            allowed_object_ids: vec!["tenant-1/object-7".into()],
        };
        let by_id = Claims { object_id: Some("tenant-1/object-7".into()), ..Claims::default() };
        assert!(Dke::<crate::backend::Coordinator>::authorize(&key, &by_id).is_ok());
        let other_tenant = Claims { object_id: Some("tenant-2/object-7".into()), ..Claims::default() };
        assert!(Dke::<crate::backend::Coordinator>::authorize(&key, &other_tenant).is_err());
        let alice = Claims { names: vec!["alice@example.COM".into()], ..Claims::default() };
        assert!(Dke::<crate::backend::Coordinator>::authorize(&key, &alice).is_ok());
        let reader =
            Claims { names: vec!["bob@example.com".into()], roles: vec!["DKE.Readers".into()], ..Claims::default() };
        assert!(Dke::<crate::backend::Coordinator>::authorize(&key, &reader).is_ok());
        let other =
            Claims { names: vec!["bob@example.com".into()], roles: vec!["dke.readers".into()], ..Claims::default() };
        assert!(matches!(Dke::<crate::backend::Coordinator>::authorize(&key, &other), Err(DkeError::Forbidden(_))));
    }
}
