//! `hyokctl status`: every node's health and every key's state on each node.

use crate::target::Target;
use anyhow::Result;
use hyok_proto::v1 as pb;
use std::fmt::Write as _;

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

#[cfg(test)]
mod tests {
    use super::*;

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
