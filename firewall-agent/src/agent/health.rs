//! `/metrics`, `/healthz`, `/readyz` and `/status` on `--metrics-addr`: Prometheus, the
//! DaemonSet's probes and `firewall-agent status`.
//!
//! Ready means a policy has been applied from a complete view of the source (for `kube`, after
//! every kind was listed once): a rolling update waits for that before moving to the next node.
//! Healthy means the agent's loop is turning; a wedged loop gets the pod restarted.
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    routing::get,
};

use super::{metrics::Metrics, status::StatusBoard};
use tokio::{net::TcpListener, task::JoinHandle};
use tracing::{error, info};

/// How long the loop may go without a heartbeat before `/healthz` fails.
const STALL: Duration = Duration::from_secs(10);

/// What the probes report, updated by the agent's loop.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    heartbeat_ms: AtomicU64,
}

impl Health {
    /// The loop is alive.
    pub fn beat(&self) {
        self.heartbeat_ms
            .store(crate::clock::unix_ms(), Ordering::Relaxed);
    }

    /// The first complete policy is applied.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn healthy(&self) -> bool {
        crate::clock::unix_ms().saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed))
            < STALL.as_millis() as u64
    }
}

/// What the endpoints read.
pub struct Served {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusBoard>,
}

async fn healthz(State(s): State<Arc<Served>>) -> (StatusCode, &'static str) {
    if s.health.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "agent loop stalled\n")
    }
}

async fn metrics(
    State(s): State<Arc<Served>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<Arc<Served>>) -> (StatusCode, &'static str) {
    if s.health.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no policy applied yet (waiting for the first complete sync)\n",
        )
    }
}

/// The snapshot; 503 until the datapath is loaded and the first one published.
async fn status(
    State(s): State<Arc<Served>>,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let json = s.status.json();
    if json.is_empty() {
        let starting = "starting: the datapath is not loaded yet\n".to_owned();
        let text = [(header::CONTENT_TYPE, "text/plain")];
        return (StatusCode::SERVICE_UNAVAILABLE, text, starting);
    }
    let json_type = [(header::CONTENT_TYPE, "application/json")];
    (StatusCode::OK, json_type, json.as_str().to_owned())
}

/// Binds `addr` and serves metrics and probes until the agent exits.
pub async fn serve(addr: SocketAddr, served: Served) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz and /status");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(Arc::new(served));
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!(error = %e, "probe server stopped");
        }
    }))
}
