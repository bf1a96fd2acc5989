//! A typed `KeyVault` client over mutual TLS.

use crate::roles::Role;
use crate::tls::TlsFiles;
use crate::v1::key_vault_client::KeyVaultClient;
use crate::whole_body::{WholeBody, WholeChannel};
use std::time::Duration;
use tonic::transport::Endpoint;

/// The generated `KeyVault` client over a tonic channel, each call sent whole.
pub type VaultClient = KeyVaultClient<WholeChannel>;

/// Connects to the coordinator at `endpoint` (`https://host:port`) with `tls`, expecting the
/// coordinator's role certificate. Connects eagerly, so a wrong address or a refused handshake
/// is reported here.
pub async fn connect_vault(endpoint: &str, tls: &TlsFiles) -> anyhow::Result<VaultClient> {
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls.client_config(&Role::Coordinator.proof_name())?)?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect()
        .await?;
    Ok(KeyVaultClient::new(WholeBody::new(channel)).max_decoding_message_size(8 * 1024 * 1024))
}
