//! Verifiable resharing of a Ristretto255 key (Desmedt–Jajodia, Wong–Wing; as drand does):
//! moves a key version from its holders to a new set of receivers with a new threshold `t′`,
//! keeping the group key `K`. The key is never rebuilt, and the old shares are useless after.
//!
//! ```text
//! deal(me, keys, old share, params)        -> DealerPackage (broadcast)        [each dealer]
//! receive(me, keys, params, all packages)  -> ReceiverState (kept),
//!                                             ComplaintPackage (broadcast)     [each receiver]
//! ReceiverState::finish(all complaint packages)
//!                                          -> Output { KeyShare, PublicKeyPackage,
//!                                                      disqualified, false_accusers }
//! ```
//!
//! The key version's [`PublicKeyPackage`] (threshold `t`, `K`, `K_j = k_j·G`) names the old
//! holders. Every **dealer** `j` (an old holder) deals a fresh random polynomial `g_j` of degree
//! `t′ − 1` with `g_j(0) = k_j` to every **receiver** `i` (itself included when it is one), with
//! the dealing of `vss`, the DKG's: Feldman commitments `C_jk`, a proof of knowledge of
//! `k_j`, a fresh ephemeral with a proof of knowledge bound to this run, each `g_j(i)` encrypted
//! to `i`'s DKG transport key, all signed with `j`'s identity key. The run's transcript binds
//! the domain `hyok/v1/reshare/…`, the session, the old package's encoding, `t`, `t′`, and every
//! dealer's and receiver's identity and transport keys.
//!
//! A receiver checks every dealing as the DKG does (signature and ephemeral proof first: a
//! failure aborts the run), and also that `C_j0 = K_j` of the **old** package: a dealer that
//! does not re-deal its real share is disqualified. A bad sub-share draws a complaint revealing
//! `tr_i·E_j` with a DLEQ proof, judged by every receiver in round 2: a justified one
//! disqualifies the dealer, an unjustified one names the accuser in
//! [`Output::false_accusers`] and the run goes on.
//!
//! With `QUAL` the dealers not disqualified (at least `t` of them, else
//! [`Error::NotEnoughQualifiedDealers`]) and `S` its first `t` members by id (every receiver
//! picks the same), the new share is `k′_i = Σ_{j∈S} λ_{S,j}(0)·g_j(i)`, the new verification
//! keys `K′_m = Σ_{j∈S} λ_{S,j}(0)·Σ_k C_jk·m^k`, and `Σ_{j∈S} λ_{S,j}(0)·C_j0 = K` is checked.
//! `k′` lies on `Σ_{j∈S} λ_j·g_j`, a fresh polynomial of degree `t′ − 1` through `k`.

use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::feldman;
use crate::keys::{Element, KeyShare, NodeId, PublicKeyPackage, VerificationKey};
use crate::lagrange;
use crate::node_keys::{KeyBundle, NodeSecrets};
use crate::transcript::Transcript;
use crate::vss::{self, Channel, ComplaintsMessage, DealingMessage, Run, SignedComplaints, SignedDealing};
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use zeroize::Zeroizing;

pub use crate::dkg::MAX_SESSION_LEN;
#[cfg(feature = "dangerous-testing")]
pub use crate::vss::ForeignEphemeral;

/// What every dealer and receiver of one resharing run agrees on before it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parameters {
    old: PublicKeyPackage,
    old_encoding: Vec<u8>,
    bundles: BTreeMap<NodeId, KeyBundle>,
    dealers: BTreeSet<NodeId>,
    receivers: BTreeSet<NodeId>,
    new_threshold: u16,
    session: Vec<u8>,
}

