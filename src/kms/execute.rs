//! Execute step (KMS writes only): CreateKey, import of wrapped material, one call per Action.

use std::collections::BTreeMap;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, KeySpec as SdkKeySpec, KeyUsageType, OriginType, Tag,
    WrappingKeySpec as SdkWrappingKeySpec,
};
use jiff::Timestamp;

use super::{Client, KmsError};
use crate::material::{KeyMaterial, MaterialError, WrappingAlgorithm, WrappingKeySpec};
use crate::plan::{Action, DesiredKey};

/// A failed write: KMS refused it, or the material could not be wrapped.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error(transparent)]
    Material(#[from] MaterialError),
}

/// Material and wrapping choice for an import.
pub struct ImportInput<'a> {
    pub material: &'a KeyMaterial,
    pub algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
}

/// The key a CreateKey produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCreation {
    pub key_id: String,
    pub arn: String,
}

fn sdk_tags(tags: &BTreeMap<String, String>) -> Result<Vec<Tag>, KmsError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .tag_key(k)
                .tag_value(v)
                .build()
                .map_err(|e| KmsError::Rejected {
                    operation: "TagResource",
                    code: "InvalidTag".into(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// CreateKey and ReplicateKey are not idempotent: a retry after a lost answer (5xx, timeout)
/// would make a second key. They go out once; the controller finds a key whose creation was
/// in doubt by its owner tag (or the primary's replica list) before it tries again.
fn no_retries() -> aws_sdk_kms::config::Builder {
    aws_sdk_kms::config::Builder::default()
        .retry_config(aws_sdk_kms::config::retry::RetryConfig::disabled())
}

/// CreateKey with origin EXTERNAL, carrying every desired attribute that CreateKey accepts
/// (spec, usage, description, tags incl. ownership, policy, multi-region).
pub async fn create_key(client: &Client, desired: &DesiredKey) -> Result<KeyCreation, KmsError> {
    let mut request = client
        .create_key()
        .origin(OriginType::External)
        .key_spec(SdkKeySpec::from(desired.key_spec.as_str()))
        .key_usage(KeyUsageType::from(desired.key_usage.as_str()))
        .description(&desired.description)
        .multi_region(desired.multi_region)
        .set_tags(Some(sdk_tags(&desired.tags)?));
    if let Some(policy) = &desired.policy {
        request = request
            .policy(policy.to_string())
            .bypass_policy_lockout_safety_check(desired.bypass_policy_lockout_safety_check);
    }
    let out = request
        .customize()
        .config_override(no_retries())
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("CreateKey", e))?;
    let meta = out.key_metadata.ok_or_else(|| KmsError::Unavailable {
        operation: "CreateKey",
        message: "response without key metadata".into(),
    })?;
    Ok(KeyCreation {
        key_id: meta.key_id().to_string(),
        arn: meta.arn().unwrap_or_default().to_string(),
    })
}

/// ReplicateKey of a multi-region primary into `replica_region`, with the replica's own
/// description, tags and policy. Called on a client of the primary's region.
pub async fn replicate_key(
    primary_client: &Client,
    primary_key_id: &str,
    replica_region: &str,
    desired: &DesiredKey,
) -> Result<KeyCreation, KmsError> {
    let mut request = primary_client
        .replicate_key()
        .key_id(primary_key_id)
        .replica_region(replica_region)
        .description(&desired.description)
        .set_tags(Some(sdk_tags(&desired.tags)?));
    if let Some(policy) = &desired.policy {
        request = request
            .policy(policy.to_string())
            .bypass_policy_lockout_safety_check(desired.bypass_policy_lockout_safety_check);
    }
    let out = request
        .customize()
        .config_override(no_retries())
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("ReplicateKey", e))?;
    let meta = out
        .replica_key_metadata
        .ok_or_else(|| KmsError::Unavailable {
            operation: "ReplicateKey",
            message: "response without replica key metadata".into(),
        })?;
    Ok(KeyCreation {
        key_id: meta.key_id().to_string(),
        arn: meta.arn().unwrap_or_default().to_string(),
    })
}

/// GetParametersForImport, wrap locally, ImportKeyMaterial. The plaintext never leaves
/// `material`; only the wrapped bytes are sent.
pub async fn import_material(
    client: &Client,
    key_id: &str,
    input: &ImportInput<'_>,
    valid_to: Option<Timestamp>,
) -> Result<(), ExecuteError> {
    input
        .material
        .check_wrapping(input.algorithm, input.wrapping_key_spec)?;
    let params = client
        .get_parameters_for_import()
        .key_id(key_id)
        .wrapping_algorithm(AlgorithmSpec::from(input.algorithm.as_str()))
        .wrapping_key_spec(SdkWrappingKeySpec::from(input.wrapping_key_spec.as_str()))
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("GetParametersForImport", e))?;
    let (Some(token), Some(public_key)) = (params.import_token, params.public_key) else {
        return Err(KmsError::Unavailable {
            operation: "GetParametersForImport",
            message: "response without import token or public key".into(),
        }
        .into());
    };
    let wrapped = input.material.wrap(input.algorithm, public_key.as_ref())?;
    let mut request = client
        .import_key_material()
        .key_id(key_id)
        .import_token(token)
        .encrypted_key_material(Blob::new(wrapped));
    request = match valid_to {
        Some(t) => request
            .expiration_model(ExpirationModelType::KeyMaterialExpires)
            .valid_to(DateTime::from_secs(t.as_second())),
        None => request.expiration_model(ExpirationModelType::KeyMaterialDoesNotExpire),
    };
    request.send().await.map_err(|e| {
        if e.as_service_error()
            .is_some_and(|e| e.is_incorrect_key_material_exception())
        {
            KmsError::IncorrectKeyMaterial {
                operation: "ImportKeyMaterial",
            }
        } else {
            KmsError::from_sdk("ImportKeyMaterial", e)
        }
    })?;
    Ok(())
}

