//! Resharing threshold RSA: a 3-of-5 split of the fixture key refreshed, moved to 4-of-7 and
//! back, every t′-subset decrypting after each step; cheating dealers and receivers named; a
//! replayed ephemeral aborting; share sizes following the README's formula.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::reshare::{
    self, ComplaintPackage, DangerousFault, DealerPackage, Output, Parameters, STATISTICAL_SECURITY,
};
use hyok_threshold::rsa::{RsaKeyShare, RsaPartial, RsaPublicPackage, combine, oaep, partial};
use hyok_threshold::{Error, KeyBundle, NodeId, NodeSecrets, Wire};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;
use std::sync::OnceLock;

const PKCS8_PEM: &str = include_str!("fixtures/rsa2048-pkcs8.pem");
const OPENSSL_MESSAGE: &[u8] = include_bytes!("fixtures/oaep-message.txt");
const OPENSSL_CIPHERTEXT: &[u8] = include_bytes!("fixtures/oaep-pkcs8.bin");

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

/// Every `k`-element subset of `0..n`.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![Vec::new()];
    }
    (k - 1..n)
        .flat_map(|last| {
            subsets(last, k - 1).into_iter().map(move |mut s| {
                s.push(last);
                s
            })
        })
        .collect()
}

/// Long-term keys of nodes 1..=7 (a node keeps its id across reshares) and the dealt 3-of-5
/// split of the PKCS#8 fixture.
struct World {
    secrets: BTreeMap<NodeId, NodeSecrets>,
    bundles: BTreeMap<NodeId, KeyBundle>,
    shares: Vec<RsaKeyShare>,
    package: RsaPublicPackage,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut r = rng(1);
        let key = PrivateKey::from_pem(PKCS8_PEM).unwrap();
        let (shares, package) = deal(&key, 3, 5, &mut r).unwrap();
        let secrets: BTreeMap<NodeId, NodeSecrets> =
            (1..=7).map(|i| (node(i), NodeSecrets::generate(&mut r))).collect();
        let bundles = secrets
            .iter()
            .map(|(id, s)| (*id, s.key_bundle(*id, &mut r).verify(*id, &s.identity().public_key()).unwrap()))
            .collect();
        World { secrets, bundles, shares, package }
    })
}

fn params(old: &RsaPublicPackage, dealers: &[u16], new_t: u16, new_n: u16, session: &[u8]) -> Parameters {
    let w = world();
    Parameters::new(
        old.clone(),
        dealers.iter().map(|d| w.bundles[&node(*d)]),
        (1..=new_n).map(|i| w.bundles[&node(i)]),
        new_t,
        session,
    )
    .unwrap()
}

type Deal<'a> = &'a dyn Fn(NodeId, &RsaKeyShare, &Parameters, &mut ChaCha20Rng) -> Option<DealerPackage>;
type Receive<'a> = &'a dyn Fn(
    NodeId,
    &Parameters,
    &[DealerPackage],
    &mut ChaCha20Rng,
) -> Option<hyok_threshold::Result<(reshare::ReceiverState, ComplaintPackage)>>;

/// Every dealer deals (or `faulty_deal` replaces it), every message crosses its wire encoding,
/// every receiver receives (or `faulty_receive` replaces it) and finishes.
fn run(
    p: &Parameters,
    shares: &BTreeMap<NodeId, &RsaKeyShare>,
    faulty_deal: Deal<'_>,
    faulty_receive: Receive<'_>,
    r: &mut ChaCha20Rng,
) -> hyok_threshold::Result<BTreeMap<NodeId, Output>> {
    let w = world();
    let mut packages = Vec::new();
    for dealer in p.dealers() {
        let share = shares[&dealer];
        let package = faulty_deal(dealer, share, p, r)
            .unwrap_or_else(|| reshare::deal(dealer, &w.secrets[&dealer], share, p, r).unwrap());
        packages.push(DealerPackage::from_bytes(&package.to_bytes()).unwrap());
    }
    let mut states = Vec::new();
    let mut complaints = Vec::new();
    for i in 1..=p.new_nodes() {
        let me = node(i);
        let (state, complaint) = faulty_receive(me, p, &packages, r)
            .unwrap_or_else(|| reshare::receive(me, &w.secrets[&me], p.clone(), &packages, r))?;
        complaints.push(ComplaintPackage::from_bytes(&complaint.to_bytes()).unwrap());
        states.push((me, state));
    }
    states.into_iter().map(|(me, s)| Ok((me, s.finish(&complaints)?))).collect()
}

