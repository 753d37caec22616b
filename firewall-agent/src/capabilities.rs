//! The Linux capabilities `firewall-agent run` needs, checked at start so a missing one is named
//! (with what it is for) instead of surfacing as a verifier `Permission denied` halfway through
//! loading. The DaemonSet grants exactly these (deploy/daemonset.yaml).
//!
//! CAP_SYS_ADMIN covers CAP_BPF and CAP_PERFMON (the kernel's `bpf_capable()` and
//! `perfmon_capable()` accept it), so a privileged container passes too.

/// One capability the agent needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needed {
    /// `CAP_...` name.
    pub name: &'static str,
    /// Bit number in the capability sets.
    pub bit: u32,
    /// What the agent does with it.
    pub why: &'static str,
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Everything `run` needs.
pub const NEEDED: [Needed; 3] = [
    Needed {
        name: "CAP_BPF",
        bit: CAP_BPF,
        why: "create the maps and load the programs",
    },
    Needed {
        name: "CAP_NET_ADMIN",
        bit: CAP_NET_ADMIN,
        why: "attach cgroup_skb programs (networking program types)",
    },
    Needed {
        name: "CAP_PERFMON",
        bit: CAP_PERFMON,
        why: "let the verifier accept the programs' pointer arithmetic on packet and map data",
    },
];

/// A capability `run` needs is not in the effective set.
#[derive(Debug, thiserror::Error)]
#[error(
    "missing capability {}: needed to {} (grant it, e.g. in the DaemonSet's securityContext.capabilities.add; the agent needs {})",
    .0.name, .0.why, NEEDED.map(|n| n.name).join(", ")
)]
pub struct Missing(pub Needed);

/// The effective capability set from `/proc/self/status` text.
pub fn effective(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The first needed capability missing from `effective`.
pub fn check(effective: u64) -> Result<(), Missing> {
    let has = |bit: u32| effective & (1 << bit) != 0;
    for n in NEEDED {
        let covered = match n.bit {
            CAP_BPF | CAP_PERFMON => has(n.bit) || has(CAP_SYS_ADMIN),
            bit => has(bit),
        };
        if !covered {
            return Err(Missing(n));
        }
    }
    Ok(())
}

/// Checks this process; an unreadable status is not an error (the kernel will say).
pub fn check_self() -> Result<(), Missing> {
    match std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective)
    {
        Some(eff) => check(eff),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn bits(list: &[u32]) -> u64 {
        let mut v = 0;
        let mut i = 0;
        while i < list.len() {
            v |= 1 << list[i];
            i += 1;
        }
        v
    }

    #[test]
    fn names_the_missing_capability() {
        assert!(check(bits(&[CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON])).is_ok());
        assert!(check(bits(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])).is_ok());
        let e = check(bits(&[CAP_BPF, CAP_NET_ADMIN])).unwrap_err();
        assert_eq!(e.0.name, "CAP_PERFMON");
        assert!(
            e.to_string()
                .starts_with("missing capability CAP_PERFMON: needed to")
        );
        assert_eq!(
            check(bits(&[CAP_BPF, CAP_PERFMON])).unwrap_err().0.name,
            "CAP_NET_ADMIN"
        );
        assert_eq!(check(0).unwrap_err().0.name, "CAP_BPF");
        assert_eq!(
            effective("Name:\ta\nCapEff:\t000001fffeffffff\n"),
            Some(0x1fffeffffff)
        );
    }
}
