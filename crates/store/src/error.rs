//! The store's error type. No variant carries secret bytes.

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
    /// A field is too long or has forbidden characters.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Result with the store's [`Error`].
pub type Result<T, E = Error> = core::result::Result<T, E>;
