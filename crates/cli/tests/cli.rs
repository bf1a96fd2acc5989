//! The `hyokctl` binary itself (this test also makes cargo build it for the end-to-end tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use std::process::Command;

fn hyokctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hyokctl"))
}

#[test]
fn pki_init_writes_every_role_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let out = hyokctl().args(["pki", "init", "--nodes", "3", "--dir"]).arg(&pki).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["ca.pem", "node-1.pem", "node-3-key.pem", "coordinator.pem", "frontend.pem", "admin-key.pem"] {
        assert!(pki.join(file).exists(), "{file}");
    }
    assert!(!pki.join("node-4.pem").exists());
    let again = hyokctl().args(["pki", "init", "--dir"]).arg(&pki).output().unwrap();
    assert!(!again.status.success(), "an existing PKI must not be overwritten");
}

#[test]
fn client_commands_without_a_cluster_explain_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = hyokctl().arg("--dev-dir").arg(dir.path()).args(["key", "list"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("dev.json") && err.contains("hyokctl dev"), "{err}");
    let out = hyokctl().args(["--endpoint", "https://127.0.0.1:1", "status"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"), "explicit endpoints need TLS files");
}
