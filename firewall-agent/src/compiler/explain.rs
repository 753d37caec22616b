//! Explains the verdict for one connection, naming the deciding rule on each side
//! (`firewall-agent check`, and the reference the compiled maps are tested against).
use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use firewall_common::{
    IDENTITY_F_DNS, Identity, Mode, PolicyVerdict, Side, bulkhead_pair_exemption, exemption,
};
use ipnet::IpNet;

use super::{
    CompileOptions,
    evaluate::{Decision, Dst, Outside, Plan, Src, Step},
    identities::{Identities, IdentityKind, is_referenced, namespace_names, narrowing},
    ids::IdAllocator,
    modes::{self, InvalidModeLabel, ModeSource, NamespaceMode},
    policy_set::PolicySet,
    standard::{NO_TRAITS, Traits},
};
use crate::{
    model::{ClusterModel, Pod, Rejection},
    policy::LastAccepted,
};

/// The destination of a connection to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// A pod of a namespace, selected by these Services (names in that namespace; may be empty).
    Namespace {
        /// Namespace name.
        name: String,
        /// Services selecting the destination pod.
        services: Vec<String>,
    },
    /// A pod of the model, identified as its own node identifies it (by its cgroup): its
    /// namespace and the referenced Services whose selector matches its labels. Resolved as a
    /// pod of its namespace selected by no Service when the model has no such pod.
    Pod {
        /// Namespace name.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// An address, resolved as the kernel would: pod IP, cluster IP, node address, else world.
    Address(IpAddr),
}

/// The source of a connection to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A pod of this namespace (rules select sources by namespace only).
    Namespace(String),
    /// A pod of the model: its namespace, or the host's address for a hostNetwork pod (whose
    /// sockets pass as the host's do). A pod of that namespace when the model has no such pod.
    Pod {
        /// Namespace name.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// An address, resolved as the kernel would: a pod's address is that pod's namespace, any
    /// other address is world or host.
    Address(IpAddr),
    /// The host (a hostNetwork pod without a reported address).
    Host,
}

/// What one side does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Allowed, or denied in mode `off` (passes without a line).
    Allowed,
    /// Denied in monitor mode: an `AUDIT` line, the connection passes.
    Logged,
    /// Denied in enforce mode: a `DENIED` line, the connection is dropped.
    Dropped,
}

impl Outcome {
    /// A stable name (`allowed`, `logged`, `dropped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Logged => "logged",
            Outcome::Dropped => "dropped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Allowed => "allowed",
            Outcome::Logged => "would be logged (monitor)",
            Outcome::Dropped => "dropped (enforce)",
        })
    }
}

/// One side's decision, with what decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideDecision {
    /// Allow or deny (dropped in enforce mode, logged in monitor mode).
    pub verdict: PolicyVerdict,
    /// The log's `policy` string: the deciding object/rule, or `default`.
    pub policy: String,
    /// The evaluation step (or exemption) that decided.
    pub step: Step,
    /// This side's mode.
    pub mode: Mode,
    /// Where that mode comes from.
    pub mode_from: ModeSource,
}

impl SideDecision {
    /// What this side does with the connection (docs/design.md#evaluation-order: a denying side
    /// drops in enforce, logs in monitor, and passes silently in off).
    pub fn outcome(&self) -> Outcome {
        match (self.verdict, self.mode) {
            (PolicyVerdict::Deny, Mode::Enforce) => Outcome::Dropped,
            (PolicyVerdict::Deny, Mode::Monitor) => Outcome::Logged,
            _ => Outcome::Allowed,
        }
    }
}

/// The verdict for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// Source namespace.
    pub source_namespace: String,
    /// The destination as resolved (e.g. `pod db/postgres-0 (10.0.0.9)`, `world 1.1.1.1`).
    pub destination: String,
    /// Destination namespace, when the destination is a namespace endpoint.
    pub destination_namespace: Option<String>,
    /// The egress side (at the source pod).
    pub egress: SideDecision,
    /// The ingress side (at the destination pod); `None` for world and host.
    pub ingress: Option<SideDecision>,
    /// Whether the connection is dropped (a denying side is in enforce mode).
    pub dropped: bool,
}

impl Explanation {
    /// The connection's fate: the worst of its sides.
    pub fn outcome(&self) -> Outcome {
        worst(Some(&self.egress), self.ingress.as_ref())
    }
}

