//! hyok-dke's errors, mapped to HTTP statuses and JSON bodies in one place.
//!
//! Bad input is always a 4xx, never a 500: a 500 means the cluster answered something this
//! build does not understand. Messages name no secret, no plaintext, no token content and not
//! which padding or signature check failed.

use http::StatusCode;

/// A refusal, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DkeError {
    /// 400: unknown key name or key id, wrong `alg`, malformed JSON or Base64, a ciphertext of
    /// the wrong length, a failed unpadding.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no bearer token, or one that does not validate (deliberately vague; the reason is
    /// logged). The response carries the configured `WWW-Authenticate` challenge.
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// 403: the token's user is not allowed to use the key, or the key is disabled.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such route.
    #[error("no such resource")]
    NotFound,
    /// 405: the route exists, not with this method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// 413: a body larger than any DKE request.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 503: fewer than a threshold of nodes answered, the budget ran out, or too many requests
    /// are in flight.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the cluster failed in a way this service does not understand (details logged).
    #[error("{0}")]
    Internal(String),
}

/// The one message for every ciphertext the cluster cannot decrypt (bad padding, wrong key).
pub const DECRYPTION_FAILED: &str = "the value does not decrypt under this key";

impl DkeError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            DkeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DkeError::Unauthorized => StatusCode::UNAUTHORIZED,
            DkeError::Forbidden(_) => StatusCode::FORBIDDEN,
            DkeError::NotFound => StatusCode::NOT_FOUND,
            DkeError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            DkeError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            DkeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            DkeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable name.
    pub fn name(&self) -> &'static str {
        match self {
            DkeError::BadRequest(_) => "bad_request",
            DkeError::Unauthorized => "unauthorized",
            DkeError::Forbidden(_) => "forbidden",
            DkeError::NotFound => "not_found",
            DkeError::MethodNotAllowed(_) => "method_not_allowed",
            DkeError::PayloadTooLarge => "payload_too_large",
            DkeError::Unavailable(_) => "unavailable",
            DkeError::Internal(_) => "internal",
        }
    }

    /// `{"error":"…","message":"…"}`, one line, printable ASCII, at most 500 characters of
    /// message.
    pub fn body(&self) -> Vec<u8> {
        let message = hyok_frontend::body::error_message(&self.to_string());
        serde_json::json!({ "error": self.name(), "message": message }).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_status_and_a_json_body() {
        let cases = [
            (DkeError::BadRequest("x".into()), 400),
            (DkeError::Unauthorized, 401),
            (DkeError::Forbidden("x".into()), 403),
            (DkeError::NotFound, 404),
            (DkeError::MethodNotAllowed("GET"), 405),
            (DkeError::PayloadTooLarge, 413),
            (DkeError::Unavailable("x".into()), 503),
            (DkeError::Internal("x".into()), 500),
        ];
        for (error, status) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            let body: serde_json::Value = serde_json::from_slice(&error.body()).unwrap();
            assert_eq!(body["error"], error.name());
        }
        let body = DkeError::BadRequest(format!("a\nb é {}", "x".repeat(900))).body();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = value["message"].as_str().unwrap();
        assert!(message.len() <= 500 && message.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
}
