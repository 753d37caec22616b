//! `firewall-agent run`: load and attach the datapath, keep its maps in step with the source,
//! and write the violation log until SIGTERM/SIGINT.
//!
//! The loop only dispatches: models from the source, the ring buffer, and a one-second tick
//! (heartbeat, metrics, cgroup rediscovery, fold-map sweep). What each does is a plain method
//! of [`Agent`].
pub mod apply;
pub mod health;
mod lifecycle;
mod local_addresses;
pub mod metrics;
pub mod status;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use aya::maps::{HashMap, MapData, PerCpuArray};
use firewall_common::{FoldKey, FoldValue};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{MissedTickBehavior, interval},
};
use tracing::{error, info};

use crate::{
    compiler::CompileOptions,
    datapath::{Datapath, LoadOptions, writer::MapWriter},
    events::{Names, ViolationLog, counter},
    model::ClusterModel,
    source::{Source, SourceError, SourceSpec, kube::KubeConfig},
};
use apply::PolicyState;
use health::Health;
use metrics::Metrics;
use status::StatusBoard;

/// Everything `run` needs, already validated by the CLI.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub source: SourceSpec,
    /// Cgroup the programs attach at.
    pub cgroup_root: PathBuf,
    pub compile: CompileOptions,
    /// Map capacities and the pin directory.
    pub load: LoadOptions,
    /// How often a file source is checked for changes.
    pub poll: Duration,
    /// Settings of `--source kube`.
    pub kube: KubeConfig,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/status` are served.
    pub metrics_addr: Option<SocketAddr>,
    /// `--flow-log all`: allowed new connections are logged too.
    pub flow_log_all: bool,
}

/// The running agent: the attached datapath, the policy applied to it, and the log of its events.
struct Agent {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    status: Arc<StatusBoard>,
    /// An apply happened since `/status` was last published.
    status_stale: bool,
    datapath: Datapath,
    writer: MapWriter,
    names: Names,
    state: PolicyState,
    log: ViolationLog,
    fold: HashMap<MapData, FoldKey, FoldValue>,
    counters: PerCpuArray<MapData, u64>,
}

/// Runs the agent until a termination signal.
pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let node = &cfg.compile.node_name;
    let apis = cfg.compile.policy_apis;
    let mut source = Source::open(&cfg.source, cfg.poll, apis, &cfg.kube, node).await?;
    let (mut agent, mut ring) = Agent::start(&cfg).await?;
    let mut second = interval(Duration::from_secs(1));
    second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        agent.refresh();
        tokio::select! {
            model = source.next_model() => agent.on_model(model, &mut source),
            _ = second.tick() => agent.every_second(&source),
            guard = ring.readable_mut() => {
                let mut guard = guard.context("waiting on the ring buffer")?;
                agent.log.drain(guard.get_inner_mut(), &agent.names);
                guard.clear_ready();
            },
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
        }
    }
    agent.stop(ring.get_mut());
    Ok(())
}

impl Agent {
    /// Applies a model from the source, and tells the source what became of it.
    fn on_model(&mut self, model: Result<ClusterModel, SourceError>, source: &mut Source) {
        match model {
            Ok(model) => {
                let changed = self
                    .state
                    .set_model(model, &mut self.writer, &mut self.names);
                // `/readyz` the moment the apply logged "ready", before the source's bookkeeping.
                self.status_stale |= changed;
                self.refresh();
                source.applied(
                    changed,
                    self.state.rejected(),
                    self.state.invalid_mode_labels(),
                );
            }
            Err(e) if self.state.ready => {
                error!(error = %e, "source unusable; the last good policy stays in force");
            }
            Err(e) => error!(error = %e, "source unusable; no policy applied yet"),
        }
    }

    /// Between events: `/readyz` first (a probe must not wait on anything else), then `/status`
    /// when an apply changed it.
    fn refresh(&mut self) {
        if self.state.serving() {
            self.health.set_ready();
        }
        if self.status_stale {
            self.status_stale = false;
            self.status
                .publish(&status::snapshot(&self.state, &self.writer, &self.datapath));
        }
    }

    fn every_second(&mut self, source: &Source) {
        self.health.beat();
        self.metrics.observe_kernel(|c| counter(&self.counters, c));
        self.metrics
            .observe_source(source.progress(self.state.ready));
        if self.state.rediscover() {
            info!("pod cgroups changed");
            self.state.apply(&mut self.writer, &mut self.names);
            self.status_stale = true;
        }
        self.log
            .sweep(&mut self.fold, &self.counters, &self.names, false);
    }
}
