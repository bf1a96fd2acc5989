//! The cluster hyokctl operates as every node's operator: the dev cluster's processes
//! (`DIR/dev.json`, written by `hyokctl dev`) or the compose cluster's containers
//! (`DIR/compose.json`, written by `hyokctl compose init`).
//!
//! Both keep one layout, so every operator command works the same on either: `DIR/node-N`
//! holds node N's data directory and its operator socket (for compose, the directory bind-mounted
//! at `/data` in the node's container), `DIR/manifest.json` the manifest in force,
//! `DIR/policy.json` the operators' evidence policy, `DIR/pki` the certificates. They differ in
//! how a node is started or stopped (a process, or `docker-compose up -d node-N` and
//! `docker-compose stop node-N`), in where the coordinator's node list lives and which endpoint
//! it names each node by.
//!
//! For compose, hyokctl runs `docker-compose` from the current directory (the one holding
//! `docker-compose.yml`, or `COMPOSE_FILE`), with `HYOK_COMPOSE_DIR` set to `DIR`; the project is
//! the one `COMPOSE_PROJECT_NAME` names, as for any `docker-compose` command.

use crate::compose::ComposeFile;
use crate::devfile::DevFile;
use anyhow::{Context, Result, bail};
use hyok_threshold::{Manifest, NodeId};
use std::path::{Path, PathBuf};

/// The cluster in a directory, as its operators see it.
#[derive(Debug)]
pub enum Operated {
    /// `hyokctl dev`'s processes.
    Dev {
        /// The dev directory.
        dir: PathBuf,
        /// Its dev.json.
        file: Box<DevFile>,
    },
    /// The compose cluster's containers.
    Compose {
        /// The directory `hyokctl compose init` wrote.
        dir: PathBuf,
        /// Its compose.json.
        file: Box<ComposeFile>,
    },
}

impl Operated {
    /// The cluster in `dir`: dev.json if there is one, else compose.json.
    ///
    /// # Errors
    /// If `dir` holds neither, or the file cannot be read.
    pub fn open(dir: &Path) -> Result<Self> {
        if DevFile::path(dir).exists() || !ComposeFile::path(dir).exists() {
            return Ok(Operated::Dev { dir: dir.to_path_buf(), file: Box::new(DevFile::load(dir)?) });
        }
        Ok(Operated::Compose { dir: dir.to_path_buf(), file: Box::new(ComposeFile::load(dir)?) })
    }

    /// The nodes that run (members, and nodes a pending change started), by id.
    pub fn running(&self) -> Vec<u16> {
        match self {
            Operated::Dev { file, .. } => file.nodes.iter().map(|n| n.id).collect(),
            Operated::Compose { file, .. } => file.node_ids(),
        }
    }

    /// Node `id`'s data directory (where its operator socket is).
    ///
    /// # Errors
    /// If no such node runs.
    pub fn data_dir(&self, id: u16) -> Result<PathBuf> {
        match self {
            Operated::Dev { dir, file } => Ok(file
                .nodes
                .iter()
                .find(|n| n.id == id)
                .with_context(|| format!("no node {id} in {}", DevFile::path(dir).display()))?
                .data_dir
                .clone()),
            Operated::Compose { dir, file } => {
                if !file.node_ids().contains(&id) {
                    bail!("no node {id} in {}", ComposeFile::path(dir).display());
                }
                Ok(dir.join(format!("node-{id}")))
            }
        }
    }

    /// `(id, data directory)` of every running node.
    pub fn data_dirs(&self) -> Vec<(u16, PathBuf)> {
        self.running().into_iter().filter_map(|id| self.data_dir(id).ok().map(|d| (id, d))).collect()
    }

    /// Starts node `id` (its certificate issued; it initializes its own data directory,
    /// `DIR/node-ID`, with `--init`), and records it as running.
    ///
    /// # Errors
    /// If it does not start.
    pub async fn start(&mut self, id: u16) -> Result<()> {
        match self {
            Operated::Dev { dir, file } => {
                let node = crate::dev::start_node(dir, id).await?;
                println!("node {id}: started (pid {})", node.pid);
                file.nodes.retain(|n| n.id != id);
                file.nodes.push(node);
                file.nodes.sort_by_key(|n| n.id);
            }
            Operated::Compose { dir, file } => {
                docker_compose(dir, &["up", "-d", "--no-deps", &format!("node-{id}")])?;
                println!("node {id}: container node-{id} started");
                if !file.node_ids().contains(&id) {
                    file.started.push(id);
                    file.started.sort_unstable();
                }
            }
        }
        self.save()
    }

