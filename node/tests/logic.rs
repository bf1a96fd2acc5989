//! The node's logic without a network: three nodes run a DKG through the Node API's messages,
//! then serve partial evaluations that the threshold crate combines; policy is enforced per node.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_node::Node;
use hyok_proto::v1 as pb;
use hyok_threshold::dprf::{self, BatchProof, DprfInput, HashedInput, PartialValue};
use hyok_threshold::{Coefficient, NodeId, PartialEvaluation, PublicKeyPackage, Wire};

mod support;
use support::{nodes, operator};

fn create_key(nodes: &[Node], key_id: &str, t: u32) -> PublicKeyPackage {
    create_key_version(nodes, key_id, 1, t)
}

/// Every node's DKG participant entry, as each node publishes it.
fn participants(nodes: &[Node]) -> Vec<pb::Participant> {
    nodes
        .iter()
        .map(|n| {
            let id = n.identity().unwrap();
            pb::Participant {
                node_id: id.node_id,
                identity_public_key: id.identity_public_key,
                key_bundle: id.key_bundle,
            }
        })
        .collect()
}

fn create_key_version(nodes: &[Node], key_id: &str, version: u32, t: u32) -> PublicKeyPackage {
    let participants = participants(nodes);
    let session = b"session-1".to_vec();
    let r1: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| {
            let req = pb::DkgRound1Request {
                session_id: session.clone(),
                key_id: key_id.into(),
                version,
                threshold: t,
                participants: participants.clone(),
                usages: vec![pb::KeyUsage::Encrypt as i32, pb::KeyUsage::Decrypt as i32],
                request_id: "create".into(),
                reshare: None,
            };
            n.dkg_round1(&req, "admin").unwrap().package
        })
        .collect();
    let r2: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| {
            n.dkg_round2(&pb::DkgRound2Request { session_id: session.clone(), packages: r1.clone() }).unwrap().package
        })
        .collect();
    let packages: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| {
            n.dkg_finish(&pb::DkgFinishRequest { session_id: session.clone(), packages: r2.clone() })
                .unwrap()
                .public_key_package
        })
        .collect();
    assert!(packages.iter().all(|p| p == &packages[0]), "every node agrees on the public package");
    let item = pb::EvaluateItem { version, ..evaluate_item(key_id) };
    // Pending until committed: no node serves it yet.
    assert!(matches!(
        nodes[0].evaluate_batch(&[item], "admin").unwrap().results[0].result,
        Some(pb::partial_result::Result::Error(_))
    ));
    for n in nodes {
        n.dkg_commit(&pb::DkgCommitRequest { session_id: session.clone() }, "admin").unwrap();
    }
    PublicKeyPackage::from_bytes(&packages[0]).unwrap()
}

/// An encryption under version 1, signed by the caller the nodes' policy lists: its nonce is
/// the one the signature gives.
fn evaluate_item(key_id: &str) -> pb::EvaluateItem {
    let evidence = operator().encrypt(key_id, b"plaintext", b"");
    let nonce = hyok_evidence::encryption_nonce(&evidence).unwrap();
    pb::EvaluateItem {
        key_id: key_id.into(),
        version: 1,
        seed: nonce.to_vec(),
        operation: pb::Operation::Encrypt as i32,
        request_id: "r".into(),
        evidence: Some(evidence),
        generation: None,
        coefficient: Vec::new(),
    }
}

/// A decryption of the ciphertext with `seed`, signed by that caller.
fn decrypt_item(key_id: &str, version: u32, seed: [u8; 16]) -> pb::EvaluateItem {
    pb::EvaluateItem {
        key_id: key_id.into(),
        version,
        seed: seed.to_vec(),
        operation: pb::Operation::Decrypt as i32,
        request_id: "d".into(),
        evidence: Some(operator().decrypt(key_id, version, &seed)),
        generation: None,
        coefficient: Vec::new(),
    }
}

fn seed_of(item: &pb::EvaluateItem) -> [u8; 16] {
    item.seed.as_slice().try_into().unwrap()
}

fn partial(node: &Node, item: &pb::EvaluateItem) -> Result<PartialEvaluation, pb::ItemError> {
    answers(node, std::slice::from_ref(item)).0.remove(0)
}

