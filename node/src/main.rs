//! `hyok-node`: thin over the `hyok_node` library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use hyok_client::TlsFiles;
use hyok_threshold::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "hyok-node", version, about = "A hyok node: holds shares, answers with proofs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the seal key and the node identity in DATA_DIR.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serve the Node API over mutual TLS.
    Run {
        /// This node's id (its Shamir evaluation point).
        #[arg(long)]
        id: u16,
        #[arg(long)]
        data_dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7101")]
        listen: SocketAddr,
        /// Cluster CA certificate.
        #[arg(long)]
        ca: PathBuf,
        /// This node's certificate (roles node and node-<id>).
        #[arg(long)]
        cert: PathBuf,
        /// This node's private key.
        #[arg(long)]
        key: PathBuf,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Init { data_dir } => {
            hyok_node::server::init(&data_dir)?;
            println!("initialized {}", data_dir.display());
        }
        Command::Run { id, data_dir, listen, ca, cert, key } => {
            let node = Arc::new(hyok_node::server::open(NodeId::new(id)?, &data_dir)?);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            let addr = listener.local_addr()?;
            // The readiness line tests and `hyokctl dev` wait for.
            println!("hyok-node {id} listening on {addr}");
            hyok_node::server::run(node, &TlsFiles { ca, cert, key }, listener, hyok_client::shutdown_signal()).await?;
        }
    }
    Ok(())
}
