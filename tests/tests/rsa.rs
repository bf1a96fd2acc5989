//! Threshold RSA end to end over `hyokctl dev` (3-of-5): `hyokctl rsa import` of OpenSSL test
//! keys, OAEP-SHA256 encryption independent of the cluster, RsaDecrypt through the
//! coordinator; rotation by re-import; two nodes killed; bad ciphertexts refused cleanly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_e2e::{Cluster, eventually, hyokctl};
use hyok_proto::v1 as pb;
use hyok_proto::{REASON_HEADER, Reason};
use hyok_threshold::rsa::deal::PrivateKey;
use hyok_threshold::rsa::{RsaPublicKey, oaep};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;
use tonic::Code;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/threshold/tests/fixtures").join(name)
}

/// The public key of a fixture, read here (not from the cluster).
fn public_key(name: &str) -> RsaPublicKey {
    PrivateKey::from_pem(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap().public_key().clone()
}

fn hyokctl_rsa(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(hyokctl()).arg("--dev-dir").arg(cluster.dir.path()).arg("rsa").args(args).output().unwrap()
}

fn import(cluster: &Cluster, name: &str, pem: &str) -> Output {
    let pem = fixture(pem);
    hyokctl_rsa(cluster, &["import", "--name", name, "--pem", pem.to_str().unwrap()])
}

async fn decrypt(
    client: &mut hyok_e2e::Signed,
    name: &str,
    version: u32,
    ciphertext: &[u8],
) -> Result<Vec<u8>, tonic::Status> {
    let mut request = tonic::Request::new(pb::RsaDecryptRequest {
        name: name.into(),
        version,
        ciphertext: ciphertext.to_vec(),
        request_id: "e2e@example.com".into(),
        evidence: Some(client.signer.rsa_decrypt(name, version, ciphertext)),
    });
    request.set_timeout(Duration::from_secs(20));
    Ok(client.rsa_decrypt(request).await?.into_inner().plaintext)
}

const FP_PKCS8: &str = "52fb43dbc2c411a46e5baa553ca714433b2bebba9e872fe552cced0b04d72c6d";
const FP_PKCS1: &str = "c29e9396970497170a65114a0a62e3df874acd0c3801eafd8501ae2c5b02d0c9";

#[tokio::test(flavor = "multi_thread")]
async fn imported_rsa_keys_decrypt_through_the_cluster_rotate_and_survive_two_dead_nodes() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();

    // Version 1 from a PKCS#8 PEM.
    let out = import(&cluster, "dke", "rsa2048-pkcs8.pem");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("rsa key dke version 1 fingerprint {FP_PKCS8}")), "{stdout}");
    let v1 = public_key("rsa2048-pkcs8.pem");
    let info = client.get_rsa_key(pb::GetRsaKeyRequest { name: "dke".into() }).await.unwrap().into_inner();
    assert_eq!(info.primary_version, 1);
    assert_eq!(info.versions[0].fingerprint, FP_PKCS8);
    assert_eq!(info.versions[0].modulus, v1.modulus_bytes());
    assert_eq!(info.versions[0].exponent, vec![1, 0, 1]);
    assert_eq!(info.state, pb::KeyState::Enabled as i32);

    let m1 = b"DKE content key, version 1".to_vec();
    let c1 = oaep::encrypt(&v1, &m1, &mut rand::rng()).unwrap();
    assert_eq!(decrypt(&mut client, "dke", 1, &c1).await.unwrap(), m1);

    // A re-import under the same name (PKCS#1) adds version 2; version 1 still decrypts.
    let out = import(&cluster, "dke", "rsa2048-pkcs1.pem");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("rsa key dke version 2 fingerprint {FP_PKCS1}")), "{stdout}");
    let info = client.get_rsa_key(pb::GetRsaKeyRequest { name: "dke".into() }).await.unwrap().into_inner();
    assert_eq!(info.primary_version, 2);
    assert_eq!(info.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
    let v2 = public_key("rsa2048-pkcs1.pem");
    let m2 = b"DKE content key, version 2".to_vec();
    let c2 = oaep::encrypt(&v2, &m2, &mut rand::rng()).unwrap();
    assert_eq!(decrypt(&mut client, "dke", 2, &c2).await.unwrap(), m2);
    assert_eq!(decrypt(&mut client, "dke", 1, &c1).await.unwrap(), m1);
    // A ciphertext under version 1 presented as version 2 does not decrypt to anything.
    let wrong = decrypt(&mut client, "dke", 2, &c1).await.unwrap_err();
    assert!(matches!(wrong.code(), Code::DataLoss | Code::InvalidArgument), "{wrong:?}");

    let list = hyokctl_rsa(&cluster, &["list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("dke"), "{list:?}");
    let show = hyokctl_rsa(&cluster, &["show", "dke"]);
    assert!(String::from_utf8_lossy(&show.stdout).contains(FP_PKCS1), "{show:?}");

    // Two nodes killed: both versions still decrypt (t = 3 of the 3 left).
    cluster.kill_node(2).unwrap();
    cluster.kill_node(4).unwrap();
    let got = eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        let c1 = c1.clone();
        async move { decrypt(&mut client, "dke", 1, &c1).await.map_err(anyhow::Error::from) }
    })
    .await
    .unwrap();
    assert_eq!(got, m1);
    for _ in 0..3 {
        assert_eq!(decrypt(&mut client, "dke", 2, &c2).await.unwrap(), m2);
    }
    // An import needs every node: refused cleanly, and no version 3 appears.
    let out = import(&cluster, "dke", "rsa2048-pkcs8.pem");
    assert!(!out.status.success());
    let info = client.get_rsa_key(pb::GetRsaKeyRequest { name: "dke".into() }).await.unwrap().into_inner();
    assert_eq!(info.primary_version, 2);

    // A third node down: below t, UNAVAILABLE rather than a hang or a wrong answer.
    cluster.kill_node(5).unwrap();
    let err = decrypt(&mut client, "dke", 2, &c2).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_rsa_requests_get_clean_statuses() {
    let cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    let out = import(&cluster, "dke", "rsa2048-pkcs8.pem");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = public_key("rsa2048-pkcs8.pem");
    let good = oaep::encrypt(&key, b"m", &mut rand::rng()).unwrap();

    // Malformed ciphertexts: INVALID_ARGUMENT.
    for bad in [vec![], vec![1; 255], vec![1; 257], vec![0; 256], key.modulus_bytes(), vec![0xff; 256]] {
        let err = decrypt(&mut client, "dke", 1, &bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{} bytes: {err:?}", bad.len());
    }
    // Well-formed but not OAEP under this key (tampered): DATA_LOSS.
    let mut tampered = good.clone();
    tampered[100] ^= 0x40;
    let err = decrypt(&mut client, "dke", 1, &tampered).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    // Unknown name or version: NOT_FOUND with the reason.
    let err = decrypt(&mut client, "nope", 1, &good).await.unwrap_err();
    assert_eq!((err.code(), Reason::of(&err)), (Code::NotFound, Some(Reason::KeyNotFound)), "{err:?}");
    let err = decrypt(&mut client, "dke", 9, &good).await.unwrap_err();
    assert_eq!((err.code(), Reason::of(&err)), (Code::NotFound, Some(Reason::VersionNotFound)), "{err:?}");
    assert!(err.metadata().get(REASON_HEADER).is_some());
    let err = decrypt(&mut client, "a/b", 1, &good).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Still serving after all that.
    assert_eq!(decrypt(&mut client, "dke", 1, &good).await.unwrap(), b"m");

    // Disabled on n − t + 1 = 3 nodes: FAILED_PRECONDITION key-disabled.
    client.disable_key(pb::DisableKeyRequest { key_id: "dke".into(), request_id: "e2e".into() }).await.unwrap();
    let err = decrypt(&mut client, "dke", 1, &good).await.unwrap_err();
    assert_eq!((err.code(), Reason::of(&err)), (Code::FailedPrecondition, Some(Reason::KeyDisabled)), "{err:?}");
    client.enable_key(pb::EnableKeyRequest { key_id: "dke".into(), request_id: "e2e".into() }).await.unwrap();
    assert_eq!(decrypt(&mut client, "dke", 1, &good).await.unwrap(), b"m");

    // Identity pins: a wrong one refuses the ceremony before anything is dealt; the right ones
    // (as the coordinator reports them) let it through.
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let pem = fixture("rsa2048-pkcs1.pem");
    let wrong = format!("3={}", "ab".repeat(32));
    let out = hyokctl_rsa(
        &cluster,
        &["import", "--name", "pinned", "--pem", pem.to_str().unwrap(), "--expect-identity", &wrong],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was dealt"), "{out:?}");
    let mut args: Vec<String> =
        ["import", "--name", "pinned", "--pem", pem.to_str().unwrap()].iter().map(|s| s.to_string()).collect();
    for node in &status.nodes {
        args.push("--expect-identity".into());
        args.push(format!("{}={}", node.node_id, hex(&node.identity_public_key)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = hyokctl_rsa(&cluster, &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("rsa key pinned version 1 fingerprint {FP_PKCS1}")));

    // A PEM that is not a key is refused by the ceremony before anything is sent.
    let not_key = cluster.dir.path().join("not-a-key.pem");
    std::fs::write(&not_key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").unwrap();
    let out = hyokctl_rsa(&cluster, &["import", "--name", "x", "--pem", not_key.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = client.get_rsa_key(pb::GetRsaKeyRequest { name: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_corrupted_rsa_share_is_outvoted_and_named() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    let out = import(&cluster, "dke", "rsa2048-pkcs8.pem");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = public_key("rsa2048-pkcs8.pem");

    // Play an attacker with node 2's disk and seal key: its share becomes a wrong one, so its
    // partials are well formed but wrong (only the y^e ≡ c check can tell).
    cluster.stop_node(2).unwrap();
    {
        let data = cluster.data_dir(2).unwrap();
        let seal = hyok_store::SealKey::load(data.join("seal.key")).unwrap();
        let store = hyok_store::Store::open(data.join("db"), seal).unwrap();
        let (share, _) = store.rsa().active_share("dke", 1).unwrap();
        let mut wrong = share.to_vec();
        *wrong.last_mut().unwrap() ^= 1;
        store.rsa().dangerous_replace_share("dke", 1, &wrong).unwrap();
    }
    cluster.restart_node(2).unwrap();
    hyok_e2e::all_nodes_reachable(&client).await.unwrap();

    // Every request still decrypts correctly; node 2 is named, and only node 2.
    for i in 0..20u8 {
        let m = vec![i; 32];
        let c = oaep::encrypt(&key, &m, &mut rand::rng()).unwrap();
        let got = eventually(Duration::from_secs(20), || {
            let mut client = client.clone();
            let c = c.clone();
            async move { decrypt(&mut client, "dke", 1, &c).await.map_err(anyhow::Error::from) }
        })
        .await
        .unwrap();
        assert_eq!(got, m);
    }
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    for node in &status.nodes {
        if node.node_id == 2 {
            assert!(node.invalid_partials > 0, "node 2 must be named: {status:?}");
        } else {
            assert_eq!(node.invalid_partials, 0, "only node 2 is at fault: {status:?}");
        }
        assert_eq!(node.identity_public_key.len(), 32, "{status:?}");
    }
}