/// A node's answer to a batch of `items`, each value made a partial by checking the batch proof
/// that covers it (against the package the node holds), as the coordinator does, and the item
/// indices each proof covers. Every value is covered by exactly one proof, and each proof covers
/// one key version's items.
#[allow(clippy::type_complexity)]
fn answers(node: &Node, items: &[pb::EvaluateItem]) -> (Vec<Result<PartialEvaluation, pb::ItemError>>, Vec<Vec<u32>>) {
    let answer = node.evaluate_batch(items, "coordinator").unwrap();
    let mut out: Vec<Option<Result<PartialEvaluation, pb::ItemError>>> = answer
        .results
        .iter()
        .map(|r| match &r.result {
            Some(pb::partial_result::Result::Error(e)) => Some(Err(e.clone())),
            _ => None,
        })
        .collect();
    for group in &answer.proofs {
        let at: Vec<usize> = group.items.iter().map(|i| *i as usize).collect();
        let first = &items[at[0]];
        assert!(at.iter().all(|i| items[*i].key_id == first.key_id && items[*i].version == first.version));
        let state = node.key_state(&first.key_id).unwrap();
        let v = state.versions.iter().find(|v| v.version == first.version).unwrap();
        let package = PublicKeyPackage::from_bytes(&v.public_key_package).unwrap();
        let inputs: Vec<HashedInput> = at.iter().map(|i| HashedInput::new(evaluated_input(&items[*i]))).collect();
        let values: Vec<PartialValue> = at
            .iter()
            .map(|i| match &answer.results[*i].result {
                Some(pb::partial_result::Result::Partial(b)) => PartialValue::from_bytes(b).unwrap(),
                other => panic!("a proof covers item {i}, which has no value: {other:?}"),
            })
            .collect();
        let proof = BatchProof::from_bytes(&group.proof).unwrap();
        let refs: Vec<dprf::BatchItem<'_>> = at
            .iter()
            .zip(&inputs)
            .map(|(i, input)| (input, Coefficient::from_bytes(&items[*i].coefficient).unwrap()))
            .collect();
        let proven = dprf::vartime_verify_batch(&package, &refs, &values, &proof, &mut rand::rng()).unwrap();
        for (i, p) in at.iter().zip(proven) {
            assert!(out[*i].is_none(), "item {i} is covered twice");
            out[*i] = Some(Ok(p));
        }
    }
    let out = out.into_iter().enumerate().map(|(i, r)| r.unwrap_or_else(|| panic!("item {i} has no proof"))).collect();
    (out, answer.proofs.into_iter().map(|p| p.items).collect())
}

/// What the node evaluates for `item`: for an encryption, on the seed it derives.
fn evaluated_input(item: &pb::EvaluateItem) -> DprfInput {
    let seed = if item.operation == pb::Operation::Encrypt as i32 {
        dprf::encryption_seed(&item.key_id, item.version, &seed_of(item))
    } else {
        seed_of(item)
    };
    DprfInput::new(&item.key_id, item.version, seed).unwrap()
}

/// A batch of encryptions under two keys and a refused item between them: one proof per key,
/// each over exactly that key's values, and every two nodes' values combine to the same result.
#[test]
fn a_batch_over_two_keys_gets_one_proof_per_key_and_refusals_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let first = create_key(&nodes, "first", 2);
    let second = create_key(&nodes, "second", 2);
    let encrypt = |key_id: &str, plaintext: &[u8]| {
        let evidence = operator().encrypt(key_id, plaintext, b"");
        let nonce = hyok_evidence::encryption_nonce(&evidence).unwrap();
        pb::EvaluateItem { seed: nonce.to_vec(), evidence: Some(evidence), ..evaluate_item(key_id) }
    };
    let items = vec![
        encrypt("first", b"a"),
        encrypt("second", b"b"),
        encrypt("no-such-key", b"c"),
        encrypt("first", b"d"),
        encrypt("second", b"e"),
    ];
    let answered: Vec<_> = nodes.iter().map(|n| answers(n, &items)).collect();
    for (_, groups) in &answered {
        let mut groups = groups.clone();
        groups.sort();
        assert_eq!(groups, vec![vec![0, 3], vec![1, 4]]);
    }
    assert_eq!(answered[0].0[2].as_ref().unwrap_err().code, pb::item_error::Code::NotFound as i32);
    for (i, package) in [(0, &first), (1, &second), (3, &first), (4, &second)] {
        let input = evaluated_input(&items[i]);
        let tag_of = |a: usize, b: usize| {
            let two = [answered[a].0[i].clone().unwrap(), answered[b].0[i].clone().unwrap()];
            hyok_threshold::aead::seal_detached(
                &dprf::combine_unchecked(package, &two).unwrap(),
                &input,
                b"",
                &mut [0u8; 4],
            )
        };
        assert_eq!(tag_of(0, 1), tag_of(1, 2), "item {i}");
        assert_eq!(tag_of(0, 1), tag_of(0, 2), "item {i}");
    }
}

