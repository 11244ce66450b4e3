//! Execute step (KMS writes only): CreateKey, import of wrapped material, one call per Action.

use std::collections::BTreeMap;

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::{Blob, DateTime};
use aws_sdk_kms::types::{
    AlgorithmSpec, ExpirationModelType, ImportType, KeyMetadata, KeySpec as SdkKeySpec,
    KeyUsageType, OriginType, Tag, WrappingKeySpec as SdkWrappingKeySpec,
};
use jiff::Timestamp;

use super::{Client, KmsError};
use crate::api::{KeyFamily, WrappingAlgorithm, WrappingKeySpec};
use crate::material::{ImportableMaterial, MaterialError};
use crate::plan::{Action, DesiredKey, MaterialState, ObservedKey};

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
    pub material: &'a dyn ImportableMaterial,
    pub algorithm: WrappingAlgorithm,
    pub wrapping_key_spec: WrappingKeySpec,
    /// `KeyMaterialDescription`: where the material came from (never the material). KMS takes
    /// it for symmetric keys only; it is left out for the others.
    pub description: Option<&'a str>,
}

/// The key a CreateKey produced.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyCreation {
    pub key_id: String,
    pub arn: String,
    /// A new key as CreateKey's answer describes it, with the tags it was made with, no alias
    /// and KMS's default policy (never a desired one): what a first observation would read,
    /// known without reading it. None for a replica: its tags are not reliably in the answer
    /// (some implementations copy the primary's and report none).
    pub observed: Option<ObservedKey>,
}

