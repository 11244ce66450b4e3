//! Observe step (KMS reads only): describe a key, its tags, aliases and policy → ObservedKey.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::types::{IncludeKeyMaterial, KeyMetadata};
use aws_smithy_async::future::pagination_stream::PaginationStream;

use super::{Client, KmsError};
use crate::api::{KeySpec, KeyUsage};
use crate::plan::{KeyState, MaterialState, OWNER_UID_TAG, ObservedKey, ObservedMaterial};
use crate::policy::KeyIdentity;

/// How much of a key to read. A resync of a converged key only describes it; a deep drift read
/// (`metadata`) happens after a spec change, until the key is Ready, and every drift interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadDepth {
    /// A deep drift read is happening now: read tags and aliases besides DescribeKey.
    pub metadata: bool,
    /// Read the key policy (only when the AwsKey declares one).
    pub policy: bool,
}

impl ReadDepth {
    pub const FULL: ReadDepth = ReadDepth {
        metadata: true,
        policy: true,
    };
    /// DescribeKey only.
    pub const DESCRIBE: ReadDepth = ReadDepth {
        metadata: false,
        policy: false,
    };
    /// DescribeKey, tags and aliases; not the policy.
    pub const METADATA: ReadDepth = ReadDepth {
        metadata: true,
        policy: false,
    };
}