/// A node applies the public coefficient it is asked for: nodes 1 and 2 asked for their
/// Lagrange coefficients over {1, 2} give values that combine to what plain values of nodes 2
/// and 3 combine to. A zero, short or non-canonical coefficient refuses the item as INVALID,
/// with no value.
#[test]
fn a_node_applies_the_coefficient_it_is_asked_for_and_refuses_a_malformed_one() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let package = create_key(&nodes, "scaled", 2);
    let plain = evaluate_item("scaled");
    let set = [NodeId::new(1).unwrap(), NodeId::new(2).unwrap()];
    let scaled = |i: usize| {
        let coefficient = Coefficient::lagrange(&set, set[i]).unwrap();
        partial(&nodes[i], &pb::EvaluateItem { coefficient: coefficient.to_bytes(), ..plain.clone() }).unwrap()
    };
    let input = evaluated_input(&plain);
    let tag_of = |two: [PartialEvaluation; 2]| {
        let output = dprf::combine_unchecked(&package, &two).unwrap();
        hyok_threshold::aead::seal_detached(&output, &input, b"", &mut [0u8; 4])
    };
    let by_sum = tag_of([scaled(0), scaled(1)]);
    let as_usual = tag_of([partial(&nodes[1], &plain).unwrap(), partial(&nodes[2], &plain).unwrap()]);
    assert_eq!(by_sum, as_usual);
    // Node 1 scaled for {1, 2}, combined with node 3's plain value instead of node 2's.
    assert_eq!(tag_of([scaled(0), partial(&nodes[2], &plain).unwrap()]), as_usual);
    let mut over = [0xffu8; 32];
    over[31] = 0x7f;
    for bad in [vec![0u8; 32], vec![1u8; 31], over.to_vec()] {
        let refused = partial(&nodes[0], &pb::EvaluateItem { coefficient: bad, ..plain.clone() }).unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::Invalid as i32);
    }
}

