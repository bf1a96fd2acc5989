//! An XKS request as evidence: what hyok-xks forwards of the request AWS KMS signed, how a
//! node rebuilds and reads it, and the facts both sides derive from it the same way (the
//! encryption nonce, the ciphertext's seed and key version).
//!
//! - **Encrypt.** The nodes get the signed headers and the body's SHA-256, never the plaintext.
//!   Every node derives the DPRF nonce from the request's signature
//!   ([`encryption_nonce`]), so nobody can steer an encryption onto another ciphertext's seed,
//!   and a replay of the request yields exactly the seed it yielded the first time.
//! - **Decrypt.** The nodes get the body and read the seed (`initializationVector`) and the key
//!   version (`ciphertextMetadata`) from it ([`decrypt_inputs`]): they evaluate on nothing
//!   else.

use crate::sigv4;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyok_proto::v1 as pb;
use sha2::{Digest, Sha256};

/// The fixed tail of every XKS base path.
pub const API_PATH: &str = "/kms/xks/v1";
/// The first byte of hyok's `ciphertextMetadata`.
pub const METADATA_FORMAT: u8 = 0x01;
/// `METADATA_FORMAT ‖ u32be(key version)`: 5 bytes, within the spec's 20.
pub const METADATA_LEN: usize = 5;
/// The IV hyok returns: the 16-byte DPRF seed.
pub const IV_LEN: usize = 16;

/// The two XKS operations that make a node compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// `…/keys/{id}/encrypt`.
    Encrypt,
    /// `…/keys/{id}/decrypt`.
    Decrypt,
}

impl Operation {
    /// The DPRF operation it needs.
    pub fn dprf(self) -> pb::Operation {
        match self {
            Operation::Encrypt => pb::Operation::Encrypt,
            Operation::Decrypt => pb::Operation::Decrypt,
        }
    }
}

/// What KMS may do with a key: the same mapping is configured in hyok-xks and in every node's
/// policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    /// Encrypt and decrypt.
    EncryptDecrypt,
    /// Encrypt only.
    Encrypt,
    /// Decrypt only.
    Decrypt,
    /// Neither (every use → InvalidKeyUsageException).
    None,
}

impl Usage {
    /// Whether encryption is allowed.
    pub fn encrypt(self) -> bool {
        matches!(self, Usage::EncryptDecrypt | Usage::Encrypt)
    }

    /// Whether decryption is allowed.
    pub fn decrypt(self) -> bool {
        matches!(self, Usage::EncryptDecrypt | Usage::Decrypt)
    }

    /// Whether `operation` is allowed.
    pub fn allows(self, operation: Operation) -> bool {
        match operation {
            Operation::Encrypt => self.encrypt(),
            Operation::Decrypt => self.decrypt(),
        }
    }
}

/// A key store's base path: `/{prefix}/kms/xks/v1`, or `/kms/xks/v1` for an empty prefix.
pub fn base_path(uri_prefix: &str) -> String {
    if uri_prefix.is_empty() { API_PATH.to_owned() } else { format!("/{uri_prefix}{API_PATH}") }
}

/// The external key id and operation of `path` under `base` (`{base}/keys/{id}/{op}`), for the
/// two operations that compute.
pub fn route<'p>(path: &'p str, base: &str) -> Option<(&'p str, Operation)> {
    let rest = path.strip_prefix(base)?.strip_prefix("/keys/")?;
    let (id, op) = rest.split_once('/')?;
    let op = match op {
        "encrypt" => Operation::Encrypt,
        "decrypt" => Operation::Decrypt,
        _ => return None,
    };
    (!id.is_empty() && !id.contains('/')).then_some((id, op))
}

/// The operation a path names (its last segment), whatever its key store: what a carrier needs
/// to know without the key stores' configuration.
pub fn claimed_operation(request: &pb::XksRequest) -> Option<Operation> {
    match request.path.rsplit('/').next()? {
        "encrypt" => Some(Operation::Encrypt),
        "decrypt" => Some(Operation::Decrypt),
        _ => None,
    }
}

/// `ciphertextMetadata` for a key version: `0x01 ‖ u32be(version)`.
pub fn metadata(version: u32) -> [u8; METADATA_LEN] {
    let mut out = [0u8; METADATA_LEN];
    out[0] = METADATA_FORMAT;
    out[1..].copy_from_slice(&version.to_be_bytes());
    out
}

