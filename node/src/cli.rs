//! The `hyok-node` command line, shared by the `hyok-node` binary and `hyokctl node`.

use anyhow::Result;
use clap::Subcommand;
use hyok_proto::TlsFiles;
use hyok_threshold::NodeId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// `hyok-node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Create the seal key and the node identity in DATA_DIR.
    Init {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Serve the Node API over mutual TLS.
    Run {
        /// This node's id (its Shamir evaluation point).
        #[arg(long)]
        id: u16,
        /// The node's data directory (made by `init`).
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
        /// Initialize DATA_DIR first if it holds no seal key yet (for containers whose volume
        /// starts empty). A node initialized afresh has a new identity and no shares.
        #[arg(long)]
        init: bool,
        /// Where to serve Prometheus metrics (plain HTTP, `GET /metrics`), or `off`.
        #[arg(long, default_value = "127.0.0.1:9701")]
        metrics_listen: hyok_proto::metrics::Listen,
    },
}

/// Runs one subcommand to completion (`run`: until Ctrl-C or SIGTERM).
pub async fn execute(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Init { data_dir } => {
            crate::server::init(&data_dir)?;
            println!("initialized {}", data_dir.display());
        }
        NodeCommand::Run { id, data_dir, listen, ca, cert, key, init, metrics_listen } => {
            if init && !crate::server::seal_key_path(&data_dir).exists() {
                crate::server::init(&data_dir)?;
                eprintln!("hyok-node {id}: initialized {} (new identity, no shares)", data_dir.display());
            }
            let node = Arc::new(crate::server::open(NodeId::new(id)?, &data_dir)?);
            let listener = tokio::net::TcpListener::bind(listen).await?;
            hyok_proto::metrics::start("hyok-node", metrics_listen).await?;
            let addr = listener.local_addr()?;
            // The readiness line tests and `hyokctl dev` wait for.
            println!("hyok-node {id} listening on {addr}");
            crate::server::run(node, &TlsFiles { ca, cert, key }, listener, hyok_proto::shutdown_signal()).await?;
        }
    }
    Ok(())
}
