//! The store's error type. No variant carries secret bytes: records are named by kind, key id
//! and version, and invalid inputs by field name only.

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// sled failed (I/O, corruption).
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A file (seal key) could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The seal key file is readable or writable by group or others (Unix mode shown).
    #[error("{path}: seal key file has mode {mode:o}; it must be 0600 (chmod 600)")]
    InsecureKeyFile {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A sealed record did not open: wrong seal key, tampered or moved record.
    #[error("sealed record {0} does not open (wrong seal key or tampered data)")]
    Unseal(String),
    /// A stored record does not decode.
    #[error("corrupt record {0}")]
    Corrupt(String),
    /// No such key or version.
    #[error("no such key or version: {0}")]
    NotFound(String),
    /// The version exists but its DKG was not committed.
    #[error("key version {0} is pending")]
    Pending(String),
    /// The version already exists.
    #[error("key version {0} already exists")]
    Exists(String),
    /// A field is too long, empty, or has forbidden characters (names the field, never its value).
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
