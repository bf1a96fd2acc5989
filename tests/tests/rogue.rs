//! The rogue suite: a harness holds one party's credentials from the cluster's PKI and plays that
//! party lying, against real node processes. Every attack gets a clear refusal (or a result
//! that is useless to the attacker), stores nothing, and is named in the node's audit log.

use hyok_e2e::Cluster;
use hyok_proto::Role;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::{PartialEvaluation, PublicKeyPackage, Wire, aead};
use tonic::transport::{Channel, Endpoint};

/// A party holding `role`'s certificate and key, speaking gRPC straight to the nodes.
struct Rogue<'a> {
    cluster: &'a Cluster,
    role: Role,
}

impl Rogue<'_> {
    async fn node(&self, id: u16) -> NodeClient<Channel> {
        let node = self.cluster.dev.nodes.iter().find(|n| n.id == id).unwrap();
        let tls = self.cluster.tls_for(self.role).client_config(&Role::Node(id).proof_name()).unwrap();
        let channel = Endpoint::from_shared(node.endpoint.clone()).unwrap().tls_config(tls).unwrap().connect().await;
        NodeClient::new(channel.unwrap())
    }

    /// One DPRF evaluation from node `id`: its partial, or its refusal.
    async fn evaluate(&self, id: u16, item: pb::EvaluateItem) -> Result<PartialEvaluation, pb::ItemError> {
        let answer = self.node(id).await.evaluate_batch(pb::EvaluateBatchRequest { items: vec![item] }).await;
        match answer.unwrap().into_inner().results.remove(0).result {
            Some(pb::partial_result::Result::Partial(bytes)) => Ok(PartialEvaluation::from_bytes(&bytes).unwrap()),
            Some(pb::partial_result::Result::Error(e)) => Err(e),
            None => panic!("empty result"),
        }
    }

    /// The key's public package as node `id` holds it.
    async fn package(&self, id: u16, key_id: &str, version: u32) -> PublicKeyPackage {
        let state = self.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: key_id.into() }).await;
        let state = state.unwrap().into_inner();
        let v = state.versions.iter().find(|v| v.version == version).unwrap();
        PublicKeyPackage::from_bytes(&v.public_key_package).unwrap()
    }

    async fn audit(&self, id: u16) -> Vec<pb::AuditEntry> {
        let mut client = self.cluster.node_client(id).await.unwrap();
        client.read_audit(pb::ReadAuditRequest { from_seq: 1, limit: 10_000 }).await.unwrap().into_inner().entries
    }
}

fn item(key_id: &str, version: u32, seed: &[u8], operation: pb::Operation, request_id: &str) -> pb::EvaluateItem {
    pb::EvaluateItem {
        key_id: key_id.into(),
        version,
        seed: seed.to_vec(),
        operation: operation as i32,
        request_id: request_id.into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_cannot_decrypt_with_an_encrypt_only_key() {
    let cluster = Cluster::start(5, 3).unwrap();
    let mut admin = cluster.client().await.unwrap();
    let created = admin
        .create_key(pb::CreateKeyRequest {
            key_id: "sealed-drop".into(),
            usages: vec![pb::KeyUsage::Encrypt as i32],
            request_id: "rogue-setup".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // A ciphertext made through the coordinator, captured by the attacker.
    let secret = b"the merger closes on friday".to_vec();
    let captured = admin
        .encrypt_detached(pb::EncryptDetachedRequest {
            key_id: "sealed-drop".into(),
            plaintext: secret.clone(),
            aad: b"board".to_vec(),
            request_id: "rogue-setup".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(captured.version, created.primary_version);

    let rogue = Rogue { cluster: &cluster, role: Role::Coordinator };
    let package = rogue.package(1, "sealed-drop", captured.version).await;
    let on_captured =
        DprfInput::new("sealed-drop", captured.version, captured.seed.clone().try_into().unwrap()).unwrap();
    let tag: [u8; 16] = captured.tag.clone().try_into().unwrap();

    // Asked to DECRYPT, every node refuses: the key does not allow it.
    for id in 1..=3 {
        let refused = rogue
            .evaluate(
                id,
                item("sealed-drop", captured.version, &captured.seed, pb::Operation::Decrypt, "rogue-decrypt"),
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::UsageNotAllowed as i32, "node {id}");
    }
    // Asked to ENCRYPT with the captured seed as the nonce, the nodes evaluate on a seed they
    // derive from it: the partials are worthless for the captured ciphertext.
    let mut partials = Vec::new();
    for id in 1..=3 {
        let p = rogue
            .evaluate(
                id,
                item("sealed-drop", captured.version, &captured.seed, pb::Operation::Encrypt, "rogue-encrypt"),
            )
            .await
            .unwrap();
        partials.push(p);
    }
    let opened = aead::decrypt(&package, &on_captured, &partials, b"board", &captured.ciphertext, &tag);
    assert!(opened.is_err(), "ENCRYPT partials must not open a ciphertext");
    assert!(
        dprf::vartime_find_invalid(&package, &on_captured, &partials, &mut rand::rng()).unwrap().len()
            == partials.len(),
        "no node evaluated on the captured seed"
    );

    // Every node names the refused attempt in its audit log.
    for id in 1..=3 {
        let audit = rogue.audit(id).await;
        assert!(
            audit.iter().any(|e| e.operation == "refused:evaluate:decrypt:usage_not_allowed"
                && e.request_id == "rogue-decrypt"
                && e.caller.contains("coordinator")),
            "node {id}: {audit:?}"
        );
    }
}
