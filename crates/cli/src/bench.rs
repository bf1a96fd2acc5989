//! `hyokctl bench`: concurrent Encrypt/Decrypt load for a set duration, with a progress bar and
//! a final table of throughput, latency percentiles and errors. The load goes over gRPC to the
//! coordinator, or (`--via xks`, see `bench_xks`) as signed XKS requests to hyok-xks.

use crate::target::Target;
use anyhow::{Result, bail};
use hyok_evidence::caller::Signer;
use hyok_proto::VaultClient;
use hyok_proto::v1 as pb;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which operation to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Encrypt only.
    Encrypt,
    /// Decrypt one ciphertext over and over.
    Decrypt,
    /// Encrypt then decrypt what came back (two requests per round).
    Both,
}

/// Which front door the load goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchVia {
    /// The coordinator's KeyVault gRPC API.
    Grpc,
    /// hyok-xks: SigV4-signed XKS requests over HTTPS (the dev cluster's, from dev.json).
    Xks,
    /// hyok-dke: DKE decrypts (threshold RSA) with a bearer token over HTTPS (the dev
    /// cluster's, from dev.json); `--op` is ignored.
    Dke,
}

/// Load settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The key to use.
    pub key_id: String,
    /// How long to run.
    pub duration: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections to spread them over.
    pub connections: usize,
    /// Plaintext bytes per request.
    pub size: usize,
    /// What to run.
    pub op: BenchOp,
    /// Through which API.
    pub via: BenchVia,
    /// XKS only: ask for a ciphertext data integrity value (each encrypt then also decrypts).
    pub cdiv: bool,
}

