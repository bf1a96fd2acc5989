//! hyok-dke in-process over real HTTPS, with an in-process fake cluster that does real threshold
//! RSA (a fixture key dealt 2-of-3, partials evaluated and combined per request): the public key
//! JSON, decryption of ciphertexts made independently with `oaep::encrypt`, rotation, every JWT
//! refusal, per-key authorization, and bad bodies (400, never 500).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyok_dke::backend::{Backend, BackendError};
use hyok_dke::client::{self, Answer, Connection};
use hyok_dke::jwt;
use hyok_frontend::{ConfigFile as _, Frontend as _};
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::{RsaKeyShare, RsaPublicKey, RsaPublicPackage, combine, keygen, oaep, partial};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use zeroize::Zeroizing;

const KEY_V1: &str = include_str!("../../threshold/tests/fixtures/rsa2048-pkcs8.pem");
const KEY_V2: &str = include_str!("../../threshold/tests/fixtures/rsa2048-pkcs1.pem");
const FOREIGN: &str = include_str!("../../threshold/tests/fixtures/rsa3072-pkcs8.pem");
const BASE: &str = "https://dke.example.com";
const ISSUER: &str = "https://issuer.example.com/tenant/";
const AUTHORIZE: &str = "https://login.example.com/oauth2/authorize";
const CHALLENGE: &str = "Bearer resource=\"https://dke.example.com\", \
    authorization=\"https://login.example.com/oauth2/authorize\", realm=\"https://dke.example.com\"";

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------------
// The fake cluster.

struct Version {
    number: u32,
    public: RsaPublicKey,
    shares: Vec<RsaKeyShare>,
    package: RsaPublicPackage,
}

#[derive(Default)]
struct FakeCluster {
    keys: Mutex<HashMap<String, Vec<Arc<Version>>>>,
    unavailable: AtomicBool,
    disabled: AtomicBool,
    request_ids: Mutex<Vec<String>>,
}

impl FakeCluster {
    /// Deals `pem` 2-of-3 as the next version of `name`; returns its public key.
    fn add_version(&self, name: &str, pem: &str) -> RsaPublicKey {
        let key = PrivateKey::from_pem(pem).unwrap();
        let (shares, package) = deal(&key, 2, 3, &mut rng(9)).unwrap();
        let mut keys = self.keys.lock().unwrap();
        let versions = keys.entry(name.to_owned()).or_default();
        let number = versions.len() as u32 + 1;
        let public = key.public_key().clone();
        versions.push(Arc::new(Version { number, public: public.clone(), shares, package }));
        public
    }

    fn version(&self, name: &str, number: u32) -> Result<Arc<Version>, BackendError> {
        let keys = self.keys.lock().unwrap();
        let versions = keys.get(name).ok_or(BackendError::KeyNotFound)?;
        versions.iter().find(|v| v.number == number).cloned().ok_or(BackendError::VersionNotFound)
    }
}