fn worst(egress: Option<&SideDecision>, ingress: Option<&SideDecision>) -> Outcome {
    egress
        .into_iter()
        .chain(ingress)
        .map(SideDecision::outcome)
        .max()
        .unwrap_or(Outcome::Allowed)
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |f: &mut fmt::Formatter<'_>, name: &str, d: &SideDecision| {
            writeln!(
                f,
                "  {name}: {:?} by {} ({:?}; mode {})",
                d.verdict, d.policy, d.step, d.mode
            )
        };
        writeln!(
            f,
            "from namespace {} to {}:",
            self.source_namespace, self.destination
        )?;
        side(f, "egress", &self.egress)?;
        if let Some(i) = &self.ingress {
            side(f, "ingress", i)?;
        }
        writeln!(
            f,
            "  result: {}",
            if self.dropped { "dropped" } else { "passes" }
        )
    }
}

/// The verdict for one connection from any source: a source outside the cluster's pods has no
/// egress side (nothing judges at a world or host sender).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The egress side (at the source pod); `None` for a world or host source.
    pub egress: Option<SideDecision>,
    /// The ingress side (at the destination pod); `None` for world and host destinations.
    pub ingress: Option<SideDecision>,
    /// The source as resolved (`namespace web`, `pod web/app (10.0.0.1)`, `world 1.1.1.1`), and
    /// its namespace when it is a pod.
    pub source: (String, Option<String>),
    /// The destination as resolved, and its namespace when it is a namespace endpoint.
    pub destination: (String, Option<String>),
}

impl Judgement {
    /// The connection's fate: the worst of its sides.
    pub fn outcome(&self) -> Outcome {
        worst(self.egress.as_ref(), self.ingress.as_ref())
    }
}

/// Addresses of a CIDR that share one identity, judged through one of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CidrPart {
    /// The address judged.
    pub address: IpAddr,
    /// Address-table entries (pods, cluster IPs, node addresses, named CIDRs) of the CIDR with
    /// this identity; 0 for the addresses no entry of the CIDR claims.
    pub entries: usize,
}

/// What a destination resolves to: its identity (as the kernel sees it) and how to name it.
struct Resolved<'a> {
    identity: Identity,
    place: Place<'a>,
    what: String,
}

/// Where a destination is, as the rules see it.
enum Place<'a> {
    /// An endpoint of a namespace selected by these (referenced) Services.
    Namespace(&'a str, Cow<'a, BTreeSet<String>>, Cow<'a, Traits>),
    /// A world or host address.
    Outside(IpAddr),
}

/// Namespace id of a namespace the model does not know (a `check --from` typo).
const UNKNOWN_NS: u32 = u32::MAX;

/// Validated policy of one model, reusable across many explanations.
pub struct Evaluator<'m> {
    model: &'m ClusterModel,
    opts: &'m CompileOptions,
    set: PolicySet,
    idents: Identities,
    labels: BTreeMap<String, BTreeMap<String, String>>,
    modes: BTreeMap<String, NamespaceMode>,
    default_mode: NamespaceMode,
    invalid_mode_labels: Vec<InvalidModeLabel>,
}

impl<'m> Evaluator<'m> {
    /// Validates the model's policy once and gives its endpoints identities, as a compile does.
    pub fn new(model: &'m ClusterModel, opts: &'m CompileOptions) -> Self {
        // Judged alone: a refused object is shown by its fail-closed stand-in.
        let set = PolicySet::in_force(model, opts.policy_apis, &mut LastAccepted::default());
        let idents = Identities::build(model, &set, opts, &mut IdAllocator::default());
        let names = namespace_names(model);
        let (modes, invalid_mode_labels) =
            modes::namespace_modes(model, &set, opts, &names, &mut Default::default());
        let default_mode = modes::default_mode(&set, opts);
        let labels = model
            .namespaces
            .iter()
            .map(|(k, v)| (k.clone(), v.labels.clone()))
            .collect();
        Self {
            model,
            opts,
            set,
            idents,
            labels,
            modes,
            default_mode,
            invalid_mode_labels,
        }
    }

    /// Policy objects that are not applied (undeserializable, invalid, conflicting defaults).
    pub fn rejected(&self) -> &[Rejection] {
        &self.set.rejected
    }

    /// The mode of a namespace, and where it comes from.
    pub fn namespace_mode(&self, ns: &str) -> NamespaceMode {
        self.modes.get(ns).copied().unwrap_or(self.default_mode)
    }

