//! Known-answer vectors: every wire and ciphertext format, pinned in `tests/vectors/v1.json`.
//!
//! The vectors are regenerated from a fixed seed and compared byte for byte, so any change to an
//! encoding, a hash domain or a KDF shows up as a failing test and a visible diff. After a
//! deliberate format change, rewrite them with `HYOK_UPDATE_VECTORS=1 cargo test -p
//! hyok-threshold --test vectors` and review the diff. The stored bytes are also decoded and used
//! independently of the generator (verify, decrypt, unwrap), so the file is checked, not just
//! echoed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{Cluster, RelayLog, honest, rng, run_dkg};
use curve25519_dalek::Scalar;
use hyok_threshold::aead::{self, Blob};
use hyok_threshold::dealer::{dangerous_deal, dangerous_output_point};
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::kem::{self, WrappedKey};
use hyok_threshold::{KeyShare, NodeId, PartialEvaluation, PublicKeyPackage, Wire};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Vectors {
    comment: String,
    threshold: u16,
    shares: BTreeMap<u16, String>,
    public_key_package: String,
    dprf_input: String,
    partials: BTreeMap<u16, String>,
    dprf_output: String,
    plaintext: String,
    aad: String,
    ciphertext: String,
    tag: String,
    blob: String,
    data_key: String,
    label: String,
    wrapped_key: String,
    unwrap_partials: BTreeMap<u16, String>,
    dkg_round1_packages: Vec<String>,
    dkg_round2_packages: Vec<String>,
    key_bundle_identity: String,
    key_bundle: String,
}

