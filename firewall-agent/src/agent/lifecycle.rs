//! Starting the agent (load, attach, adopt what an earlier agent pinned) and stopping it (print
//! everything still owed, then detach or leave the pinned state for the next agent).
use std::sync::Arc;

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use firewall_common::Counter;
use tokio::io::{Interest, unix::AsyncFd};
use tracing::{error, info, warn};

use super::{
    Agent, RunConfig,
    apply::PolicyState,
    health::{self, Health},
    metrics::Metrics,
    status::StatusBoard,
};
use crate::{
    datapath::{
        Datapath,
        loader::{EventMaps, StateMaps},
        writer::MapWriter,
    },
    events::{Names, ViolationLog, counter},
};

impl Agent {
    /// Loads and attaches the datapath; returns the agent and its ring buffer, registered with
    /// the runtime.
    pub(super) async fn start(
        cfg: &RunConfig,
    ) -> anyhow::Result<(Self, AsyncFd<RingBuf<MapData>>)> {
        let health = Arc::new(Health::default());
        health.beat();
        let metrics = Arc::new(Metrics::new(&cfg.load));
        let status = Arc::new(StatusBoard::default());
        if let Some(addr) = cfg.metrics_addr {
            let served = health::Served {
                health: health.clone(),
                metrics: metrics.clone(),
                status: status.clone(),
            };
            health::serve(addr, served)
                .await
                .with_context(|| format!("serving metrics and probes on {addr}"))?;
        }
        let (mut datapath, state_maps, event_maps) =
            Datapath::load(&cfg.load).context("loading the eBPF datapath")?;
        datapath
            .attach(&cfg.cgroup_root)
            .with_context(|| format!("attaching at cgroup {}", cfg.cgroup_root.display()))?;
        info!(cgroup_root = %cfg.cgroup_root.display(), node = %cfg.compile.node_name, source = ?cfg.source, pinned = datapath.pinned(), adopted = datapath.adopted(), "datapath attached");
        let mut writer = map_writer(&datapath, state_maps)?;
        writer
            .set_flow_log(cfg.flow_log_all)
            .context("setting the flow log")?;
        metrics.set_capacities(writer.capacities());
        let state = PolicyState::new(
            cfg.compile.clone(),
            cfg.cgroup_root.clone(),
            metrics.clone(),
        );
        let mut log = ViolationLog::new(&cfg.compile.node_name, metrics.clone());
        let EventMaps {
            events,
            fold,
            counters,
            ..
        } = event_maps;
        if datapath.adopted() {
            log.adopt(&fold, &counters);
        }
        // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the agent exits.
        let ring = unsafe { AsyncFd::register_with_interest(events, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("registering the ring buffer: {e}"))?;
        let agent = Self {
            health,
            metrics,
            status,
            status_stale: true,
            datapath,
            writer,
            names: Names::default(),
            state,
            log,
            fold,
            counters,
        };
        Ok((agent, ring))
    }

    /// Prints everything still owed, then detaches (dropping the datapath closes the links) or,
    /// when pinned, leaves the programs attached and the maps in place for the next agent.
    pub(super) fn stop(mut self, ring: &mut RingBuf<MapData>) {
        self.log.drain(ring, &self.names);
        self.log
            .sweep(&mut self.fold, &self.counters, &self.names, true);
        let c = |k| counter(&self.counters, k);
        info!(
            lines = self.log.lines,
            allowed = c(Counter::PolicyAllow),
            audited = c(Counter::PolicyAudit),
            dropped = c(Counter::PolicyDrop),
            connect_denied = c(Counter::ConnectDenied),
            events_sent = c(Counter::EventsSent),
            events_folded = c(Counter::EventsFolded),
            events_lost = c(Counter::EventsLost),
            events_lost_unfolded = c(Counter::EventsLostUnfolded),
            "{}",
            if self.datapath.pinned() {
                "stopping; programs stay attached and maps pinned (enforcement continues; `firewall-agent cleanup` removes them)"
            } else {
                "detaching"
            }
        );
        if c(Counter::EventsLost) > c(Counter::EventsLostUnfolded) {
            warn!(
                "some events were lost to a full ring buffer; their counts were reported from the fold map"
            );
        }
        drop(self.datapath);
        if !self.state.ready {
            error!("the agent never applied a policy");
        }
    }
}

/// Pinned maps may hold the policy an earlier agent left in force: learn it, so the first apply
/// is a diff into the inactive slot and a flip, and that policy decides until then.
fn map_writer(datapath: &Datapath, maps: StateMaps) -> anyhow::Result<MapWriter> {
    if !datapath.pinned() {
        return MapWriter::new(maps).context("initialising the maps");
    }
    let w = MapWriter::adopt(maps).context("reading the pinned maps")?;
    if datapath.adopted() {
        let a = w.active_contents();
        info!(
            active_slot = w.active_slot(),
            cgroups = a.cgroups.len(),
            policy_entries = a.policy.len(),
            "adopted the pinned policy; it stays in force until the first apply"
        );
    }
    Ok(w)
}