#[test]
fn dkg_then_evaluate_then_per_node_disable() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let package = create_key(&nodes, "demo", 2);
    let item = evaluate_item("demo");
    // An encryption: the nodes evaluate on the seed they derive from the nonce.
    let input = DprfInput::new("demo", 1, dprf::encryption_seed("demo", 1, &seed_of(&item))).unwrap();
    let partials: Vec<PartialEvaluation> = nodes.iter().map(|n| partial(n, &item).unwrap()).collect();
    assert!(dprf::vartime_find_invalid(&package, &input, &partials, &mut rand::rng()).unwrap().is_empty());

    // Usage is enforced by the node: this key cannot unwrap.
    let unwrap = pb::UnwrapItem {
        key_id: "demo".into(),
        version: 1,
        wrapped: vec![1, 2],
        label: vec![],
        request_id: "u".into(),
        evidence: Some(operator().unwrap("demo", 1, &[1, 2], &[])),
        generation: None,
    };
    assert!(matches!(
        nodes[0].unwrap_batch(&[unwrap], "coordinator").unwrap()[0].result,
        Some(pb::partial_result::Result::Error(_))
    ));

    // An operator disables the key on node 1 alone: node 1 refuses, the others still serve.
    nodes[0]
        .set_enabled(
            &pb::SetKeyEnabledRequest { key_id: "demo".into(), enabled: false, request_id: "op".into() },
            "admin",
        )
        .unwrap();
    let err = partial(&nodes[0], &item).unwrap_err();
    assert_eq!(err.code, pb::item_error::Code::Disabled as i32);
    // Refusals are audited too, with their reason.
    let refused = nodes[0].read_audit(1, 100).unwrap();
    assert!(refused.iter().any(|e| e.operation == "refused:evaluate:encrypt:disabled"), "{refused:?}");
    assert!(refused.iter().any(|e| e.operation == "refused:unwrap:invalid"), "{refused:?}");
    assert!(partial(&nodes[1], &item).is_ok());

    // Malformed input is refused per item, never a panic.
    let mut bad = item.clone();
    bad.seed = vec![0; 3];
    assert_eq!(partial(&nodes[1], &bad).unwrap_err().code, pb::item_error::Code::Invalid as i32);
    let mut long = item.clone();
    long.request_id = "é".repeat(300);
    assert!(partial(&nodes[1], &long).is_ok());

    // Every operation is in the node's audit chain, which verifies.
    let audit = nodes[1].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "dkg:commit"));
    // … with a digest of what was evaluated: the seed the node derived.
    let derived = dprf::encryption_seed("demo", 1, &seed_of(&item)).to_vec();
    assert!(audit.iter().any(|e| e.operation == "evaluate:encrypt" && e.digest == derived), "{audit:?}");
    assert!(matches!(nodes[1].store().verify_audit().unwrap(), Ok(n) if n as usize == audit.len()));
}

#[test]
fn an_encryption_is_evaluated_on_a_seed_the_node_derives_so_encrypt_never_decrypts() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let package = create_key(&nodes, "demo", 2);
    // A captured ciphertext's seed, sent as an ENCRYPT "nonce" under a valid encryption's
    // signature: the nonce is not the one the signature gives, so every node refuses.
    let captured_seed = [3u8; 16];
    let mut steered = evaluate_item("demo");
    steered.seed = captured_seed.to_vec();
    for n in &nodes {
        assert_eq!(partial(n, &steered).unwrap_err().code, pb::item_error::Code::PermissionDenied as i32);
    }
    // The signature's own nonce: partials on the seed every node derived from it …
    let item = evaluate_item("demo");
    let partials: Vec<PartialEvaluation> = nodes.iter().map(|n| partial(n, &item).unwrap()).collect();
    let derived = DprfInput::new("demo", 1, dprf::encryption_seed("demo", 1, &seed_of(&item))).unwrap();
    assert!(dprf::vartime_find_invalid(&package, &derived, &partials, &mut rand::rng()).unwrap().is_empty());
    // … never on the nonce itself, even when the coordinator calls the item a DECRYPT.
    let mut decrypt = item.clone();
    decrypt.operation = pb::Operation::Decrypt as i32;
    assert_eq!(partial(&nodes[0], &decrypt).unwrap_err().code, pb::item_error::Code::PermissionDenied as i32);
    // DECRYPT evaluates on the seed as given, with a decryption's own signature.
    let on_captured = DprfInput::new("demo", 1, captured_seed).unwrap();
    let partials: Vec<PartialEvaluation> =
        nodes.iter().map(|n| partial(n, &decrypt_item("demo", 1, captured_seed)).unwrap()).collect();
    assert!(dprf::vartime_find_invalid(&package, &on_captured, &partials, &mut rand::rng()).unwrap().is_empty());
}

