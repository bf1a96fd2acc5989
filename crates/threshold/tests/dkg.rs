//! Distributed key generation: agreement, correctness, cheaters caught, relay blind.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{Cluster, RelayLog, honest, rng, run_dkg, subsets};
use curve25519_dalek::{RistrettoPoint, Scalar, traits::Identity};
use hyok_threshold::dkg::{self, Parameters, round1, round2};
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::{Error, NodeId, NodeSecrets, PartialEvaluation, Wire};
use rand_chacha::ChaCha20Rng;

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

/// `Σ λ_i·K_i` over the given nodes, computed here from first principles.
fn interpolate_vks(package: &hyok_threshold::PublicKeyPackage, set: &[NodeId]) -> RistrettoPoint {
    let mut acc = RistrettoPoint::identity();
    for i in set {
        let xi = Scalar::from(u64::from(i.get()));
        let mut lambda = Scalar::ONE;
        for j in set.iter().filter(|j| *j != i) {
            let xj = Scalar::from(u64::from(j.get()));
            lambda *= xj * (xj - xi).invert();
        }
        let vk = package.verification_keys()[i];
        acc += lambda * curve25519_dalek::ristretto::CompressedRistretto(*vk.as_bytes()).decompress().unwrap();
    }
    acc
}

#[test]
fn honest_runs_agree_and_shares_interpolate_to_the_group_key() {
    for (t, n) in [(1u16, 1u16), (1, 3), (2, 2), (2, 3), (3, 5), (4, 7)] {
        let mut r = rng(u64::from(t) * 100 + u64::from(n));
        let cluster = Cluster::new(t, n, b"key-a/v1/nonce", &mut r);
        let (outputs, _) = run_dkg(&cluster, &mut r, honest, &mut RelayLog::default());
        let outputs: Vec<dkg::Output> = outputs.into_values().map(Result::unwrap).collect();
        let package = &outputs[0].package;
        for o in &outputs {
            assert_eq!(&o.package, package, "t={t} n={n}: every node ends with the same public package");
            assert!(o.disqualified.is_empty());
            assert_eq!(package.verification_keys()[&o.share.node()], o.share.verification_key());
        }
        let group =
            curve25519_dalek::ristretto::CompressedRistretto(*package.group_key().as_bytes()).decompress().unwrap();
        let nodes: Vec<NodeId> = package.nodes().collect();
        for set in subsets(nodes.len(), usize::from(t)) {
            let set: Vec<NodeId> = set.iter().map(|&i| nodes[i]).collect();
            assert_eq!(interpolate_vks(package, &set), group, "t={t} n={n} set={set:?}");
        }
        // And the shares work: DPRF partials from any t nodes agree.
        let input = DprfInput::random("k", 1, &mut r).unwrap();
        let partials: Vec<PartialEvaluation> =
            outputs.iter().map(|o| dprf::evaluate(&o.share, &input, &mut r)).collect();
        assert!(dprf::vartime_find_invalid(package, &input, &partials, &mut r).unwrap().is_empty());
        let reversed: Vec<PartialEvaluation> = partials.iter().rev().cloned().collect();
        let a = hyok_threshold::dealer::dangerous_output_point(&dprf::combine_unchecked(package, &partials).unwrap());
        let b = hyok_threshold::dealer::dangerous_output_point(&dprf::combine_unchecked(package, &reversed).unwrap());
        assert_eq!(a, b);
    }
}

#[test]
fn a_dealer_sending_one_bad_sub_share_is_named_by_the_complaint_and_excluded() {
    let mut r = rng(1);
    let cluster = Cluster::new(3, 5, b"session-bad-share", &mut r);
    let cheater = node(2);
    let victim = node(4);
    let (outputs, _) = run_dkg(
        &cluster,
        &mut r,
        |id, identity, params, rng| {
            (id == cheater).then(|| {
                round1::dangerous_part1_with_fault(
                    id,
                    identity,
                    params,
                    round1::DangerousFault::CorruptShareFor(victim),
                    rng,
                )
                .unwrap()
            })
        },
        &mut RelayLog::default(),
    );
    let outputs: Vec<dkg::Output> = outputs.into_values().map(Result::unwrap).collect();
    for o in &outputs {
        assert_eq!(o.disqualified, vec![cheater], "node {} names the cheater", o.share.node());
        assert_eq!(o.package, outputs[0].package);
    }
    // The key made without the cheater still works for every node, the victim included.
    let package = &outputs[0].package;
    let input = DprfInput::random("k", 1, &mut r).unwrap();
    let partials: Vec<PartialEvaluation> = outputs.iter().map(|o| dprf::evaluate(&o.share, &input, &mut r)).collect();
    assert!(dprf::vartime_find_invalid(package, &input, &partials, &mut r).unwrap().is_empty());
}

