//! The pinned cluster manifest at the node, without a network: its file form, its installation
//! by the node's operator, and every check it imposes on DKGs, RSA shares and callers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_node::Node;
use hyok_node::manifest::{self, ManifestFile};
use hyok_node::node::NodeError;
use hyok_proto::v1 as pb;
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId, NodeSecrets, Wire};

const COORDINATOR: [u8; 32] = [7; 32];

fn bare_nodes(dir: &std::path::Path, n: u16) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let d = dir.join(format!("node-{i}"));
            hyok_node::server::init(&d).unwrap();
            hyok_node::server::open(NodeId::new(i).unwrap(), &d).unwrap()
        })
        .collect()
}

fn identity(node: &Node) -> IdentityPublicKey {
    IdentityPublicKey::from_slice(&node.identity().unwrap().identity_public_key).unwrap()
}

fn manifest_of(nodes: &[Node], t: u16) -> Manifest {
    Manifest::new(t, nodes.iter().map(|n| (n.id(), identity(n))), [COORDINATOR]).unwrap()
}

fn participant(node: &Node) -> pb::Participant {
    let id = node.identity().unwrap();
    pb::Participant { node_id: id.node_id, identity_public_key: id.identity_public_key, key_bundle: id.key_bundle }
}

fn round1(participants: Vec<pb::Participant>, threshold: u32, request_id: &str) -> pb::DkgRound1Request {
    pb::DkgRound1Request {
        session_id: request_id.as_bytes().to_vec(),
        key_id: "k".into(),
        version: 1,
        threshold,
        participants,
        usages: vec![pb::KeyUsage::Encrypt as i32],
        request_id: request_id.into(),
        reshare: None,
    }
}

/// The node opened no session for `req` and stores nothing for its key.
fn nothing_stored(node: &Node, req: &pb::DkgRound1Request) {
    let r2 = node.dkg_round2(&pb::DkgRound2Request { session_id: req.session_id.clone(), packages: vec![] });
    assert!(matches!(r2, Err(NodeError::NotFound(_))), "{r2:?}");
    assert!(matches!(node.key_state("k"), Err(NodeError::NotFound(_))));
}

#[test]
fn the_file_form_round_trips_and_bad_files_get_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let m = manifest_of(&nodes, 2);
    let text = manifest::to_json(&m);
    assert_eq!(manifest::parse(&text).unwrap(), m);
    let file: ManifestFile = serde_json::from_str(&text).unwrap();
    assert_eq!((file.n, file.t, file.nodes.len()), (3, 2, 3));

    let edit = |f: fn(&mut ManifestFile)| {
        let mut bad = file.clone();
        f(&mut bad);
        manifest::parse(&serde_json::to_string(&bad).unwrap()).unwrap_err()
    };
    assert!(edit(|f| f.format = "v0".into()).contains("format"));
    assert!(edit(|f| f.n = 4).contains("n = 4"));
    assert!(edit(|f| f.t = 4).contains("threshold"));
    assert!(edit(|f| f.nodes[1].identity_public_key = "zz".into()).contains("not hex"));
    assert!(edit(|f| f.nodes[1].identity_public_key = "00".repeat(32)).contains("not a valid key"));
    assert!(edit(|f| f.nodes[1].id = 0).contains("node id 0"));
    assert!(edit(|f| f.coordinator_spki_sha256 = vec!["ab".into()]).contains("32 bytes"));
    assert!(edit(|f| f.coordinator_spki_sha256.clear()).contains("coordinator"));
    assert!(manifest::parse("{").unwrap_err().contains("malformed"));
    assert!(manifest::parse(&text.replace("\"t\"", "\"extra\": 1, \"t\"")).is_err(), "unknown fields");
}

