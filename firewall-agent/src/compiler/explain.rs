//! Explains the verdict for one connection, naming the deciding rule on each side
//! (`firewall-agent check`, and the reference the compiled maps are tested against).
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

use firewall_common::{Mode, PolicyVerdict, Side};

use super::{
    CompileOptions,
    evaluate::{Decision, Dst, Outside, Plan, Src, Step},
    identities::{namespace_names, pod_services},
    modes,
    policy_set::PolicySet,
};
use crate::model::{ClusterModel, Rejection};

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

/// What an address or a named destination resolves to.
enum Resolved {
    Namespace {
        name: String,
        services: BTreeSet<String>,
        dns: bool,
        what: String,
    },
    Outside {
        addr: IpAddr,
        what: String,
    },
}

/// Validated policy of one model, reusable across many explanations.
pub struct Evaluator<'m> {
    model: &'m ClusterModel,
    opts: &'m CompileOptions,
    set: PolicySet,
    labels: BTreeMap<String, BTreeMap<String, String>>,
    modes: BTreeMap<String, Mode>,
    default_mode: Mode,
}

impl<'m> Evaluator<'m> {
    /// Validates the model's policy once.
    pub fn new(model: &'m ClusterModel, opts: &'m CompileOptions) -> Self {
        let set = PolicySet::build(model);
        let names = namespace_names(model);
        let modes = modes::namespace_modes(model, &set, opts, &names);
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

    fn is_dns(&self, ns: &str, svc: &str) -> bool {
        self.opts.dns_service.0 == ns && self.opts.dns_service.1 == svc
    }

    fn resolve(&self, dst: &Destination) -> Resolved {
        let model = self.model;
        match dst {
            Destination::Namespace { name, services } => Resolved::Namespace {
                name: name.clone(),
                services: services.iter().cloned().collect(),
                dns: services.iter().any(|s| self.is_dns(name, s)),
                what: format!("namespace {name}"),
            },
            Destination::Address(ip) => {
                if let Some(pod) = model
                    .pods
                    .iter()
                    .find(|p| p.is_endpoint() && p.ips.contains(ip))
                {
                    let dns = model
                        .services
                        .iter()
                        .any(|s| self.is_dns(&s.namespace, &s.name) && s.selects(pod));
                    return Resolved::Namespace {
                        name: pod.namespace.clone(),
                        services: pod_services(model, &self.set, pod),
                        dns,
                        what: format!("pod {}/{} ({ip})", pod.namespace, pod.name),
                    };
                }
                if let Some(svc) = model.services.iter().find(|s| s.cluster_ips.contains(ip)) {
                    let referenced = self
                        .set
                        .referenced_services
                        .contains(&(svc.namespace.clone(), svc.name.clone()));
                    return Resolved::Namespace {
                        name: svc.namespace.clone(),
                        services: if referenced {
                            BTreeSet::from([svc.name.clone()])
                        } else {
                            BTreeSet::new()
                        },
                        dns: self.is_dns(&svc.namespace, &svc.name),
                        what: format!("service {}/{} ({ip})", svc.namespace, svc.name),
                    };
                }
                let host = model.nodes.iter().any(|n| n.addresses.contains(ip))
                    || model
                        .pods
                        .iter()
                        .any(|p| p.host_network && !p.terminal && p.ips.contains(ip));
                let what = if host {
                    format!("host {ip}")
                } else {
                    format!("world {ip}")
                };
                Resolved::Outside { addr: *ip, what }
            }
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
        let src_mode = self.mode(src_namespace);
        let resolved = self.resolve(dst);
        let is_dns_port = port == 53 && (proto == 6 || proto == 17);
        let (egress, ingress, destination, destination_namespace) = match &resolved {
            Resolved::Namespace {
                name,
                services,
                dns,
                what,
            } => {
                let dst_mode = self.mode(name);
                let (e, i) = if name == src_namespace {
                    (
                        self.exempt(Step::SameNamespace, src_mode),
                        self.exempt(Step::SameNamespace, dst_mode),
                    )
                } else if *dns && is_dns_port {
                    (
                        self.exempt(Step::Dns, src_mode),
                        self.exempt(Step::Dns, dst_mode),
                    )
                } else {
                    let d = Dst::Namespace {
                        name,
                        labels: self.labels.get(name).unwrap_or(&empty),
                        services,
                        rules: self.set.namespaces.get(name),
                    };
                    let e = Plan::new(&self.set, Side::Egress, src, &d).decide(proto, port);
                    let i = Plan::new(&self.set, Side::Ingress, src, &d).decide(proto, port);
                    (self.side(e, src_mode), self.side(i, dst_mode))
                };
                (e, Some(i), what.clone(), Some(name.clone()))
            }
            Resolved::Outside { addr, what } => {
                let d = Dst::Outside(Outside::Address(*addr));
                let e = Plan::new(&self.set, Side::Egress, src, &d).decide(proto, port);
                (self.side(e, src_mode), None, what.clone(), None)
            }
        };
        let drops = |s: &SideDecision| s.verdict == PolicyVerdict::Deny && s.mode == Mode::Enforce;
        let dropped = drops(&egress) || ingress.as_ref().is_some_and(drops);
        Explanation {
            source_namespace: src_namespace.to_owned(),
            destination,
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
