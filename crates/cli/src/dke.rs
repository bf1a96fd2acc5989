//! The dev cluster's hyok-dke: a development token issuer (an RSA key pair in the dev
//! directory whose public key hyok-dke trusts through a JWKS file) and bearer-token minting for
//! `hyokctl dev token --email …`.
//!
//! `hyokctl dev` calls [`ensure_dev_issuer`] and points hyok-dke's `jwt.jwks_file` at
//! [`DevIssuer::jwks`] and `jwt.issuers` at [`DEV_ISSUER`]; it records the issuer in dev.json's
//! `dke` section (`issuer`, `audience`, `issuer_key`, `issuer_kid`), which [`dev_token`] reads.

use anyhow::{Context, Result};
use hyok_frontend::ConfigFile as _;
use hyok_threshold::rsa::deal::PrivateKey;
use hyok_threshold::rsa::keygen;
use ring::signature::RsaKeyPair;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The dev token issuer's `iss`.
pub const DEV_ISSUER: &str = "https://hyok-dev-issuer.localhost/";
/// The `kid` of the dev issuer's key.
pub const DEV_ISSUER_KID: &str = "hyok-dev-issuer-1";
/// The issuer's private key, PKCS#8 PEM, in the dev directory.
pub const ISSUER_KEY_FILE: &str = "dke-issuer-key.pem";
/// The JWKS hyok-dke reads, in the dev directory.
pub const JWKS_FILE: &str = "dke-jwks.json";
/// How long a minted token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The dev hyok-dke's DKE key name.
pub const DEV_KEY_NAME: &str = "dev";
/// The hyok RSA key behind it (`hyokctl rsa create --name dke-dev`).
pub const DEV_RSA_KEY: &str = "dke-dev";
/// The user the dev key authorizes.
pub const DEV_EMAIL: &str = "alice@example.com";
/// The role the dev key authorizes.
pub const DEV_ROLE: &str = "DKE.Readers";

/// What the dev cluster's hyok-dke runs with: its configuration file and the values of
/// dev.json's `dke` section (all but `pid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevSetup {
    /// `DIR/dke/dke.toml`.
    pub config: PathBuf,
    /// `https://localhost:PORT`.
    pub base_url: String,
    /// The same (no proxy in dev): `kid`s start with it.
    pub public_base_url: String,
    /// The DKE key name.
    pub key_name: String,
    /// The hyok RSA key behind it (to create before use).
    pub rsa_key: String,
    /// The token `aud` (the public base URL).
    pub audience: String,
    /// The dev token issuer.
    pub issuer: DevIssuer,
    /// The email the key authorizes.
    pub authorized_email: String,
}

/// A hyok-dke configuration: HTTPS on `listen` with the front-end certificate of the PKI in
/// `pki` (as the process sees that directory), `kid`s under `public_base_url` (also the token
/// audience), tokens from the dev issuer whose JWKS is `jwks`, and key [`DEV_KEY_NAME`] → RSA
/// key [`DEV_RSA_KEY`] for [`DEV_EMAIL`] or role [`DEV_ROLE`]; metrics on `metrics_listen` (an
/// address or `off`).
pub fn config_text(
    listen: &str,
    metrics_listen: &str,
    public_base_url: &str,
    coordinator: &str,
    pki: &Path,
    jwks: &Path,
) -> String {
    format!(
        "# Written by hyokctl.\nlisten = \"{listen}\"\nmetrics_listen = \"{metrics_listen}\"\npublic_base_url = \"{public_base_url}\"\ncache_exp_s = 3600\n\n\
         [tls]\ncert = {:?}\nkey = {:?}\n\n\
         [coordinator]\nendpoint = \"{coordinator}\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n\n\
         [jwt]\nissuers = [\"{DEV_ISSUER}\"]\naudience = \"{public_base_url}\"\njwks_file = {:?}\n\
         authorization = \"{DEV_ISSUER}authorize\"\n\n\
         [[keys]]\nname = \"{DEV_KEY_NAME}\"\nrsa_key = \"{DEV_RSA_KEY}\"\n\
         allowed_emails = [\"{DEV_EMAIL}\"]\nallowed_roles = [\"{DEV_ROLE}\"]\n",
        pki.join("frontend.pem"),
        pki.join("frontend-key.pem"),
        pki.join("ca.pem"),
        pki.join("frontend.pem"),
        pki.join("frontend-key.pem"),
        jwks,
    )
}

