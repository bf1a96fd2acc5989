//! DKG round 1: deal a polynomial, commit to it, prove knowledge of its constant term and of a
//! fresh ephemeral key for this run, and encrypt each sub-share to its recipient's DKG
//! transport key.

use super::{Parameters, round2};
use crate::dleq::DleqProof;
use crate::ecies;
use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::feldman;
use crate::keys::{Element, IdentitySecret, NodeId, TransportSecret};
use crate::node_keys::NodeSecrets;
use crate::schnorr;
use crate::transcript::Transcript;
use aes_gcm::{AeadInOut, Aes256Gcm};
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use std::collections::BTreeMap;
use std::fmt;
use zeroize::Zeroizing;

/// A sub-share `f_j(i)` encrypted from dealer `j` to recipient `i`: 32 bytes and a GCM tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncryptedShare {
    ciphertext: [u8; 32],
    tag: [u8; 16],
}

/// What a dealer signs: everything in its round 1 package but the signature.
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

    fn signature_context(&self, params: &Parameters) -> Transcript {
        let mut w = Writer(Vec::new());
        self.write(&mut w);
        let mut t = params.transcript(b"hyok/v1/dkg/round1-signature");
        t.append(b"package", &w.0);
        t
    }
}

/// Round 1's broadcast message from one dealer, signed with the dealer's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    body: Body,
    signature: schnorr::Proof,
}

impl Package {
    /// The dealer that sent it.
    pub fn dealer(&self) -> NodeId {
        self.body.dealer
    }

    pub(crate) fn ephemeral(&self) -> &Element {
        &self.body.ephemeral
    }

    pub(crate) fn group_commitment(&self) -> RistrettoPoint {
        self.body.commitments[0].point
    }

    pub(crate) fn commitment_points(&self) -> Vec<RistrettoPoint> {
        self.body.commitments.iter().map(|c| c.point).collect()
    }

    /// Checks what must hold before any secret touches the package, and aborts the run if it
    /// does not: the dealer's signature, then the proof that the dealer knows `e_j` for this
    /// run's `E_j` (a replayed or foreign ephemeral fails here).
    pub(crate) fn check_signature_and_ephemeral(&self, params: &Parameters) -> Result<()> {
        let body = &self.body;
        let identity = params.identity(body.dealer)?;
        if !self.signature.vartime_verify(&identity.0, &body.signature_context(params)) {
            return Err(Error::InvalidSignature { node: body.dealer });
        }
        if !body.ephemeral_proof.vartime_verify(&body.ephemeral, &ephemeral_context(params, body.dealer)) {
            return Err(Error::InvalidEphemeralProof { node: body.dealer });
        }
        Ok(())
    }

    /// Checks everything about the package that anyone can check: signature and ephemeral
    /// (failure aborts the run), its shape, and — as a `bool`, since failure disqualifies rather
    /// than aborts — the dealer's proof of knowledge of its constant term.
    pub(crate) fn check(&self, params: &Parameters) -> Result<bool> {
        self.check_signature_and_ephemeral(params)?;
        let body = &self.body;
        let shape_ok = body.commitments.len() == usize::from(params.threshold)
            && body.shares.keys().copied().eq(params.nodes().filter(|n| *n != body.dealer));
        if !shape_ok {
            return Ok(false);
        }
        Ok(body.proof_of_knowledge.vartime_verify(&body.commitments[0], &pok_context(params, body.dealer)))
    }

    /// Decrypts the sub-share for `recipient` given the ECDH value `tr_i·E_j`; `None` if the
    /// ciphertext does not open.
    pub(crate) fn open_share(
        &self,
        params: &Parameters,
        recipient: NodeId,
        dh: &RistrettoPoint,
    ) -> Option<Zeroizing<Scalar>> {
        let body = &self.body;
        let encrypted = body.shares.get(&recipient)?;
        let cipher = share_cipher(params, body.dealer, recipient, &body.ephemeral, &body.commitments, dh);
        let mut buffer = Zeroizing::new(encrypted.ciphertext);
        cipher
            .decrypt_inout_detached(&ecies::NONCE.into(), &[], buffer.as_mut_slice().into(), &encrypted.tag.into())
            .ok()?;
        Option::from(Scalar::from_canonical_bytes(*buffer)).map(Zeroizing::new)
    }