impl Backend for FakeCluster {
    async fn get_rsa_key(&self, name: &str, _deadline: Instant) -> Result<pb::RsaKeyInfo, BackendError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable);
        }
        let keys = self.keys.lock().unwrap();
        let versions = keys.get(name).ok_or(BackendError::KeyNotFound)?;
        Ok(pb::RsaKeyInfo {
            name: name.to_owned(),
            primary_version: versions.iter().map(|v| v.number).max().unwrap_or(0),
            versions: versions
                .iter()
                .map(|v| pb::RsaKeyVersion {
                    version: v.number,
                    public_package: Vec::new(),
                    modulus: v.public.modulus_bytes(),
                    exponent: v.public.exponent_bytes(),
                    fingerprint: String::new(),
                    created_at_ms: 0,
                    generation: 0,
                })
                .collect(),
            state: if self.disabled.load(Ordering::SeqCst) { pb::KeyState::Disabled } else { pb::KeyState::Enabled }
                as i32,
        })
    }

    async fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        evidence: pb::Evidence,
        _deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable);
        }
        if self.disabled.load(Ordering::SeqCst) {
            return Err(BackendError::Disabled);
        }
        // The nodes verify the user's own token: the service must pass it on, as sent.
        match evidence.kind {
            Some(pb::evidence::Kind::BearerToken(token)) if token.split('.').count() == 3 => {}
            _ => return Err(BackendError::Denied),
        }
        self.request_ids.lock().unwrap().push(request_id.to_owned());
        let v = self.version(name, version)?;
        // What the coordinator does: t partials from the nodes, combine, check, unpad.
        let partials = v.shares[1..]
            .iter()
            .map(|s| partial::evaluate(s, &v.package, ciphertext))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| BackendError::Malformed)?;
        match combine::decrypt(&v.package, ciphertext, &partials) {
            Ok(opened) => Ok(opened.value),
            Err(hyok_threshold::Error::OaepDecodingFailed) => Err(BackendError::DecryptionFailed),
            Err(hyok_threshold::Error::Malformed { .. }) => Err(BackendError::Malformed),
            Err(_) => Err(BackendError::Internal),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token issuers.

struct Issuers {
    rsa: RsaKeyPair,
    rsa_public: RsaPublicKey,
    ec: EcdsaKeyPair,
    foreign: RsaKeyPair,
}

fn issuers() -> &'static Issuers {
    static ISSUERS: OnceLock<Issuers> = OnceLock::new();
    ISSUERS.get_or_init(|| {
        // The RS256 issuer key is made by our keygen and loaded by ring from our PKCS#8.
        let key = keygen::generate(&mut rng(42), 2048).unwrap();
        let rsa = RsaKeyPair::from_pkcs8(&key.to_pkcs8_der().unwrap()).unwrap();
        let system = ring::rand::SystemRandom::new();
        let ec_der = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &system).unwrap();
        let ec =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, ec_der.as_ref(), &system).unwrap();
        let foreign = PrivateKey::from_pem(FOREIGN).unwrap();
        let foreign = RsaKeyPair::from_pkcs8(&foreign.to_pkcs8_der().unwrap()).unwrap();
        Issuers { rsa, rsa_public: key.public_key().clone(), ec, foreign }
    })
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims_for(email: &str) -> Value {
    let now = now_s();
    json!({"iss": ISSUER, "aud": BASE, "exp": now + 600, "nbf": now - 10, "iat": now - 10,
           "sub": "subject-1", "email": email})
}

fn rs256(claims: &Value) -> String {
    jwt::sign_rs256(&issuers().rsa, "rs-1", claims).unwrap()
}

fn es256(claims: &Value) -> String {
    let header = jwt::b64url(json!({"alg": "ES256", "typ": "JWT", "kid": "es-1"}).to_string().as_bytes());
    let signed = format!("{header}.{}", jwt::b64url(claims.to_string().as_bytes()));
    let sig = issuers().ec.sign(&ring::rand::SystemRandom::new(), signed.as_bytes()).unwrap();
    format!("{signed}.{}", jwt::b64url(sig.as_ref()))
}

fn jwks() -> Value {
    let i = issuers();
    json!({"keys": [
        jwt::rsa_jwk("rs-1", &i.rsa_public.modulus_bytes(), &i.rsa_public.exponent_bytes()),
        jwt::p256_jwk("es-1", i.ec.public_key().as_ref()).unwrap(),
    ]})
}

// ---------------------------------------------------------------------------------------------
// The server.

struct Server {
    dir: tempfile::TempDir,
    ca: PathBuf,
    url: String,
    cluster: Arc<FakeCluster>,
}

impl Server {
    async fn connect(&self, h2: bool) -> Connection {
        client::connect(&self.url, &self.ca, h2).await.unwrap()
    }
}

/// Starts hyok-dke over `cluster` on a free port: key `confidential` → RSA key `dke-conf`
/// (Alice by email, or the DKE.Readers role), and `ghost` → an RSA key the cluster lacks.
async fn start(cluster: Arc<FakeCluster>) -> Server {
    start_with(cluster, "", &jwks(), false).await
}

