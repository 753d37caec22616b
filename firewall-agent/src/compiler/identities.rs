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

/// A pod, for the violation log.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Pods by address and by cgroup, for naming the ends of a violation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Pod IPs (not hostNetwork).
    pub by_ip: HashMap<IpAddr, PodRef>,
    /// This node's pods by cgroup id.
    pub by_cgroup: HashMap<u64, PodRef>,
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
    /// Pods by address and cgroup.
    pub endpoints: Endpoints,
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

/// Referenced Services selecting a pod (names in its namespace).
pub fn pod_services(model: &ClusterModel, set: &PolicySet, pod: &Pod) -> BTreeSet<String> {
    model
        .services
        .iter()
        .filter(|s| {
            s.selects(pod)
                && set
                    .referenced_services
                    .contains(&(s.namespace.clone(), s.name.clone()))
        })
        .map(|s| s.name.clone())
        .collect()
}

/// Innermost named prefix containing `ip`.
pub fn innermost(set: &PolicySet, ip: IpAddr) -> Option<IpNet> {
    set.named_cidrs
        .iter()
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
        .copied()
}

impl Identities {
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

    fn namespace_identity(
        &mut self,
        ids: &mut IdAllocator,
        ns: &str,
        services: BTreeSet<String>,
    ) -> u32 {
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
        self.kinds.entry(id).or_insert_with(|| {
            (
                ns_id,
                IdentityKind::Namespace {
                    name: ns.to_owned(),
                    services,
                },
            )
        });
        id
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
            out.kinds.insert(
                id,
                (
                    id,
                    IdentityKind::Namespace {
                        name,
                        services: BTreeSet::new(),
                    },
                ),
            );
        }
        out.kinds.insert(
            NS_WORLD,
            (
                NS_WORLD,
                IdentityKind::Outside {
                    host: false,
                    cidr: None,
                },
            ),
        );
        out.kinds.insert(
            NS_HOST,
            (
                NS_HOST,
                IdentityKind::Outside {
                    host: true,
                    cidr: None,
                },
            ),
        );
        let (dns_ns, dns_name) = &opts.dns_service;
        let dns = model
            .services
            .iter()
            .find(|s| &s.namespace == dns_ns && &s.name == dns_name);
        // Referenced Services by namespace: only they can narrow a pod's identity.
        let mut referenced: HashMap<&str, Vec<&Service>> = HashMap::new();
        for s in &model.services {
            if set
                .referenced_services
                .contains(&(s.namespace.clone(), s.name.clone()))
            {
                referenced.entry(s.namespace.as_str()).or_default().push(s);
            }
        }

        // Pods first: a pod IP wins over anything else claiming the same address.
        for pod in model.pods.iter().filter(|p| p.is_endpoint()) {
            let services: BTreeSet<String> = referenced
                .get(pod.namespace.as_str())
                .into_iter()
                .flatten()
                .filter(|s| s.selects(pod))
                .map(|s| s.name.clone())
                .collect();
            let id = out.namespace_identity(ids, &pod.namespace, services);
            let ns = out.kinds.get(&id).map_or(id, |k| k.0);
            let flags = if dns.is_some_and(|d| d.selects(pod)) {
                IDENTITY_F_DNS
            } else {
                0
            };
            let identity = Identity { id, ns, flags };
            let pod_ref = PodRef {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
            };
            for ip in &pod.ips {
                out.insert_ip(*ip, identity);
                out.endpoints
                    .by_ip
                    .entry(*ip)
                    .or_insert_with(|| pod_ref.clone());
            }
            if pod.node_name.as_deref() == Some(opts.node_name.as_str()) {
                out.local.insert(id);
                for cg in &pod.cgroup_ids {
                    out.cgroups.insert(*cg, identity);
                    out.endpoints.by_cgroup.insert(*cg, pod_ref.clone());
                }
            }
        }
        for svc in &model.services {
            let referenced = set
                .referenced_services
                .contains(&(svc.namespace.clone(), svc.name.clone()));
            let services = if referenced {
                BTreeSet::from([svc.name.clone()])
            } else {
                BTreeSet::new()
            };
            let id = out.namespace_identity(ids, &svc.namespace, services);
            let ns = out.kinds.get(&id).map_or(id, |k| k.0);
            let is_dns = dns.is_some_and(|d| d.namespace == svc.namespace && d.name == svc.name);
            let identity = Identity {
                id,
                ns,
                flags: if is_dns { IDENTITY_F_DNS } else { 0 },
            };
            for ip in &svc.cluster_ips {
                out.insert_ip(*ip, identity);
            }
        }
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
            out.kinds
                .entry(id)
                .or_insert((NS_HOST, IdentityKind::Outside { host: true, cidr }));
            out.insert_ip(
                *ip,
                Identity {
                    id,
                    ns: NS_HOST,
                    flags: 0,
                },
            );
        }
        for net in &set.named_cidrs {
            let id = ids.cidr(false, *net);
            out.kinds.insert(
                id,
                (
                    NS_WORLD,
                    IdentityKind::Outside {
                        host: false,
                        cidr: Some(*net),
                    },
                ),
            );
            let identity = Identity {
                id,
                ns: NS_WORLD,
                flags: 0,
            };
            match net {
                IpNet::V4(n) => {
                    out.ipv4
                        .entry((n.network(), n.prefix_len()))
                        .or_insert(identity);
                }
                IpNet::V6(n) => {
                    out.ipv6
                        .entry((n.network(), n.prefix_len()))
                        .or_insert(identity);
                }
            }
        }
        out
    }
}