fn honest_deal(_: NodeId, _: &RsaKeyShare, _: &Parameters, _: &mut ChaCha20Rng) -> Option<DealerPackage> {
    None
}
#[allow(clippy::type_complexity)]
fn honest_receive(
    _: NodeId,
    _: &Parameters,
    _: &[DealerPackage],
    _: &mut ChaCha20Rng,
) -> Option<hyok_threshold::Result<(reshare::ReceiverState, ComplaintPackage)>> {
    None
}

/// One package for everyone, and the shares by node.
fn collect(outputs: BTreeMap<NodeId, Output>) -> (RsaPublicPackage, Vec<RsaKeyShare>, Vec<NodeId>, Vec<NodeId>) {
    let first = outputs.values().next().unwrap();
    let (package, disqualified, false_accusers) =
        (first.package.clone(), first.disqualified.clone(), first.false_accusers.clone());
    let mut shares = Vec::new();
    for (id, out) in outputs {
        assert_eq!(out.package, package, "receiver {id} has another package");
        assert_eq!(out.disqualified, disqualified);
        assert_eq!(out.false_accusers, false_accusers);
        assert_eq!(out.share.node(), id);
        shares.push(out.share);
    }
    (package, shares, disqualified, false_accusers)
}

/// Every t-subset of the shares decrypts the OpenSSL ciphertext and one of ours; t − 1 are
/// refused; an old share in place of a new one breaks the y^e check.
fn assert_decrypts(
    package: &RsaPublicPackage,
    shares: &[RsaKeyShare],
    stale: Option<(&RsaKeyShare, &RsaPublicPackage)>,
) {
    let t = usize::from(package.threshold());
    let ours = oaep::encrypt(package.public_key(), b"a reshared DKE key", &mut rng(99)).unwrap();
    for (ciphertext, message) in [(OPENSSL_CIPHERTEXT, OPENSSL_MESSAGE), (&ours[..], &b"a reshared DKE key"[..])] {
        let all: Vec<RsaPartial> = shares.iter().map(|s| partial::evaluate(s, package, ciphertext).unwrap()).collect();
        for subset in subsets(all.len(), t) {
            let chosen: Vec<RsaPartial> = subset.iter().map(|&i| all[i].clone()).collect();
            let opened = combine::decrypt(package, ciphertext, &chosen).unwrap();
            assert_eq!(&opened.value[..], message, "subset {subset:?}");
        }
        assert_eq!(
            combine::combine(package, ciphertext, &all[..t - 1]).unwrap_err(),
            Error::NotEnoughPartials { needed: t, got: t - 1 }
        );
        if let Some((old_share, _)) = stale {
            // The old share of node 1 in place of its new one, under the new package.
            let mut mixed = all[..t].to_vec();
            let old = partial::evaluate(old_share, package, ciphertext).unwrap();
            assert_eq!(old.node(), mixed[0].node());
            mixed[0] = old;
            assert_eq!(
                combine::combine(package, ciphertext, &mixed).unwrap_err(),
                Error::RsaCombineFailed { culprits: vec![] }
            );
        }
    }
    if let Some((old_share, old_package)) = stale {
        // And under its own package, with new partials: also wrong.
        let all: Vec<RsaPartial> = shares.iter().map(|s| partial::evaluate(s, package, &ours).unwrap()).collect();
        let mut mixed = all[..t].to_vec();
        mixed[0] = partial::evaluate(old_share, old_package, &ours).unwrap();
        assert!(combine::combine(package, &ours, &mixed).is_err());
    }
}

