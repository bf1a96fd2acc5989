//! Verifiable dealing between nodes: the one mechanism the DKG ([`crate::dkg`]) and resharing
//! ([`crate::reshare`]) both run, parametrised by the run ([`Run`]) that binds every transcript.
//!
//! A dealer `j` deals a polynomial `f_j` of degree `t − 1` (`t` the run's threshold), publishes
//! Feldman commitments `C_jk = a_jk·G`, a Schnorr proof of knowledge of `a_j0`, a fresh
//! ephemeral `E_j = e_j·G` with a Schnorr proof of knowledge of `e_j` bound to the run, and
//! each sub-share `f_j(i)` encrypted to recipient `i`'s DKG transport key `T_i` (ECDH
//! `e_j·T_i`, HKDF over the run transcript, AES-256-GCM), all signed with `j`'s identity key.
//!
//! A recipient checks signatures and ephemeral proofs of every dealing before any secret
//! touches an `E_j` (a replayed ephemeral aborts the run with [`Error::InvalidEphemeralProof`]),
//! then the dealing's shape, the proof of knowledge and the run's own rule for `C_j0`, then
//! decrypts and Feldman-checks its sub-share. A failed sub-share draws a [`Complaint`] revealing
//! `tr_i·E_j` with a DLEQ proof against `T_i`, which everyone judges ([`judge`]). Round 2 is
//! a signed list of complaints with a digest of the dealings the sender saw ([`view_of`]), so a
//! dealer or relay showing different nodes different dealings is caught.
//!
//! Every domain is `"<run domain>/<step>"` (`hyok/v1/dkg/ephemeral`, `hyok/v1/reshare/ephemeral`,
//! …) followed by the run's binding, so nothing made for one run verifies or opens in another.

use crate::dleq::DleqProof;
use crate::ecies;
use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::feldman;
use crate::keys::{Element, IdentityPublicKey, IdentitySecret, NodeId, TransportPublicKey, TransportSecret};
use crate::node_keys::{KeyBundle, NodeSecrets};
use crate::schnorr;
use crate::transcript::Transcript;
use aes_gcm::{AeadInOut, Aes256Gcm};
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use std::collections::{BTreeMap, BTreeSet};
use zeroize::Zeroizing;

/// What the complaint round needs of a run: what binds its transcripts, and its receivers'
/// keys. Every verifiable dealing in the crate — the DKG, the EC reshare ([`Run`]s) and the
/// threshold RSA reshare — runs its complaint round ([`Complaint`], [`SignedComplaints`],
/// [`judge_complaints`]) over it.
pub(crate) trait Channel {
    /// The domain prefix of every transcript of the run, e.g. `hyok/v1/dkg`.
    const DOMAIN: &'static str;
    /// Appends what binds a transcript to this run (session, thresholds, every party's keys).
    fn bind(&self, t: &mut Transcript);
    /// A receiver's key bundle ([`Error::UnknownNode`] for anyone else).
    fn receiver_bundle(&self, node: NodeId) -> Result<&KeyBundle>;
    /// The receivers, ascending.
    fn receiver_ids(&self) -> Vec<NodeId>;

    /// `H("<DOMAIN>/<step>", binding)`.
    fn transcript(&self, step: &str) -> Transcript {
        let mut t = Transcript::new(format!("{}/{}", Self::DOMAIN, step).as_bytes());
        self.bind(&mut t);
        t
    }
}

/// One run of verifiable dealing of scalar shares: who deals, who receives, the threshold of
/// the dealt polynomials.
pub(crate) trait Run: Channel + Clone {
    /// The run's signed dealing as it travels.
    type Dealing: DealingMessage;
    /// The run's signed round 2 complaints as they travel.
    type Complaints: ComplaintsMessage;