/// [`start`] with extra lines in the `[jwt]` table and the given JWKS file; with `real`, over
/// the real coordinator client (`Frontend::run`) pointed at a port where nothing listens.
async fn start_with(cluster: Arc<FakeCluster>, jwt_extra: &str, jwks_doc: &Value, real: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(path("ca.pem"), ca_params.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    std::fs::write(path("server.pem"), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
    std::fs::write(path("server-key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(path("jwks.json"), jwks_doc.to_string()).unwrap();
    let text = format!(
        r#"
listen = "127.0.0.1:0"
public_base_url = "{BASE}"
cache_exp_s = 3600
[tls]
cert = "server.pem"
key = "server-key.pem"
[coordinator]
endpoint = "https://127.0.0.1:1"
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
[jwt]
issuers = ["https://other.example.com/", "{ISSUER}"]
audience = "{BASE}"
jwks_file = "jwks.json"
leeway_s = 30
authorization = "{AUTHORIZE}"
{jwt_extra}
[[keys]]
name = "confidential"
rsa_key = "dke-conf"
allowed_emails = ["Alice@Example.com"]
allowed_roles = ["DKE.Readers"]
[[keys]]
name = "ghost"
rsa_key = "not-in-the-cluster"
allowed_emails = ["alice@example.com"]
"#
    );
    std::fs::write(path("dke.toml"), text).unwrap();
    let config = hyok_dke::Config::load(&path("dke.toml")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    if real {
        tokio::spawn(config.run(listener, std::future::pending()));
    } else {
        tokio::spawn(hyok_dke::run_with_backend(config, cluster.clone(), listener, std::future::pending()));
    }
    Server { ca: path("ca.pem"), dir, url: format!("https://localhost:{port}"), cluster }
}

async fn started_with_v1() -> (Server, RsaPublicKey) {
    let cluster = Arc::new(FakeCluster::default());
    let public = cluster.add_version("dke-conf", KEY_V1);
    (start(cluster).await, public)
}

fn decrypt_body(ciphertext: &[u8]) -> Vec<u8> {
    json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(ciphertext)}).to_string().into_bytes()
}

fn plaintext_of(answer: &Answer) -> Vec<u8> {
    assert_eq!(answer.status, 200, "{:?}", answer.json);
    STANDARD.decode(answer.json["value"].as_str().unwrap()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn get_answers_the_dke_public_key_json_exactly() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    for path in ["/confidential", "/confidential?protocol-version=1.0"] {
        let answer = conn.get(path).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {:?}", answer.json);
        let top = answer.json.as_object().unwrap();
        assert_eq!(top.keys().collect::<Vec<_>>(), ["cache", "key"]);
        let key = top["key"].as_object().unwrap();
        let mut fields: Vec<_> = key.keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(fields, ["alg", "e", "kid", "kty", "n"]);
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        assert!(key["e"].is_u64(), "e must be a JSON number");
        assert_eq!(key["e"], 65_537);
        assert_eq!(key["kid"], "https://dke.example.com/confidential/1");
        assert_eq!(key["n"].as_str().unwrap(), STANDARD.encode(public.modulus_bytes()));
        // yyyy-MM-ddTHH:mm:ss, UTC, no zone suffix.
        let exp = top["cache"]["exp"].as_str().unwrap();
        assert_eq!(exp.len(), 19, "{exp}");
        let shape: String = exp.chars().map(|c| if c.is_ascii_digit() { 'd' } else { c }).collect();
        assert_eq!(shape, "dddd-dd-ddTdd:dd:dd");
        // The body is serialized in the sample's field order.
        let text = std::str::from_utf8(&answer.body).unwrap();
        assert!(text.starts_with("{\"key\":{\"kty\":\"RSA\",\"n\":\""), "{text}");
    }
    // HTTP/1.1 too.
    assert_eq!(server.connect(false).await.get("/confidential").await.unwrap().status, 200);
}

#[tokio::test]
async fn get_refuses_unknown_names_and_other_methods_without_a_500() {
    let (server, _) = started_with_v1().await;
    let conn = server.connect(true).await;
    assert_eq!(conn.get("/Confidential").await.unwrap().status, 400, "key names are case-sensitive");
    assert_eq!(conn.get("/nope").await.unwrap().status, 400);
    assert_eq!(conn.get("/ghost").await.unwrap().status, 400, "configured but not in the cluster");
    assert_eq!(conn.get("/").await.unwrap().status, 404);
    assert_eq!(conn.get("/confidential/1").await.unwrap().status, 404);
    let post = conn.post("/confidential", None, b"{}").await.unwrap();
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET");
    let get_decrypt = conn.get("/confidential/1/decrypt").await.unwrap();
    assert_eq!(get_decrypt.status, 405);
    assert_eq!(get_decrypt.headers["allow"], "POST");
}

#[tokio::test]
async fn a_ciphertext_made_independently_decrypts_through_the_service() {
    let (server, public) = started_with_v1().await;
    let message = b"a 44-byte DKE content key blob, give or take";
    let ciphertext = oaep::encrypt(&public, message, &mut rng(1)).unwrap();
    let token = rs256(&claims_for("alice@example.com"));
    for h2 in [true, false] {
        let conn = server.connect(h2).await;
        for path in
            ["/confidential/1/decrypt", "/confidential/1/Decrypt", "/confidential/1/DECRYPT?protocol-version=1.0"]
        {
            let answer = conn.post(path, Some(&token), &decrypt_body(&ciphertext)).await.unwrap();
            assert_eq!(plaintext_of(&answer), message, "{path}");
            assert_eq!(answer.json.as_object().unwrap().len(), 1);
        }
    }
    // An ES256 token works as well.
    let conn = server.connect(true).await;
    let es_token = es256(&claims_for("alice@example.com"));
    let answer = conn.post("/confidential/1/decrypt", Some(&es_token), &decrypt_body(&ciphertext)).await.unwrap();
    assert_eq!(plaintext_of(&answer), message);
    // The cluster's audit log names the user and the key version.
    let ids = server.cluster.request_ids.lock().unwrap().clone();
    assert!(ids.iter().all(|id| id.contains("alice@example.com") && id.contains("confidential/1")), "{ids:?}");
}

#[tokio::test]
async fn rotation_serves_the_new_version_and_old_key_ids_still_decrypt() {
    let cluster = Arc::new(FakeCluster::default());
    let v1 = cluster.add_version("dke-conf", KEY_V1);
    let server = start(cluster.clone()).await;
    let conn = server.connect(true).await;
    assert_eq!(conn.get("/confidential").await.unwrap().json["key"]["kid"], format!("{BASE}/confidential/1"));
    let old = oaep::encrypt(&v1, b"old document key", &mut rng(2)).unwrap();

    let v2 = cluster.add_version("dke-conf", KEY_V2);
    let answer = conn.get("/confidential").await.unwrap();
    assert_eq!(answer.json["key"]["kid"], format!("{BASE}/confidential/2"));
    assert_eq!(answer.json["key"]["n"].as_str().unwrap(), STANDARD.encode(v2.modulus_bytes()));
    let new = oaep::encrypt(&v2, b"new document key", &mut rng(3)).unwrap();

    let token = rs256(&claims_for("alice@example.com"));
    let post = |path: &'static str, ct: Vec<u8>| {
        let conn = conn.clone();
        let token = token.clone();
        async move { conn.post(path, Some(&token), &decrypt_body(&ct)).await.unwrap() }
    };
    assert_eq!(plaintext_of(&post("/confidential/1/decrypt", old.clone()).await), b"old document key");
    assert_eq!(plaintext_of(&post("/confidential/2/decrypt", new.clone()).await), b"new document key");
    // A ciphertext sent under the other version does not decrypt, and says so with a 400.
    assert_eq!(post("/confidential/2/decrypt", old).await.status, 400);
    assert_eq!(post("/confidential/3/decrypt", new).await.status, 400, "version 3 does not exist");
}

#[tokio::test]
async fn every_invalid_token_is_a_401_with_the_challenge() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"k", &mut rng(4)).unwrap();
    let body = decrypt_body(&ciphertext);
    let now = now_s();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut claims = claims_for("alice@example.com");
        edit(&mut claims);
        claims
    };
    let valid = rs256(&claims_for("alice@example.com"));
    let (header, payload) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let hs256 = {
        let head = jwt::b64url(br#"{"alg":"HS256","typ":"JWT","kid":"rs-1"}"#);
        let signed = format!("{head}.{payload}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &issuers().rsa_public.modulus_bytes());
        format!("{signed}.{}", jwt::b64url(ring::hmac::sign(&key, signed.as_bytes()).as_ref()))
    };
    let other_payload = jwt::b64url(claims_for("mallory@example.com").to_string().as_bytes());
    let signature = valid.rsplit('.').next().unwrap().to_owned();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("expired", Some(rs256(&with(&|c| c["exp"] = json!(now - 3600))))),
        ("not yet valid", Some(rs256(&with(&|c| c["nbf"] = json!(now + 3600))))),
        ("wrong audience", Some(rs256(&with(&|c| c["aud"] = json!("https://other.example.com"))))),
        ("wrong issuer", Some(rs256(&with(&|c| c["iss"] = json!("https://evil.example.com/"))))),
        ("missing exp", Some(rs256(&with(&|c| drop(c.as_object_mut().unwrap().remove("exp")))))),
        ("missing iss", Some(rs256(&with(&|c| drop(c.as_object_mut().unwrap().remove("iss")))))),
        ("foreign key", Some(jwt::sign_rs256(&issuers().foreign, "rs-1", &claims_for("alice@example.com")).unwrap())),
        ("unknown kid", Some(jwt::sign_rs256(&issuers().rsa, "rs-9", &claims_for("alice@example.com")).unwrap())),
        ("alg none", Some(format!("{}.{payload}.", jwt::b64url(br#"{"alg":"none","typ":"JWT"}"#)))),
        ("alg HS256 keyed with the public key", Some(hs256)),
        ("payload swapped", Some(format!("{header}.{other_payload}.{signature}"))),
        ("malformed", Some("not-a-token".into())),
        ("malformed parts", Some("a.b.c".into())),
        ("empty", Some(String::new())),
    ];
    for (name, token) in cases {
        let answer = conn.post("/confidential/1/decrypt", token.as_deref(), &body).await.unwrap();
        assert_eq!(answer.status, 401, "{name}: {:?}", answer.json);
        assert_eq!(answer.headers["www-authenticate"], CHALLENGE, "{name}");
        assert_eq!(answer.json["error"], "unauthorized", "{name}");
    }
    // Another scheme is no bearer token.
    let request = conn
        .request(http::Method::POST, "/confidential/1/decrypt", None, &body)
        .map(|mut r| {
            r.headers_mut().insert("authorization", format!("Basic {valid}").parse().unwrap());
            r
        })
        .unwrap();
    assert_eq!(conn.send(request).await.unwrap().status, 401);
    // And the valid token itself passes (the cases above fail for their reason alone).
    let answer = conn.post("/confidential/1/decrypt", Some(&valid), &body).await.unwrap();
    assert_eq!(plaintext_of(&answer), b"k");
}

#[tokio::test]
async fn users_are_authorized_per_key_by_email_upn_or_role() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"doc key", &mut rng(5)).unwrap();
    let body = decrypt_body(&ciphertext);
    let status = |claims: Value| {
        let conn = conn.clone();
        let body = body.clone();
        async move { conn.post("/confidential/1/decrypt", Some(&rs256(&claims)), &body).await.unwrap().status }
    };
    let mut bob = claims_for("bob@example.com");
    assert_eq!(status(bob.clone()).await, 403, "Bob is not on the list");
    bob["roles"] = json!(["DKE.Readers"]);
    assert_eq!(status(bob.clone()).await, 200, "but holds the role");
    bob["roles"] = json!(["dke.readers"]);
    assert_eq!(status(bob.clone()).await, 403, "role values match exactly");
    let mut grouped = claims_for("bob@example.com");
    grouped["groups"] = json!("DKE.Readers");
    assert_eq!(status(grouped).await, 200, "groups count like roles");
    let mut upn = claims_for("x");
    upn.as_object_mut().unwrap().remove("email");
    upn["upn"] = json!("ALICE@example.COM");
    assert_eq!(status(upn).await, 200, "upn, case-insensitively");
    let mut anonymous = claims_for("x");
    anonymous.as_object_mut().unwrap().remove("email");
    assert_eq!(status(anonymous).await, 403, "no name and no role");
}

#[tokio::test]
async fn bad_bodies_and_key_ids_are_400s_never_500s() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let token = rs256(&claims_for("alice@example.com"));
    let good = oaep::encrypt(&public, b"fine", &mut rng(6)).unwrap();
    // Below N (N's top byte is at least 0x80) but not an OAEP encoding under this key.
    let mut not_oaep = vec![0x01u8; 256];
    not_oaep[255] = 0x07;
    let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
    let body = |alg: &str, value: String| json!({"alg": alg, "value": value}).to_string().into_bytes();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("bad base64", "/confidential/1/decrypt", body("RSA-OAEP-256", "***not base64***".into())),
        ("short ciphertext", "/confidential/1/decrypt", body("RSA-OAEP-256", b64(&good[..100]))),
        ("long ciphertext", "/confidential/1/decrypt", body("RSA-OAEP-256", b64(&[good.clone(), vec![0]].concat()))),
        ("ciphertext ≥ N", "/confidential/1/decrypt", body("RSA-OAEP-256", b64(&[0xffu8; 256]))),
        ("wrong alg", "/confidential/1/decrypt", body("RSA-OAEP", b64(&good))),
        ("RS256 alg", "/confidential/1/decrypt", body("RS256", b64(&good))),
        ("garbage JSON", "/confidential/1/decrypt", b"{\"alg\": ".to_vec()),
        ("not JSON", "/confidential/1/decrypt", b"\xff\xfe".to_vec()),
        ("empty body", "/confidential/1/decrypt", Vec::new()),
        ("missing value", "/confidential/1/decrypt", br#"{"alg":"RSA-OAEP-256"}"#.to_vec()),
        ("value not a string", "/confidential/1/decrypt", br#"{"alg":"RSA-OAEP-256","value":5}"#.to_vec()),
        ("unknown key name", "/nope/1/decrypt", body("RSA-OAEP-256", b64(&good))),
        ("key name not in the cluster", "/ghost/1/decrypt", body("RSA-OAEP-256", b64(&good))),
        ("key id not a number", "/confidential/abc/decrypt", body("RSA-OAEP-256", b64(&good))),
        ("key id zero", "/confidential/0/decrypt", body("RSA-OAEP-256", b64(&good))),
        ("unknown key id", "/confidential/9/decrypt", body("RSA-OAEP-256", b64(&good))),
        ("OAEP failure", "/confidential/1/decrypt", body("RSA-OAEP-256", b64(&not_oaep))),
    ];
    let mut messages = HashMap::new();
    for (name, path, body) in cases {
        let answer = conn.post(path, Some(&token), &body).await.unwrap();
        assert_eq!(answer.status, 400, "{name}: {:?}", answer.json);
        assert_eq!(answer.json["error"], "bad_request", "{name}");
        messages.insert(name, answer.json["message"].as_str().unwrap().to_owned());
    }
    // One message for every ciphertext that does not decrypt, whatever the reason.
    for name in ["short ciphertext", "long ciphertext", "ciphertext ≥ N"] {
        assert_eq!(messages[name], messages["OAEP failure"], "{name}");
    }
    // An oversized body is a 413.
    let huge = vec![b'a'; 20 * 1024];
    assert_eq!(conn.post("/confidential/1/decrypt", Some(&token), &huge).await.unwrap().status, 413);
    // After all that, the good ciphertext still decrypts.
    let answer = conn.post("/confidential/1/decrypt", Some(&token), &decrypt_body(&good)).await.unwrap();
    assert_eq!(plaintext_of(&answer), b"fine");
}

#[tokio::test]
async fn an_unavailable_cluster_is_a_503() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"k", &mut rng(7)).unwrap();
    server.cluster.unavailable.store(true, Ordering::SeqCst);
    assert_eq!(conn.get("/confidential").await.unwrap().status, 503);
    let token = rs256(&claims_for("alice@example.com"));
    let answer = conn.post("/confidential/1/decrypt", Some(&token), &decrypt_body(&ciphertext)).await.unwrap();
    assert_eq!(answer.status, 503);
    server.cluster.unavailable.store(false, Ordering::SeqCst);
    let answer = conn.post("/confidential/1/decrypt", Some(&token), &decrypt_body(&ciphertext)).await.unwrap();
    assert_eq!(plaintext_of(&answer), b"k");
}

#[tokio::test]
async fn a_disabled_key_is_a_403() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"k", &mut rng(8)).unwrap();
    let token = rs256(&claims_for("alice@example.com"));
    server.cluster.disabled.store(true, Ordering::SeqCst);
    assert_eq!(conn.get("/confidential").await.unwrap().status, 403);
    let answer = conn.post("/confidential/1/decrypt", Some(&token), &decrypt_body(&ciphertext)).await.unwrap();
    assert_eq!(answer.status, 403);
}

