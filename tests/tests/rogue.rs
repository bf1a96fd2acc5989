//! The rogue suite: a harness holds one party's credentials from the cluster's PKI and plays that
//! party lying, against real node processes. Every attack gets a clear refusal (or a result
//! that is useless to the attacker), stores nothing, and is named in the node's audit log.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_e2e::Cluster;
use hyok_evidence::caller::Signer;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::{Role, TlsFiles};
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::{NodeId, NodeSecrets, PartialEvaluation, PublicKeyPackage, Wire, aead};
use tonic::transport::{Channel, Endpoint};

/// A party holding a certificate and key from the cluster CA (a role's own, or one it minted),
/// speaking gRPC straight to the nodes.
struct Rogue<'a> {
    cluster: &'a Cluster,
    tls: TlsFiles,
}

impl<'a> Rogue<'a> {
    /// The party holding `role`'s certificate from the cluster's PKI.
    fn holding(cluster: &'a Cluster, role: Role) -> Self {
        Rogue { cluster, tls: cluster.tls_for(role) }
    }

    async fn node(&self, id: u16) -> NodeClient<Channel> {
        let node = self.cluster.dev.nodes.iter().find(|n| n.id == id).unwrap();
        let tls = self.tls.client_config(&Role::Node(id).proof_name()).unwrap();
        let channel = Endpoint::from_shared(node.endpoint.clone()).unwrap().tls_config(tls).unwrap().connect().await;
        NodeClient::new(channel.unwrap())
    }

    /// One DPRF evaluation from node `id`: its partial, or its refusal.
    async fn evaluate(&self, id: u16, item: pb::EvaluateItem) -> Result<PartialEvaluation, pb::ItemError> {
        let request = pb::EvaluateBatchRequest { items: vec![item.clone()] };
        let answer = self.node(id).await.evaluate_batch(request).await.unwrap().into_inner();
        if let Some(pb::partial_result::Result::Error(e)) = &answer.results[0].result {
            return Err(e.clone());
        }
        // The package as the node holds it, read with the admin's certificate.
        let mut admin = self.cluster.node_client(id).await.unwrap();
        let state = admin.get_key_state(pb::GetKeyStateRequest { key_id: item.key_id.clone() }).await.unwrap();
        let state = state.into_inner();
        let v = state.versions.iter().find(|v| v.version == item.version).unwrap();
        let package = PublicKeyPackage::from_bytes(&v.public_key_package).unwrap();
        hyok_e2e::proven_partial(&package, &item, answer)
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

fn item(
    key_id: &str,
    version: u32,
    seed: &[u8],
    operation: pb::Operation,
    request_id: &str,
    evidence: Option<pb::Evidence>,
) -> pb::EvaluateItem {
    pb::EvaluateItem {
        key_id: key_id.into(),
        version,
        seed: seed.to_vec(),
        operation: operation as i32,
        request_id: request_id.into(),
        evidence,
        generation: None,
        coefficient: Vec::new(),
    }
}

/// A valid encryption item: signed by the operator tools' caller key, with the nonce its
/// signature gives.
fn signed_encrypt(signer: &Signer, key_id: &str, version: u32, request_id: &str) -> pb::EvaluateItem {
    let evidence = signer.encrypt(key_id, b"anything", b"");
    let nonce = hyok_evidence::encryption_nonce(&evidence).unwrap();
    item(key_id, version, &nonce, pb::Operation::Encrypt, request_id, Some(evidence))
}

/// A rogue coordinator holding a captured ciphertext of an encrypt-only key, and the signed
/// request that made it: without evidence, or with the encryption's own evidence steered onto
/// the captured seed or called a DECRYPT, every node refuses; the encryption's evidence used as
/// signed yields partials on the seed the nodes derive, worthless for the ciphertext; even an
/// application's genuine decrypt signature meets the key's usage. Each refusal is audited.
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
    // A ciphertext made through the coordinator, captured by the attacker with its request.
    let secret = b"the merger closes on friday".to_vec();
    let signed = admin.signer.encrypt("sealed-drop", &secret, b"board");
    let captured = admin
        .encrypt_detached(pb::EncryptDetachedRequest {
            key_id: "sealed-drop".into(),
            plaintext: secret.clone(),
            aad: b"board".to_vec(),
            request_id: "rogue-setup".into(),
            evidence: Some(signed.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(captured.version, created.primary_version);
    let nonce = hyok_evidence::encryption_nonce(&signed).unwrap();

    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let package = rogue.package(1, "sealed-drop", captured.version).await;
    let on_captured =
        DprfInput::new("sealed-drop", captured.version, captured.seed.clone().try_into().unwrap()).unwrap();
    let tag: [u8; 16] = captured.tag.clone().try_into().unwrap();
    let version = captured.version;
    let denied = pb::item_error::Code::PermissionDenied as i32;

    for id in 1..=3 {
        let ask = |op, seed: &[u8], evidence: Option<pb::Evidence>, rid: &str| {
            item("sealed-drop", version, seed, op, rid, evidence)
        };
        // No evidence; the encryption's evidence with the captured seed as its nonce; the
        // encryption's evidence called a DECRYPT.
        for (what, attempt) in [
            ("no evidence", ask(pb::Operation::Decrypt, &captured.seed, None, "rogue-bare")),
            ("steered nonce", ask(pb::Operation::Encrypt, &captured.seed, Some(signed.clone()), "rogue-steer")),
            ("encrypt as decrypt", ask(pb::Operation::Decrypt, &nonce, Some(signed.clone()), "rogue-switch")),
        ] {
            let refused = rogue.evaluate(id, attempt).await.unwrap_err();
            assert_eq!(refused.code, denied, "node {id}, {what}: {refused:?}");
        }
        // An application's real decrypt signature for the ciphertext: the key's usage refuses.
        let genuine = admin.signer.decrypt("sealed-drop", version, &captured.seed);
        let refused = rogue
            .evaluate(id, ask(pb::Operation::Decrypt, &captured.seed, Some(genuine), "rogue-decrypt"))
            .await
            .unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::UsageNotAllowed as i32, "node {id}");
    }
    // The encryption's evidence as signed: partials on the seed derived from its nonce, which
    // do not open the ciphertext.
    let mut partials = Vec::new();
    for id in 1..=3 {
        let p = rogue
            .evaluate(
                id,
                item("sealed-drop", version, &nonce, pb::Operation::Encrypt, "rogue-encrypt", Some(signed.clone())),
            )
            .await
            .unwrap();
        partials.push(p);
    }
    let derived =
        DprfInput::new("sealed-drop", version, dprf::encryption_seed("sealed-drop", version, &nonce)).unwrap();
    assert!(dprf::vartime_find_invalid(&package, &derived, &partials, &mut rand::rng()).unwrap().is_empty());
    let opened = aead::decrypt(&package, &on_captured, &partials, b"board", &captured.ciphertext, &tag);
    assert!(opened.is_ok(), "the encryption's own evidence gives back only what that encryption made");
    assert_eq!(
        opened.unwrap().value.as_slice(),
        secret.as_slice(),
        "… which is this very ciphertext, that its requester already had"
    );
    // Coefficients of the rogue's choosing change nothing: the nodes' values, scaled by public
    // factors it picked, open exactly what the plain ones open; a zero factor (a value that
    // says nothing of the share) is refused as invalid.
    let mut seven = [0u8; 32];
    seven[0] = 7;
    let mut scaled = Vec::new();
    for id in 1..=3 {
        let asked = pb::EvaluateItem {
            coefficient: seven.to_vec(),
            ..item("sealed-drop", version, &nonce, pb::Operation::Encrypt, "rogue-scaled", Some(signed.clone()))
        };
        scaled.push(rogue.evaluate(id, asked).await.unwrap());
        let zero = pb::EvaluateItem {
            coefficient: vec![0; 32],
            ..item("sealed-drop", version, &nonce, pb::Operation::Encrypt, "rogue-zero", Some(signed.clone()))
        };
        let refused = rogue.evaluate(id, zero).await.unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::Invalid as i32, "node {id}: {refused:?}");
    }
    let opened = aead::decrypt(&package, &on_captured, &scaled, b"board", &captured.ciphertext, &tag).unwrap();
    assert_eq!(opened.value.as_slice(), secret.as_slice(), "scaled values open the same ciphertext, nothing more");

    // Every node names the refused attempts in its audit log.
    for id in 1..=3 {
        let audit = rogue.audit(id).await;
        let refused = |op: &str, rid: &str| {
            audit.iter().any(|e| e.operation == op && e.request_id == rid && e.caller.contains("coordinator"))
        };
        assert!(refused("refused:evaluate:decrypt:permission_denied", "rogue-bare"), "node {id}: {audit:?}");
        assert!(refused("refused:evaluate:encrypt:permission_denied", "rogue-steer"), "node {id}: {audit:?}");
        assert!(refused("refused:evaluate:decrypt:permission_denied", "rogue-switch"), "node {id}: {audit:?}");
        assert!(refused("refused:evaluate:decrypt:usage_not_allowed", "rogue-decrypt"), "node {id}: {audit:?}");
        assert!(refused("refused:evaluate:encrypt:invalid", "rogue-zero"), "node {id}: {audit:?}");
    }
}

/// Runs one of the real operator commands and returns its stdout; panics with its stderr if it
/// fails.
fn operator_command(program: std::path::PathBuf, args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn assert_disabled(status: &tonic::Status, what: &str) {
    assert_eq!(
        (status.code(), hyok_proto::Reason::of(status)),
        (tonic::Code::FailedPrecondition, Some(hyok_proto::Reason::KeyDisabled)),
        "{what}: {status:?}"
    );
}

/// The sovereign veto: the operators of n − t + 1 = 3 of 5 nodes veto a key through their
/// node-local endpoints. A harness with the coordinator's certificate then turns the key on at
/// every node, and the admin enables it through the coordinator: the key stays unusable, every
/// vetoing node still reports the veto, and their audit logs name the veto and the refusals.
/// Only a vetoing operator's lift brings it back.
#[tokio::test(flavor = "multi_thread")]
async fn once_n_minus_t_plus_1_operators_veto_a_key_neither_the_coordinator_nor_an_admin_can_use_it() {
    let cluster = Cluster::start(5, 3).unwrap();
    let mut admin = cluster.client().await.unwrap();
    admin
        .create_key(pb::CreateKeyRequest { key_id: "sovereign".into(), usages: vec![], request_id: "setup".into() })
        .await
        .unwrap();
    let evidence = Some(admin.signer.encrypt("sovereign", b"customer records", b"eu"));
    let sealed = admin
        .encrypt_detached(pb::EncryptDetachedRequest {
            key_id: "sovereign".into(),
            plaintext: b"customer records".to_vec(),
            aad: b"eu".to_vec(),
            request_id: "setup".into(),
            evidence,
        })
        .await
        .unwrap()
        .into_inner();
    let decrypt = pb::DecryptDetachedRequest {
        key_id: "sovereign".into(),
        seed: sealed.seed.clone(),
        ciphertext: sealed.ciphertext.clone(),
        tag: sealed.tag.clone(),
        version: sealed.version,
        aad: b"eu".to_vec(),
        request_id: "after-veto".into(),
        evidence: None,
    };
    let signer = admin.signer.clone();
    let decrypt_signed = || pb::DecryptDetachedRequest {
        evidence: Some(signer.decrypt("sovereign", sealed.version, &sealed.seed)),
        ..decrypt.clone()
    };

    // Three operators veto through their own node's socket: two with `hyokctl node --node N`
    // (the dev cluster's operators), one with `hyok-node veto --data-dir`.
    let dev_dir = cluster.dir.path().as_os_str();
    for id in ["1", "2"] {
        let args = ["--dev-dir", "", "node", "veto", "--node", id, "sovereign", "data leaves the EU"];
        let mut args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        args[1] = dev_dir;
        let out = operator_command(hyok_e2e::hyokctl(), &args);
        assert!(out.contains("vetoed sovereign"), "{out}");
    }
    let data_dir = cluster.data_dir(3).unwrap();
    let args: Vec<&std::ffi::OsStr> =
        vec!["veto".as_ref(), "--data-dir".as_ref(), data_dir.as_os_str(), "sovereign".as_ref()];
    operator_command(hyok_e2e::bin_dir().join("hyok-node"), &args);

    // The rogue coordinator turns the key on at every node directly: each answers, but a
    // vetoing node's effective state stays disabled.
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    for id in 1..=5u16 {
        let req =
            pb::SetKeyEnabledRequest { key_id: "sovereign".into(), enabled: true, request_id: "rogue-enable".into() };
        let state = rogue.node(id).await.set_key_enabled(req).await.unwrap().into_inner();
        assert_eq!((state.enabled, state.vetoed), (id > 3, id <= 3), "node {id}: {state:?}");
    }
    // The admin's EnableKey through the coordinator cannot reach t serving nodes, and says why.
    let refused = admin
        .enable_key(pb::EnableKeyRequest { key_id: "sovereign".into(), request_id: "admin-enable".into() })
        .await
        .unwrap_err();
    assert_disabled(&refused, "EnableKey");
    assert!(refused.message().contains("vetoed by the operators of nodes 1, 2, 3"), "{refused:?}");

    // Nothing works through the coordinator …
    let encrypt = pb::EncryptDetachedRequest {
        key_id: "sovereign".into(),
        plaintext: b"more".to_vec(),
        aad: vec![],
        request_id: "after-veto".into(),
        evidence: Some(admin.signer.encrypt("sovereign", b"more", b"")),
    };
    assert_disabled(&admin.encrypt_detached(encrypt.clone()).await.unwrap_err(), "Encrypt");
    assert_disabled(&admin.decrypt_detached(decrypt_signed()).await.unwrap_err(), "Decrypt");
    // … nor asked of a vetoing node directly with the coordinator's certificate.
    for id in 1..=3 {
        let evidence = Some(admin.signer.decrypt("sovereign", sealed.version, &sealed.seed));
        let item = item("sovereign", sealed.version, &sealed.seed, pb::Operation::Decrypt, "rogue-decrypt", evidence);
        let refused = rogue.evaluate(id, item).await.unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::Disabled as i32, "node {id}: {refused:?}");
    }

    // Every vetoing node still reports the veto, and the status shows it.
    for id in 1..=3 {
        let state = rogue.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: "sovereign".into() }).await;
        let state = state.unwrap().into_inner();
        assert!(state.vetoed && !state.enabled, "node {id}: {state:?}");
    }
    let status = admin.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    let key = status.keys.iter().find(|k| k.key_id == "sovereign").unwrap();
    let vetoed: Vec<u32> = key.nodes.iter().filter(|n| n.vetoed).map(|n| n.node_id).collect();
    assert_eq!(vetoed, vec![1, 2, 3]);
    assert!(hyok_cli::status::render(&status).contains("1:SV"));