#[test]
fn without_evidence_or_with_anothers_nothing_is_computed_and_a_decryption_opens_once() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    create_key(&nodes, "demo", 2);
    create_key(&nodes, "other", 2);
    let denied = |item: &pb::EvaluateItem| partial(&nodes[0], item).unwrap_err().code;
    let deny = pb::item_error::Code::PermissionDenied as i32;
    // No evidence at all: refused before the key is looked at.
    assert_eq!(denied(&pb::EvaluateItem { evidence: None, ..decrypt_item("demo", 1, [4; 16]) }), deny);
    assert_eq!(denied(&pb::EvaluateItem { evidence: None, ..decrypt_item("nope", 1, [4; 16]) }), deny);
    // A decryption signed for another key, version or seed.
    let signed = decrypt_item("demo", 1, [4; 16]);
    assert_eq!(denied(&pb::EvaluateItem { key_id: "other".into(), ..signed.clone() }), deny);
    assert_eq!(denied(&pb::EvaluateItem { seed: vec![5; 16], ..signed.clone() }), deny);
    // A caller key the operator never listed.
    let stranger = hyok_evidence::caller::Signer::generate(&mut rand::rng());
    let foreign = pb::EvaluateItem { evidence: Some(stranger.decrypt("demo", 1, &[4; 16])), ..signed.clone() };
    assert_eq!(denied(&foreign), deny);
    // The right one: served once per node, a replay refused there (another node serves it).
    assert!(partial(&nodes[0], &signed).is_ok());
    let replay = partial(&nodes[0], &signed).unwrap_err();
    assert_eq!(replay.code, deny);
    assert!(replay.message.contains("replay"), "{replay:?}");
    assert!(partial(&nodes[1], &signed).is_ok());
    // Every refusal is audited with its reason; the partial served names the caller.
    let audit = nodes[0].read_audit(1, 1000).unwrap();
    let refusals = audit.iter().filter(|e| e.operation == "refused:evaluate:decrypt:permission_denied").count();
    assert_eq!(refusals, 6, "{audit:?}");
    assert!(audit.iter().any(|e| e.operation == "evaluate:decrypt" && e.caller == "coordinator for caller:test-app"));
}

#[test]
fn a_key_at_the_highest_version_number_is_created_served_and_listed_and_version_zero_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    let package = create_key_version(&nodes, "top", u32::MAX, 2);
    let item = pb::EvaluateItem { version: u32::MAX, ..evaluate_item("top") };
    let input = DprfInput::new("top", u32::MAX, dprf::encryption_seed("top", u32::MAX, &seed_of(&item))).unwrap();
    let partials: Vec<PartialEvaluation> = nodes.iter().map(|n| partial(n, &item).unwrap()).collect();
    assert!(dprf::vartime_find_invalid(&package, &input, &partials, &mut rand::rng()).unwrap().is_empty());
    let state = nodes[0].key_state("top").unwrap();
    assert_eq!(state.versions.iter().map(|v| (v.version, v.active)).collect::<Vec<_>>(), vec![(u32::MAX, true)]);
    assert_eq!(nodes[0].identity().unwrap().key_count, 1);
    // A version that does not exist (0 wrapped from u32::MAX + 1 would be one) is refused.
    assert_eq!(partial(&nodes[0], &evaluate_item("top")).unwrap_err().code, pb::item_error::Code::NotFound as i32);
    let round1 = pb::DkgRound1Request {
        session_id: b"s0".to_vec(),
        key_id: "top".into(),
        version: 0,
        threshold: 2,
        participants: Vec::new(),
        usages: vec![pb::KeyUsage::Encrypt as i32],
        request_id: "r".into(),
        reshare: None,
    };
    assert!(matches!(nodes[0].dkg_round1(&round1, "admin"), Err(hyok_node::node::NodeError::Invalid(_))));
}

fn enable(node: &Node, key_id: &str, enabled: bool, caller: &str) -> pb::NodeKeyState {
    let req = pb::SetKeyEnabledRequest { key_id: key_id.into(), enabled, request_id: "enable-it".into() };
    node.set_enabled(&req, caller).unwrap()
}

