//! Endpoints -> identities (docs/design.md#identities): the cgroup map, the IP tries, and
//! what each identity id stands for, so the encoder can evaluate the rules per identity.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use firewall_common::{
    IDENTITY_F_CLUSTER_IP, IDENTITY_F_DNS, IDENTITY_F_STD_EGRESS, IDENTITY_F_STD_INGRESS, Identity,
    NS_HOST, NS_WORLD, Side,
};
use ipnet::IpNet;

use super::{
    CompileOptions,
    ids::IdAllocator,
    policy_set::PolicySet,
    standard::{End, Traits},
};
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
        /// What the standard policies see of them.
        traits: Traits,
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
    /// Flags of namespace identities, by id.
    pub flags: BTreeMap<u32, u32>,
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

    /// The identity of endpoints of namespace `ns` selected by exactly `services`, with
    /// `traits`; flagged where a standard policy judges a side of it.
    fn namespace_identity(
        &mut self,
        ids: &mut IdAllocator,
        set: &PolicySet,
        (ns, labels): (&str, &BTreeMap<String, String>),
        services: BTreeSet<String>,
        traits: Traits,
        dns: bool,
    ) -> Identity {
        let ns_id = self
            .ns_ids
            .get(ns)
            .copied()
            .unwrap_or_else(|| ids.namespace(ns));
        let id = if services.is_empty() && traits == Traits::default() {
            ns_id
        } else {
            ids.narrowed_with(ns, &services, &traits)
        };
        let end = End::Namespace {
            name: ns,
            labels,
            traits: &traits,
        };
        let mut flags = if dns { IDENTITY_F_DNS } else { 0 };
        if set.standard.judges(Side::Ingress, &end) {
            flags |= IDENTITY_F_STD_INGRESS;
        }
        if set.standard.judges(Side::Egress, &end) {
            flags |= IDENTITY_F_STD_EGRESS;
        }
        let kind = IdentityKind::Namespace {
            name: ns.to_owned(),
            services,
            traits,
        };
        let ns = self.kinds.entry(id).or_insert((ns_id, kind)).0;
        *self.flags.entry(id).or_default() |= flags & !IDENTITY_F_DNS;
        Identity { id, ns, flags }
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
                traits: Traits::default(),
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
        out.add_hosts(model, set, opts, ids);
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
        let empty = BTreeMap::new();
        for pod in model.pods.iter().filter(|p| p.is_endpoint()) {
            let services = narrowing(
                referenced
                    .get(pod.namespace.as_str())
                    .into_iter()
                    .flatten()
                    .copied(),
                pod,
            );
            let labels = model
                .namespaces
                .get(&pod.namespace)
                .map_or(&empty, |n| &n.labels);
            let local = pod.node_name.as_deref() == Some(opts.node_name.as_str());
            let is_dns = dns.is_some_and(|d| d.selects(pod));
            let mut first = None;
            for (ip, traits) in address_traits(set, is_dns, pod) {
                let identity = self.namespace_identity(
                    ids,
                    set,
                    (&pod.namespace, labels),
                    services.clone(),
                    traits,
                    is_dns,
                );
                if let Some(ip) = ip {
                    self.insert_ip(ip, identity);
                }
                // The pod-by-address fallback looks a local pod up by any of its addresses.
                if local {
                    self.local.insert(identity.id);
                }
                first.get_or_insert(identity);
            }
            let Some(identity) = first else {
                continue;
            };
            if local {
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
        let empty = BTreeMap::new();
        for svc in &model.services {
            let services = if is_referenced(set, svc) {
                BTreeSet::from([svc.name.clone()])
            } else {
                BTreeSet::new()
            };
            let is_dns = dns.is_some_and(|d| d.namespace == svc.namespace && d.name == svc.name);
            let labels = model
                .namespaces
                .get(&svc.namespace)
                .map_or(&empty, |n| &n.labels);
            // A cluster IP stands for its backends: what all of them share.
            let mut traits = common_traits(
                model
                    .pods
                    .iter()
                    .filter(|p| p.is_endpoint() && svc.selects(p))
                    .flat_map(|p| {
                        let is_dns = dns.is_some_and(|d| d.selects(p));
                        address_traits(set, is_dns, p).into_iter().map(|(_, t)| t)
                    }),
            );
            traits.dns = is_dns && !set.standard.is_empty();
            let identity = self.namespace_identity(
                ids,
                set,
                (&svc.namespace, labels),
                services,
                traits,
                is_dns,
            );
            let address = Identity {
                flags: identity.flags | IDENTITY_F_CLUSTER_IP,
                ..identity
            };
            for ip in &svc.cluster_ips {
                self.insert_ip(*ip, address);
            }
        }
    }

    /// `host`: this node's own addresses and its hostNetwork pods'. The standard APIs exempt
    /// only traffic from a pod's own node; another node's address is judged like any address
    /// outside the cluster (an `ipBlock` may name it), which Bulkhead's own rules treat the
    /// same as `host`. Without a node name (`check` offline) every node counts as this one.
    fn add_hosts(
        &mut self,
        model: &ClusterModel,
        set: &PolicySet,
        opts: &CompileOptions,
        ids: &mut IdAllocator,
    ) {
        let here = |node: Option<&str>| opts.node_name.is_empty() || node == Some(&opts.node_name);
        let nodes = model.nodes.iter().filter(|n| here(Some(&n.name)));
        let host_ips = nodes.flat_map(|n| n.addresses.iter()).chain(
            model
                .pods
                .iter()
                .filter(|p| p.host_network && !p.terminal && here(p.node_name.as_deref()))
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

/// What the standard policies see of a pod (at one of its addresses). Without standard
/// policies nothing, so identities split as before; the DNS mark only then matters.
fn pod_traits(set: &PolicySet, is_dns: bool, pod: &Pod, ip: Option<IpAddr>) -> Traits {
    let std = &set.standard;
    if std.is_empty() {
        return Traits::default();
    }
    Traits {
        groups: std.groups_of(&pod.labels),
        cidrs: ip
            .map(|ip| {
                std.cidrs
                    .iter()
                    .filter(|c| c.contains(&ip))
                    .copied()
                    .collect()
            })
            .unwrap_or_default(),
        named: pod
            .named_ports
            .iter()
            .filter(|(n, _)| std.named_ports.contains(*n))
            .map(|(n, p)| (n.clone(), *p))
            .collect(),
        dns: is_dns,
    }
}

/// A pod's traits at each of its addresses (one identity per address: a standard CIDR may
/// hold one of them and not the other), or once without an address when it has none yet.
fn address_traits(set: &PolicySet, is_dns: bool, pod: &Pod) -> Vec<(Option<IpAddr>, Traits)> {
    if pod.ips.is_empty() {
        return vec![(None, pod_traits(set, is_dns, pod, None))];
    }
    pod.ips
        .iter()
        .map(|ip| (Some(*ip), pod_traits(set, is_dns, pod, Some(*ip))))
        .collect()
}

/// The traits every one of `all` has (none when there are none).
fn common_traits(all: impl Iterator<Item = Traits>) -> Traits {
    let mut out: Option<Traits> = None;
    for t in all {
        out = Some(match out {
            None => t,
            Some(o) => Traits {
                groups: o.groups.intersection(&t.groups).copied().collect(),
                cidrs: o.cidrs.intersection(&t.cidrs).copied().collect(),
                named: o
                    .named
                    .into_iter()
                    .filter(|(n, p)| t.named.get(n) == Some(p))
                    .collect(),
                dns: o.dns && t.dns,
            },
        });
    }
    out.unwrap_or_default()
}
