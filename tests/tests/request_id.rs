//! One request id through every hop, over the real binaries with JSON logs
//! (`HYOK_LOG_FORMAT=json`, and the per-call access line of `hyok_proto::request_id` at debug):
//! an XKS request's kmsRequestId, a gRPC call without an id (the coordinator makes one) and a
//! DKE request (hyok-dke makes one) each appear in the log lines of hyok-xks / hyok-dke, the
//! coordinator and the nodes that served them, and in the nodes' audit entries; and no line
//! logged inside a request's span lacks an id.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_e2e::Cluster;
use hyok_proto::v1 as pb;
use hyok_xks::client;
use rand::Rng;
use serde_json::{Value, json};
use std::time::SystemTime;

const ENV: &[(&str, &str)] = &[("HYOK_LOG_FORMAT", "json"), ("RUST_LOG", "info,hyok_proto::request_id=debug")];
const T: usize = 3;

/// Every line of a process's log, each a JSON object.
fn lines(cluster: &Cluster, name: &str) -> Vec<Value> {
    let log = cluster.log(name).unwrap();
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}.log: not JSON ({e}): {l}")))
        .collect()
}

fn field<'a>(line: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(line, |v, k| &v[*k]).as_str().unwrap_or_default()
}

/// The ids a line's span carries (a node batch lists several, comma-separated).
fn ids(line: &Value) -> Vec<&str> {
    field(line, &["span", "request_id"]).split(',').filter(|s| !s.is_empty()).collect()
}

/// Lines of `name` logged in a call to `rpc` whose ids include one that `matches`.
fn calls<'a>(all: &'a [Value], rpc: &str, matches: impl Fn(&str) -> bool) -> Vec<&'a Value> {
    all.iter().filter(|l| field(l, &["span", "rpc"]) == rpc && ids(l).into_iter().any(&matches)).collect()
}

fn node_names(cluster: &Cluster) -> Vec<String> {
    cluster.dev.nodes.iter().map(|n| format!("node-{}", n.id)).collect()
}

/// How many nodes logged a call to `rpc` for a request id that `matches`.
fn nodes_with_call(cluster: &Cluster, rpc: &str, matches: impl Fn(&str) -> bool + Copy) -> usize {
    node_names(cluster).iter().filter(|n| !calls(&lines(cluster, n), rpc, matches).is_empty()).count()
}

/// How many nodes hold an audit entry whose request id `matches`, and their operations.
async fn audited(cluster: &Cluster, matches: impl Fn(&str) -> bool) -> (usize, Vec<String>) {
    let (mut nodes, mut operations) = (0, Vec::new());
    for node in &cluster.dev.nodes {
        let mut client = cluster.node_client(node.id).await.unwrap();
        let entries =
            client.read_audit(pb::ReadAuditRequest { from_seq: 1, limit: 100_000 }).await.unwrap().into_inner().entries;
        let mine: Vec<_> = entries.iter().filter(|e| matches(&e.request_id)).collect();
        nodes += usize::from(!mine.is_empty());
        operations.extend(mine.iter().map(|e| e.operation.clone()));
    }
    (nodes, operations)
}

