//! Offline reading of the agent's log (docs/design.md#violation-log): violation and flow lines
//! from any number of nodes, folded into per-flow tallies that `firewall-agent suggest` turns
//! into NamespaceFirewall objects and `firewall-agent report` into a matrix and a page.
pub mod flows;
pub mod lines;
pub mod render;
pub mod report;
pub mod rules;
pub mod suggest;
#[cfg(test)]
mod suggest_tests;

pub use flows::{Dest, FlowKey, FlowStats, Flows, SideStats};
pub use lines::{LineError, LogRecord, ReadStats, Verdict, read_inputs};
