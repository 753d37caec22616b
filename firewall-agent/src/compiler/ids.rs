//! Stable numeric identities (docs/design.md#identities): allocated by key, never reused, so an id in the
//! kernel keeps its meaning across recompiles for the agent's lifetime.
use std::collections::{BTreeMap, BTreeSet};

use firewall_common::NS_FIRST;
use ipnet::IpNet;

use super::standard::Traits;

/// First id of a namespace narrowed to a set of referenced Services.
pub const NARROWED_FIRST: u32 = 0x0100_0000;
/// First id of a named CIDR (world or host addresses inside it).
pub const CIDR_FIRST: u32 = 0x0200_0000;

/// Allocates namespace, narrowed and CIDR ids; keep one for the agent's lifetime.
#[derive(Clone, Debug, Default)]
pub struct IdAllocator {
    namespaces: BTreeMap<String, u32>,
    narrowed: BTreeMap<(String, BTreeSet<String>, Traits), u32>,
    cidrs: BTreeMap<(bool, IpNet), u32>,
}

impl IdAllocator {
    /// The id of a namespace (allocated on first use, from [`NS_FIRST`]).
    pub fn namespace(&mut self, name: &str) -> u32 {
        if let Some(id) = self.namespaces.get(name) {
            return *id;
        }
        let id = NS_FIRST + self.namespaces.len() as u32;
        self.namespaces.insert(name.to_owned(), id);
        id
    }

    /// The id of a namespace's endpoints selected by exactly this set of referenced Services.
    pub fn narrowed(&mut self, namespace: &str, services: &BTreeSet<String>) -> u32 {
        self.narrowed_with(namespace, services, &Traits::default())
    }

    /// The id of a namespace's endpoints selected by exactly these referenced Services and
    /// with these traits for the standard policies.
    pub fn narrowed_with(
        &mut self,
        namespace: &str,
        services: &BTreeSet<String>,
        traits: &Traits,
    ) -> u32 {
        let key = (namespace.to_owned(), services.clone(), traits.clone());
        let next = NARROWED_FIRST + self.narrowed.len() as u32;
        *self.narrowed.entry(key).or_insert(next)
    }

    /// The id of world (`host == false`) or host addresses whose innermost named prefix is `net`.
    pub fn cidr(&mut self, host: bool, net: IpNet) -> u32 {
        let next = CIDR_FIRST + self.cidrs.len() as u32;
        *self.cidrs.entry((host, net)).or_insert(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_never_reused() {
        let mut a = IdAllocator::default();
        assert_eq!(a.namespace("b"), 2);
        assert_eq!(a.namespace("a"), 3);
        assert_eq!(a.namespace("b"), 2);
        let s: BTreeSet<String> = ["api".to_owned()].into();
        assert_eq!(a.narrowed("b", &s), NARROWED_FIRST);
        assert_eq!(a.narrowed("a", &s), NARROWED_FIRST + 1);
        assert_eq!(a.narrowed("b", &s), NARROWED_FIRST);
        let n: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(a.cidr(false, n), CIDR_FIRST);
        assert_eq!(a.cidr(true, n), CIDR_FIRST + 1);
        assert_eq!(a.cidr(false, n), CIDR_FIRST);
    }
}