    // Each vetoing node's audit log names the veto (by its local operator) and every refused
    // attempt: the rogue enable, the admin's enable, the partials it would not compute.
    for id in 1..=3 {
        let audit = rogue.audit(id).await;
        let has = |op: &str, request_id: &str| audit.iter().any(|e| e.operation == op && e.request_id == request_id);
        assert!(
            audit.iter().any(|e| e.operation == "veto" && e.caller.starts_with("local-operator:uid=")),
            "node {id}: {audit:?}"
        );
        assert!(has("enable:vetoed", "rogue-enable") && has("enable:vetoed", "admin-enable"), "node {id}: {audit:?}");
        assert!(has("refused:evaluate:decrypt:disabled", "rogue-decrypt"), "node {id}: {audit:?}");
        assert!(audit.iter().any(|e| e.operation.starts_with("refused:") && e.request_id == "after-veto"), "node {id}");
    }

    // Only a vetoing operator can undo it: node 3's lift leaves t = 3 serving nodes.
    let out = operator_command(hyok_e2e::bin_dir().join("hyok-node"), &{
        let mut a = args.clone();
        a[0] = "lift".as_ref();
        a
    });
    assert!(out.contains("lifted the veto of sovereign"), "{out}");
    admin
        .enable_key(pb::EnableKeyRequest { key_id: "sovereign".into(), request_id: "admin-enable-2".into() })
        .await
        .unwrap();
    let opened = admin.decrypt_detached(decrypt_signed()).await.unwrap().into_inner();
    assert_eq!(opened.plaintext, b"customer records");
}

/// Every node's DKG participant entry, as each node itself publishes it.
async fn participants(rogue: &Rogue<'_>, n: u16) -> Vec<pb::Participant> {
    let mut out = Vec::new();
    for id in 1..=n {
        let me = rogue.node(id).await.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
        out.push(pb::Participant {
            node_id: me.node_id,
            identity_public_key: me.identity_public_key,
            key_bundle: me.key_bundle,
        });
    }
    out
}