    /// The key bundle of a dealer or receiver.
    fn bundle(&self, node: NodeId) -> Result<&KeyBundle>;
    /// The threshold `t` of the dealt polynomials (each has `t` commitments).
    fn threshold(&self) -> u16;
    /// Whether `node` deals in this run.
    fn is_dealer(&self, node: NodeId) -> bool;
    /// Whether `node` receives sub-shares (and sends a round 2 package) in this run.
    fn is_receiver(&self, node: NodeId) -> bool;
    /// The dealers, ascending.
    fn dealers(&self) -> Vec<NodeId>;
    /// The receivers, ascending: the points the polynomials are evaluated at.
    fn receivers(&self) -> Vec<NodeId>;
    /// The receivers `dealer` encrypts a sub-share to, ascending.
    fn encrypted_to(&self, dealer: NodeId) -> Vec<NodeId>;
    /// The run's own rule for a dealer's constant-term commitment `C_j0` (resharing: it must be
    /// the dealer's old verification key).
    fn constant_term_ok(&self, _dealer: NodeId, _c0: &Element) -> bool {
        true
    }

    /// A dealer's or receiver's identity key.
    fn identity(&self, node: NodeId) -> Result<&IdentityPublicKey> {
        Ok(self.bundle(node)?.identity())
    }
    /// A dealer's or receiver's transport key.
    fn transport(&self, node: NodeId) -> Result<&TransportPublicKey> {
        Ok(self.bundle(node)?.transport())
    }
}

/// A run's dealing message: a [`SignedDealing`] under the run's own wire tag.
pub(crate) trait DealingMessage: Wire + Clone + PartialEq {
    fn dealing(&self) -> &SignedDealing;
}

/// A run's round 2 message: [`SignedComplaints`] under the run's own wire tag.
pub(crate) trait ComplaintsMessage: Wire + Clone {
    fn wrap(complaints: SignedComplaints) -> Self;
    fn complaints(&self) -> &SignedComplaints;
}

/// A sub-share `f_j(i)` encrypted from dealer `j` to recipient `i`: 32 bytes and a GCM tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EncryptedShare {
    ciphertext: [u8; 32],
    tag: [u8; 16],
}

/// What a dealer signs: everything in its dealing but the signature.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    dealer: NodeId,
    commitments: Vec<Element>,
    proof_of_knowledge: schnorr::Proof,
    ephemeral: Element,
    ephemeral_proof: schnorr::Proof,
    shares: BTreeMap<NodeId, EncryptedShare>,
}

impl Body {
    fn write(&self, w: &mut Writer) {
        w.node(self.dealer);
        w.u16(self.commitments.len() as u16);
        for c in &self.commitments {
            c.write(w);
        }
        self.proof_of_knowledge.write(w);
        self.ephemeral.write(w);
        self.ephemeral_proof.write(w);
        w.u16(self.shares.len() as u16);
        for (id, s) in &self.shares {
            w.node(*id);
            w.fixed(&s.ciphertext);
            w.fixed(&s.tag);
        }
    }

    fn signature_context<R: Run>(&self, run: &R) -> Transcript {
        let mut w = Writer(Vec::new());
        self.write(&mut w);
        let mut t = run.transcript("round1-signature");
        t.append(b"package", &w.0);
        t
    }
}

/// One dealer's dealing, signed with its identity key:
/// `dealer ‖ C_0…C_{t−1} ‖ PoK(a_0) ‖ E ‖ PoK(e) ‖ {recipient, Enc(f(i))}… ‖ signature`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignedDealing {
    body: Body,
    signature: schnorr::Proof,
}

impl SignedDealing {
    pub(crate) fn dealer(&self) -> NodeId {
        self.body.dealer
    }

    pub(crate) fn ephemeral(&self) -> &Element {
        &self.body.ephemeral
    }

    /// `C_j0`. Only for a dealing whose shape was checked ([`SignedDealing::check`]).
    pub(crate) fn constant_term(&self) -> RistrettoPoint {
        self.body.commitments[0].point
    }

    pub(crate) fn commitment_points(&self) -> Vec<RistrettoPoint> {
        self.body.commitments.iter().map(|c| c.point).collect()
    }

