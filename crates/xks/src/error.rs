//! The XKS error vocabulary, mapped to HTTP status codes and bodies in one place.

use http::StatusCode;

/// An XKS API error: the spec's `errorName` (the variant), and a short message that names no
/// secret, no plaintext and nothing about which part of an authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XksError {
    /// 400: malformed or missing input.
    #[error("{0}")]
    Validation(String),
    /// 400: the key is disabled.
    #[error("{0}")]
    InvalidState(String),
    /// 400: the ciphertext, IV, AAD, tag or metadata does not authenticate or is malformed.
    #[error("{0}")]
    InvalidCiphertext(String),
    /// 400: the key does not allow the operation.
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// 401: SigV4 failed (deliberately vague).
    #[error("request authentication failed")]
    AuthenticationFailed,
    /// 403: secondary authorization refused the principal.
    #[error("{0}")]
    AccessDenied(String),
    /// 404: no such external key in this key store.
    #[error("{0}")]
    KeyNotFound(String),
    /// 404: the path names no key store or API.
    #[error("{0}")]
    InvalidUriPath(String),
    /// 429: too many requests in flight.
    #[error("too many requests in flight; retry")]
    Throttling,
    /// 500: anything else (details logged, not sent).
    #[error("{0}")]
    Internal(String),
    /// 501: not implemented, or larger than supported.
    #[error("{0}")]
    UnsupportedOperation(String),
    /// 503: the cluster did not answer within the budget.
    #[error("{0}")]
    DependencyTimeout(String),
}

impl XksError {
    /// The spec's `errorName`.
    pub fn name(&self) -> &'static str {
        match self {
            XksError::Validation(_) => "ValidationException",
            XksError::InvalidState(_) => "InvalidStateException",
            XksError::InvalidCiphertext(_) => "InvalidCiphertextException",
            XksError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            XksError::AuthenticationFailed => "AuthenticationFailedException",
            XksError::AccessDenied(_) => "AccessDeniedException",
            XksError::KeyNotFound(_) => "KeyNotFoundException",
            XksError::InvalidUriPath(_) => "InvalidUriPathException",
            XksError::Throttling => "ThrottlingException",
            XksError::Internal(_) => "InternalException",
            XksError::UnsupportedOperation(_) => "UnsupportedOperationException",
            XksError::DependencyTimeout(_) => "DependencyTimeoutException",
        }
    }

    /// The response body: `{"errorName":"…","errorMessage":"…"}`, one line; the message is
    /// cut to fewer than 512 printable ASCII characters, as the spec requires.
    pub fn body(&self) -> Vec<u8> {
        let message = hyok_frontend::body::error_message(&self.to_string());
        serde_json::json!({ "errorName": self.name(), "errorMessage": message }).to_string().into_bytes()
    }

    /// The HTTP status the spec gives the error.
    pub fn status(&self) -> StatusCode {
        match self {
            XksError::Validation(_)
            | XksError::InvalidState(_)
            | XksError::InvalidCiphertext(_)
            | XksError::InvalidKeyUsage(_) => StatusCode::BAD_REQUEST,
            XksError::AuthenticationFailed => StatusCode::UNAUTHORIZED,
            XksError::AccessDenied(_) => StatusCode::FORBIDDEN,
            XksError::KeyNotFound(_) | XksError::InvalidUriPath(_) => StatusCode::NOT_FOUND,
            XksError::Throttling => StatusCode::TOO_MANY_REQUESTS,
            XksError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            XksError::UnsupportedOperation(_) => StatusCode::NOT_IMPLEMENTED,
            XksError::DependencyTimeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_the_status_the_spec_gives_it() {
        let cases = [
            (XksError::Validation("x".into()), 400, "ValidationException"),
            (XksError::InvalidState("x".into()), 400, "InvalidStateException"),
            (XksError::InvalidCiphertext("x".into()), 400, "InvalidCiphertextException"),
            (XksError::InvalidKeyUsage("x".into()), 400, "InvalidKeyUsageException"),
            (XksError::AuthenticationFailed, 401, "AuthenticationFailedException"),
            (XksError::AccessDenied("x".into()), 403, "AccessDeniedException"),
            (XksError::KeyNotFound("x".into()), 404, "KeyNotFoundException"),
            (XksError::InvalidUriPath("x".into()), 404, "InvalidUriPathException"),
            (XksError::Throttling, 429, "ThrottlingException"),
            (XksError::Internal("x".into()), 500, "InternalException"),
            (XksError::UnsupportedOperation("x".into()), 501, "UnsupportedOperationException"),
            (XksError::DependencyTimeout("x".into()), 503, "DependencyTimeoutException"),
        ];
        for (error, status, name) in cases {
            assert_eq!(error.status().as_u16(), status, "{name}");
            assert_eq!(error.name(), name);
            let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
            assert_eq!(body["errorName"], name);
        }
    }

    #[test]
    fn messages_are_short_single_line_printable_ascii() {
        let body = XksError::Validation(format!("line\nbreak é {}", "x".repeat(2000))).body();
        assert!(!body.contains(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = value["errorMessage"].as_str().unwrap();
        assert!(message.len() < 512);
        assert!(message.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
}
