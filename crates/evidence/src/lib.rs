//! The requester's own evidence, verified by the front-ends and — what matters — by every node
//! itself: AWS SigV4 ([`sigv4`], [`credentials`], an XKS request as evidence in [`xks`]), DKE
//! bearer tokens ([`jwt`]), and gRPC callers' request signatures ([`caller`]). A node holds its
//! operator's [`policy::Policy`] and computes a partial only for a request the evidence covers;
//! the coordinator and the front-ends only carry it.
//!
//! Nothing here does I/O on a request's path or reads a clock: `now` comes in from the caller.

pub mod calendar;
pub mod caller;
pub mod credentials;
pub mod jwt;
pub mod policy;
pub mod sigv4;
pub mod xks;

use hyok_proto::v1 as pb;

/// The DPRF nonce an encryption's evidence gives (the same one every node derives): from an XKS
/// encrypt request's signature, or from a caller's signature over an encryption. `None` for
/// evidence of anything else. Unverified: the nodes check it.
pub fn encryption_nonce(evidence: &pb::Evidence) -> Option<[u8; 16]> {
    match evidence.kind.as_ref()? {
        pb::evidence::Kind::Xks(x) if xks::claimed_operation(x) == Some(xks::Operation::Encrypt) => {
            xks::claimed_signature(x).map(|s| xks::encryption_nonce(&s))
        }
        pb::evidence::Kind::Caller(c) if !c.content_digest.is_empty() => Some(caller::encryption_nonce(&c.signature)),
        _ => None,
    }
}