    /// Checks what must hold before any secret touches the dealing, and aborts the run if it
    /// does not: the dealer's signature, then the proof that the dealer knows `e_j` for this
    /// run's `E_j` (a replayed or foreign ephemeral fails here).
    pub(crate) fn check_signature_and_ephemeral<R: Run>(&self, run: &R) -> Result<()> {
        let body = &self.body;
        let identity = run.identity(body.dealer)?;
        if !self.signature.vartime_verify(&identity.0, &body.signature_context(run)) {
            return Err(Error::InvalidSignature { node: body.dealer });
        }
        if !body.ephemeral_proof.vartime_verify(&body.ephemeral, &dealer_context(run, "ephemeral", body.dealer)) {
            return Err(Error::InvalidEphemeralProof { node: body.dealer });
        }
        Ok(())
    }

    /// Checks everything about the dealing that anyone can check: signature and ephemeral
    /// (failure aborts the run), and — as a `bool`, since failure disqualifies the dealer rather
    /// than aborts — its shape (`t` commitments, one sub-share per recipient), the proof of
    /// knowledge of its constant term, and the run's rule for `C_j0`.
    pub(crate) fn check<R: Run>(&self, run: &R) -> Result<bool> {
        self.check_signature_and_ephemeral(run)?;
        let body = &self.body;
        let shape_ok = body.commitments.len() == usize::from(run.threshold())
            && body.shares.keys().copied().eq(run.encrypted_to(body.dealer));
        if !shape_ok {
            return Ok(false);
        }
        let c0 = &body.commitments[0];
        Ok(body.proof_of_knowledge.vartime_verify(c0, &dealer_context(run, "proof-of-knowledge", body.dealer))
            && run.constant_term_ok(body.dealer, c0))
    }

    /// Decrypts the sub-share for `recipient` given the ECDH value `tr_i·E_j`; `None` if there
    /// is none for `recipient` or the ciphertext does not open.
    pub(crate) fn open_share<R: Run>(
        &self,
        run: &R,
        recipient: NodeId,
        dh: &RistrettoPoint,
    ) -> Option<Zeroizing<Scalar>> {
        let body = &self.body;
        let encrypted = body.shares.get(&recipient)?;
        let cipher = share_cipher(run, body.dealer, recipient, &body.ephemeral, &body.commitments, dh);
        let mut buffer = Zeroizing::new(encrypted.ciphertext);
        cipher
            .decrypt_inout_detached(&ecies::NONCE.into(), &[], buffer.as_mut_slice().into(), &encrypted.tag.into())
            .ok()?;
        Option::from(Scalar::from_canonical_bytes(*buffer)).map(Zeroizing::new)
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.body.write(w);
        self.signature.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let dealer = r.node()?;
        let n = r.count(MAX_NODES)?;
        let commitments = (0..n).map(|_| Element::read(r)).collect::<Result<Vec<_>>>()?;
        let proof_of_knowledge = schnorr::Proof::read(r)?;
        let ephemeral = Element::read(r)?;
        let ephemeral_proof = schnorr::Proof::read(r)?;
        let m = r.count(MAX_NODES)?;
        let mut shares = BTreeMap::new();
        for _ in 0..m {
            let id = r.node()?;
            let share = EncryptedShare { ciphertext: r.array()?, tag: r.array()? };
            if shares.insert(id, share).is_some() {
                return Err(Error::DuplicateNode { node: id });
            }
        }
        let signature = schnorr::Proof::read(r)?;
        Ok(SignedDealing {
            body: Body { dealer, commitments, proof_of_knowledge, ephemeral, ephemeral_proof, shares },
            signature,
        })
    }

    /// This dealing's ephemeral and its proof, as an attacker would copy them into another run.
    #[cfg(feature = "dangerous-testing")]
    pub(crate) fn dangerous_ephemeral(&self) -> ForeignEphemeral {
        ForeignEphemeral { ephemeral: self.body.ephemeral, proof: self.body.ephemeral_proof }
    }
}

/// The context of a dealer's proofs (of knowledge of `a_j0`, step `proof-of-knowledge`; of
/// `e_j`, step `ephemeral`): this run and the dealer, so a proof made for any other run or
/// dealer fails.
pub(crate) fn dealer_context<C: Channel>(run: &C, step: &str, dealer: NodeId) -> Transcript {
    let mut t = run.transcript(step);
    t.append_u64(b"dealer", u64::from(dealer.get()));
    t
}

