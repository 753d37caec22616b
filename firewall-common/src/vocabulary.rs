//! The words the kernel and the agent share: each value's number (what the maps and events hold)
//! and its stable name (what the log, the metrics and the CLI print).
//!
//! Map and event structs keep raw integer fields: a byte the kernel wrote is never transmuted into
//! one of these enums; compare with `X as u8` or convert with `TryFrom`.

/// A number that names no value of the enum it was converted to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    /// The enum's name.
    pub kind: &'static str,
    /// The number found.
    pub value: u32,
}

impl core::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown {} value {}", self.kind, self.value)
    }
}

/// Defines a `#[repr]` enum with its numbers, stable names, `ALL`, `as_str`, `from_name`,
/// `TryFrom<repr>` and `Display`, so that a value's number and name are written once.
macro_rules! vocabulary {
    ($(#[$meta:meta])* pub enum $name:ident: $repr:ty {
        $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal,)+
    }) => {
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $variant = $value,)+
        }

        impl $name {
            /// Every value, in numeric order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable name (log, metrics, CLI).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `name` (exactly as [`Self::as_str`] spells it).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl TryFrom<$repr> for $name {
            type Error = UnknownValue;

            #[inline(always)]
            fn try_from(v: $repr) -> Result<Self, UnknownValue> {
                match v {
                    $($value => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: stringify!($name),
                        value: v as u32,
                    }),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

vocabulary! {
    /// What a namespace does with a denied flow: the values of the modes map and of the per-slot
    /// default-mode settings.
    pub enum Mode: u32 {
        /// Denied flows are logged and pass.
        Monitor = 1 => "monitor",
        /// Denied flows are logged and dropped.
        Enforce = 2 => "enforce",
        /// Denied flows pass without a log line.
        Off = 3 => "off",
    }
}

vocabulary! {
    /// A side's policy verdict ([`crate::PolicyValue::verdict`]).
    pub enum PolicyVerdict: u8 {
        /// The side lets the connection through.
        Allow = 1 => "allow",
        /// The side forbids it.
        Deny = 2 => "deny",
    }
}

vocabulary! {
    /// What became of a violation ([`crate::ViolationEvent::verdict`]); the names are the log's.
    pub enum EventVerdict: u8 {
        /// Monitor mode: it would have been dropped.
        Audit = 1 => "AUDIT",
        /// Enforce mode: dropped.
        Denied = 2 => "DENIED",
    }
}

vocabulary! {
    /// The side of a connection that decides; the names are the log's `direction`.
    pub enum Side: u8 {
        /// At the connection's source pod.
        Egress = 1 => "egress",
        /// At the connection's destination pod.
        Ingress = 2 => "ingress",
    }
}

vocabulary! {
    /// Where in the kernel an event was raised ([`crate::ViolationEvent::hook`]).
    pub enum Hook: u8 {
        /// cgroup_skb egress (a packet leaving the local pod's socket).
        SkbEgress = 1 => "skb_egress",
        /// cgroup_skb ingress (delivery to the destination pod's socket).
        SkbIngress = 2 => "skb_ingress",
        /// cgroup/connect4|6: the TCP connect() syscall, before any packet exists.
        Connect = 3 => "connect",
    }
}

vocabulary! {
    /// The IP protocols the datapath parses; the names are the log's and the CLI's.
    pub enum IpProto: u8 {
        /// ICMP (IPv4).
        Icmp = 1 => "ICMP",
        /// TCP.
        Tcp = 6 => "TCP",
        /// UDP.
        Udp = 17 => "UDP",
        /// ICMPv6.
        Icmpv6 = 58 => "ICMPv6",
        /// SCTP.
        Sctp = 132 => "SCTP",
    }
}

impl Side {
    /// The other side of the connection.
    #[inline(always)]
    pub const fn other(self) -> Side {
        match self {
            Side::Egress => Side::Ingress,
            Side::Ingress => Side::Egress,
        }
    }
}

impl IpProto {
    /// The protocols whose packets carry ports; policy rules name ports only for these.
    pub const WITH_PORTS: [IpProto; 3] = [IpProto::Tcp, IpProto::Udp, IpProto::Sctp];
}
