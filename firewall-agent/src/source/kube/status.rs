//! `status.conditions[type=Accepted]` of the policy objects: `True` when the object is part of
//! the applied policy, `False` (with the validation error naming the field) when it was rejected
//! whole. Written only by the Lease holder ([`super::lease`]), and only when it differs from what
//! the object already says, so a steady cluster costs no API writes.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::{
    sync::watch,
    time::{MissedTickBehavior, interval, sleep},
};
use tracing::{info, warn};

use super::{
    PolicyObject, PolicyStores, Verdicts, cluster_firewall_resource,
    events::Announcer,
    lease::{Elector, RENEW},
    namespace_firewall_resource,
};
use crate::{crd::Condition, model::Rejection};

/// The condition type the agent owns.
pub const ACCEPTED: &str = "Accepted";

/// The `Accepted` condition an object should carry, given the compiler's rejections.
pub fn desired(obj: &PolicyObject, rejected: &[Rejection]) -> Condition {
    let rejection = rejected
        .iter()
        .find(|r| r.kind == obj.kind && r.name == obj.name && r.namespace == obj.namespace);
    let (status, reason, message) = match rejection {
        // The reason says what is enforced meanwhile; the message, why and where.
        Some(r) => (
            "False",
            r.in_force.reason().to_owned(),
            format!("{}: {}; {}", r.reason, r.message, r.in_force.describe()),
        ),
        None => (
            "True",
            "Valid".to_owned(),
            "part of the applied policy".to_owned(),
        ),
    };
    Condition {
        type_: ACCEPTED.to_owned(),
        status: status.to_owned(),
        reason,
        message,
        last_transition_time: None,
        observed_generation: obj.generation,
    }
}

/// The object's current `Accepted` condition.
fn current(obj: &PolicyObject) -> Option<Condition> {
    let conditions = obj.status.as_ref()?.get("conditions")?.as_array()?;
    conditions
        .iter()
        .filter_map(|c| serde_json::from_value::<Condition>(c.clone()).ok())
        .find(|c| c.type_ == ACCEPTED)
}

/// The status to write, or `None` when the object already says it.
pub fn patch_for(obj: &PolicyObject, want: Condition) -> Option<Value> {
    let now = current(obj);
    let same = now.as_ref().is_some_and(|c| {
        c.status == want.status
            && c.reason == want.reason
            && c.message == want.message
            && c.observed_generation == want.observed_generation
    });
    if same {
        return None;
    }
    // The transition time moves only when the status itself flips.
    let since = match &now {
        Some(c) if c.status == want.status => c.last_transition_time.clone(),
        _ => None,
    }
    .or_else(|| OffsetDateTime::now_utc().format(&Rfc3339).ok());
    let mut conditions: Vec<Value> = obj
        .status
        .as_ref()
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter(|c| c.get("type").and_then(Value::as_str) != Some(ACCEPTED))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let cond = Condition {
        last_transition_time: since,
        ..want
    };
    conditions.push(serde_json::to_value(cond).unwrap_or(Value::Null));
    Some(json!({ "status": { "conditions": conditions } }))
}

/// Writes every status that differs; returns how many were written.
pub async fn reconcile(
    client: &Client,
    announcer: &Announcer,
    objects: &[PolicyObject],
    rejected: &[Rejection],
) -> usize {
    let mut written = 0;
    for obj in objects {
        let want = desired(obj, rejected);
        let accepted = want.status.clone();
        let Some(patch) = patch_for(obj, want.clone()) else {
            continue;
        };
        let api: Api<DynamicObject> = match &obj.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &namespace_firewall_resource()),
            None => Api::all_with(client.clone(), &cluster_firewall_resource()),
        };
        let object = match &obj.namespace {
            Some(ns) => format!("{}/{ns}/{}", obj.kind, obj.name),
            None => format!("{}/{}", obj.kind, obj.name),
        };
        match api
            .patch_status(&obj.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                written += 1;
                info!(object, accepted, "status written");
                if accepted == "False" {
                    announcer.rejected(obj, &want).await;
                }
            }
            // Deleted since it was listed: nothing to report on.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(object, error = %e, "writing status failed; retrying later"),
        }
    }
    written
}

