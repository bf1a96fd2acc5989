//! Threshold RSA on nodes without a network: a dealt share sealed to each node is stored
//! PENDING, refused until committed, then partials from any t nodes combine to the OAEP
//! plaintext; sealed shares for another node or key are refused; per-node disable; audit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_node::Node;
use hyok_node::node::NodeError;
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::seal::{ShareBinding, seal};
use hyok_threshold::rsa::{RsaPartial, RsaPublicPackage, combine, oaep};
use hyok_threshold::{IdentityPublicKey, SealPublicKey, SignedKeyBundle, Wire};

const PEM: &str = include_str!("../../crates/threshold/tests/fixtures/rsa2048-pkcs8.pem");

mod support;
use support::{bare_nodes, nodes, operator};

fn identity(node: &Node) -> IdentityPublicKey {
    IdentityPublicKey::from_slice(&node.identity().unwrap().identity_public_key).unwrap()
}

/// The node's seal key, from its key bundle verified under its identity key (as hyokctl does).
fn seal_key(node: &Node) -> SealPublicKey {
    let answer = node.identity().unwrap();
    let bundle = SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap();
    *bundle.verify(node.id(), &identity(node)).unwrap().seal()
}

/// Deals the fixture key t-of-n and returns each node's RsaStore request, and the package.
fn ceremony(nodes: &[Node], name: &str, version: u32, t: u16) -> (Vec<pb::RsaStoreRequest>, RsaPublicPackage) {
    let key = PrivateKey::from_pem(PEM).unwrap();
    let mut rng = rand::rng();
    let (shares, package) = deal(&key, t, nodes.len() as u16, &mut rng).unwrap();
    let requests = shares
        .iter()
        .zip(nodes)
        .map(|(share, node)| {
            let binding = ShareBinding::new(name, version, share.node(), &package);
            let sealed = seal(share, &seal_key(node), &binding, &mut rng).unwrap();
            pb::RsaStoreRequest {
                name: name.into(),
                version,
                public_package: package.to_bytes(),
                sealed_share: sealed.to_bytes(),
                request_id: "import".into(),
                evidence: Some(operator().rsa_import(name, version, &package.to_bytes())),
            }
        })
        .collect();
    (requests, package)
}

/// A partial decryption, signed by the caller the nodes' policy lists (good once per node).
fn partial_req(name: &str, version: u32, ciphertext: &[u8]) -> pb::RsaPartialRequest {
    pb::RsaPartialRequest {
        name: name.into(),
        version,
        ciphertext: ciphertext.to_vec(),
        request_id: "user@x".into(),
        evidence: Some(operator().rsa_decrypt(name, version, ciphertext)),
        generation: None,
    }
}

fn partial(node: &Node, req: &pb::RsaPartialRequest) -> Result<RsaPartial, NodeError> {
    node.rsa_partial(req, "coordinator").map(|r| RsaPartial::from_bytes(&r.partial).unwrap())
}

fn commit(node: &Node, name: &str, version: u32, commit: bool) -> Result<pb::RsaCommitResponse, NodeError> {
    node.rsa_commit(&pb::RsaCommitRequest { name: name.into(), version, commit, request_id: "import".into() }, "admin")
}

