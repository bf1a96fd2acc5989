//! Helpers shared by the threshold crate's integration tests.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "shared helpers of the integration tests")]

use curve25519_dalek::Scalar;
use hyok_threshold::dealer::dangerous_deal;
use hyok_threshold::dkg::{self, Parameters, round1, round2};
use hyok_threshold::{KeyBundle, KeyShare, NodeId, NodeSecrets, PublicKeyPackage, Wire};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::BTreeMap;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

pub fn ids(n: u16) -> Vec<NodeId> {
    (1..=n).map(|i| NodeId::new(i).unwrap()).collect()
}

/// A dealt `t`-of-`n` key: the secret (for checking only), the shares and the package.
pub fn deal(t: u16, n: u16, rng: &mut ChaCha20Rng) -> (Scalar, Vec<KeyShare>, PublicKeyPackage) {
    let secret = Scalar::random(rng);
    let (shares, package) = dangerous_deal(&secret, t, &ids(n), rng).unwrap();
    (secret, shares, package)
}

/// Every `k`-element subset of `0..n`, as index lists.
pub fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    fn go(start: usize, n: usize, k: usize, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if cur.len() == k {
            out.push(cur.clone());
            return;
        }
        for i in start..n {
            cur.push(i);
            go(i + 1, n, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    go(0, n, k, &mut Vec::new(), &mut out);
    out
}

/// The DKG's participants: every long-term key of nodes 1..=n, and their verified bundles.
pub struct Cluster {
    pub identities: BTreeMap<NodeId, NodeSecrets>,
    pub bundles: Vec<KeyBundle>,
    pub params: Parameters,
}

impl Cluster {
    pub fn new(t: u16, n: u16, session: &[u8], rng: &mut ChaCha20Rng) -> Self {
        let identities: BTreeMap<NodeId, NodeSecrets> =
            ids(n).into_iter().map(|id| (id, NodeSecrets::generate(rng))).collect();
        let bundles: Vec<KeyBundle> = identities
            .iter()
            .map(|(id, s)| s.key_bundle(*id, rng).verify(*id, &s.identity().public_key()).unwrap())
            .collect();
        let params = Parameters::new(t, bundles.clone(), session).unwrap();
        Cluster { identities, bundles, params }
    }

    /// The same nodes, with the same long-term keys, in another run.
    pub fn rerun(&self, session: &[u8]) -> Cluster {
        let identities = self
            .identities
            .iter()
            .map(|(id, s)| (*id, NodeSecrets::from_secret_bytes(&s.to_secret_bytes()).unwrap()))
            .collect();
        let params = Parameters::new(self.params.threshold(), self.bundles.clone(), session).unwrap();
        Cluster { identities, bundles: self.bundles.clone(), params }
    }
}

/// Everything a relaying coordinator saw during one DKG run (the encoded messages).
#[derive(Default)]
pub struct RelayLog {
    pub messages: Vec<Vec<u8>>,
}

/// Each node's outcome, and every sub-share dealt (recipient, value), for leak checks.
pub type DkgRun = (BTreeMap<NodeId, hyok_threshold::Result<dkg::Output>>, Vec<(NodeId, Scalar)>);

/// Runs the DKG with every message passing through its byte encoding (as the relay would
/// carry it). `dealers` may replace a node's round 1 with a faulty one.
pub fn run_dkg(
    cluster: &Cluster,
    rng: &mut ChaCha20Rng,
    mut faulty: impl FnMut(
        NodeId,
        &NodeSecrets,
        Parameters,
        &mut ChaCha20Rng,
    ) -> Option<(round1::SecretPackage, round1::Package)>,
    log: &mut RelayLog,
) -> DkgRun {
    let mut states1 = BTreeMap::new();
    let mut packages1 = Vec::new();
    let mut dealt = Vec::new();
    for (id, identity) in &cluster.identities {
        let (state, package) = faulty(*id, identity, cluster.params.clone(), rng)
            .unwrap_or_else(|| dkg::part1(*id, identity, cluster.params.clone(), rng).unwrap());
        for (to, s) in state.dangerous_sub_shares() {
            dealt.push((to, s));
        }
        let bytes = package.to_bytes();
        log.messages.push(bytes.clone());
        packages1.push(round1::Package::from_bytes(&bytes).unwrap());
        states1.insert(*id, state);
    }
    let mut states2 = BTreeMap::new();
    let mut packages2 = Vec::new();
    for (id, state) in states1 {
        let (state, package) = state.receive(&packages1, rng).unwrap();
        let bytes = package.to_bytes();
        log.messages.push(bytes.clone());
        packages2.push(round2::Package::from_bytes(&bytes).unwrap());
        states2.insert(id, state);
    }
    let outputs = states2.into_iter().map(|(id, state)| (id, state.finish(&packages2))).collect();
    (outputs, dealt)
}

pub fn honest(
    _: NodeId,
    _: &NodeSecrets,
    _: Parameters,
    _: &mut ChaCha20Rng,
) -> Option<(round1::SecretPackage, round1::Package)> {
    None
}