#[test]
fn a_vetoed_key_is_refused_no_admin_enable_clears_the_veto_and_only_a_lift_serves_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    create_key(&nodes, "demo", 2);
    let item = evaluate_item("demo");
    let veto = nodes[0].veto("demo", "legal hold", "local-operator:uid=1").unwrap();
    assert_eq!(veto.reason, "legal hold");

    // Refused like a disabled key, the message naming the veto; other nodes still serve.
    let refused = partial(&nodes[0], &item).unwrap_err();
    assert_eq!(refused.code, pb::item_error::Code::Disabled as i32);
    assert!(refused.message.contains("vetoed"), "{refused:?}");
    assert!(partial(&nodes[1], &item).is_ok());
    let state = nodes[0].key_state("demo").unwrap();
    assert!(!state.enabled && state.vetoed, "effective state and the veto: {state:?}");

    // The coordinator (or an admin) turning the key on changes only the admin flag.
    for caller in ["coordinator:coordinator", "admin:admin"] {
        let state = enable(&nodes[0], "demo", true, caller);
        assert!(!state.enabled && state.vetoed, "{caller}: {state:?}");
        assert_eq!(partial(&nodes[0], &item).unwrap_err().code, pb::item_error::Code::Disabled as i32);
    }
    assert!(!enable(&nodes[0], "demo", false, "admin").enabled);
    assert!(!enable(&nodes[0], "demo", true, "admin").enabled);
    assert!(nodes[0].key_states().unwrap().iter().all(|s| s.vetoed && !s.enabled));

    // The local operator lifts it: served again (the admin flag is on).
    assert_eq!(nodes[0].lift("demo", "local-operator:uid=1").unwrap(), veto);
    assert!(partial(&nodes[0], &item).is_ok());
    let state = nodes[0].key_state("demo").unwrap();
    assert!(state.enabled && !state.vetoed);

    // A lift does not override the admin: a key the admin disabled stays disabled.
    nodes[0].veto("demo", "", "local-operator:uid=1").unwrap();
    enable(&nodes[0], "demo", false, "admin");
    nodes[0].lift("demo", "local-operator:uid=1").unwrap();
    assert!(!nodes[0].key_state("demo").unwrap().enabled);
    assert_eq!(partial(&nodes[0], &item).unwrap_err().code, pb::item_error::Code::Disabled as i32);

    // Veto and lift, the refusals and the enable that found a veto are all in the chain.
    let audit = nodes[0].read_audit(1, 1000).unwrap();
    let ops: Vec<&str> = audit.iter().map(|e| e.operation.as_str()).collect();
    for op in ["veto", "lift", "enable:vetoed", "refused:evaluate:encrypt:disabled"] {
        assert!(ops.contains(&op), "{op} missing from {ops:?}");
    }
    let vetoed = audit.iter().find(|e| e.operation == "veto").unwrap();
    assert_eq!((vetoed.key_id.as_str(), vetoed.request_id.as_str()), ("demo", "legal hold"));
    assert_eq!(vetoed.caller, "local-operator:uid=1");
    assert!(matches!(nodes[0].store().verify_audit().unwrap(), Ok(n) if n as usize == audit.len()));
}

#[test]
fn a_veto_survives_a_restart_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let item = evaluate_item("demo");
    {
        let nodes = nodes(dir.path(), 3);
        create_key(&nodes, "demo", 2);
        nodes[0].veto("demo", "before restart", "local-operator:uid=1").unwrap();
    }
    let reopened = hyok_node::server::open(NodeId::new(1).unwrap(), &dir.path().join("node-1")).unwrap();
    assert_eq!(partial(&reopened, &item).unwrap_err().code, pb::item_error::Code::Disabled as i32);
    let state = enable(&reopened, "demo", true, "coordinator");
    assert!(!state.enabled && state.vetoed);
    let vetoes = reopened.vetoes().unwrap();
    assert_eq!(vetoes.len(), 1);
    assert_eq!((vetoes[0].0.as_str(), vetoes[0].1.reason.as_str()), ("demo", "before restart"));
    assert!(reopened.read_audit(1, 1000).unwrap().iter().any(|e| e.operation == "veto"));
    assert!(reopened.store().verify_audit().unwrap().is_ok());
}

#[test]
fn vetoes_of_unknown_keys_bad_reasons_and_lifts_of_unvetoed_keys_are_refused() {
    use hyok_node::node::NodeError;
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    create_key(&nodes, "demo", 2);
    assert!(matches!(nodes[0].veto("nope", "", "op"), Err(NodeError::NotFound(_))));
    assert!(matches!(nodes[0].veto("a/b", "", "op"), Err(NodeError::Invalid(_))));
    assert!(matches!(nodes[0].veto("demo", "two\nlines", "op"), Err(NodeError::Invalid(_))));
    assert!(matches!(nodes[0].veto("demo", &"x".repeat(257), "op"), Err(NodeError::Invalid(_))));
    assert!(matches!(nodes[0].lift("demo", "op"), Err(NodeError::NotFound(_))));
    assert!(nodes[0].vetoes().unwrap().is_empty());
    // Vetoing twice keeps the first veto.
    let first = nodes[0].veto("demo", "first", "op").unwrap();
    assert_eq!(nodes[0].veto("demo", "second", "op").unwrap(), first);
}