impl Parameters {
    /// Reshares the key of `old` from `dealers` (old holders, each one's verified key bundle)
    /// to `receivers` (verified key bundles) with threshold `new_threshold`, in the run named by
    /// `session` (unique per run).
    ///
    /// # Errors
    /// [`Error::DuplicateNode`] for a node listed twice in one role; [`Error::InvalidParameters`]
    /// for a dealer without a verification key in `old`, fewer dealers than `old`'s threshold,
    /// `t′` outside `1..=|receivers|`, a session id outside 1..=256 bytes, more than
    /// 1024 nodes in a role, or a node whose two bundles differ.
    pub fn new(
        old: PublicKeyPackage,
        dealers: impl IntoIterator<Item = KeyBundle>,
        receivers: impl IntoIterator<Item = KeyBundle>,
        new_threshold: u16,
        session: &[u8],
    ) -> Result<Self> {
        let mut bundles = BTreeMap::new();
        let mut add = |set: &mut BTreeSet<NodeId>, bundle: KeyBundle| -> Result<()> {
            let node = bundle.node();
            if !set.insert(node) {
                return Err(Error::DuplicateNode { node });
            }
            match bundles.entry(node) {
                Entry::Vacant(e) => {
                    e.insert(bundle);
                }
                Entry::Occupied(e) if *e.get() != bundle => {
                    return Err(Error::InvalidParameters("a node's dealer and receiver key bundles differ"));
                }
                Entry::Occupied(_) => {}
            }
            Ok(())
        };
        let mut dealer_set = BTreeSet::new();
        for bundle in dealers {
            add(&mut dealer_set, bundle)?;
        }
        let mut receiver_set = BTreeSet::new();
        for bundle in receivers {
            add(&mut receiver_set, bundle)?;
        }
        if dealer_set.len() > MAX_NODES || receiver_set.len() > MAX_NODES {
            return Err(Error::InvalidParameters("too many dealers or receivers"));
        }
        if dealer_set.iter().any(|d| !old.verification_keys().contains_key(d)) {
            return Err(Error::InvalidParameters("every dealer must hold a share of the old key"));
        }
        if dealer_set.len() < usize::from(old.threshold()) {
            return Err(Error::InvalidParameters("fewer dealers than the old threshold"));
        }
        if new_threshold == 0 || usize::from(new_threshold) > receiver_set.len() {
            return Err(Error::InvalidParameters("new threshold must satisfy 1 ≤ t′ ≤ receivers"));
        }
        if session.is_empty() || session.len() > MAX_SESSION_LEN {
            return Err(Error::InvalidParameters("session id must be 1..=256 bytes"));
        }
        let old_encoding = old.to_bytes();
        Ok(Parameters {
            old,
            old_encoding,
            bundles,
            dealers: dealer_set,
            receivers: receiver_set,
            new_threshold,
            session: session.to_vec(),
        })
    }
    /// The key's package before the run.
    pub fn old_package(&self) -> &PublicKeyPackage {
        &self.old
    }
    /// The new threshold `t′`.
    pub fn new_threshold(&self) -> u16 {
        self.new_threshold
    }
    /// The dealers' node ids, ascending.
    pub fn dealers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dealers.iter().copied()
    }
    /// The receivers' node ids, ascending.
    pub fn receivers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.receivers.iter().copied()
    }
    /// Whether `n` deals in this run.
    pub fn is_dealer(&self, n: NodeId) -> bool {
        self.dealers.contains(&n)
    }
    /// Whether `n` receives a new share in this run.
    pub fn is_receiver(&self, n: NodeId) -> bool {
        self.receivers.contains(&n)
    }
}

impl Channel for Parameters {
    const DOMAIN: &'static str = "hyok/v1/reshare";

    /// The session id, the old package, `t`, `t′`, and every dealer's and receiver's identity
    /// and transport keys.
    fn bind(&self, t: &mut Transcript) {
        t.append(b"session", &self.session);
        t.append(b"old-package", &self.old_encoding);
        t.append_u64(b"old-threshold", u64::from(self.old.threshold()));
        t.append_u64(b"new-threshold", u64::from(self.new_threshold));
        for (label, set) in [(&b"dealer"[..], &self.dealers), (&b"receiver"[..], &self.receivers)] {
            t.append_u64(b"count", set.len() as u64);
            for id in set {
                let keys = &self.bundles[id];
                t.append_u64(label, u64::from(id.get()));
                t.append_point(b"identity", &keys.identity().0.compressed);
                t.append_point(b"transport", &keys.transport().0.compressed);
            }
        }
    }
    fn receiver_bundle(&self, node: NodeId) -> Result<&KeyBundle> {
        Run::bundle(self, node)
    }
    fn receiver_ids(&self) -> Vec<NodeId> {
        Run::receivers(self)
    }
}

impl Run for Parameters {
    type Dealing = DealerPackage;
    type Complaints = ComplaintPackage;

    fn bundle(&self, node: NodeId) -> Result<&KeyBundle> {
        self.bundles.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }
    fn threshold(&self) -> u16 {
        self.new_threshold
    }
    fn is_dealer(&self, node: NodeId) -> bool {
        self.dealers.contains(&node)
    }
    fn is_receiver(&self, node: NodeId) -> bool {
        self.receivers.contains(&node)
    }
    fn dealers(&self) -> Vec<NodeId> {
        self.dealers.iter().copied().collect()
    }
    fn receivers(&self) -> Vec<NodeId> {
        self.receivers.iter().copied().collect()
    }
    /// Every receiver, the dealer itself included when it is one: [`deal`] keeps no state.
    fn encrypted_to(&self, _dealer: NodeId) -> Vec<NodeId> {
        self.receivers.iter().copied().collect()
    }
    /// `C_j0 = K_j`: the dealer re-deals its real old share.
    fn constant_term_ok(&self, dealer: NodeId, c0: &Element) -> bool {
        self.old.verification_key(dealer).is_ok_and(|vk| vk.0.compressed == c0.compressed)
    }
}