/// `AES-256-GCM` under `HKDF(dh, info = H(run, j, i, E_j, C_j))`; each key encrypts one sub-share.
fn share_cipher<R: Run>(
    run: &R,
    dealer: NodeId,
    recipient: NodeId,
    ephemeral: &Element,
    commitments: &[Element],
    dh: &RistrettoPoint,
) -> Aes256Gcm {
    let mut t = run.transcript("share-encryption");
    t.append_u64(b"dealer", u64::from(dealer.get()));
    t.append_u64(b"recipient", u64::from(recipient.get()));
    t.append_point(b"ephemeral", &ephemeral.compressed);
    for c in commitments {
        t.append_point(b"commitment", &c.compressed);
    }
    ecies::cipher(R::DOMAIN.as_bytes(), dh, &t.digest())
}

/// Another dealing's (or a sealed RSA share's) ephemeral and proof, as an attacker replays it.
#[cfg(feature = "dangerous-testing")]
#[derive(Clone, Copy, Debug)]
pub struct ForeignEphemeral {
    ephemeral: Element,
    proof: schnorr::Proof,
}

#[cfg(feature = "dangerous-testing")]
impl ForeignEphemeral {
    /// A point seen elsewhere (e.g. a sealed RSA share's `E`) with a made-up proof: whoever
    /// replays it does not know its discrete logarithm.
    pub fn dangerous_from_point(point: &[u8; 32]) -> Result<Self> {
        let (point, compressed) = crate::encoding::decode_point(point, "ephemeral")?;
        let ephemeral = Element { point, compressed };
        let forged = schnorr::Proof::dangerous_forged(&ephemeral);
        Ok(ForeignEphemeral { ephemeral, proof: forged })
    }
}

/// Ways a cheating dealer can misbehave; each run maps its public `DangerousFault` onto these.
#[cfg(feature = "dangerous-testing")]
// Test-only and passed by value once per dealer: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fault {
    /// Deal `f(i) + 1` to node `i` (correctly encrypted and signed, but off the polynomial).
    CorruptShareFor(NodeId),
    /// Send a proof of knowledge for the wrong constant term.
    BadProofOfKnowledge,
    /// Replay a foreign ephemeral, with garbage sub-shares.
    ReplayEphemeral(ForeignEphemeral),
}

#[cfg(not(feature = "dangerous-testing"))]
pub(crate) type Fault = std::convert::Infallible;

/// A dealing, and every sub-share it dealt in the clear (by receiver, ascending).
pub(crate) struct Dealt {
    pub(crate) dealing: SignedDealing,
    pub(crate) sub_shares: Vec<(NodeId, Zeroizing<Scalar>)>,
}

