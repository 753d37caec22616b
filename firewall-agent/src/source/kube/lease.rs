//! One status writer per cluster: a `coordination.k8s.io/v1` Lease held by one agent at a time.
//!
//! Every agent runs the same validation and would write the same conditions; letting all of them
//! write would multiply API writes by the node count. The holder renews the Lease every
//! [`RENEW`]; another agent takes it over once it has not been renewed for [`DURATION`].
//! Optimistic concurrency (resourceVersion) makes a takeover race have exactly one winner.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tracing::{debug, info};

/// How long a Lease stays valid without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and others check).
pub const RENEW: Duration = Duration::from_secs(5);

/// This agent's claim on the status-writer Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    holder: String,
    leading: bool,
}

fn now() -> MicroTime {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    MicroTime(
        Timestamp::new(d.as_secs() as i64, d.subsec_nanos() as i32)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

fn expired(spec: &LeaseSpec) -> bool {
    let duration = spec
        .lease_duration_seconds
        .map_or(DURATION.as_secs() as i64, i64::from);
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    now().0.as_second() > renewed.0.as_second() + duration
}

impl Elector {
    /// A claim on Lease `namespace/name` for `holder` (this node's name).
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            holder: holder.to_owned(),
            leading: false,
        }
    }

    /// Who this agent is to the Lease (its node name).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this agent held the Lease at the last [`Elector::renew`].
    pub fn is_leader(&self) -> bool {
        self.leading
    }

    /// Acquires, renews or observes the Lease; returns whether this agent now holds it.
    pub async fn renew(&mut self) -> Result<bool, kube::Error> {
        let leading = self.try_renew().await;
        let leading = match leading {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 409 => false,
            Err(e) => {
                // Unreachable API: stop writing status until the Lease is confirmed again.
                self.leading = false;
                return Err(e);
            }
        };
        if leading != self.leading {
            if leading {
                info!(lease = %self.name, "holding the status lease: this agent writes policy status");
            } else {
                info!(lease = %self.name, "status lease held by another agent");
            }
        }
        self.leading = leading;
        Ok(leading)
    }

    async fn try_renew(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.holder.clone()),
                    lease_duration_seconds: Some(DURATION.as_secs() as i32),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.api.create(&PostParams::default(), &lease).await?;
            return Ok(true);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.holder.as_str());
        if !mine && !expired(spec) {
            debug!(holder = ?spec.holder_identity, "status lease held elsewhere");
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.holder.clone());
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(DURATION.as_secs() as i32);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}