    /// This package's ephemeral and its proof, as an attacker would copy them into another run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_ephemeral(&self) -> ForeignEphemeral {
        ForeignEphemeral { ephemeral: self.body.ephemeral, proof: self.body.ephemeral_proof }
    }

    /// Tries to open `recipient`'s sub-share with a given ECDH value (e.g. one a complaint
    /// revealed), for tests that prove such values open nothing outside their own run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_open_share(&self, params: &Parameters, recipient: NodeId, dh: &[u8; 32]) -> Option<Scalar> {
        let dh = curve25519_dalek::ristretto::CompressedRistretto(*dh).decompress()?;
        self.open_share(params, recipient, &dh).map(|s| *s)
    }
}

impl Wire for Package {
    const NAME: &'static str = "DKG round 1 package";
    const TAG: u8 = 0x50;
    fn encode_body(&self, w: &mut Writer) {
        self.body.write(w);
        self.signature.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
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
        Ok(Package {
            body: Body { dealer, commitments, proof_of_knowledge, ephemeral, ephemeral_proof, shares },
            signature,
        })
    }
}

fn pok_context(params: &Parameters, dealer: NodeId) -> Transcript {
    let mut t = params.transcript(b"hyok/v1/dkg/proof-of-knowledge");
    t.append_u64(b"dealer", u64::from(dealer.get()));
    t
}

/// The context of the dealer's proof of knowledge of `e_j`: this run (session, `t`, every
/// participant's keys) and the dealer, so a proof made for any other run or dealer fails.
fn ephemeral_context(params: &Parameters, dealer: NodeId) -> Transcript {
    let mut t = params.transcript(b"hyok/v1/dkg/ephemeral");
    t.append_u64(b"dealer", u64::from(dealer.get()));
    t
}

/// `AES-256-GCM` under `HKDF(dh, info = H(run, j, i, E_j, C_j))`; each key encrypts one sub-share.
fn share_cipher(
    params: &Parameters,
    dealer: NodeId,
    recipient: NodeId,
    ephemeral: &Element,
    commitments: &[Element],
    dh: &RistrettoPoint,
) -> Aes256Gcm {
    let mut t = params.transcript(b"hyok/v1/dkg/share-encryption");
    t.append_u64(b"dealer", u64::from(dealer.get()));
    t.append_u64(b"recipient", u64::from(recipient.get()));
    t.append_point(b"ephemeral", &ephemeral.compressed);
    for c in commitments {
        t.append_point(b"commitment", &c.compressed);
    }
    ecies::cipher(b"hyok/v1/dkg", dh, &t.digest())
}

/// The complaint context: a DLEQ proof that `dh = tr_i·E_j` for the accuser's transport key.
pub(crate) fn complaint_context(params: &Parameters, accuser: NodeId, accused: NodeId) -> Transcript {
    let mut t = params.transcript(b"hyok/v1/dkg/complaint");
    t.append_u64(b"accuser", u64::from(accuser.get()));
    t.append_u64(b"accused", u64::from(accused.get()));
    t
}

/// `tr_i·E_j` with its DLEQ proof against `T_i`. Only ever called for a package whose ephemeral
/// proof verified in this run ([`Package::check_signature_and_ephemeral`]).
pub(crate) fn prove_dh<R: CryptoRng + ?Sized>(
    params: &Parameters,
    transport: &TransportSecret,
    me: NodeId,
    accused: &Package,
    rng: &mut R,
) -> (Element, DleqProof) {
    crate::dleq::reveal_dh(transport, accused.ephemeral(), &complaint_context(params, me, accused.dealer()), rng)
}

/// What a dealer keeps between round 1 and round 2: its identity (to sign) and transport
/// (to open sub-shares) secrets, and its own sub-share.
pub struct SecretPackage {
    pub(super) me: NodeId,
    pub(super) identity: IdentitySecret,
    pub(super) transport: TransportSecret,
    pub(super) params: Parameters,
    pub(super) own_share: Zeroizing<Scalar>,
    pub(super) own_package: Package,
    #[cfg(feature = "dangerous-testing")]
    sub_shares: Vec<(NodeId, Zeroizing<Scalar>)>,
}

impl fmt::Debug for SecretPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("round1::SecretPackage").field("me", &self.me).finish_non_exhaustive()
    }
}

