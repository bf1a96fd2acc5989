//! A harness for the end-to-end tests: a whole cluster started by the real `hyokctl dev`
//! (real `hyok-node` and `hyok-coordinator` processes on loopback), driven by its `dev.json`:
//! nodes are killed by pid and restarted with the exact `argv` it records.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "the end-to-end test harness: a broken setup fails the test"
)]

use anyhow::{Context, Result, bail};
use hyok_cli::devfile::DevFile;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::{Role, TlsFiles, VaultClient};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

pub mod demo;
pub mod relay;

/// The directory holding the workspace's binaries (`target/debug`), found from the test
/// executable's own path (`target/debug/deps/…`), or `HYOK_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HYOK_BIN_DIR") {
        return dir.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// The `hyokctl` executable.
pub fn hyokctl() -> PathBuf {
    let path = bin_dir().join("hyokctl");
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo nextest run --workspace` builds it)",
        path.display()
    );
    path
}

/// A running dev cluster; stopped (every process) when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster directory (removed when dropped).
    pub dir: tempfile::TempDir,
    /// Its `dev.json`, with pids updated as nodes are restarted.
    pub dev: DevFile,
    supervisor: Child,
    restarted: BTreeMap<u16, Child>,
    env: Vec<(String, String)>,
    /// `hyok-delay-relay --dev-dir`, once the coordinator was put behind relays.
    far: Option<Child>,
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

fn alive(pid: u32) -> bool {
    // `kill -0` succeeds while the process exists (zombies included, so callers reap first).
    Command::new("kill").arg("-0").arg(pid.to_string()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Runs `hyokctl dev --dir DIR ARGS…` with `env` added to its environment (and so to every
/// process it starts), logging to `DIR/hyokctl-dev.log`.
fn spawn_dev(dir: &Path, args: &[String], env: &[(String, String)]) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("hyokctl-dev.log"))?;
    Ok(Command::new(hyokctl())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg("dev")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

/// Waits until `hyokctl dev` has written `DIR/dev.json` (it removes it when it stops).
fn wait_for_dev(dir: &Path, supervisor: &mut Child) -> Result<DevFile> {
    let started = Instant::now();
    loop {
        if let Ok(dev) = DevFile::load(dir) {
            return Ok(dev);
        }
        if let Some(status) = supervisor.try_wait()? {
            let log = std::fs::read_to_string(dir.join("hyokctl-dev.log")).unwrap_or_default();
            bail!("hyokctl dev exited ({status}) before the cluster was ready:\n{log}");
        }
        if started.elapsed() > Duration::from_secs(180) {
            let _ = supervisor.kill();
            bail!("hyokctl dev did not write {}", DevFile::path(dir).display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// Starts `hyokctl dev` with `nodes` nodes and threshold `threshold`, and waits for dev.json.
    pub fn start(nodes: u16, threshold: u16) -> Result<Self> {
        Self::start_with_env(nodes, threshold, &[])
    }

    /// [`Cluster::start`] with `env` (e.g. `HYOK_LOG_FORMAT=json`) in the environment of every
    /// process of the cluster, restarts included.
    pub fn start_with_env(nodes: u16, threshold: u16, env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let shape = ["--nodes".to_owned(), nodes.to_string(), "--threshold".to_owned(), threshold.to_string()];
        let mut supervisor = spawn_dev(dir.path(), &shape, &env)?;
        let dev = wait_for_dev(dir.path(), &mut supervisor)?;
        Ok(Cluster { dir, dev, supervisor, restarted: BTreeMap::new(), env, far: None })
    }

    /// The log of process `name` (`coordinator`, `node-3`, `xks`, `dke`), as written so far.
    pub fn log(&self, name: &str) -> Result<String> {
        let path = self.dir.path().join("logs").join(format!("{name}.log"));
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// Stops every process (as Ctrl-C on `hyokctl dev` would), then runs `hyokctl dev` again on
    /// the same directory and waits for its new dev.json.
    pub fn restart_all(&mut self) -> Result<()> {
        self.shutdown();
        self.supervisor = spawn_dev(self.dir.path(), &[], &self.env)?;
        self.dev = wait_for_dev(self.dir.path(), &mut self.supervisor)?;
        Ok(())
    }

    fn shutdown(&mut self) {
        for node in &self.dev.nodes {
            signal(node.pid, "CONT");
        }
        if let Some(mut far) = self.far.take() {
            // It stops the coordinator it started.
            signal(far.id(), "TERM");
            let _ = far.wait();
        }
        signal(self.supervisor.id(), "TERM");
        for child in self.restarted.values_mut() {
            signal(child.id(), "TERM");
            let _ = child.wait();
        }
        self.restarted.clear();
        let started = Instant::now();
        while self.supervisor.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.supervisor.kill();
        let _ = self.supervisor.wait();
        // Nodes are separate processes: wait until every one has released its store.
        for node in &self.dev.nodes {
            let _ = self.wait_gone(node.pid);
        }
    }

    /// Puts the coordinator's every connection to a node behind a delaying relay, `delay` each
    /// way (`hyok-delay-relay --dev-dir`: the coordinator is restarted on its address, with the
    /// relays as node endpoints). Front-ends and clients reach it as before; the nodes' own
    /// addresses (for restarts and direct clients) are unchanged.
    pub fn put_nodes_far(&mut self, delay: Duration) -> Result<()> {
        let exe = bin_dir().join("hyok-delay-relay");
        anyhow::ensure!(exe.exists(), "{} is missing: build hyok-e2e's binaries first", exe.display());
        let mut child = Command::new(exe)
            .arg("--dev-dir")
            .arg(self.dir.path())
            .arg("--delay-ms")
            .arg(delay.as_millis().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("ready") => break,
                Some(Ok(_)) => continue,
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!("hyok-delay-relay exited before it was ready");
                }
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        self.dev.coordinator = DevFile::load(self.dir.path())?.coordinator;
        self.far = Some(child);
        Ok(())
    }

    /// The admin's TLS files.
    pub fn admin_tls(&self) -> TlsFiles {
        TlsFiles {
            ca: self.dev.tls.ca.clone(),
            cert: self.dev.tls.client_cert.clone(),
            key: self.dev.tls.client_key.clone(),
        }
    }

    /// The TLS files of `role` from the cluster's PKI.
    pub fn tls_for(&self, role: Role) -> TlsFiles {
        let pki = self.dir.path().join("pki");
        TlsFiles {
            ca: pki.join("ca.pem"),
            cert: pki.join(format!("{}.pem", role.file_stem())),
            key: pki.join(format!("{}-key.pem", role.file_stem())),
        }
    }

    /// The operator tools' caller key (`DIR/caller.key`), which every node's policy lets sign
    /// requests for every key.
    pub fn signer(&self) -> Result<hyok_evidence::caller::Signer> {
        hyok_evidence::caller::Signer::load(&self.dir.path().join(hyok_cli::dev::CALLER_KEY_FILE))
    }

    /// A KeyVault client with the admin certificate, and the operator tools' caller key to sign
    /// cryptographic requests with ([`Signed`] is a `VaultClient` for everything else).
    pub async fn client(&self) -> Result<Signed> {
        let client = hyok_proto::connect_vault(&self.dev.coordinator.endpoint, &self.admin_tls()).await?;
        Ok(Signed { client, signer: std::sync::Arc::new(self.signer()?) })
    }

    /// [`Cluster::client`] for the coordinator at `endpoint` (a second one, say).
    pub async fn client_at(&self, endpoint: &str) -> Result<Signed> {
        let client = hyok_proto::connect_vault(endpoint, &self.admin_tls()).await?;
        Ok(Signed { client, signer: std::sync::Arc::new(self.signer()?) })
    }

    /// A second coordinator beside the dev cluster's, on a free port, with `settings` (TOML
    /// lines such as `metadata_ttl_ms = 600000`) added to a copy of the dev configuration; its
    /// log is `DIR/logs/{name}.log`.
    pub fn second_coordinator(&self, name: &str, settings: &str) -> Result<Served> {
        let dir = self.dir.path();
        let config = std::fs::read_to_string(dir.join("coordinator.toml")).context("reading coordinator.toml")?;
        let mut lines: Vec<String> = Vec::new();
        for line in config.lines() {
            if line.starts_with("listen =") {
                lines.push("listen = \"127.0.0.1:0\"".into());
                lines.extend(settings.lines().map(str::to_owned));
            } else if line.starts_with("metrics_listen =") {
                lines.push("metrics_listen = \"off\"".into());
            } else {
                lines.push(line.to_owned());
            }
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, lines.join("\n") + "\n")?;
        Served::coordinator(&path, &dir.join("logs").join(format!("{name}.log")))
    }

    /// The dev cluster's hyok-xks: where it answers and as whom (dev.json's `xks` section), and
    /// the CA its certificate chains to.
    pub fn xks(&self) -> Result<(hyok_xks::client::Target, PathBuf)> {
        let xks = self.dev.xks.as_ref().context("dev.json has no xks section")?;
        let target = hyok_xks::client::Target {
            base_url: xks.base_url.clone(),
            region: xks.region.clone(),
            access_key_id: xks.access_key_id.clone(),
            secret: xks.secret_access_key.clone(),
        };
        Ok((target, self.dev.tls.ca.clone()))
    }

    /// A direct client for node `id` with the admin certificate (reads: state, audit).
    pub async fn node_client(&self, id: u16) -> Result<NodeClient<Channel>> {
        self.node_client_as(id, &self.admin_tls()).await
    }

    /// A direct client for node `id` presenting `tls` (e.g. [`Cluster::tls_for`] a role).
    pub async fn node_client_as(&self, id: u16, tls: &TlsFiles) -> Result<NodeClient<Channel>> {
        let node = self.node(id)?;
        let channel = Endpoint::from_shared(node.endpoint.clone())?
            .tls_config(tls.client_config(&Role::Node(id).proof_name())?)?
            .connect()
            .await?;
        Ok(NodeClient::new(channel))
    }

    fn node(&self, id: u16) -> Result<&hyok_cli::devfile::DevNode> {
        self.dev.nodes.iter().find(|n| n.id == id).with_context(|| format!("no node {id}"))
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u16) -> Result<PathBuf> {
        Ok(self.node(id)?.data_dir.clone())
    }

    /// kill -9 node `id` and wait until it is gone.
    pub fn kill_node(&mut self, id: u16) -> Result<()> {
        self.end_node(id, "KILL")
    }

    /// SIGTERM node `id` (a clean stop, so its store can be opened) and wait until it is gone.
    pub fn stop_node(&mut self, id: u16) -> Result<()> {
        self.end_node(id, "TERM")
    }

    fn end_node(&mut self, id: u16, sig: &str) -> Result<()> {
        let pid = self.node(id)?.pid;
        signal(pid, sig);
        if let Some(mut child) = self.restarted.remove(&id) {
            let _ = child.wait();
        }
        self.wait_gone(pid)
    }

    fn wait_gone(&self, pid: u32) -> Result<()> {
        let started = Instant::now();
        // The supervisor reaps its own children; restarted ones were reaped above.
        while alive(pid) {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("process {pid} did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Restarts node `id` with the argv dev.json records, and waits for its readiness line.
    pub fn restart_node(&mut self, id: u16) -> Result<()> {
        let argv = self.node(id)?.argv.clone();
        self.start_node_with(id, argv)
    }

    /// Starts node `id` again with its recorded argv, but listening on `listen` (the address
    /// the coordinator knows is then free for something else).
    pub fn restart_node_listening(&mut self, id: u16, listen: &str) -> Result<()> {
        let mut argv = self.node(id)?.argv.clone();
        let at = argv.iter().position(|a| a == "--listen").context("the node's argv has no --listen")?;
        argv[at + 1] = listen.to_owned();
        self.start_node_with(id, argv)
    }

    fn start_node_with(&mut self, id: u16, argv: Vec<String>) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("logs").join(format!("node-{id}.log")))?;
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening on") => break,
                Some(Ok(_)) => continue,
                _ => bail!("node {id} exited before it was ready"),
            }
        }
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let pid = child.id();
        if let Some(node) = self.dev.nodes.iter_mut().find(|n| n.id == id) {
            node.pid = pid;
        }
        self.restarted.insert(id, child);
        Ok(())
    }

    /// kill -9 the coordinator and wait until it is gone (`hyokctl dev` does not restart it).
    pub fn kill_coordinator(&self) -> Result<()> {
        signal(self.dev.coordinator.pid, "KILL");
        self.wait_gone(self.dev.coordinator.pid)
    }

    /// SIGSTOP / SIGCONT node `id` (a partition that keeps its sockets open).
    pub fn pause_node(&self, id: u16, paused: bool) -> Result<()> {
        signal(self.node(id)?.pid, if paused { "STOP" } else { "CONT" });
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Retries `f` until it succeeds or `limit` passes (for waiting on a restarted cluster).
pub async fn eventually<T, F, Fut>(limit: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if started.elapsed() > limit => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits (up to 20 s) until the coordinator reaches every node: a node it saw fail is skipped
/// for a while after it comes back, and would never be asked.
pub async fn all_nodes_reachable(client: &Signed) -> Result<()> {
    eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let status = client.cluster_status(hyok_proto::v1::ClusterStatusRequest {}).await?.into_inner();
            anyhow::ensure!(status.nodes.iter().all(|n| n.reachable), "waiting for every node");
            Ok(())
        }
    })
    .await
}

/// RSA-OAEP-256 of `message` to the public key hyok-dke publishes (the `key` of `GET /{name}`).
pub fn wrap_to_published(key: &serde_json::Value, message: &[u8]) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let n = base64::engine::general_purpose::STANDARD.decode(key["n"].as_str().context("no n")?)?;
    let e = key["e"].as_u64().context("no e")?;
    let public = hyok_threshold::rsa::RsaPublicKey::from_components(&n, &e.to_be_bytes())?;
    Ok(hyok_threshold::rsa::oaep::encrypt(&public, message, &mut rand::rng())?)
}

/// A KeyVault client and the caller key its cryptographic requests are signed with.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The client.
    pub client: VaultClient,
    /// The caller key.
    pub signer: std::sync::Arc<hyok_evidence::caller::Signer>,
}

impl std::ops::Deref for Signed {
    type Target = VaultClient;
    fn deref(&self) -> &VaultClient {
        &self.client
    }
}

impl std::ops::DerefMut for Signed {
    fn deref_mut(&mut self) -> &mut VaultClient {
        &mut self.client
    }
}

/// An extra process of the cluster (a second coordinator, a hyok-xks with its own settings),
/// started from its configuration file and killed when dropped.
#[derive(Debug)]
pub struct Served {
    child: Child,
    /// The address it listens on, from its readiness line.
    pub addr: std::net::SocketAddr,
}

impl Served {
    /// A hyok-xks (`hyokctl xks serve --config FILE`).
    pub fn xks(config: &Path, log: &Path) -> Result<Self> {
        Self::start(&["xks", "serve", "--config"], config, log)
    }

    /// A coordinator (`hyokctl coordinator --config FILE`).
    pub fn coordinator(config: &Path, log: &Path) -> Result<Self> {
        Self::start(&["coordinator", "--config"], config, log)
    }

    /// Starts `hyokctl ARGS CONFIG` (stderr appended to `log`) and waits for its
    /// `… listening on ADDR` line. A config listening on port 0 gets a free port.
    fn start(args: &[&str], config: &Path, log: &Path) -> Result<Self> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = Command::new(hyokctl())
            .args(args)
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some((_, addr)) = line.split_once("listening on ") {
                        break addr.trim().parse().with_context(|| format!("address in {line:?}"));
                    }
                }
                _ => break Err(anyhow::anyhow!("hyokctl {} exited before it was ready", args.join(" "))),
            }
        };
        let addr = match addr {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Served { child, addr })
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node's answer to an `EvaluateBatch` of the one `item`: its refusal, or its value made a
/// partial by checking the answer's batch proof against `package` (panics if it fails), as the
/// coordinator's batcher does. The input is what the node evaluates: for an encryption, on the
/// seed it derives from the nonce.
pub fn proven_partial(
    package: &hyok_threshold::PublicKeyPackage,
    item: &hyok_proto::v1::EvaluateItem,
    answer: hyok_proto::v1::EvaluateBatchResponse,
) -> std::result::Result<hyok_threshold::PartialEvaluation, hyok_proto::v1::ItemError> {
    use hyok_proto::v1 as pb;
    use hyok_threshold::Wire;
    use hyok_threshold::dprf::{self, BatchProof, DprfInput, HashedInput, PartialValue};
    let bytes = match answer.results.into_iter().next().and_then(|r| r.result) {
        Some(pb::partial_result::Result::Partial(bytes)) => bytes,
        Some(pb::partial_result::Result::Error(e)) => return Err(e),
        None => panic!("no result"),
    };
    let given: [u8; 16] = item.seed.as_slice().try_into().expect("a 16-byte seed");
    let seed = if item.operation == pb::Operation::Encrypt as i32 {
        dprf::encryption_seed(&item.key_id, item.version, &given)
    } else {
        given
    };
    let input = HashedInput::new(DprfInput::new(&item.key_id, item.version, seed).expect("a valid input"));
    assert_eq!(answer.proofs.len(), 1, "one proof for the one value");
    assert_eq!(answer.proofs[0].items, vec![0]);
    let value = PartialValue::from_bytes(&bytes).expect("a partial value");
    let proof = BatchProof::from_bytes(&answer.proofs[0].proof).expect("a batch proof");
    let coefficient = hyok_threshold::Coefficient::from_bytes(&item.coefficient).expect("a valid coefficient");
    let mut proven = dprf::vartime_verify_batch(package, &[(&input, coefficient)], &[value], &proof, &mut rand::rng())
        .expect("the node's batch proof verifies");
    Ok(proven.remove(0))
}
