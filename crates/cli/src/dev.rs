//! `hyokctl dev`: a whole local cluster in one command.
//!
//! On first run it makes the PKI and every node's data directory under DIR. Playing every node's
//! operator, it then reads each node's identity key from its own store (not from the
//! coordinator), writes the cluster manifest `DIR/manifest.json` (those keys, `t`, and the
//! coordinator certificate's SPKI hash), and installs it into every node's store that has none,
//! before any node starts. Then it starts every
//! node and the coordinator as separate processes on loopback (this same executable, with the
//! `node run` and `coordinator` subcommands), creates the demo key if the cluster lacks it,
//! writes `DIR/dev.json`, and waits for Ctrl-C or SIGTERM to stop them all. A child that dies is
//! reported, not restarted. Logs go to `DIR/logs/`.

use crate::devfile::{DevCoordinator, DevDke, DevFile, DevNode, DevTls, DevXks};
use crate::pki::Pki;
use crate::ports::free_port;
use anyhow::{Context, Result, bail};
use hyok_proto::v1 as pb;
use hyok_proto::{Role, TlsFiles};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The cluster manifest's file in the dev directory (the operators' copy).
pub const MANIFEST_FILE: &str = "manifest.json";

pub use crate::policy::CALLER_KEY_FILE;

/// The demo key every dev cluster has.
pub const DEMO_KEY: &str = "demo";

/// `hyokctl dev` options.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The cluster's directory.
    pub dir: PathBuf,
    /// Node count n.
    pub nodes: u16,
    /// Threshold t.
    pub threshold: u16,
}

/// The shape of a dev cluster, fixed at its first run (`DIR/cluster.json`).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Shape {
    nodes: u16,
    threshold: u16,
}

fn metrics_url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/metrics")
}

fn abs(path: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// A started child and its readiness line.
struct Started {
    child: Child,
    pid: u32,
}

/// Starts `argv`, sending stderr to `log`, and waits for a stdout line containing `ready`.
async fn start(argv: &[String], log: &Path, ready: &str) -> Result<Started> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    let pid = child.id().context("child has no pid")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let wait = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(ready) {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    };
    match tokio::time::timeout(Duration::from_secs(30), wait).await {
        Ok(Ok(true)) => {}
        _ => bail!("{} did not become ready; see {}", argv.join(" "), log.display()),
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Started { child, pid })
}