/// The key version in a `ciphertextMetadata` hyok wrote; `None` for anything else (including
/// version 0).
pub fn metadata_version(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [METADATA_FORMAT, a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])).filter(|v| *v != 0),
        _ => None,
    }
}

/// The DPRF nonce of the encryption a signed request asks for: the first 16 bytes of
/// `SHA-256("hyok/v1/xks-encrypt-nonce" ‖ signature)`.
pub fn encryption_nonce(signature: &[u8; 32]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"hyok/v1/xks-encrypt-nonce");
    h.update(signature);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&h.finalize()[..16]);
    nonce
}

/// The signature the request's `Authorization` header claims (unverified).
pub fn claimed_signature(request: &pb::XksRequest) -> Option<[u8; 32]> {
    let value = request.headers.iter().find(|h| h.name == "authorization")?;
    let value = std::str::from_utf8(&value.value).ok()?;
    sigv4::claimed(value).ok().map(|c| c.signature)
}

/// What the nodes need of a signed request, for an encryption (`with_body` false: only the
/// body's hash) or a decryption (the body). Forwards the headers `Authorization` says it
/// signed, `authorization` itself and `x-amz-content-sha256`; under HTTP/2 the authority
/// stands in for `host`.
pub fn to_evidence(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    body: &[u8],
    with_body: bool,
) -> pb::Evidence {
    let signed: Vec<String> = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| sigv4::claimed(v).ok())
        .map(|c| c.signed_headers.iter().map(|s| (*s).to_owned()).collect())
        .unwrap_or_default();
    let mut forwarded = Vec::with_capacity(signed.len() + 2);
    let mut push = |name: &str| {
        for value in headers.get_all(name) {
            forwarded.push(pb::HttpHeader { name: name.to_owned(), value: value.as_bytes().to_vec() });
        }
    };
    push("authorization");
    push("x-amz-content-sha256");
    for name in &signed {
        if name != "authorization" && name != "x-amz-content-sha256" {
            push(name);
        }
    }
    if signed.iter().any(|n| n == "host")
        && !headers.contains_key("host")
        && let Some(authority) = uri.authority()
    {
        forwarded.push(pb::HttpHeader { name: "host".into(), value: authority.as_str().as_bytes().to_vec() });
    }
    let (body, body_sha256) =
        if with_body { (body.to_vec(), Vec::new()) } else { (Vec::new(), Sha256::digest(body).to_vec()) };
    pb::Evidence {
        kind: Some(pb::evidence::Kind::Xks(pb::XksRequest {
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            headers: forwarded,
            body,
            body_sha256,
        })),
    }
}

/// The request rebuilt for [`sigv4::verify_request`]: method, path-and-query and headers.
///
/// # Errors
/// A reason, when a part does not parse.
pub fn request_parts(request: &pb::XksRequest) -> Result<(http::Method, http::Uri, http::HeaderMap), String> {
    let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| "bad method".to_owned())?;
    let target =
        if request.query.is_empty() { request.path.clone() } else { format!("{}?{}", request.path, request.query) };
    let uri: http::Uri = target.parse().map_err(|_| "bad path".to_owned())?;
    if uri.authority().is_some() || !request.path.starts_with('/') {
        return Err("the path must be a path".into());
    }
    let mut headers = http::HeaderMap::with_capacity(request.headers.len());
    for h in &request.headers {
        let name = http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "bad header name".to_owned())?;
        let value = http::HeaderValue::from_bytes(&h.value).map_err(|_| "bad header value".to_owned())?;
        headers.append(name, value);
    }
    Ok((method, uri, headers))
}

