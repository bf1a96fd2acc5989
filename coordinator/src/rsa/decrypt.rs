//! `RsaDecrypt`: the ciphertext is checked against the trusted key, then t partials
//! `c^(2Δ·s_i)` are gathered ([`crate::fanout::gather`]: `t + extra_nodes` nodes at once, the
//! next on every miss, every reachable one after `hedge`, all within the deadline) and
//! combined. If `y^e ≢ c` with exactly t partials, one more is asked for so that the combiner
//! can find a consistent t-subset and name the node(s) outside it.

use crate::error::CoordError;
use crate::fanout::{self, Reply, Step, gather};
use crate::vault::Vault;
use hyok_proto::v1 as pb;
use hyok_threshold::Error as ThresholdError;
use hyok_threshold::rsa::{RsaPartial, RsaPublicPackage, combine};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Checks a ciphertext against the key before any node is asked: exactly `k` bytes encoding
/// `0 < c < N` (equal-length big-endian byte strings compare like the integers).
pub fn check_ciphertext(package: &RsaPublicPackage, ciphertext: &[u8]) -> Result<(), CoordError> {
    let key = package.public_key();
    let k = key.size();
    if ciphertext.len() != k {
        return Err(CoordError::Invalid(format!("ciphertext must be {k} bytes (the modulus length)")));
    }
    if ciphertext.iter().all(|b| *b == 0) || ciphertext >= key.modulus_bytes().as_slice() {
        return Err(CoordError::Invalid("ciphertext is not below the modulus".into()));
    }
    Ok(())
}

/// One combine attempt over `partials` (at least t): the decision the gather acts on.
pub fn attempt(package: &RsaPublicPackage, ciphertext: &[u8], partials: &[RsaPartial]) -> Step<Zeroizing<Vec<u8>>> {
    match combine::decrypt(package, ciphertext, partials) {
        Ok(opened) => Step::Done(opened.value, opened.culprits),
        // y^e ≡ c held: the ciphertext itself is not valid OAEP under this key.
        Err(ThresholdError::OaepDecodingFailed) => Step::Fail(CoordError::DataLoss),
        // No t-subset combined: drop the malformed ones and try with one more than remain.
        Err(e @ ThresholdError::RsaCombineFailed { .. }) => {
            let culprits = e.culprits();
            let kept = partials.iter().filter(|p| !culprits.contains(&p.node())).count();
            Step::Retry { culprits, need: kept + 1 }
        }
        Err(ThresholdError::Malformed { .. }) => {
            Step::Fail(CoordError::Invalid("ciphertext is not a valid RSA ciphertext for this key".into()))
        }
        Err(e) if !e.culprits().is_empty() => Step::Retry { culprits: e.culprits(), need: partials.len() },
        Err(e) => Step::Fail(CoordError::Internal(e.to_string())),
    }
}

impl Vault {
    /// `RsaDecrypt`: t partials (more if one is wrong), combined and checked, OAEP removed.
    pub async fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        evidence: Option<&pb::Evidence>,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, CoordError> {
        let evidence = crate::vault::required(evidence)?;
        if version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        self.rsa_metadata
            .using(
                &self.pool,
                name,
                Some(version),
                deadline,
                move |view: std::sync::Arc<crate::metadata::RsaKeyView>| async move {
                    let trusted = view.version(version)?;
                    check_ciphertext(&trusted.package, ciphertext)?;
                    let request = pb::RsaPartialRequest {
                        name: name.to_owned(),
                        version,
                        ciphertext: ciphertext.to_vec(),
                        request_id: request_id.to_owned(),
                        evidence: Some(evidence.clone()),
                        generation: Some(trusted.generation),
                    };
                    gather(
                        &self.pool,
                        self.spread(deadline),
                        (name, version, usize::from(trusted.package.threshold())),
                        |node, _| {
                            let mut client = node.client();
                            let message = request.clone();
                            async move {
                                match client.rsa_partial(fanout::request(message, deadline)).await {
                                    Ok(response) => Reply::Partial(response.into_inner().partial),
                                    Err(status) => Reply::Failed(fanout::past_deadline(status, deadline)),
                                }
                            }
                        },
                        |partials: &[RsaPartial]| attempt(&trusted.package, ciphertext, partials),
                    )
                    .await
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_threshold::NodeId;
    use hyok_threshold::rsa::deal::{PrivateKey, deal};
    use hyok_threshold::rsa::{RsaKeyShare, oaep, partial};
    use std::sync::OnceLock;

    const PEM: &str = include_str!("../../../crates/threshold/tests/fixtures/rsa2048-pkcs8.pem");

    fn node(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    fn split() -> &'static (Vec<RsaKeyShare>, RsaPublicPackage) {
        static SPLIT: OnceLock<(Vec<RsaKeyShare>, RsaPublicPackage)> = OnceLock::new();
        SPLIT.get_or_init(|| deal(&PrivateKey::from_pem(PEM).unwrap(), 3, 5, &mut rand::rng()).unwrap())
    }

    #[test]
    fn ciphertexts_must_be_k_bytes_and_between_zero_and_n() {
        let (_, package) = split();
        let key = package.public_key();
        let ok = oaep::encrypt(key, b"m", &mut rand::rng()).unwrap();
        assert!(check_ciphertext(package, &ok).is_ok());
        for bad in [vec![], vec![1; key.size() - 1], vec![0; key.size()], key.modulus_bytes(), vec![0xff; key.size()]] {
            assert!(matches!(check_ciphertext(package, &bad), Err(CoordError::Invalid(_))), "{}", bad.len());
        }
    }

    #[test]
    fn a_wrong_partial_among_exactly_t_asks_for_one_more_and_is_then_named() {
        let (shares, package) = split();
        let c = oaep::encrypt(package.public_key(), b"dke key", &mut rand::rng()).unwrap();
        let mut partials: Vec<RsaPartial> = shares.iter().map(|s| partial::evaluate(s, package, &c).unwrap()).collect();
        // Node 2 lies with a well-formed value.
        let mut lie = partials[1].value().to_vec();
        lie[10] ^= 1;
        partials[1] = RsaPartial::new(node(2), lie);
        match attempt(package, &c, &partials[..3]) {
            Step::Retry { culprits, need } => assert_eq!((culprits, need), (vec![], 4)),
            other => panic!("{other:?}"),
        }
        match attempt(package, &c, &partials[..4]) {
            Step::Done(m, culprits) => assert_eq!((&m[..], culprits), (&b"dke key"[..], vec![node(2)])),
            other => panic!("{other:?}"),
        }
        // A malformed partial is named at once.
        let mut malformed = partials[..3].to_vec();
        malformed[1] = RsaPartial::new(node(2), vec![1, 2, 3]);
        assert!(
            matches!(attempt(package, &c, &malformed), Step::Retry { culprits, need: 3 } if culprits == vec![node(2)])
        );
        // A valid combination of a ciphertext that is not OAEP is DATA_LOSS.
        let mut not_oaep = vec![0u8; package.public_key().size()];
        not_oaep[5] = 7;
        let honest: Vec<RsaPartial> =
            shares[..3].iter().map(|s| partial::evaluate(s, package, &not_oaep).unwrap()).collect();
        assert!(matches!(attempt(package, &not_oaep, &honest), Step::Fail(CoordError::DataLoss)));
    }
}