/// A rogue coordinator (the real coordinator's certificate) asks every node to start DKGs that
/// disagree with the manifest each node's operator installed: (a) node 2 replaced by a key the
/// attacker owns, with a bundle validly signed by that key; (b) threshold 1; (c) two of the
/// five nodes, fewer than t (a key may be made among any t of them while others are down; they
/// get their shares by a reshare). Every node refuses each, stores nothing, and names it in its
/// audit log.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_cannot_start_a_dkg_that_disagrees_with_the_manifest() {
    let cluster = Cluster::start(5, 3).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let honest = participants(&rogue, 5).await;

    let attacker = NodeSecrets::generate(&mut rand::rng());
    let mut forged = honest.clone();
    forged[1].identity_public_key = attacker.identity().public_key().as_bytes().to_vec();
    forged[1].key_bundle = attacker.key_bundle(NodeId::new(2).unwrap(), &mut rand::rng()).to_bytes();
    let attacks = [
        ("rogue-forged-identity", forged, 3, "identity key"),
        ("rogue-threshold-1", honest.clone(), 1, "threshold 1"),
        ("rogue-two-of-five", honest[..2].to_vec(), 3, "fewer than"),
    ];
    for (key_id, participants, threshold, why) in &attacks {
        let req = pb::DkgRound1Request {
            session_id: key_id.as_bytes().to_vec(),
            key_id: (*key_id).into(),
            version: 1,
            threshold: *threshold,
            participants: participants.clone(),
            usages: vec![pb::KeyUsage::Encrypt as i32, pb::KeyUsage::Decrypt as i32],
            request_id: (*key_id).into(),
            reshare: None,
        };
        for id in 1..=5u16 {
            let refused = rogue.node(id).await.dkg_round1(req.clone()).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{key_id} node {id}: {refused:?}");
            assert!(
                refused.message().contains("cluster manifest") && refused.message().contains(why),
                "{key_id} node {id}: {refused:?}"
            );
            // Nothing stored: no session to continue, no version of the key.
            let round2 = pb::DkgRound2Request { session_id: req.session_id.clone(), packages: vec![] };
            let r2 = rogue.node(id).await.dkg_round2(round2).await.unwrap_err();
            assert_eq!(r2.code(), tonic::Code::NotFound, "{key_id} node {id}: {r2:?}");
            let state = rogue.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: (*key_id).into() }).await;
            assert_eq!(state.unwrap_err().code(), tonic::Code::NotFound, "{key_id} node {id}");
        }
    }
    for id in 1..=5u16 {
        let audit = rogue.audit(id).await;
        for (key_id, ..) in &attacks {
            assert!(
                audit.iter().any(|e| e.operation == "refused:dkg:manifest"
                    && e.key_id == *key_id
                    && e.request_id == *key_id
                    && e.caller == "coordinator"),
                "node {id}, {key_id}: {audit:?}"
            );
        }
        assert!(!audit.iter().any(|e| e.operation == "dkg:round1" && e.key_id.starts_with("rogue-")), "node {id}");
    }
}

/// A rogue coordinator (the real coordinator's certificate) tries to steer a reshare of `demo`:
/// (a) with another key's real package as the "old package" (so that receivers would check the
/// dealers against verification keys of its choosing), and (b) with node 2 replaced among the
/// receivers by a key the attacker owns (so that a share would be encrypted to it); then the DKE
/// key's RSA shares to four of the five nodes, or with a foreign old package. Every node refuses
/// each before dealing or storing anything, and audits (a).
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_cannot_steer_a_reshare_to_another_package_or_receiver() {
    let cluster = Cluster::start(5, 3).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let honest = participants(&rogue, 5).await;
    let package_of = |state: pb::NodeKeyState| state.versions[0].public_key_package.clone();
    let demo = package_of(
        rogue.node(1).await.get_key_state(pb::GetKeyStateRequest { key_id: "demo".into() }).await.unwrap().into_inner(),
    );
    let other = package_of(
        rogue
            .node(1)
            .await
            .get_key_state(pb::GetKeyStateRequest { key_id: "xks-demo".into() })
            .await
            .unwrap()
            .into_inner(),
    );
    assert_ne!(demo, other);
    let attacker = NodeSecrets::generate(&mut rand::rng());
    let mut forged = honest.clone();
    forged[1].identity_public_key = attacker.identity().public_key().as_bytes().to_vec();
    forged[1].key_bundle = attacker.key_bundle(NodeId::new(2).unwrap(), &mut rand::rng()).to_bytes();
    let reshare = |session: &str, old_package: Vec<u8>, receivers: Vec<pb::Participant>| pb::DkgRound1Request {
        session_id: session.as_bytes().to_vec(),
        key_id: "demo".into(),
        version: 1,
        threshold: 3,
        participants: receivers,
        usages: vec![
            pb::KeyUsage::Encrypt as i32,
            pb::KeyUsage::Decrypt as i32,
            pb::KeyUsage::Wrap as i32,
            pb::KeyUsage::Unwrap as i32,
        ],
        request_id: session.into(),
        reshare: Some(pb::Reshare {
            dealers: honest.clone(),
            old_package,
            generation: 1,
            old_generation: 0,
            rsa: false,
            epoch: 0,
        }),
    };
    for id in 1..=5u16 {
        let refused =
            rogue.node(id).await.dkg_round1(reshare("rogue-package", other.clone(), honest.clone())).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "node {id}: {refused:?}");
        assert!(refused.message().contains("old package"), "node {id}: {refused:?}");
        let refused =
            rogue.node(id).await.dkg_round1(reshare("rogue-receiver", demo.clone(), forged.clone())).await.unwrap_err();
        assert!(
            refused.message().contains("cluster manifest") && refused.message().contains("identity key"),
            "node {id}: {refused:?}"
        );
        for session in ["rogue-package", "rogue-receiver"] {
            let round2 = pb::DkgRound2Request { session_id: session.as_bytes().to_vec(), packages: vec![] };
            assert_eq!(rogue.node(id).await.dkg_round2(round2).await.unwrap_err().code(), tonic::Code::NotFound);
        }
        let state = rogue
            .node(id)
            .await
            .get_key_state(pb::GetKeyStateRequest { key_id: "demo".into() })
            .await
            .unwrap()
            .into_inner();
        assert!(state.versions.iter().all(|v| v.generation == 0 && v.next.is_none()), "node {id}: {state:?}");
        let audit = rogue.audit(id).await;
        assert!(audit.iter().any(|e| e.operation == "refused:reshare:package" && e.key_id == "demo"), "node {id}");
        assert!(
            audit.iter().any(|e| e.operation == "refused:dkg:manifest" && e.request_id == "rogue-receiver"),
            "node {id}"
        );
    }

    // The same against the DKE key's integer shares: (c) dealt to four of the five nodes (a
    // smaller set the coordinator would need fewer accomplices to cover), and (d) with the EC
    // key's package as the old one.
    let rsa_states = |state: pb::NodeRsaKeyState| state.versions;
    let rsa_package = rsa_states(
        rogue
            .node(1)
            .await
            .get_rsa_key_state(pb::GetRsaKeyStateRequest { name: "dke-dev".into() })
            .await
            .unwrap()
            .into_inner(),
    )[0]
    .public_package
    .clone();
    let rsa_reshare = |session: &str, old_package: Vec<u8>, receivers: Vec<pb::Participant>| pb::DkgRound1Request {
        key_id: "dke-dev".into(),
        usages: vec![pb::KeyUsage::Decrypt as i32],
        reshare: Some(pb::Reshare {
            dealers: honest.clone(),
            old_package,
            generation: 1,
            old_generation: 0,
            rsa: true,
            epoch: 0,
        }),
        ..reshare(session, Vec::new(), receivers)
    };
    for id in 1..=5u16 {
        let four = rsa_reshare("rogue-rsa-four", rsa_package.clone(), honest[..4].to_vec());
        let refused = rogue.node(id).await.dkg_round1(four).await.unwrap_err();
        assert!(refused.message().contains("every node of the cluster manifest"), "node {id}: {refused:?}");
        let foreign = rsa_reshare("rogue-rsa-package", demo.clone(), honest.clone());
        let refused = rogue.node(id).await.dkg_round1(foreign).await.unwrap_err();
        assert!(refused.message().contains("old package"), "node {id}: {refused:?}");
        let state = rogue.node(id).await.get_rsa_key_state(pb::GetRsaKeyStateRequest { name: "dke-dev".into() }).await;
        let versions = rsa_states(state.unwrap().into_inner());
        assert!(versions.iter().all(|v| v.generation == 0 && v.next.is_none()), "node {id}: {versions:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_replaying_a_dealer_package_from_an_earlier_run_is_refused_by_every_node() {
    let cluster = Cluster::start(5, 3).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let honest = participants(&rogue, 5).await;
    let round1 = |session: &'static [u8]| pb::DkgRound1Request {
        session_id: session.to_vec(),
        key_id: "rogue-replay".into(),
        version: 1,
        threshold: 3,
        participants: honest.clone(),
        usages: vec![pb::KeyUsage::Encrypt as i32, pb::KeyUsage::Decrypt as i32],
        request_id: "rogue-replay".into(),
        reshare: None,
    };
    // Run A, honest as far as round 1: the rogue relay keeps every dealer's package.
    let mut run_a = Vec::new();
    for id in 1..=5u16 {
        run_a.push(rogue.node(id).await.dkg_round1(round1(b"run-A")).await.unwrap().into_inner().package);
    }
    // Run B: the same parameters, but the relay swaps in dealer 1's package (and so its
    // ephemeral) from run A, hoping the others complain with values that open run A.
    let mut run_b = Vec::new();
    for id in 1..=5u16 {
        run_b.push(rogue.node(id).await.dkg_round1(round1(b"run-B")).await.unwrap().into_inner().package);
    }
    run_b[0] = run_a[0].clone();
    for id in 2..=5u16 {
        let request = pb::DkgRound2Request { session_id: b"run-B".to_vec(), packages: run_b.clone() };
        let refused = rogue.node(id).await.dkg_round2(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "node {id}: {refused:?}");
        let state = rogue.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: "rogue-replay".into() }).await;
        assert_eq!(state.unwrap_err().code(), tonic::Code::NotFound, "node {id}: nothing stored");
        let audit = rogue.audit(id).await;
        assert!(
            audit.iter().any(|e| e.operation == "dkg:abort:round2" && e.request_id == "culprits=1"),
            "node {id} names dealer 1: {audit:?}"
        );
        // No complaint was filed: nothing that could open run A was published.
        assert!(!audit.iter().any(|e| e.operation == "dkg:complaint"), "node {id}");
    }
}

