//! `hyokctl status`: every node's health and every key's state on each node; with `--watch`,
//! redrawn every few seconds with the request rate and latency read from the coordinator's
//! Prometheus metrics (two successive scrapes of its per-RPC counters and histogram buckets).

use crate::target::Target;
use anyhow::{Context, Result, bail};
use hyok_proto::v1 as pb;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The status as text.
pub fn render(status: &pb::ClusterStatusResponse) -> String {
    let mut out = String::new();
    let reachable = status.nodes.iter().filter(|n| n.reachable).count();
    let _ = writeln!(
        out,
        "cluster: {reachable} of {} nodes reachable, threshold {} ({}); coordinator {}",
        status.nodes.len(),
        status.threshold,
        if reachable >= status.threshold as usize { "serving" } else { "UNAVAILABLE" },
        status.coordinator_version
    );
    let _ = writeln!(
        out,
        "{:<6} {:<28} {:<11} {:>10} {:>5} {:>8} {:<9} ERROR",
        "NODE", "ENDPOINT", "STATE", "LATENCY", "KEYS", "INVALID", "VERSION"
    );
    for n in &status.nodes {
        let _ = writeln!(
            out,
            "{:<6} {:<28} {:<11} {:>8}µs {:>5} {:>8} {:<9} {}",
            n.node_id,
            n.endpoint,
            if n.reachable { "up" } else { "DOWN" },
            n.latency_us,
            n.key_count,
            n.invalid_partials,
            n.software_version,
            n.error
        );
    }
    if !status.keys.is_empty() {
        let _ = writeln!(
            out,
            "\n{:<32} per node (S = share, E = enabled, V = vetoed by the node's operator, . = missing, \
             ? = unreachable, INVALID = contradicts t others)",
            "KEY"
        );
        for k in &status.keys {
            let cells: Vec<String> = k
                .nodes
                .iter()
                .map(|n| {
                    let cell = if !n.reachable {
                        "?".to_owned()
                    } else if n.invalid {
                        "INVALID".to_owned()
                    } else {
                        // A veto wins over whatever the admin's flag says.
                        let state = if n.vetoed {
                            "V"
                        } else if n.enabled {
                            "E"
                        } else {
                            "."
                        };
                        format!("{}{state}", if n.has_share { "S" } else { "." })
                    };
                    format!("{}:{cell}", n.node_id)
                })
                .collect();
            let _ = writeln!(out, "{:<32} {}", k.key_id, cells.join("  "));
        }
    }
    out
}

/// `status`.
pub async fn run(target: &Target) -> Result<()> {
    let status = target.connect().await?.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner();
    print!("{}", render(&status));
    Ok(())
}

// ---- the live view ---------------------------------------------------------------------

/// The coordinator's per-RPC metrics (`hyok_proto::metrics::GrpcLayer`).
const REQUESTS: &str = "hyok_grpc_requests_total";
const BUCKETS: &str = "hyok_grpc_request_duration_seconds_bucket";
/// The service whose calls count as requests.
const SERVICE: &str = "hyok.v1.KeyVault";
/// Not counted: what status views (this one included) call.
const NOT_COUNTED: &[&str] = &["ClusterStatus"];

/// One sample of a Prometheus text exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (`…_total`, `…_bucket`).
    pub name: String,
    /// Its labels, as exposed.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// One scrape of a metrics endpoint, in the Prometheus text format.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

/// `{a="x",b="y\"z"}` → the labels; `None` if malformed.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return Some(labels);
        }
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(name.trim().to_owned(), value);
        rest = &after[end + 1..];
    }
}

impl Scrape {
    /// Parses the text format: `# ` comments skipped, `name{labels} value [timestamp]` kept;
    /// a line that does not parse is skipped.
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.find('{') {
                Some(open) => {
                    let Some(close) = line.rfind('}') else { continue };
                    let Some(labels) = line.get(open + 1..close).and_then(parse_labels) else { continue };
                    ((&line[..open], labels), &line[close + 1..])
                }
                None => match line.split_once(' ') {
                    Some((name, value)) => ((name, BTreeMap::new()), value),
                    None => continue,
                },
            };
            let Some(Ok(value)) = value.split_whitespace().next().map(str::parse::<f64>) else { continue };
            samples.push(Sample { name: series.0.to_owned(), labels: series.1, value });
        }
        Scrape { samples }
    }

    /// The samples of `name` whose `service` is [`SERVICE`] and whose method counts.
    fn requests<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && s.labels.get("service").is_some_and(|v| v == SERVICE)
                && !s.labels.get("method").is_some_and(|m| NOT_COUNTED.contains(&m.as_str()))
        })
    }
}

