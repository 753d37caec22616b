//! `firewall-agent run`: load and attach the datapath, keep its maps in step with the source,
//! and write the violation log until SIGTERM/SIGINT.
pub mod apply;
pub mod health;
pub mod metrics;
pub mod violations;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use firewall_common::Counter;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
    sync::watch,
    time::{Instant, MissedTickBehavior, interval, sleep_until},
};
use tracing::{error, info, warn};

use crate::{
    compiler::CompileOptions,
    datapath::{Datapath, LoadOptions, writer::MapWriter},
    events::Names,
    source::{
        SourceSpec,
        file::FileSource,
        kube::{self as kube_source, KubeSource, Verdicts, lease::Elector},
    },
};
use apply::PolicyState;
use health::Health;
use metrics::Metrics;
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
    /// Kubernetes settings (`--source kube`).
    pub kube: KubeConfig,
    /// Where `/healthz` and `/readyz` are served.
    pub metrics_addr: Option<SocketAddr>,
}

/// Settings of the `kube` source.
#[derive(Clone, Debug, Default)]
pub struct KubeConfig {
    /// Explicit kubeconfig; `None`: `KUBECONFIG`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the status-writer Lease (the agent's own namespace).
    pub lease_namespace: String,
    /// Name of the status-writer Lease.
    pub lease_name: String,
}

/// How long the kube source lets a burst of events gather before recompiling: one compile per
/// burst (a Deployment scaling, a relist), well inside the 1 s a policy change may take.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The agent's source, opened.
enum Source {
    File(FileSource),
    Kube(KubeSource),
}