#[test]
fn only_a_manifest_that_names_this_node_installs_and_it_is_audited_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    assert_eq!(nodes[0].manifest(), None);
    let m = manifest_of(&nodes, 2);
    // Another cluster's manifest (node 1 is not in it) and one naming node 1 as node 2.
    let others = bare_nodes(&dir.path().join("other"), 3);
    let foreign = manifest_of(&others, 2);
    assert!(matches!(nodes[0].install_manifest(&foreign, "op"), Err(NodeError::Manifest(_))));
    let swapped = Manifest::new(
        2,
        [
            (NodeId::new(1).unwrap(), identity(&nodes[1])),
            (NodeId::new(2).unwrap(), identity(&nodes[0])),
            (NodeId::new(3).unwrap(), identity(&nodes[2])),
        ],
        [COORDINATOR],
    )
    .unwrap();
    let err = nodes[0].install_manifest(&swapped, "op").unwrap_err();
    assert!(err.to_string().contains("as node 2"), "{err}");
    assert_eq!(nodes[0].manifest(), None, "nothing installed");

    let digest = nodes[0].install_manifest(&m, "local-operator:uid=1").unwrap();
    assert_eq!(digest, m.digest());
    assert_eq!(nodes[0].manifest(), Some(m.clone()));
    let audit = nodes[0].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "manifest:install"
        && e.request_id == hex::encode(digest)
        && e.caller == "local-operator:uid=1"));

    // Stored: a restart keeps it; a restart under the wrong id is refused.
    drop(nodes);
    let d = dir.path().join("node-1");
    let reopened = hyok_node::server::open(NodeId::new(1).unwrap(), &d).unwrap();
    assert_eq!(reopened.manifest(), Some(m.clone()));
    drop(reopened);
    let wrong = hyok_node::server::open(NodeId::new(2).unwrap(), &d).unwrap_err();
    assert!(format!("{wrong:#}").contains("this node is node 2"), "{wrong:#}");
}

#[test]
fn offline_install_finds_the_node_in_the_manifest_and_replaces_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let m = manifest_of(&nodes, 2);
    let others = bare_nodes(&dir.path().join("other"), 3);
    let foreign = manifest_of(&others, 2);
    let keys: Vec<IdentityPublicKey> = nodes.iter().map(identity).collect();
    drop(nodes);
    let d = dir.path().join("node-2");
    assert_eq!(hyok_node::server::stored_identity(&d).unwrap(), keys[1]);
    assert!(hyok_node::server::install_manifest(&d, &foreign, "offline").is_err());
    assert_eq!(hyok_node::server::stored_manifest(&d).unwrap(), None);
    let (id, digest) = hyok_node::server::install_manifest(&d, &m, "offline").unwrap();
    assert_eq!((id.get(), digest), (2, m.digest()));
    let three = Manifest::new(3, m.nodes().iter().map(|(i, k)| (*i, *k)), [COORDINATOR, [8; 32]]).unwrap();
    hyok_node::server::install_manifest(&d, &three, "offline").unwrap();
    assert_eq!(hyok_node::server::stored_manifest(&d).unwrap(), Some(three));
    let node = hyok_node::server::open(NodeId::new(2).unwrap(), &d).unwrap();
    let installs = node.read_audit(1, 100).unwrap();
    assert_eq!(installs.iter().filter(|e| e.operation == "manifest:install" && e.caller == "offline").count(), 2);
}

#[test]
fn without_a_manifest_a_node_refuses_dkgs_and_rsa_shares_but_admits_callers_by_role() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let req = round1(nodes.iter().map(participant).collect(), 2, "no-manifest");
    let err = nodes[0].dkg_round1(&req, "coordinator").unwrap_err();
    assert!(matches!(&err, NodeError::Manifest(m) if m == manifest::NO_MANIFEST), "{err:?}");
    nothing_stored(&nodes[0], &req);
    let audit = nodes[0].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "refused:dkg:manifest" && e.request_id == "no-manifest"));
    assert!(nodes[0].caller_pinned(false, None), "a node without a manifest admits by role");
}

