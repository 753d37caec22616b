//! Names for the log: what the ids in a kernel event mean, per policy slot.
//!
//! An event says which slot's policy decided it; its rule and namespace ids are resolved in that
//! slot's tables, so a line raised just before a policy change still names the right object.
use std::{collections::HashMap, net::IpAddr, sync::Arc};

/// A pod as the log names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
    /// Its addresses (to fill `ip` when the kernel did not know the source address yet).
    pub ips: Vec<IpAddr>,
}

/// The tables of one policy generation.
#[derive(Clone, Debug, Default)]
pub struct NameTables {
    /// `PolicyValue.rule` -> the deciding object (and rule).
    pub rules: Vec<String>,
    /// Namespace id -> name.
    pub namespaces: HashMap<u32, String>,
    /// Address -> pod.
    pub by_ip: HashMap<IpAddr, Arc<PodName>>,
    /// Local cgroup id -> pod.
    pub by_cgroup: HashMap<u64, Arc<PodName>>,
}

/// The tables of both slots.
#[derive(Clone, Debug, Default)]
pub struct Names {
    slots: [Arc<NameTables>; 2],
}

impl Names {
    /// Installs the tables of the generation just written to `slot`.
    pub fn set(&mut self, slot: u8, tables: NameTables) {
        self.slots[usize::from(slot & 1)] = Arc::new(tables);
    }

    /// The tables of `slot`.
    pub fn slot(&self, slot: u8) -> &NameTables {
        &self.slots[usize::from(slot & 1)]
    }
}
