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
    /// As this node's operator: veto KEY on this node alone (EC and RSA keys of that name). No
    /// cluster credential can lift it; only `lift` on this node does.
    Veto {
        #[command(flatten)]
        at: OperatorAt,
        /// The key name.
        key: String,
        /// Why (recorded in the audit log).
        reason: Option<String>,
    },
    /// As this node's operator: lift this node's veto of KEY.
    Lift {
        #[command(flatten)]
        at: OperatorAt,
        /// The key name.
        key: String,
    },
    /// As this node's operator: list this node's vetoes.
    Vetoes {
        #[command(flatten)]
        at: OperatorAt,
    },
}

/// Where the node whose operator speaks keeps its data (its `operator.sock`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct OperatorAt {
    /// The node's data directory (`hyokctl node` can find it with --dev-dir and --node).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl NodeCommand {
    /// The data directory option of an operator command (`veto`, `lift`, `vetoes`).
    pub fn operator_at(&mut self) -> Option<&mut OperatorAt> {
        match self {
            NodeCommand::Veto { at, .. } | NodeCommand::Lift { at, .. } | NodeCommand::Vetoes { at } => Some(at),
            NodeCommand::Init { .. } | NodeCommand::Run { .. } => None,
        }
    }
}

#[cfg(unix)]
async fn operator(at: &OperatorAt, request: crate::operator::OperatorRequest) -> Result<()> {
    let Some(data_dir) = &at.data_dir else { anyhow::bail!("--data-dir DIR is required (the node's data directory)") };
    let vetoes = crate::operator::request(data_dir, &request).await?;
    let verb = match request {
        crate::operator::OperatorRequest::Veto { .. } => "vetoed",
        crate::operator::OperatorRequest::Lift { .. } => "lifted the veto of",
        crate::operator::OperatorRequest::List => {
            if vetoes.is_empty() {
                println!("no vetoes");
            }
            "vetoed"
        }
    };
    for v in vetoes {
        let reason = if v.reason.is_empty() { String::new() } else { format!(": {}", v.reason) };
        println!("{verb} {} (since {} ms){reason}", v.key, v.time_ms);
    }
    Ok(())
}

#[cfg(not(unix))]
async fn operator(_: &OperatorAt, _: ()) -> Result<()> {
    anyhow::bail!("the node-local operator endpoint is a Unix domain socket; this platform has none")
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
            let stop = tokio_util::sync::CancellationToken::new();
            // The operator endpoint is up before the readiness line.
            #[cfg(unix)]
            let operator = {
                let endpoint = crate::operator::Endpoint::bind(&data_dir)?;
                eprintln!("hyok-node {id}: operator endpoint {}", endpoint.path().display());
                tokio::spawn(endpoint.serve(node.clone(), stop.clone().cancelled_owned()))
            };
            // The readiness line tests and `hyokctl dev` wait for.
            println!("hyok-node {id} listening on {addr}");
            let served = crate::server::run(node, &TlsFiles { ca, cert, key }, listener, async {
                tokio::select! {
                    () = hyok_proto::shutdown_signal() => {}
                    () = stop.cancelled() => {}
                }
            })
            .await;
            stop.cancel();
            // A clean stop removes the socket.
            #[cfg(unix)]
            let _ = operator.await;
            served?;
        }
        #[cfg(unix)]
        NodeCommand::Veto { at, key, reason } => {
            operator(&at, crate::operator::OperatorRequest::Veto { key, reason: reason.unwrap_or_default() }).await?;
        }
        #[cfg(unix)]
        NodeCommand::Lift { at, key } => operator(&at, crate::operator::OperatorRequest::Lift { key }).await?,
        #[cfg(unix)]
        NodeCommand::Vetoes { at } => operator(&at, crate::operator::OperatorRequest::List).await?,
        #[cfg(not(unix))]
        NodeCommand::Veto { at, .. } | NodeCommand::Lift { at, .. } | NodeCommand::Vetoes { at } => {
            operator(&at, ()).await?
        }
    }
    Ok(())
}