/// One dealer's broadcast message: its old share re-dealt to every receiver, signed with the
/// dealer's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DealerPackage(SignedDealing);

impl DealerPackage {
    /// The dealer that sent it.
    pub fn dealer(&self) -> NodeId {
        self.0.dealer()
    }
    /// This package's ephemeral and its proof, as an attacker would copy them into another run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_ephemeral(&self) -> ForeignEphemeral {
        self.0.dangerous_ephemeral()
    }
}

impl DealingMessage for DealerPackage {
    fn dealing(&self) -> &SignedDealing {
        &self.0
    }
}

impl Wire for DealerPackage {
    const NAME: &'static str = "reshare dealer package";
    const TAG: u8 = 0x52;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        SignedDealing::read(r).map(DealerPackage)
    }
}

/// One receiver's round 2 message: its complaints and a digest of the dealer packages it saw,
/// signed with its identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplaintPackage(SignedComplaints);

impl ComplaintPackage {
    /// The receiver that sent it.
    pub fn sender(&self) -> NodeId {
        self.0.sender()
    }
    /// The dealers it accuses of a bad sub-share, in the order of its complaints.
    pub fn complaints(&self) -> Vec<NodeId> {
        self.0.complaints().iter().map(vss::Complaint::accused).collect()
    }
}

impl ComplaintsMessage for ComplaintPackage {
    fn wrap(complaints: SignedComplaints) -> Self {
        ComplaintPackage(complaints)
    }
    fn complaints(&self) -> &SignedComplaints {
        &self.0
    }
}

impl Wire for ComplaintPackage {
    const NAME: &'static str = "reshare complaint package";
    const TAG: u8 = 0x53;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        SignedComplaints::read(r).map(ComplaintPackage)
    }
}

/// Dealer `me` re-deals its old share `share` (`k_j`, whose `K_j` must be in the old package)
/// to every receiver: `g_j` of degree `t′ − 1` with `g_j(0) = k_j`, committed, proven,
/// encrypted and signed. Uses only the identity (to sign) secret of `keys`, and checks that
/// its transport key is the registered one.
pub fn deal<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    share: &KeyShare,
    params: &Parameters,
    rng: &mut R,
) -> Result<DealerPackage> {
    deal_inner(me, keys, share, params, false, None, rng)
}

/// Ways a cheating dealer can misbehave, for tests that prove resharing catches them.
#[cfg(feature = "dangerous-testing")]
// Test-only and passed by value once per dealer: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum DangerousFault {
    /// Deal a polynomial whose constant term is `k_j + 1`, not the dealer's share (consistent
    /// commitments, sub-shares and proof: only `C_j0 ≠ K_j` gives it away).
    WrongConstantTerm,
    /// Deal `g(i) + 1` to receiver `i` (correctly encrypted and signed, but off the polynomial).
    CorruptShareFor(NodeId),
    /// Replay another run's ephemeral `E` instead of a fresh one, with garbage sub-shares.
    ReplayEphemeral(ForeignEphemeral),
}

/// [`deal`] for a dealer that cheats in the given way (and signs its cheating properly).
#[cfg(feature = "dangerous-testing")]
pub fn dangerous_deal_with_fault<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    share: &KeyShare,
    params: &Parameters,
    fault: DangerousFault,
    rng: &mut R,
) -> Result<DealerPackage> {
    match fault {
        DangerousFault::WrongConstantTerm => deal_inner(me, keys, share, params, true, None, rng),
        DangerousFault::CorruptShareFor(victim) => {
            deal_inner(me, keys, share, params, false, Some(vss::Fault::CorruptShareFor(victim)), rng)
        }
        DangerousFault::ReplayEphemeral(foreign) => {
            deal_inner(me, keys, share, params, false, Some(vss::Fault::ReplayEphemeral(foreign)), rng)
        }
    }
}

fn deal_inner<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    share: &KeyShare,
    params: &Parameters,
    shift_constant_term: bool,
    fault: Option<vss::Fault>,
    rng: &mut R,
) -> Result<DealerPackage> {
    if !params.is_dealer(me) {
        return Err(Error::InvalidParameters("this node is not a dealer of the run"));
    }
    if share.node() != me || params.old.verification_key(me)? != &share.verification_key() {
        return Err(Error::InvalidParameters("the share is not this dealer's share of the old key"));
    }
    let mut secret = Zeroizing::new(*share.secret());
    if shift_constant_term {
        *secret += Scalar::ONE;
    }
    Ok(DealerPackage(vss::deal(params, me, keys, &secret, fault, rng)?.dealing))
}

/// What a receiver keeps between round 1 and the end: the sub-shares it accepted and the
/// public dealings, to judge complaints. Secret: not `Clone`, `Debug` redacted.
pub struct ReceiverState(vss::Received<Parameters>);