/// A certificate for the coordinator role freshly minted with the cluster CA key (in a scratch
/// directory, beside a copy of the CA): valid under the CA, but its key is not the pinned one.
fn minted_coordinator(cluster: &Cluster, scratch: &std::path::Path) -> TlsFiles {
    let pki = cluster.dir.path().join("pki");
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(pki.join(file), scratch.join(file)).unwrap();
    }
    let minted = hyok_cli::pki::Pki::new(scratch).issue(Role::Coordinator, &[]).unwrap();
    TlsFiles { ca: scratch.join("ca.pem"), cert: minted.cert, key: minted.key }
}

/// Holding the admin certificate, or the cluster CA key (and so any coordinator certificate one
/// cares to mint), is not enough to use a key: every node's manifest pins the real
/// coordinator's key, so EvaluateBatch, SetKeyEnabled and FinalizeReshare (which would drop a
/// generation of shares) are PERMISSION_DENIED, nothing changes, and the audit names the refusal. The real coordinator's certificate still works.
#[tokio::test(flavor = "multi_thread")]
async fn neither_the_admin_certificate_nor_the_ca_key_passes_as_the_pinned_coordinator() {
    let cluster = Cluster::start(5, 3).unwrap();
    let mut admin = cluster.client().await.unwrap();
    let created = admin
        .create_key(pb::CreateKeyRequest { key_id: "pinned".into(), usages: vec![], request_id: "setup".into() })
        .await
        .unwrap()
        .into_inner();
    let scratch = tempfile::tempdir().unwrap();
    let minted = minted_coordinator(&cluster, scratch.path());
    let pretenders = [("admin", cluster.tls_for(Role::Admin)), ("minted-coordinator", minted)];
    for (who, tls) in pretenders {
        let rogue = Rogue { cluster: &cluster, tls };
        for id in 1..=5u16 {
            let item = signed_encrypt(&admin.signer, "pinned", created.primary_version, who);
            let refused =
                rogue.node(id).await.evaluate_batch(pb::EvaluateBatchRequest { items: vec![item] }).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{who} node {id}: {refused:?}");
            assert!(refused.message().contains("pinned"), "{who} node {id}: {refused:?}");
            let disable = pb::SetKeyEnabledRequest { key_id: "pinned".into(), enabled: false, request_id: who.into() };
            let refused = rogue.node(id).await.set_key_enabled(disable).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{who} node {id}: {refused:?}");
            let finalize = pb::FinalizeReshareRequest {
                key_id: "pinned".into(),
                version: created.primary_version,
                generation: u32::MAX,
                request_id: who.into(),
                rsa: false,
            };
            let refused = rogue.node(id).await.finalize_reshare(finalize).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{who} node {id}: {refused:?}");
            // Reads stay role-based.
            let state = rogue.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: "pinned".into() }).await;
            assert!(state.unwrap().into_inner().enabled, "{who} node {id}: nothing changed");
        }
    }
    for id in 1..=5u16 {
        let audit = Rogue::holding(&cluster, Role::Admin).audit(id).await;
        for op in
            ["refused:evaluate_batch:unpinned", "refused:set_key_enabled:unpinned", "refused:finalize_reshare:unpinned"]
        {
            assert!(audit.iter().any(|e| e.operation == op && e.caller == "admin"), "node {id} {op}: {audit:?}");
            assert!(audit.iter().any(|e| e.operation == op && e.caller == "coordinator"), "node {id} {op}");
        }
        assert!(!audit.iter().any(|e| e.operation == "disable"), "node {id}: {audit:?}");
    }
    // The pinned coordinator's own certificate is served.
    let real = Rogue::holding(&cluster, Role::Coordinator);
    let item = signed_encrypt(&admin.signer, "pinned", created.primary_version, "real");
    real.evaluate(1, item).await.unwrap();
}

// ---- end-to-end authorization: the requester's own evidence -----------------------------

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hyok_xks::client as xks_client;

/// A request signed with the dev key store's credential as KMS signs it, and the evidence
/// hyok-xks would forward for it (the body for a decrypt, its hash for an encrypt).
fn kms_signed(
    cluster: &Cluster,
    external: &str,
    op: &str,
    body: &serde_json::Value,
    at: std::time::SystemTime,
) -> (http::Request<http_body_util::Full<bytes::Bytes>>, pb::Evidence) {
    let (target, _) = cluster.xks().unwrap();
    let request =
        xks_client::signed_request(&target, &format!("/keys/{external}/{op}"), body.to_string().as_bytes(), at)
            .unwrap();
    let evidence = hyok_evidence::xks::to_evidence(
        request.method(),
        request.uri(),
        request.headers(),
        body.to_string().as_bytes(),
        op == "decrypt",
    );
    (request, evidence)
}

/// An XKS ciphertext's parts, as hyok-xks returned them.
#[derive(Clone, Debug)]
struct XksSealed {
    ciphertext: Vec<u8>,
    iv: Vec<u8>,
    tag: Vec<u8>,
    metadata: Vec<u8>,
}

impl XksSealed {
    fn version(&self) -> u32 {
        hyok_evidence::xks::metadata_version(&self.metadata).unwrap()
    }

    fn decrypt_body(&self) -> serde_json::Value {
        serde_json::json!({
            "requestMetadata": xks_client::request_metadata("Decrypt", "rogue"),
            "ciphertext": B64.encode(&self.ciphertext),
            "initializationVector": B64.encode(&self.iv),
            "authenticationTag": B64.encode(&self.tag),
            "ciphertextMetadata": B64.encode(&self.metadata),
            "encryptionAlgorithm": "AES_GCM",
        })
    }
}

fn encrypt_body(plaintext: &[u8], request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "requestMetadata": xks_client::request_metadata("Encrypt", request_id),
        "plaintext": B64.encode(plaintext),
        "encryptionAlgorithm": "AES_GCM",
    })
}

/// Sends a signed request to hyok-xks; the answer's status and JSON.
async fn send_xks(cluster: &Cluster, request: http::Request<http_body_util::Full<bytes::Bytes>>) -> xks_client::Answer {
    let (target, ca) = cluster.xks().unwrap();
    let conn = xks_client::connect(&target.base_url, &ca, true, None).await.unwrap();
    conn.send(request).await.unwrap()
}

