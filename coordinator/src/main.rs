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
    hyok_proto::init_logging("info");
    hyok_coordinator::cli::execute(Cli::parse().args).await
}