fn generate() -> Vectors {
    let mut r = rng(0x6879_6f6b);
    let ids: Vec<NodeId> = (1..=3).map(|i| NodeId::new(i).unwrap()).collect();
    let secret = Scalar::random(&mut r);
    let (shares, package) = dangerous_deal(&secret, 2, &ids, &mut r).unwrap();
    let input = DprfInput::new("vector-key", 7, *b"0123456789abcdef").unwrap();
    let partials: Vec<PartialEvaluation> = shares[..2].iter().map(|s| dprf::evaluate(s, &input, &mut r)).collect();
    let output = dprf::combine_unchecked(&package, &partials).unwrap();
    let plaintext = b"hyok known answer".to_vec();
    let aad = b"aad".to_vec();
    let mut ciphertext = plaintext.clone();
    let tag = aead::seal_detached(&output, &input, &aad, &mut ciphertext);
    let blob = Blob { version: 7, seed: *input.seed(), ciphertext: ciphertext.clone(), tag };
    let data_key = [0x42u8; 32];
    let label = b"vector-label".to_vec();
    let wrapped = kem::wrap(package.group_key(), &data_key, &label, &mut r).unwrap();
    let unwrap_partials: Vec<PartialEvaluation> = shares[1..]
        .iter()
        .map(|s| kem::partial_unwrap(s, package.group_key(), &wrapped, &label, &mut r).unwrap())
        .collect();
    let cluster = Cluster::new(2, 2, b"vector-session", &mut r);
    let mut log = RelayLog::default();
    let (outputs, _) = run_dkg(&cluster, &mut r, honest, &mut log);
    assert!(outputs.values().all(Result::is_ok));
    let bundle_node = NodeId::new(1).unwrap();
    let bundle_keys = &cluster.identities[&bundle_node];
    let bundle = bundle_keys.key_bundle(bundle_node, &mut r);

    Vectors {
        comment: "hyok-threshold wire format v1; regenerate only for a deliberate format change".into(),
        threshold: 2,
        shares: shares.iter().map(|s| (s.node().get(), hex::encode(&s.to_secret_bytes()[..]))).collect(),
        public_key_package: hex::encode(package.to_bytes()),
        dprf_input: hex::encode(input.to_bytes()),
        partials: partials.iter().map(|p| (p.node().get(), hex::encode(p.to_bytes()))).collect(),
        dprf_output: hex::encode(dangerous_output_point(&output).compress().as_bytes()),
        plaintext: hex::encode(&plaintext),
        aad: hex::encode(&aad),
        ciphertext: hex::encode(&ciphertext),
        tag: hex::encode(tag),
        blob: hex::encode(blob.to_bytes()),
        data_key: hex::encode(data_key),
        label: hex::encode(&label),
        wrapped_key: hex::encode(wrapped.to_bytes()),
        unwrap_partials: unwrap_partials.iter().map(|p| (p.node().get(), hex::encode(p.to_bytes()))).collect(),
        dkg_round1_packages: log.messages[..2].iter().map(hex::encode).collect(),
        dkg_round2_packages: log.messages[2..].iter().map(hex::encode).collect(),
        key_bundle_identity: hex::encode(bundle_keys.identity().public_key().as_bytes()),
        key_bundle: hex::encode(bundle.to_bytes()),
    }
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/v1.json");

#[test]
fn generated_vectors_match_the_pinned_file() {
    let generated = generate();
    if std::env::var_os("HYOK_UPDATE_VECTORS").is_some() {
        std::fs::write(PATH, serde_json::to_string_pretty(&generated).unwrap() + "\n").unwrap();
    }
    let pinned: Vectors = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    assert_eq!(generated, pinned, "a wire or ciphertext format changed; see the module docs");
}

#[test]
fn pinned_vectors_decode_verify_and_decrypt() {
    let v: Vectors = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let h = |s: &str| hex::decode(s).unwrap();
    let package = PublicKeyPackage::from_bytes(&h(&v.public_key_package)).unwrap();
    assert_eq!(package.threshold(), v.threshold);
    for (id, share) in &v.shares {
        let share = KeyShare::from_secret_bytes(&h(share)).unwrap();
        assert_eq!(share.node().get(), *id);
        assert_eq!(package.verification_keys()[&share.node()], share.verification_key());
    }
    let input = DprfInput::from_bytes(&h(&v.dprf_input)).unwrap();
    let partials: Vec<PartialEvaluation> =
        v.partials.values().map(|p| PartialEvaluation::from_bytes(&h(p)).unwrap()).collect();
    for p in &partials {
        dprf::vartime_verify(&package, &input, p).unwrap();
    }
    let blob = Blob::from_bytes(&h(&v.blob)).unwrap();
    assert_eq!(hex::encode(&blob.ciphertext), v.ciphertext);
    assert_eq!(hex::encode(blob.tag), v.tag);
    let opened =
        aead::decrypt(&package, &blob.input("vector-key").unwrap(), &partials, &h(&v.aad), &blob.ciphertext, &blob.tag)
            .unwrap();
    assert_eq!(hex::encode(&opened.value[..]), v.plaintext);

    let wrapped = WrappedKey::from_bytes(&h(&v.wrapped_key)).unwrap();
    let unwrap_partials: Vec<PartialEvaluation> =
        v.unwrap_partials.values().map(|p| PartialEvaluation::from_bytes(&h(p)).unwrap()).collect();
    let data_key = kem::combine_unwrap(&package, &wrapped, &h(&v.label), &unwrap_partials).unwrap();
    assert_eq!(hex::encode(&data_key.value[..]), v.data_key);
    for p in v.dkg_round1_packages {
        hyok_threshold::dkg::round1::Package::from_bytes(&h(&p)).unwrap();
    }
    for p in v.dkg_round2_packages {
        hyok_threshold::dkg::round2::Package::from_bytes(&h(&p)).unwrap();
    }
    let identity = hyok_threshold::IdentityPublicKey::from_slice(&h(&v.key_bundle_identity)).unwrap();
    let bundle = hyok_threshold::SignedKeyBundle::from_bytes(&h(&v.key_bundle)).unwrap();
    bundle.verify(NodeId::new(1).unwrap(), &identity).unwrap();
}
