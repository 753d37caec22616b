//! This node's own interface addresses. The Node object lists only its InternalIP and ExternalIP,
//! while on a bridge CNI (flannel, the bridge plugin) the node reaches its pods from the pod
//! network's gateway address on `cni0`: kubelet probes come from there. The agent runs in the
//! host's network namespace (hostNetwork), so every address it sees is the node's.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Every address configured on this network namespace's interfaces, loopback excluded.
pub fn local_addresses() -> io::Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; the list is freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: `ifa_addr` is null or points to a sockaddr of its `sa_family`.
        if let Some(ip) = unsafe { address(ifa.ifa_addr) }
            && !ip.is_loopback()
        {
            out.push(ip);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The IP address of a socket address, if it is one.
///
/// # Safety
/// `sa` is null or points to a socket address as large as its family's.
unsafe fn address(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null, as the caller guarantees a valid sockaddr.
    let family = i32::from(unsafe { (*sa).sa_family });
    match family {
        libc::AF_INET => {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*sa.cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))))
        }
        libc::AF_INET6 => {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*sa.cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_addresses_without_loopback() {
        let all = local_addresses().expect("getifaddrs");
        assert!(all.iter().all(|ip| !ip.is_loopback()), "{all:?}");
        let mut sorted = all.clone();
        sorted.dedup();
        assert_eq!(sorted, all);
    }
}
