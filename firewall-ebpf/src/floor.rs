//! `bench-floor`: reference programs for `cargo xtask bench --only floor`, never loaded by the
//! agent.
//!
//! bpf_stats' own timing is most of what an empty cgroup_skb program costs per run on a VM
//! (../shared/notes/datapath-cost.md), so an absolute per-run figure says little; the bench
//! attaches these programs the way the agent attaches its own (at the testbed cgroup root, one
//! at a time) and reports Bulkhead's cost above them:
//! - `floor_empty_egress` / `floor_empty_ingress`: `return 1`, the floor itself;
//! - `floor_lookup_egress` / `floor_lookup_ingress`: what the cheapest stateful firewall must do
//!   per packet: read a 5-tuple with direct packet access, one LRU hash lookup on it (insert on
//!   miss), one per-CPU counter increment;
//! - `piece_*_egress` / `piece_*_ingress` (`pieces.rs`): one operation each of the datapath's
//!   SYN path, for the `paths` stage's per-piece costs.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    not(target_arch = "bpf"),
    allow(unused_crate_dependencies, reason = "on the host this binary is empty")
)]

// On the host (workspace builds, clippy) this is an empty binary; the real build is
// `--target bpfel-unknown-none`, driven by firewall-agent's build.rs like the `firewall` object.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// The datapath's parser, compiled into this object as is, for the `parse` piece.
#[cfg(target_arch = "bpf")]
#[allow(
    dead_code,
    reason = "only `parse` is used here; the module is the datapath's, unchanged"
)]
mod packet;
#[cfg(target_arch = "bpf")]
mod pieces;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext as _,
        bindings::__sk_buff,
        macros::{cgroup_skb, map},
        maps::{LruHashMap, PerCpuArray},
        programs::SkBuffContext,
    };

    const PASS: i32 = 1;

    /// A 5-tuple the size of the datapath's conntrack key (40 bytes: IPv6 addresses, ports,
    /// protocol, padding), so the lookup hashes as many bytes as Bulkhead's does. Addresses are
    /// 32-bit words: filled by word loads at constant offsets, which the verifier checks one by
    /// one (a byte copy becomes a memcpy call over a packet pointer).
    #[repr(C)]
    #[derive(Clone, Copy)]
    #[allow(
        dead_code,
        reason = "the fields are read by the kernel's hash, not by Rust code"
    )]
    pub struct FloorKey {
        src: [u32; 4],
        dst: [u32; 4],
        sport: u16,
        dport: u16,
        proto: u8,
        pad: [u8; 3],
    }

    /// Flows seen (value: packets), sized like a small conntrack table.
    #[map(name = "FLOOR_FLOWS")]
    static FLOWS: LruHashMap<FloorKey, u64> = LruHashMap::with_max_entries(65_536, 0);

    /// One per-CPU counter, as the datapath counts every verdict.
    #[map(name = "FLOOR_COUNT")]
    static COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    #[cgroup_skb(egress)]
    pub fn floor_empty_egress(_ctx: SkBuffContext) -> i32 {
        PASS
    }

    #[cgroup_skb(ingress)]
    pub fn floor_empty_ingress(_ctx: SkBuffContext) -> i32 {
        PASS
    }

    #[cgroup_skb(egress)]
    pub fn floor_lookup_egress(ctx: SkBuffContext) -> i32 {
        lookup(&ctx)
    }

    #[cgroup_skb(ingress)]
    pub fn floor_lookup_ingress(ctx: SkBuffContext) -> i32 {
        lookup(&ctx)
    }

    /// The 5-tuple from the linear area (cgroup_skb's `data` is the network header); ports stay 0
    /// when the transport header is not in the linear area (a reference program needs no
    /// fallback). IPv4 options are not skipped (the bench's packets have none).
    ///
    /// Every bound is checked as `data + N > data_end` with N > 1: LLVM turns `data + 1 > end`
    /// into `data >= end`, from which the verifier learns no readable range.
    #[inline(always)]
    fn tuple(ctx: &SkBuffContext) -> Option<FloorKey> {
        let skb = ctx.as_ptr() as *const __sk_buff;
        // SAFETY: the kernel passes a valid __sk_buff; data/data_end are readable in cgroup_skb.
        let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
        // Every IP header is at least 20 bytes.
        if data + 20 > end {
            return None;
        }
        let word = |off: usize| -> u32 {
            // SAFETY: callers check data + off + 4 <= data_end first. The loads may be unaligned:
            // the verifier and x86 accept that for packet data.
            unsafe { *((data + off) as *const u32) }
        };
        let mut k = FloorKey {
            src: [0; 4],
            dst: [0; 4],
            sport: 0,
            dport: 0,
            proto: 0,
            pad: [0; 3],
        };
        // SAFETY: data + 20 <= data_end (checked above).
        let (version, proto4, proto6) = unsafe {
            (
                *(data as *const u8) >> 4,
                *((data + 9) as *const u8),
                *((data + 6) as *const u8),
            )
        };
        let l4 = match version {
            // Protocol at 9, addresses at 12 and 16.
            4 => {
                k.proto = proto4;
                k.src[0] = word(12);
                k.dst[0] = word(16);
                data + 20
            }
            // Next header at 6, addresses at 8 and 24.
            6 => {
                if data + 40 > end {
                    return None;
                }
                k.proto = proto6;
                k.src = [word(8), word(12), word(16), word(20)];
                k.dst = [word(24), word(28), word(32), word(36)];
                data + 40
            }
            _ => return None,
        };
        if l4 + 4 <= end {
            // SAFETY: bounds-checked just above.
            unsafe {
                k.sport = *(l4 as *const u16);
                k.dport = *((l4 + 2) as *const u16);
            }
        }
        Some(k)
    }

    #[inline(always)]
    fn lookup(ctx: &SkBuffContext) -> i32 {
        if let Some(k) = tuple(ctx) {
            match FLOWS.get_ptr_mut(&k) {
                // SAFETY: a map value pointer from the kernel, valid for this run.
                Some(v) => unsafe { *v += 1 },
                None => {
                    let _ = FLOWS.insert(&k, &1, 0);
                }
            }
        }
        if let Some(c) = COUNT.get_ptr_mut(0) {
            // SAFETY: a per-CPU array slot, ours for this run.
            unsafe { *c += 1 };
        }
        PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
