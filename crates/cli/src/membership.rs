//! Keeping keys alive across node losses: `hyokctl node replace N` and `hyokctl cluster
//! refresh|repair|status`.
//!
//! With the dev cluster, hyokctl plays every node's operator: it reads the replacement node's
//! new identity from the node itself, writes it into `DIR/manifest.json`, installs that manifest
//! into every running node through its operator socket (each operator accepting the change), gives
//! the new node the evidence policy, and then has the coordinator reshare every version the new
//! node lacks. The old holders deal their shares afresh; the new node's old shares, if anyone
//! kept them, no longer combine with anything.

use crate::devfile::DevFile;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::{Role, TlsFiles};
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId};
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Endpoint;

/// How often `replace` asks the coordinator to repair before it gives up.
const REPAIR_ATTEMPTS: usize = 20;

pub(crate) async fn node_client(
    tls: &TlsFiles,
    id: u16,
    endpoint: &str,
) -> Result<NodeClient<tonic::transport::Channel>> {
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls.client_config(&Role::Node(id).proof_name())?)?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("reaching node {id} at {endpoint}"))?;
    Ok(NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

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

/// Everything node `client` holds, EC and RSA.
async fn held(client: &mut NodeClient<tonic::transport::Channel>) -> Result<BTreeMap<VersionId, Holding>> {
    let mut out = BTreeMap::new();
    let holding =
        |active: bool, g: u32, p: &Option<pb::NodeKeyGeneration>, n: &Option<pb::NodeKeyGeneration>| Holding {
            current: active.then_some(g),
            previous: p.as_ref().map(|p| p.generation),
            next: n.as_ref().map(|n| n.generation),
        };
    for s in client.list_key_states(pb::ListKeyStatesRequest {}).await?.into_inner().keys {
        for v in &s.versions {
            out.insert((false, s.key_id.clone(), v.version), holding(v.active, v.generation, &v.previous, &v.next));
        }
    }
    for s in client.list_rsa_key_states(pb::ListRsaKeyStatesRequest {}).await?.into_inner().keys {
        for v in &s.versions {
            out.insert((true, s.name.clone(), v.version), holding(v.active, v.generation, &v.previous, &v.next));
        }
    }
    Ok(out)
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

/// The key versions (EC and RSA) node `client` lacks at the generation the cluster trusts.
async fn lacking(
    vault: &mut hyok_proto::VaultClient,
    client: &mut NodeClient<tonic::transport::Channel>,
) -> Result<Vec<String>> {
    let held = held(client).await?;
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

/// `hyokctl cluster status` with the dev cluster (it reads every node).
pub async fn status(target: &Target) -> Result<()> {
    let mut vault = target.connect().await?;
    let trusted = trusted(&mut vault).await?;
    let (nodes, tls) = target.nodes()?;
    let mut held_by = Vec::new();
    for (id, endpoint) in nodes {
        let held = match node_client(&tls, id, &endpoint).await {
            Ok(mut client) => held(&mut client).await.ok(),
            Err(_) => None,
        };
        held_by.push((id, held));
    }
    print!("{}", render_status(&trusted, &held_by));
    Ok(())
}

/// `hyokctl node replace N` with the dev cluster: see the module docs. Returns once node N holds
/// every version of every key, EC and threshold RSA, at the generation the cluster trusts.
pub async fn replace(target: &Target, id: u16) -> Result<()> {
    let dev = DevFile::load(&target.dev_dir)?;
    let node = dev.nodes.iter().find(|n| n.id == id).with_context(|| format!("no node {id} in dev.json"))?;
    let (_, tls) = target.nodes()?;
    let mut client = node_client(&tls, id, &node.endpoint).await?;
    let identity = client.get_identity(pb::GetIdentityRequest {}).await?.into_inner();
    let identity = IdentityPublicKey::from_slice(&identity.identity_public_key)?;
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
    for n in &dev.nodes {
        hyok_node::operator::exchange(&n.data_dir, &request)
            .await
            .with_context(|| format!("installing the manifest into node {}", n.id))?;
    }
    // The new node gets the operators' evidence policy, as every node has.
    let policy = hyok_evidence::policy::PolicyFile::load(&target.dev_dir.join(crate::policy::POLICY_FILE))?;
    crate::policy::install_running(&[(id, node.data_dir.clone())], &policy).await?;

    let mut vault = target.connect().await?;
    for attempt in 1..=REPAIR_ATTEMPTS {
        let missing = lacking(&mut vault, &mut client).await?;
        if missing.is_empty() {
            println!("node {id} holds every key version again, EC and RSA");
            return Ok(());
        }
        println!("node {id} lacks {}; resharing (attempt {attempt})", missing.join(", "));
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
