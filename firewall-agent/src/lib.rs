//! Bulkhead's node agent as a library: the pipeline (sources -> model -> compiler -> datapath,
//! and kernel events -> the violation log) and, apart from it, the command line over it
//! (`cli`); the binary is a thin `main`. The compiler and parsers are unit-testable without a
//! kernel.
pub mod agent;
pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod clock;
pub mod cnp;
pub mod compiler;
pub mod crd;
pub mod datapath;
pub mod events;
pub mod model;
pub mod netpol;
pub mod observed;
pub mod policy;
pub mod source;

/// The agent's version and the commit it was built from (`--version`, `bulkhead_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit the agent was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("BULKHEAD_COMMIT");

// A dev-dependency of the kernel-level tests (tests/*.rs: require_root), not of the unit tests.
#[cfg(test)]
use bulkhead_tests as _;