#[test]
fn a_dkg_that_disagrees_with_the_manifest_is_refused_audited_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 5);
    let m = manifest_of(&nodes, 3);
    for n in &nodes {
        n.install_manifest(&m, "op").unwrap();
    }
    let honest: Vec<pb::Participant> = nodes.iter().map(participant).collect();

    // (a) Node 2 replaced by a key the attacker owns, with a bundle validly signed by it.
    let attacker = NodeSecrets::generate(&mut rand::rng());
    let mut forged = honest.clone();
    forged[1].identity_public_key = attacker.identity().public_key().as_bytes().to_vec();
    forged[1].key_bundle = attacker.key_bundle(NodeId::new(2).unwrap(), &mut rand::rng()).to_bytes();
    // (b) threshold 1; (c) two of the five nodes, fewer than t (any t of them may make a key
    // while the others are down); (d) a node the manifest does not list.
    let mut stranger = honest.clone();
    stranger[4].node_id = 9;
    let cases = [
        (round1(forged, 3, "forged"), "identity key"),
        (round1(honest.clone(), 1, "t1"), "threshold 1"),
        (round1(honest[..2].to_vec(), 3, "subset"), "fewer than"),
        (round1(stranger, 3, "stranger"), "participant 9"),
    ];
    for (req, why) in &cases {
        for node in &nodes {
            let err = node.dkg_round1(req, "coordinator").unwrap_err();
            assert!(matches!(&err, NodeError::Manifest(m) if m.contains(why)), "{}: {err:?}", req.request_id);
            nothing_stored(node, req);
        }
    }
    for node in &nodes {
        let audit = node.read_audit(1, 100).unwrap();
        for (req, _) in &cases {
            assert!(
                audit.iter().any(|e| e.operation == "refused:dkg:manifest" && e.request_id == req.request_id),
                "{}",
                req.request_id
            );
        }
        assert!(!audit.iter().any(|e| e.operation == "dkg:round1"));
    }
    // The control: exactly the manifest's nodes at its threshold starts a run.
    nodes[0].dkg_round1(&round1(honest, 3, "honest"), "coordinator").unwrap();
}

#[test]
fn only_a_coordinator_key_the_manifest_pins_is_admitted() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 2);
    let m = manifest_of(&nodes, 2);
    nodes[0].install_manifest(&m, "op").unwrap();
    assert!(nodes[0].caller_pinned(true, Some(&COORDINATOR)));
    assert!(!nodes[0].caller_pinned(true, Some(&[8; 32])), "a freshly minted coordinator key");
    assert!(!nodes[0].caller_pinned(false, Some(&COORDINATOR)), "the admin role, even with a pinned key");
    assert!(!nodes[0].caller_pinned(true, None), "no certificate key");
    nodes[0].refuse_unpinned("evaluate_batch", "admin").unwrap();
    let audit = nodes[0].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "refused:evaluate_batch:unpinned" && e.caller == "admin"));
}

#[test]
fn an_rsa_package_must_match_the_manifest_shape_and_name_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let m = manifest_of(&nodes, 2);
    let id = NodeId::new(1).unwrap();
    assert!(manifest::check_rsa(&m, 2, 3, id).is_ok());
    assert!(manifest::check_rsa(&m, 3, 3, id).unwrap_err().contains("3-of-3"));
    assert!(manifest::check_rsa(&m, 2, 4, id).is_err());
    assert!(manifest::check_rsa(&m, 2, 3, NodeId::new(4).unwrap()).is_err());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_socket_shows_and_installs_a_manifest_and_refuses_a_foreign_one() {
    use hyok_node::operator::{Endpoint, OperatorRequest, exchange};
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 3);
    let m = manifest_of(&nodes, 2);
    let foreign = manifest_of(&bare_nodes(&dir.path().join("other"), 3), 2);
    let node = std::sync::Arc::new(nodes.into_iter().next().unwrap());
    let data_dir = dir.path().join("node-1");
    let endpoint = Endpoint::bind(&data_dir).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(endpoint.serve(node.clone(), async {
        let _ = stopped.await;
    }));

    let (_, shown) = exchange(&data_dir, &OperatorRequest::ManifestShow).await.unwrap();
    assert_eq!(shown, None, "none installed yet");
    let install = |m: &Manifest| OperatorRequest::ManifestInstall { manifest: ManifestFile::from_manifest(m) };
    let refused = exchange(&data_dir, &install(&foreign)).await.unwrap_err();
    assert!(refused.to_string().contains("does not list this node"), "{refused:#}");
    let (_, shown) = exchange(&data_dir, &install(&m)).await.unwrap();
    assert_eq!(shown.unwrap().digest, hex::encode(m.digest()));
    // In force at once, and shown as installed.
    assert_eq!(node.manifest(), Some(m.clone()));
    let (_, shown) = exchange(&data_dir, &OperatorRequest::ManifestShow).await.unwrap();
    assert_eq!(shown.unwrap().manifest.to_manifest().unwrap(), m);
    let audit = node.read_audit(1, 100).unwrap();
    let installs: Vec<&pb::AuditEntry> = audit.iter().filter(|e| e.operation == "manifest:install").collect();
    assert_eq!(installs.len(), 1);
    assert!(installs[0].caller.starts_with("local-operator:uid="));

    stop.send(()).unwrap();
    served.await.unwrap();
}

