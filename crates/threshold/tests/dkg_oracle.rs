//! The DKG is no Diffie–Hellman oracle on a node's long-term keys (issue 12).
//!
//! The attack: a dealer (or a coordinator that adds a participant of its own) copies an honest
//! dealer's ephemeral `E` from an earlier run — or a sealed RSA share's — into a new run with
//! garbage sub-shares, so that every recipient complains with `key·E`, exactly the value that
//! opens what `E` encrypted before. These tests construct it and show it fails: the ephemeral
//! must carry a proof of knowledge bound to the run, so it is refused before any secret touches
//! it, no complaint is filed; and the complaint values an honest run does reveal open nothing
//! outside that run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{Cluster, RelayLog, honest, rng, run_dkg};
use hyok_threshold::dkg::{self, round1, round2};
use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::seal::{SealedRsaShare, ShareBinding, seal};
use hyok_threshold::rsa::{RsaKeyShare, RsaPublicPackage};
use hyok_threshold::{Error, NodeId, Wire};
use rand_chacha::ChaCha20Rng;

const PEM: &str = include_str!("fixtures/rsa2048-pkcs8.pem");

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

/// An honest run A of `cluster`, returning its round 1 packages as the relay carried them.
fn honest_run(cluster: &Cluster, r: &mut ChaCha20Rng) -> Vec<round1::Package> {
    let mut log = RelayLog::default();
    let (outputs, _) = run_dkg(cluster, r, honest, &mut log);
    assert!(outputs.values().all(Result::is_ok));
    let n = cluster.identities.len();
    log.messages[..n].iter().map(|b| round1::Package::from_bytes(b).unwrap()).collect()
}

/// Round 1 of `cluster` with `attacker` dealing with `fault`; everyone else honest.
fn round1_with(
    cluster: &Cluster,
    attacker: NodeId,
    fault: round1::DangerousFault,
    r: &mut ChaCha20Rng,
) -> (Vec<(NodeId, round1::SecretPackage)>, Vec<round1::Package>) {
    let mut states = Vec::new();
    let mut packages = Vec::new();
    for (id, keys) in &cluster.identities {
        let (s, p) = if *id == attacker {
            round1::dangerous_part1_with_fault(*id, keys, cluster.params.clone(), fault, r).unwrap()
        } else {
            dkg::part1(*id, keys, cluster.params.clone(), r).unwrap()
        };
        states.push((*id, s));
        // Through the wire encoding, as the relay carries it.
        packages.push(round1::Package::from_bytes(&p.to_bytes()).unwrap());
    }
    (states, packages)
}

/// Node 2's share of an RSA key sealed to node 2's seal key, with what opens it.
fn sealed_rsa_share(cluster: &Cluster, r: &mut ChaCha20Rng) -> (SealedRsaShare, ShareBinding, RsaPublicPackage) {
    let key = PrivateKey::from_pem(PEM).unwrap();
    let (shares, package) = deal(&key, 2, 4, r).unwrap();
    let share: &RsaKeyShare = shares.iter().find(|s| s.node() == node(2)).unwrap();
    let binding = ShareBinding::new("dke", 1, node(2), &package);
    let seal_key = cluster.identities[&node(2)].seal().public_key();
    let sealed = seal(share, &seal_key, &binding, r).unwrap();
    (sealed, binding, package)
}

#[test]
fn a_replayed_ephemeral_from_an_earlier_run_is_refused_and_draws_no_complaint() {
    let mut r = rng(0x12);
    let run_a = Cluster::new(2, 4, b"run-A", &mut r);
    let a_packages = honest_run(&run_a, &mut r);

    // Run B: dealer 1 copies honest dealer 3's ephemeral (and its run-A proof) from run A.
    let run_b = run_a.rerun(b"run-B");
    let replay = round1::DangerousFault::ReplayEphemeral(a_packages[2].dangerous_ephemeral());
    let (states, packages) = round1_with(&run_b, node(1), replay, &mut r);
    for (id, state) in states.into_iter().filter(|(id, _)| *id != node(1)) {
        let err = state.receive(&packages, &mut r).unwrap_err();
        assert_eq!(err, Error::InvalidEphemeralProof { node: node(1) }, "node {id}");
        assert_eq!(err.culprits(), vec![node(1)]);
        // `receive` returned no round 2 package: there is no complaint to publish.
    }
}

