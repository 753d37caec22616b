//! The `bench-floor` reference programs (firewall-ebpf/src/floor.rs), loaded with aya and attached
//! at the testbed cgroup root exactly as the agent attaches its own (bpf_link,
//! `CgroupAttachMode::Single`), so the floor is measured on the same hook, the same packets and
//! the same accounting as Bulkhead.
use std::{fs::File, path::Path};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType},
};

/// Which reference program pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `return 1`.
    Empty,
    /// One LRU hash lookup on the 5-tuple (insert on miss) and one per-CPU counter increment.
    Lookup,
}

impl Variant {
    fn prefix(self) -> &'static str {
        match self {
            Variant::Empty => "floor_empty",
            Variant::Lookup => "floor_lookup",
        }
    }
}

/// A loaded, attached pair (egress + ingress); dropping it closes the links, which detaches both.
pub struct Attached {
    _ebpf: Ebpf,
}

/// Loads the `variant` pair from `object` and attaches it at `cgroup_root`.
pub fn attach(object: &Path, variant: Variant, cgroup_root: &Path) -> anyhow::Result<Attached> {
    let bytes = std::fs::read(object).with_context(|| format!("reading {}", object.display()))?;
    if bytes.is_empty() {
        anyhow::bail!(
            "{} is empty (built with AYA_BUILD_SKIP=1?): rebuild without it",
            object.display()
        );
    }
    let mut ebpf = Ebpf::load(&bytes).context("loading the bench-floor object")?;
    let dir = File::open(cgroup_root)
        .with_context(|| format!("opening cgroup {}", cgroup_root.display()))?;
    for (hook, ty) in [
        ("egress", CgroupSkbAttachType::Egress),
        ("ingress", CgroupSkbAttachType::Ingress),
    ] {
        let name = format!("{}_{hook}", variant.prefix());
        let prog: &mut CgroupSkb = ebpf
            .program_mut(&name)
            .with_context(|| format!("no program {name} in the bench-floor object"))?
            .try_into()
            .with_context(|| format!("{name} is not a cgroup_skb program"))?;
        prog.load().with_context(|| format!("loading {name}"))?;
        prog.attach(&dir, ty, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name} at {}", cgroup_root.display()))?;
    }
    Ok(Attached { _ebpf: ebpf })
}
