//! The pieces of a SYN's new-connection path, one program each (issue 14: "say what the
//! remaining cost is, measured, per piece"), timed by `pathcost` (`cargo xtask bench --only
//! paths`) on the SYN's frame against the empty program, exactly like the paths.
//!
//! Each program does one operation the datapath's SYN path performs, the way `datapath.rs` and
//! its modules do it, then returns: 1 when its lookup found an entry (or always, for pieces
//! without one) and 0 on a miss, so `pathcost` can check that the piece hit or missed exactly
//! as Bulkhead's lookup with the same key does. Each piece has its own map, declared like the
//! datapath's (`maps.rs`: same type, key and value types, flags), and `pathcost` loads them with
//! the same `max_entries` as Bulkhead's loaded maps and copies every entry of those into them.
//!
//! Keys: the lookup pieces read the SYN's values from the one-entry [`INPUT`] array (see
//! [`PieceInput`]) rather than parse the frame, because most keys come from earlier lookups
//! (identities), not from the packet; the key is then built with the datapath's own functions
//! (`ipv4_key`, `policy_key`, `ct_key`, ...). The `input` piece times that array read alone, so
//! it can be subtracted. The `parse` piece is the datapath's own parser (`packet.rs`, compiled
//! into this object as is).
use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::{bpf_skb_cgroup_id, generated::bpf_ktime_get_coarse_ns},
    macros::{cgroup_skb, map},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, lpm_trie::Key},
    programs::SkBuffContext,
};
use core::{
    mem::MaybeUninit,
    ptr::{read_volatile, write_volatile},
};
use firewall_common::{
    CgroupKey, Counter, CtKey, CtValue, IPV4_KEY_BITS, IPV6_KEY_BITS, Identity, IpV4Key, IpV6Key,
    ModeKey, POLICY_PREFIX_FULL, PolicyKey, PolicyValue, SETTING_ACTIVE_SLOT, SETTINGS_LEN, Side,
    bench::PieceInput, capacity, ct_key, ipv4_key, ipv6_key, ipv6_octets, policy_key,
};

use crate::packet;

/// The SYN's values (written by `pathcost` before each piece's timing).
#[map(name = "P_INPUT")]
static INPUT: Array<PieceInput> = Array::with_max_entries(1, 0);

// The datapath's maps (maps.rs), one copy each. `max_entries` here are the defaults; `pathcost`
// sets each to the loaded Bulkhead map's.
#[map(name = "P_SETTINGS")]
static SETTINGS: Array<u32> = Array::with_max_entries(SETTINGS_LEN, 0);
#[map(name = "P_CGROUPS")]
static CGROUPS: HashMap<CgroupKey, Identity> = HashMap::with_max_entries(capacity::CGROUPS, 0);
#[map(name = "P_IPV4")]
static IPV4: LpmTrie<IpV4Key, Identity> = LpmTrie::with_max_entries(capacity::IPV4, 0);
#[map(name = "P_IPV6")]
static IPV6: LpmTrie<IpV6Key, Identity> = LpmTrie::with_max_entries(capacity::IPV6, 0);
#[map(name = "P_POLICY")]
static POLICY: LpmTrie<PolicyKey, PolicyValue> = LpmTrie::with_max_entries(capacity::POLICY, 0);
#[map(name = "P_MODES")]
static MODES: HashMap<ModeKey, u32> = HashMap::with_max_entries(capacity::MODES, 0);
#[map(name = "P_CONNTRACK")]
static CONNTRACK: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(capacity::CONNTRACK, 0);
#[map(name = "P_COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(capacity::COUNTERS, 0);

/// 1 when found, 0 when not: what `pathcost` checks against Bulkhead's map.
#[inline(always)]
fn found<T>(v: Option<T>) -> i32 {
    v.is_some() as i32
}

/// The SYN's values, copied out as the datapath holds its tuple and identities on its stack.
#[inline(always)]
fn input() -> Option<PieceInput> {
    INPUT.get(0).copied()
}

/// The side as the datapath's functions take it.
#[inline(always)]
fn side(i: &PieceInput) -> Side {
    if i.side == Side::Ingress as u32 {
        Side::Ingress
    } else {
        Side::Egress
    }
}

/// One egress and one ingress program per piece: each is timed against the empty program of
/// its SYN's hook, like the paths.
macro_rules! piece {
    ($egress:ident, $ingress:ident, $body:ident) => {
        #[cgroup_skb(egress)]
        pub fn $egress(ctx: SkBuffContext) -> i32 {
            $body(&ctx)
        }

        #[cgroup_skb(ingress)]
        pub fn $ingress(ctx: SkBuffContext) -> i32 {
            $body(&ctx)
        }
    };
}

piece!(piece_input_egress, piece_input_ingress, input_only);
piece!(piece_parse_egress, piece_parse_ingress, parse);
piece!(piece_cgroup_id_egress, piece_cgroup_id_ingress, cgroup_id);
piece!(piece_settings_egress, piece_settings_ingress, settings);
piece!(piece_cgroups_egress, piece_cgroups_ingress, cgroups);
piece!(piece_remote_egress, piece_remote_ingress, remote);
piece!(piece_policy_egress, piece_policy_ingress, policy);
piece!(piece_modes_egress, piece_modes_ingress, modes);
piece!(piece_ct_lookup_egress, piece_ct_lookup_ingress, ct_lookup);
piece!(piece_clock_egress, piece_clock_ingress, clock);
piece!(piece_ct_insert_egress, piece_ct_insert_ingress, ct_insert);
piece!(piece_counter_egress, piece_counter_ingress, counter);

