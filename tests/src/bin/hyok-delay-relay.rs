//! `hyok-delay-relay`: nodes "far away" for benchmarks and tests, on a kernel without netem.
//!
//! - `hyok-delay-relay --listen ADDR --to ADDR --delay-ms N`: one delaying relay.
//! - `hyok-delay-relay --dev-dir DIR --delay-ms N`: the `hyokctl dev` cluster in DIR with its
//!   coordinator restarted behind one relay per node (see `hyok_e2e::relay::far_coordinator`);
//!   prints `hyok-delay-relay: ready` once it serves, and stops the coordinator on Ctrl-C or
//!   SIGTERM.

use anyhow::{Result, bail};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "hyok-delay-relay", about = "A TCP relay that delays every byte, each way")]
struct Cli {
    /// Delay each way, in milliseconds.
    #[arg(long)]
    delay_ms: u64,
    /// Where one relay listens.
    #[arg(long, requires = "to", conflicts_with = "dev_dir")]
    listen: Option<SocketAddr>,
    /// Where it forwards to.
    #[arg(long, requires = "listen")]
    to: Option<SocketAddr>,
    /// A `hyokctl dev` directory: put its coordinator behind a relay per node.
    #[arg(long)]
    dev_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let delay = Duration::from_millis(cli.delay_ms);
    match (cli.listen, cli.to, cli.dev_dir) {
        (Some(listen), Some(to), None) => {
            let relay = hyok_e2e::relay::DelayRelay::start_on(listen, to, delay).await?;
            println!("hyok-delay-relay: ready, {} -> {to}, {} ms each way", relay.addr(), cli.delay_ms);
            hyok_proto::shutdown_signal().await;
            Ok(())
        }
        (None, None, Some(dir)) => {
            let far = hyok_e2e::relay::far_coordinator(&dir, delay).await?;
            let relays: Vec<String> = far.relays.iter().map(|r| r.addr().to_string()).collect();
            println!(
                "hyok-delay-relay: ready, coordinator pid {} reaches the nodes through {} ({} ms each way)",
                far.pid,
                relays.join(", "),
                cli.delay_ms
            );
            hyok_proto::shutdown_signal().await;
            far.stop().await;
            Ok(())
        }
        _ => bail!("give either --listen and --to, or --dev-dir"),
    }
}