/// The README's growth formula, written out again independently of the library.
fn expected_share_bits(b: u32, t: u16, n: u16, t2: u16, n2: u16) -> u32 {
    let fact = |n: u16| (1..=u128::from(n)).product::<u128>();
    let bits = |x: u128| 128 - x.leading_zeros();
    let delta2_bits = bits(fact(n2));
    let a = b + delta2_bits + u32::from(t2) + 5 + STATISTICAL_SECURITY;
    let sb = a + bits((0..u32::from(t2)).map(|k| u128::from(n2).pow(k)).sum());
    let mut kb = sb + bits(u128::from(t) * fact(n) * u128::from(n).pow(u32::from(t) - 1));
    if (kb + 3 + delta2_bits).is_multiple_of(64) {
        kb += 1;
    }
    kb + 3
}

fn share_bit_length(share: &RsaKeyShare) -> u32 {
    let bytes = share.dangerous_secret_bytes();
    let start = bytes.iter().position(|b| *b != 0).unwrap();
    (bytes.len() - start) as u32 * 8 - bytes[start].leading_zeros()
}

fn by_node(shares: &[RsaKeyShare]) -> BTreeMap<NodeId, &RsaKeyShare> {
    shares.iter().map(|s| (s.node(), s)).collect()
}

#[test]
fn refresh_then_4_of_7_then_back_to_3_of_5_keeps_decrypting_and_sizes_follow_the_formula() {
    let w = world();
    let mut r = rng(2);
    assert!(w.package.is_dealt());
    assert_eq!(w.package.share_bits(), 2048);
    let mut package = w.package.clone();
    let mut shares: Vec<RsaKeyShare> =
        w.shares.iter().map(|s| RsaKeyShare::from_secret_bytes(&s.to_secret_bytes()).unwrap()).collect();
    let mut sizes = vec![(0, package.share_bits(), share_bit_length(&shares[0]))];
    for (step, (dealers, t2, n2)) in
        [(&[1u16, 2, 3, 4, 5][..], 3u16, 5u16), (&[1, 2, 3, 4, 5][..], 4, 7), (&[2, 3, 5, 6, 7][..], 3, 5)]
            .into_iter()
            .enumerate()
    {
        let p = params(&package, dealers, t2, n2, format!("reshare step {step}").as_bytes());
        let outputs = run(&p, &by_node(&shares), &honest_deal, &honest_receive, &mut r).unwrap();
        let (new_package, new_shares, disqualified, false_accusers) = collect(outputs);
        assert!(disqualified.is_empty() && false_accusers.is_empty());
        assert_eq!((new_package.threshold(), new_package.nodes()), (t2, n2));
        assert!(!new_package.is_dealt());
        let expected = expected_share_bits(package.share_bits(), package.threshold(), package.nodes(), t2, n2);
        assert_eq!(new_package.share_bits(), expected, "step {step}");
        for s in &new_shares {
            assert_eq!(share_bit_length(s), expected, "step {step}, node {}", s.node());
        }
        // The package survives its wire encoding; the share its secret encoding.
        assert_eq!(RsaPublicPackage::from_bytes(&new_package.to_bytes()).unwrap(), new_package);
        let reread = RsaKeyShare::from_secret_bytes(&new_shares[0].to_secret_bytes()).unwrap();
        assert_eq!(*reread.dangerous_secret_bytes(), *new_shares[0].dangerous_secret_bytes());
        assert_decrypts(&new_package, &new_shares, Some((&shares[0], &package)));
        sizes.push((step + 1, new_package.share_bits(), share_bit_length(&new_shares[0])));
        package = new_package;
        shares = new_shares;
    }
    eprintln!("share bits after (reshares, bound, node 1's share): {sizes:?}");
}

