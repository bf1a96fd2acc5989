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

async fn node_client(tls: &TlsFiles, id: u16, endpoint: &str) -> Result<NodeClient<tonic::transport::Channel>> {
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
    Ok(Manifest::new(m.threshold(), nodes, m.coordinators().iter().copied())?)
}

/// What node `id` holds ACTIVE and settled: `(rsa, key, version) → generation`.
async fn held(client: &mut NodeClient<tonic::transport::Channel>) -> Result<BTreeMap<(bool, String, u32), u32>> {
    let mut out = BTreeMap::new();
    for s in client.list_key_states(pb::ListKeyStatesRequest {}).await?.into_inner().keys {
        for v in s.versions.iter().filter(|v| v.active && v.next.is_none()) {
            out.insert((false, s.key_id.clone(), v.version), v.generation);
        }
    }
    for s in client.list_rsa_key_states(pb::ListRsaKeyStatesRequest {}).await?.into_inner().keys {
        for v in s.versions.iter().filter(|v| v.active && v.next.is_none()) {
            out.insert((true, s.name.clone(), v.version), v.generation);
        }
    }
    Ok(out)
}

/// The key versions (EC and RSA) node `id` lacks at the generation the cluster trusts.
async fn lacking(
    vault: &mut hyok_proto::VaultClient,
    client: &mut NodeClient<tonic::transport::Channel>,
) -> Result<Vec<String>> {
    let mut trusted = Vec::new();
    for key in vault.list_keys(pb::ListKeysRequest {}).await?.into_inner().keys {
        trusted.extend(key.versions.iter().map(|v| (false, key.key_id.clone(), v.version, v.generation)));
    }
    for key in vault.list_rsa_keys(pb::ListRsaKeysRequest {}).await?.into_inner().keys {
        trusted.extend(key.versions.iter().map(|v| (true, key.name.clone(), v.version, v.generation)));
    }
    let held = held(client).await?;
    Ok(trusted
        .into_iter()
        .filter(|(rsa, key, version, generation)| held.get(&(*rsa, key.clone(), *version)) != Some(generation))
        .map(|(rsa, key, version, _)| format!("{}{key}/{version}", if rsa { "RSA " } else { "" }))
        .collect())
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
