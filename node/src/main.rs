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
    hyok_proto::init_logging("info");
    hyok_node::cli::execute(Cli::parse().command).await
}
