//! `hyokctl`: the hyok operator CLI. Thin over the `hyok_cli` library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use hyok_cli::bench::{BenchOp, BenchOptions, BenchVia};
use hyok_cli::dev::DevOptions;
use hyok_cli::pki::Pki;
use hyok_cli::target::{DEFAULT_DEV_DIR, Target};
use hyok_proto::init_logging;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "hyokctl", version, about = "Operate a hyok threshold key vault")]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a whole local cluster (nodes and coordinator as separate processes) until Ctrl-C.
    Dev {
        /// Directory for PKI, node data, logs and dev.json (reused on the next run).
        #[arg(long, default_value = DEFAULT_DEV_DIR)]
        dir: PathBuf,
        /// Number of nodes (first run only).
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        /// Threshold (first run only).
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        #[command(subcommand)]
        command: Option<DevCommand>,
    },
    /// The cluster's PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Key administration.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Threshold RSA keys (for DKE): the import ceremony, list, show.
    Rsa {
        #[command(subcommand)]
        command: RsaCommand,
    },
    /// Encrypt stdin to stdout (a self-describing ciphertext blob).
    Encrypt {
        /// The key.
        #[arg(long, default_value = "demo")]
        key: String,
        /// Additional authenticated data (needed again to decrypt).
        #[arg(long, default_value = "")]
        aad: String,
    },
    /// Decrypt a blob from stdin to stdout.
    Decrypt {
        /// The key.
        #[arg(long, default_value = "demo")]
        key: String,
        /// The additional authenticated data given to encrypt.
        #[arg(long, default_value = "")]
        aad: String,
    },
    /// Health of every node and state of every key; `--watch` redraws it with the request rate
    /// and latency.
    Status {
        /// Redraw every `--interval` seconds until Ctrl-C, with the coordinator's request rate
        /// and p99 (from two successive scrapes of its metrics).
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        /// The coordinator's metrics endpoint (default: the dev cluster's
        /// `coordinator.metrics_url` in dev.json).
        #[arg(long)]
        metrics_url: Option<String>,
    },
    /// Audit logs.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Load the cluster with Encrypt/Decrypt and report throughput and latency.
    Bench {
        /// The key (with --via xks: an external key id; `demo` means the dev key store's
        /// encrypt_decrypt key).
        #[arg(long, default_value = "demo")]
        key: String,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// HTTP/2 connections.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Plaintext bytes.
        #[arg(long, default_value_t = 32)]
        size: usize,
        /// Operation.
        #[arg(long, value_enum, default_value_t = BenchOp::Decrypt)]
        op: BenchOp,
        /// Through the coordinator's gRPC API, or as signed XKS requests to the dev hyok-xks.
        #[arg(long, value_enum, default_value_t = BenchVia::Grpc)]
        via: BenchVia,
        /// With --via xks: ask for a ciphertext data integrity value on every encrypt.
        #[arg(long)]
        cdiv: bool,
    },
    /// The Docker Compose cluster (docker-compose.yml): its files, and its key bootstrap.
    Compose {
        #[command(subcommand)]
        command: ComposeCommand,
    },
    /// Exit 0 if something accepts TCP connections at ADDR (container health checks).
    #[command(hide = true)]
    Probe {
        /// host:port.
        addr: String,
    },
    /// The Microsoft 365 DKE key service (hyok-dke).
    #[command(hide = true)]
    Dke {
        #[command(subcommand)]
        command: DkeCommand,
    },
    /// The AWS KMS External Key Store proxy (hyok-xks).
    Xks {
        #[command(subcommand)]
        command: XksCommand,
    },
    /// A node's local operator: veto a key on that node, lift the veto, list vetoes (through
    /// DATA_DIR/operator.sock). Also runs a node (what `hyokctl dev` starts; same as the
    /// hyok-node binary).
    Node {
        /// With the dev cluster: the node whose operator to play (its data directory from
        /// dev.json in --dev-dir), instead of --data-dir.
        #[arg(long = "node", global = true)]
        node_id: Option<u16>,
        #[command(subcommand)]
        command: NodeCli,
    },
    /// Keys outliving their nodes: proactive refresh and repair by resharing.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run the coordinator (what `hyokctl dev` starts; same as the hyok-coordinator binary).
    #[command(hide = true)]
    Coordinator {
        #[command(flatten)]
        args: hyok_coordinator::cli::Args,
    },
}