/// Deals `secret` as dealer `me`: splits it over the run's receivers with a random polynomial
/// of degree `t − 1`, commits, proves, encrypts each sub-share to its recipient, signs.
pub(crate) fn deal<R: Run, G: CryptoRng + ?Sized>(
    run: &R,
    me: NodeId,
    keys: &NodeSecrets,
    secret: &Scalar,
    fault: Option<Fault>,
    rng: &mut G,
) -> Result<Dealt> {
    let identity = keys.identity();
    if !run.is_dealer(me) {
        return Err(Error::InvalidParameters("this node is not a dealer of the run"));
    }
    if run.identity(me)? != &identity.public_key() {
        return Err(Error::InvalidParameters("identity secret does not match this node's registered key"));
    }
    if run.transport(me)? != &keys.transport().public_key() {
        return Err(Error::InvalidParameters("transport secret does not match this node's registered key"));
    }
    let ids = run.receivers();
    let (sub_shares, commitments) = feldman::split(secret, run.threshold(), &ids, rng)?;
    let commitments: Vec<Element> = commitments.into_iter().map(Element::new).collect();
    let pok_context = dealer_context(run, "proof-of-knowledge", me);
    #[allow(unused_mut)]
    let mut proof_of_knowledge = schnorr::Proof::prove(secret, &commitments[0], &pok_context, rng);
    #[cfg(not(feature = "dangerous-testing"))]
    let _ = fault;
    #[cfg(feature = "dangerous-testing")]
    if let Some(Fault::BadProofOfKnowledge) = fault {
        let other = Scalar::random(rng);
        proof_of_knowledge = schnorr::Proof::prove(&other, &commitments[0], &pok_context, rng);
    }

    let e = Zeroizing::new(Scalar::random(rng));
    #[allow(unused_mut)]
    let mut ephemeral = Element::new(RistrettoPoint::mul_base(&e));
    #[allow(unused_mut)]
    let mut ephemeral_proof = schnorr::Proof::prove(&e, &ephemeral, &dealer_context(run, "ephemeral", me), rng);
    #[cfg(feature = "dangerous-testing")]
    if let Some(Fault::ReplayEphemeral(foreign)) = fault {
        ephemeral = foreign.ephemeral;
        ephemeral_proof = foreign.proof;
    }
    let recipients: BTreeSet<NodeId> = run.encrypted_to(me).into_iter().collect();
    let mut shares = BTreeMap::new();
    for (id, value) in &sub_shares {
        if !recipients.contains(id) {
            continue;
        }
        let dh = run.transport(*id)?.0.point * *e;
        let cipher = share_cipher(run, me, *id, &ephemeral, &commitments, &dh);
        #[allow(unused_mut)]
        let mut value = Zeroizing::new(**value);
        #[cfg(feature = "dangerous-testing")]
        if let Some(Fault::CorruptShareFor(victim)) = fault
            && victim == *id
        {
            *value += Scalar::ONE;
        }
        let mut buffer = value.to_bytes();
        #[allow(unused_mut)]
        let mut tag: [u8; 16] = cipher
            .encrypt_inout_detached(&ecies::NONCE.into(), &[], buffer.as_mut_slice().into())
            .map_err(|_| Error::InvalidParameters("sub-share encryption failed"))?
            .into();
        #[cfg(feature = "dangerous-testing")]
        if let Some(Fault::ReplayEphemeral(_)) = fault {
            // Not knowing the replayed `e`, the attacker can only send garbage.
            rng.fill_bytes(&mut buffer);
            rng.fill_bytes(&mut tag);
        }
        shares.insert(*id, EncryptedShare { ciphertext: buffer, tag });
    }
    let body = Body { dealer: me, commitments, proof_of_knowledge, ephemeral, ephemeral_proof, shares };
    let signature =
        schnorr::Proof::prove(identity.scalar(), &identity.public_key().0, &body.signature_context(run), rng);
    Ok(Dealt { dealing: SignedDealing { body, signature }, sub_shares })
}

/// "The sub-share `accused` dealt me does not verify": reveals the ECDH value `tr_i·E_j` of that
/// one channel (`tr_i` the accuser's DKG transport secret), with a DLEQ proof against `T_i`, so
/// anyone can decrypt the sub-share and judge who lied. `E_j` carries a proof of knowledge
/// bound to this run, so the value is one the dealer could compute itself: it opens nothing in
/// any other run, and nothing sealed to the node's identity or seal key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    pub(crate) accused: NodeId,
    pub(crate) dh: Element,
    proof: DleqProof,
}

impl Complaint {
    /// The dealer accused.
    pub fn accused(&self) -> NodeId {
        self.accused
    }
    /// The revealed ECDH value, for tests that try to misuse it elsewhere.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_dh(&self) -> [u8; 32] {
        self.dh.compressed.to_bytes()
    }

    /// `tr_i·E_j` for the dealing of `accused` with ephemeral `E_j`, with its DLEQ proof against
    /// `T_i`. Only ever called for a dealing whose ephemeral proof verified in this run
    /// ([`SignedDealing::check_signature_and_ephemeral`], and the RSA reshare's equivalent).
    pub(crate) fn prove<C: Channel, G: CryptoRng + ?Sized>(
        run: &C,
        transport: &TransportSecret,
        me: NodeId,
        accused: NodeId,
        ephemeral: &Element,
        rng: &mut G,
    ) -> Self {
        let (dh, proof) = crate::dleq::reveal_dh(transport, ephemeral, &complaint_context(run, me, accused), rng);
        Complaint { accused, dh, proof }
    }

    /// Whether the revealed `dh` is `tr_i·E_j` for `accuser`'s transport key (the first half of
    /// judging: the run then opens the sub-share with it and checks it).
    pub(crate) fn reveals<C: Channel>(&self, run: &C, accuser: NodeId, ephemeral: &Element) -> Result<bool> {
        let key = run.receiver_bundle(accuser)?.transport();
        let context = complaint_context(run, accuser, self.accused);
        Ok(crate::dleq::vartime_verify_revealed_dh(key, ephemeral, &self.dh, &self.proof, &context))
    }
}

