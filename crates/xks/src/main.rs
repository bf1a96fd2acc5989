//! `hyok-xks`: the AWS KMS XKS proxy in front of a hyok cluster. Thin over the `hyok_xks` library.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "hyok-xks", version, about = "AWS KMS External Key Store proxy for a hyok cluster")]
struct Cli {
    #[command(flatten)]
    args: hyok_xks::cli::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    hyok_xks::cli::execute(Cli::parse().args).await
}
