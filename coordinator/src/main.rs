//! `hyok-coordinator`: thin over the `hyok_coordinator` library.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "hyok-coordinator", version, about = "The hyok coordinator: fans out, verifies, combines")]
struct Cli {
    /// The TOML configuration (see README, "Configuration").
    #[arg(long)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = hyok_coordinator::Config::load(&cli.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    // The readiness line tests and `hyokctl dev` wait for.
    println!("hyok-coordinator listening on {}", listener.local_addr()?);
    hyok_coordinator::run(config, listener, hyok_client::shutdown_signal()).await
}
