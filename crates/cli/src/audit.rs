//! `hyokctl audit verify`: reads a node's audit log over `ReadAudit` (admin role) and walks
//! its hash chain, reporting the first break.

use crate::target::Target;
use anyhow::{Result, bail};
use hyok_proto::Role;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_store::{AuditBreak, AuditEntry, AuditEvent};
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
        },
        prev_hash: hash(e.prev_hash)?,
        hash: hash(e.hash)?,
    })
}

/// Reads node `id`'s whole log and verifies it: `Ok(n)` entries, or the first break.
pub async fn verify_node(target: &Target, id: u16, endpoint: &str) -> Result<Result<u64, AuditBreak>> {
    let (_, tls) = target.nodes()?;
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls.client_config(&Role::Node(id).proof_name())?)?
        .connect()
        .await?;
    let mut client = NodeClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let mut entries = Vec::new();
    let mut from = 1u64;
    loop {
        let page = client.read_audit(pb::ReadAuditRequest { from_seq: from, limit: PAGE }).await?.into_inner().entries;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        let full = page.len() as u32 == PAGE;
        for e in page {
            entries.push(entry(e)?);
        }
        if !full {
            break;
        }
    }
    Ok(hyok_store::audit::verify_entries(entries))
}

/// `audit verify [--node ID]`: every node of the dev cluster, or one.
pub async fn verify(target: &Target, only: Option<u16>) -> Result<()> {
    let (nodes, _) = target.nodes()?;
    let mut broken = 0;
    for (id, endpoint) in nodes.iter().filter(|(id, _)| only.is_none_or(|o| o == *id)) {
        match verify_node(target, *id, endpoint).await {
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
