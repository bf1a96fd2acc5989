//! `hyokctl encrypt` / `hyokctl decrypt`: stdin to stdout, through the cluster.

use crate::target::Target;
use anyhow::{Result, bail};
use hyok_proto::v1 as pb;
use std::io::{Read, Write};

/// Largest input read from stdin.
const MAX_INPUT: usize = 1024 * 1024;

fn read_stdin() -> Result<Vec<u8>> {
    let mut input = Vec::new();
    std::io::stdin().take(MAX_INPUT as u64 + 1).read_to_end(&mut input)?;
    if input.len() > MAX_INPUT {
        bail!("input is larger than {MAX_INPUT} bytes");
    }
    Ok(input)
}

/// Encrypts stdin under `key_id`; writes the ciphertext blob to stdout.
pub async fn encrypt(target: &Target, key_id: &str, aad: &str) -> Result<()> {
    let plaintext = read_stdin()?;
    let evidence = target.signer()?.encrypt(key_id, &plaintext, aad.as_bytes());
    let response = target
        .connect()
        .await?
        .encrypt(pb::EncryptRequest {
            key_id: key_id.into(),
            plaintext,
            aad: aad.as_bytes().to_vec(),
            request_id: hyok_proto::request_id::generate("hyokctl"),
            evidence: Some(evidence),
        })
        .await?
        .into_inner();
    std::io::stdout().write_all(&response.ciphertext)?;
    Ok(())
}

/// Decrypts a blob from stdin; writes the plaintext to stdout.
pub async fn decrypt(target: &Target, key_id: &str, aad: &str) -> Result<()> {
    let ciphertext = read_stdin()?;
    let Some(evidence) = target.signer()?.decrypt_blob(key_id, &ciphertext) else {
        bail!("the input is not a ciphertext made by `hyokctl encrypt`");
    };
    let response = target
        .connect()
        .await?
        .decrypt(pb::DecryptRequest {
            key_id: key_id.into(),
            ciphertext,
            aad: aad.as_bytes().to_vec(),
            request_id: hyok_proto::request_id::generate("hyokctl"),
            evidence: Some(evidence),
        })
        .await?
        .into_inner();
    std::io::stdout().write_all(&response.plaintext)?;
    Ok(())
}
