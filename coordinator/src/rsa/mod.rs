//! Threshold RSA (DKE) on the coordinator. The coordinator never sees a share or `d`.
//!
//! - [`view`]: RSA key metadata as t nodes report it (`GetRsaKey`, `ListRsaKeys`), through the
//!   one metadata tally of [`crate::metadata`].
//! - [`import`]: `ImportRsaKey`, the delivery of a dealt key version (all or nothing).
//! - [`decrypt`]: `RsaDecrypt`, t partials gathered through [`crate::fanout::gather`],
//!   combined and checked (`y^e ≡ c`).

pub mod decrypt;
pub mod import;
pub mod view;