#[tokio::test]
async fn keys_added_to_the_jwks_file_are_trusted_without_a_restart_and_removed_ones_stop() {
    let (server, public) = started_with_v1().await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"k", &mut rng(9)).unwrap();
    let body = decrypt_body(&ciphertext);
    let status = |token: String| {
        let conn = conn.clone();
        let body = body.clone();
        async move { conn.post("/confidential/1/decrypt", Some(&token), &body).await.unwrap().status }
    };
    // A token from the "foreign" issuer key, under its own kid: unknown until the JWKS has it.
    let foreign_public = PrivateKey::from_pem(FOREIGN).unwrap().public_key().clone();
    let foreign_token = || jwt::sign_rs256(&issuers().foreign, "rs-2", &claims_for("alice@example.com")).unwrap();
    assert_eq!(status(foreign_token()).await, 401);

    let jwks_path = server.dir.path().join("jwks.json");
    let mut both = jwks();
    both["keys"].as_array_mut().unwrap().push(jwt::rsa_jwk(
        "rs-2",
        &foreign_public.modulus_bytes(),
        &foreign_public.exponent_bytes(),
    ));
    // Give the file a new modification time even on coarse-grained file systems.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    std::fs::write(&jwks_path, both.to_string()).unwrap();
    let mut accepted = false;
    for _ in 0..100 {
        if status(foreign_token()).await == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the added key was never trusted");
    assert_eq!(status(rs256(&claims_for("alice@example.com"))).await, 200, "the old keys still work");

    // A file that does not parse keeps the old keys.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    std::fs::write(&jwks_path, "not json").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(status(foreign_token()).await, 200);

    // Removing the key stops it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    std::fs::write(&jwks_path, jwks().to_string()).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        if status(foreign_token()).await == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "the removed key was still trusted");
}

