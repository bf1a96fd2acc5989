//! The one error type of this crate.

use crate::keys::NodeId;

/// Everything that can go wrong in threshold operations.
///
/// Variants that blame a party carry its [`NodeId`], so that a coordinator can name the culprit
/// in its logs and metrics. No variant ever carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Threshold or participant set is unusable (e.g. `t = 0`, `t > n`, a duplicate id).
    #[error("invalid parameters: {0}")]
    InvalidParameters(&'static str),
    /// A node id of zero, or one outside the key's participant set.
    #[error("unknown node {node}")]
    UnknownNode {
        /// The node id that is not part of the key.
        node: u16,
    },
    /// The same node answered twice in one set of partials.
    #[error("node {node} appears more than once")]
    DuplicateNode {
        /// The repeated node.
        node: NodeId,
    },
    /// Fewer than `t` usable partials.
    #[error("not enough valid partials: need {needed}, have {got}")]
    NotEnoughPartials {
        /// The threshold `t`.
        needed: usize,
        /// How many usable partials there were.
        got: usize,
    },
    /// A node's partial result failed its DLEQ proof.
    #[error("partial from node {node} failed verification")]
    InvalidProof {
        /// The node whose partial is wrong.
        node: NodeId,
    },
    /// Partials were all well-formed but still did not open the ciphertext; the listed nodes
    /// sent partials that failed their proofs (empty when every proof checked out, i.e. the
    /// ciphertext itself is wrong).
    #[error("decryption failed")]
    DecryptionFailed {
        /// Nodes whose partials failed verification.
        culprits: Vec<NodeId>,
    },
    /// A wrapped key whose proof of knowledge does not verify: the node refuses to act on it.
    #[error("wrapped key proof is invalid")]
    InvalidWrapProof,
    /// Bytes that do not decode: wrong length, non-canonical point or scalar, trailing data.
    #[error("malformed {what}")]
    Malformed {
        /// Which object failed to decode.
        what: &'static str,
    },
    /// A known object with a wire-format version this build does not speak.
    #[error("unsupported {what} format version {version}")]
    UnsupportedVersion {
        /// Which object.
        what: &'static str,
        /// The version byte that was found.
        version: u8,
    },
    /// A DKG message whose signature does not verify under the sender's identity key: either
    /// the sender or the relay tampered with it. The run must be aborted.
    #[error("DKG message claiming to be from node {node} has an invalid signature")]
    InvalidSignature {
        /// The node the message claims to come from.
        node: NodeId,
    },
    /// A dealer's DKG ephemeral `E_j` without a valid proof of knowledge of `log_G E_j` bound to
    /// this run: a replayed or foreign ephemeral (another run's, a sealed RSA share's). It is
    /// refused before any secret touches it, so no complaint is filed. The run must be aborted.
    #[error("DKG dealer {node} sent an ephemeral key without a valid proof of knowledge for this run")]
    InvalidEphemeralProof {
        /// The dealer whose package carries it.
        node: NodeId,
    },
    /// A node key bundle that names another node or identity key, or whose signature does not
    /// verify under the node's identity key.
    #[error("key bundle of node {node} does not verify under its identity key")]
    InvalidKeyBundle {
        /// The node the bundle was presented for.
        node: NodeId,
    },
    /// An audit chain head whose signature does not verify under the node's audit key.
    #[error("audit head of node {node} is not signed by its audit key")]
    InvalidAuditHead {
        /// The node whose audit head it claims to be.
        node: NodeId,
    },
    /// A caller's request signature that does not verify under the key it names.
    #[error("the caller's request signature does not verify")]
    InvalidCallerSignature,
    /// A DKG message missing from a round, or one from a node that is not a participant.
    #[error("DKG round is missing the message of node {node}")]
    MissingMessage {
        /// The node whose message is missing.
        node: NodeId,
    },
    /// A node saw different round 1 packages than this node did: a dealer or the relay showed
    /// different nodes different messages. The run must be aborted.
    #[error("DKG node {node} saw different round 1 messages")]
    InconsistentView {
        /// The node whose view differs.
        node: NodeId,
    },
    /// The DKG ended with fewer than `t` qualified dealers.
    #[error("DKG failed: only {qualified} qualified dealers, need {needed}; disqualified: {disqualified:?}")]
    NotEnoughQualifiedDealers {
        /// How many dealers qualified.
        qualified: usize,
        /// The threshold.
        needed: usize,
        /// The dealers that were disqualified.
        disqualified: Vec<NodeId>,
    },
    /// Threshold RSA: no `t` of the partials combined to a `y` with `y^e ≡ c (mod N)`.
    /// `culprits` names the nodes whose partials were malformed; it cannot name a well-formed
    /// but wrong partial when no consistent `t`-subset exists (e.g. exactly `t` were given):
    /// ask more nodes.
    #[error("threshold RSA partials did not combine to a valid decryption; malformed: {culprits:?}")]
    RsaCombineFailed {
        /// Nodes whose partials were malformed.
        culprits: Vec<NodeId>,
    },
    /// A sealed RSA share that does not open for this node, key name, version and package
    /// (or was tampered with). Deliberately one error for every cause.
    #[error("sealed RSA share rejected")]
    SealedShareRejected,
    /// OAEP padding did not decode. Deliberately one error for every cause, with no detail.
    #[error("decryption error")]
    OaepDecodingFailed,
    /// A public key package whose verification keys do not lie on one polynomial of degree
    /// `t − 1` through the group key.
    #[error("inconsistent public key package")]
    InconsistentPackage,
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// The parties this error blames, in the order it names them (empty when it blames none:
    /// bad parameters, a malformed object, or a ciphertext that fails although every partial
    /// checked out). An [`Error::UnknownNode`] of id 0 blames no one: 0 is no node.
    ///
    /// This is the one place that knows which variants carry a culprit, so callers never match
    /// on individual variants to find one (frost-core's `Error::culprit`).
    pub fn culprits(&self) -> Vec<NodeId> {
        match self {
            Error::UnknownNode { node } => NodeId::new(*node).into_iter().collect(),
            Error::DuplicateNode { node }
            | Error::InvalidProof { node }
            | Error::InvalidSignature { node }
            | Error::InvalidEphemeralProof { node }
            | Error::InvalidKeyBundle { node }
            | Error::InvalidAuditHead { node }
            | Error::MissingMessage { node }
            | Error::InconsistentView { node } => vec![*node],
            Error::DecryptionFailed { culprits } | Error::RsaCombineFailed { culprits } => culprits.clone(),
            Error::NotEnoughQualifiedDealers { disqualified, .. } => disqualified.clone(),
            Error::InvalidParameters(_)
            | Error::NotEnoughPartials { .. }
            | Error::InvalidWrapProof
            | Error::InvalidCallerSignature
            | Error::Malformed { .. }
            | Error::UnsupportedVersion { .. }
            | Error::SealedShareRejected
            | Error::OaepDecodingFailed
            | Error::InconsistentPackage => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    #[test]
    fn culprits_name_exactly_the_blamed_parties() {
        assert_eq!(Error::InvalidProof { node: node(3) }.culprits(), vec![node(3)]);
        assert_eq!(Error::UnknownNode { node: 9 }.culprits(), vec![node(9)]);
        assert_eq!(Error::UnknownNode { node: 0 }.culprits(), vec![]);
        assert_eq!(Error::DuplicateNode { node: node(2) }.culprits(), vec![node(2)]);
        assert_eq!(Error::InvalidEphemeralProof { node: node(2) }.culprits(), vec![node(2)]);
        assert_eq!(Error::InvalidKeyBundle { node: node(5) }.culprits(), vec![node(5)]);
        assert_eq!(Error::DecryptionFailed { culprits: vec![node(1), node(4)] }.culprits(), vec![node(1), node(4)]);
        assert_eq!(Error::RsaCombineFailed { culprits: vec![] }.culprits(), vec![]);
        let dealers = Error::NotEnoughQualifiedDealers { qualified: 1, needed: 3, disqualified: vec![node(5)] };
        assert_eq!(dealers.culprits(), vec![node(5)]);
        assert_eq!(Error::Malformed { what: "partial" }.culprits(), vec![]);
        assert_eq!(Error::OaepDecodingFailed.culprits(), vec![]);
    }
}
