//! Signed requests on the dev cluster's keys, one way each, for every end-to-end test: encrypt
//! and decrypt on an EC key, a threshold RSA decryption, and round trips as background traffic.

use crate::Signed;
use hyok_proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The dev cluster's demo key (EC).
pub const KEY: &str = "demo";
/// The dev cluster's DKE key (threshold RSA).
pub const RSA_KEY: &str = "dke-dev";

/// An Encrypt of `plaintext` under `key`, empty AAD, with the caller's evidence.
pub async fn encrypt(client: &mut Signed, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let evidence = Some(client.signer.encrypt(key, plaintext, b""));
    let request = pb::EncryptRequest {
        key_id: key.into(),
        plaintext: plaintext.to_vec(),
        aad: Vec::new(),
        request_id: "e2e".into(),
        evidence,
    };
    Ok(client.encrypt(request).await?.into_inner().ciphertext)
}

/// A Decrypt of `ciphertext` under `key`, empty AAD, with the caller's evidence.
pub async fn decrypt(client: &mut Signed, key: &str, ciphertext: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let evidence = client.signer.decrypt_blob(key, ciphertext);
    let request = pb::DecryptRequest {
        key_id: key.into(),
        ciphertext: ciphertext.to_vec(),
        aad: Vec::new(),
        request_id: "e2e".into(),
        evidence,
    };
    Ok(client.decrypt(request).await?.into_inner().plaintext)
}

/// A threshold RSA decryption of `ciphertext` by version `version` of [`RSA_KEY`].
pub async fn rsa_decrypt(client: &mut Signed, version: u32, ciphertext: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    let request = pb::RsaDecryptRequest {
        name: RSA_KEY.into(),
        version,
        ciphertext: ciphertext.to_vec(),
        request_id: "e2e".into(),
        evidence: Some(client.signer.rsa_decrypt(RSA_KEY, version, ciphertext)),
    };
    Ok(client.rsa_decrypt(request).await?.into_inner().plaintext)
}

/// Encrypt-then-decrypt round trips on [`KEY`], one every 20 ms, until `stop`: (ok, failed,
/// wrong plaintexts). Failures are printed.
pub fn traffic(client: Signed, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, usize, usize)> {
    tokio::spawn(async move {
        let mut client = client;
        let (mut ok, mut failed, mut wrong) = (0, 0, 0);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let plaintext = n.to_be_bytes().repeat(4);
            match encrypt(&mut client, KEY, &plaintext).await {
                Ok(blob) => match decrypt(&mut client, KEY, &blob).await {
                    Ok(p) if p == plaintext => ok += 1,
                    Ok(_) => wrong += 1,
                    Err(e) => {
                        eprintln!("traffic decrypt: {e}");
                        failed += 1;
                    }
                },
                Err(e) => {
                    eprintln!("traffic encrypt: {e}");
                    failed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed, wrong)
    })
}
