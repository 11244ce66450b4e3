//! What each key kind supplies to the one reconcile path: where its connection and material
//! come from, how its KMS key comes to exist, and its own status fields.

use std::fmt::Debug;
use std::future::Future;
use std::ops::{Deref, DerefMut};

use jiff::Timestamp;
use kube::core::NamespaceResourceScope;
use kube::core::object::{HasSpec, HasStatus};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::dereference::Dereferenced;
use super::{Context, Failure};
use crate::api::{
    AwsKey, AwsKeyPolicyTemplate, AwsKeySpec, AwsKeyStatus, AwsReplicaKeySpec, DeletionPolicy,
    GeneratedMaterialStatus, KeyPolicy, KeySettings, KindName, KmsKeyStatus,
};
use crate::desired::{self, SpecError};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Client, KeyCreation};
use crate::plan::{self, DesiredKey, ObservedKey, Owner, Ownership};
use crate::tenancy::Claim;

/// Finalizer that guarantees the deletion policy runs before the object disappears.
pub const FINALIZER: &str = "kms.keyfleet.dev/cleanup";

/// The AwsKey that names the connection and the material of a managed key.
pub enum Source<'a> {
    /// An AwsKey: its own spec.
    Own(&'a AwsKeySpec),
    /// An AwsReplicaKey: its primary AwsKey (same namespace) and the primary's status.
    Primary {
        key: Box<AwsKey>,
        status: Box<AwsKeyStatus>,
    },
}

impl Source<'_> {
    pub fn spec(&self) -> &AwsKeySpec {
        match self {
            Source::Own(spec) => spec,
            Source::Primary { key, .. } => &key.spec,
        }
    }
}

/// The specs a kind's desired key is computed from.
pub enum KindSpec<'a> {
    /// An AwsKey's own spec.
    Key(&'a AwsKeySpec),
    /// An AwsReplicaKey's spec and its primary's.
    Replica {
        replica: &'a AwsReplicaKeySpec,
        primary: &'a AwsKeySpec,
    },
}

/// The KMS key a reconcile works on.
pub struct Located {
    pub key_id: String,
    /// What entitles this object to change the key.
    pub claim: Claim,
    /// The object was (re)applied over an existing key: a pending deletion may be cancelled.
    pub restore: bool,
    /// The key this reconcile created (or replicated), as KMS answered: the first sync round
    /// of a created key reads nothing.
    pub created: Option<KeyCreation>,
    /// The desired alias was looked up by this reconcile and points at no key.
    pub alias_free: bool,
}

/// What one reconcile has at hand once the inputs are read and the desired key is known.
pub struct Scope<'a, K: ManagedKey> {
    pub ctx: &'a Context,
    pub api: &'a Api<K>,
    pub obj: &'a K,
    pub inputs: &'a Dereferenced<'a>,
    pub desired: &'a DesiredKey,
    pub owner: &'a Owner,
    /// Client for the key's own region, through the object's connection.
    pub client: &'a Client,
    pub now: Timestamp,
}