    /// The mode of a namespace.
    pub fn mode(&self, ns: &str) -> Mode {
        self.namespace_mode(ns).mode
    }

    /// Mode labels whose value is no mode (judged alone, such a namespace has the default).
    pub fn invalid_mode_labels(&self) -> &[InvalidModeLabel] {
        &self.invalid_mode_labels
    }

    /// The referenced Services (those some rule names) whose selector matches `pod`: the
    /// Services that narrow its identity.
    pub fn narrowing_services(&self, pod: &Pod) -> BTreeSet<String> {
        let referenced = self
            .model
            .services
            .iter()
            .filter(|s| is_referenced(&self.set, s));
        narrowing(referenced, pod)
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<&Pod> {
        self.model
            .pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
    }

    fn namespace_id(&self, name: &str) -> Option<u32> {
        self.idents.ns_ids.get(name).copied()
    }

    /// A named destination: a pod of `name` selected by `services` (`dns`: the cluster DNS
    /// Service's).
    fn resolve_named<'a>(
        &self,
        src: &Identity,
        src_name: Option<&str>,
        name: &'a str,
        services: Cow<'a, BTreeSet<String>>,
        dns: bool,
        what: String,
    ) -> Resolved<'a> {
        let ns = match self.namespace_id(name) {
            Some(id) => id,
            None if src_name == Some(name) => src.ns,
            None => UNKNOWN_NS - 1,
        };
        Resolved {
            identity: Identity {
                id: ns,
                ns,
                flags: if dns { IDENTITY_F_DNS } else { 0 },
            },
            place: Place::Namespace(name, services, Cow::Owned(Traits::default())),
            what,
        }
    }

    fn resolve<'a>(
        &'a self,
        local: &Identity,
        src_name: Option<&str>,
        dst: &'a Destination,
    ) -> Resolved<'a> {
        let (dns_ns, dns_name) = &self.opts.dns_service;
        match dst {
            Destination::Namespace { name, services } => {
                let dns = dns_ns == name && services.contains(dns_name);
                let services = Cow::Owned(services.iter().cloned().collect());
                let what = format!("namespace {name}");
                self.resolve_named(local, src_name, name, services, dns, what)
            }
            Destination::Pod { namespace, name } => {
                let pod = self.pod(namespace, name);
                match pod {
                    Some(p) if p.host_network => match p.ips.first() {
                        Some(ip) => self.resolve_address(*ip),
                        None => Resolved {
                            identity: Identity {
                                id: firewall_common::NS_HOST,
                                ns: firewall_common::NS_HOST,
                                flags: 0,
                            },
                            place: Place::Outside(IpAddr::from([0, 0, 0, 0])),
                            what: format!("hostNetwork pod {namespace}/{name} (host)"),
                        },
                    },
                    // Its own address: the identity the kernel gives it, with its traits.
                    Some(p) if !p.ips.is_empty() && !self.set.standard.is_empty() => {
                        let mut r = self.resolve_address(p.ips[0]);
                        r.what = pod_name(p);
                        r
                    }
                    Some(p) => {
                        let dns =
                            self.model.services.iter().any(|s| {
                                &s.namespace == dns_ns && &s.name == dns_name && s.selects(p)
                            });
                        let what = pod_name(p);
                        let services = Cow::Owned(self.narrowing_services(p));
                        self.resolve_named(local, src_name, namespace, services, dns, what)
                    }
                    None => {
                        let what = format!("namespace {namespace}");
                        let services = Cow::Owned(BTreeSet::new());
                        self.resolve_named(local, src_name, namespace, services, false, what)
                    }
                }
            }
            Destination::Address(ip) => self.resolve_address(*ip),
        }
    }

    /// An address, resolved through the same tries the kernel looks up.
    fn resolve_address(&self, ip: IpAddr) -> Resolved<'_> {
        let identity = self.idents.lookup(ip);
        let kind = self.idents.kinds.get(&identity.id).map(|k| &k.1);
        let (place, what) = match kind {
            Some(IdentityKind::Namespace {
                name,
                services,
                traits,
            }) => (
                Place::Namespace(name, Cow::Borrowed(services), Cow::Borrowed(traits)),
                self.endpoint_name(ip),
            ),
            Some(IdentityKind::Outside { host: true, .. }) => {
                (Place::Outside(ip), format!("host {ip}"))
            }
            _ => (Place::Outside(ip), format!("world {ip}")),
        };
        Resolved {
            identity,
            place,
            what,
        }
    }

    /// How a namespace endpoint's address is named: its pod, else its Service (the order the
    /// tries give addresses to identities in).
    fn endpoint_name(&self, ip: IpAddr) -> String {
        let model = self.model;
        if let Some(p) = model
            .pods
            .iter()
            .find(|p| p.is_endpoint() && p.ips.contains(&ip))
        {
            return format!("pod {}/{} ({ip})", p.namespace, p.name);
        }
        match model.services.iter().find(|s| s.cluster_ips.contains(&ip)) {
            Some(s) => format!("service {}/{} ({ip})", s.namespace, s.name),
            None => format!("address {ip}"),
        }
    }

    fn side(&self, d: Decision, mode: Mode, mode_from: ModeSource) -> SideDecision {
        let verdict = d.value.0;
        let policy = self
            .set
            .rules
            .borrow()
            .get(d.value.1 as usize)
            .cloned()
            .unwrap_or_else(|| "default".to_owned());
        SideDecision {
            verdict,
            policy,
            step: d.step,
            mode,
            mode_from,
        }
    }

    /// One side's decision: an exemption, else the plan's. `ns` names the side's namespace
    /// (for its mode).
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        side: Side,
        ns: &str,
        local: &Identity,
        peer: &Identity,
        src: Src<'_>,
        dst: &Dst<'_>,
        proto: u8,
        port: u16,
    ) -> SideDecision {
        let NamespaceMode {
            mode,
            source: mode_from,
        } = self.namespace_mode(ns);
        match exemption(side, local, peer, proto, port) {
            Some(e) => SideDecision {
                verdict: PolicyVerdict::Allow,
                policy: "default".to_owned(),
                step: e.into(),
                mode,
                mode_from,
            },
            None => self.side(
                Plan::new(
                    &self.set,
                    side,
                    src,
                    dst,
                    bulkhead_pair_exemption(side, local.ns, peer.ns),
                )
                .decide(proto, port),
                mode,
                mode_from,
            ),
        }
    }

    /// Explains a connection from a pod of `src_namespace` to `dst` with `proto`/`port`.
    pub fn explain(
        &self,
        src_namespace: &str,
        dst: &Destination,
        proto: u8,
        port: u16,
    ) -> Explanation {
        let j = self.judge(
            &Source::Namespace(src_namespace.to_owned()),
            dst,
            proto,
            port,
        );
        let egress = j
            .egress
            .unwrap_or_else(|| unreachable!("a namespace source always has an egress side"));
        let ingress = j.ingress;
        let dropped = [Some(&egress), ingress.as_ref()]
            .into_iter()
            .flatten()
            .any(|s| s.outcome() == Outcome::Dropped);
        let (destination, destination_namespace) = j.destination;
        Explanation {
            source_namespace: src_namespace.to_owned(),
            destination,
            destination_namespace,
            egress,
            ingress,
            dropped,
        }
    }

    /// The source's namespace (`None`: world or host) and how to name it.
    fn resolve_source(&self, src: &Source) -> (Option<String>, String) {
        match src {
            Source::Namespace(ns) => (Some(ns.clone()), format!("namespace {ns}")),
            Source::Host => (None, "host".to_owned()),
            Source::Pod { namespace, name } => {
                let pod = self.pod(namespace, name);
                match pod {
                    Some(p) if p.host_network => match p.ips.first() {
                        Some(ip) => self.resolve_source(&Source::Address(*ip)),
                        None => (None, format!("hostNetwork pod {namespace}/{name} (host)")),
                    },
                    Some(p) => (Some(namespace.clone()), pod_name(p)),
                    None => (Some(namespace.clone()), format!("namespace {namespace}")),
                }
            }
            Source::Address(ip) => {
                let r = self.resolve_address(*ip);
                match r.place {
                    Place::Namespace(ns, ..) => (Some(ns.to_owned()), r.what),
                    Place::Outside(_) => (None, r.what),
                }
            }
        }
    }

    /// A pod source's own identity and traits, where standard policies tell pods apart.
    fn source_pod(&self, src: &Source) -> (Option<Identity>, &Traits) {
        let ip = match src {
            Source::Pod { namespace, name } => self
                .pod(namespace, name)
                .filter(|p| !p.host_network)
                .and_then(|p| p.ips.first().copied()),
            Source::Address(ip) => Some(*ip),
            _ => None,
        };
        let Some(ip) = ip.filter(|_| !self.set.standard.is_empty()) else {
            return (None, &NO_TRAITS);
        };
        let identity = self.idents.lookup(ip);
        match self.idents.kinds.get(&identity.id) {
            Some((_, IdentityKind::Namespace { traits, .. })) => (Some(identity), traits),
            _ => (None, &NO_TRAITS),
        }
    }

    /// Judges a connection from `src` to `dst` with `proto`/`port`, each side as the kernel
    /// decides it.
    pub fn judge(&self, src: &Source, dst: &Destination, proto: u8, port: u16) -> Judgement {
        let empty = BTreeMap::new();
        let (src_ns, source) = self.resolve_source(src);
        let src_name = src_ns.as_deref().unwrap_or_default();
        let (pod_identity, traits) = self.source_pod(src);
        let outside = match src {
            Source::Address(ip) if src_ns.is_none() => Some(Outside::Address(*ip)),
            _ if src_ns.is_none() => Some(Outside::Address(IpAddr::from([0, 0, 0, 0]))),
            _ => None,
        };
        let rules_src = Src {
            name: src_name,
            labels: self.labels.get(src_name).unwrap_or(&empty),
            rules: src_ns.as_ref().and_then(|n| self.set.namespaces.get(n)),
            traits,
            outside,
        };
        let local = match (&src_ns, pod_identity) {
            (Some(_), Some(identity)) => identity,
            (Some(ns), None) => {
                let id = self.namespace_id(ns).unwrap_or(UNKNOWN_NS);
                Identity {
                    id,
                    ns: id,
                    flags: 0,
                }
            }
            // World and host: the peer an ingress side sees (exempt: not restricted).
            (None, _) => Identity::default(),
        };
        let resolved = self.resolve(&local, src_ns.as_deref(), dst);
        let peer = resolved.identity;
        let (egress, ingress, destination_namespace) = match &resolved.place {
            Place::Namespace(name, services, traits) => {
                let d = Dst::Namespace {
                    name,
                    labels: self.labels.get(*name).unwrap_or(&empty),
                    services,
                    rules: self.set.namespaces.get(*name),
                    traits,
                };
                let e = src_ns.as_ref().map(|ns| {
                    self.decide(Side::Egress, ns, &local, &peer, rules_src, &d, proto, port)
                });
                let i = self.decide(
                    Side::Ingress,
                    name,
                    &peer,
                    &local,
                    rules_src,
                    &d,
                    proto,
                    port,
                );
                (e, Some(i), Some((*name).to_owned()))
            }
            Place::Outside(addr) => {
                let d = Dst::Outside(Outside::Address(*addr));
                let e = src_ns.as_ref().map(|ns| {
                    self.decide(Side::Egress, ns, &local, &peer, rules_src, &d, proto, port)
                });
                (e, None, None)
            }
        };
        Judgement {
            egress,
            ingress,
            source: (source, src_ns),
            destination: (resolved.what, destination_namespace),
        }
    }

    /// The parts of `net` that the kernel tells apart: one per identity its addresses resolve
    /// to, each with one address to judge it by. Every address of one identity gets the same
    /// verdicts (docs/design.md#identities: named prefixes make "in `cidrs` minus `except`"
    /// exact per identity), so judging one address per part judges the whole CIDR.
    pub fn cidr_parts(&self, net: IpNet) -> Vec<CidrPart> {
        let inner: Vec<IpNet> = self.entries().filter(|e| inside(e, &net)).collect();
        let mut parts: Vec<(Identity, CidrPart)> = Vec::new();
        let mut add = |address: IpAddr, entries: usize| {
            let id = self.idents.lookup(address);
            match parts.iter_mut().find(|(i, _)| *i == id) {
                Some((_, p)) => p.entries += entries,
                None => parts.push((id, CidrPart { address, entries })),
            }
        };
        // The addresses of `net` no entry inside it claims, then each entry by an address of its
        // own (a single-address entry is its address; a prefix may hold longer entries).
        if let Some(a) = unclaimed(net, &inner) {
            add(a, 0);
        }
        for e in &inner {
            let own = if e.prefix_len() == e.max_prefix_len() {
                Some(e.network())
            } else {
                unclaimed(*e, &inner)
            };
            if let Some(a) = own {
                add(a, 1);
            }
        }
        let mut parts: Vec<CidrPart> = parts.into_iter().map(|(_, p)| p).collect();
        parts.sort_by_key(|p| p.address);
        parts
    }

    /// Every address-table entry as a prefix.
    fn entries(&self) -> impl Iterator<Item = IpNet> + '_ {
        let v4 = self
            .idents
            .ipv4
            .keys()
            .filter_map(|(a, l)| ipnet::Ipv4Net::new(*a, *l).ok().map(IpNet::V4));
        let v6 = self
            .idents
            .ipv6
            .keys()
            .filter_map(|(a, l)| ipnet::Ipv6Net::new(*a, *l).ok().map(IpNet::V6));
        v4.chain(v6)
    }
}

