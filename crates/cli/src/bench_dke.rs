//! `hyokctl bench --via dke`: what Office puts on hyok-dke — POST decrypt of an RSA-OAEP-256
//! wrapped content key with a bearer token, over HTTPS (HTTP/2), to the dev cluster's hyok-dke.
//! Every answer's plaintext is checked.

use crate::bench::{BenchOptions, Report, Series, drive};
use crate::devfile::DevFile;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_dke::client::{self, Connection};
use hyok_threshold::rsa::{RsaPublicKey, oaep};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What every worker sends and expects.
#[derive(Debug)]
struct Plan {
    path: String,
    token: String,
    body: Vec<u8>,
    expected: String,
}

async fn worker(conn: Connection, plan: Arc<Plan>, until: Instant, done: Arc<AtomicU64>) -> (Series, Series) {
    let mut dec = Series::default();
    while Instant::now() < until {
        let started = Instant::now();
        match conn.post(&plan.path, Some(&plan.token), &plan.body).await {
            Ok(a) if a.status.is_success() && a.json["value"] == plan.expected.as_str() => dec.ok(started),
            Ok(a) if a.status.is_success() => dec.fail(|| "wrong plaintext".into()),
            Ok(a) => dec.fail(|| format!("{}: {}", a.status, String::from_utf8_lossy(&a.body))),
            Err(e) => dec.fail(|| e.to_string()),
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (Series::default(), dec)
}

/// Runs the DKE decrypt load against the dev cluster's hyok-dke.
pub async fn run(target: &Target, options: BenchOptions) -> Result<Report> {
    let dev = DevFile::load(&target.dev_dir)?;
    let dke = dev.dke.context("dev.json has no hyok-dke (is this `hyokctl dev`?)")?;
    let mut connections = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        connections.push(client::connect(&dke.base_url, &dev.tls.ca, true).await?);
    }
    let key = connections[0].get(&format!("/{}", dke.key_name)).await?;
    if !key.status.is_success() {
        bail!("GET /{}: {}", dke.key_name, key.status);
    }
    let n = STANDARD.decode(key.json["key"]["n"].as_str().unwrap_or_default()).context("the key's n")?;
    let e = key.json["key"]["e"].as_u64().context("the key's e")?;
    let public = RsaPublicKey::from_components(&n, &e.to_be_bytes())?;
    let kid = key.json["key"]["kid"].as_str().context("the key's kid")?;
    let path =
        kid.strip_prefix(&dke.public_base_url).context("kid outside the public base URL")?.to_owned() + "/decrypt";
    let content_key = vec![0x5au8; options.size.clamp(1, oaep::max_message_len(&public))];
    let ciphertext = oaep::encrypt(&public, &content_key, &mut rand::rng())?;
    let body = serde_json::json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(&ciphertext)}).to_string();
    let plan = Arc::new(Plan {
        path,
        token: crate::dke::dev_token(&target.dev_dir, &dke.authorized_email)?,
        body: body.into_bytes(),
        expected: STANDARD.encode(&content_key),
    });
    let options = BenchOptions { key_id: dke.key_name.clone(), size: content_key.len(), ..options };
    drive(options, |i, until, done| worker(connections[i % connections.len()].clone(), plan.clone(), until, done)).await
}
