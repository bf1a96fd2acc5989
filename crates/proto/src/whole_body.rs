//! Client calls sent whole: a tower service around a gRPC client channel that encodes each
//! call's request body before handing it to HTTP/2, so that the body's one DATA frame carries
//! END_STREAM.
//!
//! tonic streams a request body, and learns that it has ended only when asked for the frame
//! after the message; hyper's HTTP/2 client then sends that end as a frame of its own (an
//! empty DATA with END_STREAM), its own TLS record and usually its own `writev`. On loopback a
//! `writev` also runs the receiver's TCP path, so a call cost three where one or two do. Every
//! hyok RPC is unary, so the body is one message, ready at once. A client-streaming RPC would
//! wait here for its whole stream: such a call must not go through this channel.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

/// A tonic channel whose calls are sent whole: what hyok's own gRPC clients of the coordinator
/// (front-ends, `hyokctl`) and of the nodes (the coordinator) call through.
pub type WholeChannel = WholeBody<tonic::transport::Channel>;

/// `S` (a tonic `Channel`), sending each call's request body whole.
#[derive(Debug, Clone)]
pub struct WholeBody<S> {
    inner: S,
}

impl<S> WholeBody<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        WholeBody { inner }
    }
}

type Answer<E> = Result<http::Response<tonic::body::Body>, E>;

impl<S> Service<http::Request<tonic::body::Body>> for WholeBody<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        // The service that was polled ready takes the call; a clone stays for the next one.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let (parts, body) = request.into_parts();
        Box::pin(async move {
            let bytes: Bytes = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                // The message did not encode: the call fails as tonic would have failed it.
                Err(status) => return Ok(status.into_http()),
            };
            inner.call(http::Request::from_parts(parts, tonic::body::Body::new(Full::new(bytes)))).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;
    use hyper::body::{Body as _, Frame};
    use std::sync::{Arc, Mutex};
    use tonic::codegen::tokio_stream;

    /// What the channel saw of the one call's body: its exact size as announced, its first
    /// frame's bytes, and whether the body had ended right after that frame.
    type Seen = Arc<Mutex<Option<(Option<u64>, Vec<u8>, bool)>>>;

    /// A channel that records the body of the call it gets and answers with an empty body.
    #[derive(Clone, Default)]
    struct Recorder(Seen);

    impl Service<http::Request<tonic::body::Body>> for Recorder {
        type Response = http::Response<tonic::body::Body>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Answer<Self::Error>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
            let seen = Arc::clone(&self.0);
            Box::pin(async move {
                let mut body = request.into_body();
                let exact = body.size_hint().exact();
                let first = body.frame().await.and_then(|f| f.ok()).and_then(|f| f.into_data().ok());
                let ended = body.is_end_stream();
                *seen.lock().unwrap() = Some((exact, first.map(|b| b.to_vec()).unwrap_or_default(), ended));
                Ok(http::Response::new(tonic::body::Body::empty()))
            })
        }
    }

    /// A body streamed in `chunks`, whose end shows only once it is polled past them (as
    /// tonic's own request bodies are).
    fn streamed(chunks: &[&'static [u8]], fail: bool) -> tonic::body::Body {
        let mut frames: Vec<Result<Frame<Bytes>, tonic::Status>> =
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from_static(c)))).collect();
        if fail {
            frames.push(Err(tonic::Status::internal("the message did not encode")));
        }
        tonic::body::Body::new(StreamBody::new(tokio_stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_streamed_body_reaches_the_channel_as_one_frame_that_ends_it() {
        let recorder = Recorder::default();
        let mut service = WholeBody::new(recorder.clone());
        let request = http::Request::new(streamed(&[b"\x00\x00\x00\x00\x03", b"abc"], false));
        let response = service.call(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        let (exact, first, ended) = recorder.0.lock().unwrap().clone().expect("the channel got the call");
        assert_eq!(first, b"\x00\x00\x00\x00\x03abc", "both chunks in the first frame");
        assert_eq!(exact, Some(8), "the size is known up front");
        assert!(ended, "the body ends with its one frame, so HTTP/2 sends END_STREAM on it");
    }

    #[tokio::test]
    async fn a_body_that_fails_to_encode_answers_with_its_status_and_never_reaches_the_channel() {
        let recorder = Recorder::default();
        let mut service = WholeBody::new(recorder.clone());
        let response = service.call(http::Request::new(streamed(&[b"x"], true))).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a gRPC status in the headers");
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "the message did not encode");
        assert!(recorder.0.lock().unwrap().is_none(), "nothing was sent");
    }
}
