//! AwsKey: its own spec names connection and material; its key is found (status, adopted ARN,
//! alias, a create in doubt) or created with CreateKey.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use tracing::info;

use super::Failure;
use super::dereference::Dereferenced;
use super::managed_key::{KindSpec, Located, ManagedKey, Scope, Source, owned_key};
use super::status;
use crate::api::{AwsKey, AwsKeyStatus, GeneratedMaterialStatus};
use crate::desired;
use crate::kms::KmsError;
use crate::kms::execute;
use crate::kms::observe;
use crate::plan::{ObservedKey, Ownership};
use crate::tenancy::{self, Claim};

impl ManagedKey for AwsKey {
    const CREATED: (&'static str, &'static str) = ("KeyCreated", "CreateKey");
    const GONE_ADVICE: &'static str =
        "Delete this AwsKey (or point adoptKeyArn at a replacement) to continue";

    async fn source<'a>(&'a self, _ctx: &'a super::Context) -> Result<Source<'a>, Failure> {
        Ok(Source::Own(&self.spec))
    }

    fn kind_spec<'a>(&'a self, _source: &'a Source<'_>) -> KindSpec<'a> {
        KindSpec::Key(&self.spec)
    }

    async fn locate<'a>(
        scope: &'a Scope<'a, Self>,
        status: &'a mut AwsKeyStatus,
    ) -> Result<Located, Failure> {
        if let Some(found) = resolve(scope).await? {
            if found.claim == Claim::Adopted {
                status.adopted = Some(true);
            }
            return Ok(found);
        }
        create(scope, status).await
    }

    fn created_note(arn: &str) -> String {
        format!("created KMS key {arn} (origin EXTERNAL)")
    }

    fn generated_material(&self) -> Option<&GeneratedMaterialStatus> {
        self.status.as_ref()?.generated_material.as_ref()
    }

    /// The rotation schedule's bookkeeping (cleared when the spec has no schedule).
    fn record_inputs(status: &mut AwsKeyStatus, inputs: &Dereferenced<'_>) {
        status.generated_material = inputs.schedule.generated.clone();
        status.next_rotation_time = inputs.schedule.next_rotation.clone();
    }

    fn record_observed(status: &mut AwsKeyStatus, observed: &ObservedKey) {
        status.create_started_at = None;
        status.replicas = status::replicas(observed);
    }

    async fn cleanup_source<'a>(
        &'a self,
        _ctx: &'a super::Context,
    ) -> Result<Option<Source<'a>>, Failure> {
        Ok(Some(Source::Own(&self.spec)))
    }

    fn creation_in_doubt(status: &AwsKeyStatus) -> bool {
        status.create_started_at.is_some()
    }

    fn deletion_note(&self, key_id: &str, status: &AwsKeyStatus) -> String {
        let days = self.spec.pending_window_days;
        if status.replicas.is_empty() {
            format!(
                "KMS key {key_id} is scheduled for deletion in {days} days; re-apply the AwsKey within that window to restore it"
            )
        } else {
            format!(
                "KMS key {key_id} is scheduled for deletion in {days} days; AWS keeps it in PendingReplicaDeletion until its {} replica(s) are deleted",
                status.replicas.len()
            )
        }
    }
}