/// A kind whose objects each manage one KMS key (AwsKey, AwsReplicaKey).
pub trait ManagedKey:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + HasSpec<Spec: Deref<Target = KeySettings> + KindName>
    + HasStatus<
        Status: Clone
                    + Default
                    + PartialEq
                    + Debug
                    + Serialize
                    + Send
                    + Sync
                    + DerefMut<Target = KmsKeyStatus>,
    > + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    /// Kind name for metrics, logs and backoff keys.
    const KIND: &'static str = <Self::Spec as KindName>::KIND;
    /// Event reason and action of a key this kind brings into existence.
    const CREATED: (&'static str, &'static str);
    /// What the user can do when the key is gone.
    const GONE_ADVICE: &'static str;
    /// Whether a key of this kind about to be created first waits for its turn at its Region's
    /// import quota ([`super::Context::import_turn`]): a new AwsKey always imports right after
    /// CreateKey. A replica does not: whether it needs an import is known only once ReplicateKey
    /// answered (AWS leaves it PendingImport; an endpoint that copies the material does not),
    /// and replicas come one by one as their primaries become Enabled, so the one import a
    /// replica needs waits in the quota's queue.
    const TAKES_IMPORT_TURN: bool = true;

    fn region(&self) -> &str {
        &self.spec().region
    }
    fn policy(&self) -> Option<&KeyPolicy> {
        self.spec().policy.as_ref()
    }
    /// The deletion policy the spec sets, if any.
    fn deletion_policy(&self) -> Option<DeletionPolicy> {
        self.spec().deletion_policy
    }
    fn pending_window_days(&self) -> i32 {
        self.spec().pending_window_days
    }

    /// Dereference, the kind's part: the AwsKey that names connection and material.
    fn source<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Source<'a>, Failure>> + Send + 'a;

    /// The specs the desired key is computed from: the object's own, and its source's.
    fn kind_spec<'a>(&'a self, source: &'a Source<'_>) -> KindSpec<'a>;

    /// Desired step (pure): the spec, its source and policy template → the desired key.
    fn desired(
        &self,
        source: &Source<'_>,
        owner: &Owner,
        template: Option<&AwsKeyPolicyTemplate>,
        now: Timestamp,
    ) -> Result<DesiredKey, SpecError> {
        match self.kind_spec(source) {
            KindSpec::Key(spec) => desired::desired_key(spec, owner, template, now),
            KindSpec::Replica { replica, primary } => {
                desired::desired_replica(replica, primary, owner, template, now)
            }
        }
    }

    /// The Secrets of the key's generated material on a rotation schedule, as its status
    /// records them (an AwsKey's; None for other kinds).
    fn generated_material(&self) -> Option<&GeneratedMaterialStatus> {
        None
    }

    /// Records what the dereferenced inputs say in the kind's own status fields.
    fn record_inputs(_status: &mut Self::Status, _inputs: &Dereferenced<'_>) {}

    /// Finds this object's KMS key, or brings it into existence (recording it in `status`
    /// before anything can be lost).
    fn locate<'a>(
        scope: &'a Scope<'a, Self>,
        status: &'a mut Self::Status,
    ) -> impl Future<Output = Result<Located, Failure>> + Send + 'a;

    /// The event note for a key this kind brought into existence.
    fn created_note(arn: &str) -> String;

    /// Records what the last observation says in the kind's own status fields.
    fn record_observed(_status: &mut Self::Status, _observed: &ObservedKey) {}

    /// Cleanup: the connection's source, when the object is being deleted (no gate on the
    /// primary's state; a primary that is gone leaves None).
    fn cleanup_source<'a>(
        &'a self,
        ctx: &'a Context,
    ) -> impl Future<Output = Result<Option<Source<'a>>, Failure>> + Send + 'a;

    /// Cleanup: whether a key may exist although status records none (a create in doubt).
    fn creation_in_doubt(_status: &Self::Status) -> bool {
        false
    }

    /// Cleanup: the event note once deletion of `key_id` is scheduled.
    fn deletion_note(&self, key_id: &str, status: &Self::Status) -> String;
}

/// A key found by id, ARN or alias, with its tags and who owns it.
pub struct Found {
    pub key_id: String,
    pub tags: std::collections::BTreeMap<String, String>,
    pub ownership: Ownership,
}

/// Describes `key` (id, ARN or alias) and classifies who owns it.
pub async fn owned_key(
    client: &Client,
    key: &str,
    owner: &Owner,
) -> Result<Option<Found>, Failure> {
    let Some(observed) = observe::observe(client, key, ReadDepth::METADATA)
        .await
        .map_err(Failure::kms)?
    else {
        return Ok(None);
    };
    let ownership = plan::ownership(&observed.tags, owner);
    Ok(Some(Found {
        key_id: observed.identity.key_id,
        tags: observed.tags,
        ownership,
    }))
}
