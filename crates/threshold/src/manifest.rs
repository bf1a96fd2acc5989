//! The pinned cluster manifest, as pure data: which nodes (id and identity public key) make up
//! the cluster, its threshold `t` (and so `n`), its epoch (0 for the first; each accepted
//! membership change, [`crate::epoch`], makes the next), and the coordinator certificate keys a
//! node accepts (SHA-256 of each certificate's SubjectPublicKeyInfo). Every node keeps its own copy,
//! installed only by its own operator; a DKG, an RSA share or a caller that disagrees with it is
//! refused. Reading files and certificates is the caller's job.
//!
//! The canonical encoding ([`Wire`], tag `0x07`) lists nodes by ascending id and coordinator
//! keys in ascending byte order, each once, so one manifest has exactly one encoding, and
//! [`Manifest::digest`] names it.

use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{IdentityPublicKey, NodeId};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Most coordinator keys one manifest may pin.
pub const MAX_COORDINATORS: usize = 64;

/// SHA-256 of a coordinator certificate's DER SubjectPublicKeyInfo.
pub type SpkiHash = [u8; 32];

/// A cluster manifest: `t`, the nodes and the pinned coordinator keys. Only [`Manifest::new`]
/// and decoding make one, and both check it: `1 ≤ t ≤ n`, distinct identity keys, at least one
/// coordinator key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    epoch: u64,
    threshold: u16,
    nodes: BTreeMap<NodeId, IdentityPublicKey>,
    coordinators: BTreeSet<SpkiHash>,
}

impl Manifest {
    /// A checked manifest.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for `t = 0`, `t > n`, no or too many nodes, a node id or an
    /// identity key listed twice, or no (or too many) coordinator keys.
    pub fn new(
        threshold: u16,
        nodes: impl IntoIterator<Item = (NodeId, IdentityPublicKey)>,
        coordinators: impl IntoIterator<Item = SpkiHash>,
    ) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (id, key) in nodes {
            if map.insert(id, key).is_some() {
                return Err(Error::InvalidParameters("a node id is listed twice in the manifest"));
            }
        }
        let mut set = BTreeSet::new();
        for c in coordinators {
            if !set.insert(c) {
                return Err(Error::InvalidParameters("a coordinator key is listed twice in the manifest"));
            }
        }
        Self::checked(threshold, map, set)
    }

    fn checked(
        threshold: u16,
        nodes: BTreeMap<NodeId, IdentityPublicKey>,
        coordinators: BTreeSet<SpkiHash>,
    ) -> Result<Self> {
        if nodes.is_empty() || nodes.len() > MAX_NODES {
            return Err(Error::InvalidParameters("a manifest lists between 1 and 1024 nodes"));
        }
        if threshold == 0 || usize::from(threshold) > nodes.len() {
            return Err(Error::InvalidParameters("the manifest's threshold must be between 1 and n"));
        }
        let distinct: BTreeSet<&[u8; 32]> = nodes.values().map(IdentityPublicKey::as_bytes).collect();
        if distinct.len() != nodes.len() {
            return Err(Error::InvalidParameters("two nodes of the manifest share an identity key"));
        }
        if coordinators.is_empty() || coordinators.len() > MAX_COORDINATORS {
            return Err(Error::InvalidParameters("a manifest pins between 1 and 64 coordinator keys"));
        }
        Ok(Manifest { epoch: 0, threshold, nodes, coordinators })
    }

    /// This manifest as epoch `epoch` (a membership change's outcome).
    #[must_use]
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The epoch: 0 for a cluster's first manifest, one more for each membership change.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The threshold `t`.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// The node count `n`.
    pub fn n(&self) -> u16 {
        // At most MAX_NODES (1024) by construction.
        u16::try_from(self.nodes.len()).unwrap_or(u16::MAX)
    }

    /// Every node and its identity key, by id.
    pub fn nodes(&self) -> &BTreeMap<NodeId, IdentityPublicKey> {
        &self.nodes
    }

    /// Node `id`'s identity key, if the manifest lists it.
    pub fn identity(&self, id: NodeId) -> Option<&IdentityPublicKey> {
        self.nodes.get(&id)
    }

    /// The id the manifest gives to the node with identity key `key`.
    pub fn node_with_identity(&self, key: &IdentityPublicKey) -> Option<NodeId> {
        self.nodes.iter().find(|(_, k)| *k == key).map(|(id, _)| *id)
    }

    /// The pinned coordinator keys.
    pub fn coordinators(&self) -> &BTreeSet<SpkiHash> {
        &self.coordinators
    }

    /// Whether a caller whose certificate key hashes to `spki` is a pinned coordinator.
    pub fn pins_coordinator(&self, spki: &SpkiHash) -> bool {
        self.coordinators.contains(spki)
    }

    /// `SHA-256("hyok/v1/manifest" ‖ encoding)`: names this manifest in audit logs and to
    /// operators comparing copies.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"hyok/v1/manifest");
        h.update(self.to_bytes());
        h.finalize().into()
    }
}

/// `version ‖ 0x07 ‖ u16be(t) ‖ u16be(n) ‖ n × (u16be(id) ‖ identity key) ‖ u16be(c) ‖ c × SHA-256
/// [‖ u64be(epoch)]`, ids strictly ascending and coordinator keys strictly ascending; the epoch
/// is written only when it is not 0 (so a first manifest keeps the encoding, and the digest, it
/// had before epochs existed), and a written epoch of 0 is malformed.
impl Wire for Manifest {
    const NAME: &'static str = "cluster manifest";
    const TAG: u8 = 0x07;

