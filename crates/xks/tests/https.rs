//! hyok-xks in-process over real HTTPS, with no cluster behind it: what the proxy decides on its
//! own — mutual TLS with a client CA and subject name, SigV4 credentials reloaded without a
//! restart, and a clean DependencyTimeoutException when the coordinator cannot be reached.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_frontend::{ConfigFile as _, Frontend as _};
use hyok_xks::client::{self, Connection, Target};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const KMS_SUBJECT: &str = "cks.kms.us-east-1.amazonaws.com";

struct Pki {
    dir: tempfile::TempDir,
}

fn ca(cn: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params, KeyPair::generate().unwrap())
}

impl Pki {
    /// Two CAs; under the first: the server (localhost), KMS's client, a client with another
    /// subject; under the second: a client with KMS's subject.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
        let (ca_params, ca_key) = ca("test CA");
        write("ca.pem", ca_params.self_signed(&ca_key).unwrap().pem());
        let issuer = Issuer::new(ca_params, ca_key);
        let (other_params, other_key) = ca("other CA");
        write("other-ca.pem", other_params.self_signed(&other_key).unwrap().pem());
        let other = Issuer::new(other_params, other_key);
        for (name, cn, sans, by) in [
            ("server", "localhost", vec!["localhost".to_owned()], &issuer),
            ("kms", KMS_SUBJECT, vec![], &issuer),
            ("stranger", "cks.kms.eu-west-1.amazonaws.com", vec![], &issuer),
            ("foreign", KMS_SUBJECT, vec![], &other),
        ] {
            let mut params = CertificateParams::new(sans).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            write(&format!("{name}.pem"), params.signed_by(&key, by).unwrap().pem());
            write(&format!("{name}-key.pem"), key.serialize_pem());
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn credential() -> hyok_xks::credentials::Credential {
    hyok_xks::credentials::generate(&mut rand::rng())
}

/// Starts hyok-xks on a free port with `mtls`, a coordinator that is not there, and the given
/// credentials; returns the base URL.
async fn start(pki: &Pki, mtls: bool, credentials: &Path) -> String {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nbudget_ms = 200\n[tls]\ncert = {:?}\nkey = {:?}\n",
        pki.path("server.pem"),
        pki.path("server-key.pem")
    );
    if mtls {
        text.push_str(&format!("client_ca = {:?}\nclient_subject = \"{KMS_SUBJECT}\"\n", pki.path("ca.pem")));
    }
    text.push_str(&format!(
        "[coordinator]\nendpoint = \"https://127.0.0.1:1\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n\
         [[key_stores]]\nuri_prefix = \"test\"\ncredentials_file = {:?}\n\
         [[key_stores.keys]]\nexternal_id = \"k\"\nkey_id = \"k\"\nusage = \"encrypt_decrypt\"\n\
         [[key_stores.keys]]\nexternal_id = \"guarded\"\nkey_id = \"k\"\nusage = \"encrypt_decrypt\"\n\
         allowed_principals = [\"arn:aws:iam::123456789012:user/*\"]\n",
        pki.path("ca.pem"),
        pki.path("server.pem"),
        pki.path("server-key.pem"),
        credentials
    ));
    let path = pki.path("xks.toml");
    std::fs::write(&path, text).unwrap();
    let config = hyok_xks::Config::load(&path).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(config.run(listener, std::future::pending()));
    format!("https://localhost:{port}/test/kms/xks/v1")
}

fn target(base_url: &str, credential: &hyok_xks::credentials::Credential) -> Target {
    Target {
        base_url: base_url.to_owned(),
        region: "us-east-1".into(),
        access_key_id: credential.access_key_id.clone(),
        secret: credential.secret().to_owned(),
    }
}

/// GET /ping over a connection presenting `client` (certificate stem), or the handshake's error.
async fn ping(pki: &Pki, base_url: &str, client: Option<&str>) -> anyhow::Result<u16> {
    let (cert, key) = match client {
        Some(stem) => (pki.path(&format!("{stem}.pem")), pki.path(&format!("{stem}-key.pem"))),
        None => (PathBuf::new(), PathBuf::new()),
    };
    let identity = client.map(|_| (cert.as_path(), key.as_path()));
    let conn = client::connect(base_url, &pki.path("ca.pem"), true, identity).await?;
    let (host, port, _) = client::split_url(base_url)?;
    let request = http::Request::get(format!("https://{host}:{port}/ping"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    Ok(conn.send(request).await?.status.as_u16())
}

#[tokio::test]
async fn mutual_tls_requires_the_configured_ca_and_subject() {
    let pki = Pki::new();
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(&[credential()]).as_bytes()).unwrap();
    let url = start(&pki, true, &creds).await;
    assert_eq!(ping(&pki, &url, Some("kms")).await.unwrap(), 200);
    for refused in [None, Some("stranger"), Some("foreign")] {
        assert!(ping(&pki, &url, refused).await.is_err(), "{refused:?} must not get through the handshake");
    }
}

async fn health(conn: &Connection, target: &Target) -> client::Answer {
    let body = serde_json::json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "r"}});
    conn.post_signed(target, "/health", body.to_string().as_bytes(), SystemTime::now()).await.unwrap()
}