#[test]
fn stored_shares_serve_partials_only_after_commit_and_any_t_combine() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let (requests, package) = ceremony(&nodes, "dke", 1, 2);
    for (node, req) in nodes.iter().zip(&requests) {
        node.rsa_store(req, "admin").unwrap();
    }
    let message = b"a DKE content key";
    let ciphertext = oaep::encrypt(package.public_key(), message, &mut rand::rng()).unwrap();
    let req = partial_req("dke", 1, &ciphertext);
    // PENDING: refused.
    assert!(matches!(partial(&nodes[0], &req), Err(NodeError::Precondition(_))));
    for node in &nodes {
        commit(node, "dke", 1, true).unwrap();
    }
    let partials: Vec<RsaPartial> = nodes.iter().map(|n| partial(n, &req).unwrap()).collect();
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let set: Vec<RsaPartial> = pair.iter().map(|i| partials[*i].clone()).collect();
        assert_eq!(&combine::decrypt(&package, &ciphertext, &set).unwrap().value[..], message);
    }
    // The state every node reports: one ACTIVE version with the same package.
    for node in &nodes {
        let state = node.rsa_key_state("dke").unwrap();
        assert!(state.enabled);
        assert_eq!(state.versions.len(), 1);
        assert!(state.versions[0].active);
        assert_eq!(state.versions[0].public_package, package.to_bytes());
        assert_eq!(node.rsa_key_states().unwrap().len(), 1);
    }
    // An ACTIVE version cannot be stored again nor dropped.
    assert!(matches!(nodes[0].rsa_store(&requests[0], "admin"), Err(NodeError::Exists(_))));
    assert!(matches!(commit(&nodes[0], "dke", 1, false), Err(NodeError::Exists(_))));
    // Every partial is audited with its request id; the chain verifies.
    let audit = nodes[1].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "rsa:store"));
    assert!(audit.iter().any(|e| e.operation == "rsa:commit"));
    assert!(audit.iter().any(|e| e.operation == "rsa:partial" && e.request_id == "user@x" && e.key_id == "dke"));
    assert!(matches!(nodes[1].store().verify_audit().unwrap(), Ok(n) if n as usize == audit.len()));
}

#[test]
fn a_share_sealed_for_another_node_key_or_version_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let (requests, _) = ceremony(&nodes, "dke", 1, 2);
    // Node 2's share handed to node 1.
    assert!(matches!(nodes[0].rsa_store(&requests[1], "admin"), Err(NodeError::Invalid(_))));
    // Node 1's share under another name or version.
    for (name, version) in [("other", 1), ("dke", 2)] {
        let mut req = requests[0].clone();
        req.name = name.into();
        req.version = version;
        // Without the dealer's signature for that name and version, refused at once …
        assert!(matches!(nodes[0].rsa_store(&req, "admin"), Err(NodeError::Denied(_))));
        // … and with one, the sealed share's own binding refuses it.
        req.evidence = Some(operator().rsa_import(name, version, &req.public_package));
        assert!(matches!(nodes[0].rsa_store(&req, "admin"), Err(NodeError::Invalid(_))));
    }
    // Another package (the same key, another threshold).
    let mut req = requests[0].clone();
    let package = RsaPublicPackage::from_bytes(&req.public_package).unwrap();
    req.public_package = RsaPublicPackage::new(package.public_key().clone(), 3, 3).unwrap().to_bytes();
    assert!(matches!(nodes[0].rsa_store(&req, "admin"), Err(NodeError::Manifest(_))));
    // Garbage, bad names, version 0.
    for edit in [
        (|r: &mut pb::RsaStoreRequest| r.sealed_share = vec![1, 0x63, 0]) as fn(&mut pb::RsaStoreRequest),
        |r| r.public_package = vec![0xff; 10],
        |r| r.name = "a/b".into(),
        |r| r.version = 0,
    ] {
        let mut req = requests[0].clone();
        edit(&mut req);
        assert!(matches!(nodes[0].rsa_store(&req, "admin"), Err(NodeError::Invalid(_))));
    }
    assert!(nodes[0].rsa_key_states().unwrap().is_empty());
    assert!(matches!(nodes[0].rsa_key_state("dke"), Err(NodeError::NotFound(_))));
}

#[test]
fn a_share_sealed_to_the_nodes_identity_key_instead_of_its_seal_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let key = PrivateKey::from_pem(PEM).unwrap();
    let mut rng = rand::rng();
    let (shares, package) = deal(&key, 2, 3, &mut rng).unwrap();
    let binding = ShareBinding::new("dke", 1, shares[0].node(), &package);
    // What the old ceremony (or a hostile one) did: seal to the identity key.
    let wrong = SealPublicKey::from_slice(identity(&nodes[0]).as_bytes()).unwrap();
    let sealed = seal(&shares[0], &wrong, &binding, &mut rng).unwrap();
    let req = pb::RsaStoreRequest {
        name: "dke".into(),
        version: 1,
        public_package: package.to_bytes(),
        sealed_share: sealed.to_bytes(),
        request_id: "import".into(),
        evidence: Some(operator().rsa_import("dke", 1, &package.to_bytes())),
    };
    assert!(matches!(nodes[0].rsa_store(&req, "admin"), Err(NodeError::Invalid(_))));
    assert!(nodes[0].rsa_key_states().unwrap().is_empty());
    // The control: sealed to the seal key from the verified bundle, the same share is taken.
    let sealed = seal(&shares[0], &seal_key(&nodes[0]), &binding, &mut rng).unwrap();
    let evidence = Some(operator().rsa_import("dke", 1, &package.to_bytes()));
    nodes[0].rsa_store(&pb::RsaStoreRequest { sealed_share: sealed.to_bytes(), evidence, ..req }, "admin").unwrap();
}

