//! The nodes' audit appends during a `hyokctl bench` run, from their metrics
//! (`hyok_node_audit_append_seconds`). Every partial waits for one to be durable, so a disk
//! that stalls shows here first: far from the nodes, a stall of about 90 ms is enough to push
//! the requests that wait on it past the front-end's budget.

use crate::status::{Scrape, fetch};

/// The histogram the nodes export.
const METRIC: &str = "hyok_node_audit_append_seconds";

/// An append slower than the node's own threshold for logging one counts as slow; the first
/// bucket bound at or above it splits them off.
fn slow_seconds() -> f64 {
    hyok_node::SLOW_AUDIT_APPEND.as_secs_f64()
}

/// Appends counted by one node's histogram, or their increase over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Appends {
    /// How many.
    pub count: f64,
    /// Their total time, in seconds.
    pub seconds: f64,
    /// How many took longer than [`Appends::slow_bound`].
    pub slow: f64,
    /// The bucket bound that splits off the slow ones (the first at or above the nodes'
    /// threshold for logging a slow append).
    pub slow_bound: f64,
}

impl Appends {
    /// One node's histogram in `scrape`; `None` if it has none.
    pub fn of(scrape: &Scrape) -> Option<Appends> {
        let value = |name: String| scrape.samples.iter().find(|s| s.name == name).map(|s| s.value);
        let count = value(format!("{METRIC}_count"))?;
        let seconds = value(format!("{METRIC}_sum"))?;
        let bucket = format!("{METRIC}_bucket");
        let (slow_bound, within) = scrape
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| Some((s.labels.get("le")?.parse::<f64>().ok()?, s.value)))
            .filter(|(le, _)| *le >= slow_seconds())
            .min_by(|a, b| a.0.total_cmp(&b.0))?;
        Some(Appends { count, seconds, slow: count - within, slow_bound })
    }

    /// What happened between `self` and `later` (a node that restarted counts from zero).
    pub fn until(&self, later: &Appends) -> Appends {
        if later.count < self.count {
            return *later;
        }
        Appends {
            count: later.count - self.count,
            seconds: later.seconds - self.seconds,
            slow: later.slow - self.slow,
            slow_bound: later.slow_bound,
        }
    }

    /// The sum over nodes.
    pub fn total(nodes: &[Appends]) -> Option<Appends> {
        nodes.iter().copied().reduce(|a, b| Appends {
            count: a.count + b.count,
            seconds: a.seconds + b.seconds,
            slow: a.slow + b.slow,
            slow_bound: a.slow_bound.max(b.slow_bound),
        })
    }

    /// `18,430 audit appends on the nodes, 0.21 ms on average; 12 took over 64 ms (…)`.
    pub fn render(&self) -> String {
        let mean_ms = if self.count > 0.0 { self.seconds / self.count * 1000.0 } else { 0.0 };
        let mut line =
            format!("Audit appends on the nodes (their metrics): {:.0}, {mean_ms:.2} ms on average", self.count);
        if self.slow > 0.0 {
            line.push_str(&format!(
                "; {:.0} took over {:.0} ms (the disk stalled, and every partial waiting on them with it)",
                self.slow,
                self.slow_bound * 1000.0
            ));
        } else {
            line.push_str(&format!("; none over {:.0} ms", self.slow_bound * 1000.0));
        }
        line
    }
}

/// Every node's histogram now, in the order of `urls` (`None` for a node that did not answer
/// or has none).
pub async fn read(urls: &[String]) -> Vec<Option<Appends>> {
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        out.push(fetch(url).await.ok().and_then(|text| Appends::of(&Scrape::parse(&text))));
    }
    out
}

/// The run's appends over the nodes read both `before` and `after`.
pub fn during(before: &[Option<Appends>], after: &[Option<Appends>]) -> Option<Appends> {
    let nodes: Vec<Appends> =
        before.iter().zip(after).filter_map(|(b, a)| Some(b.as_ref()?.until(a.as_ref()?))).collect();
    Appends::total(&nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exposition(buckets: &[(&str, u64)], count: u64, sum: f64) -> Scrape {
        let mut text = String::from("# TYPE hyok_node_audit_append_seconds histogram\n");
        for (le, n) in buckets {
            text.push_str(&format!("hyok_node_audit_append_seconds_bucket{{le=\"{le}\"}} {n}\n"));
        }
        text.push_str(&format!(
            "hyok_node_audit_append_seconds_sum {sum}\nhyok_node_audit_append_seconds_count {count}\n"
        ));
        Scrape::parse(&text)
    }

    #[test]
    fn slow_appends_are_those_past_the_first_bound_at_or_above_50_ms() {
        let before = exposition(&[("0.032", 90), ("0.064", 98), ("0.128", 100), ("+Inf", 100)], 100, 0.5);
        let after = exposition(&[("0.032", 1_080), ("0.064", 1_090), ("0.128", 1_100), ("+Inf", 1_103)], 1_103, 2.5);
        let (b, a) = (Appends::of(&before).unwrap(), Appends::of(&after).unwrap());
        assert_eq!((b.slow, b.slow_bound), (2.0, 0.064));
        let run = b.until(&a);
        assert_eq!(run.count, 1_003.0);
        assert_eq!(run.slow, 11.0, "13 over 64 ms after, 2 before");
        assert!((run.seconds - 2.0).abs() < 1e-9);
        assert!(run.render().contains("11 took over 64 ms"), "{}", run.render());
    }

    #[test]
    fn nodes_add_up_a_restarted_node_counts_from_zero_and_a_node_without_the_metric_is_left_out() {
        let quiet = |count: u64| exposition(&[("0.064", count), ("+Inf", count)], count, 0.001 * count as f64);
        let before = [Appends::of(&quiet(500)), Appends::of(&quiet(400)), None];
        let after = [Appends::of(&quiet(700)), Appends::of(&quiet(50)), Appends::of(&quiet(9))];
        let run = during(&before, &after).unwrap();
        assert_eq!(run.count, 250.0, "200 on the first node, 50 on the restarted one");
        assert_eq!(run.slow, 0.0);
        assert!(run.render().contains("none over 64 ms"), "{}", run.render());
        assert_eq!(Appends::of(&Scrape::parse("process_cpu_seconds_total 3\n")), None);
        assert_eq!(during(&[None], &[None]), None);
    }
}