#[tokio::test]
async fn credentials_added_to_the_file_work_without_a_restart_and_removed_ones_stop() {
    let pki = Pki::new();
    let (old, new) = (credential(), credential());
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(std::slice::from_ref(&old)).as_bytes()).unwrap();
    let url = start(&pki, false, &creds).await;
    let conn = client::connect(&url, &pki.path("ca.pem"), true, None).await.unwrap();
    assert_ne!(health(&conn, &target(&url, &old)).await.status, 401);
    assert_eq!(health(&conn, &target(&url, &new)).await.json["errorName"], "AuthenticationFailedException");

    // Rotation, step 1: both credentials live.
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(&[old.clone(), new.clone()]).as_bytes()).unwrap();
    let mut both = false;
    for _ in 0..100 {
        if health(&conn, &target(&url, &new)).await.status != 401 {
            both = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(both, "the added credential was never accepted");
    assert_ne!(health(&conn, &target(&url, &old)).await.status, 401);

    // Step 2: the old one removed.
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(std::slice::from_ref(&new)).as_bytes()).unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if health(&conn, &target(&url, &old)).await.status == 401 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the removed credential was still accepted");
    assert_ne!(health(&conn, &target(&url, &new)).await.status, 401);
}

#[tokio::test]
async fn an_unreachable_coordinator_gives_clean_errors_and_an_unavailable_fleet() {
    let pki = Pki::new();
    let cred = credential();
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(std::slice::from_ref(&cred)).as_bytes()).unwrap();
    let url = start(&pki, false, &creds).await;
    let conn = client::connect(&url, &pki.path("ca.pem"), false, None).await.unwrap();
    let target = target(&url, &cred);

    let answer = health(&conn, &target).await;
    assert_eq!(answer.status, 200);
    let fleet = answer.json["ekmFleetDetails"].as_array().unwrap();
    assert!(!fleet.is_empty() && fleet.len() <= 10);
    assert!(fleet.iter().all(|e| e["healthStatus"] == "UNAVAILABLE"), "{fleet:?}");

    let body = serde_json::json!({"requestMetadata": client::request_metadata("Encrypt", "r"),
        "plaintext": "AAAA", "encryptionAlgorithm": "AES_GCM"});
    let answer =
        conn.post_signed(&target, "/keys/k/encrypt", body.to_string().as_bytes(), SystemTime::now()).await.unwrap();
    assert_eq!(answer.status, 503, "{:?}", answer.json);
    assert_eq!(answer.json["errorName"], "DependencyTimeoutException");
    // Responses are one line of JSON.
    assert!(!answer.body.contains(&b'\n'));
}

#[tokio::test]
async fn secondary_authorization_refuses_other_principals_but_never_health() {
    let pki = Pki::new();
    let cred = credential();
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(std::slice::from_ref(&cred)).as_bytes()).unwrap();
    let url = start(&pki, false, &creds).await;
    let conn = client::connect(&url, &pki.path("ca.pem"), true, None).await.unwrap();
    let target = target(&url, &cred);
    let metadata = |principal: &str| {
        let mut meta = client::request_metadata("DescribeKey", "r");
        meta["awsPrincipalArn"] = principal.into();
        serde_json::json!({ "requestMetadata": meta }).to_string()
    };
    let ask = |body: String| {
        let (conn, target) = (conn.clone(), target.clone());
        async move { conn.post_signed(&target, "/keys/guarded/metadata", body.as_bytes(), SystemTime::now()).await.unwrap() }
    };
    let stranger = ask(metadata("arn:aws:iam::999999999999:user/Mallory")).await;
    assert_eq!(stranger.status, 403);
    assert_eq!(stranger.json["errorName"], "AccessDeniedException");
    // An allowed principal gets past authorization (to the unreachable cluster: 503).
    let allowed = ask(metadata("arn:aws:iam::123456789012:user/Alice")).await;
    assert_eq!(allowed.status, 503, "{:?}", allowed.json);
    // A key without patterns admits anyone; health is never subject to them.
    let open = conn
        .post_signed(
            &target,
            "/keys/k/metadata",
            metadata("arn:aws:iam::999999999999:user/Mallory").as_bytes(),
            SystemTime::now(),
        )
        .await
        .unwrap();
    assert_eq!(open.status, 503);
    assert_eq!(health(&conn, &target).await.status, 200);
}

#[tokio::test]
async fn tls_1_2_clients_are_served() {
    let pki = Pki::new();
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(&[credential()]).as_bytes()).unwrap();
    let url = start(&pki, false, &creds).await;
    let (host, port, _) = client::split_url(&url).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version), "{:?}", version.version);
    }
}

#[tokio::test]
async fn oversized_bodies_get_unsupported_operation_not_a_dropped_connection() {
    let pki = Pki::new();
    let cred = credential();
    let creds = pki.path("creds.toml");
    std::fs::write(&creds, hyok_xks::credentials::to_file_text(std::slice::from_ref(&cred)).as_bytes()).unwrap();
    let url = start(&pki, false, &creds).await;
    let target = target(&url, &cred);
    for h2 in [false, true] {
        // ~200 KB is read and discarded whole, and the connection serves on; ~2 MB is read up
        // to the toolkit's bound, answered, and (HTTP/1.1) the connection closed.
        for (size, drained) in [(200 * 1024, true), (2 * 1024 * 1024, false)] {
            let conn = client::connect(&url, &pki.path("ca.pem"), h2, None).await.unwrap();
            let body = vec![b' '; size];
            let answer = conn
                .post_signed(&target, "/keys/k/encrypt", &body, SystemTime::now())
                .await
                .unwrap_or_else(|e| panic!("{size} bytes over h2={h2}: {e:#}"));
            assert_eq!(answer.status, 501, "{size} bytes over h2={h2}: {:?}", answer.json);
            assert_eq!(answer.json["errorName"], "UnsupportedOperationException");
            let closes = answer.headers.get(http::header::CONNECTION).is_some_and(|v| v == "close");
            assert_eq!(closes, !h2 && !drained, "{size} bytes over h2={h2}");
            if h2 || drained {
                assert_eq!(health(&conn, &target).await.status, 200, "{size} bytes over h2={h2}");
            }
        }
    }
}
