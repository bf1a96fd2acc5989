//! `hyokctl audit verify`: reads a node's audit log over `ReadAudit` (admin role) and walks
//! its hash chain, reporting the first break; the chain must end at the head the node signed
//! with the audit key its identity key certifies.

use crate::target::Target;
use anyhow::{Result, bail};
use hyok_proto::Role;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_store::{AuditBreak, AuditEntry, AuditEvent};
use hyok_threshold::audit_head::{self, HeadSignature};
use hyok_threshold::{IdentityPublicKey, Manifest, NodeId, SignedKeyBundle, Wire};
use tonic::transport::Endpoint;

/// Entries per `ReadAudit` page.
const PAGE: u32 = 1000;

fn entry(e: pb::AuditEntry) -> Result<AuditEntry> {
    let hash = |b: Vec<u8>| -> Result<[u8; 32]> {
        b.try_into().map_err(|_| anyhow::anyhow!("audit entry {} has a hash of the wrong length", e.seq))
    };
    Ok(AuditEntry {
        seq: e.seq,
        event: AuditEvent {
            time_ms: e.time_ms,
            key_id: e.key_id,
            version: e.version,
            operation: e.operation,
            request_id: e.request_id,
            caller: e.caller,
            digest: e.digest,
        },
        prev_hash: hash(e.prev_hash)?,
        hash: hash(e.hash)?,
    })
}

/// Reads node `id`'s whole log and verifies it: `Ok(n)` entries, or the first break. The chain
/// must end at the head the node signed with the audit key of its key bundle, which must verify
/// under the node's identity key: the one `manifest` (the operator's copy) pins, else the key the
/// node presents.
pub async fn verify_node(
    target: &Target,
    id: u16,
    endpoint: &str,
    manifest: Option<&Manifest>,
) -> Result<Result<u64, AuditBreak>> {
    let (_, tls) = target.nodes()?;
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls.client_config(&Role::Node(id).proof_name())?)?
        .connect()
        .await?;
    let mut client = NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let node = NodeId::new(id)?;
    let identity = client.get_identity(pb::GetIdentityRequest {}).await?.into_inner();
    let identity_key = match manifest.and_then(|m| m.identity(node)) {
        // The operator's copy of the manifest pins the identity key: the node's word is not used.
        Some(pinned) => *pinned,
        None if manifest.is_some() => bail!("node {id} is not in the cluster manifest"),
        None => IdentityPublicKey::from_slice(&identity.identity_public_key)
            .map_err(|_| anyhow::anyhow!("node {id} presents a malformed identity key"))?,
    };
    let bundle = SignedKeyBundle::from_bytes(&identity.key_bundle)
        .map_err(|_| anyhow::anyhow!("node {id} presents a malformed key bundle"))?
        .verify(node, &identity_key)
        .map_err(|_| anyhow::anyhow!("node {id}'s key bundle does not verify under its identity key"))?;
    let mut entries = Vec::new();
    let mut from = 1u64;
    // The log may grow while it is read: read on until the signed head is the last entry read.
    for _ in 0..100 {
        let page = client.read_audit(pb::ReadAuditRequest { from_seq: from, limit: PAGE }).await?.into_inner();
        let head = page.head.ok_or_else(|| anyhow::anyhow!("node {id} sent no signed audit head"))?;
        let full = page.entries.len() as u32 == PAGE;
        if page.entries.is_empty() && head.seq > entries.len() as u64 {
            bail!("node {id}: the signed head says {} entries, the log gives {}", head.seq, entries.len());
        }
        if let Some(last) = page.entries.last() {
            from = last.seq + 1;
        }
        for e in page.entries {
            entries.push(entry(e)?);
        }
        if full || head.seq > entries.len() as u64 {
            continue;
        }
        let hash: [u8; 32] = head
            .hash
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("node {id}: audit head hash of the wrong length"))?;
        let signature = HeadSignature::from_bytes(&head.signature)
            .map_err(|_| anyhow::anyhow!("node {id}: malformed audit head signature"))?;
        audit_head::vartime_verify_head(bundle.audit(), node, head.seq, &hash, &signature)
            .map_err(|_| anyhow::anyhow!("node {id}: the audit head is not signed by the node's audit key"))?;
        let last = entries.last().map_or([0; 32], |e| e.hash);
        if head.seq != entries.len() as u64 || hash != last {
            bail!("node {id}: the log read does not end at the head the node signed (seq {})", head.seq);
        }
        return Ok(hyok_store::audit::verify_entries(entries));
    }
    bail!("node {id}: the audit log kept growing faster than it could be read")
}

/// `audit verify [--node ID]`: every node of the dev cluster, or one.
pub async fn verify(target: &Target, only: Option<u16>) -> Result<()> {
    let (nodes, _) = target.nodes()?;
    // The dev cluster's manifest, when there is one: identities come from it, not from the nodes.
    let manifest_path = target.dev_dir.join(crate::dev::MANIFEST_FILE);
    let manifest = if manifest_path.exists() { Some(hyok_node::manifest::read(&manifest_path)?) } else { None };
    match &manifest {
        Some(_) => println!("identity keys from {}", manifest_path.display()),
        None => println!("no manifest at {}: identity keys as the nodes present them", manifest_path.display()),
    }
    let mut broken = 0;
    for (id, endpoint) in nodes.iter().filter(|(id, _)| only.is_none_or(|o| o == *id)) {
        match verify_node(target, *id, endpoint, manifest.as_ref()).await {
            Ok(Ok(n)) => println!("node {id}: audit chain intact ({n} entries)"),
            Ok(Err(b)) => {
                broken += 1;
                println!("node {id}: {b}");
            }
            Err(e) => {
                broken += 1;
                println!("node {id}: could not read the audit log: {e:#}");
            }
        }
    }
    if broken > 0 {
        bail!("{broken} node(s) failed audit verification");
    }
    Ok(())
}
