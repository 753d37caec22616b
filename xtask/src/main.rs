//! `cargo xtask ...`: the project's developer commands, one module per subcommand, so each
//! command stays small and new ones are one enum variant plus one file.
mod bench;
mod bootstrap;
mod demo;
mod fuzz;
mod image;
mod manifests;
mod test;
mod testbed;
mod util;

use clap::{Parser, Subcommand};

/// Bulkhead developer tasks.
#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// A simulated node from a scenario file: up, probe, down.
    Testbed(testbed::Args),
    /// The whole test suite, as CI runs it.
    Test,
    /// Offline checks of deploy/: render, Kubernetes schemas, example policies, DaemonSet.
    Manifests,
    /// The agent's container image, offline (podman, FROM scratch, static binary).
    Image,
    /// Three namespaces on a simulated node: monitor mode, then enforce mode.
    Demo,
    /// Runs the fuzz targets (libFuzzer, bounded time each).
    Fuzz(fuzz::Args),
    /// Performance figures on a simulated node (root): throughput, latency, program cost,
    /// iptables comparison, compile time and memory, violation storms.
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Testbed(args) => testbed::run(args),
        Cmd::Test => bootstrap::ensure().and_then(|()| test::run()),
        Cmd::Manifests => manifests::run(),
        Cmd::Demo => bootstrap::ensure().and_then(|()| demo::run()),
        Cmd::Image => image::run(),
        Cmd::Bench(args) => bench::run(args),
        Cmd::Fuzz(args) => fuzz::run(args),
    }
}
