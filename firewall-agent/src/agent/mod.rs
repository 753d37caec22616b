//! `firewall-agent run`: load and attach the datapath, keep its maps in step with the source,
//! and write the violation log until SIGTERM/SIGINT.
pub mod apply;
pub mod violations;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use firewall_common::Counter;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};
use tracing::{error, info, warn};

use crate::{
    compiler::CompileOptions,
    datapath::{Datapath, LoadOptions, writer::MapWriter},
    events::Names,
    source::{SourceSpec, file::FileSource},
};
use apply::PolicyState;
use violations::{ViolationLog, counter};

/// Everything `run` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where the cluster state comes from.
    pub source: SourceSpec,
    /// Cgroup the programs attach at.
    pub cgroup_root: PathBuf,
    /// Compiler settings (node name, default mode, DNS Service).
    pub compile: CompileOptions,
    /// Map capacities.
    pub load: LoadOptions,
    /// How often the source file is checked for changes.
    pub poll: Duration,
}

/// Runs the agent until a termination signal.
pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let SourceSpec::File(path) = &cfg.source else {
        bail!("--source kube is not available in this build yet; use --source file:PATH");
    };
    let mut source = FileSource::new(path);
    let (mut datapath, state_maps, event_maps) =
        Datapath::load(&cfg.load).context("loading the eBPF datapath")?;
    datapath
        .attach(&cfg.cgroup_root)
        .with_context(|| format!("attaching at cgroup {}", cfg.cgroup_root.display()))?;
    info!(cgroup_root = %cfg.cgroup_root.display(), node = %cfg.compile.node_name, source = %path.display(), "datapath attached");
    let mut writer = MapWriter::new(state_maps).context("initialising the maps")?;
    let mut names = Names::default();
    let mut state = PolicyState::new(cfg.compile.clone(), cfg.cgroup_root.clone());
    let mut log = ViolationLog::new(&cfg.compile.node_name);
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the agent exits.
    let mut ring = unsafe {
        AsyncFd::register_with_interest(event_maps.events, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("registering the ring buffer: {e}"))?;

    let mut poll = interval(cfg.poll);
    let mut second = interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    loop {
        tokio::select! {
            _ = poll.tick() => match source.poll() {
                Some(Ok(model)) => {
                    info!(file = %source.path().display(), "source changed");
                    state.set_model(model, &mut writer, &mut names);
                }
                Some(Err(e)) if state.ready => error!(error = %e, "source unusable; the last good policy stays in force"),
                Some(Err(e)) => error!(error = %e, "source unusable; no policy applied yet"),
                None => {}
            },
            _ = second.tick() => {
                if state.rediscover() {
                    info!("pod cgroups changed");
                    state.apply(&mut writer, &mut names);
                }
                log.sweep(&event_maps.fold, &event_maps.counters, &names, false);
            },
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                log.drain(guard.get_inner_mut(), &names);
                guard.clear_ready();
            },
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
    }

    // Shutdown: print everything still owed, then detach (dropping the datapath closes the links).
    log.drain(ring.get_mut(), &names);
    log.sweep(&event_maps.fold, &event_maps.counters, &names, true);
    let c = |k| counter(&event_maps.counters, k);
    info!(
        lines = log.lines,
        allowed = c(Counter::PolicyAllow),
        audited = c(Counter::PolicyAudit),
        dropped = c(Counter::PolicyDrop),
        connect_denied = c(Counter::ConnectDenied),
        events_sent = c(Counter::EventsSent),
        events_folded = c(Counter::EventsFolded),
        events_lost = c(Counter::EventsLost),
        "detaching"
    );
    if c(Counter::EventsLost) > 0 {
        warn!(
            "some events were lost to a full ring buffer; their counts were reported from the fold map"
        );
    }
    drop(datapath);
    if !state.ready {
        error!("the agent never applied a policy");
    }
    Ok(())
}
