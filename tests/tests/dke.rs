//! End-to-end tests of hyok-dke, the Microsoft 365 Double Key Encryption key service, over the
//! real binaries: `hyokctl dev` starts a 3-of-5 cluster, makes an RSA key by the dealer ceremony
//! and starts hyok-dke with a dev token issuer. The client side is what Office does: fetch the
//! public key, RSA-OAEP-256-encrypt with it (with OpenSSL where it is installed, and with
//! hyok-threshold's OAEP encoder, which shares nothing with the threshold decryption path), and
//! ask the service to decrypt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_cli::dke::{TOKEN_LIFETIME, mint_token};
use hyok_cli::target::Target;
use hyok_dke::client::{self, Connection};
use hyok_e2e::{Cluster, eventually};
use hyok_threshold::rsa::{RsaPublicKey, oaep};
use serde_json::{Value, json};
use std::time::Duration;

struct Dke {
    conn: Connection,
    dev: hyok_cli::devfile::DevDke,
}

impl Dke {
    async fn new(cluster: &Cluster) -> Self {
        let dev = cluster.dev.dke.clone().expect("dev.json has a dke section");
        let conn = client::connect(&dev.base_url, &cluster.dev.tls.ca, true).await.unwrap();
        Dke { conn, dev }
    }

    fn token(&self, email: &str) -> String {
        mint_token(
            &self.dev.issuer_key,
            &self.dev.issuer_kid,
            &self.dev.issuer,
            &self.dev.audience,
            email,
            TOKEN_LIFETIME,
        )
        .unwrap()
    }

    /// The published key: (kid, public key).
    async fn key(&self) -> (String, RsaPublicKey) {
        let answer = self.conn.get(&format!("/{}", self.dev.key_name)).await.unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let key = &answer.json["key"];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        let n = STANDARD.decode(key["n"].as_str().unwrap()).expect("n is standard Base64");
        let e = key["e"].as_u64().expect("e is a number");
        let public = RsaPublicKey::from_components(&n, &e.to_be_bytes()).unwrap();
        (key["kid"].as_str().unwrap().to_owned(), public)
    }

    fn decrypt_path(&self, kid: &str) -> String {
        kid.strip_prefix(&self.dev.public_base_url).expect("kid under the public base URL").to_owned() + "/decrypt"
    }

    async fn decrypt(&self, kid: &str, ciphertext: &[u8], token: &str) -> client::Answer {
        let body = json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(ciphertext)}).to_string();
        self.conn.post(&self.decrypt_path(kid), Some(token), body.as_bytes()).await.unwrap()
    }
}

/// RSA-OAEP with SHA-256 and MGF1-SHA-256 by the `openssl` command, if there is one.
fn openssl_oaep_encrypt(public: &RsaPublicKey, message: &[u8]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let (key, input, output) = (dir.path().join("pub.der"), dir.path().join("in"), dir.path().join("out"));
    std::fs::write(&key, public.to_spki_der()).ok()?;
    std::fs::write(&input, message).ok()?;
    let status = std::process::Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
        .arg(&key)
        .args(["-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt", "rsa_mgf1_md:sha256"])
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&output)
        .status()
        .ok()?;
    assert!(status.success(), "openssl refused to encrypt");
    std::fs::read(&output).ok()
}