/// Finds the key: the one in status; an adopted ARN (with the key's consent when keyfleet did
/// not create it); the key behind the alias when it belongs to this AwsKey (or its previous
/// incarnation); a key created just before a crash; else none.
async fn resolve(scope: &Scope<'_, AwsKey>) -> Result<Option<Located>, Failure> {
    let (client, key, owner) = (scope.client, scope.obj, scope.owner);
    let existing = |key_id: String, claim: Claim, restore: bool| {
        Ok(Some(Located {
            key_id,
            claim,
            restore,
            created: None,
            alias_free: false,
        }))
    };
    let status = key.status.clone().unwrap_or_default();
    if let Some(key_id) = status.key_id.clone() {
        let claim = if status.adopted == Some(true) {
            Claim::Adopted
        } else {
            Claim::Recorded
        };
        return existing(key_id, claim, false);
    }
    if let Some(arn) = &key.spec.adopt_key_arn {
        desired::adopt_key_region(&key.spec)
            .map_err(|e| Failure::blocked(e.reason, super::Category::Spec, e.message))?;
        let Some(found) = owned_key(client, arn, owner).await? else {
            return Err(Failure::reference(
                "AdoptKeyNotFound",
                format!("KMS key {arn} does not exist"),
            ));
        };
        return match found.ownership {
            Ownership::Elsewhere(other) => Err(Failure::conflict(
                "AdoptionRefused",
                format!(
                    "KMS key {} is owned by {other}; keyfleet never takes a key from another owner",
                    found.key_id
                ),
            )),
            Ownership::Unowned => {
                let connection = &scope.inputs.connection;
                let allow_unowned = connection
                    .spec
                    .adoption
                    .as_ref()
                    .is_some_and(|a| a.allow_unowned_keys);
                tenancy::adoption(
                    &found.key_id,
                    &found.tags,
                    owner,
                    &connection.name,
                    allow_unowned,
                )
                .map_err(|r| Failure::conflict(r.reason, r.message))?;
                existing(found.key_id, Claim::Adopted, true)
            }
            Ownership::PreviousIncarnation => {
                existing(found.key_id, Claim::PreviousIncarnation, true)
            }
            Ownership::Mine => existing(found.key_id, Claim::Recorded, true),
        };
    }
    if let Some(alias) = &key.spec.alias {
        match owned_key(client, alias, owner)
            .await?
            .map(|f| (f.key_id, f.ownership))
        {
            Some((key_id, Ownership::Mine)) => return existing(key_id, Claim::Recorded, true),
            Some((key_id, Ownership::PreviousIncarnation)) => {
                return existing(key_id, Claim::PreviousIncarnation, true);
            }
            Some((key_id, Ownership::Unowned)) => {
                return Err(Failure::conflict(
                    "AliasInUse",
                    format!(
                        "{alias} already points at KMS key {key_id}, which keyfleet does not manage; set spec.adoptKeyArn to adopt that key, or choose another alias"
                    ),
                ));
            }
            Some((key_id, Ownership::Elsewhere(other))) => {
                return Err(Failure::conflict(
                    "AliasInUse",
                    format!("{alias} already points at KMS key {key_id}, owned by {other}"),
                ));
            }
            None => {}
        }
    }
    if status.create_started_at.is_some()
        && let Some(key_id) = observe::find_by_owner_uid(client, &owner.uid)
            .await
            .map_err(Failure::kms)?
    {
        info!(%key_id, "found the key created before an interrupted reconcile");
        return existing(key_id, Claim::Recorded, false);
    }
    Ok(None)
}

/// Records the intent, creates the key, records its id — so that a crash at any point leaves
/// either no key or a key this AwsKey finds again.
async fn create(scope: &Scope<'_, AwsKey>, status: &mut AwsKeyStatus) -> Result<Located, Failure> {
    let key = scope.obj;
    let name = key.name_any();
    let before = status.create_started_at.replace(Time(scope.now));
    // Only on the version this reconcile read: a stale leader's intent fails with 409 Conflict
    // (and sends no CreateKey) instead of overwriting what a newer leader recorded.
    let recorded = status::write_if_unchanged(
        scope.api,
        &name,
        key.metadata.resource_version.as_deref(),
        key.status.as_ref(),
        status,
    )
    .await;
    match recorded {
        Ok(version) => scope.ctx.written.wrote(key, version),
        Err(e) => {
            status.create_started_at = before;
            return Err(Failure::kube(e));
        }
    }
    let written = status.clone();

    let created = match execute::create_key(scope.client, scope.desired).await {
        Ok(created) => created,
        Err(e) => {
            // KMS answered with an error, or the request was never sent (shutdown): nothing
            // was created, so there is nothing to find later. Only a timeout or 5xx leaves it
            // open whether the key exists.
            if !matches!(e, KmsError::Unavailable { .. }) {
                status.create_started_at = None;
            }
            return Err(Failure::kms(e));
        }
    };
    status.key_id = Some(created.key_id.clone());
    status.arn = Some(created.arn.clone());
    status.region = Some(key.spec.region.clone());
    let version = status::write(scope.api, &name, Some(&written), status)
        .await
        .map_err(Failure::kube)?;
    scope.ctx.written.wrote(key, version);
    info!(key_id = %created.key_id, "created KMS key");
    Ok(Located {
        key_id: created.key_id.clone(),
        claim: Claim::Recorded,
        restore: false,
        created: Some(created),
        // `resolve` looked the alias up before the creation and found no key behind it.
        alias_free: key.spec.alias.is_some(),
    })
}