/// DescribeKey; `Ok(None)` when the key (or alias) does not exist.
pub async fn describe(client: &Client, key: &str) -> Result<Option<KeyMetadata>, KmsError> {
    match client.describe_key().key_id(key).send().await {
        Ok(out) => Ok(out.key_metadata),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => match KmsError::from_sdk("DescribeKey", e) {
            KmsError::NotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// Reads a key as deep as asked; `Ok(None)` when it does not exist.
pub async fn observe(
    client: &Client,
    key: &str,
    depth: ReadDepth,
) -> Result<Option<ObservedKey>, KmsError> {
    let Some(meta) = describe(client, key).await? else {
        return Ok(None);
    };
    let mut observed = from_metadata("DescribeKey", &meta)?;
    if depth.metadata {
        observed.tags = tags(client, &observed.identity.key_id).await?;
        observed.aliases = aliases(client, &observed.identity.key_id).await?;
        observed.metadata_read = true;
    }
    if depth.policy {
        observed.policy = policy(client, &observed.identity.key_id).await?;
        observed.policy_read = true;
    }
    Ok(Some(observed))
}

/// The planning view of the key metadata `operation` answered with (tags, aliases and policy
/// left empty); an answer without a key ARN is an unusable answer.
pub fn from_metadata(operation: &'static str, meta: &KeyMetadata) -> Result<ObservedKey, KmsError> {
    let identity =
        meta.arn()
            .and_then(KeyIdentity::from_arn)
            .ok_or_else(|| KmsError::Unavailable {
                operation,
                message: format!("answer without a key ARN for key {}", meta.key_id()),
            })?;
    let mr = meta.multi_region_configuration();
    Ok(ObservedKey {
        identity,
        state: KeyState::from_kms(meta.key_state().map(|s| s.as_str()).unwrap_or("Unknown")),
        origin: meta
            .origin()
            .map(|o| o.as_str().to_string())
            .unwrap_or_default(),
        key_spec: meta
            .key_spec()
            .and_then(|s| KeySpec::from_kms_name(s.as_str())),
        key_usage: meta
            .key_usage()
            .and_then(|u| KeyUsage::from_kms_name(u.as_str())),
        multi_region: meta.multi_region().unwrap_or(false),
        description: meta.description().unwrap_or_default().to_string(),
        valid_to: meta
            .valid_to()
            .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
        material_expires: meta.expiration_model().map(|m| m.as_str())
            == Some("KEY_MATERIAL_EXPIRES"),
        tags: BTreeMap::new(),
        aliases: BTreeSet::new(),
        policy: None,
        materials: None,
        metadata_read: false,
        policy_read: false,
        replicas: mr
            .map(|c| {
                c.replica_keys()
                    .iter()
                    .map(|r| {
                        (
                            r.region().unwrap_or_default().to_string(),
                            r.arn().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        current_key_material_id: meta.current_key_material_id().map(str::to_string),
    })
}

/// Every material of a symmetric key with imported material, per ListKeyRotations
/// `IncludeKeyMaterial=ALL_KEY_MATERIAL` (paged). `Ok(None)` when KMS lists none with ids or
/// does not implement the call (LocalStack).
pub async fn materials(
    client: &Client,
    key_id: &str,
) -> Result<Option<Vec<ObservedMaterial>>, KmsError> {
    let mut pages = client
        .list_key_rotations()
        .key_id(key_id)
        .include_key_material(IncludeKeyMaterial::AllKeyMaterial)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(page) => page,
            // An endpoint that does not implement the call (LocalStack answers 501 Not
            // Implemented; AWS never does) has no inventory to give.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 501) => {
                return Ok(None);
            }
            Err(e) => return Err(KmsError::from_sdk("ListKeyRotations", e)),
        };
        for entry in page.rotations() {
            let (Some(id), Some(state)) = (
                entry.key_material_id(),
                entry
                    .key_material_state()
                    .and_then(|s| MaterialState::from_kms(s.as_str())),
            ) else {
                return Ok(None);
            };
            let time = |t: Option<&aws_sdk_kms::primitives::DateTime>| {
                t.and_then(|t| jiff::Timestamp::from_second(t.secs()).ok())
            };
            out.push(ObservedMaterial {
                key_material_id: id.to_string(),
                state,
                imported: entry.import_state().map(|s| s.as_str()) != Some("PENDING_IMPORT"),
                expires: entry.expiration_model().map(|m| m.as_str())
                    == Some("KEY_MATERIAL_EXPIRES"),
                valid_to: time(entry.valid_to()),
                description: entry.key_material_description().map(str::to_string),
                rotation_date: time(entry.rotation_date()),
            });
        }
    }
    Ok(Some(out).filter(|m| !m.is_empty()))
}

async fn tags(client: &Client, key_id: &str) -> Result<BTreeMap<String, String>, KmsError> {
    let pages = client.list_resource_tags().key_id(key_id).into_paginator();
    let tags = every_item("ListResourceTags", pages.items().send()).await?;
    Ok(tags
        .iter()
        .map(|t| (t.tag_key().to_string(), t.tag_value().to_string()))
        .collect())
}

async fn aliases(client: &Client, key_id: &str) -> Result<BTreeSet<String>, KmsError> {
    let pages = client.list_aliases().key_id(key_id).into_paginator();
    let aliases = every_item("ListAliases", pages.items().send()).await?;
    Ok(aliases
        .iter()
        .filter_map(|a| a.alias_name().map(str::to_string))
        .collect())
}

/// Every item of a paged KMS list (the SDK's paginator follows `NextMarker` to the last page),
/// or the first page's error as a [`KmsError`] of `operation`.
async fn every_item<T, E, R>(
    operation: &'static str,
    items: PaginationStream<Result<T, SdkError<E, R>>>,
) -> Result<Vec<T>, KmsError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    items
        .try_collect()
        .await
        .map_err(|e| KmsError::from_sdk(operation, e))
}

async fn policy(client: &Client, key_id: &str) -> Result<Option<serde_json::Value>, KmsError> {
    let out = client
        .get_key_policy()
        .key_id(key_id)
        .policy_name("default")
        .send()
        .await
        .map_err(|e| KmsError::from_sdk("GetKeyPolicy", e))?;
    // A policy that is not JSON (LocalStack accepts anything) compares as a string.
    Ok(out.policy().map(|p| {
        serde_json::from_str(p).unwrap_or_else(|_| serde_json::Value::String(p.to_string()))
    }))
}

/// The key id an alias points at; `Ok(None)` when the alias does not exist.
pub async fn alias_target(client: &Client, alias: &str) -> Result<Option<String>, KmsError> {
    Ok(describe(client, alias)
        .await?
        .map(|m| m.key_id().to_string()))
}

/// Finds the key tagged with an AwsKey's uid by scanning the region's keys. Expensive (one
/// ListResourceTags per key): only used to recover from a crash between CreateKey and the
/// status write.
pub async fn find_by_owner_uid(client: &Client, uid: &str) -> Result<Option<String>, KmsError> {
    let mut keys = client
        .list_keys()
        .limit(1000)
        .into_paginator()
        .items()
        .send();
    while let Some(key) = keys
        .try_next()
        .await
        .map_err(|e| KmsError::from_sdk("ListKeys", e))?
    {
        let Some(key_id) = key.key_id() else { continue };
        let tags = match tags(client, key_id).await {
            Ok(tags) => tags,
            // Keys we may not read (other teams' keys, deleted meanwhile) are not ours.
            Err(KmsError::AccessDenied { .. } | KmsError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        if tags.get(OWNER_UID_TAG).is_some_and(|u| u == uid) {
            return Ok(Some(key_id.to_string()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(arn: Option<&str>) -> KeyMetadata {
        KeyMetadata::builder()
            .key_id("k1")
            .set_arn(arn.map(str::to_string))
            .build()
            .expect("key_id is set")
    }

    #[test]
    fn the_identity_of_an_observed_key_is_what_its_arn_says() {
        let observed = from_metadata(
            "DescribeKey",
            &metadata(Some("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k1")),
        )
        .expect("a key ARN");
        let identity = &observed.identity;
        assert_eq!(
            (
                identity.partition.as_str(),
                identity.region.as_str(),
                identity.account_id.as_str(),
                identity.key_id.as_str()
            ),
            ("aws-us-gov", "us-gov-west-1", "111122223333", "k1")
        );
    }

    #[test]
    fn an_answer_without_a_key_arn_is_an_unusable_answer_not_a_key_without_identity() {
        for arn in [
            None,
            Some("k1"),
            Some("arn:aws:kms:eu-west-1:111122223333:alias/x"),
        ] {
            match from_metadata("CreateKey", &metadata(arn)) {
                Err(KmsError::Unavailable { operation, message }) => {
                    assert_eq!(operation, "CreateKey");
                    assert!(message.contains("without a key ARN"), "{message}");
                }
                other => panic!("{arn:?}: {other:?}"),
            }
        }
    }
}
