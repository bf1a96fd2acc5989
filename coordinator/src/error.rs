//! The coordinator's request errors, mapped to gRPC status codes in one place.

use tonic::Status;

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
    /// Disabled, or usage not allowed.
    #[error("{0}")]
    Precondition(String),
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

impl From<CoordError> for Status {
    fn from(e: CoordError) -> Self {
        let message = e.to_string();
        match e {
            CoordError::Invalid(_) => Status::invalid_argument(message),
            CoordError::NotFound(_) => Status::not_found(message),
            CoordError::Exists(_) => Status::already_exists(message),
            CoordError::Precondition(_) => Status::failed_precondition(message),
            CoordError::Unavailable(_) => Status::unavailable(message),
            CoordError::DataLoss => Status::data_loss(message),
            CoordError::Internal(_) => Status::internal(message),
        }
    }
}
