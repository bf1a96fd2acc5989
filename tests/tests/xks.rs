//! End-to-end tests of hyok-xks, the AWS KMS External Key Store proxy, over the real binaries:
//! `hyokctl dev` starts a 3-of-5 cluster and hyok-xks in front of it; these tests call hyok-xks
//! as KMS does (SigV4-signed JSON over HTTPS) and check status codes, `errorName`s and the
//! bytes that come back — what the AWS conformance client never checks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{Method, StatusCode, header};
use http_body_util::Full;
use hyok_e2e::{Cluster, Served, eventually};
use hyok_frontend::ConfigFile as _;
use hyok_proto::v1 as pb;
use hyok_xks::client::{self, Answer, Connection, Target};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The dev hyok-xks's size limits (`max_plaintext`, `max_aad`), from its configuration file,
/// checked against the spec's minima (4300 and 8192 bytes).
fn limits(cluster: &Cluster) -> (usize, usize) {
    let config = hyok_xks::Config::load(&cluster.dev.xks.as_ref().expect("an xks section").config).unwrap();
    assert!(config.max_plaintext >= 4300 && config.max_aad >= 8192, "below the spec's minima");
    (config.max_plaintext, config.max_aad)
}

/// How long to wait for something that happens in the background (health refreshes, restarts).
const PATIENCE: Duration = Duration::from_secs(60);

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(value: &Value) -> Vec<u8> {
    STANDARD.decode(value.as_str().unwrap_or_else(|| panic!("{value} is not a string"))).expect("standard Base64")
}

/// `n` bytes that are not all alike.
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed.wrapping_mul(40_503)) >> 13) as u8).collect()
}

fn flip_first(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[0] ^= 0x01;
    out
}

fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    *out.last_mut().expect("not empty") ^= 0x80;
    out
}

