//! The verdict cache of established TCP sockets (docs/design.md#connections, step 0).
//!
//! Once conntrack has vouched for a packet of a synchronized TCP socket, the socket's own storage
//! remembers it, and its later packets pass on one socket-storage lookup: no parsing, no
//! conntrack, no identity. That is sound because
//! - it only ever repeats conntrack's answer for the same connection: an entry names the
//!   connection (local port, remote address and port) and must match the socket as the kernel
//!   sees it now, and only sockets whose handshake is done count (a SYN is never cached, so a
//!   policy change still applies to every new connection at once);
//! - the packets it passes are the TCP stack's own: on egress built by it for this socket, on
//!   ingress already matched by it to this socket, so never a fragment (reassembled before TCP,
//!   never produced by it) nor a truncated header (TCP checks its header before demultiplexing);
//! - an entry lives and dies with its socket and with the map: a restarted agent that adopts the
//!   pinned maps adopts the cache with the conntrack it repeats; one that starts fresh creates
//!   a new, empty map, so nothing cached by the old state survives.
use core::ptr::{addr_of, addr_of_mut, from_ref, null_mut, read_volatile, write_volatile};

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        __sk_buff, BPF_SK_STORAGE_GET_F_CREATE, BPF_TCP_CLOSE_WAIT, BPF_TCP_CLOSING,
        BPF_TCP_ESTABLISHED, BPF_TCP_FIN_WAIT1, BPF_TCP_FIN_WAIT2, BPF_TCP_LAST_ACK, bpf_sock,
    },
    helpers::generated::{bpf_sk_fullsock, bpf_sk_storage_get, bpf_tcp_sock},
    programs::SkBuffContext,
};
use firewall_common::{Side, SocketVerdict};

use crate::{maps::SOCKETS, packet};

/// Segments a connection must have exchanged before its socket gets an entry. Creating socket
/// storage allocates, which costs a short connection (connect, request, reply, close: a handful
/// of segments) more than the cache would ever save it; a long one pays it once and then passes
/// every packet on one lookup.
const CACHE_AFTER_SEGS: u32 = 16;

/// The connection a socket is in, as its entry names it.
struct Connection {
    dst_ip: [u32; 4],
    src_port: u16,
    dst_port: u16,
}

/// A TCP packet's socket when it is in a state where a TCP socket's handshake is done and it is
/// not closed yet (it exchanges data or FINs with one peer), else null. Not an `Option`: the
/// verifier refuses to spill the unset payload of a `None`.
pub struct Socket(*mut bpf_sock);

/// The packet's [`Socket`]. Only TCP packets (read in place, see [`packet::plain_tcp`]) look:
/// a connected UDP socket is in a state this accepts, and would pay a storage lookup for
/// nothing. Only the socket's common part is read, without `bpf_sk_fullsock` and without
/// checking that it is TCP: [`vouched`] needs no more, because only [`remember`] creates an
/// entry and it does so on full TCP sockets alone, and `bpf_sk_storage_get` itself finds nothing
/// on a socket that is not a full one.
#[inline(always)]
pub fn socket(ctx: &SkBuffContext, protocol_be: u32) -> Socket {
    let skb = ctx.as_ptr() as *mut __sk_buff;
    // SAFETY: reading a context field; the verifier checks every access to `sk` below.
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() || !packet::plain_tcp(ctx, protocol_be) {
        return Socket(null_mut());
    }
    // SAFETY: `sk` is the skb's (non-null) socket pointer; `state` is in its common part.
    let state = unsafe { read_volatile(addr_of!((*sk).state)) };
    if matches!(
        state,
        BPF_TCP_ESTABLISHED
            | BPF_TCP_FIN_WAIT1
            | BPF_TCP_FIN_WAIT2
            | BPF_TCP_CLOSE_WAIT
            | BPF_TCP_CLOSING
            | BPF_TCP_LAST_ACK
    ) {
        Socket(sk)
    } else {
        Socket(null_mut())
    }
}

/// The connection `sk` is in, read only once an entry is there to compare it with (or to
/// write).
#[inline(always)]
fn connection(sk: *mut bpf_sock) -> Connection {
    // The verifier allows no arithmetic on a socket pointer: each field is read on its own.
    // SAFETY: `sk` is a non-null socket pointer; these fields are in its common part.
    unsafe {
        let dst_ip = if read_volatile(addr_of!((*sk).family)) == 2 {
            [read_volatile(addr_of!((*sk).dst_ip4)), 0, 0, 0]
        } else {
            [
                read_volatile(addr_of!((*sk).dst_ip6[0])),
                read_volatile(addr_of!((*sk).dst_ip6[1])),
                read_volatile(addr_of!((*sk).dst_ip6[2])),
                read_volatile(addr_of!((*sk).dst_ip6[3])),
            ]
        };
        Connection {
            dst_ip,
            // `src_port` is host order in a u32, `dst_port` network order in a u16.
            src_port: read_volatile(addr_of!((*sk).src_port)) as u16,
            dst_port: u16::from_be(read_volatile(addr_of!((*sk).dst_port))),
        }
    }
}

