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
/// attacker owns, with a bundle validly signed by that key; (b) threshold 1; (c) three of the
/// five nodes. Every node refuses each, stores nothing, and names it in its audit log.
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
        ("rogue-three-of-five", honest[..3].to_vec(), 3, "every node"),
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
/// coordinator's key, so EvaluateBatch and SetKeyEnabled are PERMISSION_DENIED, nothing changes,
/// and the audit names the refusal. The real coordinator's certificate still works.
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
            // Reads stay role-based.
            let state = rogue.node(id).await.get_key_state(pb::GetKeyStateRequest { key_id: "pinned".into() }).await;
            assert!(state.unwrap().into_inner().enabled, "{who} node {id}: nothing changed");
        }
    }
    for id in 1..=5u16 {
        let audit = Rogue::holding(&cluster, Role::Admin).audit(id).await;
        for op in ["refused:evaluate_batch:unpinned", "refused:set_key_enabled:unpinned"] {
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
