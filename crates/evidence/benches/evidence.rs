//! What the end-to-end evidence checks cost: one node judging one request
//! (`Policy::authorize`), per kind of evidence, and what the carriers add (hyok-xks building the
//! evidence, a gRPC caller signing).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark setup fails loudly")]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use criterion::{Criterion, criterion_group, criterion_main};
use hyok_evidence::caller::Signer;
use hyok_evidence::policy::{Caller, FORMAT, Policy, PolicyFile, Request, XksCredential, XksKey, XksStore};
use hyok_evidence::{sigv4, xks};
use hyok_proto::v1 as pb;
use std::hint::black_box;
use std::time::SystemTime;

const AKID: &str = "AKIA4GBY3I6JCE5M2HPM";
const SECRET: &str = "1234567890123456789012345678901234567890123=";

fn signed(op: &str, body: &[u8], now: SystemTime) -> (http::Method, http::Uri, http::HeaderMap) {
    let path = format!("/ks/kms/xks/v1/keys/k/{op}");
    let s = sigv4::sign(&path, "xks.example:443", body, AKID, SECRET, "us-east-1", now);
    let mut headers = http::HeaderMap::new();
    headers.insert("content-type", http::HeaderValue::from_static("application/json"));
    headers.insert("host", http::HeaderValue::from_static("xks.example:443"));
    headers.insert("x-amz-date", s.amz_date.parse().unwrap());
    headers.insert("authorization", s.authorization.parse().unwrap());
    headers.insert("user-agent", http::HeaderValue::from_static("aws-kms"));
    (http::Method::POST, path.parse().unwrap(), headers)
}

fn bench(c: &mut Criterion) {
    let signer = Signer::generate(&mut rand::rng());
    let file = PolicyFile {
        format: FORMAT.into(),
        xks: vec![XksStore {
            uri_prefix: "ks".into(),
            region: Some("us-east-1".into()),
            credentials: vec![XksCredential { access_key_id: AKID.into(), secret_access_key: SECRET.into() }],
            credentials_file: None,
            keys: vec![XksKey { external_id: "k".into(), key_id: "key".into(), usage: xks::Usage::EncryptDecrypt }],
        }],
        dke: None,
        callers: vec![Caller {
            name: "app".into(),
            public_key: hex::encode(signer.public_key().as_bytes()),
            keys: vec!["*".into()],
            rsa_import: false,
        }],
    };
    let policy = Policy::compile(&file).unwrap();
    let now = SystemTime::now();
    // KMS-sized bodies: 4 KiB of plaintext or ciphertext, with the request metadata.
    let metadata = r#"{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"}"#;
    let data = STANDARD.encode(vec![7u8; 4096]);
    let encrypt_body =
        format!(r#"{{"requestMetadata":{metadata},"plaintext":"{data}","encryptionAlgorithm":"AES_GCM"}}"#);
    let decrypt_body = format!(
        r#"{{"requestMetadata":{metadata},"ciphertext":"{data}","initializationVector":"{}","authenticationTag":"{}","ciphertextMetadata":"{}","encryptionAlgorithm":"AES_GCM"}}"#,
        STANDARD.encode([5u8; 16]),
        STANDARD.encode([6u8; 16]),
        STANDARD.encode(xks::metadata(1))
    );

    let (m, u, h) = signed("encrypt", encrypt_body.as_bytes(), now);
    let encrypt = xks::to_evidence(&m, &u, &h, encrypt_body.as_bytes(), false);
    let nonce = hyok_evidence::encryption_nonce(&encrypt).unwrap();
    let encrypt_item = Request::Evaluate { key_id: "key", version: 1, seed: &nonce, operation: pb::Operation::Encrypt };
    assert!(policy.authorize(&encrypt_item, Some(&encrypt), now).is_ok());
    c.bench_function("node: XKS encrypt evidence (SigV4 over the body hash)", |b| {
        b.iter(|| black_box(policy.authorize(&encrypt_item, Some(&encrypt), now).unwrap()))
    });
    c.bench_function("hyok-xks: build XKS encrypt evidence (4 KiB body)", |b| {
        b.iter(|| black_box(xks::to_evidence(&m, &u, &h, encrypt_body.as_bytes(), false)))
    });

    let (m, u, h) = signed("decrypt", decrypt_body.as_bytes(), now);
    let decrypt = xks::to_evidence(&m, &u, &h, decrypt_body.as_bytes(), true);
    let decrypt_item =
        Request::Evaluate { key_id: "key", version: 1, seed: &[5u8; 16], operation: pb::Operation::Decrypt };
    assert!(policy.authorize(&decrypt_item, Some(&decrypt), now).is_ok());
    c.bench_function("node: XKS decrypt evidence (SigV4 over a 4 KiB body, IV and metadata read)", |b| {
        b.iter(|| black_box(policy.authorize(&decrypt_item, Some(&decrypt), now).unwrap()))
    });

    let caller_decrypt = signer.decrypt("key", 1, &[5u8; 16]);
    assert!(policy.authorize(&decrypt_item, Some(&caller_decrypt), now).is_ok());
    c.bench_function("node: caller signature on a decrypt", |b| {
        b.iter(|| black_box(policy.authorize(&decrypt_item, Some(&caller_decrypt), now).unwrap()))
    });
    // A DKE user's RS256 token, checked by a node.
    let pem = include_str!("../../threshold/tests/fixtures/rsa2048-pkcs8.pem");
    let key = hyok_threshold::rsa::deal::PrivateKey::from_pem(pem).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&key.to_pkcs8_der().unwrap()).unwrap();
    let public = key.public_key();
    let jwks = serde_json::json!({ "keys": [hyok_evidence::jwt::rsa_jwk("k1", &public.modulus_bytes(), &public.exponent_bytes())] });
    let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = serde_json::json!({"iss": "https://issuer/", "aud": "https://dke", "email": "alice@example.com",
        "exp": secs + 3600, "nbf": secs - 60});
    let token = hyok_evidence::jwt::sign_rs256(&pair, "k1", &claims).unwrap();
    let mut with_dke = file.clone();
    with_dke.dke = Some(hyok_evidence::policy::Dke {
        issuers: vec!["https://issuer/".into()],
        audience: "https://dke".into(),
        leeway_s: 60,
        jwks: Some(jwks),
        jwks_file: None,
        keys: vec![hyok_evidence::policy::DkeKey {
            name: "dke".into(),
            rsa_key: "dke".into(),
            allowed_emails: vec!["alice@example.com".into()],
            allowed_roles: Vec::new(),
            allowed_object_ids: Vec::new(),
        }],
    });
    let dke_policy = Policy::compile(&with_dke).unwrap();
    let bearer = pb::Evidence { kind: Some(pb::evidence::Kind::BearerToken(token)) };
    let rsa_item = Request::RsaDecrypt { name: "dke", version: 1, ciphertext: &[1u8; 256] };
    assert!(dke_policy.authorize(&rsa_item, Some(&bearer), now).is_ok());
    c.bench_function("node: DKE bearer token (RS256, 2048-bit)", |b| {
        b.iter(|| black_box(dke_policy.authorize(&rsa_item, Some(&bearer), now).unwrap()))
    });

    c.bench_function("caller: sign an encrypt (4 KiB plaintext)", |b| {
        b.iter(|| black_box(signer.encrypt("key", &[7u8; 4096], b"")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