fn unb64(v: &serde_json::Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

/// Encrypts `plaintext` through hyok-xks under `external`, as KMS would.
async fn xks_encrypt(cluster: &Cluster, external: &str, plaintext: &[u8]) -> (XksSealed, pb::Evidence) {
    let (request, evidence) =
        kms_signed(cluster, external, "encrypt", &encrypt_body(plaintext, "setup"), std::time::SystemTime::now());
    let answer = send_xks(cluster, request).await;
    assert_eq!(answer.status, http::StatusCode::OK, "{:?}", answer.json);
    let sealed = XksSealed {
        ciphertext: unb64(&answer.json["ciphertext"]),
        iv: unb64(&answer.json["initializationVector"]),
        tag: unb64(&answer.json["authenticationTag"]),
        metadata: unb64(&answer.json["ciphertextMetadata"]),
    };
    (sealed, evidence)
}

fn denied_for_evidence(status: &tonic::Status, what: &str) {
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}: {status:?}");
    assert_eq!(hyok_proto::Reason::of(status), Some(hyok_proto::Reason::EvidenceRefused), "{what}: {status:?}");
}

/// A rogue front-end (hyok-xks's or hyok-dke's certificate) replays captured ciphertexts to the
/// coordinator. XKS: without evidence, with the encryption request that made another
/// ciphertext, with KMS's signed decrypt of another ciphertext: refused. DKE: without a token,
/// with an expired one, one signed by a foreign key, one for a user the key does not allow:
/// refused by the nodes, although the coordinator passes each on. The real requests still work.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_front_end_replaying_captured_xks_and_dke_ciphertexts_to_the_coordinator_gets_nothing() {
    let cluster = Cluster::start(5, 3).unwrap();
    let external = cluster.dev.xks.as_ref().unwrap().keys["encrypt_decrypt"].clone();
    let key_id = hyok_cli::xks::DEV_KEYS.iter().find(|k| k.external_id == external).unwrap().key_id;
    let (captured, _) = xks_encrypt(&cluster, &external, b"payroll for march").await;
    let (other, other_encrypt) = xks_encrypt(&cluster, &external, b"something else").await;
    let (_, other_decrypt) =
        kms_signed(&cluster, &external, "decrypt", &other.decrypt_body(), std::time::SystemTime::now());
    let tls = cluster.tls_for(Role::Frontend);
    let mut frontend = hyok_proto::connect_vault(&cluster.dev.coordinator.endpoint, &tls).await.unwrap();
    let aad = hyok_xks_aad(&captured.metadata);
    let replay = |evidence: Option<pb::Evidence>| pb::DecryptDetachedRequest {
        key_id: key_id.into(),
        seed: captured.iv.clone(),
        ciphertext: captured.ciphertext.clone(),
        tag: captured.tag.clone(),
        version: captured.version(),
        aad: aad.clone(),
        request_id: "rogue-frontend".into(),
        evidence,
    };
    for (what, evidence) in [
        ("no evidence", None),
        ("another ciphertext's encrypt request", Some(other_encrypt)),
        ("another ciphertext's decrypt request", Some(other_decrypt)),
    ] {
        let refused = frontend.decrypt_detached(replay(evidence)).await.unwrap_err();
        denied_for_evidence(&refused, what);
    }
    // KMS's own signed decrypt of the captured ciphertext opens it, through hyok-xks.
    let (request, _) =
        kms_signed(&cluster, &external, "decrypt", &captured.decrypt_body(), std::time::SystemTime::now());
    let answer = send_xks(&cluster, request).await;
    assert_eq!(answer.status, http::StatusCode::OK, "{:?}", answer.json);
    assert_eq!(unb64(&answer.json["plaintext"]), b"payroll for march");

    // DKE: a content key wrapped to the dev RSA key, captured.
    let dke = cluster.dev.dke.clone().unwrap();
    let mut admin = cluster.client().await.unwrap();
    let info = admin.get_rsa_key(pb::GetRsaKeyRequest { name: dke.rsa_key.clone() }).await.unwrap().into_inner();
    let version = info.versions.iter().find(|v| v.version == info.primary_version).unwrap();
    let package = hyok_threshold::rsa::RsaPublicPackage::from_bytes(&version.public_package).unwrap();
    let wrapped = hyok_threshold::rsa::oaep::encrypt(package.public_key(), b"content key", &mut rand::rng()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let foreign = hyok_cli::dke::ensure_dev_issuer(scratch.path()).unwrap();
    let token = |key: &std::path::Path, email: &str, exp_offset: i64| {
        let pem = std::fs::read_to_string(key).unwrap();
        let der = hyok_threshold::rsa::deal::PrivateKey::from_pem(&pem).unwrap().to_pkcs8_der().unwrap();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = serde_json::json!({
            "iss": dke.issuer, "aud": dke.audience, "email": email,
            "iat": now - 7200, "nbf": now - 7200, "exp": now + exp_offset,
        });
        hyok_evidence::jwt::sign_rs256(&pair, &dke.issuer_kid, &claims).unwrap()
    };
    let rsa = |evidence: Option<pb::Evidence>| pb::RsaDecryptRequest {
        name: dke.rsa_key.clone(),
        version: version.version,
        ciphertext: wrapped.clone(),
        request_id: "rogue-frontend".into(),
        evidence,
    };
    let bearer = |t: String| Some(pb::Evidence { kind: Some(pb::evidence::Kind::BearerToken(t)) });
    for (what, evidence) in [
        ("no token", None),
        ("an expired token", bearer(token(&dke.issuer_key, &dke.authorized_email, -3600))),
        ("a token signed by a foreign key", bearer(token(&foreign.key_pem, &dke.authorized_email, 3600))),
        ("a token for a user the key does not allow", bearer(token(&dke.issuer_key, "mallory@example.com", 3600))),
    ] {
        let refused = frontend.rsa_decrypt(rsa(evidence)).await.unwrap_err();
        denied_for_evidence(&refused, what);
    }
    // The user's own valid token works, and every node's audit names the user.
    let opened = frontend.rsa_decrypt(rsa(bearer(token(&dke.issuer_key, &dke.authorized_email, 3600)))).await;
    assert_eq!(opened.unwrap().into_inner().plaintext, b"content key");
    let rogue = Rogue::holding(&cluster, Role::Admin);
    let mut served = 0;
    for id in 1..=5u16 {
        let audit = rogue.audit(id).await;
        assert!(
            audit.iter().any(|e| e.operation == "refused:rsa:partial:permission_denied"),
            "node {id} audits the refused tokens: {audit:?}"
        );
        served += audit
            .iter()
            .filter(|e| e.operation == "rsa:partial" && e.caller.ends_with(&format!("user:{}", dke.authorized_email)))
            .count();
    }
    assert!(served >= 3, "t nodes served the user, and their audit names the user");
}

/// The AAD hyok-xks binds: `u16be(0) ‖ u8(|metadata|) ‖ metadata` for no AAD.
fn hyok_xks_aad(metadata: &[u8]) -> Vec<u8> {
    let mut aad = vec![0, 0, metadata.len() as u8];
    aad.extend_from_slice(metadata);
    aad
}

