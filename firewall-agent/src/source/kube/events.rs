//! Kubernetes Events where `kubectl describe` and `kubectl events` show them: a Warning on a
//! policy object when it becomes rejected (the reason says what stands in for it), and on a
//! Namespace whose mode label is no mode. Only the status writer (the Lease holder) posts them,
//! so a change makes one Event in the cluster, not one per node.
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use tracing::warn;

use super::PolicyObject;
use crate::{
    compiler::{InvalidModeLabel, MODE_LABEL},
    crd::Condition,
};

/// The reporting controller Events name.
const CONTROLLER: &str = "bulkhead-agent";

/// Posts the Events, each once per change.
pub struct Announcer {
    recorder: Recorder,
    /// (namespace, value) of the invalid labels already announced.
    labels: BTreeSet<(String, String)>,
}

impl Announcer {
    /// `holder`: this agent's Lease identity (its node name), the Events' reporting instance.
    pub fn new(client: Client, holder: &str) -> Self {
        let reporter = Reporter {
            controller: CONTROLLER.to_owned(),
            instance: Some(holder.to_owned()),
        };
        Self {
            recorder: Recorder::new(client, reporter),
            labels: BTreeSet::new(),
        }
    }

    /// A policy object's `Accepted` condition was just written `False`.
    pub async fn rejected(&self, obj: &PolicyObject, condition: &Condition) {
        let regarding = ObjectReference {
            api_version: Some("bulkhead.dev/v1alpha1".to_owned()),
            kind: Some(obj.kind.clone()),
            namespace: obj.namespace.clone(),
            name: Some(obj.name.clone()),
            uid: obj.uid.clone(),
            ..ObjectReference::default()
        };
        self.post(&regarding, &condition.reason, &condition.message)
            .await;
    }

    /// Announces each invalid mode label not announced yet; forgets the ones fixed since.
    pub async fn invalid_labels(&mut self, labels: &[InvalidModeLabel]) {
        let now: BTreeSet<(String, String)> = labels
            .iter()
            .map(|l| (l.namespace.clone(), l.value.clone()))
            .collect();
        for l in labels {
            if self
                .labels
                .contains(&(l.namespace.clone(), l.value.clone()))
            {
                continue;
            }
            let regarding = ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Namespace".to_owned()),
                name: Some(l.namespace.clone()),
                ..ObjectReference::default()
            };
            let note = format!(
                "label {MODE_LABEL}={:?} is no mode (expected enforce, monitor or off, in any case); the namespace stays in {} ({})",
                l.value,
                l.in_force.mode,
                l.in_force.source.as_str()
            );
            self.post(&regarding, "InvalidModeLabel", &note).await;
        }
        self.labels = now;
    }

    async fn post(&self, regarding: &ObjectReference, reason: &str, note: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_owned(),
            // The API caps a note at 1 kB; a long list of field errors is cut, not refused.
            note: Some(note.chars().take(1000).collect()),
            action: "Validate".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            warn!(
                object = regarding.name.as_deref().unwrap_or_default(),
                error = %e,
                "posting an Event failed"
            );
        }
    }
}
