//! `hyokctl`, the operator CLI, as a library: each command in its own module, the binary only
//! parses arguments.
//!
//! # Layout
//! - `pki`: the cluster CA and role certificates.
//! - `rsa`: the threshold RSA key ceremonies (`rsa create`, `rsa import`) and RSA key listing.
//! - `dev`: the one-command local cluster; `devfile`: its `dev.json`.
//! - `target`: which cluster a command talks to.
//! - `keys`, `crypt`, `status`, `audit`, `bench` (`bench_xks`, `bench_dke`: its XKS and DKE modes): the client commands.
//! - `dke`: the dev cluster's hyok-dke token issuer and `hyokctl dev token`.
//! - `xks`: SigV4 credentials for hyok-xks, and the dev cluster's hyok-xks.
//! - `compose`: the files docker-compose.yml mounts, and its key bootstrap.
//! - `operated`: the cluster hyokctl operates as every node's operator (dev or compose);
//!   `membership` (node replace, refresh, repair, status) and `epoch` (membership changes) use it.

pub mod appends;
pub mod audit;
pub mod bench;
pub mod bench_dke;
pub mod bench_xks;
pub mod compose;
pub mod cpu;
pub mod crypt;
pub mod dev;
pub mod devfile;
pub mod dke;
pub mod epoch;
pub mod keys;
pub mod membership;
pub mod memory;
pub mod operated;
pub mod pki;
pub mod policy;
pub mod ports;
pub mod rsa;
pub mod status;
pub mod target;
pub mod xks;
