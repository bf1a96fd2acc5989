//! Compiles `proto/hyok/v1/*.proto` with protox (pure Rust, no `protoc`), then generates tonic
//! clients and servers, and writes the descriptor set that the coordinator serves for gRPC
//! reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["hyok/v1/common.proto", "hyok/v1/rsa.proto", "hyok/v1/node.proto", "hyok/v1/vault.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("hyok_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Evidence carries credentials (bearer tokens, signed requests): its Debug is written by hand
    // (crates/proto/src/lib.rs) and says only which kind it is.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(["hyok.v1.Evidence"])
        .compile_fds(fds)?;
    Ok(())
}
