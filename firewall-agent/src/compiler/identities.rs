//! Endpoints -> identities (docs/design.md#identities): the cgroup map, the IP tries, and
//! what each identity id stands for, so the encoder can evaluate the rules per identity.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::{IDENTITY_F_DNS, Identity, NS_HOST, NS_WORLD};
use ipnet::IpNet;

use super::{CompileOptions, ids::IdAllocator, policy_set::PolicySet};
use crate::model::{ClusterModel, Pod, Service};

/// What an identity id stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentityKind {
    /// Endpoints of a namespace selected by exactly these referenced Services (maybe none).
    Namespace {
        /// Namespace name.
        name: String,
        /// Referenced Services selecting the endpoints.
        services: BTreeSet<String>,
    },
    /// Host (`host`) or world addresses whose innermost named prefix is `cidr`.
    Outside {
        /// Node addresses and hostNetwork pods.
        host: bool,
        /// Innermost named prefix, if any.
        cidr: Option<IpNet>,
    },
}

/// All identities of a compile.
#[derive(Clone, Debug, Default)]
pub struct Identities {
    /// id -> (namespace id, kind).
    pub kinds: BTreeMap<u32, (u32, IdentityKind)>,
    /// Namespace id by name.
    pub ns_ids: BTreeMap<String, u32>,
    /// Identities of this node's pods.
    pub local: BTreeSet<u32>,
    /// cgroup id -> identity.
    pub cgroups: BTreeMap<u64, Identity>,
    /// IPv4 trie.
    pub ipv4: BTreeMap<(Ipv4Addr, u8), Identity>,
    /// IPv6 trie.
    pub ipv6: BTreeMap<(Ipv6Addr, u8), Identity>,
}

/// The names of every namespace the model mentions (objects, pods, Services, policies).
pub fn namespace_names(model: &ClusterModel) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = model.namespaces.keys().cloned().collect();
    names.extend(model.pods.iter().map(|p| p.namespace.clone()));
    names.extend(model.services.iter().map(|s| s.namespace.clone()));
    names.extend(
        model
            .namespace_firewalls
            .iter()
            .filter_map(|f| f.metadata.namespace.clone()),
    );
    names
}