/// Performs one planned action on `key_id`.
pub async fn execute(
    client: &Client,
    key_id: &str,
    action: &Action,
    import: &ImportInput<'_>,
) -> Result<(), ExecuteError> {
    let op = action.name();
    match action {
        Action::ImportMaterial { valid_to } => {
            import_material(client, key_id, import, *valid_to).await
        }
        Action::CancelKeyDeletion => {
            sent(op, client.cancel_key_deletion().key_id(key_id).send()).await
        }
        Action::EnableKey => sent(op, client.enable_key().key_id(key_id).send()).await,
        Action::DisableKey => sent(op, client.disable_key().key_id(key_id).send()).await,
        Action::UpdateDescription(description) => {
            sent(
                op,
                client
                    .update_key_description()
                    .key_id(key_id)
                    .description(description)
                    .send(),
            )
            .await
        }
        Action::TagResource(tags) => {
            sent(
                op,
                client
                    .tag_resource()
                    .key_id(key_id)
                    .set_tags(Some(sdk_tags(tags)?))
                    .send(),
            )
            .await
        }
        Action::UntagResource(keys) => {
            sent(
                op,
                client
                    .untag_resource()
                    .key_id(key_id)
                    .set_tag_keys(Some(keys.clone()))
                    .send(),
            )
            .await
        }
        Action::CreateAlias(alias) => {
            sent(
                op,
                client
                    .create_alias()
                    .alias_name(alias)
                    .target_key_id(key_id)
                    .send(),
            )
            .await
        }
        Action::DeleteAlias(alias) => {
            sent(op, client.delete_alias().alias_name(alias).send()).await
        }
        Action::PutKeyPolicy {
            policy,
            bypass_lockout_check,
        } => {
            let request = client
                .put_key_policy()
                .key_id(key_id)
                .policy_name("default")
                .policy(policy)
                .bypass_policy_lockout_safety_check(*bypass_lockout_check);
            sent(op, request.send()).await
        }
    }
}

/// Awaits a KMS write whose output is not needed, classifying its error.
async fn sent<O, E, R>(
    operation: &'static str,
    call: impl std::future::Future<Output = Result<O, SdkError<E, R>>>,
) -> Result<(), ExecuteError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    call.await
        .map(drop)
        .map_err(|e| ExecuteError::Kms(KmsError::from_sdk(operation, e)))
}

/// How a deletion request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeletionOutcome {
    Scheduled,
    /// The key was already gone or already pending deletion: nothing to do.
    AlreadyGone,
}

/// ScheduleKeyDeletion with the pending window. A key already deleted or already pending
/// deletion counts as done.
pub async fn schedule_deletion(
    client: &Client,
    key_id: &str,
    pending_window_days: i32,
) -> Result<DeletionOutcome, KmsError> {
    match client
        .schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(pending_window_days)
        .send()
        .await
    {
        Ok(_) => Ok(DeletionOutcome::Scheduled),
        Err(e) => match KmsError::from_sdk("ScheduleKeyDeletion", e) {
            KmsError::NotFound { .. } => Ok(DeletionOutcome::AlreadyGone),
            KmsError::InvalidState { .. } => {
                // Already PendingDeletion (or PendingReplicaDeletion) is done; other states are
                // real refusals.
                match super::observe::describe(client, key_id).await? {
                    None => Ok(DeletionOutcome::AlreadyGone),
                    Some(meta)
                        if matches!(
                            meta.key_state().map(|s| s.as_str()),
                            Some("PendingDeletion" | "PendingReplicaDeletion")
                        ) =>
                    {
                        Ok(DeletionOutcome::AlreadyGone)
                    }
                    Some(meta) => Err(KmsError::InvalidState {
                        operation: "ScheduleKeyDeletion",
                        message: format!(
                            "key is {}",
                            meta.key_state()
                                .map(|s| s.as_str())
                                .unwrap_or("in an unknown state")
                        ),
                    }),
                }
            }
            other => Err(other),
        },
    }
}
