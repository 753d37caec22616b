//! Which policy APIs are enforced (`--policy-apis`): a cluster whose CNI already enforces
//! NetworkPolicy must not be enforced twice, so the standard APIs are opt-in.
use std::{fmt, str::FromStr};

use crate::model::convert::PolicyKind;

/// A set of policy APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyApis {
    /// NamespaceFirewall and ClusterFirewall (`bulkhead`).
    pub bulkhead: bool,
    /// `networking.k8s.io/v1` NetworkPolicy (`networkpolicy`).
    pub network_policy: bool,
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy (`clusternetworkpolicy`).
    pub cluster_network_policy: bool,
}

impl PolicyApis {
    /// The agent's default: Bulkhead's own CRDs only.
    pub const BULKHEAD: Self = Self {
        bulkhead: true,
        network_policy: false,
        cluster_network_policy: false,
    };
    /// Every API (what `check` and `validate` judge unless told otherwise: they are given the
    /// objects to judge).
    pub const ALL: Self = Self {
        bulkhead: true,
        network_policy: true,
        cluster_network_policy: true,
    };
}

impl PolicyApis {
    /// Whether objects of `kind` are read (watched, parsed, compiled).
    pub fn reads(self, kind: PolicyKind) -> bool {
        match kind {
            PolicyKind::NamespaceFirewall | PolicyKind::ClusterFirewall => self.bulkhead,
            PolicyKind::NetworkPolicy => self.network_policy,
            PolicyKind::ClusterNetworkPolicy => self.cluster_network_policy,
        }
    }
}

impl Default for PolicyApis {
    fn default() -> Self {
        Self::BULKHEAD
    }
}

/// An unknown API name in `--policy-apis`.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown policy API {0:?} (expected a comma-separated list of bulkhead, networkpolicy, clusternetworkpolicy)"
)]
pub struct UnknownApi(String);

impl FromStr for PolicyApis {
    type Err = UnknownApi;

    fn from_str(s: &str) -> Result<Self, UnknownApi> {
        let mut out = Self {
            bulkhead: false,
            network_policy: false,
            cluster_network_policy: false,
        };
        for name in s.split(',').map(str::trim) {
            match name.to_ascii_lowercase().as_str() {
                "bulkhead" => out.bulkhead = true,
                "networkpolicy" => out.network_policy = true,
                "clusternetworkpolicy" => out.cluster_network_policy = true,
                _ => return Err(UnknownApi(name.to_owned())),
            }
        }
        Ok(out)
    }
}

impl fmt::Display for PolicyApis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.bulkhead, "bulkhead"),
            (self.network_policy, "networkpolicy"),
            (self.cluster_network_policy, "clusternetworkpolicy"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        f.write_str(&names.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_typos() {
        let a: PolicyApis = "bulkhead,NetworkPolicy".parse().expect("valid");
        assert_eq!(a.to_string(), "bulkhead,networkpolicy");
        assert!(!a.cluster_network_policy);
        assert_eq!(
            PolicyApis::ALL.to_string(),
            "bulkhead,networkpolicy,clusternetworkpolicy"
        );
        assert!("bulkhead,netpol".parse::<PolicyApis>().is_err());
        assert!("".parse::<PolicyApis>().is_err());
    }
}
