//! `hyokctl key …`: create, list, show, rotate, enable, disable.

use crate::target::Target;
use anyhow::Result;
use hyok_proto::v1 as pb;
use std::fmt::Write as _;

/// Usage names as the CLI spells them.
pub fn parse_usage(name: &str) -> Result<pb::KeyUsage> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "encrypt" => pb::KeyUsage::Encrypt,
        "decrypt" => pb::KeyUsage::Decrypt,
        "wrap" => pb::KeyUsage::Wrap,
        "unwrap" => pb::KeyUsage::Unwrap,
        other => anyhow::bail!("unknown usage {other:?} (encrypt, decrypt, wrap, unwrap)"),
    })
}

fn usage_names(usages: &[i32]) -> String {
    let names: Vec<String> = usages
        .iter()
        .filter_map(|u| pb::KeyUsage::try_from(*u).ok())
        .map(|u| u.as_str_name().trim_start_matches("KEY_USAGE_").to_lowercase())
        .collect();
    names.join(",")
}

fn state_name(state: i32) -> &'static str {
    match pb::KeyState::try_from(state) {
        Ok(pb::KeyState::Enabled) => "enabled",
        Ok(pb::KeyState::Disabled) => "disabled",
        _ => "unknown",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One key, in detail.
pub fn describe(info: &pb::KeyInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "key        {}", info.key_id);
    let _ = writeln!(out, "state      {}", state_name(info.state));
    let _ = writeln!(out, "usages     {}", usage_names(&info.usages));
    let _ = writeln!(out, "threshold  {} of {}", info.threshold, info.nodes);
    let _ = writeln!(out, "primary    v{}", info.primary_version);
    for v in &info.versions {
        let _ = writeln!(
            out,
            "  v{:<6} public key {}  created {} ms  generation {}",
            v.version,
            hex(&v.public_key),
            v.created_at_ms,
            v.generation
        );
    }
    out
}

/// Keys as a table.
pub fn table(keys: &[pb::KeyInfo]) -> String {
    let mut out = format!("{:<32} {:<9} {:<8} {:<9} USAGES\n", "KEY", "STATE", "PRIMARY", "VERSIONS");
    for k in keys {
        let _ = writeln!(
            out,
            "{:<32} {:<9} v{:<7} {:<9} {}",
            k.key_id,
            state_name(k.state),
            k.primary_version,
            k.versions.len(),
            usage_names(&k.usages)
        );
    }
    out
}

/// `key create`.
pub async fn create(target: &Target, key_id: &str, usages: &[String]) -> Result<()> {
    let usages = usages.iter().map(|u| parse_usage(u).map(|u| u as i32)).collect::<Result<Vec<_>>>()?;
    let info = target
        .connect()
        .await?
        .create_key(pb::CreateKeyRequest {
            key_id: key_id.into(),
            usages,
            request_id: hyok_proto::request_id::generate("hyokctl"),
        })
        .await?
        .into_inner();
    print!("{}", describe(&info));
    Ok(())
}

/// `key list`.
pub async fn list(target: &Target) -> Result<()> {
    let keys = target.connect().await?.list_keys(pb::ListKeysRequest {}).await?.into_inner().keys;
    print!("{}", table(&keys));
    Ok(())
}

/// `key show`.
pub async fn show(target: &Target, key_id: &str) -> Result<()> {
    let info = target.connect().await?.get_key(pb::GetKeyRequest { key_id: key_id.into() }).await?.into_inner();
    print!("{}", describe(&info));
    Ok(())
}

/// `key rotate`.
pub async fn rotate(target: &Target, key_id: &str) -> Result<()> {
    let info = target
        .connect()
        .await?
        .rotate_key(pb::RotateKeyRequest {
            key_id: key_id.into(),
            request_id: hyok_proto::request_id::generate("hyokctl"),
        })
        .await?
        .into_inner();
    print!("{}", describe(&info));
    Ok(())
}

/// `key enable` / `key disable`.
pub async fn set_enabled(target: &Target, key_id: &str, enabled: bool) -> Result<()> {
    let mut client = target.connect().await?;
    let info = if enabled {
        client
            .enable_key(pb::EnableKeyRequest {
                key_id: key_id.into(),
                request_id: hyok_proto::request_id::generate("hyokctl"),
            })
            .await?
    } else {
        client
            .disable_key(pb::DisableKeyRequest {
                key_id: key_id.into(),
                request_id: hyok_proto::request_id::generate("hyokctl"),
            })
            .await?
    }
    .into_inner();
    print!("{}", describe(&info));
    Ok(())
}
