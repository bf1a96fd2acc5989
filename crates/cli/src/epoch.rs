//! Membership changes as epochs, with the dev or the compose cluster ([`Operated`]): `hyokctl
//! cluster propose|accept|reject|execute|abort`. hyokctl plays every node's operator.
//!
//! - `propose --nodes N′ --threshold T′`: nodes `n+1..=N′` are made (certificates, processes or
//!   containers that initialize their own data directories, the operators' evidence policy) and the change from the manifest
//!   in force to `N′` nodes at `T′` is written to `DIR/proposal.json`; shrinking drops the
//!   highest ids (a threshold RSA key's shares are dealt for ids `1..=n′`). Nothing changes on
//!   any node yet.
//! - `accept [--node N]…`: each named node's operator (every node of the change by default)
//!   accepts it through its operator socket; the node signs its acceptance.
//! - `reject --node N`: node N's operator refuses (or withdraws its acceptance).
//! - `execute`: the coordinator reshares every version to the new members and commits the new
//!   epoch everywhere; then `DIR/manifest.json`, dev.json (or compose.json) and the coordinator's
//!   node list follow, and the nodes that left are stopped.
//! - `abort`: the change is abandoned on every node; nodes it had started are stopped.

use crate::operated::Operated;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use hyok_node::manifest::ProposalFile;
use hyok_node::operator::{self, OperatorRequest};
use hyok_proto::Role;
use hyok_proto::v1 as pb;
use hyok_threshold::epoch::Proposal;
use hyok_threshold::{Manifest, NodeId};
use std::path::{Path, PathBuf};

/// The pending change's file in the dev directory.
pub const PROPOSAL_FILE: &str = "proposal.json";