/// Writes `DIR/dke/dke.toml` for a hyok-dke on `port`, metrics on `metrics_port` (HTTPS with the front-end certificate of
/// the PKI in `pki`, which also reaches `coordinator`), trusting the dev token issuer (made on
/// the first run, in `DIR/dke`), with key [`DEV_KEY_NAME`] → RSA key [`DEV_RSA_KEY`] for
/// [`DEV_EMAIL`] or role [`DEV_ROLE`].
///
/// # Errors
/// If the files cannot be written or the configuration does not load.
pub fn dev_prepare(dir: &Path, pki: &Path, coordinator: &str, port: u16, metrics_port: u16) -> Result<DevSetup> {
    let dke_dir = dir.join("dke");
    let issuer = ensure_dev_issuer(&dke_dir)?;
    let base_url = format!("https://localhost:{port}");
    let text = config_text(
        &format!("127.0.0.1:{port}"),
        &format!("127.0.0.1:{metrics_port}"),
        &base_url,
        coordinator,
        pki,
        &issuer.jwks,
    );
    let config = dke_dir.join("dke.toml");
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    hyok_dke::Config::load(&config).context("the dev hyok-dke configuration does not load")?;
    Ok(DevSetup {
        config,
        public_base_url: base_url.clone(),
        audience: base_url.clone(),
        base_url,
        key_name: DEV_KEY_NAME.to_owned(),
        rsa_key: DEV_RSA_KEY.to_owned(),
        issuer,
        authorized_email: DEV_EMAIL.to_owned(),
    })
}

/// The dev token issuer's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevIssuer {
    /// `iss` of its tokens.
    pub issuer: String,
    /// `kid` of its key.
    pub kid: String,
    /// Its private key (PKCS#8 PEM, mode 0600).
    pub key_pem: PathBuf,
    /// The JWKS holding its public key, for hyok-dke's `jwt.jwks_file`.
    pub jwks: PathBuf,
}

/// Creates the dev token issuer in `dir` unless it is there: a 2048-bit RSA key made by
/// hyok's key generation, saved as PKCS#8 PEM (owner-only), and its JWKS. An existing key is
/// kept (and its JWKS rewritten), so tokens minted earlier stay valid across runs.
///
/// # Errors
/// If the files cannot be written, or an existing key cannot be read.
pub fn ensure_dev_issuer(dir: &Path) -> Result<DevIssuer> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key_pem = dir.join(ISSUER_KEY_FILE);
    let key = if key_pem.exists() {
        read_key(&key_pem)?
    } else {
        let key = keygen::generate(&mut rand::rng(), 2048).context("generating the dev issuer key")?;
        let pem = key.to_pkcs8_pem()?;
        write_private(&key_pem, pem.as_bytes())?;
        key
    };
    let public = key.public_key();
    let jwk = hyok_dke::jwt::rsa_jwk(DEV_ISSUER_KID, &public.modulus_bytes(), &public.exponent_bytes());
    let jwks = dir.join(JWKS_FILE);
    let text = serde_json::json!({ "keys": [jwk] }).to_string();
    std::fs::write(&jwks, text).with_context(|| format!("writing {}", jwks.display()))?;
    Ok(DevIssuer { issuer: DEV_ISSUER.to_owned(), kid: DEV_ISSUER_KID.to_owned(), key_pem, jwks })
}

fn read_key(path: &Path) -> Result<PrivateKey> {
    let pem =
        zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
    PrivateKey::from_pem(&pem).with_context(|| format!("{} is not an RSA private key", path.display()))
}

/// Writes a secret file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

