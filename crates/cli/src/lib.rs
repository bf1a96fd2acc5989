//! `hyokctl`, the operator CLI, as a library (the binary is a thin `main.rs`).
//!
//! # Layout
//! - `pki`: the cluster CA and every party's certificate (`hyokctl pki init`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod pki;
