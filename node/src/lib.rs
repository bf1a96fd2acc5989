//! `hyok-node`: holds a Shamir share of every root key, computes partial results with proofs,
//! enforces its own policy, and audits everything it does.
//!
//! # Layout
//! - `node`: [`Node`], the logic in plain types — batched partial evaluations and unwraps,
//!   the DKG state machine per session, key state, audit reads.
//! - `keys`: the cache of unsealed shares and key policies.
//! - `rsa`: threshold RSA — store a sealed dealer share, commit, partial decryptions, state.
//! - `manifest`: the pinned cluster manifest — its file form, its installation by this node's
//!   operator, and the checks that hold DKGs, RSA shares and mutating callers to it.
//! - `epoch`: membership changes — the operator's acceptance, the change's reshares checked
//!   against it, commit with every new member's signed acceptance, abort.
//! - `veto`: the sovereign veto — this node's operator refuses a key here; only they lift it.
//! - `operator`: the node-local operator endpoint (`DATA_DIR/operator.sock`) that reaches it.
//! - `service`: the tonic adapter (role checks, conversions, error mapping).
//! - `server`: `init` / `open` a data directory and `run` the mTLS server until shutdown.
//! - `cli`: the command line (shared by `hyok-node` and `hyokctl node`).
//! - `metrics`: operations, refusals, audit log length, key and version counts.

pub mod backup;
pub mod cli;
pub mod epoch;
pub mod evidence;
pub mod keys;
pub mod manifest;
mod metrics;
pub mod node;
#[cfg(unix)]
pub mod operator;
mod reshare;
pub mod rsa;
pub mod server;
pub mod service;
pub mod veto;

pub use metrics::SLOW_AUDIT_APPEND;
pub use node::Node;
