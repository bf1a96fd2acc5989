//! What the node tests share: nodes whose operators installed a manifest and an evidence
//! policy, and the caller key that policy lists.
#![allow(dead_code, reason = "each test file uses part of it")]

use hyok_evidence::caller::Signer;
use hyok_evidence::policy::{Caller, FORMAT, PolicyFile};
use hyok_node::Node;
use hyok_threshold::NodeId;
use std::sync::OnceLock;

/// The caller key every test node's policy lets use every key.
pub fn operator() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer::generate(&mut rand::rng()))
}

/// The evidence policy every test node gets: [`operator`] may use every key.
pub fn policy() -> PolicyFile {
    PolicyFile {
        format: FORMAT.into(),
        callers: vec![Caller {
            name: "test-app".into(),
            public_key: hex::encode(operator().public_key().as_bytes()),
            keys: vec!["*".into()],
            rsa_import: true,
        }],
        ..PolicyFile::default()
    }
}

/// `n` freshly initialized nodes with the evidence policy but without a manifest.
pub fn bare_nodes(dir: &std::path::Path, n: u16) -> Vec<Node> {
    (1..=n)
        .map(|i| {
            let d = dir.join(format!("node-{i}"));
            hyok_node::server::init(&d).unwrap();
            let node = hyok_node::server::open(NodeId::new(i).unwrap(), &d).unwrap();
            node.install_policy(&policy(), "test-operator").unwrap();
            node
        })
        .collect()
}

/// `n` nodes whose operators installed one manifest (these nodes, t = 2) and the policy.
pub fn nodes(dir: &std::path::Path, n: u16) -> Vec<Node> {
    let nodes = bare_nodes(dir, n);
    let pinned = nodes.iter().map(|n| {
        let key = n.identity().unwrap().identity_public_key;
        (n.id(), hyok_threshold::IdentityPublicKey::from_slice(&key).unwrap())
    });
    let manifest = hyok_threshold::Manifest::new(2, pinned, [[7u8; 32]]).unwrap();
    for node in &nodes {
        node.install_manifest(&manifest, "test-operator").unwrap();
    }
    nodes
}
