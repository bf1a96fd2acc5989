//! Roles inside the cluster, carried in certificates as DNS subject alternative names under
//! `role.hyok` (a name no public CA issues and no resolver answers).
//!
//! A certificate for node 3 holds `node.role.hyok` and `node-3.role.hyok`; the coordinator's holds
//! `coordinator.role.hyok`; a front-end's `frontend.role.hyok`; an operator's `admin.role.hyok`.
//! A server learns the caller's roles by asking whether the verified client certificate is
//! valid for those names — the same check TLS uses for server names, so no ad-hoc parsing.

use std::fmt;

/// A party in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// `hyok-node` number `id`.
    Node(u16),
    /// `hyok-coordinator`.
    Coordinator,
    /// A front-end (`hyok-xks`, `hyok-dke`, an application).
    Frontend,
    /// An operator (`hyokctl`).
    Admin,
}

/// The DNS suffix of every role name.
pub const ROLE_DOMAIN: &str = "role.hyok";

impl Role {
    /// The names a certificate for this role carries.
    pub fn dns_names(&self) -> Vec<String> {
        match self {
            Role::Node(id) => vec![format!("node.{ROLE_DOMAIN}"), format!("node-{id}.{ROLE_DOMAIN}")],
            Role::Coordinator => vec![format!("coordinator.{ROLE_DOMAIN}")],
            Role::Frontend => vec![format!("frontend.{ROLE_DOMAIN}")],
            Role::Admin => vec![format!("admin.{ROLE_DOMAIN}")],
        }
    }

    /// The one name that proves this role (for nodes: this node).
    pub fn proof_name(&self) -> String {
        match self {
            Role::Node(id) => format!("node-{id}.{ROLE_DOMAIN}"),
            other => other.dns_names().swap_remove(0),
        }
    }

    /// A short name for file names and logs: `node-3`, `coordinator`, `frontend`, `admin`.
    pub fn file_stem(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Node(id) => write!(f, "node-{id}"),
            Role::Coordinator => f.write_str("coordinator"),
            Role::Frontend => f.write_str("frontend"),
            Role::Admin => f.write_str("admin"),
        }
    }
}
