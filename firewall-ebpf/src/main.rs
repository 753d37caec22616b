//! Bulkhead's datapath: cgroup_skb egress/ingress programs attached at the cgroup v2 root (so
//! every pod cgroup below is covered) and cgroup/connect4|6 programs that refuse a denied TCP
//! connect() at the syscall, so a local sender fails fast instead of retrying a dropped SYN.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]
#![cfg_attr(
    not(target_arch = "bpf"),
    allow(
        unused_crate_dependencies,
        reason = "on the host this crate is an empty binary"
    )
)]

// On the host (workspace builds, clippy) this crate is an empty binary; the real build is
// `--target bpfel-unknown-none`, driven by firewall-agent's build.rs.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod conntrack;
#[cfg(target_arch = "bpf")]
mod counters;
#[cfg(target_arch = "bpf")]
mod datapath;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod identity;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod sockets;
