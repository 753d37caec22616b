//! The kernel side as seen from user space: loading and attaching the eBPF programs, and the
//! typed maps they share with the agent.
pub mod legacy;
pub mod loader;
pub mod pin;
pub mod pinned;
pub mod test_run;
pub mod writer;

pub use loader::{Datapath, LoadError, LoadOptions};
