//! Chaos over Docker Compose: the real `docker-compose.yml` (five nodes, the coordinator,
//! hyok-xks, the key bootstrap) on an image built FROM scratch from this build's `hyokctl`.
//! Skipped, with a message saying so, where no Docker engine or docker-compose is available.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_cli::compose::ComposeFile;
use hyok_e2e::hyokctl;
use hyok_xks::client::{self, Connection, Target};
use rand::{Rng, RngExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How long the chaos lasts.
const CHAOS: Duration = Duration::from_secs(20);
/// hyok-xks's per-request budget in these runs.
const BUDGET_MS: u64 = 1000;
/// How long to wait for the cluster to come up or recover.
const PATIENCE: Duration = Duration::from_secs(120);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn docker_available() -> bool {
    let ok = |cmd: &str, args: &[&str]| {
        Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    ok("docker", &["info"]) && ok("docker-compose", &["version"])
}

/// A compose project of this test; `down -v` and the image removed when dropped.
struct Project {
    name: String,
    image: String,
    dir: tempfile::TempDir,
    port: u16,
    dke_port: u16,
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(workspace())
            .env("HYOK_COMPOSE_DIR", self.dir.path())
            .env("HYOK_XKS_PORT", self.port.to_string())
            .env("HYOK_DKE_PORT", self.dke_port.to_string())
            .env("HYOK_IMAGE", &self.image)
            .args(["-p", &self.name])
            .args(args)
            .output()
            .expect("run docker-compose")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn docker(&self, args: &[&str]) {
        let out = Command::new("docker").args(args).output().expect("run docker");
        assert!(out.status.success(), "docker {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.name)
    }

    /// `hyokctl ARGS…` inside the project's front network with the admin certificate (the
    /// coordinator is not published on the host), `stdin` fed to it.
    fn hyokctl(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut child = Command::new("docker-compose")
            .current_dir(workspace())
            .env("HYOK_COMPOSE_DIR", self.dir.path())
            .env("HYOK_XKS_PORT", self.port.to_string())
            .env("HYOK_DKE_PORT", self.dke_port.to_string())
            .env("HYOK_IMAGE", &self.image)
            .args(["-p", &self.name, "run", "-T", "--rm", "init", "--endpoint", "https://coordinator:7100"])
            .args(["--ca", "/etc/hyok/pki/ca.pem", "--cert", "/etc/hyok/pki/admin.pem"])
            .args(["--key", "/etc/hyok/pki/admin-key.pem"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker-compose");
        child.stdin.take().expect("stdin").write_all(stdin).expect("feed stdin");
        child.wait_with_output().expect("wait for docker-compose")
    }

    /// `hyokctl status` as seen from inside the project's front network, with the admin
    /// certificate (the coordinator is not published on the host).
    fn status(&self) -> String {
        self.compose_ok(&[
            "run",
            "--rm",
            "init",
            "--endpoint",
            "https://coordinator:7100",
            "--ca",
            "/etc/hyok/pki/ca.pem",
            "--cert",
            "/etc/hyok/pki/admin.pem",
            "--key",
            "/etc/hyok/pki/admin-key.pem",
            "status",
        ])
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"]);
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn encrypt_body(plaintext: &[u8], n: u64) -> Value {
    json!({"requestMetadata": client::request_metadata("Encrypt", &format!("compose-{n}")),
        "plaintext": STANDARD.encode(plaintext), "encryptionAlgorithm": "AES_GCM"})
}

fn decrypt_body(sealed: &Value, n: u64) -> Value {
    json!({"requestMetadata": client::request_metadata("Decrypt", &format!("compose-{n}")),
        "ciphertext": sealed["ciphertext"], "initializationVector": sealed["initializationVector"],
        "authenticationTag": sealed["authenticationTag"], "ciphertextMetadata": sealed["ciphertextMetadata"],
        "encryptionAlgorithm": "AES_GCM"})
}

/// One encrypt and decrypt; Err describes the first failure, and a wrong plaintext is one.
async fn round_trip(conn: &Connection, target: &Target, key: &str, n: u64) -> Result<Value, String> {
    let mut plaintext = vec![0u8; rand::rng().random_range(1..300)];
    rand::rng().fill_bytes(&mut plaintext);
    let post = |path: String, body: Value| async move {
        match conn.post_signed(target, &path, body.to_string().as_bytes(), SystemTime::now()).await {
            Ok(a) if a.status == 200 => Ok(a.json),
            Ok(a) => Err(format!("{path}: {} {}", a.status, String::from_utf8_lossy(&a.body))),
            Err(e) => Err(format!("{path}: {e:#}")),
        }
    };
    let sealed = post(format!("/keys/{key}/encrypt"), encrypt_body(&plaintext, n)).await?;
    let opened = post(format!("/keys/{key}/decrypt"), decrypt_body(&sealed, n)).await?;
    match STANDARD.decode(opened["plaintext"].as_str().unwrap_or_default()) {
        Ok(bytes) if bytes == plaintext => Ok(sealed),
        _ => Err("WRONG PLAINTEXT".into()),
    }
}

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The health status of every node, in hyok-xks's deep health check.
async fn fleet(conn: &Connection, target: &Target) -> Vec<String> {
    fleet_by_id(conn, target).await.into_iter().map(|(_, status)| status).collect()
}

/// (entry id, health status) for every node.
async fn fleet_by_id(conn: &Connection, target: &Target) -> Vec<(String, String)> {
    let body = json!({"requestMetadata": {"kmsOperation": "KmsHealthCheck", "kmsRequestId": "compose"}});
    match conn.post_signed(target, "/health", body.to_string().as_bytes(), SystemTime::now()).await {
        Ok(a) if a.status == 200 => a.json["ekmFleetDetails"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|e| {
                        let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                        (field("id"), field("healthStatus"))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Waits until the cluster serves through node `id` again (a restarted node counts as down
/// until then).
async fn wait_node_active(conn: &Connection, target: &Target, id: u16) {
    let name = format!("hyok-node-{id}");
    wait_for(&format!("{name} ACTIVE again"), || async {
        fleet_by_id(conn, target).await.iter().any(|(entry, status)| *entry == name && status == "ACTIVE")
    })
    .await;
}

/// hyok-dke in the compose cluster: its RSA key (made by the bootstrap's ceremony) published,
/// and a content key wrapped to it unwrapped through the cluster for the dev issuer's user.
async fn dke_round_trip(project: &Project, file: &ComposeFile) {
    let dke = &file.dke;
    let base_url = format!("https://localhost:{}", project.dke_port);
    let ca = project.dir.path().join("pki/ca.pem");
    let started = Instant::now();
    let (conn, key) = loop {
        if let Ok(conn) = hyok_dke::client::connect(&base_url, &ca, true).await
            && let Ok(answer) = conn.get(&format!("/{}", dke.key_name)).await
            && answer.status == 200
        {
            break (conn, answer.json["key"].clone());
        }
        assert!(started.elapsed() < PATIENCE, "hyok-dke never published its key");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let n = STANDARD.decode(key["n"].as_str().unwrap()).unwrap();
    let e = key["e"].as_u64().unwrap();
    let public = hyok_threshold::rsa::RsaPublicKey::from_components(&n, &e.to_be_bytes()).unwrap();
    let wrapped = hyok_threshold::rsa::oaep::encrypt(&public, b"content key via compose", &mut rand::rng()).unwrap();
    let token = hyok_cli::dke::mint_token(
        &dke.issuer_key,
        &dke.issuer_kid,
        &dke.issuer,
        &dke.public_base_url,
        &dke.authorized_email,
        hyok_cli::dke::TOKEN_LIFETIME,
    )
    .unwrap();
    let path = key["kid"].as_str().unwrap().strip_prefix(&dke.public_base_url).unwrap().to_owned() + "/decrypt";
    let body = json!({"alg": "RSA-OAEP-256", "value": STANDARD.encode(&wrapped)}).to_string();
    let answer = conn.post(&path, Some(&token), body.as_bytes()).await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(STANDARD.decode(answer.json["value"].as_str().unwrap()).unwrap(), b"content key via compose");
    println!("dke (compose): key {} published, one content key unwrapped through the cluster", dke.key_name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_cluster_serves_xks_and_dke_through_kills_partition_outage_wipe_and_killed_key_creation() {
    if !docker_available() {
        println!("SKIPPED: no Docker engine or docker-compose here; the compose chaos suite needs both");
        return;
    }
    let tag = format!("{}-{}", std::process::id(), rand::rng().random_range(0..1_000_000u32));
    let project = Project {
        name: format!("hyoke2e{}", tag.replace('-', "")),
        image: format!("hyok:e2e-{tag}"),
        dir: tempfile::tempdir().unwrap(),
        port: free_port(),
        dke_port: free_port(),
    };
    let build = Command::new(workspace().join("docker/build-image.sh"))
        .env("HYOKCTL", hyokctl())
        .env("IMAGE", &project.image)
        .output()
        .unwrap();
    assert!(build.status.success(), "building the image: {}", String::from_utf8_lossy(&build.stderr));
    let init = Command::new(hyokctl()).args(["compose", "init", "--dir"]).arg(project.dir.path()).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let file = ComposeFile::load(project.dir.path()).unwrap();
    // Debug builds of eight containers share two cores here (with the test itself): give each
    // request 1 s instead of KMS's 200 ms, so what is tested is failover, not this machine's speed.
    let xks_config = project.dir.path().join("xks/xks.toml");
    let text = std::fs::read_to_string(&xks_config).unwrap();
    std::fs::write(&xks_config, format!("budget_ms = {BUDGET_MS}\n{text}")).unwrap();
    project.compose_ok(&["up", "-d"]);

    let target = Target {
        base_url: file.xks_base_url(project.port),
        region: file.region.clone(),
        access_key_id: file.access_key_id.clone(),
        secret: file.secret_access_key.clone(),
    };
    let key = file.keys["encrypt_decrypt"].clone();
    let ca = project.dir.path().join("pki/ca.pem");
    let started = Instant::now();
    let conn = loop {
        match client::connect(&target.base_url, &ca, true, None).await {
            Ok(conn) => break conn,
            Err(e) => assert!(started.elapsed() < PATIENCE, "hyok-xks never accepted a connection: {e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    wait_for("five ACTIVE nodes and the bootstrapped keys", || async {
        fleet(&conn, &target).await.iter().filter(|s| *s == "ACTIVE").count() == 5
            && round_trip(&conn, &target, &key, 0).await.is_ok()
    })
    .await;
    dke_round_trip(&project, &file).await;
    let mut before = Vec::new();
    for n in 1..=5 {
        before.push((n, round_trip(&conn, &target, &key, n).await.expect("round trip before the chaos")));
    }

    // Chaos: `docker kill` (SIGKILL) a random node while fewer than n − t are down, otherwise
    // `docker start` a dead one, which counts as down until the cluster serves through it again;
    // traffic flows all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (conn, target, key, stop) = (conn.clone(), target.clone(), key.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut requests, mut failures, mut latencies) = (0u64, Vec::new(), Vec::new());
            let mut n = 1000;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let result = round_trip(&conn, &target, &key, n).await;
                latencies.push(started.elapsed().as_micros() as u64);
                requests += 2;
                if let Err(e) = result {
                    failures.push(e);
                }
            }
            (requests, failures, latencies)
        })
    };
    let n_minus_t = usize::from(file.nodes - file.threshold);
    let mut down = BTreeSet::new();
    let (mut kills, mut starts) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < CHAOS {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let kill = down.len() < n_minus_t && (down.is_empty() || rand::rng().random_bool(0.5));
        if kill {
            let alive: Vec<u16> = (1..=file.nodes).filter(|id| !down.contains(id)).collect();
            let id = alive[rand::rng().random_range(0..alive.len())];
            project.docker(&["kill", &project.container(&format!("node-{id}"))]);
            down.insert(id);
            kills += 1;
        } else {
            let dead: Vec<u16> = down.iter().copied().collect();
            let id = dead[rand::rng().random_range(0..dead.len())];
            project.docker(&["start", &project.container(&format!("node-{id}"))]);
            wait_node_active(&conn, &target, id).await;
            down.remove(&id);
            starts += 1;
        }
    }
    for id in std::mem::take(&mut down) {
        project.docker(&["start", &project.container(&format!("node-{id}"))]);
        starts += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, failures, mut latencies) = traffic.await.unwrap();
    latencies.sort_unstable();
    let p99 = latencies.get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "chaos (compose): {requests} requests, {} errors, p99 {:.1} ms per round trip; {kills} kills, {starts} starts in {CHAOS:?}; budget {BUDGET_MS} ms",
        failures.len(),
        p99 as f64 / 1000.0
    );
    assert!(kills >= 2, "too few kills to mean anything");
    assert!(failures.is_empty(), "failed requests: {:?}", &failures[..failures.len().min(10)]);

    // A partitioned node (its network cut) behaves like a dead one: every request still succeeds
    // within its deadline; healed, the node serves again.
    let network = format!("{}_node-3", project.name);
    project.docker(&["network", "disconnect", &network, &project.container("node-3")]);
    let (mut partitioned, mut slowest) = (0, Duration::ZERO);
    for n in 3000..3040 {
        let started = Instant::now();
        round_trip(&conn, &target, &key, n).await.expect("round trip with node 3 partitioned");
        slowest = slowest.max(started.elapsed());
        partitioned += 2;
    }
    // Reattached under its service name, as compose attached it (the coordinator finds it by name).
    project.docker(&["network", "connect", "--alias", "node-3", &network, &project.container("node-3")]);
    wait_node_active(&conn, &target, 3).await;
    println!("partition (compose): {partitioned} requests, 0 errors, slowest round trip {slowest:?}; node 3 back");

    // n − t + 1 nodes down: requests fail cleanly (503, or 500), never succeed; health says
    // UNAVAILABLE; all restarted, the cluster serves again and old ciphertexts decrypt.
    for id in 1..=3 {
        project.docker(&["kill", &project.container(&format!("node-{id}"))]);
    }
    let mut refused = 0;
    for n in 4000..4010 {
        let body = encrypt_body(b"below threshold", n);
        let answer = conn
            .post_signed(&target, &format!("/keys/{key}/encrypt"), body.to_string().as_bytes(), SystemTime::now())
            .await
            .unwrap();
        assert!(matches!(answer.status.as_u16(), 503 | 500), "below t: {} {:?}", answer.status, answer.json);
        refused += 1;
    }
    wait_for("every node UNAVAILABLE below the threshold", || async {
        let fleet = fleet(&conn, &target).await;
        !fleet.is_empty() && fleet.iter().all(|s| s == "UNAVAILABLE")
    })
    .await;
    let down_at = Instant::now();
    for id in 1..=3 {
        project.docker(&["start", &project.container(&format!("node-{id}"))]);
    }
    wait_for("the cluster to serve again", || async { round_trip(&conn, &target, &key, 4100).await.is_ok() }).await;
    let back_after = down_at.elapsed();
    for (n, sealed) in &before {
        let body = decrypt_body(sealed, *n);
        let answer = conn
            .post_signed(&target, &format!("/keys/{key}/decrypt"), body.to_string().as_bytes(), SystemTime::now())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "ciphertext {n} from before the outage: {:?}", answer.json);
    }
    println!(
        "below threshold (compose): {refused} requests, {refused} refused with 503/500, 0 succeeded; serving again {back_after:?} after restart"
    );

    // A node restarted with its volume keeps every key: after the chaos, all five nodes hold
    // the share of every key again.
    wait_for("every node ACTIVE after the chaos", || async {
        fleet(&conn, &target).await.iter().filter(|s| *s == "ACTIVE").count() == 5
    })
    .await;
    let status = project.status();
    let demo = status.lines().find(|l| l.starts_with("xks-demo")).unwrap_or_else(|| panic!("{status}"));
    assert!((1..=5).all(|id| demo.contains(&format!("{id}:SE"))), "every node holds xks-demo: {demo}");

    // A node whose volume is wiped comes back with no shares; it is reported, and the cluster
    // keeps serving from the rest, old ciphertexts included.
    project.compose_ok(&["stop", "node-2"]);
    project.compose_ok(&["rm", "-f", "node-2"]);
    // (Its data directory is set aside, as a backup its operator keeps.)
    let data = project.dir.path().join("node-2");
    let backup = project.dir.path().join("node-2.backup");
    std::fs::rename(&data, &backup).unwrap();
    std::fs::create_dir(&data).unwrap();
    project.compose_ok(&["up", "-d", "node-2"]);
    wait_for("the wiped node to be reported without its share", || async {
        let status = project.status();
        status.lines().find(|l| l.starts_with("xks-demo")).is_some_and(|l| l.contains("2:.") && l.contains("1:SE"))
    })
    .await;
    for (n, sealed) in &before {
        let body = decrypt_body(sealed, *n);
        let answer = conn
            .post_signed(&target, &format!("/keys/{key}/decrypt"), body.to_string().as_bytes(), SystemTime::now())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "ciphertext {n} from before, with node 2 wiped: {:?}", answer.json);
    }
    for n in 2000..2010 {
        round_trip(&conn, &target, &key, n).await.expect("round trip with node 2 wiped");
    }
    println!(
        "wiped volume (compose): node 2 reported without shares; {} old ciphertexts and 10 round trips (20 requests) served, 0 errors",
        before.len()
    );
    // The wiped node has a new identity that no manifest pins: no DKG can include it. Its
    // operator restores the backup (identity, manifest, shares), and it serves again.
    project.compose_ok(&["stop", "node-2"]);
    project.compose_ok(&["rm", "-f", "node-2"]);
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::rename(&backup, &data).unwrap();
    project.compose_ok(&["up", "-d", "node-2"]);
    wait_for("the restored node to serve again", || async {
        fleet(&conn, &target).await.iter().filter(|s| *s == "ACTIVE").count() == 5
    })
    .await;

    // Key creation killed midway, repeatedly: a node container is killed while `key create`
    // runs. Every acknowledged key survives and serves; a refused one left nothing (and can be
    // created now) or a whole key.
    let (mut acknowledged, mut refused) = (Vec::new(), Vec::new());
    for round in 0..4 {
        let name = format!("compose-key-{round}");
        let creating = {
            std::thread::scope(|scope| {
                let create = scope.spawn(|| project.hyokctl(&["key", "create", &name], b""));
                // `docker-compose run` takes about a second to start the client; kill within the DKG.
                std::thread::sleep(Duration::from_millis(rand::rng().random_range(900..2000)));
                let victim = rand::rng().random_range(1..=file.nodes);
                project.docker(&["kill", &project.container(&format!("node-{victim}"))]);
                let out = create.join().expect("create thread");
                project.docker(&["start", &project.container(&format!("node-{victim}"))]);
                out
            })
        };
        if creating.status.success() {
            acknowledged.push(name)
        } else {
            refused.push(name)
        }
        wait_for("every node ACTIVE after a killed creation", || async {
            fleet(&conn, &target).await.iter().filter(|s| *s == "ACTIVE").count() == 5
        })
        .await;
    }
    let works = |name: &str| {
        let sealed = project.hyokctl(&["encrypt", "--key", name], b"compose key creation");
        sealed.status.success() && {
            let opened = project.hyokctl(&["decrypt", "--key", name], &sealed.stdout);
            opened.status.success() && opened.stdout == b"compose key creation"
        }
    };
    for name in &acknowledged {
        assert!(works(name), "acknowledged key {name} does not serve");
    }
    let (mut absent, mut whole) = (0, 0);
    for name in &refused {
        if project.hyokctl(&["key", "show", name], b"").status.success() {
            assert!(works(name), "{name} exists after a refused creation but does not serve");
            whole += 1;
        } else {
            let again = project.hyokctl(&["key", "create", name], b"");
            assert!(again.status.success(), "re-creating {name}: {}", String::from_utf8_lossy(&again.stderr));
            assert!(works(name));
            absent += 1;
        }
    }
    println!(
        "key creation chaos (compose): {} creations, {} acknowledged (all serve), {} refused ({absent} left nothing, {whole} committed whole)",
        acknowledged.len() + refused.len(),
        acknowledged.len(),
        refused.len()
    );
}
