//! Template status (status writes, events): every `AwsKeyPolicyTemplate` gets a `Ready`
//! condition saying whether it renders into a key policy KMS accepts (checked for a sample key,
//! with the same code `keyfleet validate` and the keys use), and `keys`, how many AwsKeys and
//! AwsReplicaKeys name it. The count follows the keys within seconds: the key watches feed a
//! [`TemplateUse`] index, which triggers the templates whose count changed.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::{self, BoxStream};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{PredicateConfig, WatchStreamExt, reflector, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::Context;
use super::managed_key::ManagedKey;
use super::run::{Guarded, reconcile_relevant, scoped, scopes, watch_config};
use super::status;
use super::template_use::{KeyEvent, TemplateUse, WatchId};
use crate::api::conditions::{READY, find_condition, set_readiness};
use crate::api::{
    AwsKey, AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, AwsKeyPolicyTemplateStatus,
    AwsReplicaKey,
};
use crate::desired::{render_template_sample, sample_key};

/// The Ready reason of a template that renders.
pub const RENDERED: &str = "Rendered";

/// How soon a template is looked at again while the key watches are still listing.
const UNTIL_KEYS_LISTED: Duration = Duration::from_secs(1);
/// How soon a failed status write is retried.
const RETRY: Duration = Duration::from_secs(15);

/// Whether a template renders, and the words for its Ready condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateVerdict {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

/// Renders the template for a sample key: Ready with the policy's size, or the refusal.
pub fn verdict(template: &AwsKeyPolicyTemplateSpec) -> TemplateVerdict {
    match render_template_sample(template) {
        Ok(policy) => TemplateVerdict {
            ready: true,
            reason: RENDERED,
            message: format!(
                "renders into a key policy of {} bytes for a key such as {}",
                policy.to_string().len(),
                sample_key().key_arn
            ),
        },
        Err(e) => TemplateVerdict {
            ready: false,
            reason: e.reason,
            message: e.to_string(),
        },
    }
}

/// The status for a verdict and key count, keeping the conditions' transition times from
/// `old`. A template that does not render is stalled: only a change of its spec clears it.
pub fn status_for(
    old: Option<&AwsKeyPolicyTemplateStatus>,
    verdict: &TemplateVerdict,
    keys: i64,
    generation: Option<i64>,
) -> AwsKeyPolicyTemplateStatus {
    let mut status = AwsKeyPolicyTemplateStatus {
        observed_generation: generation,
        keys,
        conditions: old.map(|s| s.conditions.clone()).unwrap_or_default(),
    };
    set_readiness(
        &mut status.conditions,
        verdict.ready,
        false,
        verdict.reason,
        &verdict.message,
        generation,
    );
    status
}

/// What an event reports: the Ready condition's status and reason, and while the template does
/// not render, the problem (a spec edit that trades one problem for another is reported too;
/// one that only changes the size of a policy that renders is not).
fn event_worthy(status: Option<&AwsKeyPolicyTemplateStatus>) -> Option<(&str, &str, &str)> {
    find_condition(&status?.conditions, READY).map(|c| {
        let problem = if c.status == "True" { "" } else { &c.message };
        (c.status.as_str(), c.reason.as_str(), problem)
    })
}

/// What the template controller shares between its watches and reconciles.
struct TemplateContext {
    ctx: Arc<Context>,
    usage: Mutex<TemplateUse>,
}