/// `pod NS/NAME (its addresses)`.
fn pod_name(p: &Pod) -> String {
    let ips: Vec<String> = p.ips.iter().map(ToString::to_string).collect();
    format!("pod {}/{} ({})", p.namespace, p.name, ips.join(", "))
}

/// Whether `e` is a strictly narrower prefix inside `net`.
fn inside(e: &IpNet, net: &IpNet) -> bool {
    e.prefix_len() > net.prefix_len() && net.contains(e)
}

/// A prefix's first and last address as numbers (IPv4 in the low 32 bits).
fn bounds(n: &IpNet) -> (u128, u128) {
    let num = |a: IpAddr| match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    };
    (num(n.network()), num(n.broadcast()))
}

/// The first address of `net` that no prefix of `entries` strictly inside it contains.
fn unclaimed(net: IpNet, entries: &[IpNet]) -> Option<IpAddr> {
    let (lo, hi) = bounds(&net);
    let mut claimed: Vec<(u128, u128)> = entries
        .iter()
        .filter(|e| inside(e, &net))
        .map(bounds)
        .collect();
    claimed.sort_unstable();
    let mut next = lo;
    for (a, b) in claimed {
        if a > next {
            break;
        }
        next = next.max(b.checked_add(1)?);
    }
    if next > hi {
        return None;
    }
    Some(match net {
        IpNet::V4(_) => IpAddr::V4(u32::try_from(next).ok()?.into()),
        IpNet::V6(_) => IpAddr::V6(next.into()),
    })
}