/// A rogue coordinator holding a captured XKS ciphertext asks the nodes for partials on its
/// seed: without evidence, with KMS's signed decrypt of another ciphertext, with that of this
/// ciphertext presented for another key, with one signed more than five minutes ago — every
/// node refuses each, and audits it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_asking_for_partials_on_a_captured_seed_or_for_another_key_is_refused() {
    let cluster = Cluster::start(5, 3).unwrap();
    let xks = cluster.dev.xks.clone().unwrap();
    let key_a = xks.keys["encrypt_decrypt"].clone();
    let hyok_key = |external: &str| hyok_cli::xks::DEV_KEYS.iter().find(|k| k.external_id == external).unwrap().key_id;
    let key_b = hyok_key(&xks.keys["decrypt_only"]);
    let (captured, _) = xks_encrypt(&cluster, &key_a, b"board minutes").await;
    let (other, _) = xks_encrypt(&cluster, &key_a, b"lunch menu").await;
    let now = std::time::SystemTime::now();
    let (_, for_other) = kms_signed(&cluster, &key_a, "decrypt", &other.decrypt_body(), now);
    let (_, for_captured) = kms_signed(&cluster, &key_a, "decrypt", &captured.decrypt_body(), now);
    let stale_at = now - std::time::Duration::from_secs(6 * 60);
    let (_, stale) = kms_signed(&cluster, &key_a, "decrypt", &captured.decrypt_body(), stale_at);
    let version = captured.version();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let denied = pb::item_error::Code::PermissionDenied as i32;
    for id in 1..=5u16 {
        for (what, key, evidence) in [
            ("no evidence", hyok_key(&key_a), None),
            ("another ciphertext's request", hyok_key(&key_a), Some(for_other.clone())),
            ("key A's request for key B", key_b, Some(for_captured.clone())),
            ("a request signed six minutes ago", hyok_key(&key_a), Some(stale.clone())),
        ] {
            let attempt = item(key, version, &captured.iv, pb::Operation::Decrypt, "rogue-seed", evidence);
            let refused = rogue.evaluate(id, attempt).await.unwrap_err();
            assert_eq!(refused.code, denied, "node {id}, {what}: {refused:?}");
        }
        // The genuine request for this ciphertext and key is served.
        let genuine =
            item(hyok_key(&key_a), version, &captured.iv, pb::Operation::Decrypt, "kms", Some(for_captured.clone()));
        rogue.evaluate(id, genuine).await.unwrap();
        let audit = rogue.audit(id).await;
        let refusals = audit
            .iter()
            .filter(|e| e.operation == "refused:evaluate:decrypt:permission_denied" && e.request_id == "rogue-seed")
            .count();
        assert_eq!(refusals, 4, "node {id}: {audit:?}");
        assert!(
            audit
                .iter()
                .any(|e| e.operation == "evaluate:decrypt" && e.caller.contains(&format!("xks:{}:", xks.uri_prefix))),
            "node {id} names the key store and access key that asked: {audit:?}"
        );
    }
}

/// A rogue coordinator's oversized batches: one past what a node runs on its gRPC worker
/// (`INLINE_ITEMS`, run on the blocking pool instead) is still judged item by item, each
/// refused item answered and audited; one past `MAX_BATCH` is refused whole, computing and
/// storing nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinators_oversized_batch_is_judged_item_by_item_or_refused_whole() {
    let cluster = Cluster::start(3, 2).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let unsigned = |request_id: &str| item("demo", 1, &[7; 16], pb::Operation::Decrypt, request_id, None);
    let mut node = rogue.node(1).await;
    let big = hyok_node::service::INLINE_ITEMS + 3;
    let answer = node
        .evaluate_batch(pb::EvaluateBatchRequest { items: vec![unsigned("rogue-big"); big] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.results.len(), big);
    assert!(answer.proofs.is_empty(), "nothing was computed: {:?}", answer.proofs);
    for result in &answer.results {
        match &result.result {
            Some(pb::partial_result::Result::Error(e)) => {
                assert_eq!(e.code, pb::item_error::Code::PermissionDenied as i32, "{e:?}")
            }
            other => panic!("an item without evidence was not refused: {other:?}"),
        }
    }
    let refused = |audit: &[pb::AuditEntry], request_id: &str| {
        audit.iter().filter(|e| e.request_id == request_id && e.operation.starts_with("refused:evaluate")).count()
    };
    let before = rogue.audit(1).await;
    assert_eq!(refused(&before, "rogue-big"), big, "every refused item is audited");

    let too_many = hyok_node::node::MAX_BATCH + 1;
    let status = node
        .evaluate_batch(pb::EvaluateBatchRequest { items: vec![unsigned("rogue-huge"); too_many] })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let after = rogue.audit(1).await;
    assert_eq!(refused(&after, "rogue-huge"), 0);
    assert_eq!(after.len(), before.len(), "a batch refused whole stores nothing");
}

/// KMS's signed encrypt request, sent twice, gives the same IV and ciphertext twice: the nodes
/// derive the nonce from the signature, so a replay reveals nothing new. A rogue coordinator
/// replaying it to the nodes gets partials on that same seed, and cannot move it elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_signed_xks_encrypt_request_gets_the_same_seed_and_nothing_new() {
    let cluster = Cluster::start(5, 3).unwrap();
    let external = cluster.dev.xks.as_ref().unwrap().keys["encrypt_decrypt"].clone();
    let key_id = hyok_cli::xks::DEV_KEYS.iter().find(|k| k.external_id == external).unwrap().key_id;
    let body = encrypt_body(b"wire transfer 1000000", "replayed");
    let at = std::time::SystemTime::now();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (request, _) = kms_signed(&cluster, &external, "encrypt", &body, at);
        let answer = send_xks(&cluster, request).await;
        assert_eq!(answer.status, http::StatusCode::OK, "{:?}", answer.json);
        answers.push(answer.json);
    }
    for field in ["initializationVector", "ciphertext", "authenticationTag", "ciphertextMetadata"] {
        assert_eq!(answers[0][field], answers[1][field], "{field} of a replay");
    }
    // A fresh request (another signature) gets another seed.
    let (request, evidence) = kms_signed(&cluster, &external, "encrypt", &body, at + std::time::Duration::from_secs(1));
    let fresh = send_xks(&cluster, request).await;
    assert_ne!(fresh.json["initializationVector"], answers[0]["initializationVector"]);

    // The rogue coordinator with the signed request: the nonce is fixed by it.
    let nonce = hyok_evidence::encryption_nonce(&evidence).unwrap();
    let version = hyok_evidence::xks::metadata_version(&unb64(&fresh.json["ciphertextMetadata"])).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let seed = dprf::encryption_seed(key_id, version, &nonce);
    assert_eq!(seed.to_vec(), unb64(&fresh.json["initializationVector"]), "the IV is the seed the nodes derive");
    let package = rogue.package(1, key_id, version).await;
    let input = DprfInput::new(key_id, version, seed).unwrap();
    let mut partials = Vec::new();
    for id in 1..=3u16 {
        let replayed = item(key_id, version, &nonce, pb::Operation::Encrypt, "rogue-replay", Some(evidence.clone()));
        partials.push(rogue.evaluate(id, replayed).await.unwrap());
        let moved = item(key_id, version, &[7; 16], pb::Operation::Encrypt, "rogue-move", Some(evidence.clone()));
        assert_eq!(rogue.evaluate(id, moved).await.unwrap_err().code, pb::item_error::Code::PermissionDenied as i32);
    }
    assert!(dprf::vartime_find_invalid(&package, &input, &partials, &mut rand::rng()).unwrap().is_empty());
}

// ---- a rogue node: lying metadata ------------------------------------------------------

/// A node gone rogue: node 5's certificate in front of the real node 5, passing every call on
/// but lying about its keys: it lists every version twice, and for the key `forged` it lists a
/// package of another key of the cluster (valid, well-formed, not this key's) three times.
#[derive(Clone, Debug)]
struct LyingNode {
    upstream: NodeClient<Channel>,
    foreign_package: Vec<u8>,
}

impl LyingNode {
    fn lie(&self, mut state: pb::NodeKeyState) -> pb::NodeKeyState {
        if state.key_id == "forged" {
            for v in &mut state.versions {
                v.public_key_package = self.foreign_package.clone();
            }
            let copies = state.versions.clone();
            state.versions.extend(copies.iter().cloned().chain(copies.iter().cloned()));
        } else {
            let copies = state.versions.clone();
            state.versions.extend(copies);
        }
        state
    }
}

/// `impl Node for LyingNode`: the methods listed pass the call on; the block holds the rest.
macro_rules! lying_node {
    ({ $($own:tt)* } $($name:ident($req:ty) -> $resp:ty;)*) => {
        #[tonic::codegen::async_trait]
        impl pb::node_server::Node for LyingNode {
            $(
                async fn $name(&self, request: tonic::Request<$req>) -> Result<tonic::Response<$resp>, tonic::Status> {
                    self.upstream.clone().$name(request.into_inner()).await
                }
            )*
            $($own)*
        }
    };
}

