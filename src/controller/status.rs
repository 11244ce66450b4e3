//! Status step: builds AwsKey status from what was observed and done, and writes it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::api::conditions::{condition, find_condition, set_condition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{KmsKeyStatus, ReplicaRef};
use crate::plan::ObservedKey;

/// The field manager of every write keyfleet makes.
pub const FIELD_MANAGER: &str = "keyfleet";

/// Copies what KMS reports into the status.
pub fn record_observed(status: &mut KmsKeyStatus, observed: &ObservedKey, region: &str) {
    status.key_id = Some(observed.identity.key_id.clone());
    status.arn = Some(observed.identity.key_arn.clone());
    status.key_state = Some(observed.state.as_str().to_string());
    status.region = Some(region.to_string());
    status.account_id = Some(observed.identity.account_id.clone()).filter(|a| !a.is_empty());
    status.key_spec = observed.key_spec.map(|s| s.as_str().to_string());
    status.key_usage = observed.key_usage.map(|u| u.as_str().to_string());
    status.material_valid_to = observed.valid_to.map(Time);
}

/// The replicas of a multi-region primary, as KMS lists them.
pub fn replicas(observed: &ObservedKey) -> Vec<ReplicaRef> {
    observed
        .replicas
        .iter()
        .map(|(region, arn)| ReplicaRef {
            region: region.clone(),
            arn: arn.clone(),
        })
        .collect()
}

/// Sets the Ready condition; returns true when its status or reason changed.
pub fn set_ready(
    status: &mut KmsKeyStatus,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> bool {
    let before = find_condition(&status.conditions, crate::api::conditions::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    set_condition(
        &mut status.conditions,
        condition(
            crate::api::conditions::READY,
            ready,
            reason,
            message,
            generation,
        ),
    );
    status.observed_generation = generation;
    let after = find_condition(&status.conditions, crate::api::conditions::READY)
        .map(|c| (c.status.clone(), c.reason.clone()));
    before != after
}

/// Sets `MaterialWillExpire` for NON_CURRENT materials about to expire unrenewed (removes it
/// when there are none); returns its message when it is new or says something new (the
/// Warning event's note).
pub fn set_expiring(
    status: &mut KmsKeyStatus,
    expiring: &[crate::plan::ExpiringMaterial],
    generation: Option<i64>,
) -> Option<String> {
    use crate::api::conditions::MATERIAL_WILL_EXPIRE;
    if expiring.is_empty() {
        status
            .conditions
            .retain(|c| c.type_ != MATERIAL_WILL_EXPIRE);
        return None;
    }
    let materials: Vec<String> = expiring
        .iter()
        .map(|m| format!("{} on {}", m.key_material_id, m.valid_to))
        .collect();
    let message = format!(
        "NON_CURRENT material {} expires and no keyMaterial.retained Secret holds it, so keyfleet cannot renew it: then everything it encrypted becomes undecryptable and KMS puts the key in PendingImport. List a Secret holding it in keyMaterial.retained (or retire it on purpose)",
        materials.join(", ")
    );
    let before =
        find_condition(&status.conditions, MATERIAL_WILL_EXPIRE).map(|c| c.message.clone());
    set_condition(
        &mut status.conditions,
        condition(
            MATERIAL_WILL_EXPIRE,
            true,
            MATERIAL_WILL_EXPIRE,
            message.clone(),
            generation,
        ),
    );
    (before.as_deref() != Some(message.as_str())).then_some(message)
}

/// Sets the kstatus conditions that go with a Ready verdict: `Stalled` and `Reconciling`, each
/// True (with the Ready reason and message) or False.
pub fn set_progress(
    status: &mut KmsKeyStatus,
    stalled: bool,
    reconciling: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    use crate::api::conditions::{RECONCILING, STALLED};
    for (type_, on) in [(STALLED, stalled), (RECONCILING, reconciling)] {
        let message = if on { message } else { "" };
        set_condition(
            &mut status.conditions,
            condition(type_, on, reason, message, generation),
        );
    }
}

/// A JSON merge patch turning `old` into `new`: fields that disappeared are set to null.
pub fn merge_patch<S: Serialize>(old: Option<&S>, new: &S) -> Value {
    let mut new_value = serde_json::to_value(new).unwrap_or_else(|_| json!({}));
    if let (Some(old), Some(map)) = (
        old.and_then(|o| serde_json::to_value(o).ok()),
        new_value.as_object_mut(),
    ) && let Some(old_map) = old.as_object()
    {
        for key in old_map.keys() {
            if !map.contains_key(key) {
                map.insert(key.clone(), Value::Null);
            }
        }
    }
    json!({ "status": new_value })
}

/// Writes the status when it differs from what the object carries; returns the
/// resourceVersion the write made (None: nothing to write).
pub async fn write<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
) -> Result<Option<String>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(new) {
        return Ok(None);
    }
    let patch = merge_patch(old, new);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|written| written.meta().resource_version.clone())
}

/// Writes the status only if the object is still the version the caller read: the merge patch
/// carries `metadata.resourceVersion`, so the API answers 409 Conflict when another writer (a
/// newer leader) changed the object since. For writes that record an intent, which a stale
/// writer must not overwrite. Objects read from the API always carry a resourceVersion.
pub async fn write_if_unchanged<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    old: Option<&S>,
    new: &S,
) -> Result<Option<String>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let mut patch = merge_patch(old, new);
    if let Some(version) = resource_version {
        patch["metadata"] = json!({ "resourceVersion": version });
    }
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|written| written.meta().resource_version.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_nulls_removed_fields() {
        use crate::api::AwsKeyStatus;
        let key = KmsKeyStatus {
            key_id: Some("a".into()),
            ..Default::default()
        };
        let old = AwsKeyStatus {
            key: key.clone(),
            create_started_at: Some(Time(jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        };
        let new = AwsKeyStatus {
            key,
            ..Default::default()
        };
        let patch = merge_patch(Some(&old), &new);
        assert_eq!(patch["status"]["createStartedAt"], Value::Null);
        assert_eq!(patch["status"]["keyId"], "a");
    }
}
