//! The `hyok-coordinator` command line, shared by its binary and `hyokctl coordinator`.

use anyhow::Result;
use clap::Args as ClapArgs;
use std::path::PathBuf;

/// `hyok-coordinator` arguments.
#[derive(ClapArgs, Debug)]
pub struct Args {
    /// The TOML configuration (see README, "Configuration").
    #[arg(long)]
    pub config: PathBuf,
}

/// Loads the configuration and serves until Ctrl-C or SIGTERM.
pub async fn execute(args: Args) -> Result<()> {
    let config = crate::Config::load(&args.config)?;
    hyok_proto::metrics::start("hyok-coordinator", config.metrics_listen).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    // The readiness line tests and `hyokctl dev` wait for.
    println!("hyok-coordinator listening on {}", listener.local_addr()?);
    crate::run(config, listener, hyok_proto::shutdown_signal()).await
}