/// How much a counter rose; a counter that went down was reset (the process restarted), so it
/// rose by what it now holds.
fn increase(before: Option<f64>, after: f64) -> f64 {
    match before {
        Some(b) if b <= after => after - b,
        _ => after,
    }
}

/// The increase of every series of `name` between the scrapes, by labels.
fn increases(before: &Scrape, after: &Scrape, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let old: BTreeMap<&BTreeMap<String, String>, f64> = before.requests(name).map(|s| (&s.labels, s.value)).collect();
    after.requests(name).map(|s| (s.labels.clone(), increase(old.get(&s.labels).copied(), s.value))).collect()
}

/// The `q`-quantile of cumulative histogram buckets `(upper bound, count)`, as Prometheus's
/// `histogram_quantile` estimates it: linear within the bucket the rank falls in, the highest
/// finite bound if it falls in `+Inf`. `None` without observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut buckets = buckets.to_vec();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(upper, count) in &buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            if count <= below {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below) / (count - below));
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// The coordinator's traffic between two scrapes.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    /// Seconds between the scrapes.
    pub seconds: f64,
    /// Requests per second (every `KeyVault` call but [`NOT_COUNTED`] ones).
    pub rate: f64,
    /// Of which answered with a status other than OK, per second.
    pub errors: f64,
    /// Median latency in seconds, if there were requests.
    pub p50: Option<f64>,
    /// 99th percentile latency in seconds, if there were requests.
    pub p99: Option<f64>,
    /// Requests per second by method, busiest first.
    pub by_method: Vec<(String, f64)>,
}

/// Rate and latency from two scrapes of the coordinator `seconds` apart.
pub fn traffic(before: &Scrape, after: &Scrape, seconds: f64) -> Traffic {
    let seconds = seconds.max(f64::EPSILON);
    let (mut total, mut errors) = (0.0, 0.0);
    let mut by_method: BTreeMap<String, f64> = BTreeMap::new();
    for (labels, rose) in increases(before, after, REQUESTS) {
        total += rose;
        if labels.get("code").is_some_and(|c| c != "OK") {
            errors += rose;
        }
        *by_method.entry(labels.get("method").cloned().unwrap_or_default()).or_default() += rose;
    }
    // Every method's buckets added up, bound by bound.
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (labels, rose) in increases(before, after, BUCKETS) {
        let Some(Ok(le)) = labels.get("le").map(|l| l.parse::<f64>()) else { continue };
        buckets.entry(le.to_bits()).or_insert((le, 0.0)).1 += rose;
    }
    let buckets: Vec<(f64, f64)> = buckets.into_values().collect();
    let mut by_method: Vec<(String, f64)> =
        by_method.into_iter().filter(|(_, n)| *n > 0.0).map(|(m, n)| (m, n / seconds)).collect();
    by_method.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Traffic {
        seconds,
        rate: total / seconds,
        errors: errors / seconds,
        p50: quantile(0.5, &buckets),
        p99: quantile(0.99, &buckets),
        by_method,
    }
}

fn millis(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{:.1} ms", s * 1000.0))
}

impl Traffic {
    /// The traffic as two lines of text.
    pub fn render(&self) -> String {
        let mut out = format!(
            "requests (coordinator, last {:.1} s): {:.1}/s, errors {:.1}/s, p50 {}, p99 {}\n",
            self.seconds,
            self.rate,
            self.errors,
            millis(self.p50),
            millis(self.p99)
        );
        if !self.by_method.is_empty() {
            let methods: Vec<String> = self.by_method.iter().map(|(m, r)| format!("{m} {r:.1}/s")).collect();
            let _ = writeln!(out, "  {}", methods.join("  "));
        }
        out
    }
}

