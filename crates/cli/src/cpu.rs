//! CPU time per process, read from `/proc/<pid>/stat` (user + system, every thread, exited ones
//! included): what `hyokctl bench` reports per request for each process of a dev cluster.

use crate::devfile::DevFile;
use std::time::Duration;

/// One process to watch: its role and pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// `coordinator`, `nodes`, `hyok-xks`, `hyok-dke`.
    pub role: &'static str,
    /// Its process id.
    pub pid: u32,
}

/// The processes of the dev cluster described by `dev`.
pub fn dev_processes(dev: &DevFile) -> Vec<Watched> {
    let mut out = vec![Watched { role: "coordinator", pid: dev.coordinator.pid }];
    out.extend(dev.nodes.iter().map(|n| Watched { role: "nodes", pid: n.pid }));
    if let Some(x) = &dev.xks {
        out.push(Watched { role: "hyok-xks", pid: x.pid });
    }
    if let Some(d) = &dev.dke {
        out.push(Watched { role: "hyok-dke", pid: d.pid });
    }
    out
}

/// Clock ticks per second of `/proc`'s times (`getconf CLK_TCK`; 100 on Linux).
fn ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

/// utime + stime in ticks from one `/proc/<pid>/stat` line (fields 14 and 15, counted after the
/// parenthesised command name, which may itself hold spaces).
pub fn parse_stat(line: &str) -> Option<u64> {
    let rest = line.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A snapshot of the watched processes' CPU time (a process that is gone counts as absent).
#[derive(Debug, Clone)]
pub struct Sample(Vec<(Watched, Option<u64>)>);

impl Sample {
    /// Reads every watched process now.
    pub fn take(watched: &[Watched]) -> Self {
        Sample(
            watched
                .iter()
                .map(|w| {
                    let ticks =
                        std::fs::read_to_string(format!("/proc/{}/stat", w.pid)).ok().and_then(|l| parse_stat(&l));
                    (w.clone(), ticks)
                })
                .collect(),
        )
    }

    /// CPU time per role between `self` and `later`, over processes seen both times.
    pub fn per_role(&self, later: &Sample) -> Vec<(&'static str, Duration)> {
        let tick = ticks_per_second();
        let mut out: Vec<(&'static str, u64)> = Vec::new();
        for ((w, before), (_, after)) in self.0.iter().zip(&later.0) {
            if let (Some(b), Some(a)) = (before, after) {
                let used = a.saturating_sub(*b);
                match out.iter_mut().find(|(r, _)| *r == w.role) {
                    Some((_, total)) => *total += used,
                    None => out.push((w.role, used)),
                }
            }
        }
        out.into_iter().map(|(r, t)| (r, Duration::from_micros(t * 1_000_000 / tick))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "4242 (hyokctl node) S 1 4242 4242 0 -1 4194560 1234 0 0 0 350 120 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(470));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_uses_some_cpu_and_roles_add_up() {
        let me = std::process::id();
        let watched = [Watched { role: "nodes", pid: me }, Watched { role: "nodes", pid: me }];
        let before = Sample::take(&watched);
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = Sample::take(&watched);
        let roles = before.per_role(&after);
        assert_eq!(roles.len(), 1, "one role, two processes summed");
        assert!(roles[0].1 > Duration::ZERO, "{roles:?}");
    }
}
