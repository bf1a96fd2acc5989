//! `hyok-xks`: the AWS KMS XKS proxy in front of a hyok cluster. Thin over the `hyok_xks` library.

fn main() -> anyhow::Result<()> {
    hyok_frontend::main::<hyok_xks::Config>()
}