/// GETs `url` (`http://HOST:PORT/path`, plain HTTP as every hyok metrics listener serves).
pub(crate) async fn fetch(url: &str) -> Result<String> {
    use http_body_util::{BodyExt, Empty};
    let uri: http::Uri = url.parse().with_context(|| format!("metrics URL {url:?}"))?;
    if uri.scheme_str() != Some("http") {
        bail!("metrics URL {url:?}: only http:// is served");
    }
    let authority = uri.authority().context("metrics URL without a host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((authority.host(), port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    let driver = tokio::spawn(connection);
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority.as_str())
        .body(Empty::<bytes::Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    if !status.is_success() {
        bail!("{url}: HTTP {status}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `HH:MM:SS` UTC.
fn clock(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Where the live view reads request rates: `--metrics-url`, or the dev cluster's
/// `coordinator.metrics_url`.
pub fn metrics_url(target: &Target, explicit: Option<String>) -> Option<String> {
    explicit.or_else(|| {
        if target.endpoint.is_some() {
            return None;
        }
        let dev = crate::devfile::DevFile::load(&target.dev_dir).ok()?;
        Some(dev.coordinator.metrics_url).filter(|u| !u.is_empty())
    })
}

/// `status --watch`: clears the terminal and redraws every `every` until Ctrl-C. A coordinator
/// or metrics endpoint that does not answer is shown as such, and asked again next time.
pub async fn watch(target: &Target, every: Duration, metrics_url: Option<String>) -> Result<()> {
    let mut client = None;
    let mut previous: Option<(Instant, Scrape)> = None;
    let stop = hyok_proto::shutdown_signal();
    tokio::pin!(stop);
    loop {
        let mut frame = format!(
            "hyokctl status --watch: every {:.1} s, {} (Ctrl-C stops)\n\n",
            every.as_secs_f64(),
            clock(SystemTime::now())
        );
        if client.is_none() {
            client = target.connect().await.map_err(|e| frame.push_str(&format!("coordinator: {e:#}\n"))).ok();
        }
        if let Some(c) = client.as_mut() {
            match c.cluster_status(pb::ClusterStatusRequest {}).await {
                Ok(status) => frame.push_str(&render(&status.into_inner())),
                Err(e) => {
                    frame.push_str(&format!("coordinator: {}: {}\n", e.code(), e.message()));
                    client = None;
                }
            }
        }
        frame.push('\n');
        match &metrics_url {
            None => frame.push_str("requests: no metrics URL (--metrics-url, or a dev cluster's dev.json)\n"),
            Some(url) => match fetch(url).await {
                Ok(text) => {
                    let now = (Instant::now(), Scrape::parse(&text));
                    match &previous {
                        Some((at, before)) => {
                            frame.push_str(&traffic(before, &now.1, now.0.duration_since(*at).as_secs_f64()).render())
                        }
                        None => frame.push_str("requests: measuring (the rate needs two scrapes)\n"),
                    }
                    previous = Some(now);
                }
                Err(e) => {
                    frame.push_str(&format!("requests: {url}: {e:#}\n"));
                    previous = None;
                }
            },
        }
        print!("\x1b[2J\x1b[H{frame}");
        let _ = std::io::stdout().flush();
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coordinator's exposition after `encrypts` OK Encrypts, `failed` NotFound Decrypts and
    /// `status` ClusterStatus calls, with Encrypt latencies in the given buckets.
    fn exposition(encrypts: u64, failed: u64, status: u64, buckets: &[(&str, u64)]) -> String {
        let mut text = String::from(
            "# HELP hyok_grpc_requests gRPC requests handled, by service, method and status code.\n\
             # TYPE hyok_grpc_requests_total counter\n",
        );
        let _ = writeln!(
            text,
            "hyok_grpc_requests_total{{service=\"hyok.v1.KeyVault\",method=\"Encrypt\",code=\"OK\"}} {encrypts}"
        );
        let _ = writeln!(
            text,
            "hyok_grpc_requests_total{{service=\"hyok.v1.KeyVault\",method=\"Decrypt\",code=\"NotFound\"}} {failed}"
        );
        let _ = writeln!(
            text,
            "hyok_grpc_requests_total{{service=\"hyok.v1.KeyVault\",method=\"ClusterStatus\",code=\"OK\"}} {status}"
        );
        let _ = writeln!(text, "hyok_grpc_requests_total{{service=\"other\",method=\"other\",code=\"OK\"}} 999");
        text.push_str("# TYPE hyok_grpc_request_duration_seconds histogram\n");
        for (le, count) in buckets {
            let _ = writeln!(
                text,
                "hyok_grpc_request_duration_seconds_bucket{{service=\"hyok.v1.KeyVault\",method=\"Encrypt\",le=\"{le}\"}} {count}"
            );
        }
        // The status calls are slow, and not counted.
        let _ = writeln!(
            text,
            "hyok_grpc_request_duration_seconds_bucket{{service=\"hyok.v1.KeyVault\",method=\"ClusterStatus\",le=\"+Inf\"}} {status}"
        );
        text.push_str("process_cpu_seconds_total 1.5\n");
        text
    }

    #[test]
    fn the_text_format_parses_with_escaped_label_values() {
        let scrape = Scrape::parse(
            "# TYPE x counter\nx_total{a=\"q\\\"uote\",b=\"back\\\\slash\"} 3\nup 1 1700000000\nbroken{ 2\n",
        );
        assert_eq!(scrape.samples.len(), 2, "{scrape:?}");
        assert_eq!(scrape.samples[0].labels["a"], "q\"uote");
        assert_eq!(scrape.samples[0].labels["b"], "back\\slash");
        assert_eq!(scrape.samples[0].value, 3.0);
        assert_eq!((scrape.samples[1].name.as_str(), scrape.samples[1].value), ("up", 1.0));
    }

    #[test]
    fn rate_and_p99_come_from_the_difference_of_two_scrapes() {
        // Before: 100 encrypts, all under 1 ms. Then 10 s of 200 encrypts: 180 under 4 ms,
        // 19 more under 8 ms, 1 more under 16 ms; 10 failed decrypts (no latency buckets here);
        // 5 status calls, not counted.
        let before = Scrape::parse(&exposition(
            100,
            0,
            3,
            &[("0.001", 100), ("0.002", 100), ("0.004", 100), ("0.008", 100), ("0.016", 100), ("+Inf", 100)],
        ));
        let after = Scrape::parse(&exposition(
            300,
            10,
            8,
            &[("0.001", 100), ("0.002", 100), ("0.004", 280), ("0.008", 299), ("0.016", 300), ("+Inf", 300)],
        ));
        let t = traffic(&before, &after, 10.0);
        assert!((t.rate - 21.0).abs() < 1e-9, "{t:?}");
        assert!((t.errors - 1.0).abs() < 1e-9, "{t:?}");
        assert_eq!(t.by_method, vec![("Encrypt".to_owned(), 20.0), ("Decrypt".to_owned(), 1.0)]);
        // p99: rank 198 of 200 falls in (4 ms, 8 ms], 18 of its 19: 4 + 4 · 18/19 ms.
        let p99 = t.p99.unwrap();
        assert!((p99 - (0.004 + 0.004 * 18.0 / 19.0)).abs() < 1e-12, "{p99}");
        // p50: rank 100 falls in (2 ms, 4 ms], 100 of its 180.
        let p50 = t.p50.unwrap();
        assert!((p50 - (0.002 + 0.002 * 100.0 / 180.0)).abs() < 1e-12, "{p50}");
        let text = t.render();
        assert!(text.contains("21.0/s") && text.contains("p99 7.8 ms") && text.contains("Encrypt 20.0/s"), "{text}");
    }

    #[test]
    fn no_traffic_has_no_latency_and_a_restart_counts_from_zero() {
        let same = Scrape::parse(&exposition(5, 0, 0, &[("0.001", 5), ("+Inf", 5)]));
        let idle = traffic(&same, &same, 2.0);
        assert_eq!((idle.rate, idle.p99, idle.by_method.len()), (0.0, None, 0));
        assert!(idle.render().contains("p99 -"));
        // The coordinator restarted between the scrapes: its counters began again at zero.
        let restarted = Scrape::parse(&exposition(4, 0, 0, &[("0.001", 4), ("+Inf", 4)]));
        let t = traffic(&same, &restarted, 2.0);
        assert_eq!(t.rate, 2.0);
        assert!(t.p99.unwrap() <= 0.001);
    }

    #[test]
    fn a_quantile_in_the_inf_bucket_is_the_highest_finite_bound() {
        assert_eq!(quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]), Some(0.1));
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn the_clock_is_utc_time_of_day() {
        assert_eq!(clock(UNIX_EPOCH + Duration::from_secs(86_400 * 3 + 3600 * 13 + 60 * 4 + 5)), "13:04:05 UTC");
    }

    #[test]
    fn a_vetoed_node_is_shown_as_v_whatever_its_admin_flag() {
        let cell = |node_id, enabled, vetoed| pb::KeyNodeState {
            node_id,
            reachable: true,
            has_share: true,
            enabled,
            invalid: false,
            vetoed,
        };
        let status = pb::ClusterStatusResponse {
            threshold: 2,
            nodes: Vec::new(),
            keys: vec![pb::KeyStatus {
                key_id: "k".into(),
                nodes: vec![cell(1, false, true), cell(2, true, false), cell(3, false, false)],
            }],
            coordinator_version: "0".into(),
        };
        let text = render(&status);
        let row = text.lines().find(|l| l.starts_with("k ")).unwrap();
        assert!(row.contains("1:SV") && row.contains("2:SE") && row.contains("3:S."), "{row}");
    }
}
