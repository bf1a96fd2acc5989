//! Every process of a dev cluster serves Prometheus metrics at the `metrics_url` dev.json
//! names; the text parses (and passes `promtool check metrics` where promtool is installed), and
//! traffic moves the counters: requests through the coordinator and hyok-xks, partials on the
//! nodes, the coordinator's per-node view. Every metric the Grafana dashboard
//! (monitoring/grafana-dashboard.json) queries is one that some process exposes, and the compose
//! scrape configuration passes `promtool check config`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyok_e2e::{Cluster, eventually};
use hyok_proto::v1 as pb;
use hyok_xks::client;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime};

const N: usize = 12;
const PATIENCE: Duration = Duration::from_secs(60);

/// One scrape: every sample as `name{labels}` → value.
#[derive(Debug, Default)]
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of `sample` (`name{labels}` exactly as exposed), 0 when absent.
    fn get(&self, sample: &str) -> f64 {
        self.samples.get(sample).copied().unwrap_or(0.0)
    }

    /// The sum over every sample of family `name` whose labels contain each of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name)
                    && labels.iter().all(|l| k.contains(&format!("{l},")) || k.contains(&format!("{l}}}")))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// GETs `url` (`http://127.0.0.1:PORT/metrics`) and parses the Prometheus text format: every
/// line is a `# HELP`/`# TYPE` comment or `name{labels} value`, each sample's family was typed.
fn scrape(url: &str) -> anyhow::Result<Scrape> {
    let rest = url.strip_prefix("http://").ok_or_else(|| anyhow::anyhow!("{url} is not http://"))?;
    let (addr, path) = rest.split_once('/').ok_or_else(|| anyhow::anyhow!("{url} has no path"))?;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow::anyhow!("no HTTP head"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{url}: {head}");
    anyhow::ensure!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{url}: {head}");
    let mut typed = Vec::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| anyhow::anyhow!("bad TYPE line {line:?}"))?;
            anyhow::ensure!(["counter", "gauge", "histogram", "untyped"].contains(&kind), "bad type in {line:?}");
            typed.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        anyhow::ensure!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
        let (sample, value) = line.rsplit_once(' ').ok_or_else(|| anyhow::anyhow!("bad sample {line:?}"))?;
        let value: f64 = value.parse().map_err(|_| anyhow::anyhow!("bad value in {line:?}"))?;
        let name = sample.split('{').next().unwrap_or_default();
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let (family, kind) = typed.last().ok_or_else(|| anyhow::anyhow!("sample before any TYPE: {line:?}"))?;
        let belongs = match kind.as_str() {
            "histogram" => {
                [family.clone(), format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")]
                    .contains(&name.to_owned())
            }
            _ => name == family,
        };
        anyhow::ensure!(belongs, "{line:?} is not of the family typed before it ({family} {kind})");
        anyhow::ensure!(samples.insert(sample.to_owned(), value).is_none(), "{sample} twice");
    }
    Ok(Scrape { text: body.to_owned(), samples })
}

/// `promtool check metrics` on the text, when promtool is installed.
fn promtool_check(what: &str, text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!(
            "promtool is not installed (Debian package `prometheus`): skipping `promtool check metrics` of {what}"
        );
        return;
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics of {what}: {said}");
}

fn monitoring(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring").join(file)
}

/// Every metric name the dashboard's queries use (`hyok_…`, `process_…`).
fn dashboard_metric_names() -> std::collections::BTreeSet<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for target in panels.iter().filter_map(|p| p["targets"].as_array()).flatten() {
        let expr = target["expr"].as_str().expect("every target has an expr");
        let mut word = String::new();
        for c in expr.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                word.push(c);
            } else {
                if word.starts_with("hyok_") || word.starts_with("process_") {
                    names.insert(std::mem::take(&mut word));
                }
                word.clear();
            }
        }
    }
    names
}

/// The families (`# TYPE` lines: name → kind) of scrapes.
fn families<'a>(scrapes: impl IntoIterator<Item = &'a Scrape>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for s in scrapes {
        for line in s.text.lines() {
            if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
                out.insert(name.to_owned(), kind.to_owned());
            }
        }
    }
    out
}

