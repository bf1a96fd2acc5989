//! `hyokctl rsa …`: the threshold RSA key ceremony (`import`) and RSA key listing.
//!
//! `rsa import` is **the one place a whole RSA private key exists**, briefly, on the operator's
//! machine: it reads the PEM, splits `d` into one share per node ([`deal`]), seals each share
//! to its node's **seal key** (bound to the key name, version, node and public package), drops
//! the private key and the shares (both zeroized on drop), and only then sends the sealed
//! shares through the coordinator, which can open none of them.
//!
//! The node identity keys come from **the operator's copy of the cluster manifest**
//! (`--manifest FILE`; the dev cluster's `DIR/manifest.json` by default), never from the
//! coordinator: the ceremony refuses to run without one, deals `t`-of-`n` as the manifest says,
//! and takes only the key bundles from the coordinator's `ClusterStatus`, each verified under the
//! identity key the manifest pins for its node. The seal key is taken from the verified bundle
//! only. `--expect-identity ID=HEX` pins, when given, must agree with the manifest too.

use crate::target::Target;
use anyhow::{Context, Result, bail};
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::seal::{ShareBinding, seal};
use hyok_threshold::rsa::{RsaPublicKey, fingerprint};
use hyok_threshold::{KeyBundle, Manifest, NodeId, SignedKeyBundle, Wire};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use zeroize::Zeroizing;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn state_name(state: i32) -> &'static str {
    match pb::KeyState::try_from(state) {
        Ok(pb::KeyState::Enabled) => "enabled",
        Ok(pb::KeyState::Disabled) => "disabled",
        _ => "unknown",
    }
}

/// One RSA key, in detail.
pub fn describe(info: &pb::RsaKeyInfo) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rsa key    {}", info.name);
    let _ = writeln!(out, "state      {}", state_name(info.state));
    let _ = writeln!(out, "primary    v{}", info.primary_version);
    for v in &info.versions {
        let bits = RsaPublicKey::from_components(&v.modulus, &v.exponent).map(|k| k.bits()).unwrap_or(0);
        let _ =
            writeln!(out, "  v{:<6} RSA-{bits}  sha256 {}  created {} ms", v.version, v.fingerprint, v.created_at_ms);
    }
    out
}

/// RSA keys as a table.
pub fn table(keys: &[pb::RsaKeyInfo]) -> String {
    let mut out =
        format!("{:<32} {:<9} {:<8} {:<9} FINGERPRINT (primary)\n", "RSA KEY", "STATE", "PRIMARY", "VERSIONS");
    for k in keys {
        let fp = k.versions.iter().find(|v| v.version == k.primary_version).map_or("", |v| v.fingerprint.as_str());
        let _ = writeln!(
            out,
            "{:<32} {:<9} v{:<7} {:<9} {fp}",
            k.name,
            state_name(k.state),
            k.primary_version,
            k.versions.len()
        );
    }
    out
}

/// What a ceremony produced, for the caller to print.
#[derive(Debug)]
pub struct Imported {
    /// The version added.
    pub version: u32,
    /// SHA-256 of its SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// Each node's identity key (which certified the seal key its share was sealed to), hex.
    pub identities: Vec<(u16, String)>,
    /// The seal key each share was sealed to, hex.
    pub seal_keys: Vec<(u16, String)>,
}

/// Parses `--expect-identity ID=HEX` pins: the identity key an operator read from node ID's own
/// log, out of band.
pub fn parse_pins(pins: &[String]) -> Result<BTreeMap<u16, String>> {
    pins.iter()
        .map(|p| {
            let (id, hex) = p.split_once('=').context("--expect-identity takes ID=HEX")?;
            let id: u16 = id.trim().parse().context("--expect-identity: bad node id")?;
            let hex = hex.trim().to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("--expect-identity {id}=…: the key must be 64 hex digits");
            }
            Ok((id, hex))
        })
        .collect()
}

/// What the operator running a ceremony trusts about the nodes: their own copy of the cluster
/// manifest, and optional `--expect-identity` pins (which must agree with it).
#[derive(Debug, Clone)]
pub struct Trust {
    /// The operator's copy of the manifest.
    pub manifest: Manifest,
    /// Node id → identity key, hex.
    pub pins: BTreeMap<u16, String>,
}