fn write_coordinator_config(
    path: &Path,
    (port, metrics_port): (u16, u16),
    shape: &Shape,
    pki: &Path,
    nodes: &[(u16, u16)],
) -> Result<()> {
    let mut text = format!(
        "# Written by `hyokctl dev`.\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
         threshold = {}\n\n[tls]\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
        shape.threshold,
        pki.join("ca.pem"),
        pki.join("coordinator.pem"),
        pki.join("coordinator-key.pem"),
    );
    for (id, port) in nodes {
        text.push_str(&format!("\n[[nodes]]\nid = {id}\nendpoint = \"https://127.0.0.1:{port}\"\n"));
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// The command line of dev node `id` in `dir` (what dev.json records to restart it).
pub fn node_argv(exe: &str, dir: &Path, id: u16, port: u16, metrics_port: u16) -> Vec<String> {
    let pki = dir.join("pki");
    vec![
        exe.to_owned(),
        "node".into(),
        "run".into(),
        "--id".into(),
        id.to_string(),
        "--data-dir".into(),
        dir.join(format!("node-{id}")).to_string_lossy().into_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--ca".into(),
        pki.join("ca.pem").to_string_lossy().into_owned(),
        "--cert".into(),
        pki.join(format!("node-{id}.pem")).to_string_lossy().into_owned(),
        "--key".into(),
        pki.join(format!("node-{id}-key.pem")).to_string_lossy().into_owned(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{metrics_port}"),
        // A wiped data directory comes back as an empty node with a new identity, to be
        // replaced by `hyokctl node replace N`.
        "--init".into(),
    ]
}

/// Starts dev node `id` (a node that joins the running dev cluster) as a process of its own,
/// outliving this hyokctl (its output appended to `DIR/logs/node-ID.log`); returns its record
/// once it is ready. `hyokctl dev` stops it with the others.
pub async fn start_node(dir: &Path, id: u16) -> Result<DevNode> {
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let (port, metrics_port) = (free_port()?, free_port()?);
    let argv = node_argv(&exe, dir, id, port, metrics_port);
    let log = dir.join("logs").join(format!("node-{id}.log"));
    let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let start_len = out.metadata()?.len();
    let child = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", argv.join(" ")))?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read(&log).unwrap_or_default();
        if text.get(start_len as usize..).is_some_and(|t| String::from_utf8_lossy(t).contains("listening on")) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            terminate(pid);
            bail!("node {id} did not become ready; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(DevNode {
        id,
        endpoint: format!("https://127.0.0.1:{port}"),
        pid,
        data_dir: dir.join(format!("node-{id}")),
        argv,
        metrics_url: metrics_url(metrics_port),
    })
}

/// Records the dev cluster's shape (`DIR/cluster.json`) after a membership change, so that the
/// next `hyokctl dev` over the directory starts the same nodes.
pub fn set_shape(dir: &Path, nodes: u16, threshold: u16) -> Result<()> {
    std::fs::write(dir.join("cluster.json"), serde_json::to_vec(&Shape { nodes, threshold })?)?;
    Ok(())
}

/// Sends SIGTERM to `pid` (through `kill(1)`: no unsafe code here).
pub fn terminate(pid: u32) {
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Runs the dev cluster until Ctrl-C or SIGTERM.
pub async fn run(opts: DevOptions) -> Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let dir = abs(&opts.dir)?;
    let shape = prepare(&dir, &opts)?;
    let exe = std::env::current_exe()?.to_string_lossy().into_owned();
    let pki = dir.join("pki");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let _ = std::fs::remove_file(DevFile::path(&dir));

    let (exits_tx, mut exits) = mpsc::unbounded_channel::<(String, String)>();
    let mut pids: Vec<(String, u32)> = Vec::new();
    let mut nodes = Vec::new();
    let mut ports = Vec::new();
    for id in 1..=shape.nodes {
        let port = free_port()?;
        let metrics_port = free_port()?;
        let data_dir = dir.join(format!("node-{id}"));
        let argv = node_argv(&exe, &dir, id, port, metrics_port);
        let started = start(&argv, &logs.join(format!("node-{id}.log")), "listening on").await?;
        watch(format!("node {id}"), started.child, exits_tx.clone());
        pids.push((format!("node {id}"), started.pid));
        let endpoint = format!("https://127.0.0.1:{port}");
        let metrics_url = metrics_url(metrics_port);
        nodes.push(DevNode { id, endpoint, pid: started.pid, data_dir, argv, metrics_url });
        ports.push((id, port));
    }
    let coordinator_port = free_port()?;
    let coordinator_metrics = free_port()?;
    let config = dir.join("coordinator.toml");
    write_coordinator_config(&config, (coordinator_port, coordinator_metrics), &shape, &pki, &ports)?;
    let argv = vec![exe.clone(), "coordinator".into(), "--config".into(), config.to_string_lossy().into_owned()];
    let started = start(&argv, &logs.join("coordinator.log"), "listening on").await?;
    watch("coordinator".into(), started.child, exits_tx.clone());
    pids.push(("coordinator".into(), started.pid));
    let coordinator = DevCoordinator {
        endpoint: format!("https://127.0.0.1:{coordinator_port}"),
        pid: started.pid,
        metrics_url: metrics_url(coordinator_metrics),
    };

    let tls = DevTls {
        ca: pki.join("ca.pem"),
        client_cert: pki.join(format!("{}.pem", Role::Admin.file_stem())),
        client_key: pki.join(format!("{}-key.pem", Role::Admin.file_stem())),
    };
    let client_tls = TlsFiles { ca: tls.ca.clone(), cert: tls.client_cert.clone(), key: tls.client_key.clone() };
    let result = async {
        ensure_keys(&coordinator.endpoint, &client_tls).await?;
        // The front-ends' ports, shortly before they start; their configurations, and the
        // nodes' evidence policy, which names hyok-dke's URL (the token audience) and lets the
        // operator tools' caller key deal the DKE key.
        let xks_ports = (free_port()?, free_port()?);
        let dke_ports = (free_port()?, free_port()?);
        let xks_setup = crate::xks::dev_prepare(&dir, &pki, &coordinator.endpoint, xks_ports.0, xks_ports.1)?;
        let dke_setup = crate::dke::dev_prepare(&dir, &pki, &coordinator.endpoint, dke_ports.0, dke_ports.1)?;
        install_policy(&dir, &dke_setup, &nodes).await?;
        ensure_dke_key(&dir, &coordinator.endpoint, &client_tls).await?;
        let xks = start_xks(&exe, &logs, xks_setup, xks_ports).await?;
        watch("hyok-xks".into(), xks.0.child, exits_tx.clone());
        pids.push(("hyok-xks".into(), xks.0.pid));
        let dke = start_dke(&exe, &logs, dke_setup, dke_ports).await?;
        watch("hyok-dke".into(), dke.0.child, exits_tx.clone());
        pids.push(("hyok-dke".into(), dke.0.pid));
        let mut keys = BTreeMap::new();
        keys.insert("demo".to_owned(), DEMO_KEY.to_owned());
        let file =
            DevFile { threshold: shape.threshold, tls, coordinator, nodes, keys, xks: Some(xks.1), dke: Some(dke.1) };
        file.save(&dir)?;
        print_banner(&dir, &file);
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        stop(&pids).await;
        return Err(e);
    }

    let shutdown = hyok_proto::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((who, status)) = exits.recv() => {
                eprintln!("hyokctl dev: {who} exited ({status}); not restarting it (see dev.json for its argv)");
            }
        }
    }
    eprintln!("hyokctl dev: stopping");
    // Nodes a membership change started (`hyokctl cluster propose`) are in dev.json only.
    if let Ok(file) = DevFile::load(&dir) {
        for n in file.nodes {
            if !pids.iter().any(|(_, pid)| *pid == n.pid) {
                pids.push((format!("node {}", n.id), n.pid));
            }
        }
    }
    stop(&pids).await;
    let _ = std::fs::remove_file(DevFile::path(&dir));
    Ok(())
}