impl TemplateContext {
    fn usage(&self) -> MutexGuard<'_, TemplateUse> {
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn reconcile(
    template: Arc<AwsKeyPolicyTemplate>,
    tc: Arc<TemplateContext>,
) -> Result<Requeue, kube::Error> {
    let name = template.name_any();
    let keys = {
        let usage = tc.usage();
        if !usage.synced() {
            // A count from a partial list would be written, then corrected: wait for it.
            return Ok(Requeue::requeue(UNTIL_KEYS_LISTED));
        }
        i64::from(usage.count(&name))
    };
    let verdict = verdict(&template.spec);
    let old = template.status.as_ref();
    let new = status_for(old, &verdict, keys, template.meta().generation);
    // Written only when it changed; the write does not trigger this controller again (its
    // watch passes spec changes only).
    let api: Api<AwsKeyPolicyTemplate> = Api::all(tc.ctx.client.clone());
    let written = old != Some(&new);
    status::write(&api, &name, old, &new).await?;
    let requeue = tc.ctx.settings.resync_interval;
    debug!(template = %name, keys, status_written = written, requeue_in_s = requeue.as_secs(), "template reconciled");
    if event_worthy(old) != event_worthy(Some(&new)) {
        let type_ = if verdict.ready {
            info!(template = %name, message = %verdict.message, "policy template renders");
            EventType::Normal
        } else {
            warn!(template = %name, reason = verdict.reason, message = %verdict.message, "policy template does not render");
            EventType::Warning
        };
        tc.ctx
            .publish(&*template, type_, verdict.reason, verdict.message, "Render")
            .await;
    }
    Ok(Requeue::requeue(requeue))
}

fn error_policy(
    template: Arc<AwsKeyPolicyTemplate>,
    error: &kube::Error,
    _tc: Arc<TemplateContext>,
) -> Requeue {
    warn!(template = %template.name_any(), %error, "writing the policy template status failed; retrying");
    Requeue::requeue(RETRY)
}

/// The templates whose key count an event of the `K` watch of one scope changed.
fn template_changes<K: ManagedKey>(
    tc: &Arc<TemplateContext>,
    namespace: &Option<String>,
) -> BoxStream<'static, ObjectRef<AwsKeyPolicyTemplate>> {
    let api: Api<Guarded<K>> = scoped(&tc.ctx.client, namespace);
    let watch = tc.usage().add_watch();
    let tc = Arc::clone(tc);
    watcher(api, watch_config())
        .default_backoff()
        .flat_map(move |event| {
            let changed = match event {
                Ok(event) => record(&mut tc.usage(), watch, event),
                Err(error) => {
                    warn!(kind = K::KIND, %error, "watching keys for their policy templates failed; retrying");
                    vec![]
                }
            };
            stream::iter(changed.into_iter().map(|t| ObjectRef::new(&t)))
        })
        .boxed()
}

/// Records one watch event in the index; returns the templates whose count changed.
fn record<K: ManagedKey>(
    usage: &mut TemplateUse,
    watch: WatchId,
    event: watcher::Event<Guarded<K>>,
) -> Vec<String> {
    let present = |usage: &mut TemplateUse, key: &Guarded<K>| {
        let template = key
            .0
            .as_ref()
            .ok()
            .and_then(|k| k.policy()?.template_name());
        usage.record(
            watch,
            KeyEvent::Present {
                namespace: &key.namespace().unwrap_or_default(),
                name: &key.name_any(),
                template,
            },
        )
    };
    match event {
        watcher::Event::Init => usage.record(watch, KeyEvent::ListStarted),
        watcher::Event::InitApply(key) | watcher::Event::Apply(key) => present(usage, &key),
        watcher::Event::Delete(key) => usage.record(
            watch,
            KeyEvent::Deleted {
                namespace: &key.namespace().unwrap_or_default(),
                name: &key.name_any(),
            },
        ),
        watcher::Event::InitDone => usage.record(watch, KeyEvent::ListDone),
    }
}

