//! An AwsReplicaKey → the desired replica: key spec, usage and material expiry from its
//! primary; alias, description, tags, policy and enabled state its own.

use jiff::Timestamp;

use crate::api::{
    AwsKeyPolicyTemplate, AwsKeySpec, AwsReplicaKeySpec, KeySpec, MaterialChangePolicy,
};
use crate::plan::{DesiredKey, Owner};

use super::key::{check_alias, check_pending_window, check_tags, desired_key, template_tag};
use super::policy::{check_policy, desired_policy};
use super::{SpecError, refuse};

fn without_policy(spec: &AwsKeySpec) -> AwsKeySpec {
    let mut spec = spec.clone();
    spec.policy = None;
    spec
}

/// Whether `replica` can replicate `primary` at all: a multi-region primary, another region.
pub fn replica_relation(
    replica: &AwsReplicaKeySpec,
    primary: &AwsKeySpec,
) -> Result<(), SpecError> {
    if !primary.multi_region {
        return Err(refuse(
            "PrimaryNotMultiRegion",
            "spec.primaryKeyRef",
            format!(
                "the primary AwsKey {} has multiRegion: false; only multi-region keys can be replicated (multiRegion is immutable: create a new multi-region AwsKey)",
                replica.primary_key_ref.name
            ),
        ));
    }
    if replica.region == primary.region {
        return Err(refuse(
            "ReplicaRegionIsPrimaryRegion",
            "spec.region",
            format!(
                "the primary is in {}; a replica must be in another region",
                primary.region
            ),
        ));
    }
    Ok(())
}

/// Every refusal of a replica's own settings (alias, tags, pending window, policy) at once.
pub fn replica_spec_errors(replica: &AwsReplicaKeySpec) -> Vec<SpecError> {
    [
        check_alias(replica.alias.as_ref()).err(),
        check_tags(&replica.tags).err(),
        check_pending_window(replica.pending_window_days).err(),
        check_policy(replica.policy.as_ref(), KeySpec::SymmetricDefault, None).err(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The desired replica of a multi-region primary: spec, usage and material expiry come from the
/// primary; alias, description, tags, policy and enabled state are the replica's own.
pub fn desired_replica(
    replica: &AwsReplicaKeySpec,
    primary: &AwsKeySpec,
    owner: &Owner,
    template: Option<&AwsKeyPolicyTemplate>,
    now: Timestamp,
) -> Result<DesiredKey, SpecError> {
    replica_relation(replica, primary)?;
    // The primary's policy is not the replica's: only its template (if any) is looked up.
    let mut base = desired_key(&without_policy(primary), owner, None, now)?;
    check_alias(replica.alias.as_ref())?;
    check_tags(&replica.tags)?;
    check_pending_window(replica.pending_window_days)?;
    base.policy = desired_policy(
        replica.policy.as_ref(),
        template,
        base.key_spec,
        base.key_usage,
    )?;
    let mut tags = replica.tags.clone();
    tags.extend(owner.tags());
    tags.extend(template_tag(base.policy.as_ref()));
    base.tags = tags;
    base.alias = replica.alias.clone();
    base.description = replica.description.clone().unwrap_or_default();
    base.bypass_policy_lockout_safety_check = replica.bypass_policy_lockout_safety_check;
    base.enabled = replica.enabled;
    // A replica follows its primary's material; only the primary starts a rotation.
    base.on_change = MaterialChangePolicy::Refuse;
    Ok(base)
}