lying_node! {
    {
        async fn get_key_state(
            &self,
            request: tonic::Request<pb::GetKeyStateRequest>,
        ) -> Result<tonic::Response<pb::NodeKeyState>, tonic::Status> {
            let state = self.upstream.clone().get_key_state(request.into_inner()).await?.into_inner();
            Ok(tonic::Response::new(self.lie(state)))
        }

        async fn list_key_states(
            &self,
            request: tonic::Request<pb::ListKeyStatesRequest>,
        ) -> Result<tonic::Response<pb::ListKeyStatesResponse>, tonic::Status> {
            let mut all = self.upstream.clone().list_key_states(request.into_inner()).await?.into_inner();
            all.keys = all.keys.into_iter().map(|k| self.lie(k)).collect();
            Ok(tonic::Response::new(all))
        }
    }
        get_identity(pb::GetIdentityRequest) -> pb::GetIdentityResponse;
        dkg_round1(pb::DkgRound1Request) -> pb::DkgRound1Response;
        dkg_round2(pb::DkgRound2Request) -> pb::DkgRound2Response;
        dkg_finish(pb::DkgFinishRequest) -> pb::DkgFinishResponse;
        dkg_commit(pb::DkgCommitRequest) -> pb::DkgCommitResponse;
        dkg_abort(pb::DkgAbortRequest) -> pb::DkgAbortResponse;
        finalize_reshare(pb::FinalizeReshareRequest) -> pb::FinalizeReshareResponse;
        commit_epoch(pb::CommitEpochRequest) -> pb::CommitEpochResponse;
        abort_epoch(pb::AbortEpochRequest) -> pb::AbortEpochResponse;
        evaluate_batch(pb::EvaluateBatchRequest) -> pb::EvaluateBatchResponse;
        unwrap_batch(pb::UnwrapBatchRequest) -> pb::UnwrapBatchResponse;
        set_key_enabled(pb::SetKeyEnabledRequest) -> pb::NodeKeyState;
        read_audit(pb::ReadAuditRequest) -> pb::ReadAuditResponse;
        rsa_store(pb::RsaStoreRequest) -> pb::RsaStoreResponse;
        rsa_commit(pb::RsaCommitRequest) -> pb::RsaCommitResponse;
        rsa_partial(pb::RsaPartialRequest) -> pb::RsaPartialResponse;
        get_rsa_key_state(pb::GetRsaKeyStateRequest) -> pb::NodeRsaKeyState;
    list_rsa_key_states(pb::ListRsaKeyStatesRequest) -> pb::ListRsaKeyStatesResponse;
}

/// Node 5 lies about its metadata (every version listed twice; for one key, another key's
/// package three times): the coordinator counts node 5 once per version, trusts only the
/// package t distinct nodes hold, flags node 5 INVALID for every key in ClusterStatus, and keys
/// made before and after the lie keep encrypting and decrypting under their real group keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_node_repeating_its_metadata_or_listing_a_foreign_package_counts_once_and_is_flagged() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let mut admin = cluster.client().await.unwrap();
    let demo = hyok_cli::dev::DEMO_KEY;
    let foreign_package = Rogue::holding(&cluster, Role::Coordinator).package(1, demo, 1).await.to_bytes();

    // The real node 5 moves to another port; the liar takes its place, with node 5's certificate.
    let endpoint = cluster.dev.nodes.iter().find(|n| n.id == 5).unwrap().endpoint.clone();
    let public = endpoint.trim_start_matches("https://").to_owned();
    cluster.kill_node(5).unwrap();
    let inner = format!("127.0.0.1:{}", hyok_cli::ports::free_port().unwrap());
    cluster.restart_node_listening(5, &inner).unwrap();
    let tls = cluster.tls_for(Role::Coordinator).client_config(&Role::Node(5).proof_name()).unwrap();
    let upstream = Endpoint::from_shared(format!("https://{inner}")).unwrap().tls_config(tls).unwrap().connect().await;
    let liar = LyingNode { upstream: NodeClient::new(upstream.unwrap()), foreign_package };
    let pki = cluster.dir.path().join("pki");
    let node_tls = TlsFiles { ca: pki.join("ca.pem"), cert: pki.join("node-5.pem"), key: pki.join("node-5-key.pem") };
    let listener = tokio::net::TcpListener::bind(&public).await.unwrap();
    let server = tonic::transport::Server::builder()
        .tls_config(node_tls.server_config().unwrap())
        .unwrap()
        .add_service(pb::node_server::NodeServer::new(liar))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let served = tokio::spawn(server);

    // A key made while node 5 lies: the liar lists another key's package for it, three times.
    let created = hyok_e2e::eventually(std::time::Duration::from_secs(30), || {
        let mut admin = admin.clone();
        async move {
            let request = pb::CreateKeyRequest { key_id: "forged".into(), usages: vec![], request_id: "lie".into() };
            Ok(admin.create_key(request).await?.into_inner())
        }
    })
    .await
    .unwrap();
    let honest = Rogue::holding(&cluster, Role::Coordinator).package(1, "forged", 1).await;
    assert_eq!(created.versions[0].public_key, honest.group_key().as_bytes().to_vec(), "the real group key");
    let public_key = admin.get_public_key(pb::GetPublicKeyRequest { key_id: "forged".into(), version: 0 }).await;
    assert_eq!(public_key.unwrap().into_inner().public_key, honest.group_key().as_bytes().to_vec());

    // Both keys round-trip, whatever node 5 says.
    for key in [demo, "forged"] {
        let plaintext = format!("through a liar: {key}").into_bytes();
        let evidence = Some(admin.signer.encrypt(key, &plaintext, b""));
        let request = pb::EncryptRequest {
            key_id: key.into(),
            plaintext: plaintext.clone(),
            aad: vec![],
            request_id: "lie".into(),
            evidence,
        };
        let sealed = admin.encrypt(request).await.unwrap().into_inner();
        let evidence = admin.signer.decrypt_blob(key, &sealed.ciphertext);
        let request = pb::DecryptRequest {
            key_id: key.into(),
            ciphertext: sealed.ciphertext,
            aad: vec![],
            request_id: "lie".into(),
            evidence,
        };
        assert_eq!(admin.decrypt(request).await.unwrap().into_inner().plaintext, plaintext, "{key}");
    }

    // ClusterStatus names the liar, for every key, and no other node (once the coordinator
    // reaches it again after the restart).
    let status = hyok_e2e::eventually(std::time::Duration::from_secs(30), || {
        let mut admin = admin.clone();
        async move {
            let status = admin.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner();
            let reached = status.keys.iter().all(|k| k.nodes.iter().all(|n| n.reachable));
            anyhow::ensure!(reached, "waiting for every node to answer about every key");
            Ok(status)
        }
    })
    .await
    .unwrap();
    for key in &status.keys {
        for node in &key.nodes {
            assert_eq!(node.invalid, node.node_id == 5, "{}: node {}: {key:?}", key.key_id, node.node_id);
        }
    }
    assert!(status.keys.iter().any(|k| k.key_id == "forged"));
    served.abort();
}

/// A rogue coordinator deals an RSA key of its own — it would know every share — and asks every
/// node to store it as the next version of hyok-dke's key, so that hyok-dke would publish a
/// public key the attacker can open. Without a dealer's signature, with a real dealer's
/// signature over another package, with an unlisted key's, or with a listed caller's that may
/// not import: every node refuses, stores nothing, and audits it.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_cannot_store_an_rsa_key_it_dealt_itself() {
    use hyok_threshold::rsa::deal::{PrivateKey, deal};
    use hyok_threshold::rsa::seal::{ShareBinding, seal};
    let cluster = Cluster::start(5, 3).unwrap();
    let admin = cluster.client().await.unwrap();
    let name = cluster.dev.dke.as_ref().unwrap().rsa_key.clone();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let key = PrivateKey::from_pem(include_str!("../../crates/threshold/tests/fixtures/rsa2048-pkcs8.pem")).unwrap();
    let (shares, package) = deal(&key, 3, 5, &mut rand::rng()).unwrap();
    let other = PrivateKey::from_pem(include_str!("../../crates/threshold/tests/fixtures/rsa2048-pkcs1.pem")).unwrap();
    let (_, other_package) = deal(&other, 3, 5, &mut rand::rng()).unwrap();
    assert_ne!(other_package.to_bytes(), package.to_bytes());
    let health = Signer::load(&cluster.dir.path().join("xks").join(hyok_cli::policy::HEALTH_CALLER_KEY_FILE)).unwrap();
    let stranger = Signer::generate(&mut rand::rng());
    let version = 2;
    let attempts = [
        ("no signature", None),
        (
            "the dealer's signature over another package",
            Some(admin.signer.rsa_import(&name, version, &other_package.to_bytes())),
        ),
        ("an unlisted key's", Some(stranger.rsa_import(&name, version, &package.to_bytes()))),
        ("a listed caller's that may not import", Some(health.rsa_import(&name, version, &package.to_bytes()))),
    ];
    for share in &shares {
        let id = share.node().get();
        let identity = rogue.node(id).await.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
        let bundle = hyok_threshold::SignedKeyBundle::from_bytes(&identity.key_bundle).unwrap();
        let pinned = hyok_threshold::IdentityPublicKey::from_slice(&identity.identity_public_key).unwrap();
        let seal_key = *bundle.verify(share.node(), &pinned).unwrap().seal();
        let binding = ShareBinding::new(&name, version, share.node(), &package);
        let sealed = seal(share, &seal_key, &binding, &mut rand::rng()).unwrap().to_bytes();
        for (what, evidence) in attempts.clone() {
            let store = pb::RsaStoreRequest {
                name: name.clone(),
                version,
                public_package: package.to_bytes(),
                sealed_share: sealed.clone(),
                request_id: "rogue-dealer".into(),
                evidence,
            };
            let refused = rogue.node(id).await.rsa_store(store).await;
            let refused = refused.err().unwrap_or_else(|| panic!("node {id} stored a share with {what}"));
            assert_eq!(refused.code(), tonic::Code::PermissionDenied, "node {id}, {what}: {refused:?}");
        }
        let state = rogue.node(id).await.get_rsa_key_state(pb::GetRsaKeyStateRequest { name: name.clone() }).await;
        let versions: Vec<u32> = state.unwrap().into_inner().versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, vec![1], "node {id} stored nothing");
        let audit = rogue.audit(id).await;
        let refusals = audit
            .iter()
            .filter(|e| e.operation == "refused:rsa:store:permission_denied" && e.request_id == "rogue-dealer")
            .count();
        assert_eq!(refusals, attempts.len(), "node {id}: {audit:?}");
    }
}