#[derive(Subcommand, Debug)]
enum NodeCli {
    /// Replace node N (wiped, or a new machine), playing every node's operator with the dev or
    /// the compose cluster (--dev-dir or --compose-dir): its new identity into every manifest, then its shares of every key version by
    /// resharing. Exits 0 once node N holds every share again.
    Replace {
        /// The node.
        id: u16,
    },
    #[command(flatten)]
    Local(hyok_node::cli::NodeCommand),
}

#[derive(Subcommand, Debug)]
enum ClusterCommand {
    /// Proactive refresh: every key version's shares dealt afresh to the same members (the old
    /// shares dropped everywhere; group keys unchanged).
    Refresh {
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Reshare the versions some reachable node lacks (what the coordinator also does on its own).
    Repair {
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
    },
    /// Each node's epoch and the change it accepted, then every key version's generation in
    /// use and what each node holds of it (dev or compose cluster: every node's operator socket).
    Status,
    /// Propose a membership change to N nodes (ids 1..=N; new ones are started, as processes of
    /// the dev cluster or containers of the compose cluster) at threshold T.
    Propose {
        /// The node count of the new epoch.
        #[arg(long)]
        nodes: u16,
        /// Its threshold.
        #[arg(long)]
        threshold: u16,
    },
    /// Accept the proposed change as the operator of each named node (every node of the change
    /// when none is named).
    Accept {
        /// A node whose operator accepts.
        #[arg(long = "node")]
        nodes: Vec<u16>,
    },
    /// Refuse (or withdraw) the proposed change as the operator of each named node.
    Reject {
        /// A node whose operator refuses.
        #[arg(long = "node", required = true)]
        nodes: Vec<u16>,
    },
    /// Execute the change every new member accepted: every key version reshared to the new
    /// members at the new t, then the new epoch committed everywhere.
    Execute,
    /// Abandon the proposed change; the epoch in force stays whole.
    Abort,
}

#[derive(Subcommand, Debug)]
enum PkiCommand {
    /// Create a cluster CA and certificates for nodes 1..=N, the coordinator, a front-end and an
    /// admin, each carrying its role.
    Init {
        /// Directory to create the PKI in (must not hold one yet).
        #[arg(long, default_value = "pki")]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        /// Extra DNS names or IP addresses every certificate is valid for (repeatable).
        #[arg(long = "name")]
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key (a DKG across every node).
    Create {
        /// The key id, [A-Za-z0-9._-]{1,128}.
        key: String,
        /// Allowed usages (repeatable: encrypt, decrypt, wrap, unwrap); none means all.
        #[arg(long = "usage")]
        usages: Vec<String>,
    },
    /// List keys.
    List,
    /// Show one key.
    Show {
        /// The key id.
        key: String,
    },
    /// Add a version (a new DKG) and make it primary.
    Rotate {
        /// The key id.
        key: String,
    },
    /// Enable a key on every reachable node.
    Enable {
        /// The key id.
        key: String,
    },
    /// Disable a key on every reachable node.
    Disable {
        /// The key id.
        key: String,
    },
}

#[derive(Subcommand, Debug)]
enum ComposeCommand {
    /// Write the PKI, configurations, SigV4 credentials and compose.json that
    /// docker-compose.yml mounts (5 nodes, threshold 3).
    Init {
        /// The directory (docker-compose.yml reads HYOK_COMPOSE_DIR, default ./.hyok-compose).
        #[arg(long, default_value = ".hyok-compose")]
        dir: PathBuf,
    },
    /// Wait for the cluster and create the demo and XKS keys that are missing (the compose
    /// `init` service runs this).
    Bootstrap,
}

#[derive(Subcommand, Debug)]
enum RsaCommand {
    /// Generate an RSA-2048 key (e = 65537) as the next version of NAME, deal it like `import`,
    /// destroy it. Prints the fingerprint.
    Create {
        /// The key name, [A-Za-z0-9._-]{1,128}.
        #[arg(long)]
        name: String,
        /// Modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 2048)]
        bits: usize,
        /// Node ID's identity key as the node itself logged it (ID=HEX, repeatable): the ceremony
        /// is refused unless the manifest pins the same key.
        #[arg(long = "expect-identity")]
        expect_identity: Vec<String>,
        /// The operator's copy of the cluster manifest (default: the dev cluster's manifest.json).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Import an RSA private key as the next version of NAME: split it, seal each share to its
    /// node, hand the sealed shares to the cluster, destroy the key. Prints the fingerprint.
    Import {
        /// The key name, [A-Za-z0-9._-]{1,128}.
        #[arg(long)]
        name: String,
        /// An unencrypted PKCS#1 or PKCS#8 PEM file.
        #[arg(long)]
        pem: PathBuf,
        /// Node ID's identity key as the node itself logged it (ID=HEX, repeatable): the import
        /// is refused unless the manifest pins the same key.
        #[arg(long = "expect-identity")]
        expect_identity: Vec<String>,
        /// The operator's copy of the cluster manifest (default: the dev cluster's manifest.json).
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// List RSA keys.
    List,
    /// Show one RSA key.
    Show {
        /// The key name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum DevCommand {
    /// Print a bearer token for the dev hyok-dke (RS256, from the dev token issuer).
    Token {
        /// The user's email (also upn and preferred_username).
        #[arg(long)]
        email: String,
        /// The dev directory (where dev.json is).
        #[arg(long, default_value = DEFAULT_DEV_DIR)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum DkeCommand {
    /// Run hyok-dke (same as the hyok-dke binary).
    #[command(hide = true)]
    Serve {
        #[command(flatten)]
        args: hyok_dke::Args,
    },
}

#[derive(Subcommand, Debug)]
enum XksCommand {
    /// Generate a SigV4 credential and print the KMS console's proxy configuration JSON
    /// (XksProxyUriPath, XksProxyAuthenticationCredential).
    Credentials {
        /// The key store's URI path prefix (before /kms/xks/v1).
        #[arg(long)]
        prefix: String,
        /// Add the credential to this credentials file (created if missing; existing ones kept,
        /// and hyok-xks reloads it without a restart).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Run hyok-xks (what `hyokctl dev` starts; same as the hyok-xks binary).
    #[command(hide = true)]
    Serve {
        #[command(flatten)]
        args: hyok_xks::Args,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Read each node's audit log and walk its hash chain; report the first break.
    Verify {
        /// Only this node.
        #[arg(long)]
        node: Option<u16>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let target = cli.target;
    match cli.command {
        Command::Node { node_id: _, command: NodeCli::Replace { id } } => {
            hyok_cli::membership::replace(&target, id).await?;
        }
        Command::Node { node_id, command: NodeCli::Local(mut command) } => {
            init_logging("info");
            hyok_cli::target::operator_data_dir(&target, node_id, &mut command)?;
            hyok_node::cli::execute(command).await?;
        }
        Command::Cluster { command: ClusterCommand::Refresh { key } } => {
            hyok_cli::membership::refresh(&target, key.as_deref(), false).await?;
        }
        Command::Cluster { command: ClusterCommand::Repair { key } } => {
            hyok_cli::membership::refresh(&target, key.as_deref(), true).await?;
        }
        Command::Cluster { command: ClusterCommand::Status } => {
            print!("{}", hyok_cli::epoch::describe(&target).await?);
            hyok_cli::membership::status(&target).await?;
        }
        Command::Cluster { command: ClusterCommand::Propose { nodes, threshold } } => {
            hyok_cli::epoch::propose(&target, nodes, threshold).await?;
        }
        Command::Cluster { command: ClusterCommand::Accept { nodes } } => {
            hyok_cli::epoch::accept(&target, &nodes).await?
        }
        Command::Cluster { command: ClusterCommand::Reject { nodes } } => {
            hyok_cli::epoch::reject(&target, &nodes).await?
        }
        Command::Cluster { command: ClusterCommand::Execute } => hyok_cli::epoch::execute(&target).await?,
        Command::Cluster { command: ClusterCommand::Abort } => hyok_cli::epoch::abort(&target).await?,
        Command::Coordinator { args } => {
            init_logging("info");
            hyok_coordinator::cli::execute(args).await?;
        }
        Command::Compose { command: ComposeCommand::Init { dir } } => {
            std::fs::create_dir_all(&dir)?;
            let file = hyok_cli::compose::init(&dir)?;
            println!("compose files written to {}; then:", dir.display());
            println!("  docker/build-image.sh && HYOK_COMPOSE_DIR={} docker-compose up -d", dir.display());
            println!("  hyok-xks: {} (access key {})", file.xks_base_url(8443), file.access_key_id);
        }
        Command::Compose { command: ComposeCommand::Bootstrap } => {
            hyok_cli::compose::bootstrap(&target).await?;
            println!("keys ready");
        }
        Command::Probe { addr } => hyok_cli::compose::probe(&addr).await?,
        Command::Xks { command: XksCommand::Serve { args } } => {
            init_logging("info");
            hyok_frontend::execute(args).await?;
        }
        Command::Xks { command: XksCommand::Credentials { prefix, file } } => {
            println!("{}", hyok_cli::xks::credentials(&prefix, file.as_deref())?);
            if let Some(file) = file {
                eprintln!("added to {}", file.display());
            }
        }
        Command::Dev { command: Some(DevCommand::Token { email, dir }), .. } => {
            println!("{}", hyok_cli::dke::dev_token(&dir, &email)?);
        }
        Command::Dke { command: DkeCommand::Serve { args } } => {
            init_logging("info");
            hyok_frontend::execute(args).await?;
        }
        Command::Dev { dir, nodes, threshold, command: None } => {
            init_logging("warn");
            hyok_cli::dev::run(DevOptions { dir, nodes, threshold }).await?;
        }
        Command::Pki { command: PkiCommand::Init { dir, nodes, names } } => {
            let ids: Vec<u16> = (1..=nodes).collect();
            Pki::new(&dir).init(&ids, &names)?;
            println!("PKI created in {} (CA, {nodes} nodes, coordinator, frontend, admin)", dir.display());
        }
        Command::Key { command } => match command {
            KeyCommand::Create { key, usages } => hyok_cli::keys::create(&target, &key, &usages).await?,
            KeyCommand::List => hyok_cli::keys::list(&target).await?,
            KeyCommand::Show { key } => hyok_cli::keys::show(&target, &key).await?,
            KeyCommand::Rotate { key } => hyok_cli::keys::rotate(&target, &key).await?,
            KeyCommand::Enable { key } => hyok_cli::keys::set_enabled(&target, &key, true).await?,
            KeyCommand::Disable { key } => hyok_cli::keys::set_enabled(&target, &key, false).await?,
        },
        Command::Rsa { command } => match command {
            RsaCommand::Create { name, bits, expect_identity, manifest } => {
                let manifest = manifest.unwrap_or_else(|| target.dev_dir.join(hyok_cli::dev::MANIFEST_FILE));
                let trust = hyok_cli::rsa::Trust::load(&manifest, &expect_identity)?;
                let imported = hyok_cli::rsa::create(&target, &name, bits, &trust).await?;
                for ((node, identity), (_, seal)) in imported.identities.iter().zip(&imported.seal_keys) {
                    eprintln!("node {node}: share sealed to seal key {seal} (certified by identity key {identity})");
                }
                println!("rsa key {name} version {} fingerprint {}", imported.version, imported.fingerprint);
            }
            RsaCommand::Import { name, pem, expect_identity, manifest } => {
                let manifest = manifest.unwrap_or_else(|| target.dev_dir.join(hyok_cli::dev::MANIFEST_FILE));
                let trust = hyok_cli::rsa::Trust::load(&manifest, &expect_identity)?;
                let imported = hyok_cli::rsa::import(&target, &name, &pem, &trust).await?;
                for ((node, identity), (_, seal)) in imported.identities.iter().zip(&imported.seal_keys) {
                    eprintln!("node {node}: share sealed to seal key {seal} (certified by identity key {identity})");
                }
                println!("rsa key {name} version {} fingerprint {}", imported.version, imported.fingerprint);
            }
            RsaCommand::List => hyok_cli::rsa::list(&target).await?,
            RsaCommand::Show { name } => hyok_cli::rsa::show(&target, &name).await?,
        },
        Command::Encrypt { key, aad } => hyok_cli::crypt::encrypt(&target, &key, &aad).await?,
        Command::Decrypt { key, aad } => hyok_cli::crypt::decrypt(&target, &key, &aad).await?,
        Command::Status { watch: false, .. } => hyok_cli::status::run(&target).await?,
        Command::Status { watch: true, interval, metrics_url } => {
            let url = hyok_cli::status::metrics_url(&target, metrics_url);
            hyok_cli::status::watch(&target, Duration::from_secs_f64(interval.max(0.2)), url).await?
        }
        Command::Audit { command: AuditCommand::Verify { node } } => hyok_cli::audit::verify(&target, node).await?,
        Command::Bench { key, duration, concurrency, connections, size, op, via, cdiv } => {
            let options = BenchOptions {
                key_id: key,
                duration: Duration::from_secs_f64(duration.max(0.1)),
                concurrency,
                connections,
                size,
                op,
                via,
                cdiv,
            };
            let report = hyok_cli::bench::run(&target, options).await?;
            print!("{}", report.table());
        }
    }
    Ok(())
}
