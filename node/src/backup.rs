//! A node's sealed backup, and its restore: `hyok-node backup` / `hyok-node restore`.
//!
//! The backup is the node's whole store ([`hyok_store::Store::export`]: shares still sealed
//! under the node's seal key, its long-term keys, manifest, policy, vetoes and audit chain) with
//! the seal key itself, all sealed under the operator's **backup key** — a separate 32-byte key
//! file (mode 0600, made by the first backup) that the operator keeps away from the node. The
//! backup file alone opens nothing; with the backup key it is exactly this node, so keep it as
//! carefully as the node's disk. Taken from a stopped node (the others serve meanwhile).
//!
//! A restored node has its old identity, so its peers' manifests still pin it and it serves at
//! once; a version reshared since the backup was taken comes back at an old generation, which
//! the cluster no longer trusts, and the coordinator's repair loop reshares it to the node.
//!
//! ```text
//! file = "hyok-node-backup/1" ‖ seal(backup key, aad, 0x01 ‖ node seal key (32) ‖ store export)
//! aad  = "hyok/v1/node-backup"
//! ```

use anyhow::{Context, Result, bail};
use hyok_store::{AuditEvent, SealKey, Store};
use std::path::Path;
use zeroize::Zeroizing;

const MAGIC: &[u8] = b"hyok-node-backup/1";
const AAD: &[u8] = b"hyok/v1/node-backup";
const PAYLOAD_FORMAT: u8 = 0x01;

/// The operator's backup key in `path`, made (mode 0600) if there is none yet.
fn backup_key(path: &Path, create: bool) -> Result<SealKey> {
    if path.exists() || !create {
        return SealKey::load(path).with_context(|| format!("reading the backup key {}", path.display()));
    }
    eprintln!("made a new backup key {}: keep it apart from the node; without it no backup opens", path.display());
    Ok(SealKey::create(path)?)
}

/// `hyok-node backup`: the stopped node in `data_dir`, sealed under the backup key in
/// `key_file` (made if missing), written to `out` (mode 0600; refuses to overwrite). The
/// backup is audited in the node's own chain first, so the backup holds its own record.
pub fn backup(data_dir: &Path, out: &Path, key_file: &Path) -> Result<()> {
    let key = backup_key(key_file, true)?;
    let (store, _) = crate::server::open_store(data_dir)?;
    store.append_audit(&[AuditEvent {
        time_ms: crate::node::now_ms(),
        key_id: String::new(),
        version: 0,
        operation: "backup".to_owned(),
        request_id: out.display().to_string().chars().take(256).collect(),
        caller: "operator".to_owned(),
        digest: Vec::new(),
    }])?;
    let seal = SealKey::load(crate::server::seal_key_path(data_dir))?;
    let mut payload = Zeroizing::new(vec![PAYLOAD_FORMAT]);
    payload.extend_from_slice(&seal.to_backup_bytes());
    payload.extend_from_slice(&store.export()?);
    let mut file = MAGIC.to_vec();
    file.extend_from_slice(&key.seal(AAD, &payload)?);
    write_new(out, &file)
}

/// `hyok-node restore`: the backup in `from`, opened with the backup key in `key_file`, into
/// `data_dir`, which must hold no node yet. Nothing is written unless the backup opens whole.
pub fn restore(data_dir: &Path, from: &Path, key_file: &Path) -> Result<()> {
    let key = backup_key(key_file, false)?;
    let file = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let Some(sealed) = file.strip_prefix(MAGIC) else { bail!("{} is not a hyok node backup", from.display()) };
    let payload = key.open(AAD, sealed).map_err(|_| {
        anyhow::anyhow!("{} does not open with this backup key (another key, or damaged)", from.display())
    })?;
    let (format, rest) = payload.split_first().context("empty backup")?;
    if *format != PAYLOAD_FORMAT || rest.len() < 32 {
        bail!("{} is a backup of an unknown format", from.display());
    }
    let (seal_bytes, export) = rest.split_at(32);
    let seal_path = crate::server::seal_key_path(data_dir);
    if seal_path.exists() {
        bail!("{} already holds a node: restore only into an empty directory", data_dir.display());
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let seal = SealKey::restore(&seal_path, seal_bytes)?;
    let restored = Store::import(crate::server::db_path(data_dir), seal, export);
    if let Err(e) = restored {
        // Leave the directory as it was found: empty.
        let _ = std::fs::remove_file(&seal_path);
        let _ = std::fs::remove_dir_all(crate::server::db_path(data_dir));
        return Err(e.into());
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("writing {}", path.display()))
}