/// A complaint a test makes a receiver file against a dealer whose sub-share was fine.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FalseComplaint {
    /// The dealer slandered.
    pub(crate) accused: NodeId,
    /// Its proof's commitment replaced by bytes that are no point (only with
    /// `dangerous-testing`; otherwise ignored).
    #[cfg_attr(not(feature = "dangerous-testing"), allow(dead_code, reason = "read only with dangerous-testing"))]
    pub(crate) unreadable_proof: bool,
}

impl FalseComplaint {
    /// A well-formed complaint against `accused`.
    pub(crate) fn against(accused: NodeId) -> Self {
        FalseComplaint { accused, unreadable_proof: false }
    }
}

/// The complaint context: a DLEQ proof that `dh = tr_i·E_j` for the accuser's transport key.
fn complaint_context<C: Channel>(run: &C, accuser: NodeId, accused: NodeId) -> Transcript {
    let mut t = run.transcript("complaint");
    t.append_u64(b"accuser", u64::from(accuser.get()));
    t.append_u64(b"accused", u64::from(accused.get()));
    t
}

/// Judges one complaint: `Ok(true)` if the accused dealt `accuser` a bad sub-share (or none),
/// `Ok(false)` if the accuser lied (no such dealer, bad proof, or the revealed sub-share
/// verifies).
fn judge<R: Run>(
    run: &R,
    dealings: &BTreeMap<NodeId, R::Dealing>,
    accuser: NodeId,
    complaint: &Complaint,
) -> Result<bool> {
    let Some(accused) = dealings.get(&complaint.accused).map(DealingMessage::dealing) else {
        return Ok(false);
    };
    if !complaint.reveals(run, accuser, accused.ephemeral())? {
        return Ok(false);
    }
    let share = accused.open_share(run, accuser, &complaint.dh.point);
    Ok(!share.is_some_and(|s| feldman::verify(&accused.commitment_points(), accuser, &s)))
}

/// A receiver's round 2 message: its complaints and a digest of the dealings it saw, signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SignedComplaints {
    sender: NodeId,
    complaints: Vec<Complaint>,
    view: [u8; 64],
    signature: schnorr::Proof,
}

impl SignedComplaints {
    pub(crate) fn sender(&self) -> NodeId {
        self.sender
    }
    pub(crate) fn complaints(&self) -> &[Complaint] {
        &self.complaints
    }

    fn write_unsigned(sender: NodeId, complaints: &[Complaint], view: &[u8; 64], w: &mut Writer) {
        w.node(sender);
        w.u16(complaints.len() as u16);
        for c in complaints {
            w.node(c.accused);
            c.dh.write(w);
            c.proof.write(w);
        }
        w.fixed(view);
    }

    fn signature_context<C: Channel>(run: &C, sender: NodeId, complaints: &[Complaint], view: &[u8; 64]) -> Transcript {
        let mut w = Writer(Vec::new());
        Self::write_unsigned(sender, complaints, view, &mut w);
        let mut t = run.transcript("round2-signature");
        t.append(b"package", &w.0);
        t
    }

    pub(crate) fn sign<C: Channel, G: CryptoRng + ?Sized>(
        run: &C,
        identity: &IdentitySecret,
        sender: NodeId,
        complaints: Vec<Complaint>,
        view: [u8; 64],
        rng: &mut G,
    ) -> Self {
        let context = Self::signature_context(run, sender, &complaints, &view);
        let signature = schnorr::Proof::prove(identity.scalar(), &identity.public_key().0, &context, rng);
        SignedComplaints { sender, complaints, view, signature }
    }

