//! A node's keys per purpose: GetIdentity publishes a key bundle signed by the identity key, a
//! DKG whose participant bundle fails its signature is refused (and audited, and leaves no
//! session), and a legacy identity-only data directory is upgraded on open.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_node::Node;
use hyok_node::node::NodeError;
use hyok_proto::v1 as pb;
use hyok_threshold::{IdentityPublicKey, IdentitySecret, NodeId, SignedKeyBundle, Wire};

fn node_id(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

/// `n` nodes whose operators installed one manifest: these nodes, t = 2.
fn nodes(dir: &std::path::Path, n: u16) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=n)
        .map(|i| {
            let d = dir.join(format!("node-{i}"));
            hyok_node::server::init(&d).unwrap();
            hyok_node::server::open(node_id(i), &d).unwrap()
        })
        .collect();
    let pinned = nodes.iter().map(|n| {
        let key = n.identity().unwrap().identity_public_key;
        (n.id(), hyok_threshold::IdentityPublicKey::from_slice(&key).unwrap())
    });
    let manifest = hyok_threshold::Manifest::new(2, pinned, [[7u8; 32]]).unwrap();
    for node in &nodes {
        node.install_manifest(&manifest, "test-operator").unwrap();
    }
    nodes
}

fn participant(node: &Node) -> pb::Participant {
    let id = node.identity().unwrap();
    pb::Participant { node_id: id.node_id, identity_public_key: id.identity_public_key, key_bundle: id.key_bundle }
}

fn round1(participants: Vec<pb::Participant>) -> pb::DkgRound1Request {
    pb::DkgRound1Request {
        session_id: b"session-bundles".to_vec(),
        key_id: "k".into(),
        version: 1,
        threshold: 2,
        participants,
        usages: vec![pb::KeyUsage::Encrypt as i32],
        request_id: "create".into(),
        reshare: None,
    }
}

#[test]
fn get_identity_publishes_a_bundle_signed_by_the_identity_key() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    let answer = nodes[1].identity().unwrap();
    let identity = IdentityPublicKey::from_slice(&answer.identity_public_key).unwrap();
    let keys = SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap().verify(node_id(2), &identity).unwrap();
    assert_ne!(keys.transport().as_bytes(), identity.as_bytes());
    assert_ne!(keys.seal().as_bytes(), identity.as_bytes());
    // Not node 1's bundle, and not under node 1's identity key.
    let other = IdentityPublicKey::from_slice(&nodes[0].identity().unwrap().identity_public_key).unwrap();
    assert!(SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap().verify(node_id(2), &other).is_err());
    assert!(SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap().verify(node_id(1), &identity).is_err());
}

#[test]
fn a_dkg_round1_with_a_participant_bundle_that_fails_its_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let honest: Vec<pb::Participant> = nodes.iter().map(participant).collect();
    // The control: the honest participant list starts a run.
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = self::nodes(dir2.path(), 3);
    let fresh_participants: Vec<pb::Participant> = fresh.iter().map(participant).collect();
    fresh[0].dkg_round1(&round1(fresh_participants), "admin").unwrap();

    let tampered: Vec<fn(&mut pb::Participant, &pb::Participant)> = vec![
        // A flipped bit in the signature.
        |p, _| *p.key_bundle.last_mut().unwrap() ^= 1,
        // A flipped bit in the transport key: a relay steering sub-shares to a key it chose.
        |p, _| p.key_bundle[4 + 32] ^= 1,
        // Another node's (validly signed) bundle.
        |p, other| p.key_bundle = other.key_bundle.clone(),
        // Another node's identity key with this node's bundle.
        |p, other| p.identity_public_key = other.identity_public_key.clone(),
        // No bundle at all (an old coordinator).
        |p, _| p.key_bundle.clear(),
    ];
    for (case, edit) in tampered.into_iter().enumerate() {
        let mut participants = honest.clone();
        let other = participants[2].clone();
        edit(&mut participants[1], &other);
        let err = nodes[0].dkg_round1(&round1(participants), "admin").unwrap_err();
        match &err {
            // Another identity key for node 2 than its manifest's is caught by the manifest.
            NodeError::Invalid(m) | NodeError::Manifest(m) if m.contains("participant 2") => {}
            other => panic!("case {case}: {other:?}"),
        }
        // No session was opened: round 2 of it is unknown.
        let r2 =
            nodes[0].dkg_round2(&pb::DkgRound2Request { session_id: b"session-bundles".to_vec(), packages: vec![] });
        assert!(matches!(r2, Err(NodeError::NotFound(_))), "case {case}: {r2:?}");
    }
    let audit = nodes[0].read_audit(1, 100).unwrap();
    assert_eq!(audit.iter().filter(|e| e.operation == "dkg:refused").count(), 4);
    assert_eq!(audit.iter().filter(|e| e.operation == "refused:dkg:manifest").count(), 1);
    assert!(!audit.iter().any(|e| e.operation == "dkg:round1"));
}

#[test]
fn a_legacy_identity_only_data_dir_is_upgraded_on_open_and_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("node-1");
    hyok_node::server::init(&d).unwrap();
    let legacy = IdentitySecret::generate(&mut rand::rng());
    {
        // What a data directory from before keys per purpose holds: the bare identity secret.
        let node = hyok_node::server::open(node_id(1), &d).unwrap();
        node.store().put_identity(&legacy.to_secret_bytes()[..]).unwrap();
    }
    let (bundle_keys, stored_len) = {
        let node = hyok_node::server::open(node_id(1), &d).unwrap();
        let answer = node.identity().unwrap();
        assert_eq!(answer.identity_public_key, legacy.public_key().as_bytes().to_vec(), "the identity is kept");
        let keys = SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap().verify(node_id(1), &legacy.public_key());
        let keys = keys.unwrap();
        (keys, node.store().identity().unwrap().unwrap().len())
    };
    assert!(stored_len > 32, "the upgraded keys were written back");
    // Reopened again: the same keys (the upgrade happened once, and was stored).
    let node = hyok_node::server::open(node_id(1), &d).unwrap();
    let answer = node.identity().unwrap();
    let again = SignedKeyBundle::from_bytes(&answer.key_bundle).unwrap().verify(node_id(1), &legacy.public_key());
    let again = again.unwrap();
    assert_eq!(again.transport(), bundle_keys.transport());
    assert_eq!(again.seal(), bundle_keys.seal());
    assert_eq!(again.audit(), bundle_keys.audit());
}
