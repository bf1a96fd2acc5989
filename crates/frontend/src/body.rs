//! Request bodies read within a bound, and the message of error bodies.
//!
//! A request whose body is larger than the front-end accepts must still get the protocol's
//! answer, not a dropped connection: an HTTP/1.1 client still sending when the server closes
//! sees a reset, and an HTTP/2 client whose stream is answered while its body is unread sees
//! its stream reset. So an oversized body is read and discarded up to [`DISCARD_LIMIT`] before
//! the answer; beyond that the answer closes the connection ([`close_connection`]).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::Body;

/// How many bytes of an oversized body are read (and thrown away) before the answer.
pub const DISCARD_LIMIT: usize = 1024 * 1024;

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// Longer than the limit. `drained`: the whole body was read and discarded, so the
    /// connection can serve another request; else only [`DISCARD_LIMIT`] bytes were, and the
    /// answer must close the connection.
    #[error("request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: usize,
        /// Whether the whole body was read.
        drained: bool,
    },
    /// The body could not be read (the client reset the stream, broken framing).
    #[error("the request body could not be read")]
    Unreadable,
}

impl BodyError {
    /// Whether the answer must close the connection (see [`close_connection`]).
    pub fn must_close(&self) -> bool {
        matches!(self, BodyError::TooLarge { drained: false, .. })
    }
}

/// Reads `body` whole if it is at most `limit` bytes. A longer one is read on and discarded
/// up to [`DISCARD_LIMIT`] bytes (or `limit`, if larger) in all, so that its sender is ready to
/// read the answer; only `limit` bytes are ever held.
///
/// # Errors
/// [`BodyError::TooLarge`] beyond `limit`, [`BodyError::Unreadable`] if reading fails first.
pub async fn read<B>(mut body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body + Unpin,
{
    let discard_limit = DISCARD_LIMIT.max(limit);
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return Err(if seen > limit {
                BodyError::TooLarge { limit, drained: false }
            } else {
                BodyError::Unreadable
            });
        };
        let Ok(mut data) = frame.into_data() else { continue };
        let len = data.remaining();
        seen = seen.saturating_add(len);
        if seen <= limit {
            kept.extend_from_slice(&data.copy_to_bytes(len));
        } else if seen > discard_limit {
            return Err(BodyError::TooLarge { limit, drained: false });
        } else {
            if !kept.is_empty() {
                kept = BytesMut::new();
            }
            data.advance(len);
        }
    }
    if seen > limit { Err(BodyError::TooLarge { limit, drained: true }) } else { Ok(kept.freeze()) }
}

/// Makes `response` the last on its connection: `Connection: close` on HTTP/1.x (hyper then
/// closes after writing it). On HTTP/2 the header is not allowed and not needed: hyper resets
/// the stream whose body is left unread after its answer, and the connection goes on.
pub fn close_connection<B>(version: Version, response: &mut Response<B>) {
    if version < Version::HTTP_2 {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Longest message in an error body.
pub const MAX_MESSAGE: usize = 500;

/// `text` as an error body may carry it: printable ASCII on one line (anything else becomes
/// `?`), at most [`MAX_MESSAGE`] characters.
pub fn error_message(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(MAX_MESSAGE).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    /// A body of `chunks` chunks of `size` bytes each, optionally failing after them.
    fn chunked(chunks: usize, size: usize, fail: bool) -> impl Body<Data = Bytes, Error = std::io::Error> + Unpin {
        let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> =
            (0..chunks).map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; size])))).collect();
        if fail {
            frames.push(Err(std::io::Error::other("reset")));
        }
        StreamBody::new(tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        assert_eq!(read(Full::new(Bytes::from_static(b"hello")), 5).await.unwrap(), Bytes::from_static(b"hello"));
        let body = read(chunked(4, 1000, false), 4000).await.unwrap();
        assert_eq!(body.len(), 4000);
        assert_eq!(&body[..1], &[0]);
        assert_eq!(&body[3999..], &[3]);
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_up_to_the_discard_limit_then_given_up() {
        let err = read(chunked(10, 1000, false), 4000).await.unwrap_err();
        assert_eq!(err, BodyError::TooLarge { limit: 4000, drained: true });
        assert!(!err.must_close());
        let err = read(chunked(DISCARD_LIMIT / 1000 + 2, 1000, false), 4000).await.unwrap_err();
        assert_eq!(err, BodyError::TooLarge { limit: 4000, drained: false });
        assert!(err.must_close());
        assert_eq!(err.to_string(), "request body is larger than 4000 bytes");
    }

    #[tokio::test]
    async fn a_body_that_fails_is_unreadable_unless_already_too_large() {
        assert_eq!(read(chunked(2, 10, true), 4000).await.unwrap_err(), BodyError::Unreadable);
        let err = read(chunked(2, 3000, true), 4000).await.unwrap_err();
        assert!(err.must_close(), "{err:?}");
    }

    #[test]
    fn only_http1_answers_carry_connection_close() {
        let mut h1 = Response::new(());
        close_connection(Version::HTTP_11, &mut h1);
        assert_eq!(h1.headers()[header::CONNECTION], "close");
        let mut h2 = Response::new(());
        close_connection(Version::HTTP_2, &mut h2);
        assert!(h2.headers().get(header::CONNECTION).is_none());
    }

    #[test]
    fn error_messages_are_short_single_line_printable_ascii() {
        let message = error_message(&format!("line\nbreak é {}", "x".repeat(2000)));
        assert_eq!(message.len(), MAX_MESSAGE);
        assert!(message.starts_with("line?break ? x"));
        assert!(message.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
    }
}
