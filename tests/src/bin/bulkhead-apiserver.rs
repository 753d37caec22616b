//! `bulkhead-apiserver`: the Kubernetes API server emulator as a process, for running the real
//! agent against a testbed (`cargo xtask testbed up --source kube`).
//!
//! Prints `ready <url>` once listening; runs until SIGTERM or SIGINT.
#![allow(
    unused_crate_dependencies,
    reason = "a binary or test target links all of its package's dependencies; the library target is where unused ones are caught"
)]
use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use bulkhead_tests::{ApiServer, apiserver::read_objects};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Kubernetes API server emulator (list, watch, CRUD) for Bulkhead tests")]
struct Cli {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// YAML stream or `kind: List` of objects to serve (repeatable).
    #[arg(long)]
    objects: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Block the signals before any thread starts, then wait for them synchronously.
    // SAFETY: plain libc signal-mask calls on a local, initialized sigset.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let server = ApiServer::start_on(cli.listen)?;
    for path in &cli.objects {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let objs = read_objects(&text).with_context(|| format!("parsing {}", path.display()))?;
        server
            .apply_all(objs)
            .with_context(|| format!("loading {}", path.display()))?;
    }
    if let Some(k) = &cli.kubeconfig {
        server.write_kubeconfig(k)?;
    }
    println!("ready {}", server.url());
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait on the signals blocked above.
    unsafe { libc::sigwait(&set, &mut sig) };
    eprintln!("bulkhead-apiserver: signal {sig}, exiting");
    drop(server);
    Ok(())
}