    /// After a change committed (`manifest` its new one) or was abandoned (`manifest` the one
    /// that serves on): stops every running node that is not a member, records the members and
    /// t, and points the coordinator at exactly the members. Returns the nodes stopped.
    ///
    /// # Errors
    /// If a record cannot be written.
    pub fn settle(&mut self, manifest: &Manifest) -> Result<Vec<u16>> {
        let member = |id: u16| NodeId::new(id).is_ok_and(|id| manifest.identity(id).is_some());
        let leaving: Vec<u16> = self.running().into_iter().filter(|id| !member(*id)).collect();
        match self {
            Operated::Dev { dir, file } => {
                for n in file.nodes.iter().filter(|n| !member(n.id)) {
                    crate::dev::terminate(n.pid);
                }
                file.nodes.retain(|n| member(n.id));
                file.threshold = manifest.threshold();
                crate::dev::set_shape(dir, manifest.n(), manifest.threshold())?;
            }
            Operated::Compose { dir, file } => {
                for id in &leaving {
                    docker_compose(dir, &["stop", &format!("node-{id}")])?;
                }
                file.started.clear();
                file.nodes = manifest.n();
                file.threshold = manifest.threshold();
            }
        }
        self.save()?;
        Ok(leaving)
    }

    /// Writes the record (dev.json or compose.json) and the coordinator's node list (every
    /// running node; the coordinator re-reads it while it runs).
    fn save(&self) -> Result<()> {
        let nodes: Vec<(u16, String)> = match self {
            Operated::Dev { dir, file } => {
                file.save(dir)?;
                file.nodes.iter().map(|n| (n.id, n.endpoint.clone())).collect()
            }
            Operated::Compose { dir, file } => {
                file.save(dir)?;
                file.node_ids().into_iter().map(|id| (id, crate::compose::node_endpoint(id))).collect()
            }
        };
        set_coordinator_nodes(&self.coordinator_config(), &nodes)
    }

    /// The coordinator's configuration file, as the host sees it.
    fn coordinator_config(&self) -> PathBuf {
        match self {
            Operated::Dev { dir, .. } => dir.join("coordinator.toml"),
            Operated::Compose { dir, .. } => crate::compose::coordinator_config(dir),
        }
    }
}

/// The identity key the node serving `data_dir` reports through its operator socket — the
/// node's own word, not the coordinator's — waiting up to 60 s for the socket (a process or
/// container may still be starting).
///
/// # Errors
/// If the socket does not answer in time, or the key is malformed.
pub async fn identity_of(data_dir: &Path) -> Result<hyok_threshold::IdentityPublicKey> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let state = loop {
        match hyok_node::operator::state_of(data_dir).await {
            Ok(state) => break state,
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    };
    let bytes = hex::decode(&state.identity).context("the node's identity key")?;
    Ok(hyok_threshold::IdentityPublicKey::from_slice(&bytes)?)
}

/// Rewrites the `[[nodes]]` of the coordinator configuration at `path` to `nodes` (id,
/// endpoint), keeping everything before them; written to a temporary file renamed into place, so
/// the coordinator (which re-reads the file when it changes) never sees half of it.
///
/// # Errors
/// If the file cannot be read or written.
pub fn set_coordinator_nodes(path: &Path, nodes: &[(u16, String)]) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = text.split("\n[[nodes]]").next().unwrap_or_default().trim_end().to_owned();
    out.push('\n');
    for (id, endpoint) in nodes {
        out.push_str(&format!("\n[[nodes]]\nid = {id}\nendpoint = \"{endpoint}\"\n"));
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `docker-compose ARGS…` for the compose cluster in `dir`.
fn docker_compose(dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new("docker-compose")
        .env("HYOK_COMPOSE_DIR", std::path::absolute(dir)?)
        .args(args)
        .output()
        .context("running docker-compose (is it installed, and is this the directory of docker-compose.yml?)")?;
    if !out.status.success() {
        bail!("docker-compose {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_list_is_replaced_and_the_rest_of_the_configuration_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coordinator.toml");
        std::fs::write(
            &path,
            "listen = \"0.0.0.0:7100\"\nthreshold = 3\n\n[[nodes]]\nid = 1\nendpoint = \"https://a\"\n",
        )
        .unwrap();
        set_coordinator_nodes(&path, &[(1, "https://node-1:7101".into()), (6, "https://node-6:7101".into())]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("listen = \"0.0.0.0:7100\"\nthreshold = 3\n"), "{text}");
        assert!(!text.contains("https://a"), "{text}");
        assert!(text.contains("id = 6\nendpoint = \"https://node-6:7101\""), "{text}");
        assert_eq!(text.matches("[[nodes]]").count(), 2);
        assert!(!path.with_extension("toml.tmp").exists());
    }

    #[test]
    fn a_directory_with_neither_record_is_an_error_naming_dev_json() {
        let dir = tempfile::tempdir().unwrap();
        let e = Operated::open(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("dev.json"), "{e:#}");
    }
}