    fn encode_body(&self, w: &mut Writer) {
        w.u16(self.threshold);
        w.u16(self.n());
        for (id, key) in &self.nodes {
            w.node(*id);
            w.fixed(key.as_bytes());
        }
        w.u16(u16::try_from(self.coordinators.len()).unwrap_or(u16::MAX));
        for c in &self.coordinators {
            w.fixed(c);
        }
        if self.epoch != 0 {
            w.u64(self.epoch);
        }
    }

    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let malformed = Error::Malformed { what: Self::NAME };
        let threshold = r.u16()?;
        let n = r.count(MAX_NODES)?;
        let mut nodes = BTreeMap::new();
        for _ in 0..n {
            let id = r.node()?;
            let key = IdentityPublicKey::read(r)?;
            if nodes.last_key_value().is_some_and(|(last, _)| *last >= id) {
                return Err(malformed);
            }
            nodes.insert(id, key);
        }
        let c = r.count(MAX_COORDINATORS)?;
        let mut coordinators = BTreeSet::new();
        for _ in 0..c {
            let key: SpkiHash = r.array()?;
            if coordinators.last().is_some_and(|last| *last >= key) {
                return Err(malformed);
            }
            coordinators.insert(key);
        }
        let epoch = match r.is_empty() {
            true => 0,
            false => match r.u64()? {
                0 => return Err(malformed),
                epoch => epoch,
            },
        };
        let manifest = Self::checked(threshold, nodes, coordinators).map_err(|_| malformed)?;
        Ok(manifest.with_epoch(epoch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentitySecret;

    fn keys(n: u16) -> Vec<(NodeId, IdentityPublicKey)> {
        let mut rng = rand::rng();
        (1..=n).map(|i| (NodeId::new(i).unwrap(), IdentitySecret::generate(&mut rng).public_key())).collect()
    }

    #[test]
    fn a_manifest_round_trips_and_its_encoding_is_canonical() {
        let nodes = keys(5);
        let m = Manifest::new(3, nodes.iter().rev().copied(), [[2u8; 32], [1u8; 32]]).unwrap();
        assert_eq!((m.threshold(), m.n()), (3, 5));
        let bytes = m.to_bytes();
        assert_eq!(Manifest::from_bytes(&bytes).unwrap(), m);
        // The same content in another order encodes (and digests) the same.
        let again = Manifest::new(3, nodes.iter().copied(), [[1u8; 32], [2u8; 32]]).unwrap();
        assert_eq!((again.to_bytes(), again.digest()), (bytes.clone(), m.digest()));
        assert_eq!(m.node_with_identity(&nodes[2].1), Some(nodes[2].0));
        assert!(m.pins_coordinator(&[1u8; 32]) && !m.pins_coordinator(&[3u8; 32]));
        // Truncations and trailing bytes are malformed, never a panic.
        for cut in 0..bytes.len() {
            assert!(Manifest::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(Manifest::from_bytes(&long).is_err());
    }

    #[test]
    fn an_epoch_is_part_of_the_encoding_and_the_digest_and_zero_is_written_only_by_omission() {
        let nodes = keys(3);
        let first = Manifest::new(2, nodes.iter().copied(), [[1u8; 32]]).unwrap();
        let next = first.clone().with_epoch(7);
        assert_eq!((first.epoch(), next.epoch()), (0, 7));
        assert_eq!(next.to_bytes().len(), first.to_bytes().len() + 8);
        assert_ne!(first.digest(), next.digest());
        assert_eq!(Manifest::from_bytes(&next.to_bytes()).unwrap(), next);
        let mut zero = first.to_bytes();
        zero.extend_from_slice(&0u64.to_be_bytes());
        assert!(Manifest::from_bytes(&zero).is_err(), "an explicit epoch 0 is not canonical");
    }

    #[test]
    fn a_non_canonical_or_inconsistent_encoding_is_refused() {
        let nodes = keys(3);
        let m = Manifest::new(2, nodes.iter().copied(), [[1u8; 32], [2u8; 32]]).unwrap();
        let bytes = m.to_bytes();
        // Swap the two coordinator keys: not ascending.
        let mut swapped = bytes.clone();
        let len = swapped.len();
        swapped[len - 64..].rotate_left(32);
        assert!(Manifest::from_bytes(&swapped).is_err());
        // Node ids out of order: swap the first two node entries (2 + 32 bytes each).
        let mut unordered = bytes.clone();
        unordered[6..6 + 68].rotate_left(34);
        assert!(Manifest::from_bytes(&unordered).is_err());
        // t = 0 and t > n.
        for t in [0u16, 4] {
            let mut bad = bytes.clone();
            bad[2..4].copy_from_slice(&t.to_be_bytes());
            assert!(Manifest::from_bytes(&bad).is_err(), "t = {t}");
        }
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        let nodes = keys(3);
        let bad = |t, nodes: Vec<(NodeId, IdentityPublicKey)>, c: Vec<SpkiHash>| {
            matches!(Manifest::new(t, nodes, c), Err(Error::InvalidParameters(_)))
        };
        assert!(bad(0, nodes.clone(), vec![[1; 32]]), "t = 0");
        assert!(bad(4, nodes.clone(), vec![[1; 32]]), "t > n");
        assert!(bad(2, nodes.clone(), vec![]), "no coordinator");
        assert!(bad(2, nodes.clone(), vec![[1; 32], [1; 32]]), "a coordinator twice");
        assert!(bad(1, vec![], vec![[1; 32]]), "no nodes");
        let mut twice = nodes.clone();
        twice.push(nodes[0]);
        assert!(bad(2, twice, vec![[1; 32]]), "a node id twice");
        let shared = vec![nodes[0], (NodeId::new(9).unwrap(), nodes[0].1)];
        assert!(bad(2, shared, vec![[1; 32]]), "an identity key twice");
    }
}