impl Trust {
    /// The manifest in `path` (refused if missing or invalid) and the parsed pins.
    pub fn load(path: &Path, pins: &[String]) -> Result<Self> {
        let manifest = hyok_node::manifest::read(path)
            .context("the RSA ceremony takes node identities from the operator's copy of the cluster manifest")?;
        Ok(Trust { manifest, pins: parse_pins(pins)? })
    }

    /// The dev cluster's manifest, `DIR/manifest.json`, without extra pins.
    pub fn dev(dev_dir: &Path) -> Result<Self> {
        Self::load(&dev_dir.join(crate::dev::MANIFEST_FILE), &[])
    }
}

/// `rsa import --name NAME --pem FILE`: adds the next version of `name`, dealt to the nodes of
/// `trust`'s manifest; nothing is dealt unless every node's bundle verifies under its identity key there.
pub async fn import(target: &Target, name: &str, pem_path: &Path, trust: &Trust) -> Result<Imported> {
    hyok_proto::validate_key_id(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let pem =
        Zeroizing::new(std::fs::read_to_string(pem_path).with_context(|| format!("reading {}", pem_path.display()))?);
    let key = PrivateKey::from_pem(&pem).context("the PEM must be an unencrypted PKCS#1 or PKCS#8 RSA private key")?;
    drop(pem);
    ceremony(target, name, key, trust).await
}

/// `rsa create --name NAME`: generates an RSA key of `bits` (e = 65537) and deals it as the next
/// version of `name`; the key never leaves this process and is dropped once dealt.
pub async fn create(target: &Target, name: &str, bits: usize, trust: &Trust) -> Result<Imported> {
    hyok_proto::validate_key_id(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = tokio::task::spawn_blocking(move || hyok_threshold::rsa::keygen::generate(&mut rand::rng(), bits))
        .await?
        .context("generating the RSA key")?;
    ceremony(target, name, key, trust).await
}

/// The ceremony for a key already in memory (imported or generated):
/// takes the key by value and drops it as soon as it is dealt.
pub async fn ceremony(target: &Target, name: &str, key: PrivateKey, trust: &Trust) -> Result<Imported> {
    hyok_proto::validate_key_id(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut client = target.connect().await?;

    // The next version: one more than the highest the cluster trusts (1 for a new name).
    let version = match client.get_rsa_key(pb::GetRsaKeyRequest { name: name.into() }).await {
        Ok(info) => {
            let highest = info.into_inner().versions.iter().map(|v| v.version).max().unwrap_or(0);
            highest
                .checked_add(1)
                .ok_or_else(|| anyhow::anyhow!("RSA key {name} is at the highest version ({highest})"))?
        }
        Err(s) if s.code() == tonic::Code::NotFound => 1,
        Err(s) => bail!("reading RSA key {name}: {}: {}", s.code(), s.message()),
    };

    // Every node's keys, verified under the manifest; every node must be reachable to get its
    // share. The shape is the manifest's, not the coordinator's.
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.context("cluster status")?.into_inner();
    let (t, n) = (trust.manifest.threshold(), trust.manifest.n());
    let keys = verified_bundles(&status, trust)?;
    if keys.keys().map(|id| id.get()).ne(1..=n) {
        bail!("the manifest's node ids must be 1..={n} for an RSA key");
    }

    // The ceremony proper: deal, drop the key, seal each share to its node, drop the shares.
    let (shares, package) = deal(&key, t, n, &mut rand::rng()).context("splitting the key")?;
    drop(key);
    let mut sealed = Vec::with_capacity(shares.len());
    for share in &shares {
        let node_keys = keys.get(&share.node()).context("a share for an unknown node")?;
        let binding = ShareBinding::new(name, version, share.node(), &package);
        let s = seal(share, node_keys.seal(), &binding, &mut rand::rng()).context("sealing a share")?;
        sealed.push(pb::SealedRsaShare { node_id: u32::from(share.node().get()), sealed: s.to_bytes() });
    }
    drop(shares);

    // As the dealer: a signature over the name, version and package, which every node checks
    // against its operator's policy before storing its share.
    let evidence = target.signer()?.rsa_import(name, version, &package.to_bytes());
    let info = client
        .import_rsa_key(pb::ImportRsaKeyRequest {
            name: name.into(),
            version,
            public_package: package.to_bytes(),
            shares: sealed,
            request_id: "hyokctl rsa import".into(),
            evidence: Some(evidence),
        })
        .await
        .map_err(|s| anyhow::anyhow!("import refused: {}: {}", s.code(), s.message()))?
        .into_inner();
    let fingerprint = fingerprint(package.public_key());
    let agreed = info.versions.iter().find(|v| v.version == version).map(|v| v.fingerprint.clone());
    if agreed.as_deref() != Some(fingerprint.as_str()) {
        bail!("the cluster does not report version {version} with fingerprint {fingerprint}");
    }
    let identities = keys.iter().map(|(id, k)| (id.get(), hex(k.identity().as_bytes()))).collect();
    let seal_keys = keys.iter().map(|(id, k)| (id.get(), hex(k.seal().as_bytes()))).collect();
    Ok(Imported { version, fingerprint, identities, seal_keys })
}

/// Every node's keys: for each node of `trust`'s manifest, the key bundle the coordinator's
/// `ClusterStatus` carries for it, verified under the identity key **the manifest** pins (the
/// identity the coordinator reports must be that key too), and each `--expect-identity` pin equal
/// to the manifest's key. A node missing, unreachable, not in the manifest or failing a check
/// refuses the whole ceremony before anything is dealt.
pub fn verified_bundles(status: &pb::ClusterStatusResponse, trust: &Trust) -> Result<BTreeMap<NodeId, KeyBundle>> {
    let manifest = &trust.manifest;
    for (id, expected) in &trust.pins {
        let pinned = NodeId::new(*id).ok().and_then(|id| manifest.identity(id));
        if pinned.map(|k| hex(k.as_bytes())).as_deref() != Some(expected.as_str()) {
            bail!("node {id}'s identity key in the manifest is not the expected one: nothing was dealt");
        }
    }
    let mut keys = BTreeMap::new();
    for node in &status.nodes {
        let id = u16::try_from(node.node_id).ok().and_then(|i| NodeId::new(i).ok()).context("bad node id")?;
        let Some(identity) = manifest.identity(id) else {
            bail!("the coordinator reports node {id}, which the cluster manifest does not list: nothing was dealt");
        };
        if !node.reachable || node.key_bundle.is_empty() {
            bail!("node {} is unreachable ({}); every node must take its share", node.node_id, node.error);
        }
        if node.identity_public_key.as_slice() != identity.as_bytes() {
            bail!("node {id} reports another identity key than the cluster manifest pins: nothing was dealt");
        }
        let bundle =
            SignedKeyBundle::from_bytes(&node.key_bundle).and_then(|b| b.verify(id, identity)).with_context(|| {
                format!(
                    "node {id}'s key bundle does not verify under its identity key in the manifest: nothing was dealt"
                )
            })?;
        if keys.insert(id, bundle).is_some() {
            bail!("node {id} appears twice in the cluster status");
        }
    }
    if let Some(missing) = manifest.nodes().keys().find(|id| !keys.contains_key(id)) {
        bail!("the coordinator does not report node {missing} of the cluster manifest; every node must take its share");
    }
    Ok(keys)
}

/// `rsa list`.
pub async fn list(target: &Target) -> Result<()> {
    let keys = target.connect().await?.list_rsa_keys(pb::ListRsaKeysRequest {}).await?.into_inner().keys;
    print!("{}", table(&keys));
    Ok(())
}

/// `rsa show NAME`.
pub async fn show(target: &Target, name: &str) -> Result<()> {
    let info = target.connect().await?.get_rsa_key(pb::GetRsaKeyRequest { name: name.into() }).await?.into_inner();
    print!("{}", describe(&info));
    Ok(())
}
