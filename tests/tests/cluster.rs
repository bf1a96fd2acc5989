//! End-to-end tests over the real binaries: a 3-of-5 cluster started by `hyokctl dev`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_e2e::{Cluster, Signed, eventually, hyokctl};
use hyok_proto::v1 as pb;
use hyok_proto::{Role, TlsFiles};
use hyok_threshold::{GroupPublicKey, Wire, kem};
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const KEY: &str = "demo";

async fn encrypt(client: &mut Signed, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let evidence = Some(client.signer.encrypt(KEY, plaintext, aad));
    let r = client
        .encrypt(pb::EncryptRequest {
            key_id: KEY.into(),
            plaintext: plaintext.to_vec(),
            aad: aad.to_vec(),
            request_id: "e2e".into(),
            evidence,
        })
        .await?;
    Ok(r.into_inner().ciphertext)
}

async fn decrypt(client: &mut Signed, ciphertext: &[u8], aad: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let mut request = tonic::Request::new(pb::DecryptRequest {
        key_id: KEY.into(),
        ciphertext: ciphertext.to_vec(),
        aad: aad.to_vec(),
        request_id: "e2e".into(),
        evidence: client.signer.decrypt_blob(KEY, ciphertext),
    });
    // A client deadline far beyond the coordinator's: a hang would show as DEADLINE_EXCEEDED.
    request.set_timeout(Duration::from_secs(20));
    Ok(client.decrypt(request).await?.into_inner().plaintext)
}

async fn unwrap(client: &mut Signed, version: u32, wrapped: &[u8], label: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let evidence = Some(client.signer.unwrap(KEY, version, wrapped, label));
    let r = client
        .unwrap(pb::UnwrapRequest {
            key_id: KEY.into(),
            version,
            wrapped: wrapped.to_vec(),
            label: label.to_vec(),
            request_id: "e2e".into(),
            evidence,
        })
        .await?;
    Ok(r.into_inner().data_key)
}

