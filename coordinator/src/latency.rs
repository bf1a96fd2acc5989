//! What the coordinator has seen of one node's answer time, for deciding when to hedge.
//!
//! A smoothed mean and mean deviation of the time from asking a node for a partial to its
//! answer (queueing in the batcher, the network both ways, the node's work), updated as TCP
//! updates its round-trip estimate (RFC 6298: `srtt ← 7/8·srtt + 1/8·r`,
//! `rttvar ← 3/4·rttvar + 1/4·|srtt − r|`). A node is "late" once it has taken longer than
//! `srtt + 4·rttvar`: near or far, idle or loaded, the hedge fires only for answers that are
//! slow *for that node now*, never for the distance or the load every answer shares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// No estimate yet.
const NONE: u64 = u64::MAX;

/// A node's answer time estimate (microseconds, lock-free; a lost update under a race only
/// drops one sample).
#[derive(Debug)]
pub struct Latency {
    srtt_us: AtomicU64,
    rttvar_us: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { srtt_us: AtomicU64::new(NONE), rttvar_us: AtomicU64::new(0) }
    }
}

/// The smallest hedge delay: below it, scheduling noise alone would hedge.
const FLOOR: Duration = Duration::from_millis(2);

impl Latency {
    /// Takes one observed answer time into the estimate.
    pub fn observe(&self, took: Duration) {
        let r = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 2).min(u64::MAX / 2);
        let srtt = self.srtt_us.load(Ordering::Relaxed);
        if srtt == NONE {
            self.srtt_us.store(r, Ordering::Relaxed);
            self.rttvar_us.store(r / 2, Ordering::Relaxed);
            return;
        }
        let rttvar = self.rttvar_us.load(Ordering::Relaxed);
        self.rttvar_us.store((3 * rttvar + srtt.abs_diff(r)) / 4, Ordering::Relaxed);
        self.srtt_us.store((7 * srtt + r) / 8, Ordering::Relaxed);
    }

    /// The smoothed answer time, if any answer was seen.
    pub fn expected(&self) -> Option<Duration> {
        match self.srtt_us.load(Ordering::Relaxed) {
            NONE => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How long an answer may take before it counts as late: `srtt + 4·rttvar` (at least
    /// 2 ms), or `unknown` before any answer was seen.
    pub fn late_after(&self, unknown: Duration) -> Duration {
        match self.srtt_us.load(Ordering::Relaxed) {
            NONE => unknown,
            srtt => Duration::from_micros(srtt.saturating_add(4 * self.rttvar_us.load(Ordering::Relaxed))).max(FLOOR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn before_any_answer_the_configured_delay_is_used() {
        let l = Latency::default();
        assert_eq!(l.expected(), None);
        assert_eq!(l.late_after(ms(50)), ms(50));
    }

    #[test]
    fn a_far_steady_node_is_late_only_past_its_own_round_trip() {
        let l = Latency::default();
        for i in 0..100 {
            l.observe(ms(100 + i % 5));
        }
        let expected = l.expected().unwrap();
        assert!(expected >= ms(100) && expected <= ms(105), "{expected:?}");
        let late = l.late_after(ms(50));
        // Well past the fixed 50 ms that would hedge every request at this distance, and
        // not far beyond the node's own spread.
        assert!(late > ms(104) && late < ms(115), "{late:?}");
    }

    #[test]
    fn a_jittery_node_gets_more_room_and_the_estimate_follows_a_change() {
        let steady = Latency::default();
        let jittery = Latency::default();
        for i in 0..200 {
            steady.observe(ms(10));
            jittery.observe(ms(if i % 2 == 0 { 5 } else { 15 }));
        }
        assert!(jittery.late_after(ms(1)) > steady.late_after(ms(1)));
        // The node moves away: within a few dozen answers the estimate is there too.
        for _ in 0..40 {
            steady.observe(ms(60));
        }
        assert!(steady.expected().unwrap() > ms(55));
        assert!(steady.late_after(ms(1)) >= FLOOR);
    }
}
