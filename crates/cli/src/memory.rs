//! Resident memory per process, read from `/proc/<pid>/status`: what `hyokctl bench` reports
//! at the end of a run for each kind of process of a dev cluster.

use crate::cpu::Watched;

/// `VmRSS` (resident now) and `VmHWM` (the peak of that) in KiB, from a `/proc/<pid>/status`
/// text.
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|line| line.strip_prefix(name)?.trim().strip_suffix("kB")?.trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Per role, in the order first seen: the largest resident size among its processes now, and
/// the largest peak, in KiB (a process that is gone is left out).
pub fn per_role(watched: &[Watched]) -> Vec<(&'static str, u64, u64)> {
    let mut out: Vec<(&'static str, u64, u64)> = Vec::new();
    for w in watched {
        let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid)).ok();
        let Some((rss, peak)) = status.as_deref().and_then(parse_status) else { continue };
        match out.iter_mut().find(|(role, _, _)| *role == w.role) {
            Some((_, largest, highest)) => {
                *largest = (*largest).max(rss);
                *highest = (*highest).max(peak);
            }
            None => out.push((w.role, rss, peak)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_texts_give_resident_and_peak() {
        let text = "Name:\thyokctl\nVmPeak:\t  900000 kB\nVmHWM:\t   98304 kB\nVmRSS:\t   94208 kB\nThreads:\t12\n";
        assert_eq!(parse_status(text), Some((94_208, 98_304)));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None, "a kernel thread has no VmRSS");
    }

    #[test]
    fn this_process_is_resident_and_roles_keep_their_largest() {
        let me = std::process::id();
        let watched = [
            Watched { role: "nodes", pid: me },
            Watched { role: "nodes", pid: me },
            Watched { role: "coordinator", pid: u32::MAX },
        ];
        let roles = per_role(&watched);
        assert_eq!(roles.len(), 1, "two processes of one role, and a pid that does not exist: {roles:?}");
        let (role, rss, peak) = roles[0];
        assert_eq!(role, "nodes");
        assert!(rss > 0 && peak >= rss, "{roles:?}");
    }
}
