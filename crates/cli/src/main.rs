//! `hyokctl`: the hyok operator CLI. Thin over the `hyok_cli` library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use hyok_cli::pki::Pki;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "hyokctl", version, about = "Operate a hyok threshold key vault")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The cluster's PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Pki { command: PkiCommand::Init { dir, nodes, names } } => {
            let ids: Vec<u16> = (1..=nodes).collect();
            Pki::new(&dir).init(&ids, &names)?;
            println!("PKI created in {} (CA, {nodes} nodes, coordinator, frontend, admin)", dir.display());
        }
    }
    Ok(())
}
