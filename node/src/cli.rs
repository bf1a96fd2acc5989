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
    /// As this node's operator: install or show this node's pinned cluster manifest (through
    /// the operator socket while the node runs, else directly against its stopped store).
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// As this node's operator: install or show this node's evidence policy — which XKS key
    /// stores, DKE token issuers and gRPC caller keys may use which key (through the operator
    /// socket while the node runs, else directly against its stopped store).
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// As this node's operator: accept, reject or show a membership change (an epoch) for this
    /// running node; the node signs an acceptance with its identity key.
    Epoch {
        #[command(subcommand)]
        command: EpochCommand,
    },
    /// As this node's operator: write a sealed backup of this stopped node (its whole store and
    /// seal key, sealed under a backup key kept apart from the node).
    Backup {
        /// The node's data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the backup (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// The backup key (32 bytes, mode 0600); made by the first backup if missing.
        #[arg(long)]
        backup_key: PathBuf,
    },
    /// As this node's operator: restore a node from its sealed backup into an empty directory.
    Restore {
        /// The data directory to restore into (must hold no node).
        #[arg(long)]
        data_dir: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The backup key it was sealed under.
        #[arg(long)]
        backup_key: PathBuf,
    },
}

/// `hyok-node policy …`.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Install (or replace) the policy in FILE (TOML, see `hyok_evidence::policy`; the
    /// credentials and JWKS files it names are read now and stored with it). Stored sealed,
    /// flushed and audited (`policy:install`); in force at once.
    Install {
        #[command(flatten)]
        at: OperatorAt,
        /// The policy file.
        file: PathBuf,
    },
    /// Print the policy in force (secrets redacted) and its digest.
    Show {
        #[command(flatten)]
        at: OperatorAt,
    },
}

/// `hyok-node epoch …`.
#[derive(Subcommand, Debug)]
pub enum EpochCommand {
    /// Accept the change in FILE (JSON: `{"from": manifest, "to": manifest}`, see
    /// `hyok_node::manifest::ProposalFile`). Its `from` must be the manifest in force here.
    Accept {
        #[command(flatten)]
        at: OperatorAt,
        /// The proposal file.
        file: PathBuf,
    },
    /// Refuse the accepted change, or withdraw the acceptance (its reshared shares forgotten).
    Reject {
        #[command(flatten)]
        at: OperatorAt,
    },
    /// Print the change this node's operator accepted, if any.
    Show {
        #[command(flatten)]
        at: OperatorAt,
    },
}

/// `hyok-node manifest …`.
#[derive(Subcommand, Debug)]
pub enum ManifestCommand {
    /// Install (or replace) the manifest in FILE (JSON, see `hyok_node::manifest`). It must list
    /// this node with its identity key. Stored flushed and audited (`manifest:install`).
    Install {
        #[command(flatten)]
        at: OperatorAt,
        /// The manifest file.
        file: PathBuf,
    },
    /// Print the manifest in force and its digest.
    Show {
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
            NodeCommand::Veto { at, .. }
            | NodeCommand::Lift { at, .. }
            | NodeCommand::Vetoes { at }
            | NodeCommand::Manifest { command: ManifestCommand::Install { at, .. } | ManifestCommand::Show { at } }
            | NodeCommand::Policy { command: PolicyCommand::Install { at, .. } | PolicyCommand::Show { at } }
            | NodeCommand::Epoch {
                command: EpochCommand::Accept { at, .. } | EpochCommand::Reject { at } | EpochCommand::Show { at },
            } => Some(at),
            NodeCommand::Init { .. }
            | NodeCommand::Run { .. }
            | NodeCommand::Backup { .. }
            | NodeCommand::Restore { .. } => None,
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
        crate::operator::OperatorRequest::ManifestInstall { .. }
        | crate::operator::OperatorRequest::ManifestShow
        | crate::operator::OperatorRequest::PolicyInstall { .. }
        | crate::operator::OperatorRequest::PolicyShow
        | crate::operator::OperatorRequest::EpochAccept { .. }
        | crate::operator::OperatorRequest::EpochReject
        | crate::operator::OperatorRequest::EpochShow
        | crate::operator::OperatorRequest::StateShow => {
            anyhow::bail!("manifest, policy, epoch and state requests go through their own commands")
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

/// Whether a node serves `data_dir` now (its operator socket answers).
#[cfg(unix)]
async fn node_running(data_dir: &std::path::Path) -> bool {
    tokio::net::UnixStream::connect(crate::operator::socket_path(data_dir)).await.is_ok()
}

#[cfg(not(unix))]
async fn node_running(_: &std::path::Path) -> bool {
    false
}

#[cfg(unix)]
async fn epoch(command: EpochCommand) -> Result<()> {
    use crate::operator::OperatorRequest;
    let (EpochCommand::Accept { at, .. } | EpochCommand::Reject { at } | EpochCommand::Show { at }) = &command;
    let Some(data_dir) = at.data_dir.clone() else {
        anyhow::bail!("--data-dir DIR is required (the node's data directory)")
    };
    let (request, verb) = match command {
        EpochCommand::Accept { file, .. } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("reading the proposal {}: {e}", file.display()))?;
            let proposal: crate::manifest::ProposalFile =
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("the proposal {}: {e}", file.display()))?;
            (OperatorRequest::EpochAccept { proposal }, "accepted")
        }
        EpochCommand::Reject { .. } => (OperatorRequest::EpochReject, "rejected"),
        EpochCommand::Show { .. } => (OperatorRequest::EpochShow, "accepted"),
    };
    match crate::operator::exchange_epoch(&data_dir, &request).await? {
        Some(shown) => {
            let (from, to) = (&shown.proposal.from, &shown.proposal.to);
            println!(
                "{verb} the change {}: epoch {} ({}-of-{}) → epoch {} ({}-of-{})",
                shown.digest, from.epoch, from.t, from.n, to.epoch, to.t, to.n
            );
        }
        None => println!("no membership change is accepted on this node"),
    }
    Ok(())
}