#[test]
fn a_dealer_with_a_wrong_constant_term_is_disqualified_and_named() {
    let w = world();
    let mut r = rng(3);
    let p = params(&w.package, &[1, 2, 3, 4, 5], 3, 5, b"wrong constant");
    let cheat = |me: NodeId, share: &RsaKeyShare, p: &Parameters, r: &mut ChaCha20Rng| {
        (me == node(1)).then(|| {
            reshare::dangerous_deal_with_fault(me, &w.secrets[&me], share, p, DangerousFault::WrongConstantTerm, r)
                .unwrap()
        })
    };
    let (package, shares, disqualified, false_accusers) =
        collect(run(&p, &by_node(&w.shares), &cheat, &honest_receive, &mut r).unwrap());
    assert_eq!(disqualified, vec![node(1)]);
    assert!(false_accusers.is_empty());
    assert_decrypts(&package, &shares, None);
}

#[test]
fn a_corrupted_sub_share_draws_a_justified_complaint_and_the_dealer_is_disqualified() {
    let w = world();
    let mut r = rng(4);
    let p = params(&w.package, &[1, 2, 3, 4, 5], 3, 5, b"corrupt sub-share");
    let cheat = |me: NodeId, share: &RsaKeyShare, p: &Parameters, r: &mut ChaCha20Rng| {
        (me == node(4)).then(|| {
            let fault = DangerousFault::CorruptShareFor(node(3));
            reshare::dangerous_deal_with_fault(me, &w.secrets[&me], share, p, fault, r).unwrap()
        })
    };
    // Receiver 3's complaint names dealer 4.
    let complained = std::cell::RefCell::new(Vec::new());
    let watch = |me: NodeId, p: &Parameters, packages: &[DealerPackage], r: &mut ChaCha20Rng| {
        let out = reshare::receive(me, &w.secrets[&me], p.clone(), packages, r);
        if let Ok((_, c)) = &out {
            complained.borrow_mut().extend(c.complaints().iter().map(|c| (me, c.accused())));
        }
        Some(out)
    };
    let (package, shares, disqualified, false_accusers) =
        collect(run(&p, &by_node(&w.shares), &cheat, &watch, &mut r).unwrap());
    assert_eq!(*complained.borrow(), vec![(node(3), node(4))]);
    assert_eq!(disqualified, vec![node(4)]);
    assert!(false_accusers.is_empty());
    assert_decrypts(&package, &shares, None);
}

#[test]
fn a_false_complaint_names_the_accuser_and_disqualifies_no_dealer() {
    let w = world();
    let mut r = rng(5);
    let p = params(&w.package, &[1, 2, 3, 4, 5], 3, 5, b"false complaint");
    let liar = |me: NodeId, p: &Parameters, packages: &[DealerPackage], r: &mut ChaCha20Rng| {
        (me == node(5)).then(|| {
            reshare::dangerous_receive_with_false_complaint(me, &w.secrets[&me], p.clone(), packages, node(1), r)
        })
    };
    let (package, shares, disqualified, false_accusers) =
        collect(run(&p, &by_node(&w.shares), &honest_deal, &liar, &mut r).unwrap());
    assert!(disqualified.is_empty());
    assert_eq!(false_accusers, vec![node(5)]);
    assert_decrypts(&package, &shares, None);
}

#[test]
fn a_replayed_ephemeral_aborts_the_run_without_a_complaint() {
    let w = world();
    let mut r = rng(6);
    let first = params(&w.package, &[1, 2, 3], 3, 5, b"run A");
    let seen = reshare::deal(node(2), &w.secrets[&node(2)], &w.shares[1], &first, &mut r).unwrap();
    let p = params(&w.package, &[1, 2, 3], 3, 5, b"run B");
    let replay = |me: NodeId, share: &RsaKeyShare, p: &Parameters, r: &mut ChaCha20Rng| {
        (me == node(2)).then(|| {
            let fault = DangerousFault::ReplayEphemeral(seen.dangerous_ephemeral());
            reshare::dangerous_deal_with_fault(me, &w.secrets[&me], share, p, fault, r).unwrap()
        })
    };
    let err = run(&p, &by_node(&w.shares), &replay, &honest_receive, &mut r).unwrap_err();
    assert_eq!(err, Error::InvalidEphemeralProof { node: node(2) });
    assert_eq!(err.culprits(), vec![node(2)]);
}