/// The coordinator's gRPC health for the KeyVault service.
async fn health(cluster: &Cluster) -> anyhow::Result<i32> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.dev.coordinator.endpoint.clone())?
        .tls_config(cluster.admin_tls().client_config(&Role::Coordinator.proof_name())?)?
        .connect()
        .await?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = tonic_health::pb::HealthCheckRequest { service: "hyok.v1.KeyVault".into() };
    Ok(client.check(request).await?.into_inner().status)
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_survive_losing_n_minus_t_nodes_and_fail_cleanly_beyond() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();

    // Round trip, and the AAD is bound.
    let blob = encrypt(&mut client, b"attack at dawn", b"ctx").await.unwrap();
    assert_eq!(blob.len(), 14 + 37, "blob = format, version, seed, ciphertext, tag");
    assert_eq!(decrypt(&mut client, &blob, b"ctx").await.unwrap(), b"attack at dawn");
    assert_eq!(decrypt(&mut client, &blob, b"other").await.unwrap_err().code(), Code::DataLoss);
    let mut tampered = blob.clone();
    tampered[25] ^= 1;
    assert_eq!(decrypt(&mut client, &tampered, b"ctx").await.unwrap_err().code(), Code::DataLoss);

    // Offline wrap with the public key alone, threshold unwrap.
    let pk =
        client.get_public_key(pb::GetPublicKeyRequest { key_id: KEY.into(), version: 0 }).await.unwrap().into_inner();
    let group_key = GroupPublicKey::from_slice(&pk.public_key).unwrap();
    let data_key = [0x42u8; 32];
    let wrapped = kem::wrap(&group_key, &data_key, b"label", &mut rand::rng()).unwrap().to_bytes();
    assert_eq!(unwrap(&mut client, pk.version, &wrapped, b"label").await.unwrap(), data_key);
    assert_eq!(
        unwrap(&mut client, pk.version, &wrapped, b"other label").await.unwrap_err().code(),
        Code::InvalidArgument,
        "a wrap whose proof does not match the label is refused"
    );

    // n − t = 2 nodes down: everything still works.
    cluster.kill_node(1).unwrap();
    cluster.kill_node(2).unwrap();
    for i in 0..10u8 {
        let blob2 = encrypt(&mut client, &[i; 100], b"").await.unwrap();
        assert_eq!(decrypt(&mut client, &blob2, b"").await.unwrap(), vec![i; 100]);
    }
    assert_eq!(decrypt(&mut client, &blob, b"ctx").await.unwrap(), b"attack at dawn");
    assert_eq!(unwrap(&mut client, pk.version, &wrapped, b"label").await.unwrap(), data_key);
    // A key can be created among the t nodes that are up; the others get their shares when
    // they are back.
    let created = client
        .create_key(pb::CreateKeyRequest { key_id: "later".into(), usages: vec![], request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.primary_version, 1);
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    let down: Vec<u32> = status.nodes.iter().filter(|n| !n.reachable).map(|n| n.node_id).collect();
    assert_eq!(down, vec![1, 2]);

    assert_eq!(health(&cluster).await.unwrap(), SERVING, "t nodes up: serving");
    // A third node down: UNAVAILABLE, from the coordinator, not a client-side timeout.
    cluster.kill_node(3).unwrap();
    for _ in 0..3 {
        assert_eq!(decrypt(&mut client, &blob, b"ctx").await.unwrap_err().code(), Code::Unavailable);
        assert_eq!(encrypt(&mut client, b"x", b"").await.unwrap_err().code(), Code::Unavailable);
    }

    // The health probe notices that fewer than t nodes answer.
    let cluster_ref = &cluster;
    eventually(Duration::from_secs(30), || async move {
        let status = health(cluster_ref).await?;
        anyhow::ensure!(status != SERVING, "still SERVING");
        Ok(())
    })
    .await
    .unwrap();

    // Back up: earlier ciphertexts still decrypt.
    for id in 1..=3 {
        cluster.restart_node(id).unwrap();
    }
    let mut c = client.clone();
    let plain = eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        let blob = blob.clone();
        async move { Ok(decrypt(&mut c, &blob, b"ctx").await?) }
    })
    .await
    .unwrap();
    assert_eq!(plain, b"attack at dawn");
    assert_eq!(unwrap(&mut c, pk.version, &wrapped, b"label").await.unwrap(), data_key);
    let cluster_ref = &cluster;
    eventually(Duration::from_secs(30), || async move {
        anyhow::ensure!(health(cluster_ref).await? == SERVING, "not SERVING yet");
        Ok(())
    })
    .await
    .unwrap();
    // With every node back, the nodes that were down get their shares of the key made without
    // them (the coordinator's repair loop reshares it), and it serves with the other two down.
    for id in 1..=2u16 {
        let cluster_ref = &cluster;
        eventually(Duration::from_secs(60), || async move {
            let mut node = cluster_ref.node_client(id).await?;
            let states = node.list_key_states(pb::ListKeyStatesRequest {}).await?.into_inner().keys;
            let held =
                states.iter().any(|k| k.key_id == "later" && k.versions.iter().any(|v| v.active && v.version == 1));
            anyhow::ensure!(held, "node {id} has no share of the key made while it was down yet");
            Ok(())
        })
        .await
        .unwrap();
    }
    let blob = {
        let c = c.clone();
        eventually(Duration::from_secs(30), || {
            let mut c = c.clone();
            async move { Ok(hyok_e2e::demo::encrypt(&mut c, "later", b"made while two were down").await?) }
        })
        .await
        .unwrap()
    };
    cluster.kill_node(4).unwrap();
    cluster.kill_node(5).unwrap();
    let plain = eventually(Duration::from_secs(30), || {
        let mut c = c.clone();
        let blob = blob.clone();
        async move { Ok(hyok_e2e::demo::decrypt(&mut c, "later", &blob).await?) }
    })
    .await
    .unwrap();
    assert_eq!(plain, b"made while two were down", "nodes 1–3, two of them repaired, serve the key");
}