fn plaintext(answer: &client::Answer) -> Vec<u8> {
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    STANDARD.decode(answer.json["value"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dke_decrypts_what_its_public_key_encrypted_through_node_loss_and_rotation() {
    let mut cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let dke = Dke::new(&cluster).await;
    let token = dke.token(&dke.dev.authorized_email);
    let (kid, public) = dke.key().await;
    assert!(kid.starts_with(&format!("{}/{}/", dke.dev.public_base_url, dke.dev.key_name)), "{kid}");

    let content_key = b"a 32-byte DKE content key for e2e".to_vec();
    let ciphertext = oaep::encrypt(&public, &content_key, &mut rand::rng()).unwrap();
    assert_eq!(plaintext(&dke.decrypt(&kid, &ciphertext, &token).await), content_key);
    // The same through OpenSSL's RSA-OAEP-256, an implementation that shares no code with hyok.
    if let Some(wrapped) = openssl_oaep_encrypt(&public, b"wrapped by OpenSSL") {
        assert_eq!(plaintext(&dke.decrypt(&kid, &wrapped, &token).await), b"wrapped by OpenSSL");
    } else {
        println!("openssl not found: the OpenSSL-wrapped check is skipped");
    }
    // `decrypt` is matched case-insensitively and a protocol-version query is tolerated.
    let body = json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(&ciphertext)}).to_string();
    let path = dke.decrypt_path(&kid).replace("/decrypt", "/Decrypt?protocol-version=2");
    let answer = dke.conn.post(&path, Some(&token), body.as_bytes()).await.unwrap();
    assert_eq!(plaintext(&answer), content_key);

    // n − t nodes down: still served.
    cluster.kill_node(1).unwrap();
    cluster.kill_node(4).unwrap();
    for _ in 0..3 {
        let fresh = oaep::encrypt(&public, b"with two nodes down", &mut rand::rng()).unwrap();
        assert_eq!(plaintext(&dke.decrypt(&kid, &fresh, &token).await), b"with two nodes down");
    }
    // One more: a clean refusal, not a success and not a hang.
    cluster.kill_node(2).unwrap();
    let answer = dke.decrypt(&kid, &ciphertext, &token).await;
    assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
    for id in [1, 2, 4] {
        cluster.restart_node(id).unwrap();
    }
    eventually(Duration::from_secs(60), || async {
        let answer = dke.decrypt(&kid, &ciphertext, &token).await;
        anyhow::ensure!(answer.status == 200, "status {}", answer.status);
        Ok(())
    })
    .await
    .unwrap();

    // Rotation: a new version by the ceremony; GET serves it, the old kid still decrypts.
    let target = Target {
        dev_dir: cluster.dir.path().to_owned(),
        endpoint: Some(cluster.dev.coordinator.endpoint.clone()),
        ca: Some(cluster.dev.tls.ca.clone()),
        cert: Some(cluster.dev.tls.client_cert.clone()),
        key: Some(cluster.dev.tls.client_key.clone()),
        caller_key: None,
    };
    let created =
        hyok_cli::rsa::create(&target, &dke.dev.rsa_key, 2048, &hyok_cli::rsa::Trust::dev(cluster.dir.path()).unwrap())
            .await
            .unwrap();
    assert_eq!(created.version, 2);
    let (new_kid, new_public) = dke.key().await;
    assert!(new_kid.ends_with("/2"), "{new_kid}");
    assert_ne!(new_public.modulus_bytes(), public.modulus_bytes());
    assert_eq!(plaintext(&dke.decrypt(&kid, &ciphertext, &token).await), content_key, "old kid after rotation");
    let rotated = oaep::encrypt(&new_public, b"under version 2", &mut rand::rng()).unwrap();
    assert_eq!(plaintext(&dke.decrypt(&new_kid, &rotated, &token).await), b"under version 2");
    // A ciphertext under one version is no plaintext under the other: one generic 400.
    let crossed = dke.decrypt(&new_kid, &ciphertext, &token).await;
    assert_eq!(crossed.status, 400, "{}", String::from_utf8_lossy(&crossed.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dke_refuses_bad_tokens_with_401_strangers_with_403_and_bad_bodies_with_400() {
    let cluster = Cluster::start(5, 3).expect("start the dev cluster");
    let dke = Dke::new(&cluster).await;
    let (kid, public) = dke.key().await;
    let ciphertext = oaep::encrypt(&public, b"secret", &mut rand::rng()).unwrap();
    let good = dke.token(&dke.dev.authorized_email);
    assert_eq!(plaintext(&dke.decrypt(&kid, &ciphertext, &good).await), b"secret");

    // Tokens: expired, wrong audience, wrong issuer, a foreign signing key, alg none, garbage.
    let dev = &dke.dev;
    let email = dev.authorized_email.as_str();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |claims: Value| {
        let pem = std::fs::read_to_string(&dev.issuer_key).unwrap();
        let der = hyok_threshold::rsa::deal::PrivateKey::from_pem(&pem).unwrap().to_pkcs8_der().unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        hyok_dke::jwt::sign_rs256(&pair, &dev.issuer_kid, &claims).unwrap()
    };
    // Expired an hour ago (well past any leeway), and one without `exp` at all.
    let expired =
        sign(json!({"iss": dev.issuer, "aud": dev.audience, "email": email, "nbf": now - 7200, "exp": now - 3600}));
    let no_exp = sign(json!({"iss": dev.issuer, "aud": dev.audience, "email": email}));
    let wrong_audience =
        mint_token(&dev.issuer_key, &dev.issuer_kid, &dev.issuer, "https://elsewhere.example", email, TOKEN_LIFETIME)
            .unwrap();
    let wrong_issuer =
        mint_token(&dev.issuer_key, &dev.issuer_kid, "https://evil.example/", &dev.audience, email, TOKEN_LIFETIME)
            .unwrap();
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = hyok_cli::dke::ensure_dev_issuer(foreign_dir.path()).unwrap();
    let foreign_key =
        mint_token(&foreign.key_pem, &dev.issuer_kid, &dev.issuer, &dev.audience, email, TOKEN_LIFETIME).unwrap();
    let b64url = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = json!({"iss": dev.issuer, "aud": dev.audience, "email": email, "exp": u64::MAX / 2});
    let alg_none = format!("{}.{}.", b64url(&json!({"alg": "none", "typ": "JWT"})), b64url(&claims));
    for (what, token) in [
        ("expired", expired.as_str()),
        ("missing exp", no_exp.as_str()),
        ("wrong audience", wrong_audience.as_str()),
        ("wrong issuer", wrong_issuer.as_str()),
        ("foreign signing key", foreign_key.as_str()),
        ("alg none", alg_none.as_str()),
        ("garbage", "not.a.token"),
    ] {
        let answer = dke.decrypt(&kid, &ciphertext, token).await;
        assert_eq!(answer.status, 401, "{what}: {}", String::from_utf8_lossy(&answer.body));
        let challenge =
            answer.headers.get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        assert!(challenge.starts_with("Bearer ") && challenge.contains("resource="), "{what}: {challenge:?}");
    }
    let body = json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(&ciphertext)}).to_string();
    let missing = dke.conn.post(&dke.decrypt_path(&kid), None, body.as_bytes()).await.unwrap();
    assert_eq!(missing.status, 401, "no token");

    // A valid token for someone the key does not authorize.
    let stranger = dke.token("mallory@example.com");
    assert_eq!(dke.decrypt(&kid, &ciphertext, &stranger).await.status, 403);

    // Bad bodies: 400 each, never a 500.
    let unknown_kid = kid.replace(&format!("/{}/", dev.key_name), "/nope/");
    let path = dke.decrypt_path(&kid);
    for (what, path, body) in [
        ("wrong alg", path.clone(), json!({"alg": "RSA-OAEP", "value": STANDARD.encode(&ciphertext)}).to_string()),
        ("bad Base64", path.clone(), json!({"alg": "RSA-OAEP-256", "value": "%%%"}).to_string()),
        (
            "short ciphertext",
            path.clone(),
            json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode([1u8; 10])}).to_string(),
        ),
        ("not OAEP", path.clone(), json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode([7u8; 256])}).to_string()),
        ("not JSON", path.clone(), "{".to_owned()),
        ("unknown key name", dke.decrypt_path(&unknown_kid), body.clone()),
        ("unknown version", path.replace("/1/decrypt", "/9/decrypt"), body.clone()),
    ] {
        let answer = dke.conn.post(&path, Some(&good), body.as_bytes()).await.unwrap();
        assert_eq!(answer.status, 400, "{what}: {}", String::from_utf8_lossy(&answer.body));
    }
    assert_eq!(dke.conn.get("/nope").await.unwrap().status, 400, "GET of an unknown key name");
}
