//! SigV4 credentials for XKS key stores: validation, generation, the AWS KMS console's proxy
//! configuration file, and the reloadable per-key-store credentials file.
//!
//! A key store's live credentials sit in a TOML file; two (or more) at once allow rotation —
//! add the new one, update the key store in AWS KMS, then remove the old one:
//!
//! ```toml
//! [[credentials]]
//! access_key_id = "..."
//! secret_access_key = "..."
//! ```
//!
//! Secrets are held in [`Zeroizing`] strings, never printed by `Debug`, and never quoted in an
//! error message.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::SystemTime;

use base64::Engine as _;
use zeroize::Zeroizing;

/// Access key ids are 20 to 30 characters of `A-Z` and `2-7` (the XKS specification's rule).
pub const ACCESS_KEY_ID_LEN: std::ops::RangeInclusive<usize> = 20..=30;

/// Secret access keys are 43 to 64 characters of `A-Z a-z 0-9 + / =` (the XKS specification's
/// rule).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 43..=64;

/// Why a credential or a credentials file was refused. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The access key id breaks the length or alphabet rule (says which).
    #[error("invalid access key id: {0}")]
    InvalidAccessKeyId(&'static str),
    /// The secret access key breaks the length or alphabet rule (says which).
    #[error("invalid secret access key: {0}")]
    InvalidSecret(&'static str),
    /// The file could not be read or inspected.
    #[error("{}: {source}", path.display())]
    Io {
        /// The credentials file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not TOML of the expected shape.
    ///
    /// Only the position is reported: a TOML or serde message can quote the offending value,
    /// which may be a secret.
    #[error("{}: not a valid credentials file (TOML syntax or structure error{})", path.display(),
        line.map(|l| format!(" at line {l}")).unwrap_or_default())]
    Parse {
        /// The credentials file.
        path: PathBuf,
        /// The 1-based line of the error, when known.
        line: Option<usize>,
    },
    /// An entry of the file is not a valid credential.
    #[error("{}: credentials[{index}]: {source}", path.display())]
    Entry {
        /// The credentials file.
        path: PathBuf,
        /// The 0-based index of the entry in the `[[credentials]]` array.
        index: usize,
        /// What is wrong with it.
        source: Box<CredentialError>,
    },
    /// Two entries of the file have the same access key id.
    #[error("{}: credentials[{index}]: duplicate access key id {access_key_id}", path.display())]
    Duplicate {
        /// The credentials file.
        path: PathBuf,
        /// The 0-based index of the second occurrence.
        index: usize,
        /// The repeated access key id (not a secret).
        access_key_id: String,
    },
    /// The file lists no credentials.
    #[error("{}: no [[credentials]] entries", path.display())]
    Empty {
        /// The credentials file.
        path: PathBuf,
    },
}

/// One SigV4 credential: a public access key id and its secret access key.
#[derive(Clone)]
pub struct Credential {
    /// The access key id (public: it appears in every request's `Authorization` header).
    pub access_key_id: String,
    secret: Zeroizing<String>,
}

impl Credential {
    /// A credential, if `access_key_id` is 20–30 characters of `[A-Z2-7]` and `secret` is 43–64
    /// characters of `[A-Za-z0-9+/=]`.
    pub fn new(access_key_id: impl Into<String>, secret: impl Into<String>) -> Result<Self, CredentialError> {
        let secret = Zeroizing::new(secret.into());
        let access_key_id = access_key_id.into();
        validate_access_key_id(&access_key_id)?;
        validate_secret(&secret)?;
        Ok(Self { access_key_id, secret })
    }

    /// The secret access key.
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential").field("access_key_id", &self.access_key_id).field("secret", &"<redacted>").finish()
    }
}