#[test]
fn parameters_refuse_too_few_dealers_bad_receivers_and_thresholds() {
    let w = world();
    let bundle = |i: u16| w.bundles[&node(i)];
    let make = |dealers: &[u16], receivers: &[u16], t: u16| {
        Parameters::new(
            w.package.clone(),
            dealers.iter().map(|d| bundle(*d)),
            receivers.iter().map(|i| bundle(*i)),
            t,
            b"s",
        )
    };
    assert!(make(&[1, 2, 3], &[1, 2, 3], 2).is_ok());
    assert!(matches!(make(&[1, 2], &[1, 2, 3], 2), Err(Error::InvalidParameters(_))));
    assert!(matches!(make(&[1, 2, 6], &[1, 2, 3], 2), Err(Error::UnknownNode { node: 6 })));
    assert!(matches!(make(&[1, 2, 3], &[1, 3], 2), Err(Error::InvalidParameters(_))));
    assert!(matches!(make(&[1, 2, 3], &[1, 2, 3], 4), Err(Error::InvalidParameters(_))));
    assert!(matches!(make(&[1, 2, 3], &[1, 2, 3], 0), Err(Error::InvalidParameters(_))));
    assert!(matches!(make(&[1, 1, 2, 3], &[1, 2, 3], 2), Err(Error::DuplicateNode { .. })));
}

#[test]
fn a_dealt_package_keeps_its_old_encoding_and_reshared_ones_refuse_tampering() {
    let w = world();
    let bytes = w.package.to_bytes();
    // The dealt layout, unchanged: version, tag, t, n, N, e and nothing after.
    assert_eq!(&bytes[..10], &[1, 0x60, 0, 3, 0, 5, 0, 0, 1, 0]);
    assert_eq!(bytes.len(), 2 + 4 + 4 + 256 + 4 + 3);
    assert_eq!(w.package.scale_bytes(), vec![1]);
    assert_eq!(w.package.offset_bytes(), vec![0]);
    // A dealt package with an explicit extension saying scale 1 is not canonical.
    let mut explicit = bytes.clone();
    explicit.extend_from_slice(&2048u32.to_be_bytes());
    explicit.extend_from_slice(&[0, 0, 0, 1, 1, 0, 0, 0, 1, 0]);
    assert!(RsaPublicPackage::from_bytes(&explicit).is_err());
    // A scale with a leading zero, or a share bound below N, is refused.
    let mut scaled = bytes.clone();
    scaled.extend_from_slice(&2048u32.to_be_bytes());
    scaled.extend_from_slice(&[0, 0, 0, 2, 0, 7, 0, 0, 0, 1, 5]);
    assert!(RsaPublicPackage::from_bytes(&scaled).is_err());
    let mut low = bytes.clone();
    low.extend_from_slice(&2000u32.to_be_bytes());
    low.extend_from_slice(&[0, 0, 0, 1, 7, 0, 0, 0, 1, 5]);
    assert!(RsaPublicPackage::from_bytes(&low).is_err());
    let mut fine = bytes;
    fine.extend_from_slice(&2100u32.to_be_bytes());
    fine.extend_from_slice(&[0, 0, 0, 1, 7, 0, 0, 0, 1, 5]);
    let decoded = RsaPublicPackage::from_bytes(&fine).unwrap();
    assert_eq!((decoded.scale_bytes(), decoded.offset_bytes(), decoded.share_bits()), (vec![7], vec![5], 2100));
    assert_eq!(decoded.to_bytes(), fine);
    // Hostile bytes never panic the reshare decoders.
    for junk in [&[][..], &[1, 0x5A][..], &[1, 0x5B, 0, 1][..], &[1, 0x5A, 0, 1, 0, 16, 0xff, 0xff, 0xff, 0xff][..]] {
        assert!(DealerPackage::from_bytes(junk).is_err());
        assert!(ComplaintPackage::from_bytes(junk).is_err());
    }
}