#[test]
fn the_compose_scrape_configuration_passes_promtool() {
    let Ok(out) =
        std::process::Command::new("promtool").args(["check", "config"]).arg(monitoring("prometheus.yml")).output()
    else {
        eprintln!("promtool is not installed (Debian package `prometheus`): skipping `promtool check config`");
        return;
    };
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("SUCCESS"), "promtool check config: {said}");
}

struct Urls {
    coordinator: String,
    xks: String,
    dke: String,
    nodes: Vec<String>,
}

impl Urls {
    fn of(cluster: &Cluster) -> Urls {
        let dev = &cluster.dev;
        let url = |u: &str, what: &str| {
            assert!(u.starts_with("http://127.0.0.1:") && u.ends_with("/metrics"), "{what} metrics_url {u:?}");
            u.to_owned()
        };
        Urls {
            coordinator: url(&dev.coordinator.metrics_url, "coordinator"),
            xks: url(&dev.xks.as_ref().expect("an xks section").metrics_url, "xks"),
            dke: url(&dev.dke.as_ref().expect("a dke section").metrics_url, "dke"),
            nodes: dev.nodes.iter().map(|n| url(&n.metrics_url, "node")).collect(),
        }
    }

    fn nodes(&self) -> Vec<Scrape> {
        self.nodes.iter().map(|u| scrape(u).unwrap()).collect()
    }
}

fn sum_nodes(nodes: &[Scrape], name: &str, labels: &[&str]) -> f64 {
    nodes.iter().map(|s| s.sum(name, labels)).sum()
}

const COORD_ENCRYPT: &str = "hyok_grpc_requests_total{service=\"hyok.v1.KeyVault\",method=\"Encrypt\",code=\"OK\"}";
const XKS_ENCRYPT: &str = "hyok_xks_requests_total{api=\"Encrypt\",status=\"200\",error=\"none\"}";
const DKE_PUBLIC_KEY: &str = "hyok_dke_requests_total{api=\"public_key\",status=\"200\",error=\"none\"}";

