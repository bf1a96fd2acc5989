//! The front-ends' HTTPS server configuration: rustls (ring), TLS 1.2 and 1.3, ALPN `h2` and
//! `http/1.1`, and optional mutual TLS that ends the handshake unless the client certificate
//! chains to the configured CA *and* carries the configured subject name (as a DNS SAN or as the
//! subject common name: KMS presents `cks.kms.<region>.amazonaws.com`). Without `client_ca`
//! (hyok-dke: Office authenticates with a bearer token) no client certificate is asked for.

use crate::config::HttpsTls;
use anyhow::{Context, Result};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use std::sync::Arc;

/// The server configuration for `tls`.
///
/// # Errors
/// If the files cannot be read or do not fit together.
pub fn server_config(tls: &HttpsTls) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| format!("reading key {}", tls.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match (&tls.client_ca, &tls.client_subject) {
        (Some(ca), Some(subject)) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
                roots.add(cert.with_context(|| format!("reading {}", ca.display()))?)?;
            }
            let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(Arc::new(SubjectVerifier { inner, subject: subject.clone() }))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).context("the HTTPS certificate and key do not fit")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA check of rustls's WebPKI verifier, then the subject name.
#[derive(Debug)]
struct SubjectVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    subject: String,
}

impl ClientCertVerifier for SubjectVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if carries_subject(end_entity, &self.subject) {
            Ok(verified)
        } else {
            tracing::warn!(expected = %self.subject, "refused a client certificate with another subject name");
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether the certificate names `subject` as a DNS SAN or as a subject common name.
pub fn carries_subject(cert: &CertificateDer<'_>, subject: &str) -> bool {
    let by_san = match (webpki::EndEntityCert::try_from(cert), ServerName::try_from(subject.to_owned())) {
        (Ok(ee), Ok(name)) => ee.verify_is_valid_for_subject_name(&name).is_ok(),
        _ => false,
    };
    by_san || common_names(cert.as_ref()).iter().any(|cn| cn.eq_ignore_ascii_case(subject))
}

/// One DER TLV: (tag, contents, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject common names of a DER certificate (empty if it cannot be read).
fn common_names(der: &[u8]) -> Vec<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
    let walk = || -> Option<Vec<String>> {
        let (SEQUENCE, cert, _) = tlv(der)? else { return None };
        let (SEQUENCE, tbs, _) = tlv(cert)? else { return None };
        let mut rest = tbs;
        let (tag, _, after) = tlv(rest)?;
        if tag == 0xa0 {
            rest = after; // [0] version
        }
        // serialNumber, signature, issuer, validity, then subject.
        for _ in 0..4 {
            rest = tlv(rest)?.2;
        }
        let (SEQUENCE, mut rdns, _) = tlv(rest)? else { return None };
        let mut names = Vec::new();
        while !rdns.is_empty() {
            let (SET, mut set, next) = tlv(rdns)? else { return None };
            rdns = next;
            while !set.is_empty() {
                let (SEQUENCE, attr, next) = tlv(set)? else { return None };
                set = next;
                let (0x06, oid, value) = tlv(attr)? else { return None };
                if oid == OID_CN {
                    let (_, text, _) = tlv(value)?;
                    if let Ok(text) = std::str::from_utf8(text) {
                        names.push(text.to_owned());
                    }
                }
            }
        }
        Some(names)
    };
    walk().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: Vec<String>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "Example");
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn subject_is_found_as_common_name_or_san() {
        let kms = "cks.kms.us-east-1.amazonaws.com";
        let by_cn = cert(kms, vec![]);
        assert_eq!(common_names(by_cn.as_ref()), vec![kms.to_owned()]);
        assert!(carries_subject(&by_cn, kms));
        assert!(!carries_subject(&by_cn, "cks.kms.eu-west-1.amazonaws.com"));
        let by_san = cert("something else", vec![kms.to_owned()]);
        assert!(carries_subject(&by_san, kms));
        assert!(!carries_subject(&by_san, "evil.example.com"));
    }

    #[test]
    fn hostile_der_never_panics() {
        let good = cert("x", vec![]);
        for cut in 0..good.as_ref().len() {
            let _ = common_names(&good.as_ref()[..cut]);
        }
        for bytes in [&[][..], &[0x30], &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], &[0x30, 0x85, 1, 1, 1, 1, 1]] {
            assert!(common_names(bytes).is_empty());
        }
    }
}
