//! The XKS JSON bodies: requests as KMS sends them (unknown fields accepted, every field
//! optional until checked here), and responses as compact single-line JSON.

use crate::error::XksError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Longest ARN accepted (the spec requires at least 2048).
pub const MAX_ARN: usize = 2048;
/// Longest `kmsRequestId` / `kmsOperation` kept (they are logged; anything longer is refused).
pub const MAX_ID: usize = 256;

/// The four APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST …/keys/{id}/metadata`.
    GetKeyMetadata,
    /// `POST …/keys/{id}/encrypt`.
    Encrypt,
    /// `POST …/keys/{id}/decrypt`.
    Decrypt,
    /// `POST …/health`.
    GetHealthStatus,
}

impl Api {
    /// The API's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Api::GetKeyMetadata => "GetKeyMetadata",
            Api::Encrypt => "Encrypt",
            Api::Decrypt => "Decrypt",
            Api::GetHealthStatus => "GetHealthStatus",
        }
    }
}

/// `requestMetadata` as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMetadataJson {
    aws_principal_arn: Option<String>,
    kms_key_arn: Option<String>,
    kms_operation: Option<String>,
    kms_request_id: Option<String>,
    kms_via_service: Option<String>,
}

/// `requestMetadata`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMetadata {
    /// `kmsRequestId`, opaque (logged, never parsed).
    pub request_id: String,
    /// `kmsOperation`; any value is accepted.
    pub operation: String,
    /// `awsPrincipalArn` (absent for health).
    pub principal: Option<String>,
    /// `kmsKeyArn` (encrypt and decrypt).
    pub key_arn: Option<String>,
    /// `kmsViaService`, if sent.
    pub via_service: Option<String>,
}

fn required(value: Option<String>, name: &str, max: usize) -> Result<String, XksError> {
    match value {
        Some(v) if !v.is_empty() && v.len() <= max => Ok(v),
        Some(v) if v.len() > max => Err(XksError::Validation(format!("requestMetadata.{name} is too long"))),
        _ => Err(XksError::Validation(format!("requestMetadata.{name} is required"))),
    }
}

fn optional(value: Option<String>, name: &str, max: usize) -> Result<Option<String>, XksError> {
    match value {
        Some(v) if v.len() > max => Err(XksError::Validation(format!("requestMetadata.{name} is too long"))),
        other => Ok(other),
    }
}

impl RequestMetadata {
    /// Checks the fields `api` requires: `kmsRequestId` and `kmsOperation` always,
    /// `awsPrincipalArn` for key APIs, `kmsKeyArn` for encrypt and decrypt.
    pub fn check(json: Option<RequestMetadataJson>, api: Api) -> Result<Self, XksError> {
        let json = json.ok_or_else(|| XksError::Validation("requestMetadata is required".into()))?;
        let request_id = required(json.kms_request_id, "kmsRequestId", MAX_ID)?;
        let operation = required(json.kms_operation, "kmsOperation", MAX_ID)?;
        let principal = match api {
            Api::GetHealthStatus => optional(json.aws_principal_arn, "awsPrincipalArn", MAX_ARN)?,
            _ => Some(required(json.aws_principal_arn, "awsPrincipalArn", MAX_ARN)?),
        };
        let key_arn = match api {
            Api::Encrypt | Api::Decrypt => Some(required(json.kms_key_arn, "kmsKeyArn", MAX_ARN)?),
            _ => optional(json.kms_key_arn, "kmsKeyArn", MAX_ARN)?,
        };
        let via_service = optional(json.kms_via_service, "kmsViaService", MAX_ARN)?;
        Ok(RequestMetadata { request_id, operation, principal, key_arn, via_service })
    }
}

