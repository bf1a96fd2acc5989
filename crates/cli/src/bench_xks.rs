//! `hyokctl bench --via xks`: the load KMS would put on hyok-xks — SigV4-signed Encrypt and
//! Decrypt requests over HTTPS (HTTP/2, `--connections` connections) to the dev cluster's
//! hyok-xks and its `encrypt_decrypt` key. Every decrypt's plaintext is checked.

use crate::bench::{BenchOp, BenchOptions, Report, Series, drive};
use crate::devfile::DevFile;
use crate::target::Target;
use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_xks::client::{self, Connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

/// What one worker needs.
#[derive(Debug)]
struct Plan {
    target: client::Target,
    encrypt_path: String,
    decrypt_path: String,
    plaintext_b64: String,
    /// The fields of one encryption, to decrypt over and over: ciphertext, IV, tag, metadata.
    sealed: serde_json::Value,
    op: BenchOp,
    cdiv: bool,
}

fn encrypt_body(plan: &Plan, request_id: &str) -> Vec<u8> {
    let mut body = serde_json::json!({
        "requestMetadata": client::request_metadata("Encrypt", request_id),
        "plaintext": plan.plaintext_b64,
        "encryptionAlgorithm": "AES_GCM",
    });
    if plan.cdiv {
        body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256".into();
    }
    body.to_string().into_bytes()
}

fn decrypt_body(sealed: &serde_json::Value, request_id: &str) -> Vec<u8> {
    serde_json::json!({
        "requestMetadata": client::request_metadata("Decrypt", request_id),
        "ciphertext": sealed["ciphertext"],
        "initializationVector": sealed["initializationVector"],
        "authenticationTag": sealed["authenticationTag"],
        "ciphertextMetadata": sealed["ciphertextMetadata"],
        "encryptionAlgorithm": "AES_GCM",
    })
    .to_string()
    .into_bytes()
}

async fn encrypt_once(
    conn: &Connection,
    plan: &Plan,
    request_id: &str,
    series: &mut Series,
) -> Option<serde_json::Value> {
    let started = Instant::now();
    match conn.post_signed(&plan.target, &plan.encrypt_path, &encrypt_body(plan, request_id), SystemTime::now()).await {
        Ok(answer) if answer.status.is_success() => {
            series.ok(started);
            Some(answer.json)
        }
        Ok(answer) => {
            series.fail(|| format!("{}: {}", answer.status, String::from_utf8_lossy(&answer.body)));
            None
        }
        Err(e) => {
            series.fail(|| e.to_string());
            None
        }
    }
}

async fn decrypt_once(
    conn: &Connection,
    plan: &Plan,
    sealed: &serde_json::Value,
    request_id: &str,
    series: &mut Series,
) {
    let started = Instant::now();
    match conn.post_signed(&plan.target, &plan.decrypt_path, &decrypt_body(sealed, request_id), SystemTime::now()).await
    {
        Ok(answer) if answer.status.is_success() && answer.json["plaintext"] == plan.plaintext_b64.as_str() => {
            series.ok(started)
        }
        Ok(answer) if answer.status.is_success() => series.fail(|| "wrong plaintext".into()),
        Ok(answer) => series.fail(|| format!("{}: {}", answer.status, String::from_utf8_lossy(&answer.body))),
        Err(e) => series.fail(|| e.to_string()),
    }
}

async fn worker(conn: Connection, plan: Arc<Plan>, until: Instant, done: Arc<AtomicU64>) -> (Series, Series) {
    let (mut enc, mut dec) = (Series::default(), Series::default());
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let request_id = format!("bench-{n}");
        match plan.op {
            BenchOp::Decrypt => decrypt_once(&conn, &plan, &plan.sealed, &request_id, &mut dec).await,
            BenchOp::Encrypt => {
                encrypt_once(&conn, &plan, &request_id, &mut enc).await;
            }
            BenchOp::Both => {
                if let Some(sealed) = encrypt_once(&conn, &plan, &request_id, &mut enc).await {
                    done.fetch_add(1, Ordering::Relaxed);
                    decrypt_once(&conn, &plan, &sealed, &request_id, &mut dec).await;
                }
            }
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (enc, dec)
}

/// Runs the XKS load against the dev cluster's hyok-xks.
pub async fn run(target: &Target, options: BenchOptions) -> Result<Report> {
    let dev = DevFile::load(&target.dev_dir)?;
    let xks = dev.xks.context("dev.json has no hyok-xks (is this `hyokctl dev`?)")?;
    let external = xks.keys.get("encrypt_decrypt").context("dev.json names no encrypt_decrypt XKS key")?.clone();
    let key = if options.key_id == "demo" { external } else { options.key_id.clone() };
    let plan = Plan {
        target: client::Target {
            base_url: xks.base_url.clone(),
            region: xks.region.clone(),
            access_key_id: xks.access_key_id.clone(),
            secret: xks.secret_access_key.clone(),
        },
        encrypt_path: format!("/keys/{key}/encrypt"),
        decrypt_path: format!("/keys/{key}/decrypt"),
        plaintext_b64: STANDARD.encode(vec![0x5au8; options.size]),
        sealed: serde_json::Value::Null,
        op: options.op,
        cdiv: options.cdiv,
    };
    let mut connections = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        connections.push(client::connect(&xks.base_url, &dev.tls.ca, true, None).await?);
    }
    // One ciphertext to decrypt over and over (also a warm-up of every path).
    let mut setup = Series::default();
    let sealed = encrypt_once(&connections[0], &plan, "bench-setup", &mut setup).await;
    let Some(sealed) = sealed else {
        bail!("the setup encrypt failed: {}", setup.first_error.unwrap_or_default());
    };
    let plan = Arc::new(Plan { sealed, ..plan });
    let options = BenchOptions { key_id: key, ..options };
    drive(options, |i, until, done| worker(connections[i % connections.len()].clone(), plan.clone(), until, done)).await
}