/// Checks the XKS access key id rule: 20–30 characters of `A-Z` and `2-7`.
fn validate_access_key_id(akid: &str) -> Result<(), CredentialError> {
    if !ACCESS_KEY_ID_LEN.contains(&akid.len()) {
        return Err(CredentialError::InvalidAccessKeyId("must be 20 to 30 characters long"));
    }
    if !akid.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)) {
        return Err(CredentialError::InvalidAccessKeyId("must use only A-Z and 2-7"));
    }
    Ok(())
}

/// Checks the XKS secret rule: 43–64 characters of `A-Z a-z 0-9 + / =`.
fn validate_secret(secret: &str) -> Result<(), CredentialError> {
    if !SECRET_LEN.contains(&secret.len()) {
        return Err(CredentialError::InvalidSecret("must be 43 to 64 characters long"));
    }
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=')) {
        return Err(CredentialError::InvalidSecret("must use only A-Z, a-z, 0-9, +, / and ="));
    }
    Ok(())
}

/// A fresh credential: the access key id is the RFC 4648 base32 (no padding) of 16 random bytes
/// (26 characters, 128 bits); the secret is the standard base64 of 32 random bytes (44
/// characters, 256 bits).
pub fn generate(rng: &mut impl rand::CryptoRng) -> Credential {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(&mut key[..]);
    Credential {
        access_key_id: base32_nopad(&id),
        secret: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&key[..])),
    }
}

/// RFC 4648 base32 (alphabet `A-Z2-7`) without padding.
fn base32_nopad(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The AWS KMS console's XKS proxy configuration file for a key store at `uri_path` (such as
/// `/myprefix/kms/xks/v1`), as pretty JSON:
///
/// ```json
/// {
///   "XksProxyUriPath": "/myprefix/kms/xks/v1",
///   "XksProxyAuthenticationCredential": {
///     "AccessKeyId": "…",
///     "RawSecretAccessKey": "…"
///   }
/// }
/// ```
///
/// It contains the secret, hence the [`Zeroizing`] wrapper.
pub fn console_json(uri_path: &str, cred: &Credential) -> Zeroizing<String> {
    use std::fmt::Write as _;
    let json = |s: &str| serde_json::Value::from(s).to_string();
    // The secret needs no JSON escaping (its alphabet is A-Z a-z 0-9 + / =), so it is written
    // directly into a buffer sized up front: no stray copies.
    let mut out = Zeroizing::new(String::with_capacity(256 + uri_path.len() * 6));
    let _ = write!(
        out,
        "{{\n  \"XksProxyUriPath\": {},\n  \"XksProxyAuthenticationCredential\": {{\n    \"AccessKeyId\": {},\n    \"RawSecretAccessKey\": \"{}\"\n  }}\n}}\n",
        json(uri_path),
        json(&cred.access_key_id),
        cred.secret()
    );
    out
}

/// The credentials file, as parsed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    #[serde(default)]
    credentials: Vec<FileEntry>,
}

/// One `[[credentials]]` entry, as parsed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    access_key_id: String,
    secret_access_key: String,
}

/// Reads a credentials file: at least one `[[credentials]]` entry, each a valid [`Credential`],
/// no access key id twice. Errors name the file and the entry index, never a secret.
pub fn load_file(path: impl AsRef<Path>) -> Result<Vec<Credential>, CredentialError> {
    let path = path.as_ref();
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| CredentialError::Io { path: path.to_owned(), source })?,
    );
    warn_if_readable_by_others(path);
    parse_file(path, &text)
}