fn print_manifest(digest: &str, m: &hyok_threshold::Manifest) {
    println!(
        "manifest {digest} ({}-of-{}, {} coordinator key(s) pinned)",
        m.threshold(),
        m.n(),
        m.coordinators().len()
    );
    print!("{}", crate::manifest::to_json(m));
}

async fn manifest(command: ManifestCommand) -> Result<()> {
    let (ManifestCommand::Install { at, .. } | ManifestCommand::Show { at }) = &command;
    let Some(data_dir) = at.data_dir.clone() else {
        anyhow::bail!("--data-dir DIR is required (the node's data directory)")
    };
    let running = node_running(&data_dir).await;
    match command {
        ManifestCommand::Install { file, .. } => {
            let m = crate::manifest::read(&file)?;
            let digest = if running {
                #[cfg(unix)]
                {
                    let request = crate::operator::OperatorRequest::ManifestInstall {
                        manifest: crate::manifest::ManifestFile::from_manifest(&m),
                    };
                    let (_, shown) = crate::operator::exchange(&data_dir, &request).await?;
                    shown.map(|s| s.digest).unwrap_or_default()
                }
                #[cfg(not(unix))]
                unreachable!()
            } else {
                let (id, digest) = crate::server::install_manifest(&data_dir, &m, "local-operator:offline")?;
                eprintln!("installed in the store of node {id} (not running)");
                hex::encode(digest)
            };
            println!("installed manifest {digest} ({}-of-{})", m.threshold(), m.n());
        }
        ManifestCommand::Show { .. } => {
            let m = if running {
                #[cfg(unix)]
                {
                    let (_, shown) =
                        crate::operator::exchange(&data_dir, &crate::operator::OperatorRequest::ManifestShow).await?;
                    shown.map(|s| s.manifest.to_manifest()).transpose().map_err(|e| anyhow::anyhow!("{e}"))?
                }
                #[cfg(not(unix))]
                unreachable!()
            } else {
                crate::server::stored_manifest(&data_dir)?
            };
            match m {
                Some(m) => print_manifest(&crate::manifest::digest_hex(&m), &m),
                None => println!("no cluster manifest installed"),
            }
        }
    }
    Ok(())
}

