//! The node's pinned cluster manifest: its JSON file form for operators, its installation (only
//! by this node's own operator: offline against the store, or through the operator socket), and
//! the checks that hold every DKG, RSA share and mutating caller to it.
//!
//! File form (`manifest.json`; keys are lowercase hex):
//!
//! ```text
//! { "format": "hyok-cluster-manifest/v1", "n": 5, "t": 3,
//!   "nodes": [ { "id": 1, "identity_public_key": "…64 hex…" }, … ],
//!   "coordinator_spki_sha256": [ "…64 hex…" ] }
//! ```
//!
//! What the node stores is the canonical encoding ([`Manifest`]'s `Wire`); its digest is
//! audited with every installation (`manifest:install`, the digest as the request id).

use crate::node::{Node, NodeError};
use hyok_proto::v1 as pb;
use hyok_threshold::manifest::SpkiHash;
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId, Wire};
use serde::{Deserialize, Serialize};

/// The `format` every manifest file carries.
pub const FORMAT: &str = "hyok-cluster-manifest/v1";

/// Why a DKG or an RSA store is refused on a node without a manifest.
pub const NO_MANIFEST: &str = "no cluster manifest installed: the node's operator must install one";

/// One node of a manifest file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestNode {
    /// The node id.
    pub id: u16,
    /// Its identity public key, 64 hex digits.
    pub identity_public_key: String,
}

/// A manifest as an operator reads and writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Always [`FORMAT`].
    pub format: String,
    /// The node count (must equal the number of `nodes`).
    pub n: u16,
    /// The threshold.
    pub t: u16,
    /// The epoch: 0 for a cluster's first manifest, one more for each membership change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Every node.
    pub nodes: Vec<ManifestNode>,
    /// SHA-256 of each accepted coordinator certificate's SubjectPublicKeyInfo, 64 hex digits.
    pub coordinator_spki_sha256: Vec<String>,
}

fn is_zero(epoch: &u64) -> bool {
    *epoch == 0
}

fn hex32(what: &str, s: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(s.trim()).map_err(|_| format!("{what} is not hex"))?;
    bytes.try_into().map_err(|_| format!("{what} must be 32 bytes (64 hex digits)"))
}

impl ManifestFile {
    /// The checked manifest this file describes.
    pub fn to_manifest(&self) -> Result<Manifest, String> {
        if self.format != FORMAT {
            return Err(format!("format must be {FORMAT:?}, not {:?}", self.format));
        }
        if usize::from(self.n) != self.nodes.len() {
            return Err(format!("n = {} but {} nodes are listed", self.n, self.nodes.len()));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let id = NodeId::new(node.id).map_err(|_| "node id 0 is not a node".to_owned())?;
            let key = hex32(&format!("node {id}'s identity_public_key"), &node.identity_public_key)?;
            let key = IdentityPublicKey::from_slice(&key)
                .map_err(|_| format!("node {id}'s identity_public_key is not a valid key"))?;
            nodes.push((id, key));
        }
        let coordinators = self
            .coordinator_spki_sha256
            .iter()
            .map(|c| hex32("a coordinator_spki_sha256 entry", c))
            .collect::<Result<Vec<SpkiHash>, _>>()?;
        Ok(Manifest::new(self.t, nodes, coordinators).map_err(|e| e.to_string())?.with_epoch(self.epoch))
    }

    /// The file form of `m` (nodes by id, coordinator keys sorted).
    pub fn from_manifest(m: &Manifest) -> Self {
        ManifestFile {
            format: FORMAT.to_owned(),
            n: m.n(),
            t: m.threshold(),
            epoch: m.epoch(),
            nodes: m
                .nodes()
                .iter()
                .map(|(id, key)| ManifestNode { id: id.get(), identity_public_key: hex::encode(key.as_bytes()) })
                .collect(),
            coordinator_spki_sha256: m.coordinators().iter().map(hex::encode).collect(),
        }
    }
}

/// A membership change as operators read and write it: the manifest in force and the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalFile {
    /// The manifest in force.
    pub from: ManifestFile,
    /// The manifest that replaces it (one epoch later).
    pub to: ManifestFile,
}

impl ProposalFile {
    /// The checked proposal this file describes.
    pub fn to_proposal(&self) -> Result<hyok_threshold::epoch::Proposal, String> {
        hyok_threshold::epoch::Proposal::new(self.from.to_manifest()?, self.to.to_manifest()?)
            .map_err(|e| e.to_string())
    }

    /// The file form of `p`.
    pub fn from_proposal(p: &hyok_threshold::epoch::Proposal) -> Self {
        ProposalFile { from: ManifestFile::from_manifest(p.from()), to: ManifestFile::from_manifest(p.to()) }
    }
}

/// Parses a manifest file's text (JSON).
pub fn parse(text: &str) -> Result<Manifest, String> {
    let file: ManifestFile = serde_json::from_str(text).map_err(|e| format!("malformed manifest file: {e}"))?;
    file.to_manifest()
}

/// The file text of `m`: pretty JSON and a newline.
pub fn to_json(m: &Manifest) -> String {
    let mut text = serde_json::to_string_pretty(&ManifestFile::from_manifest(m)).unwrap_or_default();
    text.push('\n');
    text
}

/// Reads and parses a manifest file.
pub fn read(path: &std::path::Path) -> anyhow::Result<Manifest> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading the manifest {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("the manifest {}: {e}", path.display()))
}

/// A manifest's digest, hex (as audited and shown).
pub fn digest_hex(m: &Manifest) -> String {
    hex::encode(m.digest())
}