impl KeyCreation {
    /// The key `operation` (CreateKey, ReplicateKey) reports in its answer; made with `tags`
    /// when they are known.
    fn from_metadata(
        operation: &'static str,
        metadata: Option<KeyMetadata>,
        tags: Option<BTreeMap<String, String>>,
    ) -> Result<KeyCreation, KmsError> {
        let meta = metadata.ok_or_else(|| KmsError::Unavailable {
            operation,
            message: "response without key metadata".into(),
        })?;
        let observed = match tags {
            Some(tags) => Some(ObservedKey {
                tags,
                metadata_read: true,
                policy: None,
                policy_read: true,
                ..super::observe::from_metadata(operation, &meta)?
            }),
            None => None,
        };
        Ok(KeyCreation {
            key_id: meta.key_id().to_string(),
            arn: meta.arn().unwrap_or_default().to_string(),
            observed,
        })
    }
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

/// Sends a CreateKey or ReplicateKey request once ([`no_retries`]), classifying its error.
macro_rules! send_once {
    ($request:expr, $operation:literal) => {
        $request
            .customize()
            .config_override(no_retries())
            .send()
            .await
            .map_err(|e| KmsError::from_sdk($operation, e))
    };
}

/// CreateKey with origin EXTERNAL, carrying spec, usage, description, tags (incl. ownership)
/// and multi-region. The key starts with the AWS default policy: the desired policy is
/// rendered for the key's ARN and lockout-checked, then applied by the first sync round.
pub async fn create_key(client: &Client, desired: &DesiredKey) -> Result<KeyCreation, KmsError> {
    let request = client
        .create_key()
        .origin(OriginType::External)
        .key_spec(SdkKeySpec::from(desired.key_spec.as_str()))
        .key_usage(KeyUsageType::from(desired.key_usage.as_str()))
        .description(&desired.description)
        .multi_region(desired.multi_region)
        .set_tags(Some(sdk_tags(&desired.tags)?));
    let out = send_once!(request, "CreateKey")?;
    KeyCreation::from_metadata("CreateKey", out.key_metadata, Some(desired.tags.clone()))
}

/// ReplicateKey of a multi-region primary into `replica_region`, with the replica's own
/// description and tags (its policy follows in the first sync round, as for CreateKey).
/// Called on a client of the primary's region.
pub async fn replicate_key(
    primary_client: &Client,
    primary_key_id: &str,
    replica_region: &str,
    desired: &DesiredKey,
) -> Result<KeyCreation, KmsError> {
    let request = primary_client
        .replicate_key()
        .key_id(primary_key_id)
        .replica_region(replica_region)
        .description(&desired.description)
        .set_tags(Some(sdk_tags(&desired.tags)?));
    let out = send_once!(request, "ReplicateKey")?;
    KeyCreation::from_metadata("ReplicateKey", out.replica_key_metadata, None)
}

/// Which material an import brings (KMS `ImportType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportKind<'a> {
    /// KMS's default: the first material, or the material the key already holds.
    Default,
    /// New material for a rotation (primary only).
    New,
    /// Material the key (set) already knows: a replica catching up with its primary.
    Existing { key_material_id: Option<&'a str> },
}

/// GetParametersForImport, wrap locally, ImportKeyMaterial. The plaintext never leaves
/// `material`; only the wrapped bytes are sent.
pub async fn import_material(
    client: &Client,
    key_id: &str,
    input: &ImportInput<'_>,
    valid_to: Option<Timestamp>,
) -> Result<(), ExecuteError> {
    import_material_as(client, key_id, input, valid_to, ImportKind::Default)
        .await
        .map(drop)
}

/// [`import_material`] with an explicit import type; returns the KeyMaterialId KMS assigned
/// (None when KMS does not report one).
pub async fn import_material_as(
    client: &Client,
    key_id: &str,
    input: &ImportInput<'_>,
    valid_to: Option<Timestamp>,
    kind: ImportKind<'_>,
) -> Result<Option<String>, ExecuteError> {
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
    if input.material.spec().family() == KeyFamily::Symmetric {
        request = request.set_key_material_description(input.description.map(str::to_string));
    }
    request = match kind {
        ImportKind::Default => request,
        ImportKind::New => request.import_type(ImportType::NewKeyMaterial),
        ImportKind::Existing { key_material_id } => request
            .import_type(ImportType::ExistingKeyMaterial)
            .set_key_material_id(key_material_id.map(str::to_string)),
    };
    let out = request.send().await.map_err(|e| {
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
    Ok(out.key_material_id)
}

/// Whether the material with this KeyMaterialId is ready for RotateKeyOnDemand (state
/// PENDING_ROTATION: every replica holds it), per ListKeyRotations. Material pending rotation
/// is listed only with IncludeKeyMaterial ALL_KEY_MATERIAL (the default, ROTATIONS_ONLY, lists
/// completed rotations alone).
pub async fn rotation_ready(
    client: &Client,
    key_id: &str,
    key_material_id: &str,
) -> Result<bool, KmsError> {
    let materials = super::observe::materials(client, key_id).await?;
    Ok(materials.unwrap_or_default().iter().any(|m| {
        m.key_material_id == key_material_id
            && m.state == MaterialState::PendingRotation { every_region: true }
    }))
}

/// DeleteImportedKeyMaterial of the current material: the key goes to PendingImport and cannot
/// be used until the same material is imported again. A key already gone counts as done.
pub async fn delete_material(client: &Client, key_id: &str) -> Result<DeletionOutcome, KmsError> {
    let answer = client
        .delete_imported_key_material()
        .key_id(key_id)
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("DeleteImportedKeyMaterial", e));
    deletion_outcome(answer)
}

/// Performs one planned action on `key_id`; returns the KeyMaterialId of an import (when KMS
/// reports one). `import` is the material an import action brings (a retained Secret's for
/// [`Action::ImportRetainedMaterial`]).
pub async fn execute(
    client: &Client,
    key_id: &str,
    action: &Action,
    import: &ImportInput<'_>,
) -> Result<Option<String>, ExecuteError> {
    match action {
        Action::ImportMaterial { valid_to } => {
            import_material_as(client, key_id, import, *valid_to, ImportKind::Default).await
        }
        Action::ImportNewMaterial { valid_to } => {
            import_material_as(client, key_id, import, *valid_to, ImportKind::New).await
        }
        Action::ImportRotationMaterial {
            valid_to,
            key_material_id,
        } => {
            let kind = ImportKind::Existing {
                key_material_id: key_material_id.as_deref(),
            };
            import_material_as(client, key_id, import, *valid_to, kind).await
        }
        Action::ImportRetainedMaterial {
            key_material_id,
            valid_to,
            ..
        } => {
            let kind = ImportKind::Existing {
                key_material_id: Some(key_material_id),
            };
            import_material_as(client, key_id, import, *valid_to, kind).await
        }
        other => execute_write(client, key_id, other).await.map(|()| None),
    }
}

/// Performs one planned action that is not an import.
async fn execute_write(client: &Client, key_id: &str, action: &Action) -> Result<(), ExecuteError> {
    let op = action.name();
    match action {
        Action::ImportMaterial { .. }
        | Action::ImportNewMaterial { .. }
        | Action::ImportRotationMaterial { .. }
        | Action::ImportRetainedMaterial { .. } => Ok(()),
        Action::DeleteMaterial { key_material_id } => {
            let request = client
                .delete_imported_key_material()
                .key_material_id(key_material_id);
            sent(op, request.key_id(key_id).send()).await
        }
        Action::RotateOnDemand => {
            sent(op, client.rotate_key_on_demand().key_id(key_id).send()).await
        }
        Action::CancelKeyDeletion => {
            sent(op, client.cancel_key_deletion().key_id(key_id).send()).await
        }
        Action::EnableKey => sent(op, client.enable_key().key_id(key_id).send()).await,
        Action::DisableKey => sent(op, client.disable_key().key_id(key_id).send()).await,
        Action::UpdateDescription(description) => {
            let request = client.update_key_description().description(description);
            sent(op, request.key_id(key_id).send()).await
        }
        Action::TagResource(tags) => {
            let request = client.tag_resource().set_tags(Some(sdk_tags(tags)?));
            sent(op, request.key_id(key_id).send()).await
        }
        Action::UntagResource(keys) => {
            let request = client.untag_resource().set_tag_keys(Some(keys.clone()));
            sent(op, request.key_id(key_id).send()).await
        }
        Action::CreateAlias(alias) => {
            let request = client.create_alias().alias_name(alias);
            sent(op, request.target_key_id(key_id).send()).await
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
    let answer = client
        .schedule_key_deletion()
        .key_id(key_id)
        .pending_window_in_days(pending_window_days)
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("ScheduleKeyDeletion", e));
    match answer {
        Err(KmsError::InvalidState { .. }) => {
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
        answer => deletion_outcome(answer),
    }
}

/// A deletion request's answer: scheduled, or the key already gone (NotFound).
fn deletion_outcome<O>(answer: Result<O, KmsError>) -> Result<DeletionOutcome, KmsError> {
    match answer {
        Ok(_) => Ok(DeletionOutcome::Scheduled),
        Err(KmsError::NotFound { .. }) => Ok(DeletionOutcome::AlreadyGone),
        Err(other) => Err(other),
    }
}
