//! The toolkit of hyok's HTTPS front-ends (`hyok-xks`, `hyok-dke`): everything both need that is
//! not their protocol. A front-end's configuration file implements [`ConfigFile`] and
//! [`Frontend`] (its binary, its `run`), and its binary is `hyok_frontend::main::<Config>()`.
//!
//! # Layout
//! - [`config`]: the `[tls]` and `[coordinator]` tables with their defaults and checks, and
//!   loading a TOML file whose relative paths are taken from its directory ([`ConfigFile`]).
//! - [`pool`]: a few HTTP/2 channels to the coordinator, one [`Pool::call`] bounded by the
//!   request's deadline, and gRPC statuses mapped once to a [`BackendError`].
//! - [`request_id`]: the id of the request being served, entered around its handling (a log
//!   span and a task-local that [`Pool::call`] sends on to the coordinator).
//! - [`https`]: the HTTPS accept loop (TLS handshake limit, HTTP/1.1 and HTTP/2, graceful
//!   shutdown); [`tls`]: its rustls server configuration (TLS 1.2/1.3, ALPN, optional client CA
//!   and subject name).
//! - [`body`]: reading request bodies within a bound (an oversized one is read and discarded
//!   up to [`body::DISCARD_LIMIT`] so that the client gets an answer), and the sanitised
//!   message of error bodies.
//! - [`calendar`]: proleptic Gregorian dates of day counts and back (no clock, no time zone).
//! - `cli`: [`Frontend`], [`Args`] (`--config FILE`), [`execute`] and [`main`]: the binaries'
//!   entry point.
//! - [`testing`] (feature `testing`): an HTTPS client as the cloud services call the
//!   front-ends, for tests and benchmarks.

pub mod body;
pub use hyok_evidence::calendar;
mod cli;
pub mod config;
pub mod https;
pub mod metrics;
pub mod pool;
pub mod request_id;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

pub use cli::{Args, Binary, Frontend, Shutdown, execute, main};
pub use config::ConfigFile;
pub use pool::{BackendError, Pool};