/// The status writer: holds or watches the Lease, and while holding it keeps every compiled
/// object's `Accepted` condition in step with `verdicts`. Runs for the agent's lifetime.
pub async fn run_writer(
    client: Client,
    mut elector: Elector,
    stores: PolicyStores,
    mut verdicts: watch::Receiver<Option<Arc<Verdicts>>>,
    mut changes: watch::Receiver<u64>,
) {
    let mut tick = interval(RENEW);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut lease_failing = false;
    let mut announcer = Announcer::new(client.clone(), elector.holder());
    loop {
        tokio::select! {
            _ = tick.tick() => match elector.renew().await {
                Ok(_) => lease_failing = false,
                Err(e) if !lease_failing => {
                    lease_failing = true;
                    warn!(error = %e, "cannot reach the status lease; not writing status until it is held again");
                }
                Err(_) => {}
            },
            r = verdicts.changed() => if r.is_err() { return },
            r = changes.changed() => {
                if r.is_err() { return }
                // Let a burst of events (including the echoes of our own writes) settle.
                sleep(Duration::from_millis(200)).await;
            }
        }
        if !elector.is_leader() {
            continue;
        }
        let Some(v) = verdicts.borrow_and_update().clone() else {
            continue;
        };
        changes.borrow_and_update();
        // Only objects whose current generation is the one compiled: a newer spec will be
        // reported once the agent has compiled it.
        let compiled: BTreeMap<_, _> = v.objects.iter().map(|o| (o.key(), o.generation)).collect();
        let todo: Vec<PolicyObject> = stores
            .objects()
            .into_iter()
            .filter(|o| compiled.get(&o.key()) == Some(&o.generation))
            .collect();
        reconcile(&client, &announcer, &todo, &v.rejected).await;
        announcer.invalid_labels(&v.invalid_mode_labels).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::InForce;

    fn obj(status: Option<Value>) -> PolicyObject {
        PolicyObject {
            kind: "NamespaceFirewall".into(),
            namespace: Some("db".into()),
            name: "default".into(),
            uid: None,
            generation: Some(3),
            status,
        }
    }

    #[test]
    fn rejected_object_gets_false_with_the_field_error() {
        let r = Rejection {
            kind: "NamespaceFirewall".into(),
            namespace: Some("db".into()),
            name: "default".into(),
            reason: "InvalidSpec".into(),
            message: "spec.ingress[0].ports[0].port: must be 1-65535".into(),
            ..Rejection::default()
        };
        let c = desired(&obj(None), std::slice::from_ref(&r));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("False", "FailClosed", Some(3))
        );
        assert!(
            c.message
                .starts_with("InvalidSpec: spec.ingress[0].ports[0].port")
        );
        assert!(
            c.message
                .ends_with("enforced fail closed until it is fixed")
        );
        let kept = Rejection {
            in_force: InForce::LastAccepted,
            ..r
        };
        let c = desired(&obj(None), &[kept]);
        assert_eq!(c.reason, "LastAcceptedInForce");
        assert!(
            c.message
                .ends_with("its last accepted version stays in force until it is fixed")
        );
        // Another object's rejection does not touch this one.
        let other = Rejection {
            namespace: Some("web".into()),
            ..Default::default()
        };
        assert_eq!(desired(&obj(None), &[other]).status, "True");
    }

    #[test]
    fn unchanged_status_is_not_rewritten_and_transition_time_is_kept() {
        let want = desired(&obj(None), &[]);
        let first = patch_for(&obj(None), want.clone()).expect("first write");
        let status = first["status"].clone();
        assert_eq!(status["conditions"][0]["status"], "True");
        assert!(patch_for(&obj(Some(status.clone())), want.clone()).is_none());
        // A new generation rewrites the condition but keeps its transition time.
        let newer = Condition {
            observed_generation: Some(4),
            ..want
        };
        let second = patch_for(&obj(Some(status.clone())), newer).expect("generation moved");
        assert_eq!(
            second["status"]["conditions"][0]["lastTransitionTime"],
            status["conditions"][0]["lastTransitionTime"]
        );
        assert_eq!(second["status"]["conditions"][0]["observedGeneration"], 4);
    }

    #[test]
    fn other_conditions_are_kept() {
        let status = json!({"conditions": [{"type": "Reviewed", "status": "True", "reason": "Ok", "message": ""}]});
        let p = patch_for(&obj(Some(status)), desired(&obj(None), &[])).expect("write");
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Reviewed", "Accepted"]);
    }
}
