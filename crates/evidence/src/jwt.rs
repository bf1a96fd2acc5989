//! JWT bearer token validation (RFC 7519, JWS compact serialization) on `ring`: RS256
//! (RSASSA-PKCS1-v1_5 with SHA-256, 2048..=8192-bit keys) and ES256 (ECDSA P-256 with SHA-256,
//! fixed-width signatures) only. `none`, every HMAC algorithm and anything else are refused
//! before any key is looked at.
//!
//! Keys come from a JSON Web Key Set (RFC 7517) — `RSA` keys with `n`/`e`, `EC` keys on
//! `P-256` with `x`/`y` — read from a file ([`KeySet::load`]) that the server reloads when it
//! changes. A token must carry `iss` (one of the allowed issuers), `aud` (a string or an array
//! holding the configured audience) and `exp` (in the future, with a leeway); `nbf`, when
//! present, must have passed (same leeway).
//!
//! [`sign_rs256`] mints a token, for development token issuers and tests.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::signature::{self, RsaKeyPair, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value};
use std::path::Path;

/// base64url (RFC 4648 §5) without padding on output, padding tolerated on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_encode_padding(false).with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. Logged, never sent: the client sees one 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Not three base64url parts of JSON objects, or too long.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not RS256 or ES256 (`none` and HMAC included), or `crit` is present.
    #[error("unsupported token algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// No key in the set fits the token's `kid` and algorithm.
    #[error("no key in the JWKS for this token")]
    UnknownKey,
    /// The signature does not verify under any fitting key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not an allowed issuer.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` does not name this service.
    #[error("token audience is not this service")]
    WrongAudience,
    /// A required claim is absent or has the wrong type.
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
}

/// A verification key from a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    /// RSA `(n, e)`, big-endian.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// An uncompressed P-256 point `04 || x || y`.
    P256 { point: Vec<u8> },
}

/// One usable key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Jwk {
    kid: Option<String>,
    material: KeyMaterial,
}

/// A JSON Web Key Set: the keys usable for RS256 or ES256. Keys of other types, curves or uses
/// are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    keys: Vec<Jwk>,
}

impl KeySet {
    /// Parses a JWKS document `{"keys":[…]}`.
    ///
    /// # Errors
    /// If the document is not such an object, or holds no usable key.
    pub fn parse(json: &[u8]) -> anyhow::Result<Self> {
        let value: Value = serde_json::from_slice(json).map_err(|e| anyhow::anyhow!("JWKS is not JSON: {e}"))?;
        let keys =
            value.get("keys").and_then(Value::as_array).ok_or_else(|| anyhow::anyhow!("JWKS has no keys array"))?;
        let mut set = KeySet::default();
        for key in keys {
            if let Some(jwk) = Jwk::parse(key) {
                set.keys.push(jwk);
            }
        }
        anyhow::ensure!(!set.keys.is_empty(), "JWKS holds no RSA or P-256 signing key");
        Ok(set)
    }

    /// Reads and parses a JWKS file.
    ///
    /// # Errors
    /// If the file cannot be read or parsed.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The keys of both sets.
    pub fn union(&self, other: &KeySet) -> KeySet {
        KeySet { keys: self.keys.iter().chain(&other.keys).cloned().collect() }
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Jwk {
    fn parse(key: &Value) -> Option<Jwk> {
        let field = |name: &str| key.get(name).and_then(Value::as_str);
        let bytes = |name: &str| field(name).and_then(|s| B64URL.decode(s).ok());
        if field("use").is_some_and(|u| u != "sig") {
            return None;
        }
        let kid = field("kid").map(str::to_owned);
        let material = match (field("kty")?, field("alg")) {
            ("RSA", None | Some("RS256")) => KeyMaterial::Rsa { n: bytes("n")?, e: bytes("e")? },
            ("EC", None | Some("ES256")) if field("crv") == Some("P-256") => {
                let (x, y) = (bytes("x")?, bytes("y")?);
                if x.len() != 32 || y.len() != 32 {
                    return None;
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                KeyMaterial::P256 { point }
            }
            _ => return None,
        };
        Some(Jwk { kid, material })
    }
}

/// The accepted algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

/// What the service needs from a valid token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    /// `iss`.
    pub issuer: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `email`, `upn` and `preferred_username`, in that order, where present.
    pub names: Vec<String>,
    /// `roles` and `groups` values (each a string or an array of strings).
    pub roles: Vec<String>,
    /// `tid/oid` (Entra ID's immutable tenant and object ids), when the token carries both.
    pub object_id: Option<String>,
}

impl Claims {
    /// The user to name in logs and audit records: the first of `email`, `upn`,
    /// `preferred_username`, else `sub`, else `-`.
    pub fn user(&self) -> &str {
        self.names.first().or(self.subject.as_ref()).map_or("-", String::as_str)
    }
}

/// Validation rules (everything but the keys).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Accepted issuers.
    pub issuers: Vec<String>,
    /// The required audience.
    pub audience: String,
    /// Leeway on `exp`/`nbf`, in seconds.
    pub leeway_s: u64,
}

fn decode_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = B64URL.decode(part).map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed),
    }
}

