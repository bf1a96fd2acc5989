//! Keeping keys alive across node losses: `hyokctl node replace N` and `hyokctl cluster
//! refresh|repair|status`.
//!
//! With the dev or the compose cluster ([`Operated`]), hyokctl plays every node's operator: it
//! reads the replacement node's new identity from the node itself (its operator socket), writes it into `DIR/manifest.json`, installs that manifest
//! into every running node through its operator socket (each operator accepting the change), gives
//! the new node the evidence policy, and then has the coordinator reshare every version the new
//! node lacks. The old holders deal their shares afresh; the new node's old shares, if anyone
//! kept them, no longer combine with anything.

use crate::operated::Operated;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use hyok_proto::v1 as pb;
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// How often `replace` asks the coordinator to repair before it gives up.
const REPAIR_ATTEMPTS: usize = 20;

/// `m` with node `id`'s identity key replaced by `identity` (t and coordinators unchanged).
pub fn with_identity(m: &Manifest, id: NodeId, identity: IdentityPublicKey) -> Result<Manifest> {
    if m.identity(id).is_none() {
        bail!("node {id} is not in the cluster manifest");
    }
    let nodes: Vec<(NodeId, IdentityPublicKey)> =
        m.nodes().iter().map(|(n, k)| (*n, if *n == id { identity } else { *k })).collect();
    Ok(Manifest::new(m.threshold(), nodes, m.coordinators().iter().copied())?.with_epoch(m.epoch()))
}

/// A key version: `(rsa, key, version)`.
type VersionId = (bool, String, u32);

/// What one node holds of one version: its current generation (if ACTIVE), the one a
/// committed reshare replaced, and a reshare's uncommitted output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holding {
    /// The current share's generation, if the version is ACTIVE here.
    pub current: Option<u32>,
    /// A replaced generation still kept.
    pub previous: Option<u32>,
    /// A reshare's output not yet committed.
    pub next: Option<u32>,
}

impl Holding {
    /// Holds `generation` as its current share, with nothing pending.
    fn settled_at(&self, generation: u32) -> bool {
        self.current == Some(generation) && self.next.is_none()
    }
    fn describe(&self) -> String {
        let mut out = self.current.map_or_else(|| "-".to_owned(), |g| format!("g{g}"));
        if let Some(p) = self.previous {
            out.push_str(&format!("(+g{p})"));
        }
        if let Some(n) = self.next {
            out.push_str(&format!("→g{n}?"));
        }
        out
    }
}

/// Everything the node serving `data_dir` holds, EC and RSA, as its operator socket reports it.
async fn held(data_dir: &Path) -> Result<BTreeMap<VersionId, Holding>> {
    let state = hyok_node::operator::state_of(data_dir).await?;
    Ok(state
        .versions
        .into_iter()
        .map(|v| {
            let holding = Holding { current: v.active.then_some(v.generation), previous: v.previous, next: v.next };
            ((v.rsa, v.key, v.version), holding)
        })
        .collect())
}

/// Every version the cluster trusts, with the generation in use.
async fn trusted(vault: &mut hyok_proto::VaultClient) -> Result<Vec<(VersionId, u32)>> {
    let mut out = Vec::new();
    for key in vault.list_keys(pb::ListKeysRequest {}).await?.into_inner().keys {
        out.extend(key.versions.iter().map(|v| ((false, key.key_id.clone(), v.version), v.generation)));
    }
    for key in vault.list_rsa_keys(pb::ListRsaKeysRequest {}).await?.into_inner().keys {
        out.extend(key.versions.iter().map(|v| ((true, key.name.clone(), v.version), v.generation)));
    }
    Ok(out)
}

fn name((rsa, key, version): &VersionId) -> String {
    format!("{}{key}/{version}", if *rsa { "RSA " } else { "" })
}

/// The key versions (EC and RSA) the node serving `data_dir` lacks at the generation the
/// cluster trusts.
async fn lacking(vault: &mut hyok_proto::VaultClient, data_dir: &Path) -> Result<Vec<String>> {
    let held = held(data_dir).await?;
    Ok(trusted(vault)
        .await?
        .into_iter()
        .filter(|(id, generation)| !held.get(id).is_some_and(|h| h.settled_at(*generation)))
        .map(|(id, _)| name(&id))
        .collect())
}