/// Why `m` cannot be this node's manifest (it must list `id` with this node's identity key).
pub(crate) fn check_names(m: &Manifest, id: NodeId, identity: &IdentityPublicKey) -> Result<(), NodeError> {
    match (m.identity(id), m.node_with_identity(identity)) {
        (Some(key), _) if key == identity => Ok(()),
        (_, Some(other)) => Err(NodeError::Manifest(format!(
            "the manifest lists this node's identity key as node {other}, but this node is node {id}"
        ))),
        _ => {
            Err(NodeError::Manifest(format!("the manifest does not list this node (node {id}) with its identity key")))
        }
    }
}

/// Whether the DKG round 1 request `req` agrees with `m`: threshold `t`; participants (a
/// reshare's receivers) nodes of the manifest, at least `t` of them, each with the identity key
/// the manifest pins; and a reshare's dealers likewise. (The bundles are then verified under
/// those keys by the caller.) A key may be made among the nodes that are up, at least `t`: the
/// others get their shares by a reshare when they are back.
pub fn check_dkg(m: &Manifest, req: &pb::DkgRound1Request) -> Result<(), String> {
    if req.threshold != u32::from(m.threshold()) {
        return Err(format!("threshold {} differs from the cluster manifest's t = {}", req.threshold, m.threshold()));
    }
    let receivers = check_members(m, &req.participants, "participant")?;
    if receivers < usize::from(m.threshold()) {
        return Err(format!("{receivers} participants are fewer than the cluster manifest's t = {}", m.threshold()));
    }
    if let Some(reshare) = &req.reshare {
        check_members(m, &reshare.dealers, "dealer")?;
        if reshare.rsa && receivers != m.nodes().len() {
            return Err(format!(
                "an RSA reshare's receivers are every node of the cluster manifest ({receivers} of {} given)",
                m.nodes().len()
            ));
        }
    }
    Ok(())
}

/// Every one of `list` is a distinct node of `m` with the identity key `m` pins; their count.
pub(crate) fn check_members(m: &Manifest, list: &[pb::Participant], what: &str) -> Result<usize, String> {
    let mut seen = std::collections::BTreeSet::new();
    for p in list {
        let id = u16::try_from(p.node_id).ok().and_then(|i| NodeId::new(i).ok());
        let Some(pinned) = id.and_then(|id| m.identity(id)) else {
            return Err(format!("{what} {} is not a node of the cluster manifest", p.node_id));
        };
        if p.identity_public_key.as_slice() != pinned.as_bytes() {
            return Err(format!("{what} {}'s identity key is not the one the cluster manifest pins", p.node_id));
        }
        if !seen.insert(p.node_id) {
            return Err(format!("{what} {} is listed twice", p.node_id));
        }
    }
    Ok(seen.len())
}

/// Whether an RSA package of `t`-of-`n` for node `id` agrees with `m`.
pub fn check_rsa(m: &Manifest, t: u16, n: u16, id: NodeId) -> Result<(), String> {
    if (t, n) != (m.threshold(), m.n()) {
        return Err(format!("the RSA package is {t}-of-{n}, the cluster manifest {}-of-{}", m.threshold(), m.n()));
    }
    if m.identity(id).is_none() || id.get() > n {
        return Err(format!("node {id} has no share in a {t}-of-{n} package under the cluster manifest"));
    }
    Ok(())
}

impl Node {
    /// This node's manifest, if one is installed.
    pub fn manifest(&self) -> Option<Manifest> {
        self.manifest_slot().read().ok().and_then(|m| m.clone())
    }

    /// Installs (or replaces) this node's manifest: it must list this node with its identity
    /// key. Stored (flushed), then audited as `manifest:install` with the digest as request id,
    /// before it takes effect. Only the node's own operator reaches this (the operator socket,
    /// or `hyok-node manifest install` against a stopped node's store); no gRPC call does.
    pub fn install_manifest(&self, m: &Manifest, caller: &str) -> Result<[u8; 32], NodeError> {
        check_names(m, self.id(), &self.secrets().identity().public_key())?;
        self.store().put_manifest(&m.to_bytes())?;
        let digest = m.digest();
        self.audit(&[self.event("", 0, "manifest:install", &hex::encode(digest), caller)])?;
        let mut slot = self.manifest_slot().write().map_err(|_| NodeError::Internal)?;
        *slot = Some(m.clone());
        tracing::warn!(digest = hex::encode(digest), caller, "cluster manifest installed by this node's operator");
        Ok(digest)
    }

    /// Whether a caller that the role check admitted (`coordinator` says whether with the
    /// coordinator role), whose certificate key hashes to `spki`, may make this node compute,
    /// store or change anything: with a manifest, only the coordinator role with a key the
    /// manifest pins — the CA key or the admin certificate is not enough; without one, any
    /// admitted caller (a node that predates manifests keeps serving its keys).
    pub fn caller_pinned(&self, coordinator: bool, spki: Option<&SpkiHash>) -> bool {
        // On every mutating call (EvaluateBatch among them): read in place, no copy of the manifest.
        let Ok(slot) = self.manifest_slot().read() else { return false };
        match slot.as_ref() {
            // A node joining the cluster: the coordinators of the change its operator accepted.
            None => match self.pending_change() {
                Ok(Some((p, _))) => coordinator && spki.is_some_and(|s| p.to().pins_coordinator(s)),
                Ok(None) => true,
                Err(_) => false,
            },
            Some(m) => coordinator && spki.is_some_and(|s| m.pins_coordinator(s)),
        }
    }

    /// Audits a call refused because its caller is not pinned: `refused:RPC:unpinned`.
    pub fn refuse_unpinned(&self, rpc: &str, caller: &str) -> Result<(), NodeError> {
        self.audit(&[self.event("", 0, &format!("refused:{rpc}:unpinned"), "", caller)])
    }
}