/// A NumericDate claim (seconds since the epoch; JSON integer or float).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_f64().filter(|f| f.is_finite()).map(Some).ok_or(JwtError::MissingClaim(name)),
    }
}

/// Strings of a claim that is a string or an array of strings.
fn strings(claims: &Map<String, Value>, name: &str) -> Vec<String> {
    match claims.get(name) {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// Validates `token` against `keys` and `rules` at time `now_s` (seconds since the epoch).
///
/// # Errors
/// A [`JwtError`] naming the first check that failed (for the log only).
pub fn validate(token: &str, keys: &KeySet, rules: &Rules, now_s: u64) -> Result<Claims, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = decode_json(header_b64)?;
    let alg = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => Alg::Rs256,
        Some("ES256") => Alg::Es256,
        Some(other) => return Err(JwtError::UnsupportedAlgorithm(other.chars().take(16).collect())),
        None => return Err(JwtError::Malformed),
    };
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedAlgorithm("crit".into()));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = B64URL.decode(signature_b64).map_err(|_| JwtError::Malformed)?;
    let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

    let mut candidates = keys
        .keys
        .iter()
        .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
        .filter(|k| {
            matches!((&k.material, alg), (KeyMaterial::Rsa { .. }, Alg::Rs256) | (KeyMaterial::P256 { .. }, Alg::Es256))
        })
        .peekable();
    if candidates.peek().is_none() {
        return Err(JwtError::UnknownKey);
    }
    let verified = candidates.any(|k| match &k.material {
        KeyMaterial::Rsa { n, e } => {
            RsaPublicKeyComponents { n, e }.verify(&signature::RSA_PKCS1_2048_8192_SHA256, signed, &signature).is_ok()
        }
        KeyMaterial::P256 { point } => {
            UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point).verify(signed, &signature).is_ok()
        }
    });
    if !verified {
        return Err(JwtError::BadSignature);
    }

    let claims = decode_json(payload_b64)?;
    let now = now_s as f64;
    let leeway = rules.leeway_s as f64;
    let exp = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    if now > exp + leeway {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = numeric_date(&claims, "nbf")?
        && now + leeway < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    let issuer = claims.get("iss").and_then(Value::as_str).ok_or(JwtError::MissingClaim("iss"))?;
    if !rules.issuers.iter().any(|i| i == issuer) {
        return Err(JwtError::WrongIssuer);
    }
    let audiences = strings(&claims, "aud");
    if audiences.is_empty() {
        return Err(JwtError::MissingClaim("aud"));
    }
    if !audiences.iter().any(|a| a.trim_end_matches('/') == rules.audience.trim_end_matches('/')) {
        return Err(JwtError::WrongAudience);
    }
    let names = ["email", "upn", "preferred_username"]
        .iter()
        .filter_map(|c| claims.get(*c).and_then(Value::as_str))
        .map(str::to_owned)
        .collect();
    let mut roles = strings(&claims, "roles");
    roles.extend(strings(&claims, "groups"));
    let object_id = match (claims.get("tid").and_then(Value::as_str), claims.get("oid").and_then(Value::as_str)) {
        (Some(tid), Some(oid)) => Some(format!("{tid}/{oid}")),
        _ => None,
    };
    Ok(Claims {
        issuer: issuer.to_owned(),
        subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        names,
        roles,
        object_id,
    })
}

/// Who may use a key, by the claims of a valid token.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Users, compared case-insensitively with the token's `email`, `upn` and
    /// `preferred_username` claims.
    #[serde(default)]
    pub allowed_emails: Vec<String>,
    /// Role or group values: any of the token's `roles` or `groups`.
    #[serde(default)]
    pub allowed_roles: Vec<String>,
    /// Immutable user ids, `tid/oid` (Entra ID's tenant and object ids): unlike a name, never
    /// reassigned to another user.
    #[serde(default)]
    pub allowed_object_ids: Vec<String>,
}

