//! `hyok-coordinator`: thin over the `hyok_coordinator` library.

use anyhow::Result;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "hyok-coordinator", version, about = "The hyok coordinator: fans out, verifies, combines")]
struct Cli {
    #[command(flatten)]
    args: hyok_coordinator::cli::Args,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    hyok_coordinator::cli::execute(Cli::parse().args).await
}
