//! Explains the verdict for one connection, naming the deciding rule on each side
//! (`firewall-agent check`, and the reference the compiled maps are tested against).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use firewall_common::{IDENTITY_F_DNS, Identity, Mode, PolicyVerdict, Side, exemption};

use super::{
    CompileOptions,
    evaluate::{Decision, Dst, Outside, Plan, Src, Step},
    identities::{Identities, IdentityKind, namespace_names},
    ids::IdAllocator,
    modes,
    policy_set::PolicySet,
};
use crate::{
    model::{ClusterModel, Rejection},
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
    /// An address, resolved as the kernel would: pod IP, cluster IP, node address, else world.
    Address(IpAddr),
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

/// What a destination resolves to: its identity (as the kernel sees it) and how to name it.
struct Resolved<'a> {
    identity: Identity,
    place: Place<'a>,
    what: String,
}

/// Where a destination is, as the rules see it.
enum Place<'a> {
    /// An endpoint of a namespace selected by these (referenced) Services.
    Namespace(&'a str, &'a BTreeSet<String>),
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
    modes: BTreeMap<String, Mode>,
    default_mode: Mode,
}

impl<'m> Evaluator<'m> {
    /// Validates the model's policy once and gives its endpoints identities, as a compile does.
    pub fn new(model: &'m ClusterModel, opts: &'m CompileOptions) -> Self {
        // Judged alone: a refused object is shown by its fail-closed stand-in.
        let set = PolicySet::in_force(model, &mut LastAccepted::default());
        let idents = Identities::build(model, &set, opts, &mut IdAllocator::default());
        let names = namespace_names(model);
        let (modes, _) = modes::namespace_modes(model, &set, opts, &names, &mut Default::default());
        let modes = modes.into_iter().map(|(n, m)| (n, m.mode)).collect();
        let default_mode = modes::default_mode(&set, opts).mode;
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
        }
    }

    /// Policy objects that are not applied (undeserializable, invalid, conflicting defaults).
    pub fn rejected(&self) -> &[Rejection] {
        &self.set.rejected
    }

    /// The mode of a namespace.
    pub fn mode(&self, ns: &str) -> Mode {
        self.modes.get(ns).copied().unwrap_or(self.default_mode)
    }

    fn namespace_id(&self, name: &str) -> Option<u32> {
        self.idents.ns_ids.get(name).copied()
    }

    /// A named destination: a pod of `name` selected by `services`.
    fn resolve_named<'a>(
        &self,
        src: &Identity,
        src_name: &str,
        name: &'a str,
        services: &'a BTreeSet<String>,
    ) -> Resolved<'a> {
        let ns = match self.namespace_id(name) {
            Some(id) => id,
            None if name == src_name => src.ns,
            None => UNKNOWN_NS - 1,
        };
        let (dns_ns, dns_name) = &self.opts.dns_service;
        let dns = dns_ns == name && services.contains(dns_name);
        Resolved {
            identity: Identity {
                id: ns,
                ns,
                flags: if dns { IDENTITY_F_DNS } else { 0 },
            },
            place: Place::Namespace(name, services),
            what: format!("namespace {name}"),
        }
    }

    /// An address, resolved through the same tries the kernel looks up.
    fn resolve_address(&self, ip: IpAddr) -> Resolved<'_> {
        let identity = self.idents.lookup(ip);
        let kind = self.idents.kinds.get(&identity.id).map(|k| &k.1);
        let (place, what) = match kind {
            Some(IdentityKind::Namespace { name, services }) => {
                (Place::Namespace(name, services), self.endpoint_name(ip))
            }
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

    fn side(&self, d: Decision, mode: Mode) -> SideDecision {
        let verdict = d.value.0;
        let policy = self
            .set
            .rules
            .get(d.value.1 as usize)
            .cloned()
            .unwrap_or_else(|| "default".to_owned());
        SideDecision {
            verdict,
            policy,
            step: d.step,
            mode,
        }
    }

    fn exempt(&self, step: Step, mode: Mode) -> SideDecision {
        SideDecision {
            verdict: PolicyVerdict::Allow,
            policy: "default".to_owned(),
            step,
            mode,
        }
    }

    /// One side's decision: an exemption, else the plan's.
    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        side: Side,
        local: &Identity,
        peer: &Identity,
        src: Src<'_>,
        dst: &Dst<'_>,
        proto: u8,
        port: u16,
        mode: Mode,
    ) -> SideDecision {
        match exemption(side, local, peer, proto, port) {
            Some(e) => self.exempt(e.into(), mode),
            None => self.side(
                Plan::new(&self.set, side, src, dst).decide(proto, port),
                mode,
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
        let empty = BTreeMap::new();
        let src = Src {
            name: src_namespace,
            labels: self.labels.get(src_namespace).unwrap_or(&empty),
            rules: self.set.namespaces.get(src_namespace),
        };
        let src_ns = self.namespace_id(src_namespace).unwrap_or(UNKNOWN_NS);
        let local = Identity {
            id: src_ns,
            ns: src_ns,
            flags: 0,
        };
        let src_mode = self.mode(src_namespace);
        let named;
        let resolved = match dst {
            Destination::Namespace { name, services } => {
                named = services.iter().cloned().collect();
                self.resolve_named(&local, src_namespace, name, &named)
            }
            Destination::Address(ip) => self.resolve_address(*ip),
        };
        let peer = resolved.identity;
        let (egress, ingress, destination_namespace) = match resolved.place {
            Place::Namespace(name, services) => {
                let d = Dst::Namespace {
                    name,
                    labels: self.labels.get(name).unwrap_or(&empty),
                    services,
                    rules: self.set.namespaces.get(name),
                };
                let dst_mode = self.mode(name);
                let e = self.decide(Side::Egress, &local, &peer, src, &d, proto, port, src_mode);
                let i = self.decide(Side::Ingress, &peer, &local, src, &d, proto, port, dst_mode);
                (e, Some(i), Some(name.to_owned()))
            }
            Place::Outside(addr) => {
                let d = Dst::Outside(Outside::Address(addr));
                let e = self.decide(Side::Egress, &local, &peer, src, &d, proto, port, src_mode);
                (e, None, None)
            }
        };
        let drops = |s: &SideDecision| s.verdict == PolicyVerdict::Deny && s.mode == Mode::Enforce;
        let dropped = drops(&egress) || ingress.as_ref().is_some_and(drops);
        Explanation {
            source_namespace: src_namespace.to_owned(),
            destination: resolved.what,
            destination_namespace,
            egress,
            ingress,
            dropped,
        }
    }
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
