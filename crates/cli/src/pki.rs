//! `hyokctl pki`: the cluster CA and the certificates of every party.
//!
//! Layout of a PKI directory:
//!
//! ```text
//! ca.pem  ca-key.pem                 the cluster CA (keep ca-key.pem offline in production)
//! node-1.pem  node-1-key.pem …       one per node: roles node + node-<id>, server names
//! coordinator.pem  coordinator-key.pem
//! frontend.pem  frontend-key.pem     for hyok-xks, hyok-dke, applications
//! admin.pem  admin-key.pem           for hyokctl
//! ```
//!
//! Keys are ECDSA P-256, written with mode 0600. Every leaf may serve and be a client
//! (extended key usages serverAuth and clientAuth) and is valid for `localhost` and
//! `127.0.0.1` plus any extra names given, so a dev cluster on loopback needs nothing else.

use anyhow::{Context, Result, bail};
use hyok_proto::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

/// Paths of one party's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (mode 0600).
    pub key: PathBuf,
}

/// A PKI directory.
#[derive(Clone, Debug)]
pub struct Pki {
    dir: PathBuf,
}

fn ca_params() -> Result<CertificateParams> {
    // The issuer's distinguished name must be byte-identical every time it is rebuilt, so the CA
    // is always described by this one function.
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "hyok");
    dn.push(DnType::CommonName, "hyok cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

impl Pki {
    /// The PKI in `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pki { dir: dir.into() }
    }

    /// The CA certificate's path.
    pub fn ca(&self) -> PathBuf {
        self.dir.join(CA_CERT)
    }

    /// The certificate and key paths of `role`.
    pub fn identity(&self, role: Role) -> Identity {
        let stem = role.file_stem();
        Identity { cert: self.dir.join(format!("{stem}.pem")), key: self.dir.join(format!("{stem}-key.pem")) }
    }

    /// Whether a CA exists here.
    pub fn exists(&self) -> bool {
        self.ca().exists()
    }

    /// Creates the CA. Refuses to overwrite an existing one.
    pub fn init_ca(&self) -> Result<()> {
        if self.exists() {
            bail!("a CA already exists in {}", self.dir.display());
        }
        fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write_private(&self.dir.join(CA_KEY), &key.serialize_pem())?;
        fs::write(self.ca(), cert.pem())?;
        Ok(())
    }

    /// Issues a certificate for `role`, valid for `localhost`, `127.0.0.1` and `extra_names`
    /// (DNS names or IP addresses). Refuses to overwrite an existing one.
    pub fn issue(&self, role: Role, extra_names: &[String]) -> Result<Identity> {
        let identity = self.identity(role);
        if identity.cert.exists() || identity.key.exists() {
            bail!("a certificate for {role} already exists in {}", self.dir.display());
        }
        let ca_key = KeyPair::from_pem(&fs::read_to_string(self.dir.join(CA_KEY)).context("reading the CA key")?)?;
        let issuer = Issuer::new(ca_params()?, ca_key);

        let mut params = CertificateParams::new(role.dns_names())?;
        params.distinguished_name.push(DnType::OrganizationName, "hyok");
        params.distinguished_name.push(DnType::CommonName, role.to_string());
        params.subject_alt_names.push(SanType::DnsName("localhost".try_into()?));
        let mut names: Vec<String> = vec!["127.0.0.1".into()];
        names.extend(extra_names.iter().cloned());
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params.subject_alt_names.push(SanType::DnsName(name.as_str().try_into()?)),
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&identity.key, &key.serialize_pem())?;
        fs::write(&identity.cert, cert.pem())?;
        Ok(identity)
    }

    /// `hyokctl pki init`: a CA and certificates for `nodes`, the coordinator, a front-end and an
    /// admin. Refuses to touch an existing PKI.
    pub fn init(&self, nodes: &[u16], extra_names: &[String]) -> Result<()> {
        self.init_ca()?;
        for id in nodes {
            self.issue(Role::Node(*id), extra_names)?;
        }
        for role in [Role::Coordinator, Role::Frontend, Role::Admin] {
            self.issue(role, extra_names)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};
    use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

    fn der(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn valid_for(cert: &CertificateDer<'_>, name: &str) -> bool {
        let ee = EndEntityCert::try_from(cert).unwrap();
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap()).is_ok()
    }

    #[test]
    fn init_issues_certificates_that_chain_to_the_ca_and_carry_their_roles() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.init(&[1, 2], &["hyok-node-1".into()]).unwrap();
        let ca = der(&pki.ca());
        let anchors = [anchor_from_trusted_cert(&ca).unwrap()];
        for role in [Role::Node(1), Role::Node(2), Role::Coordinator, Role::Frontend, Role::Admin] {
            let cert = der(&pki.identity(role).cert);
            let ee = EndEntityCert::try_from(&cert).unwrap();
            ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &[],
                UnixTime::now(),
                KeyUsage::client_auth(),
                None,
                None,
            )
            .unwrap();
            assert!(valid_for(&cert, &role.proof_name()), "{role}");
            assert!(valid_for(&cert, "localhost"));
            assert!(valid_for(&cert, "hyok-node-1"));
        }
        let node1 = der(&pki.identity(Role::Node(1)).cert);
        assert!(valid_for(&node1, "node.role.hyok"));
        assert!(!valid_for(&node1, "node-2.role.hyok"));
        assert!(!valid_for(&node1, "coordinator.role.hyok"));
        assert!(!valid_for(&der(&pki.identity(Role::Admin).cert), "node.role.hyok"));
    }

    #[test]
    fn servers_read_roles_from_these_certificates() {
        use hyok_proto::tls::has_role;
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.init(&[1, 2], &[]).unwrap();
        let cert = |role| der(&pki.identity(role).cert);
        assert!(has_role(&cert(Role::Node(1)), Role::Node(1)));
        assert!(!has_role(&cert(Role::Node(1)), Role::Node(2)));
        assert!(!has_role(&cert(Role::Node(1)), Role::Coordinator));
        assert!(has_role(&cert(Role::Coordinator), Role::Coordinator));
        assert!(!has_role(&cert(Role::Frontend), Role::Admin));
        assert!(has_role(&cert(Role::Admin), Role::Admin));
        assert!(!has_role(&CertificateDer::from(vec![0u8; 10]), Role::Admin));
    }

    #[test]
    fn keys_are_private_and_nothing_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.init(&[1], &[]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(pki.identity(Role::Node(1)).key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(dir.path().join(CA_KEY)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = fs::read(pki.ca()).unwrap();
        assert!(pki.init(&[1], &[]).is_err());
        assert!(pki.issue(Role::Node(1), &[]).is_err());
        assert_eq!(fs::read(pki.ca()).unwrap(), before);
        // A new party can still be issued later from the stored CA.
        pki.issue(Role::Node(2), &[]).unwrap();
    }
}