/// Runs the template status controller until `shutdown`: templates (their spec changes), and
/// the AwsKeys and AwsReplicaKeys of every watched namespace (a key that starts or stops
/// naming a template).
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let scopes = scopes(&ctx.settings);
    let tc = Arc::new(TemplateContext {
        ctx,
        usage: Mutex::new(TemplateUse::default()),
    });
    let changes = stream::select_all(scopes.iter().flat_map(|ns| {
        [
            template_changes::<AwsKey>(&tc, ns),
            template_changes::<AwsReplicaKey>(&tc, ns),
        ]
    }));
    let (store, writer) = reflector::store();
    let templates = watcher(Api::<AwsKeyPolicyTemplate>::all(client), watch_config())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(reconcile_relevant, PredicateConfig::default());
    Controller::for_stream(templates, store)
        .reconcile_on(changes)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, tc)
        // Failed writes are logged by the error policy; a key naming a template that does not
        // exist triggers nothing to reconcile.
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::conditions::{RECONCILING, STALLED};

    fn spec(json: serde_json::Value) -> AwsKeyPolicyTemplateSpec {
        serde_json::from_value(json).unwrap()
    }

    fn condition(status: &AwsKeyPolicyTemplateStatus, type_: &str) -> (String, String, String) {
        let c = find_condition(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    #[test]
    fn a_template_that_renders_is_ready_and_counts_its_keys() {
        let v = verdict(&spec(serde_json::json!({
            "document": r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow",
              "Principal":{"AWS":"arn:${Partition}:iam::${AccountId}:root"},
              "Action":"kms:*","Resource":"${KeyArn}"}]}"#
        })));
        assert!(v.ready, "{v:?}");
        assert_eq!(v.reason, "Rendered");
        assert!(
            v.message
                .contains("arn:aws:kms:us-east-1:111122223333:key/1234abcd"),
            "{v:?}"
        );
        let status = status_for(None, &v, 3, Some(2));
        assert_eq!(status.keys, 3);
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(condition(&status, READY).0, "True");
        assert_eq!(
            condition(&status, STALLED),
            ("False".into(), "Rendered".into(), String::new())
        );
        assert_eq!(condition(&status, RECONCILING).0, "False");
        let shortcuts = verdict(&spec(serde_json::json!({"keyUsersRoles": ["app"]})));
        assert!(shortcuts.ready, "{shortcuts:?}");
    }

    #[test]
    fn a_template_that_does_not_render_is_stalled_with_the_problem() {
        for (template, field, words) in [
            (
                serde_json::json!({"document": r#"{"Resource":"${KeyARN}"}"#}),
                "spec.document",
                "unknown placeholder ${KeyARN}",
            ),
            (
                serde_json::json!({"document": "[1]"}),
                "spec.document",
                "must be a JSON object",
            ),
            (
                serde_json::json!({"keyUsers": ["not a user"]}),
                "spec",
                "keyUsers[0]",
            ),
            (
                serde_json::json!({"document": "{}", "keyUsers": ["a"]}),
                "spec",
                "exactly one of",
            ),
        ] {
            let v = verdict(&spec(template.clone()));
            assert!(!v.ready, "{template}");
            assert_eq!(v.reason, "PolicyTemplateInvalid", "{template}");
            assert!(v.message.starts_with(&format!("{field}: ")), "{v:?}");
            assert!(v.message.contains(words), "{v:?}");
            let status = status_for(None, &v, 0, Some(1));
            assert_eq!(
                condition(&status, READY),
                ("False".into(), v.reason.into(), v.message.clone())
            );
            assert_eq!(
                condition(&status, STALLED),
                ("True".into(), v.reason.into(), v.message.clone())
            );
            assert_eq!(condition(&status, RECONCILING).0, "False");
        }
    }

    #[test]
    fn events_follow_readiness_and_the_problem_not_the_size() {
        let typo = verdict(&spec(
            serde_json::json!({"document": r#"{"R":"${KeyARN}"}"#}),
        ));
        let not_json = verdict(&spec(serde_json::json!({"document": "{"})));
        let small = verdict(&spec(serde_json::json!({"keyUsersRoles": ["app"]})));
        let large = verdict(&spec(
            serde_json::json!({"keyUsersRoles": ["app", "batch"]}),
        ));
        let typo = status_for(None, &typo, 0, Some(1));
        let not_json = status_for(Some(&typo), &not_json, 0, Some(2));
        let small = status_for(Some(&not_json), &small, 0, Some(3));
        let large = status_for(Some(&small), &large, 0, Some(4));
        assert_eq!(event_worthy(None), None);
        assert_ne!(event_worthy(Some(&typo)), event_worthy(Some(&not_json)));
        assert_ne!(event_worthy(Some(&not_json)), event_worthy(Some(&small)));
        assert_ne!(small, large, "the message says the new size");
        assert_eq!(event_worthy(Some(&small)), event_worthy(Some(&large)));
    }

    #[test]
    fn an_unchanged_verdict_keeps_the_status_equal_so_nothing_is_written() {
        let v = verdict(&spec(serde_json::json!({"keyUsersRoles": ["app"]})));
        let mut first = status_for(None, &v, 2, Some(1));
        for c in &mut first.conditions {
            c.last_transition_time =
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH);
        }
        assert_eq!(status_for(Some(&first), &v, 2, Some(1)), first);
        assert_ne!(status_for(Some(&first), &v, 1, Some(1)), first);
        assert_ne!(status_for(Some(&first), &v, 2, Some(2)), first);
    }
}