#[test]
fn a_replayed_package_from_an_earlier_run_is_refused() {
    // The relay replays honest dealer 3's whole run-A package into run B.
    let mut r = rng(0x13);
    let run_a = Cluster::new(2, 3, b"run-A", &mut r);
    let a_packages = honest_run(&run_a, &mut r);
    let run_b = run_a.rerun(b"run-B");
    let mut states = Vec::new();
    let mut packages = Vec::new();
    for (id, keys) in &run_b.identities {
        let (s, p) = dkg::part1(*id, keys, run_b.params.clone(), &mut r).unwrap();
        states.push(s);
        packages.push(p);
    }
    packages[2] = a_packages[2].clone();
    let err = states.remove(0).receive(&packages, &mut r).unwrap_err();
    assert_eq!(err, Error::InvalidSignature { node: node(3) });
}

#[test]
fn a_sealed_rsa_shares_ephemeral_replayed_into_a_dkg_is_refused() {
    let mut r = rng(0x14);
    let cluster = Cluster::new(2, 4, b"run-rsa-replay", &mut r);
    let (sealed, binding, package) = sealed_rsa_share(&cluster, &mut r);
    let foreign = round1::ForeignEphemeral::dangerous_from_point(&sealed.dangerous_ephemeral()).unwrap();
    let (states, packages) = round1_with(&cluster, node(1), round1::DangerousFault::ReplayEphemeral(foreign), &mut r);
    for (id, state) in states.into_iter().filter(|(id, _)| *id != node(1)) {
        assert_eq!(
            state.receive(&packages, &mut r).unwrap_err(),
            Error::InvalidEphemeralProof { node: node(1) },
            "node {id}"
        );
    }
    // The sealed share is untouched and still opens for its node.
    assert!(sealed.open(cluster.identities[&node(2)].seal(), &binding, &package).is_ok());
}

#[test]
fn complaint_values_open_nothing_outside_their_own_run() {
    let mut r = rng(0x15);
    let run_a = Cluster::new(2, 4, b"run-A", &mut r);
    let a_packages = honest_run(&run_a, &mut r);
    let (sealed, binding, package) = sealed_rsa_share(&run_a, &mut r);
    let seal_key = run_a.identities[&node(2)].seal().public_key();

    // Run C with complaints: dealer 1 corrupts node 2's sub-share (a justified complaint by 2)
    // and node 3 falsely accuses dealer 4 (a complaint revealing a channel that was fine).
    let run_c = run_a.rerun(b"run-C");
    let (states, c_packages) = round1_with(&run_c, node(1), round1::DangerousFault::CorruptShareFor(node(2)), &mut r);
    let mut c_round2: Vec<round2::Package> = Vec::new();
    for (id, state) in states {
        let (_, p) = if id == node(3) {
            state.dangerous_receive_with_false_complaint(&c_packages, node(4), &mut r).unwrap()
        } else {
            state.receive(&c_packages, &mut r).unwrap()
        };
        c_round2.push(p);
    }
    let complaints: Vec<(NodeId, NodeId, [u8; 32])> = c_round2
        .iter()
        .flat_map(|p| p.complaints().iter().map(move |c| (p.sender(), c.accused(), c.dangerous_dh())))
        .collect();
    assert_eq!(complaints.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(), vec![(node(2), node(1)), (node(3), node(4))]);

    for (accuser, accused, dh) in &complaints {
        // The control: in its own run, the value opens exactly the channel complained about…
        let own = &c_packages[usize::from(accused.get()) - 1];
        assert!(own.dangerous_open_share(&run_c.params, *accuser, dh).is_some(), "{accuser} → {accused}");
        // …and nothing of the earlier run: no sub-share of any dealer to any recipient…
        for a in &a_packages {
            for recipient in run_a.params.nodes() {
                assert!(
                    a.dangerous_open_share(&run_a.params, recipient, dh).is_none(),
                    "complaint {accuser} → {accused} of run C opened dealer {}'s run-A sub-share to {recipient}",
                    a.dealer()
                );
            }
        }
        // …and no sealed RSA share.
        assert_eq!(
            sealed.dangerous_open_with_dh(&seal_key, dh, &binding, &package).unwrap_err(),
            Error::SealedShareRejected
        );
    }
}