/// The `requestMetadata.kmsRequestId` of a body, if it has one that [`RequestMetadata::check`]
/// would keep: the request's id in the logs from the start (before authentication, so an
/// unauthenticated caller's id may appear in the lines of its refusal; it is logged, never
/// trusted).
pub fn peek_request_id(body: &[u8]) -> Option<String> {
    let parsed: MetadataOnly = serde_json::from_slice(body).ok()?;
    parsed.request_metadata?.kms_request_id.filter(|id| !id.is_empty() && id.len() <= MAX_ID)
}

/// Body of GetKeyMetadata and GetHealthStatus.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetadataOnly {
    /// `requestMetadata`.
    pub request_metadata: Option<RequestMetadataJson>,
}

/// Body of Encrypt.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptJson {
    /// `requestMetadata`.
    pub request_metadata: Option<RequestMetadataJson>,
    plaintext: Option<String>,
    encryption_algorithm: Option<String>,
    additional_authenticated_data: Option<String>,
    ciphertext_data_integrity_value_algorithm: Option<String>,
}

/// Body of Decrypt.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DecryptJson {
    /// `requestMetadata`.
    pub request_metadata: Option<RequestMetadataJson>,
    ciphertext: Option<String>,
    ciphertext_metadata: Option<String>,
    encryption_algorithm: Option<String>,
    additional_authenticated_data: Option<String>,
    authentication_tag: Option<String>,
    initialization_vector: Option<String>,
}

/// Size limits from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest plaintext or ciphertext.
    pub max_plaintext: usize,
    /// Largest AAD.
    pub max_aad: usize,
}

/// Parses a JSON body; anything that is not a JSON object of the right shape is a
/// ValidationException.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, XksError> {
    serde_json::from_slice(body).map_err(|e| {
        XksError::Validation(format!("body is not valid JSON for this API (line {}, column {})", e.line(), e.column()))
    })
}

fn decode(name: &str, value: &str) -> Result<Vec<u8>, XksError> {
    STANDARD.decode(value).map_err(|_| XksError::Validation(format!("{name} is not standard Base64")))
}

fn decode_limited(name: &str, value: &str, max: usize) -> Result<Vec<u8>, XksError> {
    // Base64 of n bytes is 4·⌈n/3⌉ characters: refuse before decoding anything too large.
    if value.len() > max.div_ceil(3) * 4 {
        return Err(XksError::UnsupportedOperation(format!("{name} is larger than the {max} bytes supported")));
    }
    let bytes = decode(name, value)?;
    if bytes.len() > max {
        return Err(XksError::UnsupportedOperation(format!("{name} is larger than the {max} bytes supported")));
    }
    Ok(bytes)
}

fn check_algorithm(value: Option<&str>) -> Result<(), XksError> {
    match value {
        Some("AES_GCM") => Ok(()),
        Some(_) => Err(XksError::UnsupportedOperation("encryptionAlgorithm must be AES_GCM".into())),
        None => Err(XksError::Validation("encryptionAlgorithm is required".into())),
    }
}

/// An Encrypt request, checked. Its Debug shows sizes only.
pub struct EncryptRequest {
    /// The plaintext (zeroized on drop; never logged).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// The caller's AAD (empty if absent).
    pub aad: Vec<u8>,
    /// Whether a CDIV (SHA-256) was asked for.
    pub cdiv: bool,
}

impl std::fmt::Debug for EncryptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptRequest")
            .field("plaintext", &format_args!("<{} bytes redacted>", self.plaintext.len()))
            .field("aad", &format_args!("<{} bytes>", self.aad.len()))
            .field("cdiv", &self.cdiv)
            .finish()
    }
}