/// An RS256 token from the issuer key in `key_pem` (`kid`), for `email` (as the `email`,
/// `upn` and `preferred_username` claims), with `iss`, `aud`, `iat`, `nbf` and
/// `exp = now + lifetime`.
///
/// # Errors
/// If the key cannot be read or signing fails.
pub fn mint_token(
    key_pem: &Path,
    kid: &str,
    issuer: &str,
    audience: &str,
    email: &str,
    lifetime: Duration,
) -> Result<String> {
    let key = read_key(key_pem)?;
    let der = key.to_pkcs8_der()?;
    let pair = RsaKeyPair::from_pkcs8(&der).map_err(|e| anyhow::anyhow!("ring refused the issuer key: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs();
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "sub": email,
        "email": email,
        "upn": email,
        "preferred_username": email,
    });
    hyok_dke::jwt::sign_rs256(&pair, kid, &claims)
}

/// `hyokctl dev token --email E`: a token for the dev hyok-dke, from dev.json's `dke` section
/// (`issuer`, `audience`, `issuer_key`, `issuer_kid`) in `dir`.
///
/// # Errors
/// If dev.json is missing, has no `dke` section, or the key cannot be used.
pub fn dev_token(dir: &Path, email: &str) -> Result<String> {
    let path = dir.join("dev.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is `hyokctl dev` running?)", path.display()))?;
    let dev: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let dke = dev.get("dke").with_context(|| format!("{} has no dke section", path.display()))?;
    let field = |name: &str| {
        dke.get(name).and_then(serde_json::Value::as_str).with_context(|| format!("dev.json: dke.{name} is missing"))
    };
    let key = PathBuf::from(field("issuer_key")?);
    let key = if key.is_relative() { dir.join(key) } else { key };
    mint_token(&key, field("issuer_kid")?, field("issuer")?, field("audience")?, email, TOKEN_LIFETIME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_tokens_validate_against_the_dev_jwks_and_the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = ensure_dev_issuer(dir.path()).unwrap();
        let first = std::fs::read(&issuer.key_pem).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&issuer.key_pem).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(ensure_dev_issuer(dir.path()).unwrap(), issuer);
        assert_eq!(std::fs::read(&issuer.key_pem).unwrap(), first, "an existing key is kept");

        let audience = "https://localhost:8443";
        let dev = serde_json::json!({"dke": {"issuer": issuer.issuer, "audience": audience,
            "issuer_key": issuer.key_pem, "issuer_kid": issuer.kid}});
        std::fs::write(dir.path().join("dev.json"), dev.to_string()).unwrap();
        let token = dev_token(dir.path(), "alice@example.com").unwrap();

        let keys = hyok_dke::jwt::KeySet::load(&issuer.jwks).unwrap();
        let rules = hyok_dke::jwt::Rules { issuers: vec![DEV_ISSUER.into()], audience: audience.into(), leeway_s: 0 };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let claims = hyok_dke::jwt::validate(&token, &keys, &rules, now).unwrap();
        assert_eq!(claims.user(), "alice@example.com");
        let wrong = hyok_dke::jwt::Rules { audience: "https://elsewhere".into(), ..rules };
        assert!(hyok_dke::jwt::validate(&token, &keys, &wrong, now).is_err());
        assert!(dev_token(&dir.path().join("missing"), "a@b").is_err());
    }

    #[test]
    fn the_dev_configuration_loads_and_trusts_the_dev_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let setup = dev_prepare(dir.path(), &dir.path().join("pki"), "https://127.0.0.1:7100", 8443, 9703).unwrap();
        let config = hyok_dke::Config::load(&setup.config).unwrap();
        assert_eq!(config.public_base_url, "https://localhost:8443");
        assert_eq!(config.jwt.audience, setup.audience);
        assert_eq!(config.jwt.issuers, vec![DEV_ISSUER.to_owned()]);
        assert_eq!(config.jwt.jwks_file, Some(setup.issuer.jwks.clone()));
        assert_eq!(config.keys[0].name, DEV_KEY_NAME);
        assert_eq!(config.keys[0].rsa_key, DEV_RSA_KEY);
        assert_eq!(config.coordinator.endpoint, "https://127.0.0.1:7100");
        // A second run reuses the issuer.
        assert_eq!(
            dev_prepare(dir.path(), &dir.path().join("pki"), "https://127.0.0.1:7100", 8443, 9703).unwrap(),
            setup
        );
    }
}
