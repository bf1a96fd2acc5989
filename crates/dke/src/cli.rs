//! The `hyok-dke` command line, shared by the binary and `hyokctl dke serve`.

use crate::Config;
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use std::path::PathBuf;

/// `hyok-dke --config FILE`.
#[derive(Debug, Clone, ClapArgs)]
pub struct Args {
    /// The TOML configuration file.
    #[arg(long, env = "HYOK_DKE_CONFIG")]
    pub config: PathBuf,
}

/// Loads the configuration, binds, prints `hyok-dke listening on ADDR` and serves until Ctrl-C
/// or SIGTERM.
///
/// # Errors
/// If the configuration is invalid or the address cannot be bound.
pub async fn execute(args: Args) -> Result<()> {
    let config = Config::load(&args.config)?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    println!("hyok-dke listening on {}", listener.local_addr()?);
    crate::run(config, listener, hyok_client::shutdown_signal()).await
}