/// Round 1 for node `me`: deal, commit, prove, encrypt, sign. Uses only the identity (to sign)
/// and transport (kept, to open sub-shares in round 2) secrets of `keys`.
pub fn part1<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    rng: &mut R,
) -> Result<(SecretPackage, Package)> {
    deal(me, keys, params, None, rng)
}

/// Another package's (or a sealed RSA share's) ephemeral and proof, as an attacker replays it.
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

/// Ways a cheating dealer can misbehave, for tests that prove the DKG catches them.
#[cfg(feature = "dangerous-testing")]
// Test-only and passed by value once per dealer: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum DangerousFault {
    /// Deal `f(i) + 1` to node `i` (correctly encrypted and signed, but off the polynomial).
    CorruptShareFor(NodeId),
    /// Send a proof of knowledge for the wrong constant term.
    BadProofOfKnowledge,
    /// Replay another run's (or a sealed RSA share's) ephemeral `E` instead of a fresh one,
    /// with garbage sub-shares: the attack that would make every recipient complain with
    /// `key·E`, the value that opens what `E` encrypted elsewhere.
    ReplayEphemeral(ForeignEphemeral),
}

/// Round 1 for a dealer that cheats in the given way (and signs its cheating properly).
#[cfg(feature = "dangerous-testing")]
pub fn dangerous_part1_with_fault<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    fault: DangerousFault,
    rng: &mut R,
) -> Result<(SecretPackage, Package)> {
    deal(me, keys, params, Some(fault), rng)
}

#[cfg(not(feature = "dangerous-testing"))]
type Fault = ();
#[cfg(feature = "dangerous-testing")]
type Fault = DangerousFault;

fn deal<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    fault: Option<Fault>,
    rng: &mut R,
) -> Result<(SecretPackage, Package)> {
    let identity = keys.identity();
    if params.identity(me)? != &identity.public_key() {
        return Err(Error::InvalidParameters("identity secret does not match this node's registered key"));
    }
    if params.transport(me)? != &keys.transport().public_key() {
        return Err(Error::InvalidParameters("transport secret does not match this node's registered key"));
    }
    let ids: Vec<NodeId> = params.nodes().collect();
    let secret = Zeroizing::new(Scalar::random(rng));
    let (sub_shares, commitments) = feldman::split(&secret, params.threshold, &ids, rng)?;
    let commitments: Vec<Element> = commitments.into_iter().map(Element::new).collect();
    #[allow(unused_mut)]
    let mut proof_of_knowledge = schnorr::Proof::prove(&secret, &commitments[0], &pok_context(&params, me), rng);
    #[cfg(feature = "dangerous-testing")]
    if let Some(DangerousFault::BadProofOfKnowledge) = fault {
        let other = Scalar::random(rng);
        proof_of_knowledge = schnorr::Proof::prove(&other, &commitments[0], &pok_context(&params, me), rng);
    }
    #[cfg(not(feature = "dangerous-testing"))]
    let _ = fault;

    let e = Zeroizing::new(Scalar::random(rng));
    #[allow(unused_mut)]
    let mut ephemeral = Element::new(RistrettoPoint::mul_base(&e));
    #[allow(unused_mut)]
    let mut ephemeral_proof = schnorr::Proof::prove(&e, &ephemeral, &ephemeral_context(&params, me), rng);
    #[cfg(feature = "dangerous-testing")]
    if let Some(DangerousFault::ReplayEphemeral(foreign)) = fault {
        ephemeral = foreign.ephemeral;
        ephemeral_proof = foreign.proof;
    }
    let mut shares = BTreeMap::new();
    let mut own_share = Zeroizing::new(Scalar::ZERO);
    for (id, value) in &sub_shares {
        if *id == me {
            *own_share = **value;
            continue;
        }
        let dh = params.transport(*id)?.0.point * *e;
        let cipher = share_cipher(&params, me, *id, &ephemeral, &commitments, &dh);
        #[allow(unused_mut)]
        let mut value = Zeroizing::new(**value);
        #[cfg(feature = "dangerous-testing")]
        if let Some(DangerousFault::CorruptShareFor(victim)) = fault
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
        if let Some(DangerousFault::ReplayEphemeral(_)) = fault {
            // Not knowing the replayed `e`, the attacker can only send garbage.
            rng.fill_bytes(&mut buffer);
            rng.fill_bytes(&mut tag);
        }
        shares.insert(*id, EncryptedShare { ciphertext: buffer, tag });
    }
    let body = Body { dealer: me, commitments, proof_of_knowledge, ephemeral, ephemeral_proof, shares };
    let signature =
        schnorr::Proof::prove(identity.scalar(), &identity.public_key().0, &body.signature_context(&params), rng);
    let package = Package { body, signature };

    let secret_package = SecretPackage {
        me,
        identity: identity.copy_secret(),
        transport: keys.transport().copy_secret(),
        params,
        own_share,
        own_package: package.clone(),
        #[cfg(feature = "dangerous-testing")]
        sub_shares,
    };
    Ok((secret_package, package))
}