/// A membership change at the node: its operator accepts only a change that names it with its
/// identity key and starts from the manifest in force (a joining node has none); the acceptance
/// is signed, reported, survives a restart, and is withdrawn by a rejection; a change in force
/// here cannot be aborted.
#[test]
fn an_operator_accepts_only_a_change_from_the_manifest_in_force_that_names_this_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = bare_nodes(dir.path(), 4);
    let from = manifest_of(&nodes[..3], 2);
    for n in &nodes[..3] {
        n.install_manifest(&from, "operator").unwrap();
    }
    let to = manifest_of(&nodes, 3).with_epoch(1);
    let proposal = hyok_threshold::epoch::Proposal::new(from.clone(), to.clone()).unwrap();
    // A change from another starting point (here: one epoch further on) is refused.
    let elsewhere = hyok_threshold::epoch::Proposal::new(to.clone(), from.clone().with_epoch(2)).unwrap();
    assert!(matches!(nodes[0].accept_proposal(&elsewhere, "operator"), Err(NodeError::Manifest(_))));
    // A change that gives this node another identity key is refused.
    let stranger = NodeSecrets::generate(&mut rand::rng()).identity().public_key();
    let mut keys: Vec<_> = to.nodes().iter().map(|(i, k)| (*i, *k)).collect();
    keys[3].1 = stranger;
    let wrong = Manifest::new(3, keys, [COORDINATOR]).unwrap().with_epoch(1);
    let wrong = hyok_threshold::epoch::Proposal::new(from.clone(), wrong).unwrap();
    assert!(matches!(nodes[3].accept_proposal(&wrong, "operator"), Err(NodeError::Manifest(_))));
    // Members and the joining node (no manifest yet) accept; the acceptance verifies.
    for n in &nodes {
        n.accept_proposal(&proposal, "operator").unwrap();
        let reported = n.identity().unwrap();
        assert_eq!(reported.proposal, proposal.to_bytes());
        let acceptance = hyok_threshold::epoch::Acceptance::from_bytes(&reported.acceptance).unwrap();
        hyok_threshold::epoch::vartime_verify_acceptance(&proposal, n.id(), &acceptance).unwrap();
    }
    assert!(nodes[3].pending_change().unwrap().is_some());
    // The operator of node 2 withdraws: nothing of the change is left there; the others keep it.
    assert_eq!(nodes[1].reject_proposal("operator").unwrap(), Some(proposal.digest()));
    assert!(nodes[1].accepted().unwrap().is_none());
    assert!(nodes[0].accepted().unwrap().is_some());
    let audit = nodes[1].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "epoch:accept") && audit.iter().any(|e| e.operation == "epoch:reject"));
    // A commit with every acceptance but node 2's is refused where it is asked.
    let acceptances: Vec<pb::EpochAcceptance> = [&nodes[0], &nodes[2], &nodes[3]]
        .iter()
        .map(|n| pb::EpochAcceptance { node_id: u32::from(n.id().get()), acceptance: n.identity().unwrap().acceptance })
        .collect();
    let commit = pb::CommitEpochRequest {
        proposal_digest: proposal.digest().to_vec(),
        versions: Vec::new(),
        acceptances,
        request_id: "commit".into(),
    };
    let refused = nodes[0].commit_epoch(&commit, "coordinator").unwrap_err();
    assert!(refused.to_string().contains("nodes 2"), "{refused}");
    assert_eq!(nodes[0].manifest().unwrap(), from, "nothing changed");
}
