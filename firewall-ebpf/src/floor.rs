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
//!   miss), one per-CPU counter increment.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(
    not(target_arch = "bpf"),
    allow(unused_crate_dependencies, reason = "on the host this binary is empty")
)]
#![cfg_attr(
    target_arch = "bpf",
    allow(
        unused_crate_dependencies,
        reason = "the floor programs use none of the datapath's shared types"
    )
)]

// On the host (workspace builds, clippy) this is an empty binary; the real build is
// `--target bpfel-unknown-none`, driven by firewall-agent's build.rs like the `firewall` object.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

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
    /// protocol, padding), so the lookup hashes as many bytes as Bulkhead's does.
    #[repr(C)]
    #[derive(Clone, Copy)]
    #[allow(
        dead_code,
        reason = "the fields are read by the kernel's hash, not by Rust code"
    )]
    pub struct FloorKey {
        src: [u8; 16],
        dst: [u8; 16],
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
    /// fallback).
    #[inline(always)]
    fn tuple(ctx: &SkBuffContext) -> Option<FloorKey> {
        let skb = ctx.as_ptr() as *const __sk_buff;
        // SAFETY: the kernel passes a valid __sk_buff; data/data_end are readable in cgroup_skb.
        let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
        let mut k = FloorKey {
            src: [0; 16],
            dst: [0; 16],
            sport: 0,
            dport: 0,
            proto: 0,
            pad: [0; 3],
        };
        if data + 1 > end {
            return None;
        }
        // IPv4: protocol at 9, addresses at 12 (4 bytes each), 20-byte header (options ignored);
        // IPv6: next header at 6, addresses at 8 (16 bytes each), 40-byte header.
        // SAFETY: data + 1 <= data_end was checked above.
        let l4 = match unsafe { *(data as *const u8) } >> 4 {
            4 => addresses(&mut k, data, end, 9, 12, 4)?,
            6 => addresses(&mut k, data, end, 6, 8, 16)?,
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

    /// Fills the protocol and both addresses (`len` bytes each, source at `src`, destination
    /// right after it) of the IP header at `data`; returns where the transport header starts.
    /// Inlined, so the verifier sees constant offsets.
    #[inline(always)]
    fn addresses(
        k: &mut FloorKey,
        data: usize,
        end: usize,
        proto: usize,
        src: usize,
        len: usize,
    ) -> Option<usize> {
        let header = src + 2 * len;
        if data + header > end {
            return None;
        }
        // SAFETY: the whole header is within data_end (checked just above).
        unsafe {
            k.proto = *((data + proto) as *const u8);
            core::ptr::copy_nonoverlapping((data + src) as *const u8, k.src.as_mut_ptr(), len);
            core::ptr::copy_nonoverlapping(
                (data + src + len) as *const u8,
                k.dst.as_mut_ptr(),
                len,
            );
        }
        Some(data + header)
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