impl SecretPackage {
    /// Every sub-share this dealer dealt, in the clear. Only for tests that check that no
    /// relayed message contains one.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_sub_shares(&self) -> Vec<(NodeId, Scalar)> {
        self.sub_shares.iter().map(|(id, s)| (*id, **s)).collect()
    }

    /// Round 2 for this node: check every other dealer's package, decrypt and Feldman-check the
    /// sub-share dealt to this node, and complain about every one that fails.
    ///
    /// `packages` must hold one package from every other participant (this node's own may be
    /// included). A package with a bad signature aborts with [`Error::InvalidSignature`].
    pub fn receive<R: CryptoRng + ?Sized>(
        self,
        packages: &[Package],
        rng: &mut R,
    ) -> Result<(round2::SecretPackage, round2::Package)> {
        self.receive_inner(packages, None, rng)
    }

    /// Round 2 for a node that also files a false complaint against `accused` (whose sub-share
    /// was fine), for tests that prove the liar is the one disqualified.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_receive_with_false_complaint<R: CryptoRng + ?Sized>(
        self,
        packages: &[Package],
        accused: NodeId,
        rng: &mut R,
    ) -> Result<(round2::SecretPackage, round2::Package)> {
        self.receive_inner(packages, Some(accused), rng)
    }

    fn receive_inner<R: CryptoRng + ?Sized>(
        self,
        packages: &[Package],
        false_accusation: Option<NodeId>,
        rng: &mut R,
    ) -> Result<(round2::SecretPackage, round2::Package)> {
        let mut all = BTreeMap::new();
        for p in packages {
            self.params.identity(p.dealer())?;
            if p.dealer() == self.me {
                if *p != self.own_package {
                    return Err(Error::InvalidSignature { node: self.me });
                }
                continue;
            }
            if all.insert(p.dealer(), p.clone()).is_some() {
                return Err(Error::DuplicateNode { node: p.dealer() });
            }
        }
        for node in self.params.nodes() {
            if node != self.me && !all.contains_key(&node) {
                return Err(Error::MissingMessage { node });
            }
        }
        all.insert(self.me, self.own_package.clone());

        // Every signature and every ephemeral proof first: nothing secret touches a package
        // until all of them hold, so a replayed ephemeral aborts the run before any complaint.
        for package in all.values() {
            package.check_signature_and_ephemeral(&self.params)?;
        }
        let mut received = BTreeMap::new();
        let mut complaints = Vec::new();
        let mut bad_proofs = Vec::new();
        for (dealer, package) in &all {
            if !package.check(&self.params)? {
                bad_proofs.push(*dealer);
                continue;
            }
            if *dealer == self.me {
                received.insert(self.me, Zeroizing::new(*self.own_share));
                continue;
            }
            let dh = package.ephemeral().point * self.transport.scalar();
            let share = package
                .open_share(&self.params, self.me, &dh)
                .filter(|s| feldman::verify(&package.commitment_points(), self.me, s));
            match share {
                Some(s) => {
                    received.insert(*dealer, s);
                }
                None => {
                    let (dh, proof) = prove_dh(&self.params, &self.transport, self.me, package, rng);
                    complaints.push(round2::Complaint { accused: *dealer, dh, proof });
                }
            }
        }
        if let Some(accused) = false_accusation.and_then(|id| all.get(&id)) {
            let (dh, proof) = prove_dh(&self.params, &self.transport, self.me, accused, rng);
            complaints.push(round2::Complaint { accused: accused.dealer(), dh, proof });
        }
        round2::SecretPackage::new(self, all, received, bad_proofs, complaints, rng)
    }
}