#[test]
fn the_complaint_itself_names_the_accused() {
    let mut r = rng(2);
    let cluster = Cluster::new(2, 3, b"s", &mut r);
    let mut states = Vec::new();
    let mut packages = Vec::new();
    for (id, identity) in &cluster.identities {
        let (s, p) = if *id == node(1) {
            round1::dangerous_part1_with_fault(
                *id,
                identity,
                cluster.params.clone(),
                round1::DangerousFault::CorruptShareFor(node(3)),
                &mut r,
            )
            .unwrap()
        } else {
            dkg::part1(*id, identity, cluster.params.clone(), &mut r).unwrap()
        };
        states.push(s);
        packages.push(p);
    }
    let round2: Vec<_> = states.into_iter().map(|s| s.receive(&packages, &mut r).unwrap().1).collect();
    let accusations: Vec<(NodeId, NodeId)> =
        round2.iter().flat_map(|p| p.complaints().iter().map(move |c| (p.sender(), c.accused()))).collect();
    assert_eq!(accusations, vec![(node(3), node(1))]);
}

/// A DKG of `cluster` in which `liar` files its round-2 complaints with `lie` and every other
/// node is honest; every round-2 package goes over the wire, as the coordinator relays it. Each
/// node's output, and the relayed round-2 packages.
fn dkg_with_a_liar(
    cluster: &Cluster,
    liar: NodeId,
    lie: impl FnOnce(
        round1::SecretPackage,
        &[round1::Package],
        &mut ChaCha20Rng,
    ) -> Result<(round2::SecretPackage, round2::Package), Error>,
    r: &mut ChaCha20Rng,
) -> (Vec<dkg::Output>, Vec<round2::Package>) {
    let mut round1 = Vec::new();
    for (id, identity) in &cluster.identities {
        round1.push((*id, dkg::part1(*id, identity, cluster.params.clone(), r).unwrap()));
    }
    let packages1: Vec<round1::Package> = round1.iter().map(|(_, (_, p))| p.clone()).collect();
    let mut lie = Some(lie);
    let mut states2 = Vec::new();
    let mut packages2 = Vec::new();
    for (id, (s, _)) in round1 {
        let (s, p) = match lie.take_if(|_| id == liar) {
            Some(lie) => lie(s, &packages1, r).unwrap(),
            None => s.receive(&packages1, r).unwrap(),
        };
        states2.push(s);
        // A node that refused to decode one here would stop the run naming nobody.
        let relayed = round2::Package::from_bytes(&p.to_bytes()).expect("every complaints message decodes");
        assert_eq!(relayed, p);
        packages2.push(relayed);
    }
    let outputs = states2.into_iter().map(|s| s.finish(&packages2).unwrap()).collect();
    (outputs, packages2)
}

/// Every node disqualified exactly `liar` and agrees on the key.
fn assert_only_disqualified(outputs: &[dkg::Output], liar: NodeId) {
    for o in outputs {
        assert_eq!(o.disqualified, vec![liar], "the liar is the one out, not the node it accused");
        assert_eq!(o.package, outputs[0].package);
    }
}

#[test]
fn a_false_complaint_disqualifies_the_accuser_not_the_accused() {
    let mut r = rng(11);
    let cluster = Cluster::new(2, 4, b"session-false-complaint", &mut r);
    let (liar, slandered) = (node(1), node(3));
    let (outputs, packages2) = dkg_with_a_liar(
        &cluster,
        liar,
        |s, packages, r| s.dangerous_receive_with_false_complaint(packages, slandered, r),
        &mut r,
    );
    assert_eq!(packages2[0].sender(), liar);
    assert_eq!(packages2[0].complaints().len(), 1);
    assert_only_disqualified(&outputs, liar);
}

#[test]
fn a_complaint_whose_proof_commitment_is_no_point_decodes_and_disqualifies_its_sender() {
    let mut r = rng(12);
    let cluster = Cluster::new(2, 4, b"session-unreadable-complaint", &mut r);
    let (liar, slandered) = (node(2), node(4));
    let (outputs, packages2) = dkg_with_a_liar(
        &cluster,
        liar,
        |s, packages, r| s.dangerous_receive_with_unreadable_complaint(packages, slandered, r),
        &mut r,
    );
    for p in &packages2 {
        let non_point = p.to_bytes().windows(32).any(|w| w == [0xff; 32]);
        assert_eq!(non_point, p.sender() == liar, "only the liar's proof carries the non-point");
    }
    assert_eq!(packages2[1].sender(), liar);
    assert_eq!(packages2[1].complaints().iter().map(|c| c.accused()).collect::<Vec<_>>(), vec![slandered]);
    assert_only_disqualified(&outputs, liar);
}

#[test]
fn a_dealer_whose_proof_of_knowledge_fails_is_excluded() {
    let mut r = rng(3);
    let cluster = Cluster::new(2, 4, b"session-bad-pok", &mut r);
    let cheater = node(3);
    let (outputs, _) = run_dkg(
        &cluster,
        &mut r,
        |id, identity, params, rng| {
            (id == cheater).then(|| {
                round1::dangerous_part1_with_fault(
                    id,
                    identity,
                    params,
                    round1::DangerousFault::BadProofOfKnowledge,
                    rng,
                )
                .unwrap()
            })
        },
        &mut RelayLog::default(),
    );
    for o in outputs.into_values() {
        assert_eq!(o.unwrap().disqualified, vec![cheater]);
    }
}