/// The node-local endpoint: a Unix socket in the data directory, mode 0600, that vetoes, lists
/// and lifts; removed when the endpoint stops.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_socket_vetoes_lists_and_lifts_and_is_removed_on_stop() {
    use hyok_node::operator::{Endpoint, OperatorRequest, request, socket_path, state_of};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 2);
    create_key(&nodes, "demo", 2);
    let node = std::sync::Arc::new(nodes.into_iter().next().unwrap());
    let data_dir = dir.path().join("node-1");
    // A stale socket left by a crash is replaced.
    drop(std::os::unix::net::UnixListener::bind(socket_path(&data_dir)).unwrap());
    let endpoint = Endpoint::bind(&data_dir).unwrap();
    let mode = std::fs::metadata(socket_path(&data_dir)).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only the node's account may connect");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(endpoint.serve(node.clone(), async {
        let _ = stopped.await;
    }));

    // What the node holds, in its own words: its identity and each version's generation.
    let state = state_of(&data_dir).await.unwrap();
    assert_eq!(state.identity, hex::encode(node.identity_public_key().as_bytes()));
    assert_eq!(state.versions.len(), 1, "{state:?}");
    let v = &state.versions[0];
    assert_eq!((v.rsa, v.key.as_str(), v.version, v.active, v.previous, v.next), (false, "demo", 1, true, None, None));
    assert_eq!(v.generation, node.key_states().unwrap()[0].versions[0].generation);

    let veto = OperatorRequest::Veto { key: "demo".into(), reason: "hold".into() };
    let answer = request(&data_dir, &veto).await.unwrap();
    assert_eq!((answer[0].key.as_str(), answer[0].reason.as_str()), ("demo", "hold"));
    // Acknowledged means in force (and flushed): the next partial is refused.
    assert_eq!(partial(&node, &evaluate_item("demo")).unwrap_err().code, pb::item_error::Code::Disabled as i32);
    assert_eq!(request(&data_dir, &OperatorRequest::List).await.unwrap(), answer);
    // The node's refusals come back as errors with its message, never a panic.
    let unknown = request(&data_dir, &OperatorRequest::Veto { key: "nope".into(), reason: String::new() }).await;
    assert!(unknown.unwrap_err().to_string().contains("nope"));
    let garbage = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(socket_path(&data_dir)).await.unwrap();
        s.write_all(b"{\"op\":\"format-disk\"}\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(garbage.contains("\"status\":\"error\""), "{garbage}");

    request(&data_dir, &OperatorRequest::Lift { key: "demo".into() }).await.unwrap();
    assert!(partial(&node, &evaluate_item("demo")).is_ok());
    assert!(request(&data_dir, &OperatorRequest::List).await.unwrap().is_empty());
    let audit = node.read_audit(1, 1000).unwrap();
    let by_operator: Vec<&str> =
        audit.iter().filter(|e| e.caller.starts_with("local-operator:uid=")).map(|e| e.operation.as_str()).collect();
    assert_eq!(by_operator, vec!["veto", "lift"]);

    stop.send(()).unwrap();
    served.await.unwrap();
    assert!(!socket_path(&data_dir).exists(), "a clean stop removes the socket");
    assert!(request(&data_dir, &OperatorRequest::List).await.is_err(), "no node, no answer");
}

