//! The Bulkhead testbed: a simulated Kubernetes node (docs/design.md#testbed) for end-to-end tests and demos.
//!
//! A [`scenario::Scenario`] (one YAML file) describes namespaces, pods, services and policy
//! objects; [`testbed::Testbed::up`] turns it into network namespaces, veths on a bridge,
//! kubelet-style cgroups and echo servers, and writes the agent's `file:` source; probes run inside
//! pods (their netns *and* cgroup, because the firewall identifies pods by cgroup) and report
//! ok / refused / denied / timeout.
pub mod agent;
pub mod apiserver;
pub mod cgroup;
pub mod frames;
pub mod kustomize;
pub mod ping;
pub mod policy;
pub mod probe;
pub mod root;
pub mod scenario;
pub mod session;
pub mod source;
pub mod synthetic;
pub mod testbed;

pub use apiserver::{ApiServer, RequestRecord};
pub use probe::{HoldReport, Matrix, Outcome, PingResult, ProbeResult, StormReport, Target};
pub use root::{is_root, require_root};
pub use scenario::{CgroupDriver, Protocol, Qos, Scenario};
pub use testbed::{
    ApiServerInfo, HoldHandle, Options, Pod, Session, SniffHandle, Testbed, WorldServer,
};

// Used only by the binaries (bulkhead-pod, bulkhead-apiserver) of this package.
use clap as _;
// Dev-dependencies of the integration tests (tests/*.rs), not of the library's unit tests.
#[cfg(test)]
use kube as _;
#[cfg(test)]
use roxmltree as _;
