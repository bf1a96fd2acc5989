//! Resharing a key to new holders and a new threshold: the key is kept, old shares are useless
//! after, cheaters are named.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{rng, subsets};
use curve25519_dalek::{RistrettoPoint, Scalar, traits::Identity};
use hyok_threshold::dealer::{
    dangerous_deal, dangerous_evaluate_directly, dangerous_output_point, dangerous_partial_point,
};
use hyok_threshold::dkg;
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::reshare::{self, ComplaintPackage, DangerousFault, DealerPackage, Parameters};
use hyok_threshold::{Error, KeyBundle, KeyShare, NodeId, NodeSecrets, PartialEvaluation, PublicKeyPackage, Wire};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

fn nodes(ids: impl IntoIterator<Item = u16>) -> Vec<NodeId> {
    ids.into_iter().map(node).collect()
}

/// Every node's long-term keys and verified bundle.
struct Pool {
    secrets: BTreeMap<NodeId, NodeSecrets>,
    bundles: BTreeMap<NodeId, KeyBundle>,
}

impl Pool {
    fn new(n: u16, r: &mut ChaCha20Rng) -> Self {
        let secrets: BTreeMap<NodeId, NodeSecrets> = (1..=n).map(|i| (node(i), NodeSecrets::generate(r))).collect();
        let bundles = secrets
            .iter()
            .map(|(id, s)| (*id, s.key_bundle(*id, r).verify(*id, &s.identity().public_key()).unwrap()))
            .collect();
        Pool { secrets, bundles }
    }
    fn bundles(&self, ids: &[NodeId]) -> Vec<KeyBundle> {
        ids.iter().map(|id| self.bundles[id]).collect()
    }
    fn params(&self, old: &Key, dealers: &[NodeId], receivers: &[NodeId], t: u16, session: &[u8]) -> Parameters {
        Parameters::new(old.package.clone(), self.bundles(dealers), self.bundles(receivers), t, session).unwrap()
    }
}

/// A key version as its holders have it.
struct Key {
    shares: BTreeMap<NodeId, KeyShare>,
    package: PublicKeyPackage,
}

impl Key {
    fn dealt(secret: &Scalar, t: u16, ids: &[NodeId], r: &mut ChaCha20Rng) -> Self {
        let (shares, package) = dangerous_deal(secret, t, ids, r).unwrap();
        Key { shares: shares.into_iter().map(|s| (s.node(), s)).collect(), package }
    }
    fn from_outputs(outputs: BTreeMap<NodeId, reshare::Output>) -> Self {
        let package = outputs.values().next().unwrap().package.clone();
        Key { shares: outputs.into_iter().map(|(id, o)| (id, o.share)).collect(), package }
    }
}

/// How the run's parties misbehave.
#[derive(Default)]
struct Faults {
    dealers: BTreeMap<NodeId, DangerousFault>,
    false_complaint: Option<(NodeId, NodeId)>,
}

/// Every dealer's package, through its wire encoding as the relay carries it.
fn deal_all(pool: &Pool, key: &Key, params: &Parameters, faults: &Faults, r: &mut ChaCha20Rng) -> Vec<DealerPackage> {
    params
        .dealers()
        .map(|id| {
            let (keys, share) = (&pool.secrets[&id], &key.shares[&id]);
            let package = match faults.dealers.get(&id) {
                Some(fault) => reshare::dangerous_deal_with_fault(id, keys, share, params, *fault, r).unwrap(),
                None => reshare::deal(id, keys, share, params, r).unwrap(),
            };
            DealerPackage::from_bytes(&package.to_bytes()).unwrap()
        })
        .collect()
}

