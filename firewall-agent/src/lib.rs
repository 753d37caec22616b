//! Bulkhead's node agent as a library: the binary (`main.rs`) is a thin CLI over these modules, so
//! the compiler and parsers are unit-testable without a kernel.
pub mod agent;
pub mod capabilities;
pub mod cgroups;
pub mod clock;
pub mod compiler;
pub mod crd;
pub mod datapath;
pub mod events;
pub mod model;
pub mod objects;
pub mod source;

// Used only by the binary (main.rs) until the command-line front end lives in the library.
use clap as _;
use tracing_subscriber as _;
// A dev-dependency of the kernel-level tests (tests/*.rs), not of the library's unit tests.
#[cfg(test)]
use bulkhead_tests as _;
