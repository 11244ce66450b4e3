//! Kubernetes events (events.k8s.io/v1) about keyfleet's objects, each created on its own.
//!
//! kube's `Recorder` keeps every event it published for six minutes, to fold a repeat into a
//! series: a roll-out publishes a few events per key, so at 1,000 keys that cache held MiBs and at
//! 10,000 tens of MiB. keyfleet publishes an event per change (a KMS write, a Ready transition),
//! rarely the same one twice in six minutes, so it creates each event and keeps nothing.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};

/// Creates events as `reporter`.
pub struct EventPublisher {
    client: kube::Client,
    reporter: Reporter,
}

impl EventPublisher {
    pub fn new(client: kube::Client, reporter: Reporter) -> EventPublisher {
        EventPublisher { client, reporter }
    }

    /// Creates the event `ev` about `regarding`, in its namespace (`default` for a cluster-scoped
    /// object), named as kube's recorder names them: `<object name>.<time in ns, hex>`.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let now = jiff::Timestamp::now();
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let controller = &self.reporter.controller;
        let event = K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            note: ev.note.clone(),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_string()),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        Api::<K8sEvent>::namespaced(self.client.clone(), namespace)
            .create(&PostParams::default(), &event)
            .await
            .map(|_| ())
    }
}
