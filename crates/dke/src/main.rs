//! `hyok-dke`: the Microsoft 365 DKE key service in front of a hyok cluster. Thin over the
//! `hyok_dke` library.

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "hyok-dke", version, about = "Microsoft 365 Double Key Encryption key service for a hyok cluster")]
struct Cli {
    #[command(flatten)]
    args: hyok_dke::cli::Args,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    hyok_dke::cli::execute(Cli::parse().args).await
}