/// Explains one connection (validates the model's policy each call; use [`Evaluator`] for many).
pub fn explain(
    model: &ClusterModel,
    opts: &CompileOptions,
    src_namespace: &str,
    dst: &Destination,
    proto: u8,
    port: u16,
) -> Explanation {
    Evaluator::new(model, opts).explain(src_namespace, dst, proto, port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::file::parse_objects;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn unclaimed_addresses() {
        let e = [net("10.0.0.0/32"), net("10.0.0.1/32"), net("10.0.0.4/30")];
        assert_eq!(unclaimed(net("10.0.0.0/31"), &e), None);
        assert_eq!(
            unclaimed(net("10.0.0.0/29"), &e),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(
            unclaimed(net("10.0.0.4/30"), &e),
            Some("10.0.0.4".parse().unwrap())
        );
        assert_eq!(
            unclaimed(net("::/0"), &[net("::/1"), net("8000::/1")]),
            None
        );
    }

    #[test]
    fn a_cidr_is_split_by_identity() {
        // A named /16 whose first address is a pod: the pod, the rest of the /16, another pod
        // and the rest of the /8 are four identities.
        let m = parse_objects(
            r#"
apiVersion: v1
kind: Pod
metadata: {name: first, namespace: a}
status: {podIP: 10.1.0.0}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: b}
status: {podIP: 10.2.0.5}
---
apiVersion: bulkhead.dev/v1alpha1
kind: NamespaceFirewall
metadata: {name: default, namespace: a}
spec:
  egress: [{to: {cidrs: [10.1.0.0/16]}}]
"#,
        )
        .unwrap();
        let opts = CompileOptions::default();
        let ev = Evaluator::new(&m, &opts);
        let parts: Vec<(String, usize)> = ev
            .cidr_parts(net("10.0.0.0/8"))
            .into_iter()
            .map(|p| (p.address.to_string(), p.entries))
            .collect();
        let want = [
            ("10.0.0.0", 0),
            ("10.1.0.0", 1),
            ("10.1.0.1", 1),
            ("10.2.0.5", 1),
        ];
        let want: Vec<(String, usize)> = want.iter().map(|(a, n)| ((*a).to_owned(), *n)).collect();
        assert_eq!(parts, want);
    }
}