impl fmt::Debug for ReceiverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("reshare::ReceiverState").field("me", &self.0.me).finish_non_exhaustive()
    }
}

/// Round 1 for receiver `me`: check every dealer package, decrypt and Feldman-check the
/// sub-share dealt to `me`, and complain about every one that fails.
///
/// `packages` must hold exactly one package from every dealer of `params` (a missing one is
/// [`Error::MissingMessage`], one from a non-dealer [`Error::UnknownNode`]). A bad signature
/// ([`Error::InvalidSignature`]) or ephemeral proof ([`Error::InvalidEphemeralProof`]) aborts
/// the run before any secret touches the package.
pub fn receive<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    receive_inner(me, keys, params, packages, None, rng)
}

/// [`receive`] for a receiver that also files a false complaint against `accused` (whose
/// sub-share was fine), for tests that prove the liar is the one named.
#[cfg(feature = "dangerous-testing")]
pub fn dangerous_receive_with_false_complaint<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    accused: NodeId,
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    receive_inner(me, keys, params, packages, Some(accused), rng)
}

fn receive_inner<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    false_accusation: Option<NodeId>,
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    let lie = false_accusation.map(vss::FalseComplaint::against);
    let (received, package) = vss::receive(params, me, keys.identity(), keys.transport(), packages, None, lie, rng)?;
    Ok((ReceiverState(received), package))
}

/// What a receiver keeps from a successful run.
#[derive(Debug)]
pub struct Output {
    /// This receiver's new share `k′_i`.
    pub share: KeyShare,
    /// The key's new public package: `t′`, every receiver's `K′_m`, the unchanged `K`
    /// (identical on every honest receiver).
    pub package: PublicKeyPackage,
    /// Dealers disqualified: a bad package (shape, proof, `C_j0 ≠ K_j`) or a justified
    /// complaint. Ascending.
    pub disqualified: Vec<NodeId>,
    /// Receivers that filed an unjustified complaint (their accused dealers were kept).
    /// Ascending.
    pub false_accusers: Vec<NodeId>,
}

impl ReceiverState {
    /// The end of the run: check every receiver's complaint package (one from each; this
    /// receiver's own may be included), judge every complaint, fix `QUAL`, and compute
    /// `k′_i = Σ_{j∈S} λ_j·g_j(i)`, every `K′_m = Σ_k C′_k·m^k` with `C′_k = Σ_{j∈S} λ_j·C_jk`,
    /// and check `C′_0 = K`, over `S` the first `t` dealers of `QUAL` and `λ_j = λ_{S,j}(0)`.
    pub fn finish(self, packages: &[ComplaintPackage]) -> Result<Output> {
        let state = &self.0;
        let verdict = state.judge(packages)?;
        let params = &state.run;
        let qualified: Vec<NodeId> = params.dealers().filter(|d| !verdict.bad_dealers.contains(d)).collect();
        let old_t = usize::from(params.old.threshold());
        if qualified.len() < old_t {
            return Err(Error::NotEnoughQualifiedDealers {
                qualified: qualified.len(),
                needed: old_t,
                disqualified: verdict.bad_dealers.into_iter().collect(),
            });
        }
        let set = &qualified[..old_t];
        let lambdas = lagrange::coefficients_at(set, Scalar::ZERO)?;

        let mut secret = Zeroizing::new(Scalar::ZERO);
        for (dealer, lambda) in set.iter().zip(&lambdas) {
            let sub_share = state.received.get(dealer).ok_or(Error::MissingMessage { node: *dealer })?;
            *secret += lambda * **sub_share;
        }
        let share = KeyShare::new(state.me, *secret);

        let commitments: Vec<Vec<RistrettoPoint>> =
            set.iter().map(|d| state.dealings[d].dealing().commitment_points()).collect();
        let combined: Vec<RistrettoPoint> = (0..usize::from(params.new_threshold))
            .map(|k| {
                let column: Vec<RistrettoPoint> = commitments.iter().map(|c| c[k]).collect();
                lagrange::vartime_combine(&lambdas, &column)
            })
            .collect();
        let group_key = *params.old.group_key();
        if combined.first() != Some(&group_key.0.point) {
            return Err(Error::InconsistentPackage);
        }
        let verification_keys: BTreeMap<NodeId, VerificationKey> = params
            .receivers()
            .map(|m| (m, VerificationKey(Element::new(feldman::vartime_evaluate(&combined, m.scalar())))))
            .collect();
        if verification_keys.get(&state.me) != Some(&share.verification_key()) {
            return Err(Error::InconsistentPackage);
        }
        let package = PublicKeyPackage::new(params.new_threshold, verification_keys, group_key)?;
        Ok(Output {
            share,
            package,
            disqualified: verdict.bad_dealers.into_iter().collect(),
            false_accusers: verdict.false_accusers.into_iter().collect(),
        })
    }
}
