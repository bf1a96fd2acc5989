//! `hyok-dke`: the Microsoft 365 DKE key service in front of a hyok cluster. Thin over the
//! `hyok_dke` library.

fn main() -> anyhow::Result<()> {
    hyok_frontend::main::<hyok_dke::Config>()
}