#[test]
fn too_many_cheaters_fail_the_run_instead_of_making_a_weak_key() {
    let mut r = rng(4);
    let cluster = Cluster::new(3, 4, b"s", &mut r);
    let (outputs, _) = run_dkg(
        &cluster,
        &mut r,
        |id, identity, params, rng| {
            (id.get() <= 2).then(|| {
                round1::dangerous_part1_with_fault(
                    id,
                    identity,
                    params,
                    round1::DangerousFault::BadProofOfKnowledge,
                    rng,
                )
                .unwrap()
            })
        },
        &mut RelayLog::default(),
    );
    for o in outputs.into_values() {
        assert_eq!(
            o.unwrap_err(),
            Error::NotEnoughQualifiedDealers { qualified: 2, needed: 3, disqualified: vec![node(1), node(2)] }
        );
    }
}

#[test]
fn the_relay_sees_no_sub_share_or_final_share_in_the_clear() {
    let mut r = rng(5);
    let cluster = Cluster::new(3, 5, b"session-relay", &mut r);
    let mut log = RelayLog::default();
    let (outputs, dealt) = run_dkg(&cluster, &mut r, honest, &mut log);
    assert_eq!(dealt.len(), 25);
    let mut secrets: Vec<[u8; 32]> = dealt.iter().map(|(_, s)| s.to_bytes()).collect();
    for o in outputs.into_values() {
        secrets.push(o.unwrap().share.dangerous_secret().to_bytes());
    }
    assert_eq!(log.messages.len(), 10);
    for message in &log.messages {
        for secret in &secrets {
            // Neither the secret nor any 16-byte window of it appears in what the relay carried.
            for window in secret.windows(16) {
                assert!(!message.windows(16).any(|w| w == window), "a secret leaked into a relayed message");
            }
        }
    }
}

#[test]
fn a_message_altered_by_the_relay_aborts_the_run_naming_the_claimed_sender() {
    let mut r = rng(6);
    let cluster = Cluster::new(2, 3, b"s", &mut r);
    let mut states = Vec::new();
    let mut packages = Vec::new();
    for (id, identity) in &cluster.identities {
        let (s, p) = dkg::part1(*id, identity, cluster.params.clone(), &mut r).unwrap();
        states.push(s);
        packages.push(p);
    }
    // Flip one bit inside node 2's first encrypted sub-share: still decodes, signature breaks.
    let mut bytes = packages[1].to_bytes();
    let at = bytes.len() - 64 - 48 - 10;
    bytes[at] ^= 1;
    packages[1] = round1::Package::from_bytes(&bytes).unwrap();
    let err = states.remove(0).receive(&packages, &mut r).unwrap_err();
    assert_eq!(err, Error::InvalidSignature { node: node(2) });
}

#[test]
fn a_missing_round1_message_is_reported() {
    let mut r = rng(7);
    let cluster = Cluster::new(2, 3, b"s", &mut r);
    let mut states = Vec::new();
    let mut packages = Vec::new();
    for (id, identity) in &cluster.identities {
        let (s, p) = dkg::part1(*id, identity, cluster.params.clone(), &mut r).unwrap();
        states.push(s);
        packages.push(p);
    }
    packages.remove(2);
    assert_eq!(states.remove(0).receive(&packages, &mut r).unwrap_err(), Error::MissingMessage { node: node(3) });
}

#[test]
fn part1_refuses_an_identity_that_is_not_the_registered_one() {
    let mut r = rng(8);
    let cluster = Cluster::new(2, 3, b"s", &mut r);
    let stranger = NodeSecrets::generate(&mut r);
    assert!(matches!(dkg::part1(node(1), &stranger, cluster.params.clone(), &mut r), Err(Error::InvalidParameters(_))));
    // The registered identity, but another transport key: also refused.
    let same_identity = NodeSecrets::from_identity(
        hyok_threshold::IdentitySecret::from_secret_bytes(*cluster.identities[&node(1)].identity().to_secret_bytes())
            .unwrap(),
        &mut r,
    );
    assert!(matches!(
        dkg::part1(node(1), &same_identity, cluster.params.clone(), &mut r),
        Err(Error::InvalidParameters(_))
    ));
}

#[test]
fn parameters_are_validated() {
    let mut r = rng(9);
    let keys: Vec<_> = (1..=3)
        .map(|i| {
            let s = NodeSecrets::generate(&mut r);
            s.key_bundle(node(i), &mut r).verify(node(i), &s.identity().public_key()).unwrap()
        })
        .collect();
    assert!(Parameters::new(0, keys.clone(), b"s").is_err());
    assert!(Parameters::new(4, keys.clone(), b"s").is_err());
    assert!(Parameters::new(2, keys.clone(), b"").is_err());
    assert!(Parameters::new(2, keys.clone(), &[0; 257]).is_err());
    assert!(Parameters::new(3, keys.clone(), b"s").is_ok());
    let twice = vec![keys[0], keys[1], keys[0]];
    assert_eq!(Parameters::new(2, twice, b"s").unwrap_err(), Error::DuplicateNode { node: node(1) });
}