/// `hyokctl cluster status` as text: per trusted version, its generation and what each node
/// holds (`g2` current, `(+g1)` a replaced one still kept, `→g3?` an uncommitted reshare, `-`
/// nothing; `?` an unreachable node), and the versions that still need repair.
pub fn render_status(trusted: &[(VersionId, u32)], nodes: &[(u16, Option<BTreeMap<VersionId, Holding>>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut unsettled = 0;
    for (id, generation) in trusted {
        let _ = write!(out, "{:<24} generation {generation:<3}", name(id));
        let mut settled = true;
        for (node, held) in nodes {
            let cell = match held {
                None => "?".to_owned(),
                Some(held) => {
                    let h = held.get(id).copied().unwrap_or_default();
                    settled &= h.settled_at(*generation) && h.previous.is_none();
                    h.describe()
                }
            };
            let _ = write!(out, "  {node}:{cell}");
        }
        unsettled += usize::from(!settled);
        out.push('\n');
    }
    if unsettled == 0 {
        out.push_str("every reachable node holds every version at its generation, and nothing else\n");
    } else {
        let _ = writeln!(out, "{unsettled} versions are not settled on every reachable node (repair runs on its own)");
    }
    out
}

/// `hyokctl cluster status` (it asks every running node through its operator socket).
pub async fn status(target: &Target) -> Result<()> {
    let mut vault = target.connect().await?;
    let trusted = trusted(&mut vault).await?;
    let mut held_by = Vec::new();
    for (id, data_dir) in Operated::open(&target.dev_dir)?.data_dirs() {
        held_by.push((id, held(&data_dir).await.ok()));
    }
    print!("{}", render_status(&trusted, &held_by));
    Ok(())
}

/// `hyokctl node replace N` with the dev or the compose cluster: see the module docs. Returns
/// once node N holds every version of every key, EC and threshold RSA, at the generation the
/// cluster trusts, and the generations that repair replaced are dropped.
pub async fn replace(target: &Target, id: u16) -> Result<()> {
    let cluster = Operated::open(&target.dev_dir)?;
    let data_dir = cluster.data_dir(id)?;
    // The replacement's identity key, in its own words (its operator socket).
    let identity = crate::operated::identity_of(&data_dir).await?;
    let node_id = NodeId::new(id)?;

    // Each operator accepts the new identity: the manifest, then every running node's copy.
    let path = target.dev_dir.join(crate::dev::MANIFEST_FILE);
    let old = hyok_node::manifest::read(&path)?;
    let manifest = with_identity(&old, node_id, identity)?;
    if manifest != old {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, hyok_node::manifest::to_json(&manifest))?;
        std::fs::rename(&tmp, &path)?;
        println!("manifest: node {id}'s identity is now {}", hex::encode(identity.as_bytes()));
    }
    let file = hyok_node::manifest::ManifestFile::from_manifest(&manifest);
    let request = hyok_node::operator::OperatorRequest::ManifestInstall { manifest: file };
    for (n, dir) in cluster.data_dirs() {
        hyok_node::operator::exchange(&dir, &request)
            .await
            .with_context(|| format!("installing the manifest into node {n}"))?;
    }
    // The new node gets the operators' evidence policy, as every node has.
    let policy = hyok_evidence::policy::PolicyFile::load(&target.dev_dir.join(crate::policy::POLICY_FILE))?;
    crate::policy::install_running(&[(id, data_dir.clone())], &policy).await?;

    // A repair pass is asked for first even if the node already holds everything: the coordinator
    // runs one pass at a time, so this one starts only after any pass already under way (its
    // repair loop's, which may have served the node first) has finalized, and no replaced
    // generation is left when this returns.
    let mut vault = target.connect().await?;
    for attempt in 1..=REPAIR_ATTEMPTS {
        println!("node {id}: resharing what it lacks (attempt {attempt})");
        let done = vault
            .reshare_keys(pb::ReshareKeysRequest {
                key_id: String::new(),
                missing_only: true,
                request_id: format!("hyokctl node replace {id}"),
            })
            .await?
            .into_inner();
        for v in &done.versions {
            print_reshared(v);
        }
        let missing = lacking(&mut vault, &data_dir).await?;
        if missing.is_empty() {
            println!("node {id} holds every key version again, EC and RSA");
            return Ok(());
        }
        println!("node {id} still lacks {}", missing.join(", "));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("node {id} still lacks key versions after {REPAIR_ATTEMPTS} attempts")
}

fn print_reshared(v: &pb::ResharedVersion) {
    let family = if v.rsa { "RSA " } else { "" };
    if v.error.is_empty() {
        println!("  {family}{}/{}: generation {} on nodes {:?}", v.key_id, v.version, v.generation, v.receivers);
    } else {
        println!("  {family}{}/{}: not reshared: {}", v.key_id, v.version, v.error);
    }
}

/// `hyokctl cluster refresh [--key K]`: every version (of K) reshared to the same members: new
/// shares everywhere, old ones dropped, group keys unchanged.
pub async fn refresh(target: &Target, key: Option<&str>, missing_only: bool) -> Result<()> {
    let mut vault = target.connect().await?;
    let done = vault
        .reshare_keys(pb::ReshareKeysRequest {
            key_id: key.unwrap_or_default().to_owned(),
            missing_only,
            request_id: if missing_only { "hyokctl cluster repair" } else { "hyokctl cluster refresh" }.to_owned(),
        })
        .await?
        .into_inner();
    for v in &done.versions {
        print_reshared(v);
    }
    let failed = done.versions.iter().filter(|v| !v.error.is_empty()).count();
    if failed > 0 {
        bail!("{failed} of {} versions were not reshared (their old generation serves on)", done.versions.len());
    }
    println!("{} versions reshared", done.versions.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_identity_keeps_the_epoch_t_and_every_other_node() {
        use hyok_threshold::IdentitySecret;
        let mut rng = rand::rng();
        let keys: Vec<_> =
            (1..=3u16).map(|i| (NodeId::new(i).unwrap(), IdentitySecret::generate(&mut rng).public_key())).collect();
        let m = Manifest::new(2, keys.clone(), [[1u8; 32]]).unwrap().with_epoch(4);
        let fresh = IdentitySecret::generate(&mut rng).public_key();
        let two = NodeId::new(2).unwrap();
        let replaced = with_identity(&m, two, fresh).unwrap();
        assert_eq!((replaced.epoch(), replaced.threshold(), replaced.identity(two)), (4, 2, Some(&fresh)));
        assert_eq!(replaced.identity(keys[0].0), Some(&keys[0].1));
        assert!(with_identity(&m, NodeId::new(9).unwrap(), fresh).is_err());
    }

    #[test]
    fn status_shows_each_nodes_generations_and_what_is_not_settled() {
        let demo = (false, "demo".to_owned(), 1);
        let dke = (true, "dke".to_owned(), 1);
        let at = |g| Holding { current: Some(g), ..Holding::default() };
        let settled: BTreeMap<_, _> = [(demo.clone(), at(2)), (dke.clone(), at(1))].into();
        let mid: BTreeMap<_, _> =
            [(demo.clone(), Holding { current: Some(2), previous: Some(1), next: None }), (dke.clone(), at(1))].into();
        let trusted = vec![(demo.clone(), 2), (dke.clone(), 1)];
        let text = render_status(&trusted, &[(1, Some(settled.clone())), (2, Some(settled.clone()))]);
        assert!(text.contains("demo/1") && text.contains("RSA dke/1") && text.contains("1:g2  2:g2"), "{text}");
        assert!(text.ends_with("and nothing else\n"), "{text}");
        let text = render_status(&trusted, &[(1, Some(mid)), (2, None), (3, Some(BTreeMap::new()))]);
        assert!(text.contains("1:g2(+g1)  2:?  3:-"), "{text}");
        assert!(text.contains("2 versions are not settled"), "{text}");
    }
}