#[tokio::test(flavor = "multi_thread")]
async fn hyokctl_dev_run_again_on_its_directory_reuses_the_keys() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    let blob = encrypt(&mut client, b"kept", b"").await.unwrap();
    let before = client.get_key(pb::GetKeyRequest { key_id: KEY.into() }).await.unwrap().into_inner();
    let first_pids: Vec<u32> = cluster.dev.nodes.iter().map(|n| n.pid).collect();

    cluster.restart_all().unwrap();
    assert_ne!(cluster.dev.nodes.iter().map(|n| n.pid).collect::<Vec<_>>(), first_pids);
    let mut client = cluster.client().await.unwrap();
    let after = client.get_key(pb::GetKeyRequest { key_id: KEY.into() }).await.unwrap().into_inner();
    assert_eq!(after.versions, before.versions, "the demo key is reused, not re-created");
    assert_eq!(decrypt(&mut client, &blob, b"").await.unwrap(), b"kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_with_a_corrupted_share_is_named_and_outvoted() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    let before = encrypt(&mut client, b"before", b"").await.unwrap();

    // Play an attacker with node 2's disk and seal key: replace its share with a wrong one.
    cluster.stop_node(2).unwrap();
    {
        let data = cluster.data_dir(2).unwrap();
        let seal = hyok_store::SealKey::load(data.join("seal.key")).unwrap();
        let store = hyok_store::Store::open(data.join("db"), seal).unwrap();
        let (share, _) = store.ec().active_share(KEY, 1).unwrap();
        let mut wrong = share.to_vec();
        wrong[4] ^= 1; // the scalar's lowest byte: still a canonical scalar, now the wrong one
        store.ec().dangerous_replace_share(KEY, 1, &wrong).unwrap();
    }
    cluster.restart_node(2).unwrap();
    hyok_e2e::all_nodes_reachable(&client).await.unwrap();

    // Every request still gets the right answer; node 2's partials are caught.
    for i in 0..30u8 {
        let blob = encrypt(&mut client, &[i; 10], b"").await.unwrap();
        assert_eq!(decrypt(&mut client, &blob, b"").await.unwrap(), vec![i; 10]);
    }
    assert_eq!(decrypt(&mut client, &before, b"").await.unwrap(), b"before");
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    for node in &status.nodes {
        if node.node_id == 2 {
            assert!(node.invalid_partials > 0, "node 2 must be named: {status:?}");
        } else {
            assert_eq!(node.invalid_partials, 0, "only node 2 is at fault: {status:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_are_refused_and_roles_are_enforced() {
    let cluster = Cluster::start(5, 3).unwrap();
    let endpoint = cluster.dev.coordinator.endpoint.clone();

    // No client certificate at all.
    let no_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(&cluster.dev.tls.ca).unwrap()))
        .domain_name(Role::Coordinator.proof_name());
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())?.tls_config(no_cert)?.connect().await?;
        let mut client = pb::key_vault_client::KeyVaultClient::new(channel);
        client.list_keys(pb::ListKeysRequest {}).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    assert!(refused.is_err(), "a client without a certificate must be refused");

    // A certificate from another CA, with the admin role.
    let foreign = tempfile::tempdir().unwrap();
    hyok_cli::pki::Pki::new(foreign.path()).init(&[1], &[]).unwrap();
    let foreign_tls = TlsFiles {
        ca: cluster.dev.tls.ca.clone(),
        cert: foreign.path().join("admin.pem"),
        key: foreign.path().join("admin-key.pem"),
    };
    let refused = async {
        let mut client = hyok_proto::connect_vault(&endpoint, &foreign_tls).await?;
        client.list_keys(pb::ListKeysRequest {}).await?;
        Ok::<_, anyhow::Error>(())
    }
    .await;
    assert!(refused.is_err(), "a certificate from a foreign CA must be refused");

    // gRPC reflection lists the public service (what grpcurl needs to work without .proto files).
    let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
        .unwrap()
        .tls_config(cluster.admin_tls().client_config(&Role::Coordinator.proof_name()).unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(Ok(answer)) = answers.next().await else { panic!("no reflection answer") };
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"hyok.v1.KeyVault".to_string()), "{names:?}");

    // The front-end role may use keys but not administer them.
    let frontend = hyok_proto::connect_vault(&endpoint, &cluster.tls_for(Role::Frontend)).await.unwrap();
    let mut frontend = Signed { client: frontend, signer: cluster.client().await.unwrap().signer };
    let blob = encrypt(&mut frontend, b"hi", b"").await.unwrap();
    assert_eq!(decrypt(&mut frontend, &blob, b"").await.unwrap(), b"hi");
    let denied = frontend
        .create_key(pb::CreateKeyRequest { key_id: "nope".into(), usages: vec![], request_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Nodes refuse a front-end that goes around the coordinator.
    let node = &cluster.dev.nodes[0];
    let channel = tonic::transport::Endpoint::from_shared(node.endpoint.clone())
        .unwrap()
        .tls_config(cluster.tls_for(Role::Frontend).client_config(&Role::Node(node.id).proof_name()).unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut direct = pb::node_client::NodeClient::new(channel);
    let denied = direct
        .evaluate_batch(pb::EvaluateBatchRequest {
            items: vec![pb::EvaluateItem {
                key_id: KEY.into(),
                version: 1,
                seed: vec![0; 16],
                operation: pb::Operation::Decrypt as i32,
                request_id: String::new(),
                evidence: Some(frontend.signer.decrypt(KEY, 1, &[0; 16])),
                generation: None,
                coefficient: Vec::new(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_are_created_rotated_and_disabled_per_node() {
    let cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();

    // Create with restricted usage; rotation keeps old versions decrypting.
    let info = client
        .create_key(pb::CreateKeyRequest {
            key_id: "payroll".into(),
            usages: vec![pb::KeyUsage::Encrypt as i32, pb::KeyUsage::Decrypt as i32],
            request_id: "e2e".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.primary_version, info.threshold, info.nodes), (1, 3, 5));
    let dup = client
        .create_key(pb::CreateKeyRequest { key_id: "payroll".into(), usages: vec![], request_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    let bad = client
        .create_key(pb::CreateKeyRequest { key_id: "no spaces".into(), usages: vec![], request_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let wrap = client
        .generate_data_key(pb::GenerateDataKeyRequest {
            key_id: "payroll".into(),
            length: 32,
            label: vec![],
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrap.code(), Code::FailedPrecondition, "usage is fixed at creation");

    let enc = |client: &mut Signed, text: &'static [u8]| {
        let mut client = client.clone();
        async move {
            let evidence = Some(client.signer.encrypt("payroll", text, &[]));
            client
                .encrypt(pb::EncryptRequest {
                    key_id: "payroll".into(),
                    plaintext: text.to_vec(),
                    aad: vec![],
                    request_id: String::new(),
                    evidence,
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    let dec = |client: &mut Signed, blob: Vec<u8>| {
        let mut client = client.clone();
        async move {
            let evidence = client.signer.decrypt_blob("payroll", &blob);
            client
                .decrypt(pb::DecryptRequest {
                    key_id: "payroll".into(),
                    ciphertext: blob,
                    aad: vec![],
                    request_id: String::new(),
                    evidence,
                })
                .await
                .map(|r| r.into_inner().plaintext)
        }
    };
    let v1 = enc(&mut client, b"v1").await.unwrap();
    assert_eq!(v1.version, 1);
    let rotated = client
        .rotate_key(pb::RotateKeyRequest { key_id: "payroll".into(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.primary_version, 2);
    assert_ne!(rotated.versions[0].public_key, rotated.versions[1].public_key);
    let v2 = enc(&mut client, b"v2").await.unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(dec(&mut client, v1.ciphertext.clone()).await.unwrap(), b"v1");
    assert_eq!(dec(&mut client, v2.ciphertext.clone()).await.unwrap(), b"v2");

    // The key is disabled on nodes directly (with the pinned coordinator's certificate: the
    // admin's is not pinned): on n − t = 2 nodes it still works, on n − t + 1 = 3 it cannot be
    // used, whatever the coordinator asks.
    let set = |id: u16, enabled: bool| {
        let cluster = &cluster;
        async move {
            let mut node = cluster.node_client_as(id, &cluster.tls_for(Role::Coordinator)).await.unwrap();
            node.set_key_enabled(pb::SetKeyEnabledRequest {
                key_id: "payroll".into(),
                enabled,
                request_id: "e2e".into(),
            })
            .await
            .unwrap();
        }
    };
    set(1, false).await;
    set(2, false).await;
    for _ in 0..5 {
        assert_eq!(dec(&mut client, v2.ciphertext.clone()).await.unwrap(), b"v2");
    }
    set(3, false).await;
    let err = dec(&mut client, v2.ciphertext.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(enc(&mut client, b"x").await.unwrap_err().code(), Code::FailedPrecondition);
    set(3, true).await;
    assert_eq!(dec(&mut client, v2.ciphertext.clone()).await.unwrap(), b"v2");

    // The same through the coordinator.
    let info = client
        .disable_key(pb::DisableKeyRequest { key_id: "payroll".into(), request_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state, pb::KeyState::Disabled as i32);
    assert_eq!(dec(&mut client, v1.ciphertext.clone()).await.unwrap_err().code(), Code::FailedPrecondition);
    client.enable_key(pb::EnableKeyRequest { key_id: "payroll".into(), request_id: String::new() }).await.unwrap();
    assert_eq!(dec(&mut client, v1.ciphertext.clone()).await.unwrap(), b"v1");
}

/// `hyokctl --dev-dir DIR audit verify [--node N]`.
fn audit_verify(dev_dir: &std::path::Path, node: Option<u16>) -> std::process::Output {
    let mut cmd = Command::new(hyokctl());
    cmd.arg("--dev-dir").arg(dev_dir).arg("audit").arg("verify");
    if let Some(id) = node {
        cmd.arg("--node").arg(id.to_string());
    }
    cmd.output().unwrap()
}

/// Node `id`'s whole audit log, read over `ReadAudit` as the admin.
async fn audit_of(cluster: &Cluster, id: u16) -> Vec<pb::AuditEntry> {
    let mut node = cluster.node_client_as(id, &cluster.admin_tls()).await.unwrap();
    node.read_audit(pb::ReadAuditRequest { from_seq: 1, limit: 10_000 }).await.unwrap().into_inner().entries
}

/// What a node acknowledged survives a SIGKILL however long ago sled last flushed: each audit
/// entry is on disk in the node's journal before the node answers, and the restarted node puts
/// back into sled what sled lost. Every entry the killed node showed before the kill is in its
/// chain after it, the chain verifies, and the node goes on appending.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_with_sigkill_keeps_every_audit_entry_it_acknowledged() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    for i in 0..30u8 {
        let blob = encrypt(&mut client, &[i], b"").await.unwrap();
        assert_eq!(decrypt(&mut client, &blob, b"").await.unwrap(), [i]);
    }
    // Traffic has stopped: every entry shown belongs to an answered request.
    let before = audit_of(&cluster, 2).await;
    let served = before.iter().filter(|e| e.operation.starts_with("evaluate:")).count();
    assert!(served > 0, "node 2 served none of the 60 requests");
    cluster.kill_node(2).unwrap();
    cluster.restart_node(2).unwrap();
    let after = audit_of(&cluster, 2).await;
    assert!(
        after.len() >= before.len(),
        "node 2 lost entries: {} before the kill, {} after",
        before.len(),
        after.len()
    );
    assert_eq!(after[..before.len()], before[..], "the same entries, hashes and all");

    for i in 0..10u8 {
        let blob = encrypt(&mut client, &[i], b"").await.unwrap();
        decrypt(&mut client, &blob, b"").await.unwrap();
    }
    let verify = audit_verify(cluster.dir.path(), Some(2));
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && out.contains("audit chain intact"), "{out}");
    println!("sigkill: node 2 had {} entries ({served} evaluations), {} after the restart", before.len(), after.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_chains_verify_and_a_tampered_entry_is_reported() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut client = cluster.client().await.unwrap();
    for i in 0..5u8 {
        let blob = encrypt(&mut client, &[i], b"").await.unwrap();
        decrypt(&mut client, &blob, b"").await.unwrap();
    }
    let dev_dir = cluster.dir.path().to_path_buf();
    let verify = |node: Option<u16>| audit_verify(&dev_dir, node);
    let ok = verify(None);
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}\n{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(out.matches("audit chain intact").count(), 5, "{out}");

    // Edit one entry on node 4's disk, as an intruder would.
    cluster.stop_node(4).unwrap();
    {
        let data = cluster.data_dir(4).unwrap();
        let seal = hyok_store::SealKey::load(data.join("seal.key")).unwrap();
        let store = hyok_store::Store::open(data.join("db"), seal).unwrap();
        store.dangerous_edit_audit(2, |e| e.request_id = "nothing to see".into()).unwrap();
        assert!(store.verify_audit().unwrap().is_err(), "the node's own check sees it too");
    }
    cluster.restart_node(4).unwrap();
    let broken = verify(Some(4));
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(!broken.status.success());
    assert!(out.contains("node 4: audit chain broken at entry 2"), "{out}");
    assert!(verify(Some(5)).status.success());
}