#[test]
fn a_dkg_that_dies_on_a_replayed_package_is_audited_naming_the_dealer() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes(dir.path(), 3);
    let participants = participants(&nodes);
    let session = b"session-tampered".to_vec();
    let round1 = |n: &Node, session: &[u8]| {
        let req = pb::DkgRound1Request {
            session_id: session.to_vec(),
            key_id: "tampered".into(),
            version: 1,
            threshold: 2,
            participants: participants.clone(),
            usages: vec![pb::KeyUsage::Encrypt as i32],
            request_id: "create".into(),
            reshare: None,
        };
        n.dkg_round1(&req, "coordinator").unwrap().package
    };
    let mut r1: Vec<Vec<u8>> = nodes.iter().map(|n| round1(n, &session)).collect();
    // The relay replays dealer 1's package from another run: well-formed, signed for that run.
    r1[0] = round1(&nodes[0], b"another-session");
    let refused = nodes[1].dkg_round2(&pb::DkgRound2Request { session_id: session.clone(), packages: r1 });
    assert!(refused.is_err());
    let audit = nodes[1].read_audit(1, 100).unwrap();
    assert!(audit.iter().any(|e| e.operation == "dkg:abort:round2" && e.request_id == "culprits=1"), "{audit:?}");
    // Nothing was stored.
    assert!(nodes[1].key_state("tampered").is_err());
}

/// The evidence policy is the node operator's: without one everything is refused; installed
/// through the operator socket it is in force at once, shown with its secrets redacted,
/// audited, stored sealed and still in force after a restart. A policy that does not compile is
/// refused and the old one stays.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn the_evidence_policy_is_installed_by_the_operator_shown_redacted_and_survives_a_restart() {
    use hyok_evidence::policy::{PolicyFile, XksCredential, XksStore};
    use hyok_node::operator::{Endpoint, OperatorRequest, exchange_policy};
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node-1");
    hyok_node::server::init(&data_dir).unwrap();
    let secret = "1234567890123456789012345678901234567890123=";
    {
        let node = std::sync::Arc::new(hyok_node::server::open(NodeId::new(1).unwrap(), &data_dir).unwrap());
        let refused = partial(&node, &evaluate_item("demo")).unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::PermissionDenied as i32);
        assert!(refused.message.contains("no evidence policy"), "{refused:?}");

        let endpoint = Endpoint::bind(&data_dir).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(endpoint.serve(node.clone(), async {
            let _ = stopped.await;
        }));
        let mut policy = support::policy();
        policy.xks.push(XksStore {
            uri_prefix: "ks".into(),
            region: None,
            credentials: vec![XksCredential {
                access_key_id: "AKIA4GBY3I6JCE5M2HPM".into(),
                secret_access_key: secret.into(),
            }],
            credentials_file: None,
            keys: Vec::new(),
        });
        let shown = exchange_policy(&data_dir, &OperatorRequest::PolicyInstall { policy }).await.unwrap().unwrap();
        let text = serde_json::to_string(&shown.policy).unwrap();
        assert!(!text.contains(secret) && text.contains("<sealed>"), "{text}");
        // In force at once: the key is not there, but the request is no longer refused for its
        // evidence.
        let refused = partial(&node, &evaluate_item("demo")).unwrap_err();
        assert_eq!(refused.code, pb::item_error::Code::NotFound as i32, "{refused:?}");
        // A bad policy is refused; the one in force stays.
        let bad = PolicyFile { format: "nope".into(), ..PolicyFile::default() };
        assert!(exchange_policy(&data_dir, &OperatorRequest::PolicyInstall { policy: bad }).await.is_err());
        let again = exchange_policy(&data_dir, &OperatorRequest::PolicyShow).await.unwrap().unwrap();
        assert_eq!(again.digest, shown.digest);
        let audit = node.read_audit(1, 100).unwrap();
        let installs: Vec<_> = audit.iter().filter(|e| e.operation == "policy:install").collect();
        assert_eq!(installs.len(), 1, "{audit:?}");
        assert_eq!(installs[0].request_id, shown.digest);
        assert!(installs[0].caller.starts_with("local-operator:uid="));
        stop.send(()).unwrap();
        served.await.unwrap();
    }
    let (digest, stored) = hyok_node::server::stored_policy(&data_dir).unwrap().unwrap();
    assert_eq!(stored.xks[0].credentials[0].secret_access_key, secret);
    assert!(!digest.iter().all(|b| *b == 0));
    let reopened = hyok_node::server::open(NodeId::new(1).unwrap(), &data_dir).unwrap();
    assert_eq!(partial(&reopened, &evaluate_item("demo")).unwrap_err().code, pb::item_error::Code::NotFound as i32);
}
