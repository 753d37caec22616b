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

/// Defines `#[repr]` enums with their numbers, stable names, `ALL`, `as_str`, `from_name`,
/// `TryFrom<repr>` and `Display`, so that a value's number and name are written once.
macro_rules! vocabulary {
    ($($(#[$meta:meta])* pub enum $name:ident: $repr:ty {
        $($variant:ident = $value:literal => $text:literal),+ $(,)?
    })+) => {$(
        $(#[$meta])*
        #[repr($repr)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($variant = $value,)+
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
    )+};
}

vocabulary! {
    /// What a namespace does with a denied flow (the values of the modes map and of the per-slot
    /// default-mode settings): `Monitor` logs it and lets it pass, `Enforce` logs and drops it,
    /// `Off` lets it pass without a log line.
    pub enum Mode: u32 { Monitor = 1 => "monitor", Enforce = 2 => "enforce", Off = 3 => "off" }

    /// A side's policy verdict ([`crate::PolicyValue::verdict`]): the side lets the connection
    /// through, or forbids it.
    pub enum PolicyVerdict: u8 { Allow = 1 => "allow", Deny = 2 => "deny" }

    /// What became of a connection a record is about ([`crate::ViolationEvent::verdict`]; the
    /// names are the log's): `Audit`, some side denied and none in enforce mode (it would have
    /// been dropped); `Denied`, dropped; `Allowed`, no side denied (the flow log).
    pub enum EventVerdict: u8 { Audit = 1 => "AUDIT", Denied = 2 => "DENIED", Allowed = 3 => "ALLOWED" }

    /// The side of a connection that decides, at its source pod or at its destination pod (the
    /// names are the log's `direction`).
    pub enum Side: u8 { Egress = 1 => "egress", Ingress = 2 => "ingress" }

    /// Where in the kernel an event was raised ([`crate::ViolationEvent::hook`]): cgroup_skb
    /// egress or ingress, or cgroup/connect4|6 (the TCP connect() syscall, before any packet).
    pub enum Hook: u8 { SkbEgress = 1 => "skb_egress", SkbIngress = 2 => "skb_ingress", Connect = 3 => "connect" }

    /// The IP protocols the datapath parses (the names are the log's and the CLI's).
    pub enum IpProto: u8 { Icmp = 1 => "ICMP", Tcp = 6 => "TCP", Udp = 17 => "UDP", Icmpv6 = 58 => "ICMPv6", Sctp = 132 => "SCTP" }
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
