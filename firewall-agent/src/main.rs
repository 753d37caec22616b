//! `firewall-agent`: Bulkhead's node agent; the command line lives in the library's `cli`.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]

fn main() -> std::process::ExitCode {
    firewall_agent::cli::main()
}