impl EncryptJson {
    /// Checks and decodes the fields.
    pub fn check(self, limits: Limits) -> Result<EncryptRequest, XksError> {
        check_algorithm(self.encryption_algorithm.as_deref())?;
        let cdiv = match self.ciphertext_data_integrity_value_algorithm.as_deref() {
            None => false,
            Some("SHA_256") => true,
            Some(_) => {
                return Err(XksError::UnsupportedOperation(
                    "ciphertextDataIntegrityValueAlgorithm must be SHA_256".into(),
                ));
            }
        };
        let encoded =
            Zeroizing::new(self.plaintext.ok_or_else(|| XksError::Validation("plaintext is required".into()))?);
        let plaintext = Zeroizing::new(decode_limited("plaintext", &encoded, limits.max_plaintext)?);
        let aad = match self.additional_authenticated_data {
            Some(a) => decode_limited("additionalAuthenticatedData", &a, limits.max_aad)?,
            None => Vec::new(),
        };
        Ok(EncryptRequest { plaintext, aad, cdiv })
    }
}

/// A Decrypt request, checked.
#[derive(Debug)]
pub struct DecryptRequest {
    /// The ciphertext.
    pub ciphertext: Vec<u8>,
    /// `ciphertextMetadata` (empty if absent).
    pub metadata: Vec<u8>,
    /// The caller's AAD (empty if absent).
    pub aad: Vec<u8>,
    /// The IV as sent.
    pub iv: Vec<u8>,
    /// The tag as sent.
    pub tag: Vec<u8>,
}

impl DecryptJson {
    /// Checks and decodes the fields. Wrong IV or tag lengths are left to the caller, which
    /// answers InvalidCiphertextException for them.
    pub fn check(self, limits: Limits) -> Result<DecryptRequest, XksError> {
        check_algorithm(self.encryption_algorithm.as_deref())?;
        let field = |value: Option<String>, name: &str| {
            value.ok_or_else(|| XksError::Validation(format!("{name} is required")))
        };
        let ciphertext = decode_limited("ciphertext", &field(self.ciphertext, "ciphertext")?, limits.max_plaintext)?;
        // An IV or tag of another length than hyok's is InvalidCiphertextException (decided by the
        // caller); one too long to be either is refused the same way before it is decoded.
        let short = |name: &str, value: Option<String>| {
            decode_limited(name, &field(value, name)?, 64).map_err(|e| match e {
                XksError::UnsupportedOperation(_) => {
                    XksError::InvalidCiphertext(format!("{name} has the wrong length"))
                }
                other => other,
            })
        };
        let iv = short("initializationVector", self.initialization_vector)?;
        let tag = short("authenticationTag", self.authentication_tag)?;
        let metadata = match self.ciphertext_metadata {
            Some(m) => decode_limited("ciphertextMetadata", &m, 20)
                .map_err(|_| XksError::InvalidCiphertext("ciphertextMetadata is not valid".into()))?,
            None => Vec::new(),
        };
        let aad = match self.additional_authenticated_data {
            Some(a) => decode_limited("additionalAuthenticatedData", &a, limits.max_aad)?,
            None => Vec::new(),
        };
        Ok(DecryptRequest { ciphertext, metadata, aad, iv, tag })
    }
}

/// GetKeyMetadata's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyMetadataResponse {
    /// Always `AES_256`.
    pub key_spec: &'static str,
    /// `ENCRYPT` and/or `DECRYPT`.
    pub key_usage: Vec<&'static str>,
    /// `ENABLED` or `DISABLED`.
    pub key_status: &'static str,
}

/// Encrypt's answer; every binary field standard Base64.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptResponse {
    /// As long as the plaintext.
    pub ciphertext: String,
    /// Format and key version.
    pub ciphertext_metadata: String,
    /// The 16-byte seed.
    pub initialization_vector: String,
    /// The 16-byte tag.
    pub authentication_tag: String,
    /// SHA-256 CDIV, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ciphertext_data_integrity_value: Option<String>,
}

/// One `ekmFleetDetails` entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FleetEntry {
    /// The node.
    pub id: String,
    /// Its software.
    pub model: String,
    /// `ACTIVE`, `DEGRADED` or `UNAVAILABLE`.
    pub health_status: &'static str,
}