/// Round 1 for every receiver: its state and complaint package (through the wire).
fn receive_all(
    pool: &Pool,
    params: &Parameters,
    packages: &[DealerPackage],
    faults: &Faults,
    r: &mut ChaCha20Rng,
) -> Vec<(NodeId, reshare::ReceiverState, ComplaintPackage)> {
    params
        .receivers()
        .map(|id| {
            let keys = &pool.secrets[&id];
            let (state, package) = match faults.false_complaint {
                Some((liar, accused)) if liar == id => {
                    reshare::dangerous_receive_with_false_complaint(id, keys, params.clone(), packages, accused, r)
                        .unwrap()
                }
                _ => reshare::receive(id, keys, params.clone(), packages, r).unwrap(),
            };
            (id, state, ComplaintPackage::from_bytes(&package.to_bytes()).unwrap())
        })
        .collect()
}

/// A whole run: every receiver's outcome.
fn run(
    pool: &Pool,
    key: &Key,
    params: &Parameters,
    faults: &Faults,
    r: &mut ChaCha20Rng,
) -> BTreeMap<NodeId, hyok_threshold::Result<reshare::Output>> {
    let packages = deal_all(pool, key, params, faults, r);
    let round1 = receive_all(pool, params, &packages, faults, r);
    let complaints: Vec<ComplaintPackage> = round1.iter().map(|(_, _, p)| p.clone()).collect();
    round1.into_iter().map(|(id, state, _)| (id, state.finish(&complaints))).collect()
}

fn run_ok(pool: &Pool, key: &Key, params: &Parameters, faults: &Faults, r: &mut ChaCha20Rng) -> Key {
    let outputs = run(pool, key, params, faults, r).into_iter().map(|(id, o)| (id, o.unwrap())).collect();
    Key::from_outputs(outputs)
}

/// `Σ λ_i(0)·Y_i` over the given points, from first principles (for sets the package's own
/// combine refuses, such as `t′ − 1` partials).
fn interpolate(points: &[(NodeId, RistrettoPoint)]) -> RistrettoPoint {
    let mut acc = RistrettoPoint::identity();
    for (i, p) in points {
        let xi = Scalar::from(u64::from(i.get()));
        let mut lambda = Scalar::ONE;
        for (j, _) in points.iter().filter(|(j, _)| j != i) {
            let xj = Scalar::from(u64::from(j.get()));
            lambda *= xj * (xj - xi).invert();
        }
        acc += lambda * p;
    }
    acc
}

/// Everything a resharing must keep: the group key, every holder's share under its `K′_i`,
/// every `t′`-subset of partials combines (through the crate's combine) to `k·P`, and no
/// `t′ − 1` of them do.
fn assert_key_holds(key: &Key, secret: &Scalar, group: &PublicKeyPackage, r: &mut ChaCha20Rng) {
    let package = &key.package;
    assert_eq!(package.group_key(), group.group_key(), "the group key is unchanged");
    assert_eq!(package.nodes().collect::<Vec<_>>(), key.shares.keys().copied().collect::<Vec<_>>());
    for (id, share) in &key.shares {
        assert_eq!(package.verification_keys()[id], share.verification_key(), "K′_{id} is node {id}'s share");
    }
    let input = DprfInput::random("reshare", 1, r).unwrap();
    let expected = dangerous_evaluate_directly(secret, &input);
    let partials: Vec<PartialEvaluation> = key.shares.values().map(|s| dprf::evaluate(s, &input, r)).collect();
    assert!(dprf::vartime_find_invalid(package, &input, &partials, r).unwrap().is_empty(), "every partial verifies");
    let t = usize::from(package.threshold());
    for set in subsets(partials.len(), t) {
        let chosen: Vec<PartialEvaluation> = set.iter().map(|&i| partials[i].clone()).collect();
        let combined = dangerous_output_point(&dprf::combine_unchecked(package, &chosen).unwrap());
        assert_eq!(combined, expected, "t′ = {t}, set {set:?} combines to k·P");
    }
    for set in subsets(partials.len(), t - 1) {
        let chosen: Vec<(NodeId, RistrettoPoint)> =
            set.iter().map(|&i| (partials[i].node(), dangerous_partial_point(&partials[i]))).collect();
        assert_ne!(interpolate(&chosen), expected, "t′ − 1 = {} partials {set:?} must not suffice", t - 1);
        let chosen: Vec<PartialEvaluation> = set.iter().map(|&i| partials[i].clone()).collect();
        assert!(matches!(dprf::combine_unchecked(package, &chosen), Err(Error::NotEnoughPartials { .. })));
    }
}