/// Serves `body` at `/keys` over HTTPS (the test server certificate) on `listener`.
async fn serve_jwks(listener: tokio::net::TcpListener, dir: PathBuf, body: String) {
    let tls = hyok_frontend::tls::server_config(&hyok_frontend::config::HttpsTls {
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
        client_ca: None,
        client_subject: None,
    })
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        let (acceptor, body) = (acceptor.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else { return };
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    let status = if request.uri().path() == "/keys" { 200 } else { 404 };
                    let response = http::Response::builder()
                        .status(status)
                        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}

#[tokio::test]
async fn keys_from_the_jwks_url_are_trusted_alongside_the_file() {
    let cluster = Arc::new(FakeCluster::default());
    let public = cluster.add_version("dke-conf", KEY_V1);
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_port = jwks_listener.local_addr().unwrap().port();
    // The file holds the RS256 key only; the URL serves the ES256 key only.
    let extra = format!("jwks_url = \"https://localhost:{jwks_port}/keys\"\njwks_ca = \"ca.pem\"\njwks_refresh_s = 60");
    let rsa_only = json!({"keys": [jwks()["keys"][0].clone()]});
    let server = start_with(cluster, &extra, &rsa_only, false).await;
    let conn = server.connect(true).await;
    let ciphertext = oaep::encrypt(&public, b"k", &mut rng(10)).unwrap();
    let body = decrypt_body(&ciphertext);
    let status = |token: String| {
        let conn = conn.clone();
        let body = body.clone();
        async move { conn.post("/confidential/1/decrypt", Some(&token), &body).await.unwrap().status }
    };
    let es_only = json!({"keys": [jwks()["keys"][1].clone()]});
    tokio::spawn(serve_jwks(jwks_listener, server.dir.path().to_owned(), es_only.to_string()));
    let mut accepted = false;
    for _ in 0..100 {
        if status(es256(&claims_for("alice@example.com"))).await == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "the ES256 key from the JWKS URL was never trusted");
    // Both sources count.
    assert_eq!(status(rs256(&claims_for("alice@example.com"))).await, 200);
    assert_eq!(status(es256(&claims_for("alice@example.com"))).await, 200);
}

#[tokio::test]
async fn an_unreachable_coordinator_is_a_503_not_a_500() {
    let server = start_with(Arc::new(FakeCluster::default()), "", &jwks(), true).await;
    let conn = server.connect(true).await;
    let answer = conn.get("/confidential").await.unwrap();
    assert_eq!(answer.status, 503, "{:?}", answer.json);
    assert_eq!(answer.json["error"], "unavailable");
    let token = rs256(&claims_for("alice@example.com"));
    let answer = conn.post("/confidential/1/decrypt", Some(&token), &decrypt_body(&[0x01; 256])).await.unwrap();
    assert_eq!(answer.status, 503, "{:?}", answer.json);
    // Token checks happen before the cluster is asked.
    assert_eq!(conn.post("/confidential/1/decrypt", None, &decrypt_body(&[0x01; 256])).await.unwrap().status, 401);
}

#[tokio::test]
async fn oversized_bodies_get_a_413_not_a_dropped_connection() {
    let (server, _) = started_with_v1().await;
    let token = rs256(&claims_for("alice@example.com"));
    let (small, large) = (200 * 1024, 2 * 1024 * 1024);
    for (h2, size) in [(false, small), (false, large), (true, small), (true, large)] {
        let what = format!("{size} bytes over {}", if h2 { "HTTP/2" } else { "HTTP/1.1" });
        let conn = server.connect(h2).await;
        let answer = match conn.post("/confidential/1/decrypt", Some(&token), &vec![b'A'; size]).await {
            Ok(answer) => answer,
            Err(e) => panic!("{what}: {e:#}"),
        };
        assert_eq!((answer.status.as_u16(), answer.json["error"].as_str()), (413, Some("payload_too_large")), "{what}");
        // Past the toolkit's bound an HTTP/1.1 answer is the connection's last; else it serves on.
        let last = !h2 && size > hyok_frontend::body::DISCARD_LIMIT;
        assert_eq!(answer.headers.contains_key(http::header::CONNECTION), last, "{what}");
        if !last {
            assert_eq!(conn.get("/confidential").await.unwrap().status, 200, "{what}: the next request");
        }
    }
}