async fn policy(command: PolicyCommand) -> Result<()> {
    let (PolicyCommand::Install { at, .. } | PolicyCommand::Show { at }) = &command;
    let Some(data_dir) = at.data_dir.clone() else {
        anyhow::bail!("--data-dir DIR is required (the node's data directory)")
    };
    let running = node_running(&data_dir).await;
    let shown = match command {
        PolicyCommand::Install { file, .. } => {
            let policy = hyok_evidence::policy::PolicyFile::load(&file)?;
            if running {
                #[cfg(unix)]
                {
                    let request = crate::operator::OperatorRequest::PolicyInstall { policy };
                    crate::operator::exchange_policy(&data_dir, &request).await?
                }
                #[cfg(not(unix))]
                unreachable!()
            } else {
                let (id, digest) = crate::server::install_policy(&data_dir, &policy, "local-operator:offline")?;
                eprintln!(
                    "installed in the store of node {} (not running)",
                    id.map_or("?".to_owned(), |i| i.to_string())
                );
                Some(crate::operator::PolicyShown { digest: hex::encode(digest), policy: policy.redacted() })
            }
        }
        PolicyCommand::Show { .. } => {
            if running {
                #[cfg(unix)]
                {
                    crate::operator::exchange_policy(&data_dir, &crate::operator::OperatorRequest::PolicyShow).await?
                }
                #[cfg(not(unix))]
                unreachable!()
            } else {
                crate::server::stored_policy(&data_dir)?.map(|(digest, p)| crate::operator::PolicyShown {
                    digest: hex::encode(digest),
                    policy: p.redacted(),
                })
            }
        }
    };
    match shown {
        Some(s) => println!("policy {}\n{}", s.digest, serde_json::to_string_pretty(&s.policy)?),
        None => println!("no evidence policy installed"),
    }
    Ok(())
}

/// Runs one subcommand to completion (`run`: until Ctrl-C or SIGTERM).
pub async fn execute(command: NodeCommand) -> Result<()> {
    match command {
        NodeCommand::Init { data_dir } => {
            crate::server::init(&data_dir)?;
            println!("initialized {}", data_dir.display());
        }
        NodeCommand::Backup { data_dir, out, backup_key } => {
            crate::backup::backup(&data_dir, &out, &backup_key)?;
            println!("backed up {} to {}", data_dir.display(), out.display());
        }
        NodeCommand::Restore { data_dir, from, backup_key } => {
            crate::backup::restore(&data_dir, &from, &backup_key)?;
            println!("restored {} from {}", data_dir.display(), from.display());
        }
        NodeCommand::Run { id, data_dir, listen, ca, cert, key, init, metrics_listen } => {
            if init && !crate::server::seal_key_path(&data_dir).exists() {
                crate::server::init(&data_dir)?;
                tracing::info!(node = id, data_dir = %data_dir.display(), "initialized (new identity, no shares)");
            }
            let node = Arc::new(crate::server::open(NodeId::new(id)?, &data_dir)?);
            // Logged, not printed, so that a JSON log (HYOK_LOG_FORMAT=json) holds only JSON.
            match node.manifest() {
                Some(m) => tracing::info!(
                    node = id,
                    digest = crate::manifest::digest_hex(&m),
                    threshold = m.threshold(),
                    n = m.n(),
                    coordinator_keys = m.coordinators().len(),
                    "cluster manifest"
                ),
                None => tracing::warn!(
                    node = id,
                    "no cluster manifest installed: DKGs and RSA shares are refused, and any coordinator or admin \
                     certificate from the cluster CA may use the keys this node already holds, until this node's \
                     operator installs one (`hyok-node manifest install`)"
                ),
            }
            let listener = tokio::net::TcpListener::bind(listen).await?;
            hyok_proto::metrics::start("hyok-node", metrics_listen).await?;
            let addr = listener.local_addr()?;
            let stop = tokio_util::sync::CancellationToken::new();
            // The operator endpoint is up before the readiness line.
            #[cfg(unix)]
            let operator = {
                let endpoint = crate::operator::Endpoint::bind(&data_dir)?;
                tracing::info!(node = id, path = %endpoint.path().display(), "operator endpoint");
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
        NodeCommand::Manifest { command } => manifest(command).await?,
        NodeCommand::Policy { command } => policy(command).await?,
        #[cfg(unix)]
        NodeCommand::Epoch { command } => epoch(command).await?,
        #[cfg(not(unix))]
        NodeCommand::Epoch { .. } => anyhow::bail!("the operator socket needs a Unix system"),
        #[cfg(not(unix))]
        NodeCommand::Veto { at, .. } | NodeCommand::Lift { at, .. } | NodeCommand::Vetoes { at } => {
            operator(&at, ()).await?
        }
    }
    Ok(())
}