fn assert_all_agree(
    outputs: &BTreeMap<NodeId, hyok_threshold::Result<reshare::Output>>,
    disqualified: &[NodeId],
    false_accusers: &[NodeId],
) {
    let first = &outputs.values().next().unwrap().as_ref().unwrap().package;
    for (id, o) in outputs {
        let o = o.as_ref().unwrap();
        assert_eq!(&o.package, first, "receiver {id} ends with the same package");
        assert_eq!(o.disqualified, disqualified, "receiver {id}: disqualified dealers");
        assert_eq!(o.false_accusers, false_accusers, "receiver {id}: false accusers");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any old `t`-of-`n` (1 ≤ t ≤ n ≤ 6) to any new `t′`-of-`n′` (1 ≤ t′ ≤ n′ ≤ 7), the new
    /// set overlapping, disjoint from, larger or smaller than the old one, by any `≥ t` of the
    /// old holders.
    #[test]
    fn every_new_subset_combines_to_the_old_key(
        t in 1u16..=6,
        n_extra in 0u16..=5,
        t2 in 1u16..=7,
        n2_extra in 0u16..=6,
        offset in 0u16..=7,
        dealer_extra in 0u16..=5,
        seed in any::<u64>(),
    ) {
        let mut r = rng(seed);
        let n = (t + n_extra).min(6);
        let n2 = (t2 + n2_extra).min(7);
        let pool = Pool::new(n.max(offset + n2), &mut r);
        let secret = Scalar::random(&mut r);
        let old = Key::dealt(&secret, t, &nodes(1..=n), &mut r);
        let d = (t + dealer_extra).min(n);
        let dealers = nodes(n - d + 1..=n);
        let receivers = nodes(offset + 1..=offset + n2);
        let params = pool.params(&old, &dealers, &receivers, t2, b"prop");
        let outputs = run(&pool, &old, &params, &Faults::default(), &mut r);
        assert_all_agree(&outputs, &[], &[]);
        let new = Key::from_outputs(outputs.into_iter().map(|(id, o)| (id, o.unwrap())).collect());
        prop_assert_eq!(new.package.threshold(), t2);
        assert_key_holds(&new, &secret, &old.package, &mut r);
        // And the scalar check, through the dangerous accessor only: k = Σ λ_i·k′_i.
        let first: Vec<&KeyShare> = new.shares.values().take(usize::from(t2)).collect();
        let points: Vec<(NodeId, RistrettoPoint)> =
            first.iter().map(|s| (s.node(), RistrettoPoint::mul_base(&s.dangerous_secret()))).collect();
        prop_assert_eq!(interpolate(&points), RistrettoPoint::mul_base(&secret));
    }
}

#[test]
fn a_refresh_gives_new_shares_and_an_old_share_no_longer_combines_with_new_ones() {
    let mut r = rng(1);
    let pool = Pool::new(5, &mut r);
    let secret = Scalar::random(&mut r);
    let ids = nodes(1..=5);
    let old = Key::dealt(&secret, 3, &ids, &mut r);
    let params = pool.params(&old, &ids, &ids, 3, b"refresh");
    let new = run_ok(&pool, &old, &params, &Faults::default(), &mut r);
    assert_key_holds(&new, &secret, &old.package, &mut r);
    for id in &ids {
        assert_ne!(new.shares[id].dangerous_secret(), old.shares[id].dangerous_secret(), "node {id}'s share changed");
        assert_ne!(new.package.verification_keys()[id], old.package.verification_keys()[id]);
    }
    // One old share with t′ − 1 new ones: the wrong value, and the old partial fails its proof.
    let input = DprfInput::random("refresh", 1, &mut r).unwrap();
    let expected = dangerous_evaluate_directly(&secret, &input);
    let stale = dprf::evaluate(&old.shares[&node(1)], &input, &mut r);
    let mixed = vec![
        stale.clone(),
        dprf::evaluate(&new.shares[&node(2)], &input, &mut r),
        dprf::evaluate(&new.shares[&node(3)], &input, &mut r),
    ];
    assert_ne!(dangerous_output_point(&dprf::combine_unchecked(&new.package, &mixed).unwrap()), expected);
    assert_eq!(dprf::vartime_find_invalid(&new.package, &input, &mixed, &mut r).unwrap(), vec![node(1)]);
    // The old shares among themselves still combine: deleting them is the holders' job.
    let old_partials: Vec<PartialEvaluation> =
        old.shares.values().take(3).map(|s| dprf::evaluate(s, &input, &mut r)).collect();
    assert_eq!(dangerous_output_point(&dprf::combine_unchecked(&old.package, &old_partials).unwrap()), expected);
}

/// A 3-of-5 key of nodes 1..=5, reshared by all five to 3-of-5 of nodes 2..=6.
fn three_of_five(seed: u64) -> (ChaCha20Rng, Pool, Scalar, Key, Parameters) {
    let mut r = rng(seed);
    let pool = Pool::new(6, &mut r);
    let secret = Scalar::random(&mut r);
    let old = Key::dealt(&secret, 3, &nodes(1..=5), &mut r);
    let params = pool.params(&old, &nodes(1..=5), &nodes(2..=6), 3, b"cheaters");
    (r, pool, secret, old, params)
}

#[test]
fn a_dealer_with_a_wrong_constant_term_is_disqualified() {
    let (mut r, pool, secret, old, params) = three_of_five(2);
    let faults = Faults { dealers: [(node(2), DangerousFault::WrongConstantTerm)].into(), ..Faults::default() };
    let packages = deal_all(&pool, &old, &params, &faults, &mut r);
    let round1 = receive_all(&pool, &params, &packages, &faults, &mut r);
    assert!(round1.iter().all(|(_, _, p)| p.complaints().is_empty()), "caught by C_j0 ≠ K_j, not by complaints");
    let complaints: Vec<ComplaintPackage> = round1.iter().map(|(_, _, p)| p.clone()).collect();
    let outputs: BTreeMap<_, _> = round1.into_iter().map(|(id, s, _)| (id, s.finish(&complaints))).collect();
    assert_all_agree(&outputs, &[node(2)], &[]);
    let new = Key::from_outputs(outputs.into_iter().map(|(id, o)| (id, o.unwrap())).collect());
    assert_key_holds(&new, &secret, &old.package, &mut r);
}

#[test]
fn a_dealer_corrupting_one_sub_share_draws_a_complaint_and_is_disqualified() {
    let (mut r, pool, secret, old, params) = three_of_five(3);
    let (cheater, victim) = (node(1), node(4));
    let faults = Faults { dealers: [(cheater, DangerousFault::CorruptShareFor(victim))].into(), ..Faults::default() };
    let packages = deal_all(&pool, &old, &params, &faults, &mut r);
    let round1 = receive_all(&pool, &params, &packages, &faults, &mut r);
    let accusations: Vec<(NodeId, Vec<NodeId>)> = round1
        .iter()
        .filter(|(_, _, p)| !p.complaints().is_empty())
        .map(|(_, _, p)| (p.sender(), p.complaints()))
        .collect();
    assert_eq!(accusations, vec![(victim, vec![cheater])]);
    let complaints: Vec<ComplaintPackage> = round1.iter().map(|(_, _, p)| p.clone()).collect();
    let outputs: BTreeMap<_, _> = round1.into_iter().map(|(id, s, _)| (id, s.finish(&complaints))).collect();
    assert_all_agree(&outputs, &[cheater], &[]);
    // The victim's new share is good: it was made without the cheater.
    let new = Key::from_outputs(outputs.into_iter().map(|(id, o)| (id, o.unwrap())).collect());
    assert_key_holds(&new, &secret, &old.package, &mut r);
}

#[test]
fn a_false_complaint_names_the_accuser_and_keeps_the_dealer() {
    let (mut r, pool, secret, old, params) = three_of_five(4);
    let (liar, slandered) = (node(3), node(5));
    let faults = Faults { false_complaint: Some((liar, slandered)), ..Faults::default() };
    let outputs = run(&pool, &old, &params, &faults, &mut r);
    assert_all_agree(&outputs, &[], &[liar]);
    let new = Key::from_outputs(outputs.into_iter().map(|(id, o)| (id, o.unwrap())).collect());
    assert_key_holds(&new, &secret, &old.package, &mut r);
}

#[test]
fn too_many_bad_dealers_fail_the_run() {
    let mut r = rng(5);
    let pool = Pool::new(4, &mut r);
    let old = Key::dealt(&Scalar::random(&mut r), 3, &nodes(1..=4), &mut r);
    let params = pool.params(&old, &nodes(1..=4), &nodes(1..=4), 2, b"too-many");
    let faults = Faults {
        dealers: [(node(1), DangerousFault::WrongConstantTerm), (node(3), DangerousFault::CorruptShareFor(node(2)))]
            .into(),
        ..Faults::default()
    };
    for (id, o) in run(&pool, &old, &params, &faults, &mut r) {
        let err = o.unwrap_err();
        assert_eq!(
            err,
            Error::NotEnoughQualifiedDealers { qualified: 2, needed: 3, disqualified: vec![node(1), node(3)] },
            "receiver {id}"
        );
        assert_eq!(err.culprits(), vec![node(1), node(3)]);
    }
}

#[test]
fn a_replayed_ephemeral_from_another_run_aborts_and_draws_no_complaint() {
    let (mut r, pool, _, old, run_a) = three_of_five(6);
    let a_packages = deal_all(&pool, &old, &run_a, &Faults::default(), &mut r);
    let run_b = pool.params(&old, &nodes(1..=5), &nodes(2..=6), 3, b"run-B");
    let replay = DangerousFault::ReplayEphemeral(a_packages[2].dangerous_ephemeral());
    let faults = Faults { dealers: [(node(1), replay)].into(), ..Faults::default() };
    let packages = deal_all(&pool, &old, &run_b, &faults, &mut r);
    for id in run_b.receivers() {
        let err = reshare::receive(id, &pool.secrets[&id], run_b.clone(), &packages, &mut r).unwrap_err();
        // No complaint package comes out: nothing secret touched the replayed ephemeral.
        assert_eq!(err, Error::InvalidEphemeralProof { node: node(1) }, "receiver {id}");
    }
}

#[test]
fn a_dkg_ephemeral_replayed_into_a_reshare_is_refused() {
    let (mut r, pool, _, old, params) = three_of_five(14);
    let dkg_params = dkg::Parameters::new(3, pool.bundles(&nodes(1..=5)), b"cheaters").unwrap();
    let (_, dkg_package) = dkg::part1(node(4), &pool.secrets[&node(4)], dkg_params, &mut r).unwrap();
    let replay = DangerousFault::ReplayEphemeral(dkg_package.dangerous_ephemeral());
    let faults = Faults { dealers: [(node(2), replay)].into(), ..Faults::default() };
    let packages = deal_all(&pool, &old, &params, &faults, &mut r);
    let err = reshare::receive(node(4), &pool.secrets[&node(4)], params, &packages, &mut r).unwrap_err();
    assert_eq!(err, Error::InvalidEphemeralProof { node: node(2) });
}

#[test]
fn a_package_from_another_session_fails_its_signature() {
    let (mut r, pool, _, old, run_a) = three_of_five(7);
    let a_packages = deal_all(&pool, &old, &run_a, &Faults::default(), &mut r);
    let run_b = pool.params(&old, &nodes(1..=5), &nodes(2..=6), 3, b"run-B");
    let mut packages = deal_all(&pool, &old, &run_b, &Faults::default(), &mut r);
    packages[3] = a_packages[3].clone();
    let err = reshare::receive(node(2), &pool.secrets[&node(2)], run_b, &packages, &mut r).unwrap_err();
    assert_eq!(err, Error::InvalidSignature { node: node(4) });
}

#[test]
fn the_dealer_set_must_match_the_parameters_exactly() {
    let (mut r, pool, _, old, params) = three_of_five(8);
    let mut packages = deal_all(&pool, &old, &params, &Faults::default(), &mut r);
    let keys = &pool.secrets[&node(6)];
    let missing = packages.remove(4);
    assert_eq!(
        reshare::receive(node(6), keys, params.clone(), &packages, &mut r).unwrap_err(),
        Error::MissingMessage { node: node(5) }
    );
    packages.push(missing);
    packages.push(packages[0].clone());
    assert_eq!(
        reshare::receive(node(6), keys, params.clone(), &packages, &mut r).unwrap_err(),
        Error::DuplicateNode { node: node(1) }
    );
    // Dealt for a run with fewer dealers, the package is unknown to this one.
    let narrower = pool.params(&old, &nodes(1..=3), &nodes(2..=6), 3, b"cheaters");
    let foreign = reshare::deal(node(1), &pool.secrets[&node(1)], &old.shares[&node(1)], &narrower, &mut r).unwrap();
    let mut packages = deal_all(&pool, &old, &params, &Faults::default(), &mut r);
    packages[0] = foreign;
    assert_eq!(
        reshare::receive(node(6), keys, params, &packages, &mut r).unwrap_err(),
        Error::InvalidSignature { node: node(1) }
    );
}

#[test]
fn an_altered_complaint_package_aborts_naming_its_sender() {
    let (mut r, pool, _, old, params) = three_of_five(9);
    let packages = deal_all(&pool, &old, &params, &Faults::default(), &mut r);
    let mut round1 = receive_all(&pool, &params, &packages, &Faults::default(), &mut r);
    let mut complaints: Vec<ComplaintPackage> = round1.iter().map(|(_, _, p)| p.clone()).collect();
    // Flip a bit of receiver 3's view digest: still decodes, the signature breaks.
    let mut bytes = complaints[1].to_bytes();
    let at = bytes.len() - 64 - 1;
    bytes[at] ^= 1;
    complaints[1] = ComplaintPackage::from_bytes(&bytes).unwrap();
    let (_, state, _) = round1.remove(0);
    assert_eq!(state.finish(&complaints).unwrap_err(), Error::InvalidSignature { node: node(3) });
}

#[test]
fn a_dealer_showing_receivers_different_packages_aborts_with_inconsistent_view() {
    let (mut r, pool, _, old, params) = three_of_five(13);
    let packages = deal_all(&pool, &old, &params, &Faults::default(), &mut r);
    // Dealer 5 signs a second, equally valid package; receiver 6 is shown that one.
    let second = reshare::deal(node(5), &pool.secrets[&node(5)], &old.shares[&node(5)], &params, &mut r).unwrap();
    let mut round1 = Vec::new();
    for id in params.receivers() {
        let mut seen = packages.clone();
        if id == node(6) {
            seen[4] = second.clone();
        }
        round1.push(reshare::receive(id, &pool.secrets[&id], params.clone(), &seen, &mut r).unwrap());
    }
    let complaints: Vec<ComplaintPackage> = round1.iter().map(|(_, p)| p.clone()).collect();
    for (state, _) in round1 {
        let err = state.finish(&complaints).unwrap_err();
        assert!(matches!(err, Error::InconsistentView { .. }), "{err:?}");
    }
}

/// A DKG among `ids`, for a key that was never dealt.
fn dkg_key(pool: &Pool, t: u16, ids: &[NodeId], r: &mut ChaCha20Rng) -> Key {
    let params = dkg::Parameters::new(t, pool.bundles(ids), b"dkg-then-reshare").unwrap();
    let round1: Vec<_> = ids.iter().map(|id| dkg::part1(*id, &pool.secrets[id], params.clone(), r).unwrap()).collect();
    let packages: Vec<_> = round1.iter().map(|(_, p)| p.clone()).collect();
    let round2: Vec<_> = round1.into_iter().map(|(s, _)| s.receive(&packages, r).unwrap()).collect();
    let packages: Vec<_> = round2.iter().map(|(_, p)| p.clone()).collect();
    let outputs: Vec<dkg::Output> = round2.into_iter().map(|(s, _)| s.finish(&packages).unwrap()).collect();
    let package = outputs[0].package.clone();
    Key { shares: outputs.into_iter().map(|o| (o.share.node(), o.share)).collect(), package }
}

#[test]
fn chained_reshares_from_a_dkg_keep_the_key() {
    let mut r = rng(10);
    let pool = Pool::new(8, &mut r);
    let k0 = dkg_key(&pool, 3, &nodes(1..=5), &mut r);
    // The DKG's key was never in one place: recover it here, for checking only.
    let first: Vec<(NodeId, Scalar)> = k0.shares.values().take(3).map(|s| (s.node(), s.dangerous_secret())).collect();
    let secret: Scalar = first
        .iter()
        .map(|(i, s)| {
            let xi = Scalar::from(u64::from(i.get()));
            let lambda: Scalar = first
                .iter()
                .filter(|(j, _)| j != i)
                .map(|(j, _)| {
                    let xj = Scalar::from(u64::from(j.get()));
                    xj * (xj - xi).invert()
                })
                .product();
            lambda * s
        })
        .sum();
    assert_key_holds(&k0, &secret, &k0.package, &mut r);

    // 3-of-5 (1..=5) → 4-of-7 (2..=8), dealt by 1, 3, 5 only.
    let p1 = pool.params(&k0, &nodes([1, 3, 5]), &nodes(2..=8), 4, b"step-1");
    let k1 = run_ok(&pool, &k0, &p1, &Faults::default(), &mut r);
    assert_eq!(k1.package.threshold(), 4);
    assert_key_holds(&k1, &secret, &k0.package, &mut r);

    // 4-of-7 (2..=8) → 3-of-5 (1, 2, 4, 6, 8), dealt by 2, 4, 5, 7, 8, one of them cheating.
    let p2 = pool.params(&k1, &nodes([2, 4, 5, 7, 8]), &nodes([1, 2, 4, 6, 8]), 3, b"step-2");
    let faults = Faults { dealers: [(node(7), DangerousFault::CorruptShareFor(node(1)))].into(), ..Faults::default() };
    let outputs = run(&pool, &k1, &p2, &faults, &mut r);
    assert_all_agree(&outputs, &[node(7)], &[]);
    let k2 = Key::from_outputs(outputs.into_iter().map(|(id, o)| (id, o.unwrap())).collect());
    assert_eq!(k2.package.threshold(), 3);
    assert_key_holds(&k2, &secret, &k0.package, &mut r);
}

#[test]
fn parameters_and_callers_are_validated() {
    let mut r = rng(11);
    let pool = Pool::new(6, &mut r);
    let old = Key::dealt(&Scalar::random(&mut r), 3, &nodes(1..=5), &mut r);
    let p = |d: &[NodeId], rc: &[NodeId], t: u16, s: &[u8]| {
        Parameters::new(old.package.clone(), pool.bundles(d), pool.bundles(rc), t, s)
    };
    let all = nodes(1..=5);
    assert!(p(&all, &all, 3, b"s").is_ok());
    assert!(matches!(p(&nodes(1..=2), &all, 3, b"s"), Err(Error::InvalidParameters(_))), "fewer than t dealers");
    assert!(matches!(p(&nodes(2..=6), &all, 3, b"s"), Err(Error::InvalidParameters(_))), "node 6 holds no share");
    assert!(matches!(p(&all, &all, 0, b"s"), Err(Error::InvalidParameters(_))));
    assert!(matches!(p(&all, &all, 6, b"s"), Err(Error::InvalidParameters(_))));
    assert!(matches!(p(&all, &all, 3, b""), Err(Error::InvalidParameters(_))));
    assert!(matches!(p(&all, &all, 3, &[0; 257]), Err(Error::InvalidParameters(_))));
    assert!(p(&all, &all, 3, &[0; 256]).is_ok());
    assert_eq!(p(&nodes([1, 2, 3, 1]), &all, 3, b"s").unwrap_err(), Error::DuplicateNode { node: node(1) });
    assert_eq!(p(&all, &nodes([6, 6]), 1, b"s").unwrap_err(), Error::DuplicateNode { node: node(6) });
    // A node whose dealer bundle differs from its receiver bundle.
    let other = NodeSecrets::generate(&mut r);
    let forged = other.key_bundle(node(1), &mut r).verify(node(1), &other.identity().public_key()).unwrap();
    let mut receivers = pool.bundles(&nodes(2..=5));
    receivers.push(forged);
    assert!(matches!(
        Parameters::new(old.package.clone(), pool.bundles(&all), receivers, 3, b"s"),
        Err(Error::InvalidParameters(_))
    ));

    let params = p(&nodes(1..=4), &nodes(2..=6), 3, b"s").unwrap();
    assert!(params.is_dealer(node(1)) && !params.is_receiver(node(1)));
    assert!(!params.is_dealer(node(6)) && params.is_receiver(node(6)));
    assert!(!params.is_dealer(node(5)) && params.is_receiver(node(5)));
    let deal = |id: u16, share: u16| {
        reshare::deal(node(id), &pool.secrets[&node(id)], &old.shares[&node(share)], &params, &mut rng(0))
    };
    assert!(deal(1, 1).is_ok());
    assert!(matches!(deal(5, 5), Err(Error::InvalidParameters(_))), "node 5 is not a dealer of this run");
    assert!(matches!(deal(1, 2), Err(Error::InvalidParameters(_))), "another node's share");
    let stranger = NodeSecrets::generate(&mut r);
    assert!(matches!(
        reshare::deal(node(1), &stranger, &old.shares[&node(1)], &params, &mut r),
        Err(Error::InvalidParameters(_))
    ));
    assert!(matches!(
        reshare::receive(node(1), &pool.secrets[&node(1)], params.clone(), &[], &mut r),
        Err(Error::InvalidParameters(_))
    ));
}

#[test]
fn reshare_packages_are_not_dkg_packages() {
    let (mut r, pool, _, old, params) = three_of_five(12);
    let packages = deal_all(&pool, &old, &params, &Faults::default(), &mut r);
    let bytes = packages[0].to_bytes();
    assert_eq!(bytes[1], 0x52);
    assert_eq!(dkg::round1::Package::from_bytes(&bytes).unwrap_err(), Error::Malformed { what: "DKG round 1 package" });
    for len in 0..bytes.len() {
        assert!(DealerPackage::from_bytes(&bytes[..len]).is_err(), "truncated at {len}");
    }
    let round1 = receive_all(&pool, &params, &packages, &Faults::default(), &mut r);
    let bytes = round1[0].2.to_bytes();
    assert_eq!(bytes[1], 0x53);
    assert!(dkg::round2::Package::from_bytes(&bytes).is_err());
}