fn proposal_path(dir: &Path) -> PathBuf {
    dir.join(PROPOSAL_FILE)
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The change in `DIR/proposal.json`.
pub fn read_proposal(dir: &Path) -> Result<Proposal> {
    let path = proposal_path(dir);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (run `hyokctl cluster propose` first)", path.display()))?;
    let file: ProposalFile = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    file.to_proposal().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `from` resized to nodes `1..=nodes` at `threshold`, one epoch later; new nodes' identity keys
/// come from `joining`.
pub fn resized(
    from: &Manifest,
    nodes: u16,
    threshold: u16,
    joining: &[(NodeId, hyok_threshold::IdentityPublicKey)],
) -> Result<Manifest> {
    let mut members = Vec::new();
    for id in 1..=nodes {
        let id = NodeId::new(id)?;
        let key = from
            .identity(id)
            .copied()
            .or_else(|| joining.iter().find(|(j, _)| *j == id).map(|(_, k)| *k))
            .with_context(|| format!("no identity key for node {id}"))?;
        members.push((id, key));
    }
    let epoch = from.epoch().checked_add(1).context("the last epoch")?;
    Ok(Manifest::new(threshold, members, from.coordinators().iter().copied())?.with_epoch(epoch))
}

/// `hyokctl cluster propose --nodes N′ --threshold T′`.
pub async fn propose(target: &Target, nodes: u16, threshold: u16) -> Result<()> {
    let dir = &target.dev_dir;
    if proposal_path(dir).exists() {
        bail!("{} exists: execute or abort that change first", proposal_path(dir).display());
    }
    let from = hyok_node::manifest::read(&dir.join(crate::dev::MANIFEST_FILE))?;
    if threshold == 0 || threshold > nodes {
        bail!("--threshold must be between 1 and --nodes");
    }
    let mut cluster = Operated::open(dir)?;
    if matches!(cluster, Operated::Compose { .. }) && nodes > crate::compose::MAX_NODES {
        bail!("docker-compose.yml has services for {} nodes", crate::compose::MAX_NODES);
    }
    let pki = crate::pki::Pki::new(dir.join("pki"));
    let mut joining = Vec::new();
    let mut started = Vec::new();
    for id in (from.n() + 1)..=nodes {
        if !pki.identity(Role::Node(id)).cert.exists() {
            pki.issue(Role::Node(id), &[])?;
        }
        if !cluster.running().contains(&id) {
            // It initializes its own data directory (`--init`): its identity key never leaves it.
            cluster.start(id).await?;
        }
        let data_dir = cluster.data_dir(id)?;
        // The new node's identity key, in its own words (its operator socket).
        joining.push((NodeId::new(id)?, crate::operated::identity_of(&data_dir).await?));
        started.push((id, data_dir));
    }
    let to = resized(&from, nodes, threshold, &joining)?;
    let proposal = Proposal::new(from.clone(), to)?;
    if !started.is_empty() {
        let policy =
            hyok_evidence::policy::PolicyFile::load(&dir.join(crate::policy::POLICY_FILE)).context("the policy")?;
        crate::policy::install_running(&started, &policy).await?;
    }
    coordinator_reaches(target, &cluster.running()).await?;
    let text = serde_json::to_string_pretty(&ProposalFile::from_proposal(&proposal))? + "\n";
    write_atomic(&proposal_path(dir), &text)?;
    println!(
        "proposed: epoch {} → {}: {} nodes at t = {} → {} nodes at t = {}\ndigest {}\nwritten to {}",
        from.epoch(),
        proposal.epoch(),
        from.n(),
        from.threshold(),
        proposal.to().n(),
        proposal.to().threshold(),
        hex::encode(proposal.digest()),
        proposal_path(dir).display()
    );
    Ok(())
}

/// Waits (up to 60 s) until the coordinator, having re-read its node list, reaches every node
/// of `ids`.
async fn coordinator_reaches(target: &Target, ids: &[u16]) -> Result<()> {
    let mut vault = target.connect().await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = vault.cluster_status(pb::ClusterStatusRequest::default()).await?.into_inner();
        let reached = ids.iter().all(|id| status.nodes.iter().any(|n| n.node_id == u32::from(*id) && n.reachable));
        if reached {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the coordinator does not reach every node of {ids:?} (does it read coordinator.toml?)");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `hyokctl cluster accept [--node N]…` (every node of the change when none is named).
pub async fn accept(target: &Target, only: &[u16]) -> Result<()> {
    let dir = &target.dev_dir;
    let proposal = read_proposal(dir)?;
    let cluster = Operated::open(dir)?;
    let ids: Vec<u16> =
        if only.is_empty() { proposal.affected().into_iter().map(NodeId::get).collect() } else { only.to_vec() };
    let request = OperatorRequest::EpochAccept { proposal: ProposalFile::from_proposal(&proposal) };
    for id in ids {
        let shown = operator::exchange_epoch(&cluster.data_dir(id)?, &request)
            .await
            .with_context(|| format!("node {id}'s operator accepting the change"))?;
        println!("node {id}: accepted {}", shown.map(|s| s.digest).unwrap_or_default());
    }
    Ok(())
}

/// `hyokctl cluster reject --node N`.
pub async fn reject(target: &Target, ids: &[u16]) -> Result<()> {
    let cluster = Operated::open(&target.dev_dir)?;
    for id in ids {
        let shown = operator::exchange_epoch(&cluster.data_dir(*id)?, &OperatorRequest::EpochReject).await?;
        match shown {
            Some(s) => println!("node {id}: rejected {}", s.digest),
            None => println!("node {id}: had accepted no pending change"),
        }
    }
    Ok(())
}

/// `hyokctl cluster execute`.
pub async fn execute(target: &Target) -> Result<()> {
    let dir = &target.dev_dir;
    let proposal = read_proposal(dir)?;
    let mut vault = target.connect().await?;
    let done = vault
        .execute_epoch(pb::ExecuteEpochRequest { request_id: "hyokctl cluster execute".into() })
        .await
        .map_err(|s| anyhow::anyhow!("{}: {}", s.code(), s.message()))?
        .into_inner();
    for v in &done.versions {
        let family = if v.rsa { "RSA " } else { "" };
        println!("  {family}{}/{}: generation {} on nodes {:?}", v.key_id, v.version, v.generation, v.receivers);
    }
    let to = proposal.to();
    write_atomic(&dir.join(crate::dev::MANIFEST_FILE), &hyok_node::manifest::to_json(to))?;
    for id in Operated::open(dir)?.settle(to)? {
        println!("node {id}: left the cluster (shares deleted: {}), stopped", done.retired.contains(&u32::from(id)));
    }
    std::fs::remove_file(proposal_path(dir))?;
    println!(
        "epoch {} in force: {} nodes, t = {}; {} versions reshared",
        done.epoch,
        to.n(),
        to.threshold(),
        done.versions.len()
    );
    Ok(())
}

/// `hyokctl cluster abort`.
pub async fn abort(target: &Target) -> Result<()> {
    let dir = &target.dev_dir;
    let proposal = read_proposal(dir)?;
    let mut vault = target.connect().await?;
    let answer = vault.abort_epoch(pb::AbortEpochVaultRequest { request_id: "hyokctl cluster abort".into() }).await;
    match answer {
        Ok(done) => println!("abandoned on nodes {:?}", done.into_inner().nodes),
        // A failed execution abandons the change itself: nothing is left on the nodes.
        Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().starts_with("no node's operator") => {
            println!("no node holds the change any more (a failed execution abandoned it)");
        }
        Err(s) => bail!("{}: {}", s.code(), s.message()),
    }
    let from = proposal.from();
    for id in Operated::open(dir)?.settle(from)? {
        println!("node {id}: not a member of epoch {}, stopped", from.epoch());
    }
    std::fs::remove_file(proposal_path(dir))?;
    println!("epoch {} serves on: {} nodes, t = {}", from.epoch(), from.n(), from.threshold());
    Ok(())
}

/// `hyokctl cluster status`'s epoch lines: each running node's epoch and the change it
/// accepted, as its operator socket reports them.
pub async fn describe(target: &Target) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (id, data_dir) in Operated::open(&target.dev_dir)?.data_dirs() {
        let shown = async {
            let (_, manifest) = operator::exchange(&data_dir, &OperatorRequest::ManifestShow).await?;
            let accepted = operator::exchange_epoch(&data_dir, &OperatorRequest::EpochShow).await?;
            anyhow::Ok((manifest, accepted))
        };
        let line = match shown.await {
            Err(_) => "unreachable".to_owned(),
            Ok((manifest, accepted)) => {
                let manifest = manifest.and_then(|m| m.manifest.to_manifest().ok());
                let mut line = match &manifest {
                    Some(m) => format!("epoch {} ({} nodes, t = {})", m.epoch(), m.n(), m.threshold()),
                    None => "no manifest".to_owned(),
                };
                if let Some(change) = accepted
                    && let Ok(p) = change.proposal.to_proposal()
                    && manifest.as_ref() != Some(p.to())
                {
                    let _ = write!(line, "; accepted the change to epoch {} ({})", p.epoch(), change.digest);
                }
                line
            }
        };
        let _ = writeln!(out, "node {id}: {line}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_threshold::IdentitySecret;

    #[test]
    fn resizing_keeps_every_staying_identity_adds_the_joining_ones_and_moves_one_epoch() {
        let mut rng = rand::rng();
        let keys: Vec<_> =
            (1..=7u16).map(|i| (NodeId::new(i).unwrap(), IdentitySecret::generate(&mut rng).public_key())).collect();
        let from = Manifest::new(3, keys[..5].iter().copied(), [[1u8; 32]]).unwrap();
        let grown = resized(&from, 7, 4, &keys[5..]).unwrap();
        assert_eq!((grown.epoch(), grown.n(), grown.threshold()), (1, 7, 4));
        assert_eq!(grown.nodes().iter().map(|(i, k)| (*i, *k)).collect::<Vec<_>>(), keys);
        let shrunk = resized(&grown, 5, 3, &[]).unwrap();
        assert_eq!((shrunk.epoch(), shrunk.nodes().len()), (2, 5));
        assert_eq!(shrunk.identity(NodeId::new(5).unwrap()), Some(&keys[4].1));
        assert!(resized(&from, 6, 3, &[]).is_err(), "a joining node needs its identity key");
        Proposal::new(from, grown).unwrap();
    }
}
