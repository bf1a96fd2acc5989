//! The coordinator's request errors, mapped to gRPC status codes in one place.

use tonic::Status;

pub use hyok_proto::Reason;

/// Why a KeyVault request failed. Messages never carry key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordError {
    /// Malformed input.
    #[error("{0}")]
    Invalid(String),
    /// No such key or version.
    #[error("{0}")]
    NotFound(String),
    /// The key already exists.
    #[error("{0}")]
    Exists(String),
    /// A key version that does not exist (the key does).
    #[error("{0}")]
    VersionNotFound(String),
    /// The key is disabled on too many nodes to be used.
    #[error("{0}")]
    Disabled(String),
    /// The key's usages do not allow the operation.
    #[error("{0}")]
    UsageNotAllowed(String),
    /// Any other failed precondition.
    #[error("{0}")]
    Precondition(String),
    /// The request carries no evidence, or the nodes refused it.
    #[error("{0}")]
    PermissionDenied(String),
    /// Fewer than t nodes answered in time.
    #[error("{0}")]
    Unavailable(String),
    /// The ciphertext (or its AAD, tag, version, seed) does not authenticate.
    #[error("ciphertext does not authenticate (tampered, or wrong key, version or AAD)")]
    DataLoss,
    /// Anything else (details logged).
    #[error("{0}")]
    Internal(String),
}

impl CoordError {
    /// The same error, its message prefixed with `what` (`what: message`); DataLoss, whose
    /// message is fixed, is unchanged.
    #[must_use]
    pub fn context(self, what: &str) -> Self {
        let with = |m: String| format!("{what}: {m}");
        match self {
            CoordError::Invalid(m) => CoordError::Invalid(with(m)),
            CoordError::NotFound(m) => CoordError::NotFound(with(m)),
            CoordError::Exists(m) => CoordError::Exists(with(m)),
            CoordError::VersionNotFound(m) => CoordError::VersionNotFound(with(m)),
            CoordError::Disabled(m) => CoordError::Disabled(with(m)),
            CoordError::UsageNotAllowed(m) => CoordError::UsageNotAllowed(with(m)),
            CoordError::Precondition(m) => CoordError::Precondition(with(m)),
            CoordError::PermissionDenied(m) => CoordError::PermissionDenied(with(m)),
            CoordError::Unavailable(m) => CoordError::Unavailable(with(m)),
            CoordError::DataLoss => CoordError::DataLoss,
            CoordError::Internal(m) => CoordError::Internal(with(m)),
        }
    }

    /// The machine-readable reason sent as the `hyok-reason` metadata entry, where a status code
    /// alone is ambiguous.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            CoordError::NotFound(_) => Some(Reason::KeyNotFound),
            CoordError::VersionNotFound(_) => Some(Reason::VersionNotFound),
            CoordError::Disabled(_) => Some(Reason::KeyDisabled),
            CoordError::UsageNotAllowed(_) => Some(Reason::UsageNotAllowed),
            CoordError::PermissionDenied(_) => Some(Reason::EvidenceRefused),
            _ => None,
        }
    }
}

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Self {
        let message = e.to_string();
        let reason = e.reason();
        let status = match e {
            CoordError::Invalid(_) => Status::invalid_argument(message),
            CoordError::NotFound(_) | CoordError::VersionNotFound(_) => Status::not_found(message),
            CoordError::Exists(_) => Status::already_exists(message),
            CoordError::Disabled(_) | CoordError::UsageNotAllowed(_) | CoordError::Precondition(_) => {
                Status::failed_precondition(message)
            }
            CoordError::PermissionDenied(_) => Status::permission_denied(message),
            CoordError::Unavailable(_) => Status::unavailable(message),
            CoordError::DataLoss => Status::data_loss(message),
            CoordError::Internal(_) => Status::internal(message),
        };
        match reason {
            Some(reason) => reason.attach(status),
            None => status,
        }
    }
}