#[test]
fn aborted_versions_vanish_disable_is_per_node_and_bad_ciphertexts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let (requests, package) = ceremony(&nodes, "dke", 1, 2);
    nodes[0].rsa_store(&requests[0], "admin").unwrap();
    commit(&nodes[0], "dke", 1, false).unwrap();
    assert!(matches!(nodes[0].rsa_key_state("dke"), Err(NodeError::NotFound(_))));
    // Storing again after an abort (or over a PENDING leftover) works.
    nodes[0].rsa_store(&requests[0], "admin").unwrap();
    nodes[0].rsa_store(&requests[0], "admin").unwrap();
    for (node, req) in nodes.iter().zip(&requests).skip(1) {
        node.rsa_store(req, "admin").unwrap();
    }
    for node in &nodes {
        commit(node, "dke", 1, true).unwrap();
    }
    let ciphertext = oaep::encrypt(package.public_key(), b"m", &mut rand::rng()).unwrap();
    // Disabled on node 1 alone, through the same SetKeyEnabled as EC keys.
    let state = nodes[0]
        .set_enabled(
            &pb::SetKeyEnabledRequest { key_id: "dke".into(), enabled: false, request_id: "op".into() },
            "admin",
        )
        .unwrap();
    assert!(!state.enabled);
    assert!(!nodes[0].rsa_key_state("dke").unwrap().enabled);
    assert!(matches!(partial(&nodes[0], &partial_req("dke", 1, &ciphertext)), Err(NodeError::Disabled(_))));
    assert!(partial(&nodes[1], &partial_req("dke", 1, &ciphertext)).is_ok());
    // Unknown key or version, malformed ciphertexts: refused, never a panic.
    assert!(matches!(partial(&nodes[1], &partial_req("nope", 1, &ciphertext)), Err(NodeError::NotFound(_))));
    assert!(matches!(partial(&nodes[1], &partial_req("dke", 2, &ciphertext)), Err(NodeError::NotFound(_))));
    let modulus = package.public_key().modulus_bytes();
    for bad in [vec![], vec![1; 10], vec![0; 256], modulus, vec![0xff; 256], vec![1; 257]] {
        assert!(matches!(partial(&nodes[1], &partial_req("dke", 1, &bad)), Err(NodeError::Invalid(_))), "{bad:?}");
    }
    assert!(matches!(commit(&nodes[1], "dke", 3, true), Err(NodeError::NotFound(_))));
}

#[test]
fn hostile_rsa_requests_are_refused_without_a_panic() {
    use rand::{Rng, RngExt};
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let (requests, package) = ceremony(&nodes, "dke", 1, 2);
    for (node, req) in nodes.iter().zip(&requests) {
        node.rsa_store(req, "admin").unwrap();
        commit(node, "dke", 1, true).unwrap();
    }
    let mut rng = rand::rng();
    let k = package.public_key().size();
    for i in 0..200usize {
        let mut bytes = vec![0u8; rng.random_range(0..600)];
        rng.fill_bytes(&mut bytes);
        // Random bytes, and random bytes behind a valid header, in every field.
        let framed = |tag: u8| [vec![1u8, tag], bytes.clone()].concat();
        let mut req = requests[0].clone();
        req.version = 2;
        match i % 4 {
            0 => req.sealed_share = bytes.clone(),
            1 => req.sealed_share = framed(0x63),
            2 => req.public_package = framed(0x60),
            _ => req.public_package = bytes.clone(),
        }
        assert!(nodes[0].rsa_store(&req, "admin").is_err());
        let mut c = vec![0u8; if i % 2 == 0 { k } else { bytes.len() }];
        rng.fill_bytes(&mut c);
        // Either a partial (any 0 < c < N is a valid request) or a clean refusal.
        let _ = partial(&nodes[0], &partial_req("dke", 1, &c));
    }
    assert_eq!(nodes[0].rsa_key_state("dke").unwrap().versions.len(), 1, "nothing was stored");
}