#[tokio::test(flavor = "multi_thread")]
async fn every_process_serves_metrics_that_parse_and_traffic_moves_the_counters() {
    let cluster = Cluster::start(5, 3).unwrap();
    let urls = Urls::of(&cluster);

    // Every process answers, in a format that parses and that promtool accepts.
    let mut all: Vec<(&str, &str)> =
        vec![("coordinator", &urls.coordinator), ("hyok-xks", &urls.xks), ("hyok-dke", &urls.dke)];
    all.extend(urls.nodes.iter().map(|u| ("node", u.as_str())));
    for (what, url) in &all {
        let s = scrape(url).unwrap_or_else(|e| panic!("{what} at {url}: {e:#}"));
        assert!(s.get("process_resident_memory_bytes") > 0.0, "{what}: no resident memory:\n{}", s.text);
        assert!(s.samples.contains_key("process_cpu_seconds_total"), "{what}: no CPU seconds:\n{}", s.text);
        promtool_check(&format!("{what} ({url})"), &s.text);
    }

    // The coordinator's threshold monitor sees 5 nodes up against t = 3.
    let coordinator = &urls.coordinator;
    eventually(PATIENCE, || async move {
        let s = scrape(coordinator)?;
        anyhow::ensure!(s.get("hyok_coordinator_nodes_up") == 5.0, "nodes up: {}", s.get("hyok_coordinator_nodes_up"));
        anyhow::ensure!(s.get("hyok_coordinator_nodes") == 5.0 && s.get("hyok_coordinator_threshold") == 3.0);
        anyhow::ensure!(s.get("hyok_coordinator_threshold_margin") == 2.0);
        anyhow::ensure!(s.sum("hyok_coordinator_node_up", &[]) == 5.0);
        Ok(())
    })
    .await
    .unwrap();

    let before =
        (scrape(&urls.coordinator).unwrap(), scrape(&urls.xks).unwrap(), scrape(&urls.dke).unwrap(), urls.nodes());

    // N encrypts through the coordinator.
    let mut vault = cluster.client().await.unwrap();
    for i in 0..N {
        let plaintext = format!("metrics {i}").into_bytes();
        let evidence = Some(vault.signer.encrypt(hyok_cli::dev::DEMO_KEY, &plaintext, &[]));
        vault
            .encrypt(pb::EncryptRequest {
                key_id: hyok_cli::dev::DEMO_KEY.into(),
                plaintext,
                aad: Vec::new(),
                request_id: format!("metrics-{i}"),
                evidence,
            })
            .await
            .unwrap();
    }
    // N encrypts through hyok-xks, signed as KMS signs them.
    let (target, ca) = cluster.xks().unwrap();
    let key = cluster.dev.xks.as_ref().unwrap().keys["encrypt_decrypt"].clone();
    let conn = client::connect(&target.base_url, &ca, true, None).await.unwrap();
    for i in 0..N {
        let body = serde_json::json!({
            "requestMetadata": client::request_metadata("Encrypt", &format!("metrics-xks-{i}")),
            "plaintext": STANDARD.encode(format!("xks {i}")),
            "encryptionAlgorithm": "AES_GCM",
        });
        let answer = conn
            .post_signed(&target, &format!("/keys/{key}/encrypt"), body.to_string().as_bytes(), SystemTime::now())
            .await
            .unwrap();
        assert_eq!(answer.status, http::StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    }
    // One refusal through hyok-xks: an unknown key.
    let body = serde_json::json!({
        "requestMetadata": client::request_metadata("Encrypt", "metrics-xks-unknown"),
        "plaintext": STANDARD.encode("x"),
        "encryptionAlgorithm": "AES_GCM",
    });
    let refused = conn
        .post_signed(&target, "/keys/no-such-key/encrypt", body.to_string().as_bytes(), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(refused.status, http::StatusCode::NOT_FOUND);
    // One DKE public key.
    let dke = cluster.dev.dke.as_ref().unwrap();
    let dke_conn = hyok_dke::client::connect(&dke.base_url, &cluster.dev.tls.ca, true).await.unwrap();
    assert_eq!(dke_conn.get(&format!("/{}", dke.key_name)).await.unwrap().status, http::StatusCode::OK);

    let after =
        (scrape(&urls.coordinator).unwrap(), scrape(&urls.xks).unwrap(), scrape(&urls.dke).unwrap(), urls.nodes());
    let rose = |a: f64, b: f64| b - a;
    let n = N as f64;

    // The coordinator, per RPC.
    let d = rose(before.0.get(COORD_ENCRYPT), after.0.get(COORD_ENCRYPT));
    assert!(d >= n, "coordinator Encrypt OK rose by {d}, not ≥ {N}:\n{}", after.0.text);
    let rpc_count = "hyok_grpc_request_duration_seconds_count{service=\"hyok.v1.KeyVault\",method=\"Encrypt\"}";
    assert!(rose(before.0.get(rpc_count), after.0.get(rpc_count)) >= n, "Encrypt latency histogram");
    // The coordinator's per-node view: ≥ t partials per encrypt (2N encrypts in all).
    let partials = |s: &Scrape| s.sum("hyok_coordinator_node_partial_duration_seconds_count", &["outcome=\"partial\""]);
    let d = rose(partials(&before.0), partials(&after.0));
    assert!(d >= 2.0 * n * 3.0, "coordinator saw {d} partials, not ≥ {}", 2 * N * 3);
    assert_eq!(after.0.sum("hyok_coordinator_node_invalid_partials_total", &[]), 0.0, "no node lied");

    // hyok-xks, by API, status and error name.
    let d = rose(before.1.get(XKS_ENCRYPT), after.1.get(XKS_ENCRYPT));
    assert!(d >= n, "hyok-xks Encrypt 200 rose by {d}, not ≥ {N}:\n{}", after.1.text);
    let not_found = "hyok_xks_requests_total{api=\"Encrypt\",status=\"404\",error=\"KeyNotFoundException\"}";
    assert!(
        rose(before.1.get(not_found), after.1.get(not_found)) >= 1.0,
        "no KeyNotFoundException counted:\n{}",
        after.1.text
    );
    assert_eq!(after.1.get("hyok_xks_requests_in_flight"), 0.0);
    // hyok-dke.
    assert!(rose(before.2.get(DKE_PUBLIC_KEY), after.2.get(DKE_PUBLIC_KEY)) >= 1.0, "{}", after.2.text);

    // The nodes: partials served and their per-RPC latency.
    let served = |nodes: &[Scrape]| sum_nodes(nodes, "hyok_node_operations_total", &["operation=\"evaluate:encrypt\""]);
    let d = rose(served(&before.3), served(&after.3));
    assert!(d >= 2.0 * n * 3.0, "nodes served {d} encrypt partials, not ≥ {}", 2 * N * 3);
    let batches = |nodes: &[Scrape]| {
        sum_nodes(
            nodes,
            "hyok_grpc_requests_total",
            &["service=\"hyok.v1.Node\"", "method=\"EvaluateBatch\"", "code=\"OK\""],
        )
    };
    assert!(rose(batches(&before.3), batches(&after.3)) >= 1.0, "no EvaluateBatch counted on the nodes");
    for (node, s) in cluster.dev.nodes.iter().zip(&after.3) {
        assert!(s.get("hyok_node_audit_log_entries") > 0.0, "node {}: empty audit log?\n{}", node.id, s.text);
        // Every append is timed (a slow disk shows here), and none is counted twice.
        let appends = s.get("hyok_node_audit_append_seconds_count");
        assert!(appends >= 1.0, "node {}: no audit append timed:\n{}", node.id, s.text);
        assert!(appends <= s.get("hyok_node_audit_log_entries"), "node {}: more appends than entries", node.id);
        assert!(s.get("hyok_node_keys{family=\"ec\"}") >= 1.0, "node {}: no EC key:\n{}", node.id, s.text);
        assert!(s.get("hyok_node_key_versions{family=\"ec\",state=\"active\"}") >= 1.0, "node {}", node.id);
    }

    // Refusals, by reason: node 1's operator vetoes the demo key; node 1 refuses the partials it
    // is asked for (the others serve), and both it and the coordinator count the refusal.
    let veto = |verb: &str| {
        let mut command = std::process::Command::new(hyok_e2e::hyokctl());
        command.arg("--dev-dir").arg(cluster.dir.path()).args(["node", verb, "--node", "1", hyok_cli::dev::DEMO_KEY]);
        if verb == "veto" {
            command.arg("metrics test");
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "node {verb}: {}", String::from_utf8_lossy(&out.stderr));
    };
    veto("veto");
    let refused = |s: &Scrape| s.sum("hyok_coordinator_node_refusals_total", &["node=\"1\""]);
    let mut tries = 0;
    while refused(&scrape(&urls.coordinator).unwrap()) == 0.0 {
        tries += 1;
        assert!(tries <= 50, "node 1 was never asked for a partial of its vetoed key in 50 encrypts");
        let plaintext = b"vetoed on node 1".to_vec();
        let evidence = Some(vault.signer.encrypt(hyok_cli::dev::DEMO_KEY, &plaintext, &[]));
        vault
            .encrypt(pb::EncryptRequest {
                key_id: hyok_cli::dev::DEMO_KEY.into(),
                plaintext,
                aad: Vec::new(),
                request_id: format!("metrics-veto-{tries}"),
                evidence,
            })
            .await
            .expect("t other nodes serve a key one node vetoed");
    }
    veto("lift");
    let vetoed = scrape(&urls.nodes[0]).unwrap();
    // (A vetoed key is refused as disabled.)
    assert!(vetoed.sum("hyok_node_refusals_total", &["reason=\"disabled\""]) >= 1.0, "{}", vetoed.text);
    let coordinator = scrape(&urls.coordinator).unwrap();

    // Every metric the dashboard queries is exposed (a histogram through its _bucket, _sum or
    // _count samples). A family appears with its first sample: throttling needs max_in_flight
    // requests at once, so a front-end's throttled count is taken as there when its requests
    // count is (one RequestMetrics makes both; crates/frontend's tests check the name).
    let exposed = families([&coordinator, &after.1, &after.2, &vetoed].into_iter().chain(&after.3));
    let names = dashboard_metric_names();
    assert!(names.len() >= 20, "the dashboard queries only {names:?}");
    for name in &names {
        let histogram = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|base| exposed.get(base).is_some_and(|k| k == "histogram"));
        let throttled = name
            .strip_suffix("_throttled_requests_total")
            .is_some_and(|p| exposed.contains_key(&format!("{p}_requests_total")));
        assert!(
            histogram || throttled || exposed.contains_key(name),
            "the dashboard queries {name}, which no process exposes"
        );
    }

    // hyok-xks's health: the threshold monitor and every node ACTIVE.
    let xks = &urls.xks;
    eventually(PATIENCE, || async move {
        let s = scrape(xks)?;
        anyhow::ensure!(s.get("hyok_xks_nodes_up") == 5.0 && s.get("hyok_xks_threshold") == 3.0, "{}", s.text);
        anyhow::ensure!(s.get("hyok_xks_health_serving") == 1.0, "not serving");
        anyhow::ensure!(s.sum("hyok_xks_node_health", &["state=\"ACTIVE\""]) == 5.0, "not every node ACTIVE");
        Ok(())
    })
    .await
    .unwrap();

    // `hyokctl bench` reads the same metrics: beside throughput, latency, CPU and memory, it
    // reports the nodes' audit appends during the run, from their histograms.
    let out = std::process::Command::new(hyok_e2e::hyokctl())
        .arg("--dev-dir")
        .arg(cluster.dir.path())
        .args(["bench", "--via", "xks", "--op", "encrypt", "--duration", "1", "--concurrency", "4"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "hyokctl bench: {report}{}", String::from_utf8_lossy(&out.stderr));
    let row: Vec<&str> = report.lines().find(|l| l.starts_with("encrypt")).unwrap().split_whitespace().collect();
    let requests: f64 = row[1].parse().unwrap();
    assert!(requests > 0.0 && row.last() == Some(&"0"), "no errors: {report}");
    assert!(report.contains("CPU per request (/proc, whole run): coordinator"), "{report}");
    let appends: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("Audit appends on the nodes (their metrics): "))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no audit appends line: {report}"));
    // Every encrypt is audited by the t = 3 nodes asked (t + 1 when one is late), one append
    // for one partial or several; hyok-xks's deep health check adds a few encrypts of its own.
    assert!(appends >= 1.0 && appends <= 4.0 * requests + 30.0, "{appends} appends for {requests} encrypts: {report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_threshold_monitor_follows_nodes_going_down() {
    let mut cluster = Cluster::start(5, 3).unwrap();
    let urls = Urls::of(&cluster);
    cluster.kill_node(5).unwrap();
    cluster.kill_node(4).unwrap();
    let coordinator = &urls.coordinator;
    eventually(PATIENCE, || async move {
        let s = scrape(coordinator)?;
        anyhow::ensure!(s.get("hyok_coordinator_nodes_up") == 3.0, "nodes up {}", s.get("hyok_coordinator_nodes_up"));
        anyhow::ensure!(s.get("hyok_coordinator_threshold_margin") == 0.0);
        anyhow::ensure!(s.get("hyok_coordinator_node_up{node=\"5\"}") == 0.0);
        Ok(())
    })
    .await
    .unwrap();
    // Warned once at one failing node ((n − t)/2 = 1), erred once at two (n − t).
    let log = std::fs::read_to_string(cluster.dir.path().join("logs").join("coordinator.log")).unwrap();
    let warned = log.lines().filter(|l| l.contains("WARN") && l.contains("threshold monitor")).count();
    let erred = log.lines().filter(|l| l.contains("ERROR") && l.contains("threshold monitor")).count();
    assert!(warned <= 1 && erred == 1, "warnings {warned}, errors {erred} in\n{log}");
}
