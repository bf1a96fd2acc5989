//! A delaying TCP relay: nodes "far away" on a kernel without netem.
//!
//! [`DelayRelay`] listens on loopback and forwards every connection to one target, holding each
//! byte back by a fixed delay in each direction. It delays without limiting throughput: a chunk
//! is stamped when it is read and written out at `read time + delay`, in order, while the next
//! chunks are already being read; the two directions are independent. The end of a stream (a
//! peer's close or reset) travels the same way, so a node that dies is noticed one delay later,
//! as it would be across a continent. A connection the target refuses is closed after the delay.
//!
//! Each direction of a connection is two OS threads (one reads and stamps, one sleeps until the
//! stamp and writes) on blocking sockets: the kernel's high-resolution sleep holds a chunk for
//! the delay within tens of microseconds, where tokio's millisecond timer wheel added about
//! 1.5 ms each way (an echo through a 50 ms relay came back after 103 ms at p50, not 100).
//!
//! [`far_coordinator`] puts a `hyokctl dev` cluster's coordinator behind one relay per node
//! (what the far chaos scenario and `hyok-delay-relay --dev-dir` do).

use anyhow::{Context, Result, bail};
use hyok_cli::devfile::DevFile;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction before reading waits (64 MiB at most: far above any rate
/// the delay would otherwise cap).
const IN_FLIGHT: usize = 1024;

/// A chunk written this long after it was due is reported on stderr: the relay, not the
/// parties, added that delay.
const LATE: Duration = Duration::from_millis(10);

/// The sockets of the connections through a relay (by connection), so that dropping it ends
/// them all.
type Open = Arc<Mutex<std::collections::HashMap<u64, [std::net::TcpStream; 2]>>>;

/// A running relay; it stops (with every connection through it) when dropped.
#[derive(Debug)]
pub struct DelayRelay {
    addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
    open: Open,
}

impl DelayRelay {
    /// Starts a relay on a free loopback port, forwarding to `to` with `delay` each way.
    pub async fn start(to: SocketAddr, delay: Duration) -> Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), to, delay).await
    }

    /// Starts a relay listening on `listen`, forwarding to `to` with `delay` each way.
    pub async fn start_on(listen: SocketAddr, to: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        let open: Open = Arc::default();
        let connections = Arc::clone(&open);
        let accept = tokio::spawn(async move {
            let mut ids = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                let Ok(client) = client.into_std() else { continue };
                let open = Arc::clone(&connections);
                ids += 1;
                let id = ids;
                std::thread::spawn(move || {
                    relay(client, to, delay, (id, &open));
                    open.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                });
            }
        });
        Ok(DelayRelay { addr, accept, open })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.accept.abort();
        for stream in self.open.lock().unwrap_or_else(PoisonError::into_inner).drain().flat_map(|(_, s)| s) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Relays one accepted connection until both directions end.