/// Parses the text of a credentials file (`path` is for messages).
fn parse_file(path: &Path, text: &str) -> Result<Vec<Credential>, CredentialError> {
    let file: CredentialsFile = toml::from_str(text).map_err(|e| CredentialError::Parse {
        path: path.to_owned(),
        line: e
            .span()
            .map(|span| text.as_bytes()[..span.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1),
    })?;
    if file.credentials.is_empty() {
        return Err(CredentialError::Empty { path: path.to_owned() });
    }
    let mut out: Vec<Credential> = Vec::with_capacity(file.credentials.len());
    for (index, entry) in file.credentials.into_iter().enumerate() {
        let FileEntry { access_key_id, secret_access_key } = entry;
        let secret_access_key = Zeroizing::new(secret_access_key);
        let cred = Credential::new(access_key_id, secret_access_key.as_str()).map_err(|e| CredentialError::Entry {
            path: path.to_owned(),
            index,
            source: Box::new(e),
        })?;
        if out.iter().any(|c| c.access_key_id == cred.access_key_id) {
            return Err(CredentialError::Duplicate { path: path.to_owned(), index, access_key_id: cred.access_key_id });
        }
        out.push(cred);
    }
    Ok(out)
}

/// Logs a warning when a credentials file is readable or writable by group or others.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
                "credentials file is accessible to group or others; it should be mode 0600");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// The text of a credentials file holding `creds`, in order (it contains the secrets, hence the
/// [`Zeroizing`] wrapper). Write it with mode 0600.
pub fn to_file_text(creds: &[Credential]) -> Zeroizing<String> {
    // Sized up front so no reallocation leaves a copy of a secret behind.
    let mut out = Zeroizing::new(String::with_capacity(256 * (creds.len() + 1)));
    out.push_str(
        "# hyok-xks SigV4 credentials for one XKS key store. Keep this file private (mode 0600).\n\
         # Several [[credentials]] entries may be live at once, for rotation.\n",
    );
    for cred in creds {
        // Both fields are restricted to characters that need no escaping in a TOML basic string.
        out.push_str("\n[[credentials]]\naccess_key_id = \"");
        out.push_str(&cred.access_key_id);
        out.push_str("\"\nsecret_access_key = \"");
        out.push_str(cred.secret());
        out.push_str("\"\n");
    }
    out
}

/// What identifies a version of the credentials file: modification time, length and (on Unix)
/// inode, so an atomic rename-into-place is noticed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Result<Self, CredentialError> {
        let meta = std::fs::metadata(path).map_err(|source| CredentialError::Io { path: path.to_owned(), source })?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Self { modified: meta.modified().ok(), len: meta.len(), inode })
    }
}

/// Access key id → secret.
type SecretMap = HashMap<String, Zeroizing<String>>;

/// The live credentials of one key store: thread-safe, and reloadable from its file.
pub struct CredentialSet {
    /// The file, or `None` for a fixed set.
    path: Option<PathBuf>,
    /// The current credentials; swapped whole on reload.
    current: RwLock<Arc<SecretMap>>,
    /// The file version last looked at (loaded, or refused); also serializes reloads.
    stamp: Mutex<Option<FileStamp>>,
}

impl CredentialSet {
    /// Loads the credentials file at `path` (see [`load_file`]).
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, CredentialError> {
        let path = path.into();
        // Stat before reading: a change between the two is then seen by the next reload.
        let stamp = FileStamp::of(&path)?;
        let creds = load_file(&path)?;
        Ok(Self { current: RwLock::new(Arc::new(to_map(creds))), path: Some(path), stamp: Mutex::new(Some(stamp)) })
    }

    /// A set that never changes (for tests). A later duplicate access key id replaces an earlier
    /// one.
    pub fn fixed(creds: Vec<Credential>) -> Self {
        Self { path: None, current: RwLock::new(Arc::new(to_map(creds))), stamp: Mutex::new(None) }
    }

    /// The secret of `access_key_id`, if it is one of the live credentials.
    pub fn secret_for(&self, access_key_id: &str) -> Option<Zeroizing<String>> {
        self.snapshot().get(access_key_id).cloned()
    }