impl Access {
    /// Whether nobody is allowed.
    pub fn is_empty(&self) -> bool {
        self.allowed_emails.is_empty() && self.allowed_roles.is_empty() && self.allowed_object_ids.is_empty()
    }

    /// Whether the token's user is allowed: by name, by role or group, or by `tid/oid`.
    pub fn permits(&self, claims: &Claims) -> bool {
        let by_name = claims.names.iter().any(|n| self.allowed_emails.iter().any(|a| a.eq_ignore_ascii_case(n)));
        let by_role = claims.roles.iter().any(|r| self.allowed_roles.contains(r));
        let by_id = claims.object_id.as_ref().is_some_and(|id| self.allowed_object_ids.contains(id));
        by_name || by_role || by_id
    }
}

/// Mints an RS256 token over `claims` with `key`, naming `kid` in the header. For development
/// token issuers (`hyokctl dev token`) and tests.
///
/// # Errors
/// If signing fails.
pub fn sign_rs256(key: &RsaKeyPair, kid: &str, claims: &Value) -> anyhow::Result<String> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let mut token = format!("{}.{}", B64URL.encode(header.to_string()), B64URL.encode(claims.to_string()));
    let mut signature = vec![0u8; key.public().modulus_len()];
    key.sign(&signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), token.as_bytes(), &mut signature)
        .map_err(|_| anyhow::anyhow!("RS256 signing failed"))?;
    token.push('.');
    token.push_str(&B64URL.encode(&signature));
    Ok(token)
}

/// The JWKS entry (`{"kty":"RSA","use":"sig","alg":"RS256","kid":…,"n":…,"e":…}`) of an RSA
/// public key given as big-endian `n` and `e`.
pub fn rsa_jwk(kid: &str, n: &[u8], e: &[u8]) -> Value {
    serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": B64URL.encode(n), "e": B64URL.encode(e)})
}

/// The JWKS entry of a P-256 public key given as an uncompressed point `04 || x || y`.
///
/// # Errors
/// If `point` is not 65 bytes starting with 4.
pub fn p256_jwk(kid: &str, point: &[u8]) -> anyhow::Result<Value> {
    anyhow::ensure!(point.len() == 65 && point[0] == 4, "not an uncompressed P-256 point");
    Ok(serde_json::json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
        "x": B64URL.encode(&point[1..33]), "y": B64URL.encode(&point[33..])}))
}

/// base64url without padding (for building tokens by hand in tests and tools).
pub fn b64url(data: &[u8]) -> String {
    B64URL.encode(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_entries_of_other_types_and_uses_are_skipped() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "alg": "RS512", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "k1", "n": "AQAB", "e": "AQAB"},
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.keys[0].kid.as_deref(), Some("k1"));
        assert!(KeySet::parse(b"{\"keys\":[]}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
    }

    #[test]
    fn hostile_tokens_are_malformed_not_panics() {
        let rules = Rules { issuers: vec!["i".into()], audience: "a".into(), leeway_s: 0 };
        let keys = KeySet::default();
        for token in ["", ".", "..", "...", "a.b.c", "eyJ9.e30.", "e30.e30.e30", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(validate(token, &keys, &rules, 0).is_err(), "{token}");
        }
        for alg in ["none", "HS256", "HS512", "RS512", "PS256", "ES384", "EdDSA", "rs256"] {
            let header = serde_json::json!({"alg": alg}).to_string();
            let token = format!("{}.{}.", b64url(header.as_bytes()), b64url(b"{}"));
            assert_eq!(validate(&token, &keys, &rules, 0), Err(JwtError::UnsupportedAlgorithm(alg.into())), "{alg}");
        }
        let crit = format!("{}.{}.", b64url(br#"{"alg":"RS256","crit":["exp"]}"#), b64url(b"{}"));
        assert!(matches!(validate(&crit, &keys, &rules, 0), Err(JwtError::UnsupportedAlgorithm(_))));
    }

    #[test]
    fn claims_name_the_user_by_email_then_subject() {
        let mut claims = Claims { subject: Some("sub-1".into()), ..Claims::default() };
        assert_eq!(claims.user(), "sub-1");
        claims.names.push("alice@example.com".into());
        assert_eq!(claims.user(), "alice@example.com");
        assert_eq!(Claims::default().user(), "-");
    }
}