/// Runs the agent until a termination signal.
pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let mut source = match &cfg.source {
        SourceSpec::File(path) => Source::File(FileSource::new(path)),
        SourceSpec::Kube => {
            let client = kube_source::client(cfg.kube.kubeconfig.as_deref()).await?;
            Source::Kube(KubeSource::start(client))
        }
    };
    let health = Arc::new(Health::default());
    health.beat();
    let metrics = Arc::new(Metrics::new(&cfg.load));
    if let Some(addr) = cfg.metrics_addr {
        let served = health::Served {
            health: health.clone(),
            metrics: metrics.clone(),
        };
        health::serve(addr, served)
            .await
            .with_context(|| format!("serving metrics and probes on {addr}"))?;
    }
    let (mut datapath, state_maps, mut event_maps) =
        Datapath::load(&cfg.load).context("loading the eBPF datapath")?;
    datapath
        .attach(&cfg.cgroup_root)
        .with_context(|| format!("attaching at cgroup {}", cfg.cgroup_root.display()))?;
    info!(cgroup_root = %cfg.cgroup_root.display(), node = %cfg.compile.node_name, source = ?cfg.source, pinned = datapath.pinned(), adopted = datapath.adopted(), "datapath attached");
    let mut writer = if datapath.pinned() {
        // Pinned maps may hold the policy an earlier agent left in force: learn it, so the first
        // apply is a diff into the inactive slot and a flip, and that policy decides until then.
        let w = MapWriter::adopt(state_maps).context("reading the pinned maps")?;
        if datapath.adopted() {
            let a = w.active_contents();
            info!(
                active_slot = w.active_slot(),
                cgroups = a.cgroups.len(),
                policy_entries = a.policy.len(),
                "adopted the pinned policy; it stays in force until the first apply"
            );
        }
        w
    } else {
        MapWriter::new(state_maps).context("initialising the maps")?
    };
    metrics.set_capacities(writer.capacities());
    let mut names = Names::default();
    let mut state = PolicyState::new(
        cfg.compile.clone(),
        cfg.cgroup_root.clone(),
        metrics.clone(),
    );
    let mut log = ViolationLog::new(&cfg.compile.node_name, metrics.clone());
    if datapath.adopted() {
        log.adopt(&event_maps.fold, &event_maps.counters);
    }
    // SAFETY: the ring buffer owns its fd and lives inside the AsyncFd until the agent exits.
    let mut ring = unsafe {
        AsyncFd::register_with_interest(event_maps.events, tokio::io::Interest::READABLE)
    }
    .map_err(|e| anyhow::anyhow!("registering the ring buffer: {e}"))?;

    // The kube source: a change counter to wait on, and the status writer fed after each apply.
    let (verdicts_tx, verdicts_rx) = watch::channel(None::<Arc<Verdicts>>);
    let mut changes = match &source {
        Source::Kube(k) => {
            let elector = Elector::new(
                k.client().clone(),
                &cfg.kube.lease_namespace,
                &cfg.kube.lease_name,
                &cfg.compile.node_name,
            );
            tokio::spawn(kube_source::status::run_writer(
                k.client().clone(),
                elector,
                k.policies().clone(),
                verdicts_rx,
                k.subscribe(),
            ));
            Some(k.subscribe())
        }
        Source::File(_) => None,
    };
    // Whatever the watchers listed before we subscribed is applied on the first turn.
    let mut dirty: Option<Instant> = changes.is_some().then(Instant::now);
    let mut waiting_logged = false;

    let mut poll = interval(cfg.poll);
    let mut second = interval(Duration::from_secs(1));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;

    loop {
        if state.ready {
            health.set_ready();
        }
        tokio::select! {
            _ = poll.tick(), if matches!(source, Source::File(_)) => {
                let Source::File(file) = &mut source else { continue };
                match file.poll() {
                    Some(Ok(model)) => {
                        info!(file = %file.path().display(), "source changed");
                        state.set_model(model, &mut writer, &mut names);
                    }
                    Some(Err(e)) if state.ready => error!(error = %e, "source unusable; the last good policy stays in force"),
                    Some(Err(e)) => error!(error = %e, "source unusable; no policy applied yet"),
                    None => {}
                }
            }
            r = async { changes.as_mut()?.changed().await.ok() }, if changes.is_some() => {
                if r.is_some() {
                    dirty.get_or_insert_with(|| Instant::now() + DEBOUNCE);
                } else {
                    error!("the API watchers stopped; the last applied policy stays in force");
                    changes = None;
                }
            }
            _ = async { if let Some(d) = dirty { sleep_until(d).await } }, if dirty.is_some() => {
                dirty = None;
                let Source::Kube(kube) = &source else { continue };
                if !kube.state().is_synced() {
                    if !waiting_logged {
                        info!("waiting for every kind to be listed before applying a policy");
                        waiting_logged = true;
                    }
                    continue;
                }
                // Listed before the model: an object changing in between then carries an older
                // generation than the store, and the status writer skips it until it is compiled.
                let objects = kube.policies().objects();
                if state.set_model(kube.model(), &mut writer, &mut names) || verdicts_tx.borrow().is_none() {
                    verdicts_tx.send_replace(Some(Arc::new(Verdicts {
                        objects,
                        rejected: state.rejected().to_vec(),
                    })));
                }
            }
            _ = second.tick() => {
                health.beat();
                metrics.observe_kernel(|c| counter(&event_maps.counters, c));
                match &source {
                    Source::Kube(k) => {
                        let st = k.state();
                        metrics.observe_source(
                            st.is_synced(),
                            st.errors.load(std::sync::atomic::Ordering::Relaxed),
                            st.last_event_ms.load(std::sync::atomic::Ordering::Relaxed),
                        );
                    }
                    Source::File(_) => metrics.observe_source(state.ready, 0, 0),
                }
                if state.rediscover() {
                    info!("pod cgroups changed");
                    state.apply(&mut writer, &mut names);
                }
                log.sweep(&mut event_maps.fold, &event_maps.counters, &names, false);
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

    // Shutdown: print everything still owed, then detach (dropping the datapath closes the links)
    // or, when pinned, leave the programs attached and the maps in place for the next agent.
    log.drain(ring.get_mut(), &names);
    log.sweep(&mut event_maps.fold, &event_maps.counters, &names, true);
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
        events_lost_unfolded = c(Counter::EventsLostUnfolded),
        "{}",
        if datapath.pinned() {
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
    drop(datapath);
    if !state.ready {
        error!("the agent never applied a policy");
    }
    Ok(())
}
