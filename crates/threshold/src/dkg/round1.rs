//! DKG round 1: deal a random polynomial, commit to it, prove knowledge of its constant term and
//! of a fresh ephemeral key for this run, and encrypt each sub-share to its recipient's DKG
//! transport key (the dealing of `vss`).

use super::{Parameters, round2};
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{IdentitySecret, NodeId, TransportSecret};
use crate::node_keys::NodeSecrets;
use crate::vss::{self, DealingMessage, SignedDealing};
use curve25519_dalek::Scalar;
use rand_core::CryptoRng;
use std::fmt;
use zeroize::Zeroizing;

#[cfg(feature = "dangerous-testing")]
pub use crate::vss::ForeignEphemeral;

/// Round 1's broadcast message from one dealer, signed with the dealer's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package(SignedDealing);

impl Package {
    /// The dealer that sent it.
    pub fn dealer(&self) -> NodeId {
        self.0.dealer()
    }

    /// This package's ephemeral and its proof, as an attacker would copy them into another run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_ephemeral(&self) -> ForeignEphemeral {
        self.0.dangerous_ephemeral()
    }

    /// Tries to open `recipient`'s sub-share with a given ECDH value (e.g. one a complaint
    /// revealed), for tests that prove such values open nothing outside their own run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_open_share(&self, params: &Parameters, recipient: NodeId, dh: &[u8; 32]) -> Option<Scalar> {
        let dh = curve25519_dalek::ristretto::CompressedRistretto(*dh).decompress()?;
        self.0.open_share(params, recipient, &dh).map(|s| *s)
    }
}

impl DealingMessage for Package {
    fn dealing(&self) -> &SignedDealing {
        &self.0
    }
}

impl Wire for Package {
    const NAME: &'static str = "DKG round 1 package";
    const TAG: u8 = 0x50;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        SignedDealing::read(r).map(Package)
    }
}

/// What a dealer keeps between round 1 and round 2: its identity (to sign) and transport
/// (to open sub-shares) secrets, and its own sub-share.
pub struct SecretPackage {
    me: NodeId,
    identity: IdentitySecret,
    transport: TransportSecret,
    params: Parameters,
    own_share: Zeroizing<Scalar>,
    own_package: Package,
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
    let fault = match fault {
        DangerousFault::CorruptShareFor(victim) => vss::Fault::CorruptShareFor(victim),
        DangerousFault::BadProofOfKnowledge => vss::Fault::BadProofOfKnowledge,
        DangerousFault::ReplayEphemeral(foreign) => vss::Fault::ReplayEphemeral(foreign),
    };
    deal(me, keys, params, Some(fault), rng)
}

fn deal<R: CryptoRng + ?Sized>(
    me: NodeId,
    keys: &NodeSecrets,
    params: Parameters,
    fault: Option<vss::Fault>,
    rng: &mut R,
) -> Result<(SecretPackage, Package)> {
    let secret = Zeroizing::new(Scalar::random(rng));
    let dealt = vss::deal(&params, me, keys, &secret, fault, rng)?;
    let own_share = dealt
        .sub_shares
        .iter()
        .find(|(id, _)| *id == me)
        .map(|(_, s)| s.clone())
        .ok_or(Error::UnknownNode { node: me.get() })?;
    let package = Package(dealt.dealing);
    let secret_package = SecretPackage {
        me,
        identity: keys.identity().copy_secret(),
        transport: keys.transport().copy_secret(),
        params,
        own_share,
        own_package: package.clone(),
        #[cfg(feature = "dangerous-testing")]
        sub_shares: dealt.sub_shares,
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
        self.receive_inner(packages, Some(crate::vss::FalseComplaint::against(accused)), rng)
    }

    /// Round 2 for a node that files a false complaint against `accused` whose DLEQ proof's
    /// commitment is 32 bytes that are no point: for tests that such a complaints message still
    /// decodes, and that its sender, not the accused, is disqualified.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_receive_with_unreadable_complaint<R: CryptoRng + ?Sized>(
        self,
        packages: &[Package],
        accused: NodeId,
        rng: &mut R,
    ) -> Result<(round2::SecretPackage, round2::Package)> {
        let lie = crate::vss::FalseComplaint { accused, unreadable_proof: true };
        self.receive_inner(packages, Some(lie), rng)
    }

    fn receive_inner<R: CryptoRng + ?Sized>(
        self,
        packages: &[Package],
        false_accusation: Option<crate::vss::FalseComplaint>,
        rng: &mut R,
    ) -> Result<(round2::SecretPackage, round2::Package)> {
        let own = Some((&self.own_package, &*self.own_share));
        let (received, package) = vss::receive(
            self.params.clone(),
            self.me,
            &self.identity,
            &self.transport,
            packages,
            own,
            false_accusation,
            rng,
        )?;
        Ok((round2::SecretPackage::new(received), package))
    }
}