fn relay(client: std::net::TcpStream, to: SocketAddr, delay: Duration, (id, open): (u64, &Open)) {
    let accepted = std::time::Instant::now();
    let upstream = match std::net::TcpStream::connect(to) {
        Ok(upstream) => upstream,
        Err(_) => {
            std::thread::sleep(delay.saturating_sub(accepted.elapsed()));
            return;
        }
    };
    let ends = (|| {
        for stream in [&client, &upstream] {
            stream.set_nonblocking(false)?;
            stream.set_nodelay(true)?;
        }
        let both = [client.try_clone()?, upstream.try_clone()?];
        open.lock().unwrap_or_else(PoisonError::into_inner).insert(id, both);
        Ok::<_, std::io::Error>((client.try_clone()?, upstream.try_clone()?))
    })();
    let Ok((client_write, upstream_write)) = ends else { return };
    let back = std::thread::spawn(move || pipe(upstream, client_write, delay));
    pipe(client, upstream_write, delay);
    let _ = back.join();
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; then ends `to`'s
/// sending side.
fn pipe(mut from: std::net::TcpStream, mut to: std::net::TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::sync_channel::<(std::time::Instant, Option<Vec<u8>>)>(IN_FLIGHT);
    let write = std::thread::spawn(move || {
        while let Ok((due, chunk)) = rx.recv() {
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            match chunk {
                Some(bytes) if to.write_all(&bytes).is_ok() => {}
                _ => break,
            }
            let late = due.elapsed();
            if late > LATE {
                eprintln!("relay: a chunk went out {} ms after it was due", late.as_millis());
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = vec![0u8; CHUNK];
    loop {
        let chunk = match from.read(&mut buf) {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(buf[..n].to_vec()),
        };
        let end = chunk.is_none();
        if tx.send((std::time::Instant::now() + delay, chunk)).is_err() || end {
            break;
        }
    }
    drop(tx);
    let _ = write.join();
}

/// The address of an `https://host:port` endpoint on loopback.
fn endpoint_addr(endpoint: &str) -> Result<SocketAddr> {
    let rest = endpoint.strip_prefix("https://").with_context(|| format!("{endpoint} is not https://"))?;
    rest.trim_end_matches('/').parse().with_context(|| format!("{endpoint} is not https://IP:PORT"))
}

/// A dev cluster's coordinator, restarted behind delaying relays: the relays and the new
/// coordinator process live as long as this value.
#[derive(Debug)]
pub struct FarCoordinator {
    /// One relay per node, in dev.json's order.
    pub relays: Vec<DelayRelay>,
    /// The coordinator started with the relays' endpoints.
    pub coordinator: tokio::process::Child,
    /// Its process id (also written into dev.json).
    pub pid: u32,
}

impl FarCoordinator {
    /// Stops the coordinator (SIGTERM, then SIGKILL after 5 s) and the relays.
    pub async fn stop(mut self) {
        if let Some(pid) = self.coordinator.id() {
            hyok_cli::dev::terminate(pid);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.coordinator.wait()).await.is_err() {
            let _ = self.coordinator.kill().await;
        }
    }
}

/// Puts the coordinator of the `hyokctl dev` cluster in `dir` behind one [`DelayRelay`] per
/// node (`delay` each way): writes `DIR/coordinator-far.toml` (the dev configuration with every
/// node endpoint replaced by its relay's), stops the running coordinator, starts
/// `hyokctl coordinator` with the new file on the same listen address (its log appended to
/// `DIR/logs/coordinator.log`), and writes its pid into dev.json, so that `hyokctl bench` and
/// the test harness find it. Front-ends reconnect on their own. Only the coordinator's traffic
/// to the nodes is delayed.
pub async fn far_coordinator(dir: &Path, delay: Duration) -> Result<FarCoordinator> {
    let mut dev = DevFile::load(dir)?;
    let mut config = std::fs::read_to_string(dir.join("coordinator.toml")).context("reading coordinator.toml")?;
    let mut relays = Vec::new();
    for node in &dev.nodes {
        let relay = DelayRelay::start(endpoint_addr(&node.endpoint)?, delay).await?;
        let quoted = format!("\"{}\"", node.endpoint);
        if !config.contains(&quoted) {
            bail!("coordinator.toml does not name node {}'s endpoint {}", node.id, node.endpoint);
        }
        config = config.replace(&quoted, &format!("\"https://{}\"", relay.addr()));
        relays.push(relay);
    }
    let far = dir.join("coordinator-far.toml");
    std::fs::write(&far, config)?;
    let exe = dev.nodes.first().and_then(|n| n.argv.first()).context("dev.json records no node argv")?.clone();

    // The old coordinator goes first: the new one listens on its address.
    let old = dev.coordinator.pid;
    hyok_cli::dev::terminate(old);
    let started = Instant::now();
    while std::process::Command::new("kill")
        .args(["-0", &old.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        if started.elapsed() > Duration::from_secs(10) {
            bail!("the coordinator (pid {old}) did not stop");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("logs").join("coordinator.log"))?;
    let mut child = tokio::process::Command::new(&exe)
        .arg("coordinator")
        .arg("--config")
        .arg(&far)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {exe} coordinator"))?;
    let pid = child.id().context("the coordinator has no pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let ready = async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("listening on") {
                return Ok::<_, std::io::Error>(true);
            }
        }
        Ok(false)
    };
    match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(true)) => {}
        _ => bail!("the far coordinator did not become ready; see {}", dir.join("logs/coordinator.log").display()),
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    dev.coordinator.pid = pid;
    dev.save(dir)?;
    Ok(FarCoordinator { relays, coordinator: child, pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = stream.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn bytes_come_back_whole_and_in_order_no_earlier_than_twice_the_delay() {
        let delay = Duration::from_millis(40);
        let relay = DelayRelay::start(echo().await, delay).await.unwrap();
        let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
        // More than one chunk, and more than the socket buffers, so reading and writing overlap.
        let sent: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = stream.split();
        let started = Instant::now();
        let write = async {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let read = async {
            let mut first = None;
            let mut buf = vec![0u8; 8192];
            loop {
                let n = r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(|| started.elapsed());
                back.extend_from_slice(&buf[..n]);
            }
            first
        };
        let ((), first) = tokio::join!(write, read);
        assert_eq!(back.len(), sent.len());
        assert!(back == sent, "the bytes came back changed or out of order");
        let first = first.unwrap();
        assert!(first >= 2 * delay, "the first byte came back after {first:?}, before two delays");
    }

    #[tokio::test]
    async fn each_direction_is_delayed_on_its_own() {
        // A server that speaks first: its greeting arrives one delay after the connection.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"hello").await.unwrap();
            let mut buf = [0u8; 3];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"bye");
        });
        let delay = Duration::from_millis(60);
        let relay = DelayRelay::start(server, delay).await.unwrap();
        let started = Instant::now();
        let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        assert!(started.elapsed() >= delay, "the greeting beat the delay");
        stream.write_all(b"bye").await.unwrap();
    }

    #[tokio::test]
    async fn dropping_the_relay_ends_the_connections_through_it() {
        let relay = DelayRelay::start(echo().await, Duration::from_millis(5)).await.unwrap();
        let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
        stream.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(relay);
        let mut rest = [0u8; 1];
        let read = stream.read(&mut rest).await;
        assert!(matches!(read, Ok(0) | Err(_)), "the connection outlived its relay: {read:?}");
    }

    #[tokio::test]
    async fn a_refused_target_closes_the_connection_after_the_delay() {
        // A port with nothing behind it.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let delay = Duration::from_millis(30);
        let relay = DelayRelay::start(free, delay).await.unwrap();
        let started = Instant::now();
        let mut stream = TcpStream::connect(relay.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(stream.read(&mut buf).await.unwrap_or(0), 0, "nothing comes from a refused target");
        assert!(started.elapsed() >= delay);
    }

    #[test]
    fn endpoints_parse_to_loopback_addresses() {
        assert_eq!(endpoint_addr("https://127.0.0.1:7101").unwrap(), SocketAddr::from(([127, 0, 0, 1], 7101)));
        assert!(endpoint_addr("http://127.0.0.1:7101").is_err());
        assert!(endpoint_addr("https://localhost:7101").is_err());
    }
}