#[test]
fn an_rsa_key_at_the_highest_version_number_is_stored_committed_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    let (requests, package) = ceremony(&nodes, "dke", u32::MAX, 2);
    for (node, req) in nodes.iter().zip(&requests) {
        node.rsa_store(req, "admin").unwrap();
        commit(node, "dke", u32::MAX, true).unwrap();
    }
    let ciphertext = oaep::encrypt(package.public_key(), b"top", &mut rand::rng()).unwrap();
    let partials: Vec<RsaPartial> =
        nodes.iter().map(|n| partial(n, &partial_req("dke", u32::MAX, &ciphertext)).unwrap()).collect();
    assert_eq!(&combine::decrypt(&package, &ciphertext, &partials).unwrap().value[..], b"top");
    assert_eq!(nodes[0].rsa_key_state("dke").unwrap().versions[0].version, u32::MAX);
    assert!(matches!(partial(&nodes[0], &partial_req("dke", 0, &ciphertext)), Err(NodeError::Invalid(_))));
}

#[test]
fn a_vetoed_rsa_key_is_refused_until_its_operator_lifts_it_whatever_the_admin_sets() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    let (requests, package) = ceremony(&nodes, "dke", 1, 2);
    for (node, req) in nodes.iter().zip(&requests) {
        node.rsa_store(req, "admin").unwrap();
        commit(node, "dke", 1, true).unwrap();
    }
    let ciphertext = oaep::encrypt(package.public_key(), b"m", &mut rand::rng()).unwrap();
    nodes[0].veto("dke", "revoked consent", "local-operator:uid=1").unwrap();
    assert!(
        matches!(partial(&nodes[0], &partial_req("dke", 1, &ciphertext)), Err(NodeError::Disabled(m)) if m.contains("vetoed"))
    );
    let enable = pb::SetKeyEnabledRequest { key_id: "dke".into(), enabled: true, request_id: "undo".into() };
    let state = nodes[0].set_enabled(&enable, "coordinator").unwrap();
    assert!(!state.enabled && state.vetoed, "{state:?}");
    let rsa = nodes[0].rsa_key_state("dke").unwrap();
    assert!(!rsa.enabled && rsa.vetoed);
    assert!(matches!(partial(&nodes[0], &partial_req("dke", 1, &ciphertext)), Err(NodeError::Disabled(_))));
    nodes[0].lift("dke", "local-operator:uid=1").unwrap();
    assert!(partial(&nodes[0], &partial_req("dke", 1, &ciphertext)).is_ok());
    let ops: Vec<String> = nodes[0].read_audit(1, 100).unwrap().into_iter().map(|e| e.operation).collect();
    for op in ["veto", "enable:vetoed", "refused:rsa:partial:disabled", "lift"] {
        assert!(ops.iter().any(|o| o == op), "{op} missing from {ops:?}");
    }
}

#[test]
fn a_node_without_a_manifest_refuses_an_rsa_share_audits_it_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let (requests, _) = ceremony(&nodes, "dke", 1, 2);
    for (node, req) in nodes.iter().zip(&requests) {
        let err = node.rsa_store(req, "coordinator").unwrap_err();
        assert!(matches!(&err, NodeError::Manifest(m) if m == hyok_node::manifest::NO_MANIFEST), "{err:?}");
        assert!(node.store().rsa().version("dke", 1).unwrap().is_none());
        let audit = node.read_audit(1, 100).unwrap();
        assert!(audit.iter().any(|e| e.operation == "refused:rsa:store:manifest" && e.key_id == "dke"));
    }
}