/// Innermost named prefix containing `ip`.
pub fn innermost(set: &PolicySet, ip: IpAddr) -> Option<IpNet> {
    set.named_cidrs
        .iter()
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

/// The identity of an address in address tries: the longest matching prefix, else world.
pub fn lookup_address(
    ipv4: &BTreeMap<(Ipv4Addr, u8), Identity>,
    ipv6: &BTreeMap<(Ipv6Addr, u8), Identity>,
    ip: IpAddr,
) -> Identity {
    let found = match ip {
        IpAddr::V4(a) => (0..=32u8).rev().find_map(|l| {
            let n = ipnet::Ipv4Net::new(a, l).ok()?.trunc();
            ipv4.get(&(n.network(), l)).copied()
        }),
        IpAddr::V6(a) => (0..=128u8).rev().find_map(|l| {
            let n = ipnet::Ipv6Net::new(a, l).ok()?.trunc();
            ipv6.get(&(n.network(), l)).copied()
        }),
    };
    found.unwrap_or_default()
}

impl Identities {
    /// The identity of an address, as the kernel looks it up.
    pub fn lookup(&self, ip: IpAddr) -> Identity {
        lookup_address(&self.ipv4, &self.ipv6, ip)
    }

    fn insert_ip(&mut self, ip: IpAddr, identity: Identity) {
        match ip {
            IpAddr::V4(a) => {
                self.ipv4.entry((a, 32)).or_insert(identity);
            }
            IpAddr::V6(a) => {
                self.ipv6.entry((a, 128)).or_insert(identity);
            }
        }
    }

    /// The identity of endpoints of namespace `ns` selected by exactly `services`.
    fn namespace_identity(
        &mut self,
        ids: &mut IdAllocator,
        ns: &str,
        services: BTreeSet<String>,
        dns: bool,
    ) -> Identity {
        let ns_id = self
            .ns_ids
            .get(ns)
            .copied()
            .unwrap_or_else(|| ids.namespace(ns));
        let id = if services.is_empty() {
            ns_id
        } else {
            ids.narrowed(ns, &services)
        };
        let kind = IdentityKind::Namespace {
            name: ns.to_owned(),
            services,
        };
        let ns = self.kinds.entry(id).or_insert((ns_id, kind)).0;
        Identity {
            id,
            ns,
            flags: if dns { IDENTITY_F_DNS } else { 0 },
        }
    }

    /// Assigns identities to every endpoint of the model.
    pub fn build(
        model: &ClusterModel,
        set: &PolicySet,
        opts: &CompileOptions,
        ids: &mut IdAllocator,
    ) -> Self {
        let mut out = Identities::default();
        for name in namespace_names(model) {
            let id = ids.namespace(&name);
            out.ns_ids.insert(name.clone(), id);
            let kind = IdentityKind::Namespace {
                name,
                services: BTreeSet::new(),
            };
            out.kinds.insert(id, (id, kind));
        }
        for (ns, host) in [(NS_WORLD, false), (NS_HOST, true)] {
            let kind = IdentityKind::Outside { host, cidr: None };
            out.kinds.insert(ns, (ns, kind));
        }
        let (dns_ns, dns_name) = &opts.dns_service;
        let dns = model
            .services
            .iter()
            .find(|s| &s.namespace == dns_ns && &s.name == dns_name);
        // Pods first: a pod IP wins over anything else claiming the same address.
        out.add_pods(model, set, opts, ids, dns);
        out.add_services(model, set, ids, dns);
        out.add_hosts(model, set, ids);
        out.add_named_cidrs(set, ids);
        out
    }

    fn add_pods(
        &mut self,
        model: &ClusterModel,
        set: &PolicySet,
        opts: &CompileOptions,
        ids: &mut IdAllocator,
        dns: Option<&Service>,
    ) {
        // Referenced Services by namespace: only they can narrow a pod's identity.
        let mut referenced: HashMap<&str, Vec<&Service>> = HashMap::new();
        for s in model.services.iter().filter(|s| is_referenced(set, s)) {
            referenced.entry(s.namespace.as_str()).or_default().push(s);
        }
        for pod in model.pods.iter().filter(|p| p.is_endpoint()) {
            let services = narrowing(
                referenced
                    .get(pod.namespace.as_str())
                    .into_iter()
                    .flatten()
                    .copied(),
                pod,
            );
            let is_dns = dns.is_some_and(|d| d.selects(pod));
            let identity = self.namespace_identity(ids, &pod.namespace, services, is_dns);
            for ip in &pod.ips {
                self.insert_ip(*ip, identity);
            }
            if pod.node_name.as_deref() == Some(opts.node_name.as_str()) {
                self.local.insert(identity.id);
                for cg in &pod.cgroup_ids {
                    self.cgroups.insert(*cg, identity);
                }
            }
        }
    }

    fn add_services(
        &mut self,
        model: &ClusterModel,
        set: &PolicySet,
        ids: &mut IdAllocator,
        dns: Option<&Service>,
    ) {
        for svc in &model.services {
            let services = if is_referenced(set, svc) {
                BTreeSet::from([svc.name.clone()])
            } else {
                BTreeSet::new()
            };
            let is_dns = dns.is_some_and(|d| d.namespace == svc.namespace && d.name == svc.name);
            let identity = self.namespace_identity(ids, &svc.namespace, services, is_dns);
            for ip in &svc.cluster_ips {
                self.insert_ip(*ip, identity);
            }
        }
    }

    fn add_hosts(&mut self, model: &ClusterModel, set: &PolicySet, ids: &mut IdAllocator) {
        let host_ips = model.nodes.iter().flat_map(|n| n.addresses.iter()).chain(
            model
                .pods
                .iter()
                .filter(|p| p.host_network && !p.terminal)
                .flat_map(|p| p.ips.iter()),
        );
        for ip in host_ips {
            let cidr = innermost(set, *ip);
            let id = cidr.map_or(NS_HOST, |c| ids.cidr(true, c));
            self.kinds
                .entry(id)
                .or_insert((NS_HOST, IdentityKind::Outside { host: true, cidr }));
            let identity = Identity {
                id,
                ns: NS_HOST,
                flags: 0,
            };
            self.insert_ip(*ip, identity);
        }
    }

    fn add_named_cidrs(&mut self, set: &PolicySet, ids: &mut IdAllocator) {
        for net in &set.named_cidrs {
            let id = ids.cidr(false, *net);
            let kind = IdentityKind::Outside {
                host: false,
                cidr: Some(*net),
            };
            self.kinds.insert(id, (NS_WORLD, kind));
            let identity = Identity {
                id,
                ns: NS_WORLD,
                flags: 0,
            };
            match net {
                IpNet::V4(n) => {
                    self.ipv4
                        .entry((n.network(), n.prefix_len()))
                        .or_insert(identity);
                }
                IpNet::V6(n) => {
                    self.ipv6
                        .entry((n.network(), n.prefix_len()))
                        .or_insert(identity);
                }
            }
        }
    }
}

/// The names of the referenced Services among `referenced` that select `pod`: the Services
/// that narrow its identity.
pub fn narrowing<'a>(
    referenced: impl IntoIterator<Item = &'a Service>,
    pod: &Pod,
) -> BTreeSet<String> {
    referenced
        .into_iter()
        .filter(|s| s.selects(pod))
        .map(|s| s.name.clone())
        .collect()
}

/// Whether some rule names the Service (only then does it narrow identities).
pub fn is_referenced(set: &PolicySet, svc: &Service) -> bool {
    set.referenced_services
        .contains(&(svc.namespace.clone(), svc.name.clone()))
}