fn request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("e2e-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `requestMetadata` as KMS fills it for `operation`.
fn metadata(operation: &str) -> Value {
    client::request_metadata(operation, &request_id())
}

/// A GetHealthStatus body as KMS sends it (no principal, no key ARN).
fn health_request() -> Value {
    json!({"requestMetadata": {"kmsRequestId": request_id(), "kmsOperation": "KmsHealthCheck"}})
}

fn encrypt_request(plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Value {
    let mut body = json!({
        "requestMetadata": metadata("Encrypt"),
        "plaintext": b64(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    });
    if let Some(aad) = aad {
        body["additionalAuthenticatedData"] = b64(aad).into();
    }
    if cdiv {
        body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256".into();
    }
    body
}

fn metadata_path(key: &str) -> String {
    format!("/keys/{key}/metadata")
}

fn encrypt_path(key: &str) -> String {
    format!("/keys/{key}/encrypt")
}

fn decrypt_path(key: &str) -> String {
    format!("/keys/{key}/decrypt")
}

const HEALTH_PATH: &str = "/health";

/// The dev key store's external key id for `role` (`encrypt_decrypt`, `encrypt_only`, …).
fn external_key(cluster: &Cluster, role: &str) -> String {
    let xks = cluster.dev.xks.as_ref().expect("dev.json has an xks section");
    xks.keys.get(role).unwrap_or_else(|| panic!("dev.json names no {role} key")).clone()
}

/// The hyok key behind the dev key store's `role` key.
fn hyok_key(role: &str) -> &'static str {
    hyok_cli::xks::DEV_KEYS.iter().find(|k| k.role == role).expect("a dev key of that role").key_id
}

/// An encryption hyok-xks returned, with the AAD it was made under.
#[derive(Debug, Clone)]
struct Sealed {
    ciphertext: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    metadata: Vec<u8>,
    aad: Option<Vec<u8>>,
}

impl Sealed {
    /// The Decrypt body KMS would send for it.
    fn decrypt_request(&self) -> Value {
        let mut body = json!({
            "requestMetadata": metadata("Decrypt"),
            "ciphertext": b64(&self.ciphertext),
            "ciphertextMetadata": b64(&self.metadata),
            "encryptionAlgorithm": "AES_GCM",
            "initializationVector": b64(&self.iv),
            "authenticationTag": b64(&self.tag),
        });
        if let Some(aad) = &self.aad {
            body["additionalAuthenticatedData"] = b64(aad).into();
        }
        body
    }
}

/// Asserts an XKS error answer: its HTTP status and `errorName`.
#[track_caller]
fn assert_error(answer: &Answer, status: StatusCode, name: &str, what: &str) {
    assert_eq!(
        (answer.status, answer.json["errorName"].as_str()),
        (status, Some(name)),
        "{what}: got {}",
        String::from_utf8_lossy(&answer.body)
    );
}

/// Asserts a 200 answer.
#[track_caller]
fn assert_ok(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{what}: got {}", String::from_utf8_lossy(&answer.body));
}

/// A caller of one hyok-xks, as KMS.
#[derive(Debug, Clone)]
struct Kms {
    conn: Connection,
    target: Target,
}

impl Kms {
    async fn connect(target: &Target, ca: &Path, h2: bool) -> Kms {
        let conn = client::connect(&target.base_url, ca, h2, None).await.expect("connecting to hyok-xks");
        Kms { conn, target: target.clone() }
    }

    /// The dev cluster's hyok-xks over HTTP/2.
    async fn dev(cluster: &Cluster) -> Kms {
        let (target, ca) = cluster.xks().unwrap();
        Kms::connect(&target, &ca, true).await
    }

    /// POSTs a signed `body` and checks that the answer, whatever it is, is one line of JSON.
    async fn post(&self, api_path: &str, body: &Value) -> Answer {
        self.post_as(&self.target, api_path, body).await
    }

    /// [`Kms::post`] signed as `target` says (another secret, region or prefix).
    async fn post_as(&self, target: &Target, api_path: &str, body: &Value) -> Answer {
        let answer =
            self.conn.post_signed(target, api_path, body.to_string().as_bytes(), SystemTime::now()).await.unwrap();
        assert_one_line_json(&answer);
        answer
    }

    /// Sends a hand-made request; checks nothing.
    async fn send(&self, request: http::Request<Full<Bytes>>) -> Answer {
        self.conn.send(request).await.unwrap()
    }

    /// Encrypts and checks the answer's shape: ciphertext exactly as long as the plaintext, a
    /// 16-byte IV and tag, metadata of at most 20 bytes, and a CDIV (iff asked for) equal to
    /// Base64(SHA-256(aad ‖ metadata ‖ iv ‖ ciphertext ‖ tag)).
    async fn encrypt(&self, key: &str, plaintext: &[u8], aad: Option<&[u8]>, cdiv: bool) -> Sealed {
        let what = format!("encrypt {} bytes, aad {:?} bytes, cdiv {cdiv}", plaintext.len(), aad.map(<[u8]>::len));
        let answer = self.post(&encrypt_path(key), &encrypt_request(plaintext, aad, cdiv)).await;
        assert_ok(&answer, &what);
        let sealed = Sealed {
            ciphertext: unb64(&answer.json["ciphertext"]),
            iv: unb64(&answer.json["initializationVector"]),
            tag: unb64(&answer.json["authenticationTag"]),
            metadata: unb64(&answer.json["ciphertextMetadata"]),
            aad: aad.map(<[u8]>::to_vec),
        };
        assert_eq!(sealed.ciphertext.len(), plaintext.len(), "{what}: ciphertext length");
        assert_eq!(sealed.iv.len(), 16, "{what}: IV length");
        assert_eq!(sealed.tag.len(), 16, "{what}: tag length");
        assert!(!sealed.metadata.is_empty() && sealed.metadata.len() <= 20, "{what}: metadata {:?}", sealed.metadata);
        if plaintext.len() >= 16 {
            assert_ne!(sealed.ciphertext, plaintext, "{what}: the ciphertext is not the plaintext");
        }
        let cdiv_value = &answer.json["ciphertextDataIntegrityValue"];
        if cdiv {
            let mut hash = Sha256::new();
            for part in [aad.unwrap_or_default(), &sealed.metadata, &sealed.iv, &sealed.ciphertext, &sealed.tag] {
                hash.update(part);
            }
            assert_eq!(cdiv_value.as_str(), Some(b64(&hash.finalize()).as_str()), "{what}: CDIV");
        } else {
            assert!(cdiv_value.is_null(), "{what}: a CDIV that was not asked for: {cdiv_value}");
        }
        sealed
    }

    /// Decrypts, expecting success; returns the plaintext.
    async fn decrypt(&self, key: &str, sealed: &Sealed) -> Vec<u8> {
        let answer = self.post(&decrypt_path(key), &sealed.decrypt_request()).await;
        assert_ok(&answer, "decrypt");
        let plaintext = unb64(&answer.json["plaintext"]);
        assert_eq!(plaintext.len(), sealed.ciphertext.len(), "plaintext as long as the ciphertext");
        plaintext
    }

    async fn key_metadata(&self, key: &str) -> Answer {
        self.post(&metadata_path(key), &json!({"requestMetadata": metadata("DescribeKey")})).await
    }

    async fn health(&self) -> Answer {
        self.post(HEALTH_PATH, &health_request()).await
    }

    /// A signed request for `api_path`, to alter before sending.
    fn signed(&self, api_path: &str, body: &Value, now: SystemTime) -> http::Request<Full<Bytes>> {
        client::signed_request(&self.target, api_path, body.to_string().as_bytes(), now).unwrap()
    }

    /// `GET https://host:port{path}`, unsigned.
    fn get(&self, path: &str) -> http::Request<Full<Bytes>> {
        let (host, port, _) = client::split_url(&self.target.base_url).unwrap();
        let authority = format!("{host}:{port}");
        http::Request::builder()
            .method(Method::GET)
            .uri(format!("https://{authority}{path}"))
            .header(header::HOST, &authority)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

#[track_caller]
fn assert_one_line_json(answer: &Answer) {
    assert!(
        answer.json.is_object() && !answer.body.contains(&b'\n') && !answer.body.contains(&b'\r'),
        "every XKS answer is one line of JSON (status {}): {:?}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
}

/// `ekmFleetDetails` as (id, healthStatus) pairs, after checking the rest of the health answer.
#[track_caller]
fn fleet(answer: &Answer) -> Vec<(String, String)> {
    assert_ok(answer, "GetHealthStatus");
    let size = answer.json["xksProxyFleetSize"].as_u64().unwrap_or_default();
    assert!(size >= 1, "xksProxyFleetSize: {}", answer.json);
    for field in ["xksProxyVendor", "xksProxyModel", "ekmVendor"] {
        assert!(answer.json[field].as_str().is_some_and(|s| !s.is_empty()), "{field}: {}", answer.json);
    }
    let entries = answer.json["ekmFleetDetails"].as_array().expect("ekmFleetDetails");
    assert!((1..=10).contains(&entries.len()), "1–10 ekmFleetDetails: {}", answer.json);
    entries
        .iter()
        .map(|e| {
            assert!(e["model"].as_str().is_some_and(|m| !m.is_empty()), "model: {e}");
            (e["id"].as_str().unwrap_or_default().to_owned(), e["healthStatus"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

/// Polls GetHealthStatus until `wanted` holds for its fleet.
async fn wait_for_fleet(kms: &Kms, what: &str, wanted: impl Fn(&[(String, String)]) -> bool) -> Vec<(String, String)> {
    let wanted = &wanted;
    eventually(PATIENCE, || async move {
        let answer = kms.health().await;
        let entries = fleet(&answer);
        anyhow::ensure!(wanted(&entries), "{what}: {entries:?}");
        Ok(entries)
    })
    .await
    .unwrap()
}

fn node_name(id: u16) -> String {
    format!("hyok-node-{id}")
}

#[tokio::test(flavor = "multi_thread")]
async fn xks_round_trips_exact_lengths_and_refuses_tampered_or_malformed_input() {
    let cluster = Cluster::start(5, 3).unwrap();
    let kms = Kms::dev(&cluster).await;
    let key = external_key(&cluster, "encrypt_decrypt");
    let (max_plaintext, max_aad) = limits(&cluster);
    assert_eq!(max_plaintext, 8192, "the dev configuration takes the default");

    // Round trips: the ORIGINAL bytes come back, with and without AAD and CDIV.
    let big_aad = pattern(8192, 2);
    for size in [0, 1, 32, 4300, max_plaintext] {
        let plaintext = pattern(size, size as u32);
        for (aad, cdiv) in [(None, false), (Some(&big_aad[..]), true), (Some(&b"ctx"[..]), false)] {
            let sealed = kms.encrypt(&key, &plaintext, aad, cdiv).await;
            assert_eq!(kms.decrypt(&key, &sealed).await, plaintext, "size {size}, aad {:?}", aad.map(<[u8]>::len));
        }
    }
    let largest_aad = pattern(max_aad, 9);
    let sealed = kms.encrypt(&key, b"largest aad", Some(&largest_aad), true).await;
    assert_eq!(kms.decrypt(&key, &sealed).await, b"largest aad");
    let again = kms.encrypt(&key, b"largest aad", Some(&largest_aad), true).await;
    assert_ne!(again.iv, sealed.iv, "every encryption has a fresh IV");

    // Tampering with any part of an encryption: 400 InvalidCiphertextException.
    let plaintext = pattern(32, 77);
    let aad = b"tenant=acme,purpose=e2e".to_vec();
    let sealed = kms.encrypt(&key, &plaintext, Some(&aad), true).await;
    let with = |change: &dyn Fn(&mut Sealed)| {
        let mut copy = sealed.clone();
        change(&mut copy);
        copy.decrypt_request()
    };
    let mut moved = aad.clone();
    moved.extend_from_slice(&sealed.metadata);
    let mut longer_metadata = sealed.metadata.clone();
    longer_metadata.push(0);
    let mut next_version = sealed.metadata.clone();
    *next_version.last_mut().unwrap() = next_version.last().unwrap().wrapping_add(1);
    let cases: Vec<(&str, Value)> = vec![
        ("ciphertext, first byte changed", with(&|s| s.ciphertext = flip_first(&s.ciphertext))),
        ("ciphertext, last byte changed", with(&|s| s.ciphertext = flip_last(&s.ciphertext))),
        ("ciphertext truncated", with(&|s| s.ciphertext.truncate(31))),
        ("IV changed", with(&|s| s.iv = flip_first(&s.iv))),
        ("IV of 12 bytes", with(&|s| s.iv.truncate(12))),
        ("tag changed", with(&|s| s.tag = flip_last(&s.tag))),
        ("tag of 12 bytes", with(&|s| s.tag.truncate(12))),
        ("AAD changed", with(&|s| s.aad = Some(flip_first(&aad)))),
        ("AAD missing", with(&|s| s.aad = None)),
        ("AAD empty", with(&|s| s.aad = Some(Vec::new()))),
        ("metadata format byte changed", with(&|s| s.metadata = flip_first(&s.metadata))),
        ("metadata key version changed", with(&|s| s.metadata.clone_from(&next_version))),
        ("metadata lengthened", with(&|s| s.metadata.clone_from(&longer_metadata))),
        ("metadata missing", {
            let mut body = sealed.decrypt_request();
            body.as_object_mut().unwrap().remove("ciphertextMetadata");
            body
        }),
        ("metadata moved into the AAD", {
            let mut body = with(&|s| s.aad = Some(moved.clone()));
            body.as_object_mut().unwrap().remove("ciphertextMetadata");
            body
        }),
        ("metadata copied into the AAD as well", with(&|s| s.aad = Some(moved.clone()))),
    ];
    for (what, body) in &cases {
        let answer = kms.post(&decrypt_path(&key), body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidCiphertextException", what);
    }
    assert_eq!(kms.decrypt(&key, &sealed).await, plaintext, "the untouched encryption still decrypts");

    // Larger than supported: 501 UnsupportedOperationException.
    let answer = kms.post(&encrypt_path(&key), &encrypt_request(&pattern(max_plaintext + 1, 1), None, false)).await;
    assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException", "plaintext of max + 1");
    let answer = kms.post(&encrypt_path(&key), &encrypt_request(b"x", Some(&pattern(max_aad + 1, 1)), false)).await;
    assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException", "AAD of max + 1");
    let mut oversized = sealed.decrypt_request();
    oversized["ciphertext"] = b64(&pattern(max_plaintext + 1, 1)).into();
    let answer = kms.post(&decrypt_path(&key), &oversized).await;
    assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException", "ciphertext of max + 1");
    let mut cbc = encrypt_request(b"x", None, false);
    cbc["encryptionAlgorithm"] = "AES_CBC".into();
    let answer = kms.post(&encrypt_path(&key), &cbc).await;
    assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "UnsupportedOperationException", "encryptionAlgorithm AES_CBC");

    // Malformed input: 400 ValidationException.
    let mut encrypt_cases: Vec<(&str, Value)> = Vec::new();
    for (what, field, value) in [
        ("plaintext not Base64", "plaintext", "not base64!"),
        ("plaintext URL-safe Base64", "plaintext", "-_8="),
        ("plaintext Base64 without padding", "plaintext", "SGVsbG8"),
        ("AAD not Base64", "additionalAuthenticatedData", "a b c"),
    ] {
        let mut body = encrypt_request(b"Hello", None, false);
        body[field] = value.into();
        encrypt_cases.push((what, body));
    }
    for (what, field) in [("plaintext missing", "plaintext"), ("encryptionAlgorithm missing", "encryptionAlgorithm")] {
        let mut body = encrypt_request(b"Hello", None, false);
        body.as_object_mut().unwrap().remove(field);
        encrypt_cases.push((what, body));
    }
    for (what, field) in [
        ("kmsKeyArn missing", "kmsKeyArn"),
        ("awsPrincipalArn missing", "awsPrincipalArn"),
        ("kmsRequestId missing", "kmsRequestId"),
        ("kmsOperation missing", "kmsOperation"),
    ] {
        let mut body = encrypt_request(b"Hello", None, false);
        body["requestMetadata"].as_object_mut().unwrap().remove(field);
        encrypt_cases.push((what, body));
    }
    encrypt_cases.push(("a JSON array", json!([1, 2])));
    encrypt_cases.push(("plaintext a number", {
        let mut body = encrypt_request(b"Hello", None, false);
        body["plaintext"] = 7.into();
        body
    }));
    for (what, body) in &encrypt_cases {
        let answer = kms.post(&encrypt_path(&key), body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "ValidationException", what);
    }
    for field in ["ciphertext", "initializationVector", "authenticationTag", "encryptionAlgorithm"] {
        let mut missing = sealed.decrypt_request();
        missing.as_object_mut().unwrap().remove(field);
        let answer = kms.post(&decrypt_path(&key), &missing).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "ValidationException", &format!("decrypt without {field}"));
        if field != "encryptionAlgorithm" {
            let mut garbled = sealed.decrypt_request();
            garbled[field] = "*not*base64*".into();
            let answer = kms.post(&decrypt_path(&key), &garbled).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "ValidationException", &format!("{field} not Base64"));
        }
    }
    let not_json = kms.conn.post_signed(&kms.target, &encrypt_path(&key), b"plaintext=AA==", SystemTime::now()).await;
    let not_json = not_json.unwrap();
    assert_one_line_json(&not_json);
    assert_error(&not_json, StatusCode::BAD_REQUEST, "ValidationException", "a body that is not JSON");

    // `{}` and an empty requestMetadata, on every API: ValidationException.
    for path in [metadata_path(&key), encrypt_path(&key), decrypt_path(&key), HEALTH_PATH.to_owned()] {
        for body in [json!({}), json!({"requestMetadata": {}})] {
            let answer = kms.post(&path, &body).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "ValidationException", &format!("{body} to {path}"));
        }
    }

    // Unknown fields and an unknown kmsOperation are accepted on every API.
    let future = |mut body: Value| {
        body["someFutureField"] = json!({"nested": [1, 2, 3]});
        body["requestMetadata"]["kmsOperation"] = "SomeFutureOperation".into();
        body["requestMetadata"]["someFutureMetadata"] = "x".into();
        body["requestMetadata"]["awsSourceVpc"] = "vpc-0123456789abcdef0".into();
        body
    };
    let answer = kms.post(&encrypt_path(&key), &future(encrypt_request(b"future", Some(b"a"), true))).await;
    assert_ok(&answer, "encrypt with unknown fields");
    let future_sealed = Sealed {
        ciphertext: unb64(&answer.json["ciphertext"]),
        iv: unb64(&answer.json["initializationVector"]),
        tag: unb64(&answer.json["authenticationTag"]),
        metadata: unb64(&answer.json["ciphertextMetadata"]),
        aad: Some(b"a".to_vec()),
    };
    let answer = kms.post(&decrypt_path(&key), &future(future_sealed.decrypt_request())).await;
    assert_ok(&answer, "decrypt with unknown fields");
    assert_eq!(unb64(&answer.json["plaintext"]), b"future");
    let answer = kms.post(&metadata_path(&key), &future(json!({"requestMetadata": metadata("DescribeKey")}))).await;
    assert_ok(&answer, "metadata with unknown fields");
    let answer = kms.post(HEALTH_PATH, &future(health_request())).await;
    assert_ok(&answer, "health with unknown fields");
}

#[tokio::test(flavor = "multi_thread")]
async fn xks_protocol_edges_authentication_key_usage_key_state_and_health_answer_as_the_spec_says() {
    let cluster = Cluster::start(5, 3).unwrap();
    let (target, ca) = cluster.xks().unwrap();
    let kms = Kms::connect(&target, &ca, true).await;
    let key = external_key(&cluster, "encrypt_decrypt");
    let encrypt_only = external_key(&cluster, "encrypt_only");
    let decrypt_only = external_key(&cluster, "decrypt_only");
    let impotent = external_key(&cluster, "impotent");

    // Health first: the first background refresh shows all five nodes ACTIVE.
    let entries =
        wait_for_fleet(&kms, "every node ACTIVE", |f| f.len() == 5 && f.iter().all(|(_, s)| s == "ACTIVE")).await;
    let mut ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one entry per node: {entries:?}");

    // Every API is POST only: GET → 405.
    let apis = [metadata_path(&key), encrypt_path(&key), decrypt_path(&key), HEALTH_PATH.to_owned()];
    for path in &apis {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let mut request = kms.signed(path, &json!({"requestMetadata": metadata("DescribeKey")}), SystemTime::now());
            *request.method_mut() = method.clone();
            let answer = kms.send(request).await;
            assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }

    // Unknown paths: 404 InvalidUriPathException; unknown key: 404 KeyNotFoundException.
    let elsewhere = Target { base_url: target.base_url.replace("/dev/xks/", "/dev/elsewhere/"), ..target.clone() };
    assert_ne!(elsewhere.base_url, target.base_url);
    for path in &apis {
        let answer = kms.post_as(&elsewhere, path, &encrypt_request(b"x", None, false)).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "InvalidUriPathException", &format!("unknown prefix, {path}"));
    }
    for path in [format!("/keys/{key}/sign"), "/keys//encrypt".to_owned(), "/healthz".to_owned()] {
        let answer = kms.post(&path, &encrypt_request(b"x", None, false)).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "InvalidUriPathException", &path);
    }
    let sealed = kms.encrypt(&key, b"for the unknown key", None, false).await;
    for (path, body) in [
        (metadata_path("no-such-key"), json!({"requestMetadata": metadata("DescribeKey")})),
        (encrypt_path("no-such-key"), encrypt_request(b"x", None, false)),
        (decrypt_path("no-such-key"), sealed.decrypt_request()),
    ] {
        let answer = kms.post(&path, &body).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "KeyNotFoundException", &path);
    }

    // Authentication: every failure is the same 401, saying nothing of what failed.
    let body = encrypt_request(b"authenticated", None, false);
    let path = encrypt_path(&key);
    let bytes = body.to_string();
    let now = SystemTime::now();
    let answer = kms.conn.post_signed(&target, &path, bytes.as_bytes(), now).await.unwrap();
    assert_ok(&answer, "a correctly signed request (the control)");
    let mut wrong_secret = target.clone();
    wrong_secret.secret = flip_secret(&target.secret);
    let mut unknown_akid = target.clone();
    unknown_akid.access_key_id = other_access_key(&target.access_key_id);
    let mut wrong_region = target.clone();
    wrong_region.region = "eu-west-1".into();
    let six_minutes = Duration::from_secs(6 * 60);
    let mut failures: Vec<(&str, http::Request<Full<Bytes>>)> = vec![
        ("wrong secret", client::signed_request(&wrong_secret, &path, bytes.as_bytes(), now).unwrap()),
        ("unknown access key", client::signed_request(&unknown_akid, &path, bytes.as_bytes(), now).unwrap()),
        ("wrong region", client::signed_request(&wrong_region, &path, bytes.as_bytes(), now).unwrap()),
        ("signed 6 minutes ago", kms.signed(&path, &body, now - six_minutes)),
        ("signed 6 minutes ahead", kms.signed(&path, &body, now + six_minutes)),
    ];
    let mut changed = kms.signed(&path, &body, now);
    *changed.body_mut() = Full::new(Bytes::from(encrypt_request(b"changed after signing", None, false).to_string()));
    failures.push(("body changed after signing", changed));
    let mut unsigned = kms.signed(&path, &body, now);
    unsigned.headers_mut().remove(header::AUTHORIZATION);
    failures.push(("no Authorization header", unsigned));
    let mut resigned_date = kms.signed(&path, &body, now);
    let later = kms.signed(&path, &body, now + Duration::from_secs(2));
    resigned_date.headers_mut().insert("x-amz-date", later.headers()["x-amz-date"].clone());
    failures.push(("x-amz-date changed after signing", resigned_date));
    let mut messages = Vec::new();
    for (what, request) in failures {
        let answer = kms.send(request).await;
        assert_one_line_json(&answer);
        assert_error(&answer, StatusCode::UNAUTHORIZED, "AuthenticationFailedException", what);
        messages.push(answer.json["errorMessage"].clone());
    }
    assert!(messages.iter().all(|m| *m == messages[0]), "one message for every failure: {messages:?}");
    let message = messages[0].as_str().unwrap_or_default().to_ascii_lowercase();
    for telltale in ["secret", "stale", "signature", "region", "access", "date", "body", "hash", "expired", "scope"] {
        assert!(!message.contains(telltale), "the message says which part failed ({telltale}): {message}");
    }

    // Authentication comes before the key lookup (no probing for key names) …
    let answer = kms.post_as(&wrong_secret, &encrypt_path("no-such-key"), &body).await;
    assert_error(&answer, StatusCode::UNAUTHORIZED, "AuthenticationFailedException", "wrong secret, unknown key");
    // … and a clock 4 minutes off is within the 5 allowed.
    for skew in [now - Duration::from_secs(4 * 60), now + Duration::from_secs(4 * 60)] {
        let answer = kms.send(kms.signed(&path, &body, skew)).await;
        assert_ok(&answer, "signed 4 minutes off");
    }

    // The load balancer's ping, unauthenticated.
    let answer = kms.send(kms.get("/ping")).await;
    assert_eq!(answer.status, StatusCode::OK, "GET /ping");
    let mut head = kms.get("/ping");
    *head.method_mut() = Method::HEAD;
    let answer = kms.send(head).await;
    assert_eq!(answer.status, StatusCode::OK, "HEAD /ping over HTTP/2");
    assert!(answer.body.is_empty(), "HEAD /ping has no body");

    // GetKeyMetadata for each kind of key.
    for (external, usage) in [
        (&key, json!(["ENCRYPT", "DECRYPT"])),
        (&encrypt_only, json!(["ENCRYPT"])),
        (&decrypt_only, json!(["DECRYPT"])),
        (&impotent, json!([])),
    ] {
        let answer = kms.key_metadata(external).await;
        assert_ok(&answer, &format!("metadata of {external}"));
        assert_eq!(answer.json, json!({"keySpec": "AES_256", "keyUsage": usage, "keyStatus": "ENABLED"}), "{external}");
    }

    // Key usage: 400 InvalidKeyUsageException.
    let only_sealed = kms.encrypt(&encrypt_only, b"encrypt only", Some(b"ctx"), false).await;
    for (what, path, body) in [
        ("encrypt-only key, decrypt", decrypt_path(&encrypt_only), only_sealed.decrypt_request()),
        ("encrypt-only key, encrypt with CDIV", encrypt_path(&encrypt_only), encrypt_request(b"x", None, true)),
        ("decrypt-only key, encrypt", encrypt_path(&decrypt_only), encrypt_request(b"x", None, false)),
        ("impotent key, encrypt", encrypt_path(&impotent), encrypt_request(b"x", None, false)),
        ("impotent key, decrypt", decrypt_path(&impotent), only_sealed.decrypt_request()),
    ] {
        let answer = kms.post(&path, &body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidKeyUsageException", what);
    }
    // The decrypt-only key may decrypt; a ciphertext of another key does not authenticate under it.
    let answer = kms.post(&decrypt_path(&decrypt_only), &only_sealed.decrypt_request()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidCiphertextException", "another key's ciphertext");
    // Nor under the encrypt-decrypt key.
    let answer = kms.post(&decrypt_path(&key), &only_sealed.decrypt_request()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidCiphertextException", "another key's ciphertext");

    // HTTP/1.1 works as well as HTTP/2, on the same keys.
    let h1 = Kms::connect(&target, &ca, false).await;
    assert!(!h1.conn.is_h2());
    assert!(kms.conn.is_h2());
    let answer = h1.key_metadata(&key).await;
    assert_eq!(answer.json["keyStatus"], "ENABLED");
    let over_h1 = h1.encrypt(&key, b"over HTTP/1.1", Some(b"h1"), true).await;
    assert_eq!(kms.decrypt(&key, &over_h1).await, b"over HTTP/1.1");
    assert_eq!(h1.decrypt(&key, &sealed).await, b"for the unknown key");
    assert_eq!(fleet(&h1.health().await).len(), 5);
    let mut get = h1.signed(&encrypt_path(&key), &json!({}), SystemTime::now());
    *get.method_mut() = Method::GET;
    assert_eq!(h1.send(get).await.status, StatusCode::METHOD_NOT_ALLOWED, "GET over HTTP/1.1");
    assert_eq!(h1.send(h1.get("/ping")).await.status, StatusCode::OK, "GET /ping over HTTP/1.1");
    let mut head = h1.get("/ping");
    *head.method_mut() = Method::HEAD;
    assert_eq!(h1.send(head).await.status, StatusCode::OK, "HEAD /ping over HTTP/1.1");
    for (what, request) in [
        ("wrong secret over HTTP/1.1", client::signed_request(&wrong_secret, &path, bytes.as_bytes(), now).unwrap()),
        ("stale over HTTP/1.1", h1.signed(&path, &body, now - six_minutes)),
    ] {
        let answer = h1.send(request).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "AuthenticationFailedException", what);
        assert_eq!(answer.json["errorMessage"], messages[0], "{what}");
    }

    // Credential rotation without a restart: a second credential (`hyokctl xks credentials
    // --file`) works alongside the first; the first, once removed from the file, stops working.
    let dev = cluster.dev.xks.as_ref().unwrap();
    let file = hyok_xks::Config::load(&dev.config).unwrap().key_stores[0].credentials_file.clone();
    let output = std::process::Command::new(hyok_e2e::hyokctl())
        .args(["xks", "credentials", "--prefix", &dev.uri_prefix, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(output.status.success(), "hyokctl xks credentials: {}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(target.base_url.ends_with(printed["XksProxyUriPath"].as_str().unwrap()), "{printed}");
    let credential = &printed["XksProxyAuthenticationCredential"];
    let rotated = Target {
        access_key_id: credential["AccessKeyId"].as_str().unwrap().to_owned(),
        secret: credential["RawSecretAccessKey"].as_str().unwrap().to_owned(),
        ..target.clone()
    };
    assert_ne!(rotated.access_key_id, target.access_key_id);
    // The nodes verify the signature too: every node's operator installs the policy again, which
    // reads the credentials file anew.
    reinstall_policy(&cluster);
    let signed_as = |who: &Target| {
        let (kms, who) = (kms.clone(), who.clone());
        let path = encrypt_path(&key);
        async move { kms.post_as(&who, &path, &encrypt_request(b"rotation", None, false)).await }
    };
    eventually(PATIENCE, || async {
        let answer = signed_as(&rotated).await;
        anyhow::ensure!(answer.status == StatusCode::OK, "new credential not live yet: {}", answer.status);
        Ok(())
    })
    .await
    .unwrap();
    assert_ok(&signed_as(&target).await, "the old credential during the rotation");
    let kept: Vec<_> = hyok_xks::credentials::load_file(&file)
        .unwrap()
        .into_iter()
        .filter(|c| c.access_key_id != target.access_key_id)
        .collect();
    assert_eq!(kept.len(), 1);
    let tmp = file.with_extension("rotating");
    std::fs::write(&tmp, hyok_xks::credentials::to_file_text(&kept).as_bytes()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    reinstall_policy(&cluster);
    eventually(PATIENCE, || async {
        let answer = signed_as(&target).await;
        anyhow::ensure!(answer.status == StatusCode::UNAUTHORIZED, "old credential still live: {}", answer.status);
        assert_error(&answer, StatusCode::UNAUTHORIZED, "AuthenticationFailedException", "a removed credential");
        Ok(())
    })
    .await
    .unwrap();
    assert_ok(&signed_as(&rotated).await, "the new credential after the rotation");
    let kms = Kms { conn: kms.conn.clone(), target: rotated };

    // A disabled key: metadata says DISABLED, encrypt and decrypt are InvalidStateException;
    // enabled again, it works and an older ciphertext still decrypts.
    let before = kms.encrypt(&key, b"sealed before the key was disabled", Some(b"state"), true).await;
    let mut admin = cluster.client().await.unwrap();
    let key_id = hyok_key("encrypt_decrypt");
    let info = admin
        .disable_key(pb::DisableKeyRequest { key_id: key_id.into(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, pb::KeyState::Disabled as i32);
    let answer = kms.key_metadata(&key).await;
    assert_ok(&answer, "metadata of a disabled key");
    assert_eq!(answer.json, json!({"keySpec": "AES_256", "keyUsage": ["ENCRYPT", "DECRYPT"], "keyStatus": "DISABLED"}));
    for (what, path, body) in [
        ("encrypt", encrypt_path(&key), encrypt_request(b"x", None, false)),
        ("encrypt with CDIV", encrypt_path(&key), encrypt_request(b"x", Some(b"a"), true)),
        ("decrypt", decrypt_path(&key), before.decrypt_request()),
    ] {
        let answer = kms.post(&path, &body).await;
        assert_error(
            &answer,
            StatusCode::BAD_REQUEST,
            "InvalidStateException",
            &format!("{what} under a disabled key"),
        );
    }
    // The other keys are untouched.
    kms.encrypt(&encrypt_only, b"still fine", None, false).await;
    admin.enable_key(pb::EnableKeyRequest { key_id: key_id.into(), request_id: String::new() }).await.unwrap();
    assert_eq!(kms.key_metadata(&key).await.json["keyStatus"], "ENABLED");
    let after = kms.encrypt(&key, b"sealed after", None, true).await;
    assert_eq!(kms.decrypt(&key, &after).await, b"sealed after");
    assert_eq!(kms.decrypt(&key, &before).await, b"sealed before the key was disabled");

    // A rotated key: new encryptions name the new version in their metadata (even while the
    // old one is cached), and both old and new ciphertexts decrypt.
    let rotated = admin
        .rotate_key(pb::RotateKeyRequest { key_id: key_id.into(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.primary_version, 2);
    for i in 0..3u32 {
        let plaintext = pattern(40, i);
        let sealed = kms.encrypt(&key, &plaintext, Some(b"rotated"), i % 2 == 0).await;
        assert_eq!(sealed.metadata, [1, 0, 0, 0, 2], "the metadata names version 2");
        assert_eq!(kms.decrypt(&key, &sealed).await, plaintext);
    }
    assert_eq!(before.metadata, [1, 0, 0, 0, 1]);
    assert_eq!(kms.decrypt(&key, &before).await, b"sealed before the key was disabled");
    let mut relabelled = before.clone();
    relabelled.metadata = vec![1, 0, 0, 0, 2];
    let answer = kms.post(&decrypt_path(&key), &relabelled.decrypt_request()).await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "InvalidCiphertextException",
        "a version-1 ciphertext named version 2",
    );
    relabelled.metadata = vec![1, 0, 0, 0, 9];
    let answer = kms.post(&decrypt_path(&key), &relabelled.decrypt_request()).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "InvalidCiphertextException", "a version that does not exist");
}

/// `secret` with one character changed (still a valid-looking secret).
fn flip_secret(secret: &str) -> String {
    let mut chars: Vec<char> = secret.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// A well-formed access key id (`[A-Z2-7]`) that is not `akid`.
fn other_access_key(akid: &str) -> String {
    let mut chars: Vec<char> = akid.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'Q' { 'R' } else { 'Q' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn xks_rides_out_n_minus_t_lost_or_frozen_nodes_answers_503_never_200_beyond_and_recovers() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let kms = Kms::dev(&cluster).await;
    let key = external_key(&cluster, "encrypt_decrypt");
    wait_for_fleet(&kms, "every node ACTIVE", |f| f.len() == 5 && f.iter().all(|(_, s)| s == "ACTIVE")).await;

    let mut before = Vec::new();
    for i in 0..5u8 {
        let plaintext = pattern(100 * usize::from(i), u32::from(i));
        let aad = vec![i; usize::from(i)];
        let sealed = kms.encrypt(&key, &plaintext, (i % 2 == 0).then_some(&aad[..]), i % 2 == 1).await;
        before.push((plaintext, sealed));
    }

    // Two nodes frozen (sockets open, no answers): still 200; a third: 503 within the budget.
    cluster.pause_node(4, true).unwrap();
    cluster.pause_node(5, true).unwrap();
    for (plaintext, sealed) in &before {
        assert_eq!(&kms.decrypt(&key, sealed).await, plaintext, "with nodes 4 and 5 frozen");
        let again = kms.encrypt(&key, plaintext, Some(b"frozen"), true).await;
        assert_eq!(&kms.decrypt(&key, &again).await, plaintext, "with nodes 4 and 5 frozen");
    }
    cluster.pause_node(3, true).unwrap();
    for what in ["encrypt", "decrypt"] {
        let answer = match what {
            "encrypt" => kms.post(&encrypt_path(&key), &encrypt_request(b"x", None, false)).await,
            _ => kms.post(&decrypt_path(&key), &before[2].1.decrypt_request()).await,
        };
        assert_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "DependencyTimeoutException",
            &format!("{what}, 3 frozen"),
        );
    }
    for id in 3..=5 {
        cluster.pause_node(id, false).unwrap();
    }
    let kms_ref = &kms;
    let key_ref = &key;
    eventually(PATIENCE, || async move {
        let answer = kms_ref.post(&encrypt_path(key_ref), &encrypt_request(b"thawed", None, false)).await;
        anyhow::ensure!(answer.status == StatusCode::OK, "not yet: {}", String::from_utf8_lossy(&answer.body));
        Ok(())
    })
    .await
    .unwrap();
    wait_for_fleet(&kms, "every node ACTIVE again", |f| f.len() == 5 && f.iter().all(|(_, s)| s == "ACTIVE")).await;

    // n − t = 2 nodes killed: every request still answers 200.
    cluster.kill_node(1).unwrap();
    cluster.kill_node(2).unwrap();
    for i in 0..10u32 {
        let plaintext = pattern(64, i);
        let sealed = kms.encrypt(&key, &plaintext, Some(b"two down"), i % 2 == 0).await;
        assert_eq!(kms.decrypt(&key, &sealed).await, plaintext);
    }
    for (plaintext, sealed) in &before {
        assert_eq!(&kms.decrypt(&key, sealed).await, plaintext, "a pre-loss ciphertext");
    }
    let down = [node_name(1), node_name(2)];
    wait_for_fleet(&kms, "nodes 1 and 2 UNAVAILABLE, the rest serving", |f| {
        f.len() == 5 && f.iter().all(|(id, s)| (s == "UNAVAILABLE") == down.contains(id))
    })
    .await;

    // A third: fewer than t nodes. 503 DependencyTimeoutException (or 500), never 200, never a hang.
    cluster.kill_node(3).unwrap();
    for round in 0..3 {
        let answers = [
            ("encrypt", kms.post(&encrypt_path(&key), &encrypt_request(b"x", None, false)).await),
            ("encrypt with CDIV", kms.post(&encrypt_path(&key), &encrypt_request(b"x", None, true)).await),
            ("decrypt", kms.post(&decrypt_path(&key), &before[1].1.decrypt_request()).await),
        ];
        for (what, answer) in answers {
            let what = format!("{what} with 2 of 5 nodes, round {round}");
            match answer.status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_error(&answer, answer.status, "DependencyTimeoutException", &what)
                }
                StatusCode::INTERNAL_SERVER_ERROR => assert_error(&answer, answer.status, "InternalException", &what),
                _ => panic!("{what}: expected 503 or 500, got {}", String::from_utf8_lossy(&answer.body)),
            }
        }
    }
    // GetKeyMetadata answers too (200, or the same refusal), never a hang.
    let answer = kms.key_metadata(&key).await;
    match answer.status {
        StatusCode::OK => assert_eq!(answer.json["keyStatus"], "ENABLED"),
        _ => assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "DependencyTimeoutException", "metadata"),
    }
    wait_for_fleet(&kms, "every node UNAVAILABLE", |f| f.len() == 5 && f.iter().all(|(_, s)| s == "UNAVAILABLE")).await;

    // Back up: requests succeed again and the pre-loss ciphertexts decrypt.
    for id in 1..=3 {
        cluster.restart_node(id).unwrap();
    }
    eventually(PATIENCE, || async move {
        let answer = kms_ref.post(&encrypt_path(key_ref), &encrypt_request(b"back", None, true)).await;
        anyhow::ensure!(answer.status == StatusCode::OK, "not yet: {}", String::from_utf8_lossy(&answer.body));
        Ok(())
    })
    .await
    .unwrap();
    for (plaintext, sealed) in &before {
        assert_eq!(&kms.decrypt(&key, sealed).await, plaintext, "a pre-loss ciphertext after the restart");
    }
    let sealed = kms.encrypt(&key, b"after the restart", Some(b"ctx"), true).await;
    assert_eq!(kms.decrypt(&key, &sealed).await, b"after the restart");
    wait_for_fleet(&kms, "every node serving again", |f| f.len() == 5 && f.iter().all(|(_, s)| s != "UNAVAILABLE"))
        .await;

    // The coordinator lost: 503 at once, and health reports every node UNAVAILABLE.
    cluster.kill_coordinator().unwrap();
    for (what, path, body) in [
        ("encrypt", encrypt_path(&key), encrypt_request(b"x", None, false)),
        ("decrypt", decrypt_path(&key), before[3].1.decrypt_request()),
        ("metadata", metadata_path(&key), json!({"requestMetadata": metadata("DescribeKey")})),
    ] {
        let answer = kms.post(&path, &body).await;
        assert_error(
            &answer,
            StatusCode::SERVICE_UNAVAILABLE,
            "DependencyTimeoutException",
            &format!("{what}, no coordinator"),
        );
    }
    wait_for_fleet(&kms, "every node UNAVAILABLE without the coordinator", |f| {
        !f.is_empty() && f.iter().all(|(_, s)| s == "UNAVAILABLE")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn xks_over_its_in_flight_limit_answers_throttling_and_nothing_else() {
    let cluster = Cluster::start(5, 3).unwrap();
    let dev = cluster.dev.xks.as_ref().expect("dev.json has an xks section");
    let key = external_key(&cluster, "encrypt_decrypt");

    // The dev configuration, with one request in flight at most, on a port of its own (and no
    // metrics listener).
    let text = std::fs::read_to_string(&dev.config).unwrap();
    let mut throttled = String::from("max_in_flight = 1\n");
    let mut replaced = 0;
    for line in text.lines() {
        if line.trim_start().starts_with("listen") && line.contains('=') {
            throttled.push_str("listen = \"127.0.0.1:0\"\n");
            replaced += 1;
        } else if line.trim_start().starts_with("metrics_listen") {
            // The dev hyok-xks holds its metrics port.
            throttled.push_str("metrics_listen = \"off\"\n");
        } else {
            throttled.push_str(line);
            throttled.push('\n');
        }
    }
    assert_eq!(replaced, 1, "one listen line in {text}");
    let config = cluster.dir.path().join("xks").join("throttled.toml");
    std::fs::write(&config, throttled).unwrap();
    let process = Served::xks(&config, &cluster.dir.path().join("logs").join("xks-throttled.log")).unwrap();

    let (mut target, ca) = cluster.xks().unwrap();
    let (host, port, path) = client::split_url(&target.base_url).unwrap();
    assert_ne!(port, process.addr.port());
    target.base_url = format!("https://{host}:{}{path}", process.addr.port());
    let kms = Kms::connect(&target, &ca, true).await;
    // One at a time it serves (its coordinator connections are made on first use).
    let kms_ref = &kms;
    let key_ref = &key;
    eventually(PATIENCE, || async move {
        let answer = kms_ref.post(&encrypt_path(key_ref), &encrypt_request(b"warm", None, false)).await;
        anyhow::ensure!(answer.status == StatusCode::OK, "not yet: {}", String::from_utf8_lossy(&answer.body));
        Ok(())
    })
    .await
    .unwrap();

    // 64 at once over one HTTP/2 connection: 200 or 429 ThrottlingException, some of each.
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let kms = kms.clone();
        let path = encrypt_path(&key);
        tasks.push(tokio::spawn(async move {
            let plaintext = pattern(32, i);
            let answer = kms.post(&path, &encrypt_request(&plaintext, None, false)).await;
            (plaintext, answer)
        }));
    }
    let (mut served, mut throttled) = (Vec::new(), 0);
    for task in tasks {
        let (plaintext, answer) = task.await.unwrap();
        match answer.status {
            StatusCode::OK => served.push((plaintext, answer)),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_error(&answer, StatusCode::TOO_MANY_REQUESTS, "ThrottlingException", "a refused request");
                throttled += 1;
            }
            _ => panic!("expected 200 or 429, got {} {}", answer.status, String::from_utf8_lossy(&answer.body)),
        }
    }
    assert!(!served.is_empty() && throttled > 0, "{} served, {throttled} throttled", served.len());
    // What was served is a real encryption of what was sent.
    for (plaintext, answer) in &served {
        let sealed = Sealed {
            ciphertext: unb64(&answer.json["ciphertext"]),
            iv: unb64(&answer.json["initializationVector"]),
            tag: unb64(&answer.json["authenticationTag"]),
            metadata: unb64(&answer.json["ciphertextMetadata"]),
            aad: None,
        };
        assert_eq!(&kms.decrypt(&key, &sealed).await, plaintext);
    }
    // Refusals hold no permit: one request alone is served again.
    kms.encrypt(&key, b"after the burst", None, true).await;
    drop(process);
}

/// As every node's operator: `hyokctl node policy install --node N DIR/policy.json`, the dev
/// cluster's policy, whose credentials file a rotation changed.
fn reinstall_policy(cluster: &Cluster) {
    let dir = cluster.dir.path();
    for node in &cluster.dev.nodes {
        let output = std::process::Command::new(hyok_e2e::hyokctl())
            .arg("--dev-dir")
            .arg(dir)
            .args(["node", "--node", &node.id.to_string(), "policy", "install"])
            .arg(dir.join(hyok_cli::policy::POLICY_FILE))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "policy install on node {}: {}",
            node.id,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("policy "), "{output:?}");
    }
}
