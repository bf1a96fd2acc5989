//! hyok's gRPC API, generated from `proto/hyok/v1/*.proto` by protox + tonic-prost-build.
//!
//! # Layout
//! - [`v1`]: the generated messages, the `KeyVault` and `Node` clients and servers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`validate_key_id`]: the one key-id syntax every component enforces.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// Generated code for package `hyok.v1`.
#[allow(missing_docs, clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("hyok.v1");
}

/// The `FileDescriptorSet` of every hyok proto file, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hyok_descriptor.bin"));

/// Longest key id.
pub const MAX_KEY_ID_LEN: usize = 128;

/// Key ids are `[A-Za-z0-9._-]{1,128}`.
pub fn validate_key_id(key_id: &str) -> Result<(), &'static str> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err("key id must be 1 to 128 characters");
    }
    if !key_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
        return Err("key id may contain only A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn key_ids_follow_the_documented_syntax() {
        for ok in ["a", "demo", "Key_1.v-2", &"x".repeat(128)] {
            assert_eq!(validate_key_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", &"x".repeat(129), "a b", "a/b", "ключ", "a\0", "key:1"] {
            assert!(validate_key_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descriptor_set_holds_both_services() {
        let fds = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> =
            fds.file.iter().flat_map(|f| f.service.iter().map(|s| format!("{}.{}", f.package(), s.name()))).collect();
        assert!(services.contains(&"hyok.v1.KeyVault".to_string()), "{services:?}");
        assert!(services.contains(&"hyok.v1.Node".to_string()), "{services:?}");
    }

    #[test]
    fn messages_round_trip() {
        let req = v1::EvaluateBatchRequest {
            items: vec![v1::EvaluateItem {
                key_id: "k".into(),
                version: 3,
                seed: vec![7; 16],
                operation: v1::Operation::Decrypt as i32,
                request_id: "r-1".into(),
            }],
        };
        let bytes = req.encode_to_vec();
        assert_eq!(v1::EvaluateBatchRequest::decode(&bytes[..]).unwrap(), req);
    }
}