// ---- a rogue coordinator: membership changes -------------------------------------------------

/// A rogue coordinator (the real coordinator's certificate) tries to move nodes into a new epoch
/// their operators did not accept. The change 5@3 → 6@4 is proposed and accepted by the
/// operators of nodes 1–5, not yet by node 6's. Every node refuses: a change's reshare with
/// receivers other than the new manifest's, for another epoch, or on a node whose operator
/// accepted nothing; any other reshare while a change is accepted; a commit without node 6's
/// acceptance, with an acceptance node 6 never signed, or leaving out versions the node holds.
/// Nothing changes: every node stays at epoch 0, with no reshared share pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_coordinator_cannot_move_nodes_into_an_epoch_their_operators_did_not_accept() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let hyokctl = |args: &[&str]| {
        let out = std::process::Command::new(hyok_e2e::hyokctl())
            .arg("--dev-dir")
            .arg(cluster.dir.path())
            .arg("cluster")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    hyokctl(&["propose", "--nodes", "6", "--threshold", "4"]);
    hyokctl(&["accept", "--node", "1", "--node", "2", "--node", "3", "--node", "4", "--node", "5"]);
    cluster.dev = hyok_cli::devfile::DevFile::load(cluster.dir.path()).unwrap();
    let rogue = Rogue::holding(&cluster, Role::Coordinator);
    let everyone = participants(&rogue, 6).await;
    let mut identities = Vec::new();
    for id in 1..=6u16 {
        identities.push(rogue.node(id).await.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner());
    }
    let proposal = hyok_threshold::epoch::Proposal::from_bytes(&identities[0].proposal).unwrap();
    assert!(identities[5].proposal.is_empty(), "node 6's operator has not accepted");
    let demo = rogue.node(1).await.get_key_state(pb::GetKeyStateRequest { key_id: "demo".into() }).await;
    let demo = demo.unwrap().into_inner().versions[0].public_key_package.clone();
    let run = |session: &str, epoch: u64, threshold: u32, receivers: &[pb::Participant]| pb::DkgRound1Request {
        session_id: session.as_bytes().to_vec(),
        key_id: "demo".into(),
        version: 1,
        threshold,
        participants: receivers.to_vec(),
        usages: vec![
            pb::KeyUsage::Encrypt as i32,
            pb::KeyUsage::Decrypt as i32,
            pb::KeyUsage::Wrap as i32,
            pb::KeyUsage::Unwrap as i32,
        ],
        request_id: session.into(),
        reshare: Some(pb::Reshare {
            dealers: everyone[..5].to_vec(),
            old_package: demo.clone(),
            generation: 1,
            old_generation: 0,
            rsa: false,
            epoch,
        }),
    };
    let refusals = [
        ("without node 6", run("epoch-5", 1, 4, &everyone[..5]), "every node of the new manifest"),
        ("at another t", run("epoch-t3", 1, 3, &everyone), "differs from the new manifest's t = 4"),
        ("for another epoch", run("epoch-2", 2, 4, &everyone), "the accepted change makes 1"),
        ("a refresh meanwhile", run("refresh", 0, 3, &everyone[..5]), "no other reshare runs"),
    ];
    for (what, request, why) in refusals {
        for id in 1..=5u16 {
            let refused = rogue.node(id).await.dkg_round1(request.clone()).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{what}, node {id}: {refused:?}");
            assert!(refused.message().contains(why), "{what}, node {id}: {refused:?}");
        }
    }
    let refused = rogue.node(6).await.dkg_round1(run("epoch-6", 1, 4, &everyone)).await.unwrap_err();
    assert!(refused.message().contains("accepted no change to epoch 1"), "node 6: {refused:?}");

    // Commits: node 6's acceptance missing; node 1's acceptance passed off as node 6's; an
    // acceptance the attacker signed with a key of its own.
    let accepted: Vec<pb::EpochAcceptance> = identities[..5]
        .iter()
        .map(|i| pb::EpochAcceptance { node_id: i.node_id, acceptance: i.acceptance.clone() })
        .collect();
    let attacker = NodeSecrets::generate(&mut rand::rng());
    let forged =
        hyok_threshold::epoch::accept(attacker.identity(), NodeId::new(6).unwrap(), &proposal, &mut rand::rng());
    let with = |extra: Option<pb::EpochAcceptance>| pb::CommitEpochRequest {
        proposal_digest: proposal.digest().to_vec(),
        versions: Vec::new(),
        acceptances: accepted.iter().cloned().chain(extra).collect(),
        request_id: "rogue-commit".into(),
    };
    let relabelled = pb::EpochAcceptance { node_id: 6, acceptance: identities[0].acceptance.clone() };
    let signed_by_attacker = pb::EpochAcceptance { node_id: 6, acceptance: forged.to_bytes() };
    let commits = [
        ("without node 6's acceptance", with(None), "not accepted by the operators of nodes 6"),
        ("node 1's acceptance as node 6's", with(Some(relabelled)), "node 6's acceptance does not verify"),
        ("an acceptance of the attacker's", with(Some(signed_by_attacker)), "node 6's acceptance does not verify"),
    ];
    for (what, request, why) in commits {
        for id in 1..=5u16 {
            let refused = rogue.node(id).await.commit_epoch(request.clone()).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{what}, node {id}: {refused:?}");
            assert!(refused.message().contains(why), "{what}, node {id}: {refused:?}");
        }
    }
    // Once every operator accepted: a commit that leaves out the versions a node holds.
    hyokctl(&["accept", "--node", "6"]);
    let six = rogue.node(6).await.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
    let complete = with(Some(pb::EpochAcceptance { node_id: 6, acceptance: six.acceptance }));
    for id in 1..=5u16 {
        let refused = rogue.node(id).await.commit_epoch(complete.clone()).await.unwrap_err();
        assert!(refused.message().contains("leaves out versions this node holds"), "node {id}: {refused:?}");
    }
    let audited = rogue.audit(1).await;
    let count = |op: &str| audited.iter().filter(|e| e.operation == op).count();
    assert_eq!(count("refused:epoch:commit"), 4, "every refused commit is named in the audit log");
    assert!(count("refused:dkg:manifest") >= 4, "every refused run is named in the audit log");
    for id in 1..=6u16 {
        let i = rogue.node(id).await.get_identity(pb::GetIdentityRequest {}).await.unwrap().into_inner();
        if id <= 5 {
            assert_eq!(hyok_threshold::Manifest::from_bytes(&i.manifest).unwrap().epoch(), 0, "node {id}");
        }
        let states = rogue.node(id).await.list_key_states(pb::ListKeyStatesRequest {}).await.unwrap().into_inner();
        assert!(states.keys.iter().all(|k| k.versions.iter().all(|v| v.next.is_none())), "node {id}: nothing pending");
    }
}