/// The input read alone (what every keyed piece pays on top of its operation).
#[inline(always)]
fn input_only(_ctx: &SkBuffContext) -> i32 {
    match input() {
        Some(i) => {
            // SAFETY: reading a local; volatile so the copy is not optimized away.
            let _ = unsafe { read_volatile(&i.slot) };
            1
        }
        None => 0,
    }
}

/// `packet::parse` as `on_packet` calls it (the in-place parser for the SYN). The packet is
/// stored to the stack with a volatile write, as the datapath keeps it for its later steps:
/// otherwise the compiler would drop every field read that nothing uses.
#[inline(always)]
fn parse(ctx: &SkBuffContext) -> i32 {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: reading a context field.
    let protocol = unsafe { (*skb).protocol };
    match packet::parse(ctx, protocol) {
        Ok(pkt) => {
            let mut kept = MaybeUninit::<packet::Packet>::uninit();
            // SAFETY: writing a whole value to a local.
            unsafe { write_volatile(kept.as_mut_ptr(), pkt) };
            1
        }
        Err(_) => 0,
    }
}

/// `bpf_skb_cgroup_id`, as `on_packet` reads the local pod's cgroup.
#[inline(always)]
fn cgroup_id(ctx: &SkBuffContext) -> i32 {
    // SAFETY: the program's context pointer.
    let id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr() as *mut __sk_buff) };
    (id != 0) as i32
}

/// One SETTINGS read, as `identity::active_slot` (and `flow_log_all`) do it.
#[inline(always)]
fn settings(_ctx: &SkBuffContext) -> i32 {
    found(SETTINGS.get(SETTING_ACTIVE_SLOT).map(|s| *s & 1))
}

/// `identity::local`: the local pod by cgroup id and slot.
#[inline(always)]
fn cgroups(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    let key = CgroupKey {
        cgroup_id: i.cgroup_id,
        slot: i.slot,
        pad: 0,
    };
    // SAFETY: plain-data value copied out at once.
    found(unsafe { CGROUPS.get(&key).copied() })
}

/// `identity::remote` of the peer address (`on_packet`'s `peer_addr`): an LPM walk of the
/// IPv4 or IPv6 trie.
#[inline(always)]
fn remote(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    let t = &i.tuple;
    let addr = if side(&i) == Side::Egress {
        &t.daddr
    } else {
        &t.saddr
    };
    let slot = i.slot as u8;
    if t.family == 4 {
        let key = Key::new(IPV4_KEY_BITS, ipv4_key(slot, addr[0].to_ne_bytes()));
        found(IPV4.get(&key).copied())
    } else {
        let key = Key::new(IPV6_KEY_BITS, ipv6_key(slot, ipv6_octets(addr)));
        found(IPV6.get(&key).copied())
    }
}

/// `policy::lookup` of one side (the input's side, local and peer identities).
#[inline(always)]
fn policy(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    let t = &i.tuple;
    let key = Key::new(
        POLICY_PREFIX_FULL,
        policy_key(
            i.slot as u8,
            i.side as u8,
            i.local,
            i.peer,
            t.proto,
            t.dport,
        ),
    );
    found(POLICY.get(&key).copied())
}

/// `identity::mode`'s MODES lookup (not on an allowed SYN's path since the datapath skips it;
/// timed for the denied and flow-logged ones).
#[inline(always)]
fn modes(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    let key = ModeKey {
        ns: i.ns,
        slot: i.slot,
    };
    // SAFETY: plain-data value copied out at once.
    found(unsafe { MODES.get(&key).copied() })
}

/// `conntrack::find`'s lookup of a TCP key (no clock: TCP entries do not expire), as
/// `conntrack::opened_by_source` does it on ingress.
#[inline(always)]
fn ct_lookup(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    found(CONNTRACK.get_ptr_mut(&ct_key(side(&i), &i.tuple)))
}

/// The coarse clock alone (`conntrack::Clock::now`'s first read).
#[inline(always)]
fn clock(_ctx: &SkBuffContext) -> i32 {
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    (now != 0) as i32
}

/// `conntrack::insert` as `track` does it for the SYN: the LRU update, with no clock (a TCP
/// entry's timestamps are 0; the clock is the `clock` piece, paid by UDP and ICMP inserts). The
/// SYN's key is already there, as it is when Bulkhead's SYN repeats.
#[inline(always)]
fn ct_insert(_ctx: &SkBuffContext) -> i32 {
    let Some(i) = input() else { return 0 };
    let now = 0;
    let v = CtValue {
        created_ns: now,
        seen_ns: now,
        side: i.side as u8,
        pad: [0; 7],
    };
    CONNTRACK.insert(&ct_key(side(&i), &i.tuple), &v, 0).is_ok() as i32
}

/// `counters::count` of the verdict a SYN counts.
#[inline(always)]
fn counter(_ctx: &SkBuffContext) -> i32 {
    if let Some(p) = COUNTERS.get_ptr_mut(Counter::PolicyAllow as u32) {
        // SAFETY: per-CPU slot from a successful lookup; no other writer on this CPU meanwhile.
        unsafe { *p += 1 };
    }
    1
}