/// A hyok-dke decrypt through the whole stack (the published key, a dev token).
async fn dke_decrypt(cluster: &Cluster) {
    let dke = cluster.dev.dke.clone().unwrap();
    let conn = hyok_dke::client::connect(&dke.base_url, &cluster.dev.tls.ca, true).await.unwrap();
    let key = conn.get(&format!("/{}", dke.key_name)).await.unwrap().json["key"].clone();
    let wrapped = hyok_e2e::wrap_to_published(&key, b"traced content key").unwrap();
    let token = hyok_cli::dke::mint_token(
        &dke.issuer_key,
        &dke.issuer_kid,
        &dke.issuer,
        &dke.audience,
        &dke.authorized_email,
        hyok_cli::dke::TOKEN_LIFETIME,
    )
    .unwrap();
    let path = key["kid"].as_str().unwrap().strip_prefix(&dke.public_base_url).unwrap().to_owned() + "/decrypt";
    let body = json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(&wrapped)}).to_string();
    let answer = conn.post(&path, Some(&token), body.as_bytes()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_id_is_in_the_log_lines_and_audit_entries_of_its_request_on_every_hop() {
    let cluster = Cluster::start_with_env(5, T as u16, ENV).unwrap();
    let tag = format!("{:08x}", rand::rng().next_u32());

    // Through hyok-xks: an Encrypt (kmsRequestId in the body, passed on as request_id) and a
    // GetKeyMetadata (its coordinator call, GetKey, has no request_id field: the metadata entry).
    let (target, ca) = cluster.xks().unwrap();
    let key = cluster.dev.xks.as_ref().unwrap().keys["encrypt_decrypt"].clone();
    let conn = client::connect(&target.base_url, &ca, true, None).await.unwrap();
    let xks_id = format!("trace-xks-{tag}");
    let body = json!({
        "requestMetadata": client::request_metadata("Encrypt", &xks_id),
        "plaintext": STANDARD.encode("traced"),
        "encryptionAlgorithm": "AES_GCM",
    });
    let path = format!("/keys/{key}/encrypt");
    let answer = conn.post_signed(&target, &path, body.to_string().as_bytes(), SystemTime::now()).await.unwrap();
    assert_eq!(answer.status, 200);
    let meta_id = format!("trace-meta-{tag}");
    let body = json!({"requestMetadata": client::request_metadata("DescribeKey", &meta_id)});
    let path = format!("/keys/{key}/metadata");
    let answer = conn.post_signed(&target, &path, body.to_string().as_bytes(), SystemTime::now()).await.unwrap();
    assert_eq!(answer.status, 200);

    // Straight to the coordinator, without an id: it makes one.
    let mut vault = cluster.client().await.unwrap();
    let plaintext = b"traced over gRPC".to_vec();
    let evidence = Some(vault.signer.encrypt(hyok_cli::dev::DEMO_KEY, &plaintext, &[]));
    let sealed = vault
        .encrypt(pb::EncryptRequest {
            key_id: hyok_cli::dev::DEMO_KEY.into(),
            plaintext,
            aad: Vec::new(),
            request_id: format!("trace-grpc-{tag}"),
            evidence,
        })
        .await
        .unwrap()
        .into_inner();
    let evidence = vault.signer.decrypt_blob(hyok_cli::dev::DEMO_KEY, &sealed.ciphertext);
    let opened = vault
        .decrypt(pb::DecryptRequest {
            key_id: hyok_cli::dev::DEMO_KEY.into(),
            ciphertext: sealed.ciphertext,
            aad: Vec::new(),
            request_id: String::new(),
            evidence,
        })
        .await
        .unwrap();
    assert_eq!(opened.into_inner().plaintext, b"traced over gRPC");

    // Through hyok-dke, which makes an id for every request.
    dke_decrypt(&cluster).await;

    // hyok-xks: the request's own line, in the request's span.
    let xks = lines(&cluster, "xks");
    let served: Vec<_> = xks.iter().filter(|l| field(l, &["fields", "kms_request_id"]) == xks_id).collect();
    assert!(!served.is_empty(), "hyok-xks logged nothing for {xks_id}");
    for line in &served {
        assert_eq!(ids(line), [xks_id.as_str()], "{line}");
    }
    // The coordinator: the EncryptDetached call under the kmsRequestId, the GetKey under the
    // metadata's.
    let coordinator = lines(&cluster, "coordinator");
    let encrypt = calls(&coordinator, "/hyok.v1.KeyVault/EncryptDetached", |id| id == xks_id);
    assert!(!encrypt.is_empty(), "no EncryptDetached {xks_id}:\n{}", cluster.log("coordinator").unwrap());
    assert!(!calls(&coordinator, "/hyok.v1.KeyVault/GetKey", |id| id == meta_id).is_empty(), "no GetKey {meta_id}");
    // The nodes: at least t evaluated a partial in a batch that lists it, and audited it.
    assert!(nodes_with_call(&cluster, "/hyok.v1.Node/EvaluateBatch", |id| id == xks_id) >= T);
    let (nodes, operations) = audited(&cluster, |id| id == xks_id).await;
    assert!(nodes >= T && operations.iter().all(|o| o == "evaluate:encrypt"), "{nodes} nodes: {operations:?}");

    // The gRPC Decrypt without an id: the coordinator's own, in its line and every node's entry.
    let made: Vec<String> = calls(&coordinator, "/hyok.v1.KeyVault/Decrypt", |id| id.starts_with("coordinator-"))
        .iter()
        .flat_map(|l| ids(l))
        .map(str::to_owned)
        .collect();
    assert!(!made.is_empty(), "the coordinator logged no Decrypt under an id of its own");
    let made = made[0].clone();
    assert!(nodes_with_call(&cluster, "/hyok.v1.Node/EvaluateBatch", |id| id == made) >= T, "{made}");
    let (nodes, operations) = audited(&cluster, |id| id == made).await;
    assert!(nodes >= T && operations.iter().all(|o| o == "evaluate:decrypt"), "{made}: {nodes} nodes: {operations:?}");

    // hyok-dke: its id on the request's lines, then at the front of the coordinator's and the
    // nodes' RSA calls and of their audit entries.
    let dke = lines(&cluster, "dke");
    let decrypted = dke
        .iter()
        .find(|l| field(l, &["fields", "message"]) == "decrypted")
        .unwrap_or_else(|| panic!("hyok-dke logged no decrypt"));
    let dke_id = ids(decrypted).first().copied().unwrap_or_default().to_owned();
    assert!(dke_id.starts_with("dke-"), "{decrypted}");
    let ours = |id: &str| id.starts_with(&dke_id);
    assert!(!calls(&coordinator, "/hyok.v1.KeyVault/RsaDecrypt", ours).is_empty(), "no RsaDecrypt for {dke_id}");
    assert!(nodes_with_call(&cluster, "/hyok.v1.Node/RsaPartial", ours) >= T, "{dke_id}");
    let (nodes, operations) = audited(&cluster, ours).await;
    assert!(nodes >= T && operations.iter().all(|o| o == "rsa:partial"), "{dke_id}: {nodes} nodes: {operations:?}");

    // No line logged inside a request or call span lacks an id, in any process.
    let mut names = node_names(&cluster);
    names.extend(["coordinator", "xks", "dke"].map(String::from));
    for name in &names {
        for line in lines(&cluster, name) {
            let in_span = line.get("spans").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
            assert!(!in_span || !ids(&line).is_empty(), "{name}: a line in a span without an id: {line}");
        }
    }
}