/// PKI and node data on first run; the cluster's shape afterwards.
fn prepare(dir: &Path, opts: &DevOptions) -> Result<Shape> {
    let shape_path = dir.join("cluster.json");
    let shape = if shape_path.exists() {
        let shape: Shape = serde_json::from_slice(&std::fs::read(&shape_path)?)?;
        if shape.nodes != opts.nodes || shape.threshold != opts.threshold {
            eprintln!(
                "hyokctl dev: {} holds a {}-of-{} cluster; using that (remove the directory for another shape)",
                dir.display(),
                shape.threshold,
                shape.nodes
            );
        }
        shape
    } else {
        if opts.threshold == 0 || opts.threshold > opts.nodes {
            bail!("--threshold must be between 1 and --nodes");
        }
        let ids: Vec<u16> = (1..=opts.nodes).collect();
        let pki = dir.join("pki");
        if !pki.join("ca.pem").exists() {
            Pki::new(&pki).init(&ids, &["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        }
        for id in &ids {
            let data_dir = dir.join(format!("node-{id}"));
            if !hyok_node::server::seal_key_path(&data_dir).exists() {
                hyok_node::server::init(&data_dir)?;
            }
        }
        let shape = Shape { nodes: opts.nodes, threshold: opts.threshold };
        std::fs::write(&shape_path, serde_json::to_vec(&shape)?)?;
        shape
    };
    ensure_manifest(dir, &shape)?;
    Ok(shape)
}

/// As every node's operator: `DIR/manifest.json` (written from each node's own store and the
/// coordinator's certificate unless it exists), installed into every node's store that holds no
/// manifest yet. The nodes are not running.
fn ensure_manifest(dir: &Path, shape: &Shape) -> Result<hyok_threshold::Manifest> {
    let nodes: Vec<(u16, PathBuf)> = (1..=shape.nodes).map(|id| (id, dir.join(format!("node-{id}")))).collect();
    let coordinator = dir.join("pki").join("coordinator.pem");
    install_manifest(&dir.join(MANIFEST_FILE), &coordinator, shape.threshold, &nodes, "hyokctl-dev:operator")
}

/// Playing the operator of every node in `nodes` (id, data directory; none running): the
/// manifest in `path`, written first unless it exists — `t`, each node's identity key read from
/// its own store, and the SPKI hash of the coordinator certificate `coordinator_cert` — and
/// installed (flushed, audited as by `caller`) into every node's store that holds none.
pub fn install_manifest(
    path: &Path,
    coordinator_cert: &Path,
    t: u16,
    nodes: &[(u16, PathBuf)],
    caller: &str,
) -> Result<hyok_threshold::Manifest> {
    let manifest = if path.exists() {
        hyok_node::manifest::read(path)?
    } else {
        let coordinator = hyok_proto::tls::spki_sha256_of_pem_file(coordinator_cert)?;
        let mut pinned = Vec::new();
        for (id, data_dir) in nodes {
            let identity = hyok_node::server::stored_identity(data_dir)
                .with_context(|| format!("reading node {id}'s identity from its store"))?;
            pinned.push((hyok_threshold::NodeId::new(*id)?, identity));
        }
        let manifest = hyok_threshold::Manifest::new(t, pinned, [coordinator])?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, hyok_node::manifest::to_json(&manifest))?;
        std::fs::rename(&tmp, path)?;
        manifest
    };
    for (id, data_dir) in nodes {
        if hyok_node::server::stored_manifest(data_dir)?.is_none() {
            hyok_node::server::install_manifest(data_dir, &manifest, caller)
                .with_context(|| format!("installing {} into node {id}", path.display()))?;
        }
    }
    Ok(manifest)
}

fn watch(who: String, mut child: Child, exits: mpsc::UnboundedSender<(String, String)>) {
    tokio::spawn(async move {
        let status = match child.wait().await {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let _ = exits.send((who, status));
    });
}

async fn stop(pids: &[(String, u32)]) {
    for (_, pid) in pids.iter().rev() {
        terminate(*pid);
    }
    // Give them a moment to flush and exit; kill_on_drop takes care of stragglers.
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Waits until the coordinator reaches every node, then creates the demo key and hyok-xks's
/// keys unless they exist.
pub async fn ensure_keys(endpoint: &str, tls: &TlsFiles) -> Result<()> {
    let mut client = hyok_proto::connect_vault(endpoint, tls).await?;
    let mut keys: Vec<(&str, &[pb::KeyUsage])> = vec![(DEMO_KEY, &[])];
    keys.extend(crate::xks::dev_cluster_keys());
    let mut last = String::new();
    let mut ready = 0;
    for _ in 0..200 {
        let status = client.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner();
        if !status.nodes.iter().all(|n| n.reachable) {
            last = "waiting for every node".into();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let Some((key_id, usages)) = keys.get(ready) else { return Ok(()) };
        match client.get_key(pb::GetKeyRequest { key_id: (*key_id).into() }).await {
            Ok(_) => ready += 1,
            Err(s) if s.code() == tonic::Code::NotFound => {
                client
                    .create_key(pb::CreateKeyRequest {
                        key_id: (*key_id).into(),
                        usages: usages.iter().map(|u| *u as i32).collect(),
                        request_id: "hyokctl-dev".into(),
                    })
                    .await?;
                ready += 1;
            }
            Err(s) => {
                last = s.message().to_owned();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    bail!("the cluster did not become ready: {last}")
}

/// Creates the dev RSA key by the dealer ceremony unless the cluster has it, then starts
/// hyok-dke (this executable, `dke serve`) in front of the coordinator.
/// As every node's operator: the evidence policy (`DIR/policy.json`: the XKS credentials, the
/// dev token issuer and hyok-dke's URL, the operator tools' and the deep check's caller keys),
/// installed into every running node.
async fn install_policy(dir: &Path, dke: &crate::dke::DevSetup, nodes: &[DevNode]) -> Result<()> {
    let operator = crate::policy::ensure_signer(&dir.join(CALLER_KEY_FILE))?;
    let health = crate::policy::ensure_signer(&dir.join("xks").join(crate::policy::HEALTH_CALLER_KEY_FILE))?;
    let policy = crate::policy::cluster_policy(&crate::policy::Parties {
        xks_credentials: Path::new("xks/credentials.toml"),
        dke_audience: &dke.audience,
        dke_jwks: &Path::new("dke").join(crate::dke::JWKS_FILE),
        operator: &operator,
        health: &health,
    })?;
    let policy = crate::policy::write(dir, &policy)?;
    let data_dirs: Vec<(u16, PathBuf)> = nodes.iter().map(|n| (n.id, n.data_dir.clone())).collect();
    #[cfg(unix)]
    crate::policy::install_running(&data_dirs, &policy).await?;
    #[cfg(not(unix))]
    let _ = (data_dirs, policy);
    Ok(())
}

/// Creates the dev RSA key by the dealer ceremony unless the cluster has it.
async fn ensure_dke_key(dir: &Path, coordinator: &str, tls: &TlsFiles) -> Result<()> {
    let mut client = hyok_proto::connect_vault(coordinator, tls).await?;
    let rsa_key = crate::dke::DEV_RSA_KEY;
    match client.get_rsa_key(pb::GetRsaKeyRequest { name: rsa_key.into() }).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let target = crate::target::Target {
                caller_key: None,
                dev_dir: dir.to_owned(),
                endpoint: Some(coordinator.to_owned()),
                ca: Some(tls.ca.clone()),
                cert: Some(tls.cert.clone()),
                key: Some(tls.key.clone()),
            };
            crate::rsa::create(&target, rsa_key, 2048, &crate::rsa::Trust::dev(dir)?).await.map(|_| ())
        }
        Err(s) => bail!("reading RSA key {rsa_key}: {}", s.message()),
    }
}

/// Starts hyok-dke (this executable, `dke serve`) in front of the coordinator.
async fn start_dke(
    exe: &str,
    logs: &Path,
    setup: crate::dke::DevSetup,
    (_, metrics_port): (u16, u16),
) -> Result<(Started, DevDke)> {
    let argv = vec![
        exe.to_owned(),
        "dke".into(),
        "serve".into(),
        "--config".into(),
        setup.config.to_string_lossy().into_owned(),
    ];
    let started = start(&argv, &logs.join("dke.log"), "listening on").await?;
    let dke = DevDke {
        base_url: setup.base_url,
        public_base_url: setup.public_base_url,
        key_name: setup.key_name,
        rsa_key: setup.rsa_key,
        issuer: setup.issuer.issuer,
        audience: setup.audience,
        issuer_key: setup.issuer.key_pem,
        issuer_kid: setup.issuer.kid,
        authorized_email: setup.authorized_email,
        pid: started.pid,
        config: setup.config,
        metrics_url: metrics_url(metrics_port),
    };
    Ok((started, dke))
}

/// Starts hyok-xks (this executable, `xks serve`) in front of the coordinator.
async fn start_xks(
    exe: &str,
    logs: &Path,
    setup: crate::xks::DevSetup,
    (port, metrics_port): (u16, u16),
) -> Result<(Started, DevXks)> {
    let argv = vec![
        exe.to_owned(),
        "xks".into(),
        "serve".into(),
        "--config".into(),
        setup.config.to_string_lossy().into_owned(),
    ];
    let started = start(&argv, &logs.join("xks.log"), "listening on").await?;
    let xks = DevXks {
        base_url: format!("https://localhost:{port}{}", hyok_xks::config::base_path(crate::xks::DEV_PREFIX)),
        uri_prefix: crate::xks::DEV_PREFIX.to_owned(),
        region: crate::xks::DEV_REGION.to_owned(),
        access_key_id: setup.credential.access_key_id.clone(),
        secret_access_key: setup.credential.secret().to_owned(),
        pid: started.pid,
        keys: setup.keys,
        config: setup.config,
        metrics_url: metrics_url(metrics_port),
    };
    Ok((started, xks))
}

fn print_banner(dir: &Path, file: &DevFile) {
    println!("hyok dev cluster: {}-of-{} in {}", file.threshold, file.nodes.len(), dir.display());
    for node in &file.nodes {
        println!("  node {}        {}  pid {}", node.id, node.endpoint, node.pid);
    }
    println!("  coordinator   {}  pid {}", file.coordinator.endpoint, file.coordinator.pid);
    println!("  demo key      {DEMO_KEY}");
    if let Some(xks) = &file.xks {
        println!("  hyok-xks      {}  pid {}", xks.base_url, xks.pid);
        println!("                access key {} (secret in dev.json), region {}", xks.access_key_id, xks.region);
    }
    if let Some(dke) = &file.dke {
        println!("  hyok-dke      {}/{}  pid {}", dke.base_url, dke.key_name, dke.pid);
        println!("                token: hyokctl dev token --email {}", dke.authorized_email);
    }
    println!("  metrics       {} (and every node's: dev.json)", file.coordinator.metrics_url);
    println!("  logs          {}", dir.join("logs").display());
    println!("  state         {}", DevFile::path(dir).display());
    println!();
    println!("try:  echo hello | hyokctl encrypt --key {DEMO_KEY} | hyokctl decrypt --key {DEMO_KEY}");
    println!("      hyokctl status");
    println!("Ctrl-C stops the cluster.");
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_threshold::NodeId;

    /// A scratch directory with a PKI and three initialized (stopped) nodes.
    fn three_nodes() -> (tempfile::TempDir, Pki, Vec<(u16, PathBuf)>) {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("pki"));
        pki.init(&[1, 2, 3], &[]).unwrap();
        let nodes: Vec<(u16, PathBuf)> = (1..=3).map(|id| (id, dir.path().join(format!("node-{id}")))).collect();
        for (_, d) in &nodes {
            hyok_node::server::init(d).unwrap();
        }
        (dir, pki, nodes)
    }

    fn installs(id: u16, data_dir: &Path) -> usize {
        let node = hyok_node::server::open(NodeId::new(id).unwrap(), data_dir).unwrap();
        node.read_audit(1, 100).unwrap().iter().filter(|e| e.operation == "manifest:install").count()
    }

    #[test]
    fn the_manifest_names_every_node_and_the_coordinator_and_is_installed_where_missing_once() {
        let (dir, pki, nodes) = three_nodes();
        let path = dir.path().join(MANIFEST_FILE);
        let coordinator = pki.identity(Role::Coordinator).cert;
        // An operators' copy already written (say, by an earlier run that stopped before
        // installing): every node that lacks it gets it.
        let spki = hyok_proto::tls::spki_sha256_of_pem_file(&coordinator).unwrap();
        let pinned =
            nodes.iter().map(|(id, d)| (NodeId::new(*id).unwrap(), hyok_node::server::stored_identity(d).unwrap()));
        let written = hyok_threshold::Manifest::new(2, pinned, [spki]).unwrap();
        std::fs::write(&path, hyok_node::manifest::to_json(&written)).unwrap();
        let m = install_manifest(&path, &coordinator, 2, &nodes, "test").unwrap();
        assert_eq!(m, written);
        assert!(
            !m.pins_coordinator(&hyok_proto::tls::spki_sha256_of_pem_file(&pki.identity(Role::Admin).cert).unwrap())
        );
        for (id, d) in &nodes {
            assert_eq!(hyok_node::server::stored_manifest(d).unwrap(), Some(m.clone()), "node {id}");
        }
        // A re-run installs nothing twice.
        assert_eq!(install_manifest(&path, &coordinator, 2, &nodes, "test").unwrap(), m);
        for (id, d) in &nodes {
            assert_eq!(installs(*id, d), 1, "node {id}");
        }
    }

    #[test]
    fn a_first_run_writes_the_manifest_from_each_nodes_own_store() {
        let (dir, pki, nodes) = three_nodes();
        let path = dir.path().join(MANIFEST_FILE);
        let coordinator = pki.identity(Role::Coordinator).cert;
        let m = install_manifest(&path, &coordinator, 2, &nodes, "test").unwrap();
        assert_eq!(hyok_node::manifest::read(&path).unwrap(), m);
        assert_eq!((m.threshold(), m.n()), (2, 3));
        assert!(m.pins_coordinator(&hyok_proto::tls::spki_sha256_of_pem_file(&coordinator).unwrap()));
        for (id, d) in &nodes {
            let me = hyok_node::server::stored_identity(d).unwrap();
            assert_eq!(m.identity(NodeId::new(*id).unwrap()), Some(&me));
            assert_eq!(installs(*id, d), 1, "node {id}");
        }
    }
}