/// The seed (`initializationVector`) and key version (`ciphertextMetadata`) of a decrypt
/// request's body.
///
/// # Errors
/// A reason, when the body does not carry them in the form hyok-xks writes.
pub fn decrypt_inputs(body: &[u8]) -> Result<([u8; IV_LEN], u32), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fields {
        initialization_vector: String,
        ciphertext_metadata: Option<String>,
    }
    let fields: Fields = serde_json::from_slice(body).map_err(|_| "the body lacks initializationVector".to_owned())?;
    let iv =
        STANDARD.decode(&fields.initialization_vector).map_err(|_| "initializationVector is not base64".to_owned())?;
    let iv: [u8; IV_LEN] = iv.try_into().map_err(|_| format!("initializationVector is not {IV_LEN} bytes"))?;
    let metadata = STANDARD
        .decode(fields.ciphertext_metadata.unwrap_or_default())
        .map_err(|_| "ciphertextMetadata is not base64".to_owned())?;
    let version =
        metadata_version(&metadata).ok_or_else(|| "ciphertextMetadata is not one hyok-xks wrote".to_owned())?;
    Ok((iv, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_computing_operations_under_the_base() {
        let base = base_path("keystores/a");
        assert_eq!(base, "/keystores/a/kms/xks/v1");
        assert_eq!(route("/keystores/a/kms/xks/v1/keys/k1/encrypt", &base), Some(("k1", Operation::Encrypt)));
        assert_eq!(route("/keystores/a/kms/xks/v1/keys/k1/decrypt", &base), Some(("k1", Operation::Decrypt)));
        for other in [
            "/keystores/a/kms/xks/v1/keys/k1/metadata",
            "/keystores/b/kms/xks/v1/keys/k1/encrypt",
            "/keystores/a/kms/xks/v1/keys//encrypt",
            "/keystores/a/kms/xks/v1/keys/k1/x/encrypt",
            "/keystores/a/kms/xks/v1/health",
        ] {
            assert_eq!(route(other, &base), None, "{other}");
        }
        assert_eq!(route("/kms/xks/v1/keys/k/decrypt", &base_path("")), Some(("k", Operation::Decrypt)));
    }

    #[test]
    fn metadata_round_trips_and_refuses_anything_else() {
        assert_eq!(metadata_version(&metadata(7)), Some(7));
        assert_eq!(metadata_version(&metadata(0)), None);
        assert_eq!(metadata_version(&[0x02, 0, 0, 0, 1]), None);
        assert_eq!(metadata_version(&[0x01, 0, 0, 1]), None);
    }

    #[test]
    fn decrypt_inputs_read_the_iv_and_version() {
        let body = format!(
            r#"{{"requestMetadata":{{}},"ciphertext":"AA==","initializationVector":"{}","ciphertextMetadata":"{}","encryptionAlgorithm":"AES_GCM"}}"#,
            STANDARD.encode([9u8; 16]),
            STANDARD.encode(metadata(3))
        );
        assert_eq!(decrypt_inputs(body.as_bytes()), Ok(([9u8; 16], 3)));
        assert!(decrypt_inputs(br#"{"initializationVector":"AAAA"}"#).is_err());
        assert!(decrypt_inputs(b"not json").is_err());
    }

    #[test]
    fn an_evidence_round_trips_into_a_request_that_verifies() {
        let now = std::time::SystemTime::now();
        let body = br#"{"plaintext":"AA=="}"#;
        let path = "/keystores/a/kms/xks/v1/keys/k1/encrypt";
        let secret = "1234567890123456789012345678901234567890123=";
        let signed = sigv4::sign(path, "xks.example.com", body, "AKIA4GBY3I6JCE5M2HPM", secret, "us-east-1", now);
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("application/json"));
        headers.insert("x-amz-date", signed.amz_date.parse().unwrap());
        headers.insert("authorization", signed.authorization.parse().unwrap());
        headers.insert("user-agent", http::HeaderValue::from_static("not signed"));
        // HTTP/2: no host header, the authority stands in.
        let uri: http::Uri = format!("https://xks.example.com{path}").parse().unwrap();
        let evidence = to_evidence(&http::Method::POST, &uri, &headers, body, false);
        let Some(pb::evidence::Kind::Xks(request)) = evidence.kind else { panic!("not xks") };
        assert!(request.body.is_empty(), "an encryption's body never travels");
        assert!(!request.headers.iter().any(|h| h.name == "user-agent"), "unsigned headers stay behind");
        let (method, uri, headers) = request_parts(&request).unwrap();
        let hash: [u8; 32] = request.body_sha256.as_slice().try_into().unwrap();
        let verified = sigv4::verify_request(
            &method,
            &uri,
            &headers,
            sigv4::Payload::Sha256(&hash),
            Some("us-east-1"),
            now,
            |_| Some(zeroize::Zeroizing::new(secret.to_owned())),
        )
        .unwrap();
        assert_eq!(Some(verified.signature), claimed_signature(&request));
        assert_eq!(claimed_operation(&request), Some(Operation::Encrypt));
    }
}