    fn verify<C: Channel>(&self, run: &C) -> Result<()> {
        let identity = run.receiver_bundle(self.sender)?.identity();
        let context = Self::signature_context(run, self.sender, &self.complaints, &self.view);
        if self.signature.vartime_verify(&identity.0, &context) {
            Ok(())
        } else {
            Err(Error::InvalidSignature { node: self.sender })
        }
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        Self::write_unsigned(self.sender, &self.complaints, &self.view, w);
        self.signature.write(w);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let sender = r.node()?;
        let n = r.count(MAX_NODES)?;
        let mut complaints = Vec::with_capacity(n);
        for _ in 0..n {
            complaints.push(Complaint { accused: r.node()?, dh: Element::read(r)?, proof: DleqProof::read(r)? });
        }
        let view = r.array()?;
        let signature = schnorr::Proof::read(r)?;
        Ok(SignedComplaints { sender, complaints, view, signature })
    }
}

/// `H(every dealing as encoded)`, in dealer order.
pub(crate) fn view_of<'a, C: Channel, W: Wire + 'a>(run: &C, dealings: impl IntoIterator<Item = &'a W>) -> [u8; 64] {
    let mut t = run.transcript("view");
    for p in dealings {
        t.append(b"package", &p.to_bytes());
    }
    t.digest()
}

/// Round 2 of any run: check every receiver's signed complaints (one from each; `me`'s own may
/// be left out, `own` stands for it), that every receiver saw the same dealings as `own`, and
/// judge every complaint with `judge` (`Ok(true)`: the accused dealt a bad sub-share).
pub(crate) fn judge_complaints<'a, C: Channel>(
    run: &C,
    me: NodeId,
    own: &'a SignedComplaints,
    packages: impl IntoIterator<Item = &'a SignedComplaints>,
    mut judge: impl FnMut(NodeId, &Complaint) -> Result<bool>,
) -> Result<Verdict> {
    let mut all = BTreeMap::new();
    for p in packages {
        run.receiver_bundle(p.sender)?;
        p.verify(run)?;
        if p.sender == me {
            continue;
        }
        if all.insert(p.sender, p).is_some() {
            return Err(Error::DuplicateNode { node: p.sender });
        }
    }
    for node in run.receiver_ids() {
        if node != me && !all.contains_key(&node) {
            return Err(Error::MissingMessage { node });
        }
    }
    all.insert(me, own);
    let mut bad_dealers = BTreeSet::new();
    let mut false_accusers = BTreeSet::new();
    for (sender, package) in &all {
        if package.view != own.view {
            return Err(Error::InconsistentView { node: *sender });
        }
        for complaint in &package.complaints {
            if judge(*sender, complaint)? {
                bad_dealers.insert(complaint.accused);
            } else {
                false_accusers.insert(*sender);
            }
        }
    }
    Ok(Verdict { bad_dealers, false_accusers })
}

/// What a receiver keeps between round 1 and the end: the sub-shares it accepted, every
/// dealing (to judge complaints), the dealers that failed the public checks, and its own
/// round 2 message.
pub(crate) struct Received<R: Run> {
    pub(crate) me: NodeId,
    pub(crate) run: R,
    pub(crate) dealings: BTreeMap<NodeId, R::Dealing>,
    pub(crate) received: BTreeMap<NodeId, Zeroizing<Scalar>>,
    bad: Vec<NodeId>,
    own_complaints: SignedComplaints,
}

/// The outcome of round 2's judging.
pub(crate) struct Verdict {
    /// Dealers that failed the public checks or drew a justified complaint.
    pub(crate) bad_dealers: BTreeSet<NodeId>,
    /// Receivers that filed an unjustified complaint.
    pub(crate) false_accusers: BTreeSet<NodeId>,
}