/// GetHealthStatus's answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    /// How many hyok-xks instances serve this endpoint.
    pub xks_proxy_fleet_size: u32,
    /// `hyok`.
    pub xks_proxy_vendor: &'static str,
    /// `hyok-xks <version>`.
    pub xks_proxy_model: String,
    /// `hyok`.
    pub ekm_vendor: &'static str,
    /// One entry per node (at most ten).
    pub ekm_fleet_details: Vec<FleetEntry>,
}

/// Decrypt's answer, `{"plaintext":"…"}`, built without an intermediate copy that would
/// outlive the zeroizing buffers.
pub fn decrypt_body(plaintext: &[u8]) -> Zeroizing<Vec<u8>> {
    let encoded = Zeroizing::new(STANDARD.encode(plaintext));
    let mut body = Zeroizing::new(Vec::with_capacity(encoded.len() + 16));
    body.extend_from_slice(b"{\"plaintext\":\"");
    body.extend_from_slice(encoded.as_bytes());
    body.extend_from_slice(b"\"}");
    body
}

/// Standard Base64.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_plaintext: 4300, max_aad: 8192 };

    fn metadata(json: &str, api: Api) -> Result<RequestMetadata, XksError> {
        let body: MetadataOnly = parse(json.as_bytes())?;
        RequestMetadata::check(body.request_metadata, api)
    }

    #[test]
    fn request_metadata_needs_the_fields_of_its_api() {
        let health = r#"{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"r1"}}"#;
        assert_eq!(metadata(health, Api::GetHealthStatus).unwrap().request_id, "r1");
        assert!(matches!(metadata(health, Api::GetKeyMetadata), Err(XksError::Validation(_))));
        for bad in ["{}", r#"{"requestMetadata":{}}"#, r#"{"requestMetadata":{"kmsOperation":"x"}}"#, "[]", "", "{"] {
            assert!(matches!(metadata(bad, Api::GetHealthStatus), Err(XksError::Validation(_))), "{bad}");
        }
        let key = r#"{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::1:user/A","kmsOperation":"DescribeKey",
            "kmsRequestId":"r","someFutureField":{"nested":[1,2]}},"alsoUnknown":true}"#;
        let checked = metadata(key, Api::GetKeyMetadata).unwrap();
        assert_eq!(checked.principal.as_deref(), Some("arn:aws:iam::1:user/A"));
        assert!(matches!(metadata(key, Api::Encrypt), Err(XksError::Validation(_))), "kmsKeyArn is required");
        let long = key.replace("arn:aws:iam::1:user/A", &"a".repeat(MAX_ARN + 1));
        assert!(matches!(metadata(&long, Api::GetKeyMetadata), Err(XksError::Validation(_))));
        let max = key.replace("arn:aws:iam::1:user/A", &"a".repeat(MAX_ARN));
        assert!(metadata(&max, Api::GetKeyMetadata).is_ok());
    }

    #[test]
    fn unknown_kms_operations_are_accepted() {
        let json = r#"{"requestMetadata":{"awsPrincipalArn":"p","kmsOperation":"BulkEncrypt2031","kmsRequestId":"not-a-uuid"}}"#;
        assert_eq!(metadata(json, Api::GetKeyMetadata).unwrap().operation, "BulkEncrypt2031");
    }

    fn encrypt(json: serde_json::Value) -> Result<EncryptRequest, XksError> {
        parse::<EncryptJson>(json.to_string().as_bytes())?.check(LIMITS)
    }

    #[test]
    fn encrypt_fields_are_checked() {
        let ok = encrypt(serde_json::json!({"plaintext": "SGVsbG8=", "encryptionAlgorithm": "AES_GCM",
            "additionalAuthenticatedData": "YWFk", "ciphertextDataIntegrityValueAlgorithm": "SHA_256"}))
        .unwrap();
        assert_eq!(&ok.plaintext[..], b"Hello");
        assert_eq!(ok.aad, b"aad");
        assert!(ok.cdiv);
        let missing = encrypt(serde_json::json!({"encryptionAlgorithm": "AES_GCM"}));
        assert!(matches!(missing, Err(XksError::Validation(_))));
        let url_safe = encrypt(serde_json::json!({"plaintext": "-_8=", "encryptionAlgorithm": "AES_GCM"}));
        assert!(matches!(url_safe, Err(XksError::Validation(_))));
        let alg = encrypt(serde_json::json!({"plaintext": "AA==", "encryptionAlgorithm": "AES_CBC"}));
        assert!(matches!(alg, Err(XksError::UnsupportedOperation(_))));
        let cdiv = encrypt(serde_json::json!({"plaintext": "AA==", "encryptionAlgorithm": "AES_GCM",
            "ciphertextDataIntegrityValueAlgorithm": "MD5"}));
        assert!(matches!(cdiv, Err(XksError::UnsupportedOperation(_))));
    }

    #[test]
    fn sizes_up_to_the_limits_pass_and_beyond_are_unsupported() {
        let at = |p: usize, a: usize| {
            encrypt(serde_json::json!({"plaintext": b64(&vec![7; p]), "encryptionAlgorithm": "AES_GCM",
                "additionalAuthenticatedData": b64(&vec![9; a])}))
        };
        assert_eq!(at(4300, 8192).unwrap().plaintext.len(), 4300);
        assert!(matches!(at(4301, 0), Err(XksError::UnsupportedOperation(_))));
        assert!(matches!(at(0, 8193), Err(XksError::UnsupportedOperation(_))));
    }

    #[test]
    fn decrypt_fields_are_checked() {
        let json = serde_json::json!({"ciphertext": "AAEC", "initializationVector": b64(&[1; 16]),
            "authenticationTag": b64(&[2; 16]), "ciphertextMetadata": b64(&[1, 0, 0, 0, 1]),
            "encryptionAlgorithm": "AES_GCM"});
        let ok = parse::<DecryptJson>(json.to_string().as_bytes()).unwrap().check(LIMITS).unwrap();
        assert_eq!(ok.ciphertext, vec![0, 1, 2]);
        assert_eq!(ok.metadata, vec![1, 0, 0, 0, 1]);
        assert!(ok.aad.is_empty());
        for missing in ["ciphertext", "initializationVector", "authenticationTag", "encryptionAlgorithm"] {
            let mut partial = json.clone();
            partial.as_object_mut().unwrap().remove(missing);
            let result = parse::<DecryptJson>(partial.to_string().as_bytes()).unwrap().check(LIMITS);
            assert!(matches!(result, Err(XksError::Validation(_))), "{missing}");
        }
        let mut long_iv = json.clone();
        long_iv["initializationVector"] = b64(&[0; 65]).into();
        let result = parse::<DecryptJson>(long_iv.to_string().as_bytes()).unwrap().check(LIMITS);
        assert!(matches!(result, Err(XksError::InvalidCiphertext(_))));
        let mut long_md = json.clone();
        long_md["ciphertextMetadata"] = b64(&[0; 21]).into();
        let result = parse::<DecryptJson>(long_md.to_string().as_bytes()).unwrap().check(LIMITS);
        assert!(matches!(result, Err(XksError::InvalidCiphertext(_))));
    }

    #[test]
    fn decrypt_body_is_the_one_field_json() {
        let body = decrypt_body(b"Hello World!");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value, serde_json::json!({"plaintext": "SGVsbG8gV29ybGQh"}));
    }

    #[test]
    fn an_encrypt_request_never_prints_its_plaintext() {
        let request =
            EncryptRequest { plaintext: Zeroizing::new(b"attack at dawn".to_vec()), aad: b"x".to_vec(), cdiv: false };
        let printed = format!("{request:?}");
        assert!(!printed.contains("attack") && !printed.contains("97, 116"), "{printed}");
        assert!(printed.contains("14 bytes redacted"), "{printed}");
    }
}
