//! Mutual TLS inside the cluster: every hop presents a certificate from the cluster CA, and
//! servers decide what a caller may do from the roles its certificate carries (see [`Role`]).

use crate::roles::Role;
use rustls_pki_types::{CertificateDer, ServerName};
use std::path::{Path, PathBuf};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Failure to load TLS material.
#[derive(Debug, thiserror::Error)]
#[error("reading {path}: {source}")]
pub struct TlsError {
    path: PathBuf,
    source: std::io::Error,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError { path: path.to_owned(), source })
}

/// The three PEM files of one party: the cluster CA, its certificate and its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// This party's certificate.
    pub cert: PathBuf,
    /// This party's private key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// Server side: present our certificate, require a client certificate from the cluster CA.
    pub fn server_config(&self) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .client_ca_root(Certificate::from_pem(read(&self.ca)?)))
    }

    /// Client side: trust only the cluster CA, present our certificate, and expect the server
    /// to be valid for `server_name` (e.g. `localhost`, or a node's DNS name).
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(server_name))
    }
}

/// Whether `cert` (already verified against the cluster CA by the TLS handshake) carries `role`.
pub fn has_role(cert: &CertificateDer<'_>, role: Role) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(role.proof_name()) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Whether the caller of `request` holds one of `allowed` (the peer's leaf certificate decides).
/// A request that arrived without TLS holds no role.
pub fn caller_has_any_role<T>(request: &tonic::Request<T>, allowed: &[Role]) -> Option<Role> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    allowed.iter().copied().find(|role| has_role(leaf, *role))
}

/// [`caller_has_any_role`] as a gRPC check: `PERMISSION_DENIED` naming the roles allowed.
pub fn require_role<T>(request: &tonic::Request<T>, allowed: &[Role]) -> Result<Role, tonic::Status> {
    caller_has_any_role(request, allowed).ok_or_else(|| {
        let names: Vec<String> = allowed.iter().map(Role::to_string).collect();
        tonic::Status::permission_denied(format!("caller lacks a required role ({})", names.join(" or ")))
    })
}

/// SHA-256 of the DER SubjectPublicKeyInfo of `cert` (what a cluster manifest pins for a
/// coordinator), or `None` if it does not parse as an X.509 certificate. A certificate re-issued
/// for the same key hashes the same; one freshly minted for another key does not.
pub fn spki_sha256(cert: &CertificateDer<'_>) -> Option<[u8; 32]> {
    use sha2::Digest;
    let ee = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(sha2::Sha256::digest(ee.subject_public_key_info().as_ref()).into())
}

/// [`spki_sha256`] of the first certificate in the PEM file `path`.
pub fn spki_sha256_of_pem_file(path: &Path) -> Result<[u8; 32], CertError> {
    use rustls_pki_types::pem::PemObject;
    let bad = |why: String| CertError { path: path.to_owned(), why };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let cert = CertificateDer::from_pem_slice(&pem).map_err(|e| bad(format!("no PEM certificate: {e}")))?;
    spki_sha256(&cert).ok_or_else(|| bad("not an X.509 certificate".into()))
}

/// A certificate file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
#[error("certificate {path}: {why}")]
pub struct CertError {
    path: PathBuf,
    why: String,
}

/// [`spki_sha256`] of the caller's leaf certificate (`None` without TLS or a parsable one).
pub fn caller_spki_sha256<T>(request: &tonic::Request<T>) -> Option<[u8; 32]> {
    let certs = request.peer_certs()?;
    spki_sha256(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_reported_with_their_path() {
        let files = TlsFiles { ca: "ca.pem".into(), cert: "/nonexistent/cert.pem".into(), key: "k".into() };
        let err = files.server_config().unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
    }
}