/// Round 1 for receiver `me`: check every dealing, decrypt and Feldman-check the sub-share
/// dealt to `me`, complain about every one that fails, sign the complaints with the view.
///
/// `packages` must hold exactly one dealing from every dealer (`me`'s own may be left out when
/// `own` holds it with its sub-share, as in the DKG, where a dealer does not encrypt to itself).
// The run's inputs, each one of its own kind: grouping them would only hide what each is for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receive<R: Run, G: CryptoRng + ?Sized>(
    run: R,
    me: NodeId,
    identity: &IdentitySecret,
    transport: &TransportSecret,
    packages: &[R::Dealing],
    own: Option<(&R::Dealing, &Scalar)>,
    false_accusation: Option<FalseComplaint>,
    rng: &mut G,
) -> Result<(Received<R>, R::Complaints)> {
    if !run.is_receiver(me) {
        return Err(Error::InvalidParameters("this node is not a receiver of the run"));
    }
    if run.identity(me)? != &identity.public_key() {
        return Err(Error::InvalidParameters("identity secret does not match this node's registered key"));
    }
    if run.transport(me)? != &transport.public_key() {
        return Err(Error::InvalidParameters("transport secret does not match this node's registered key"));
    }
    let mut all = BTreeMap::new();
    for p in packages {
        let dealer = p.dealing().dealer();
        if !run.is_dealer(dealer) {
            return Err(Error::UnknownNode { node: dealer.get() });
        }
        if let Some((own_package, _)) = own
            && dealer == me
        {
            if p != own_package {
                return Err(Error::InvalidSignature { node: me });
            }
            continue;
        }
        if all.insert(dealer, p.clone()).is_some() {
            return Err(Error::DuplicateNode { node: dealer });
        }
    }
    if let Some((own_package, _)) = own {
        all.insert(me, own_package.clone());
    }
    for node in run.dealers() {
        if !all.contains_key(&node) {
            return Err(Error::MissingMessage { node });
        }
    }

    // Every signature and every ephemeral proof first: nothing secret touches a dealing until
    // all of them hold, so a replayed ephemeral aborts the run before any complaint.
    for package in all.values() {
        package.dealing().check_signature_and_ephemeral(&run)?;
    }
    let mut received = BTreeMap::new();
    let mut complaints = Vec::new();
    let mut bad = Vec::new();
    for (dealer, package) in &all {
        let dealing = package.dealing();
        if !dealing.check(&run)? {
            bad.push(*dealer);
            continue;
        }
        if let Some((_, own_share)) = own
            && *dealer == me
        {
            received.insert(me, Zeroizing::new(*own_share));
            continue;
        }
        let dh = dealing.ephemeral().point * transport.scalar();
        let share = dealing.open_share(&run, me, &dh).filter(|s| feldman::verify(&dealing.commitment_points(), me, s));
        match share {
            Some(s) => {
                received.insert(*dealer, s);
            }
            None => complaints.push(Complaint::prove(&run, transport, me, *dealer, dealing.ephemeral(), rng)),
        }
    }
    if let Some(lie) = false_accusation
        && let Some(accused) = all.get(&lie.accused)
    {
        let accused = accused.dealing();
        #[allow(unused_mut)]
        let mut complaint = Complaint::prove(&run, transport, me, accused.dealer(), accused.ephemeral(), rng);
        #[cfg(feature = "dangerous-testing")]
        if lie.unreadable_proof {
            complaint.proof = complaint.proof.dangerous_with_unreadable_commitment();
        }
        complaints.push(complaint);
    }
    let view = view_of(&run, all.values());
    let own_complaints = SignedComplaints::sign(&run, identity, me, complaints, view, rng);
    let message = R::Complaints::wrap(own_complaints.clone());
    Ok((Received { me, run, dealings: all, received, bad, own_complaints }, message))
}

impl<R: Run> Received<R> {
    /// Round 2: check every receiver's signed complaints (one from each, `me`'s own may be
    /// left out), that every receiver saw the same dealings, and judge every complaint.
    pub(crate) fn judge(&self, packages: &[R::Complaints]) -> Result<Verdict> {
        let packages = packages.iter().map(ComplaintsMessage::complaints);
        let mut verdict =
            judge_complaints(&self.run, self.me, &self.own_complaints, packages, |accuser, complaint| {
                judge(&self.run, &self.dealings, accuser, complaint)
            })?;
        verdict.bad_dealers.extend(self.bad.iter().copied());
        Ok(verdict)
    }
}