    /// The live access key ids, sorted (for logs and status; not secret).
    pub fn access_key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.snapshot().keys().cloned().collect();
        ids.sort();
        ids
    }

    /// The credentials file, or `None` for a [`fixed`](Self::fixed) set.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reloads the file if its modification time, length or inode changed since the last look:
    /// `Ok(true)` if new credentials are now live, `Ok(false)` if nothing changed (always, for a
    /// fixed set).
    ///
    /// If the changed file cannot be read or is invalid, the current credentials stay live and the
    /// error is returned — once per file version: later calls return `Ok(false)` until the file
    /// changes again.
    pub fn reload_if_changed(&self) -> Result<bool, CredentialError> {
        let Some(path) = &self.path else { return Ok(false) };
        let mut last = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = FileStamp::of(path)?;
        if *last == Some(stamp) {
            return Ok(false);
        }
        *last = Some(stamp);
        let creds = load_file(path)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(to_map(creds));
        Ok(true)
    }

    /// The current map (a cheap `Arc` clone under a read lock).
    fn snapshot(&self) -> Arc<SecretMap> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl fmt::Debug for CredentialSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialSet")
            .field("path", &self.path)
            .field("access_key_ids", &self.access_key_ids())
            .finish_non_exhaustive()
    }
}

/// Indexes credentials by access key id.
fn to_map(creds: Vec<Credential>) -> SecretMap {
    creds.into_iter().map(|c| (c.access_key_id, c.secret)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    const AKID: &str = "AKIA4GBY3I6JCE5M2HPM";
    const SECRET: &str = "1234567890123456789012345678901234567890123=";

    #[test]
    fn generate_gives_valid_distinct_credentials() {
        let mut rng = rng();
        let a = generate(&mut rng);
        let b = generate(&mut rng);
        for c in [&a, &b] {
            assert_eq!(c.access_key_id.len(), 26);
            assert_eq!(c.secret().len(), 44);
            assert!(Credential::new(c.access_key_id.clone(), c.secret()).is_ok(), "{c:?}");
            let raw = base64::engine::general_purpose::STANDARD.decode(c.secret()).unwrap();
            assert_eq!(raw.len(), 32);
        }
        assert_ne!(a.access_key_id, b.access_key_id);
        assert_ne!(a.secret(), b.secret());
        // The operating-system generator works too.
        let c = generate(&mut rand::rng());
        assert!(Credential::new(c.access_key_id.clone(), c.secret()).is_ok());
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 §10, padding removed.
        for (input, output) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32_nopad(input.as_bytes()), output);
        }
        assert_eq!(base32_nopad(&[0xff; 16]), "77777777777777777777777774");
    }

    #[test]
    fn new_rejects_invalid_access_key_ids() {
        for bad in [
            "",
            "AKIA4GBY3I6JCE5M2HP",             // 19
            "AKIA4GBY3I6JCE5M2HPMAKIA4GBY3I6", // 31
            "AKIA4GBY3I6JCE5M2HP1",            // 1 is not base32
            "AKIA4GBY3I6JCE5M2HP8",
            "akia4gby3i6jce5m2hpm",
            "AKIA4GBY3I6JCE5M2HP=",
            "AKIA4GBY3I6JCE5M2HPÉ",
        ] {
            assert!(matches!(Credential::new(bad, SECRET), Err(CredentialError::InvalidAccessKeyId(_))), "{bad}");
        }
        assert!(Credential::new("A".repeat(20), SECRET).is_ok());
        assert!(Credential::new("7".repeat(30), SECRET).is_ok());
    }

    #[test]
    fn new_rejects_invalid_secrets() {
        for bad in [
            String::new(),
            "a".repeat(42),
            "a".repeat(65),
            format!("{}-", "a".repeat(43)),
            format!("{}_", "a".repeat(43)),
            format!("{} ", "a".repeat(43)),
            format!("{}é", "a".repeat(43)),
        ] {
            let err = Credential::new(AKID, bad.as_str()).unwrap_err();
            assert!(matches!(err, CredentialError::InvalidSecret(_)), "{bad}");
            assert!(!err.to_string().contains(&bad) || bad.is_empty());
        }
        assert!(Credential::new(AKID, "a".repeat(43)).is_ok());
        assert!(Credential::new(AKID, "Zz09+/=".repeat(9) + "a").is_ok());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let cred = Credential::new(AKID, SECRET).unwrap();
        let shown = format!("{cred:?}");
        assert!(shown.contains(AKID) && shown.contains("<redacted>"), "{shown}");
        assert!(!shown.contains(SECRET));
        let set = CredentialSet::fixed(vec![cred]);
        let shown = format!("{set:?}");
        assert!(shown.contains(AKID) && !shown.contains(SECRET), "{shown}");
    }

    #[test]
    fn console_json_has_the_console_shape() {
        let cred = Credential::new(AKID, "abc/def+ghi=".repeat(4)).unwrap();
        let text = console_json("/myprefix/kms/xks/v1", &cred);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "XksProxyUriPath": "/myprefix/kms/xks/v1",
                "XksProxyAuthenticationCredential": {
                    "AccessKeyId": AKID,
                    "RawSecretAccessKey": "abc/def+ghi=".repeat(4),
                }
            })
        );
        assert!(text.starts_with("{\n  \"XksProxyUriPath\": \"/myprefix/kms/xks/v1\",\n"));
        // Escaping is JSON's.
        let odd = console_json("/a\"b\\c", &cred);
        assert_eq!(serde_json::from_str::<serde_json::Value>(&odd).unwrap()["XksProxyUriPath"], "/a\"b\\c");
    }

    fn write(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let mut rng = rng();
        let creds = vec![generate(&mut rng), generate(&mut rng)];
        write(&path, &to_file_text(&creds));
        let loaded = load_file(&path).unwrap();
        assert_eq!(loaded.len(), 2);
        for (a, b) in creds.iter().zip(&loaded) {
            assert_eq!(a.access_key_id, b.access_key_id);
            assert_eq!(a.secret(), b.secret());
        }
    }

    #[test]
    fn load_file_rejects_bad_files_without_quoting_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let entry = |akid: &str, secret: &str| {
            format!("[[credentials]]\naccess_key_id = \"{akid}\"\nsecret_access_key = \"{secret}\"\n")
        };
        let secret2 = "zyxwvutsrqponmlkjihgfedcba9876543210ZYXWVUT";
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "no [[credentials]]"),
            ("credentials = []\n".into(), "no [[credentials]]"),
            (entry(AKID, SECRET) + &entry(AKID, secret2), "credentials[1]: duplicate access key id"),
            (entry(AKID, SECRET) + &entry("AKIA4GBY3I6JCE5M2HP1", secret2), "credentials[1]: invalid access key id"),
            (entry(AKID, "short"), "credentials[0]: invalid secret access key"),
            (format!("[[credentials]]\naccess_key_id = \"{AKID}\"\nsecret_access_key = \"{SECRET}\n"), "at line 3"),
            (format!("[[credentials]]\naccess_key_id = \"{AKID}\"\nsecret_acess_key = \"{SECRET}\"\n"), "not a valid"),
            (format!("credentials = \"{SECRET}\"\n"), "not a valid"),
            (format!("[[credentials]]\naccess_key_id = \"{AKID}\"\n"), "not a valid"),
            (
                format!("[[credentials]]\naccess_key_id = [\"{SECRET}\"]\nsecret_access_key = \"{SECRET}\"\n"),
                "not a valid",
            ),
        ];
        for (text, expected) in cases {
            write(&path, &text);
            let err = load_file(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
            assert!(err.contains("creds.toml"), "{err}");
            assert!(!err.contains(SECRET) && !err.contains(secret2) && !err.contains("short"), "{err}");
        }
        let missing = load_file(dir.path().join("absent.toml")).unwrap_err();
        assert!(matches!(missing, CredentialError::Io { .. }), "{missing}");
    }

    #[test]
    fn reload_picks_up_added_and_removed_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let mut rng = rng();
        let (old, new) = (generate(&mut rng), generate(&mut rng));
        write(&path, &to_file_text(std::slice::from_ref(&old)));
        let set = CredentialSet::from_file(&path).unwrap();
        assert_eq!(set.secret_for(&old.access_key_id).as_deref().map(String::as_str), Some(old.secret()));
        assert_eq!(set.secret_for(&new.access_key_id), None);
        assert!(!set.reload_if_changed().unwrap());

        // Rotation, step 1: both live.
        write(&path, &to_file_text(&[old.clone(), new.clone()]));
        assert!(set.reload_if_changed().unwrap());
        assert!(set.secret_for(&old.access_key_id).is_some());
        assert_eq!(set.secret_for(&new.access_key_id).as_deref().map(String::as_str), Some(new.secret()));
        assert!(!set.reload_if_changed().unwrap());

        // Step 2: the old one removed.
        write(&path, &to_file_text(std::slice::from_ref(&new)));
        assert!(set.reload_if_changed().unwrap());
        assert_eq!(set.secret_for(&old.access_key_id), None);
        assert!(set.secret_for(&new.access_key_id).is_some());
        assert_eq!(set.access_key_ids(), vec![new.access_key_id.clone()]);
    }

    #[test]
    fn reload_of_broken_file_keeps_the_old_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds.toml");
        let mut rng = rng();
        let cred = generate(&mut rng);
        write(&path, &to_file_text(std::slice::from_ref(&cred)));
        let set = CredentialSet::from_file(&path).unwrap();

        write(&path, "[[credentials]]\naccess_key_id = \"oops\n");
        let err = set.reload_if_changed().unwrap_err();
        assert!(matches!(err, CredentialError::Parse { .. }), "{err}");
        assert!(set.secret_for(&cred.access_key_id).is_some());
        // Reported once per file version.
        assert!(!set.reload_if_changed().unwrap());

        // An empty file, then a missing file: still the old credentials.
        write(&path, "");
        assert!(matches!(set.reload_if_changed(), Err(CredentialError::Empty { .. })));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(set.reload_if_changed(), Err(CredentialError::Io { .. })));
        assert!(set.secret_for(&cred.access_key_id).is_some());

        // Fixed again: picked up.
        let other = generate(&mut rng);
        write(&path, &to_file_text(&[cred.clone(), other.clone()]));
        assert!(set.reload_if_changed().unwrap());
        assert_eq!(set.access_key_ids().len(), 2);
    }

    #[test]
    fn fixed_set_serves_and_never_reloads() {
        let cred = Credential::new(AKID, SECRET).unwrap();
        let set = CredentialSet::fixed(vec![cred]);
        assert_eq!(set.secret_for(AKID).as_deref().map(String::as_str), Some(SECRET));
        assert_eq!(set.secret_for("AKIA4GBY3I6JCE5M2HPN"), None);
        assert!(!set.reload_if_changed().unwrap());
        assert_eq!(set.path(), None);
    }

    #[test]
    fn credential_set_feeds_sigv4_verify() {
        let cred = generate(&mut rng());
        let set = CredentialSet::fixed(vec![cred.clone()]);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_709_251_198);
        let body = b"{}";
        let s = crate::sigv4::sign(
            "/p/kms/xks/v1/health",
            "xks.example",
            body,
            &cred.access_key_id,
            cred.secret(),
            "us-east-1",
            now,
        );
        let mut h = http::HeaderMap::new();
        h.insert("content-type", http::HeaderValue::from_static("application/json"));
        h.insert("host", http::HeaderValue::from_static("xks.example"));
        h.insert("x-amz-date", http::HeaderValue::from_str(&s.amz_date).unwrap());
        h.insert("authorization", http::HeaderValue::from_str(&s.authorization).unwrap());
        let uri = http::Uri::from_static("/p/kms/xks/v1/health");
        let got =
            crate::sigv4::verify(&http::Method::POST, &uri, &h, body, Some("us-east-1"), now, |a| set.secret_for(a));
        assert_eq!(got, Ok(cred.access_key_id.clone()));
    }
}
