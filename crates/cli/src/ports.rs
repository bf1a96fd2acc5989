//! Loopback ports for processes started later (dev cluster, tests).
//!
//! A port from `bind(127.0.0.1:0)` is an ephemeral one: released again, any process's next
//! outgoing connection may take it as its local port before the child binds it, and the child
//! then fails with "address in use". Ports are therefore drawn below the kernel's ephemeral range,
//! where no connection is ever auto-bound, and never twice in one process.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

use anyhow::{Result, bail};

/// Where the draw starts; ports below are left to well-known and registered services.
const LOWEST: u16 = 20_000;
/// Draws before giving up (the range holds thousands of ports; a few are taken).
const ATTEMPTS: usize = 512;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback TCP port that is free now and outside the kernel's ephemeral range.
///
/// # Errors
/// If no free port is found in the range.
pub fn free_port() -> Result<u16> {
    let below = ephemeral_low().unwrap_or(32_768);
    if below <= LOWEST + 1_000 {
        // An unusual kernel setting leaves no room below: fall back to the kernel's choice.
        return Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port());
    }
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..ATTEMPTS {
        let port = rand::random_range(LOWEST..below);
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {LOWEST}..{below}")
}

/// The low end of `net.ipv4.ip_local_port_range`, where the kernel says.
fn ephemeral_low() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() {
        let below = ephemeral_low().unwrap_or(32_768);
        let ports: Vec<u16> = (0..64).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            if below > LOWEST + 1_000 {
                assert!((LOWEST..below).contains(&port), "{port} is not below {below}");
            }
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }
}