#[inline(always)]
fn storage(sk: *mut bpf_sock, create: bool) -> *mut SocketVerdict {
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    // SAFETY: `sk` is a full socket; the map is socket storage of `SocketVerdict`.
    unsafe {
        bpf_sk_storage_get(
            from_ref(&SOCKETS).cast_mut().cast(),
            sk.cast(),
            null_mut(),
            flags,
        )
    }
    .cast()
}

/// Does the entry `v` name the connection `conn`?
///
/// # Safety
/// `v` must be a socket storage pointer valid for this program run.
#[inline(always)]
unsafe fn names(v: *const SocketVerdict, conn: &Connection) -> bool {
    // SAFETY: see the function's contract.
    unsafe {
        read_volatile(addr_of!((*v).src_port)) == conn.src_port
            && read_volatile(addr_of!((*v).dst_port)) == conn.dst_port
            && read_volatile(addr_of!((*v).dst_ip[0])) == conn.dst_ip[0]
            && read_volatile(addr_of!((*v).dst_ip[1])) == conn.dst_ip[1]
            && read_volatile(addr_of!((*v).dst_ip[2])) == conn.dst_ip[2]
            && read_volatile(addr_of!((*v).dst_ip[3])) == conn.dst_ip[3]
    }
}

/// Has conntrack already vouched for this packet's connection on `side` (a socket cached by
/// [`remember`] that is still in that connection)?
#[inline(always)]
pub fn vouched(s: &Socket, side: Side) -> bool {
    if s.0.is_null() {
        return false;
    }
    let v = storage(s.0, false);
    if v.is_null() {
        return false;
    }
    // SAFETY: `v` is this socket's storage, valid for this program run. Another CPU may be
    // rewriting it (see `remember`): `sides` is read first, then the connection.
    unsafe { read_volatile(addr_of!((*v).sides)) & side as u8 != 0 && names(v, &connection(s.0)) }
}

/// Remembers on the packet's socket that conntrack vouched for its connection on `side`.
/// Best effort: without storage, later packets take conntrack.
#[inline(always)]
pub fn remember(s: &Socket, side: Side) {
    if s.0.is_null() {
        return;
    }
    // SAFETY: `s.0` is the skb's (non-null) socket pointer.
    let sk = unsafe { bpf_sk_fullsock(s.0) };
    if sk.is_null() {
        return;
    }
    // SAFETY: `sk` is a full socket; `bpf_tcp_sock` returns null unless it is TCP.
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return;
    }
    // SAFETY: `tp` is a TCP socket view returned by `bpf_tcp_sock`, fields read one by one.
    let segs = unsafe {
        read_volatile(addr_of!((*tp).segs_in))
            .saturating_add(read_volatile(addr_of!((*tp).segs_out)))
    };
    if segs < CACHE_AFTER_SEGS {
        return;
    }
    let v = storage(sk, true);
    if v.is_null() {
        return;
    }
    let conn = &connection(s.0);
    // SAFETY: as in `vouched`. Another connection's entry loses its sides before it is
    // rewritten and gains this side after. A reader overlapping the rewrite can still pair the
    // old sides with the new connection; that is harmless, because for one socket both sides
    // rest on the same conntrack entry (one key for both directions, `conntrack::established`),
    // so conntrack vouched for both or neither.
    unsafe {
        let mut sides = read_volatile(addr_of!((*v).sides));
        if !names(v, conn) {
            write_volatile(addr_of_mut!((*v).sides), 0);
            write_volatile(addr_of_mut!((*v).src_port), conn.src_port);
            write_volatile(addr_of_mut!((*v).dst_port), conn.dst_port);
            write_volatile(addr_of_mut!((*v).dst_ip[0]), conn.dst_ip[0]);
            write_volatile(addr_of_mut!((*v).dst_ip[1]), conn.dst_ip[1]);
            write_volatile(addr_of_mut!((*v).dst_ip[2]), conn.dst_ip[2]);
            write_volatile(addr_of_mut!((*v).dst_ip[3]), conn.dst_ip[3]);
            sides = 0;
        }
        write_volatile(addr_of_mut!((*v).sides), sides | side as u8);
    }
}