/// Latencies of one operation kind, in microseconds.
#[derive(Debug, Default)]
pub struct Series {
    /// Every successful request's latency.
    pub latencies_us: Vec<u32>,
    /// Failed requests.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Series {
    /// Records a success that started at `started`.
    pub fn ok(&mut self, started: Instant) {
        self.latencies_us.push(started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }

    /// Records a failure.
    pub fn fail(&mut self, error: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    fn absorb(&mut self, other: Series) {
        self.latencies_us.extend(other.latencies_us);
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    fn percentile(sorted: &[u32], p: f64) -> u32 {
        if sorted.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

/// The result of a run.
#[derive(Debug)]
pub struct Report {
    /// Settings.
    pub options: BenchOptions,
    /// Wall time of the load phase.
    pub elapsed: Duration,
    /// Encrypt results.
    pub encrypt: Series,
    /// Decrypt results.
    pub decrypt: Series,
    /// CPU time per request of each kind of process (dev clusters only: their pids are in
    /// dev.json), over the whole run.
    pub cpu: Vec<(&'static str, Duration)>,
    /// Resident memory of each kind of process at the end of the run, in KiB: the largest
    /// process of the kind now, and its peak (dev clusters only).
    pub memory: Vec<(&'static str, u64, u64)>,
    /// The nodes' audit appends during the run, from their metrics (dev clusters only).
    pub appends: Option<crate::appends::Appends>,
}

fn ms(us: u32) -> String {
    format!("{:.2}", f64::from(us) / 1000.0)
}

impl Report {
    /// The final table.
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut out = format!(
            "hyokctl bench: {} key {}, {} B plaintext{}, {} concurrent over {} connection(s), {:.1} s\n",
            match o.via {
                BenchVia::Grpc => "gRPC",
                BenchVia::Xks => "XKS",
                BenchVia::Dke => "DKE",
            },
            o.key_id,
            o.size,
            if o.cdiv { " with CDIV" } else { "" },
            o.concurrency,
            o.connections,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "{:<8} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "op", "requests", "ops/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors"
        );
        for (name, series) in [("encrypt", &self.encrypt), ("decrypt", &self.decrypt)] {
            if series.latencies_us.is_empty() && series.errors == 0 {
                continue;
            }
            let mut sorted = series.latencies_us.clone();
            sorted.sort_unstable();
            let _ = writeln!(
                out,
                "{:<8} {:>9} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>7}",
                name,
                sorted.len(),
                sorted.len() as f64 / self.elapsed.as_secs_f64(),
                ms(Series::percentile(&sorted, 50.0)),
                ms(Series::percentile(&sorted, 90.0)),
                ms(Series::percentile(&sorted, 99.0)),
                ms(sorted.last().copied().unwrap_or(0)),
                series.errors
            );
            if let Some(e) = &series.first_error {
                let _ = writeln!(out, "         first {name} error: {e}");
            }
        }
        if !self.cpu.is_empty() {
            let parts: Vec<String> =
                self.cpu.iter().map(|(role, per)| format!("{role} {} µs", per.as_micros())).collect();
            let _ = writeln!(out, "CPU per request (/proc, whole run): {}", parts.join(", "));
        }
        if !self.memory.is_empty() {
            let mib = |kib: u64| kib.div_ceil(1024);
            let parts: Vec<String> = self
                .memory
                .iter()
                .map(|(role, rss, peak)| format!("{role} {} MiB (peak {})", mib(*rss), mib(*peak)))
                .collect();
            let _ = writeln!(out, "Resident memory at the end (/proc, largest of each kind): {}", parts.join(", "));
        }
        if let Some(appends) = &self.appends {
            let _ = writeln!(out, "{}", appends.render());
        }
        out
    }
}

fn record(series: &mut Series, started: Instant, result: Result<(), tonic::Status>) {
    match result {
        Ok(()) => series.ok(started),
        Err(status) => series.fail(|| format!("{}: {}", status.code(), status.message())),
    }
}

/// One Decrypt, timed and recorded; a wrong plaintext counts as an error.
async fn decrypt_checked(
    client: &mut VaultClient,
    signer: &Signer,
    key_id: &str,
    ciphertext: Vec<u8>,
    expected: &[u8],
    request_id: String,
    series: &mut Series,
) {
    let started = Instant::now();
    let evidence = signer.decrypt_blob(key_id, &ciphertext);
    let r = client
        .decrypt(pb::DecryptRequest { key_id: key_id.to_owned(), ciphertext, aad: Vec::new(), request_id, evidence })
        .await;
    let ok = r.and_then(|r| {
        if r.get_ref().plaintext == expected { Ok(()) } else { Err(tonic::Status::data_loss("wrong plaintext")) }
    });
    record(series, started, ok);
}

async fn worker(
    mut client: VaultClient,
    signer: Arc<Signer>,
    options: BenchOptions,
    blob: Vec<u8>,
    until: Instant,
    done: Arc<AtomicU64>,
) -> (Series, Series) {
    let plaintext = vec![0x5au8; options.size];
    let (mut enc, mut dec) = (Series::default(), Series::default());
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let request_id = format!("bench-{n}");
        if options.op != BenchOp::Decrypt {
            let started = Instant::now();
            let evidence = signer.encrypt(&options.key_id, &plaintext, &[]);
            let r = client
                .encrypt(pb::EncryptRequest {
                    key_id: options.key_id.clone(),
                    plaintext: plaintext.clone(),
                    aad: Vec::new(),
                    request_id: request_id.clone(),
                    evidence: Some(evidence),
                })
                .await;
            let ciphertext = r.as_ref().map(|r| r.get_ref().ciphertext.clone()).ok();
            record(&mut enc, started, r.map(|_| ()));
            done.fetch_add(1, Ordering::Relaxed);
            if options.op == BenchOp::Both
                && let Some(ciphertext) = ciphertext
            {
                decrypt_checked(&mut client, &signer, &options.key_id, ciphertext, &plaintext, request_id, &mut dec)
                    .await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            decrypt_checked(&mut client, &signer, &options.key_id, blob.clone(), &plaintext, request_id, &mut dec)
                .await;
            done.fetch_add(1, Ordering::Relaxed);
        }
    }
    (enc, dec)
}

fn progress(elapsed: Duration, total: Duration, done: u64) -> String {
    const WIDTH: usize = 30;
    let frac = (elapsed.as_secs_f64() / total.as_secs_f64()).min(1.0);
    let filled = (frac * WIDTH as f64) as usize;
    format!(
        "\r[{}{}] {:>5.1}/{:.0} s  {:>8} requests  {:>7.0} req/s",
        "#".repeat(filled),
        ".".repeat(WIDTH - filled),
        elapsed.as_secs_f64(),
        total.as_secs_f64(),
        done,
        done as f64 / elapsed.as_secs_f64().max(1e-3)
    )
}

/// Runs the load and returns the report.
pub async fn run(target: &Target, options: BenchOptions) -> Result<Report> {
    if options.concurrency == 0 || options.connections == 0 {
        bail!("--concurrency and --connections must be at least 1");
    }
    // A dev cluster's processes, whose CPU time is read before and after the run, and its
    // nodes' metrics, for what their audit appends took meanwhile.
    let dev = match &target.endpoint {
        None => crate::devfile::DevFile::load(&target.dev_dir).ok(),
        Some(_) => None,
    };
    let watched = dev.as_ref().map(crate::cpu::dev_processes).unwrap_or_default();
    let node_metrics: Vec<String> = dev.iter().flat_map(|d| d.nodes.iter().map(|n| n.metrics_url.clone())).collect();
    let appends_before = crate::appends::read(&node_metrics).await;
    let before = crate::cpu::Sample::take(&watched);
    let mut report = load(target, options).await?;
    let after = crate::cpu::Sample::take(&watched);
    let requests = (report.encrypt.latencies_us.len() + report.decrypt.latencies_us.len()).max(1) as u32;
    report.cpu = before.per_role(&after).into_iter().map(|(role, used)| (role, used / requests)).collect();
    report.memory = crate::memory::per_role(&watched);
    report.appends = crate::appends::during(&appends_before, &crate::appends::read(&node_metrics).await);
    Ok(report)
}

/// The load itself, by the path `options.via` names.
async fn load(target: &Target, options: BenchOptions) -> Result<Report> {
    match options.via {
        BenchVia::Xks => return crate::bench_xks::run(target, options).await,
        BenchVia::Dke => return crate::bench_dke::run(target, options).await,
        BenchVia::Grpc => {}
    }
    let mut clients = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        clients.push(target.connect().await?);
    }
    // Every request is signed, as an application's would be (the signing is part of the load).
    let signer = Arc::new(target.signer()?);
    // One ciphertext to decrypt over and over (also a warm-up of every path).
    let plaintext = vec![0x5au8; options.size];
    let evidence = signer.encrypt(&options.key_id, &plaintext, &[]);
    let blob = clients[0]
        .encrypt(pb::EncryptRequest {
            key_id: options.key_id.clone(),
            plaintext,
            aad: Vec::new(),
            request_id: "bench-setup".into(),
            evidence: Some(evidence),
        })
        .await?
        .into_inner()
        .ciphertext;
    let worker_options = options.clone();
    drive(options, |i, until, done| {
        worker(clients[i % clients.len()].clone(), signer.clone(), worker_options.clone(), blob.clone(), until, done)
    })
    .await
}

/// Runs `concurrency` workers made by `spawn(index, until, done)` until the duration is over,
/// showing progress, and gathers their (encrypt, decrypt) series into the report.
pub(crate) async fn drive<F, Fut>(options: BenchOptions, mut spawn: F) -> Result<Report>
where
    F: FnMut(usize, Instant, Arc<AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = (Series, Series)> + Send + 'static,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let until = start + options.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..options.concurrency {
        tasks.spawn(spawn(i, until, done.clone()));
    }
    let tty = std::io::stderr().is_terminal();
    let ticker = {
        let done = done.clone();
        let total = options.duration;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(if tty { 200 } else { 1000 })).await;
                let line = progress(start.elapsed(), total, done.load(Ordering::Relaxed));
                let mut err = std::io::stderr();
                if tty {
                    let _ = write!(err, "{line}");
                } else {
                    let _ = writeln!(err, "{}", line.trim_start_matches('\r'));
                }
                let _ = err.flush();
            }
        })
    };
    let (mut encrypt, mut decrypt) = (Series::default(), Series::default());
    while let Some(joined) = tasks.join_next().await {
        let (e, d) = joined?;
        encrypt.absorb(e);
        decrypt.absorb(d);
    }
    let elapsed = start.elapsed();
    ticker.abort();
    eprintln!("{}", progress(elapsed, options.duration, done.load(Ordering::Relaxed)));
    Ok(Report { options, elapsed, encrypt, decrypt, cpu: Vec::new(), memory: Vec::new(), appends: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).collect();
        assert_eq!(Series::percentile(&sorted, 50.0), 50);
        assert_eq!(Series::percentile(&sorted, 99.0), 99);
        assert_eq!(Series::percentile(&sorted, 100.0), 100);
        assert_eq!(Series::percentile(&[7], 99.0), 7);
        assert_eq!(Series::percentile(&[], 50.0), 0);
    }
}
