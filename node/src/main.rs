//! `hyok-node`: thin over the `hyok_node` library.

use anyhow::Result;
use clap::Parser;
use hyok_node::cli::NodeCommand;

#[derive(Parser, Debug)]
#[command(name = "hyok-node", version, about = "A hyok node: holds shares, answers with proofs")]
struct Cli {
    #[command(subcommand)]
    command: NodeCommand,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    hyok_node::cli::execute(Cli::parse().command).await
}
