//! Process plumbing every hyok binary shares: the allocator, logging to stderr, and Ctrl-C /
//! SIGTERM.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Every process that links this crate (each hyok binary, and the tests and benchmarks built
/// with it) allocates through mimalloc instead of glibc's malloc. Under load a node spent
/// about a sixth of its CPU in glibc's allocator (sled's copy-on-write leaves, protobuf, HTTP/2
/// buffers), most of it in `_int_malloc`, `malloc_consolidate` and `unlink_chunk`.
/// Secrets are zeroized before they are freed, whichever allocator frees them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The environment variable that picks the log format: `json` for one JSON object per line
/// (with the fields of the spans it happened in, e.g. `span.request_id`), `text` (the default)
/// for human-readable lines.
pub const LOG_FORMAT_ENV: &str = "HYOK_LOG_FORMAT";

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `2025-01-01T00:00:00Z  INFO rpc{rpc="/hyok.v1.KeyVault/Encrypt" request_id="r-1"}: …`.
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{…},"span":{"request_id":"r-1",…},"spans":[…]}`.
    Json,
}

impl LogFormat {
    /// The format `value` (of [`LOG_FORMAT_ENV`]) names: `json` or `text` in any case, unset or
    /// empty as text; `Err` for anything else.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            Some(v) if v.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            Some(v) => Err(format!("{LOG_FORMAT_ENV}={v:?} is neither json nor text; logging as text")),
        }
    }
}

/// A subscriber writing `format` to `writer` through `filter`; text in colour only on a
/// terminal (`ansi`), so that log files hold plain lines.
fn subscriber<W>(
    format: LogFormat,
    filter: tracing_subscriber::EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.with_ansi(ansi).finish()),
        LogFormat::Json => Box::new(builder.json().with_current_span(true).with_span_list(true).finish()),
    }
}

/// Logs to stderr with the filter of `RUST_LOG`, or `default` (e.g. `info`) when it is unset or
/// unreadable, in the format [`LOG_FORMAT_ENV`] names. Call once, first thing in `main`.
pub fn init_logging(default: &str) {
    let value = std::env::var(LOG_FORMAT_ENV).ok();
    let (format, complaint) = match LogFormat::parse(value.as_deref()) {
        Ok(format) => (format, None),
        Err(complaint) => (LogFormat::Text, Some(complaint)),
    };
    // A second call (tests running several mains in one process) keeps the first subscriber.
    // `try_init` also forwards the `log` records of dependencies (rustls) to it.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = subscriber(format, filter, std::io::stderr, ansi).try_init();
    if let Some(complaint) = complaint {
        tracing::warn!("{complaint}");
    }
}

/// Completes when the process receives Ctrl-C (SIGINT) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_id;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    #[test]
    fn the_log_format_is_json_or_text() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("JSON")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some(" json ")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert!(LogFormat::parse(Some("yaml")).is_err());
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// A gRPC handler as tonic calls it: adopts the message's id (empty here), then logs.
    #[derive(Clone)]
    struct Handler;

    impl tower_service::Service<http::Request<String>> for Handler {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, request: http::Request<String>) -> Self::Future {
            Box::pin(async move {
                // As tonic does: the HTTP request's extensions (the layer's origin) come along.
                let (parts, body) = request.into_parts();
                let mut message = tonic::Request::new(body);
                if let Some(origin) = parts.extensions.get::<request_id::Origin>() {
                    message.extensions_mut().insert(*origin);
                }
                let message = request_id::adopt(message, |m| m);
                tokio::task::yield_now().await;
                tracing::info!("handled");
                Ok(http::Response::new(message.into_inner()))
            })
        }
    }

    fn handle_one(format: LogFormat, body: &str) -> (String, String) {
        use tower_layer::Layer;
        use tower_service::Service;
        let captured = Captured::default();
        let filter = tracing_subscriber::EnvFilter::new("info,hyok_proto::request_id=debug");
        let subscriber = subscriber(format, filter, captured.clone(), false);
        let id = tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut service = request_id::SpanLayer::new("coordinator").layer(Handler);
            let request = http::Request::builder().uri("/hyok.v1.KeyVault/Encrypt").body(body.to_owned()).unwrap();
            let id = runtime.block_on(service.call(request)).unwrap().into_body();
            tracing::info!("outside any request");
            id
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        (id, text)
    }

    #[test]
    fn json_lines_carry_the_request_id_of_the_span_they_were_logged_in() {
        let (id, text) = handle_one(LogFormat::Json, "");
        assert!(id.starts_with("coordinator-"), "{id}");
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["fields"]["message"], "handled");
        assert_eq!(lines[0]["span"]["request_id"], id.as_str(), "{text}");
        assert_eq!(lines[0]["span"]["rpc"], "/hyok.v1.KeyVault/Encrypt");
        assert_eq!(lines[0]["spans"][0]["request_id"], id.as_str());
        // The layer's access line, at debug level, in the same span.
        assert_eq!(lines[1]["fields"]["message"], "rpc answered");
        assert_eq!(lines[1]["fields"]["code"], "OK");
        assert_eq!(lines[1]["span"]["request_id"], id.as_str());
        assert_eq!(lines[2]["fields"]["message"], "outside any request");
        assert!(lines[2].get("span").is_none(), "{text}");
    }

    #[test]
    fn text_lines_carry_the_callers_request_id() {
        let (id, text) = handle_one(LogFormat::Text, "kms-\"r\"-1");
        assert_eq!(id, "kms-\"r\"-1");
        let handled = text.lines().find(|l| l.contains("handled")).unwrap();
        // Escaped as a string: a caller's id cannot forge a line or a field.
        assert!(handled.contains(r#"request_id="kms-\"r\"-1""#), "{handled}");
        assert!(!text.lines().find(|l| l.contains("outside")).unwrap().contains("request_id"), "{text}");
    }
}
