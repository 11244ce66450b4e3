//! AwsReplicaKey: its primary AwsKey (same namespace, Enabled) names connection and material;
//! its key is found (status, the primary's replica list) or created with ReplicateKey.

use kube::{Api, ResourceExt};
use tracing::info;

use super::dereference::Dereferenced;
use super::managed_key::{KindSpec, Located, ManagedKey, Scope, Source, owned_key};
use super::{Context, Failure, status};
use crate::api::conditions;
use crate::api::{AwsKey, AwsReplicaKey, AwsReplicaKeyStatus};
use crate::kms::observe::{self, ReadDepth};
use crate::kms::{Requester, execute};
use crate::plan::{self, Ownership};
use crate::tenancy::Claim;

impl ManagedKey for AwsReplicaKey {
    const CREATED: (&'static str, &'static str) = ("KeyReplicated", "ReplicateKey");
    const GONE_ADVICE: &'static str =
        "Delete this AwsReplicaKey and apply it again to replicate the primary anew";
    const TAKES_IMPORT_TURN: bool = false;

    /// The primary, from the replica's own namespace only (the reference has no namespace
    /// field), once it is Enabled.
    async fn source<'a>(&'a self, ctx: &'a Context) -> Result<Source<'a>, Failure> {
        let namespace = self.namespace().unwrap_or_default();
        let name = &self.spec.primary_key_ref.name;
        let Some(mut primary) = primary(ctx, &namespace, name).await? else {
            return Err(Failure::reference(
                "PrimaryNotReady",
                format!("the primary AwsKey {namespace}/{name} does not exist (yet)"),
            ));
        };
        let status = primary.status.take().unwrap_or_default();
        // A primary that lacks only retired material is PendingImport for good: its replicas
        // retire that material too.
        let retired = conditions::find_condition(&status.conditions, conditions::READY)
            .is_some_and(|c| c.reason == "MaterialRetired");
        if status.arn.is_none() || (status.key_state.as_deref() != Some("Enabled") && !retired) {
            return Err(Failure::blocked(
                "PrimaryNotReady",
                super::Category::Waiting,
                format!(
                    "waiting for the primary AwsKey {name} to be Enabled (it is {})",
                    status.key_state.as_deref().unwrap_or("not created yet")
                ),
            ));
        }
        Ok(Source::Primary {
            key: Box::new(primary),
            status: Box::new(status),
        })
    }

    fn kind_spec<'a>(&'a self, source: &'a Source<'_>) -> KindSpec<'a> {
        KindSpec::Replica {
            replica: &self.spec,
            primary: source.spec(),
        }
    }

    fn record_inputs(status: &mut AwsReplicaKeyStatus, inputs: &Dereferenced<'_>) {
        if let Source::Primary {
            status: primary, ..
        } = &inputs.source
        {
            status.primary_arn.clone_from(&primary.arn);
        }
    }

    async fn locate<'a>(
        scope: &'a Scope<'a, Self>,
        status: &'a mut AwsReplicaKeyStatus,
    ) -> Result<Located, Failure> {
        let Source::Primary {
            key: primary,
            status: primary_status,
        } = &scope.inputs.source
        else {
            return Err(Failure::reference(
                "PrimaryNotReady",
                "the primary AwsKey was not read",
            ));
        };
        let primary_uid = primary.uid().unwrap_or_default();
        if let Some(key_id) = status.key_id.clone() {
            // Until its first sync retags it, a replica may carry its primary's tags.
            return Ok(Located {
                key_id,
                claim: Claim::ReplicaOf(primary_uid),
                restore: false,
                created: None,
                alias_free: false,
            });
        }
        // KMS holds one replica of a key per region: of the AwsReplicaKeys asking for it, the
        // oldest gets it, and the others never share or take it.
        let siblings = scope
            .api
            .list(&kube::api::ListParams::default())
            .await
            .map_err(Failure::kube)?;
        if let Some(holder) = region_holder(scope.obj, &siblings.items) {
            return Err(Failure::conflict(
                "ReplicaRegionTaken",
                format!(
                    "AwsReplicaKey {holder} already replicates AwsKey {} into {}, and KMS holds one replica per region; delete this AwsReplicaKey or {holder}",
                    scope.obj.spec.primary_key_ref.name, scope.obj.spec.region
                ),
            ));
        }
        let primary_arn = primary_status.arn.clone().unwrap_or_default();
        let primary_client = scope
            .ctx
            .kms
            .client(
                &scope.inputs.connection,
                &primary.spec.region,
                &Requester::of(scope.obj),
            )
            .await;
        if let Some((key_id, claim)) =
            find_replica(scope, &primary_client, &primary_arn, &primary_uid).await?
        {
            // A replica KMS made for this primary (a ReplicateKey whose answer was lost, or a
            // replica made outside keyfleet).
            return Ok(Located {
                key_id,
                claim,
                restore: true,
                created: None,
                alias_free: false,
            });
        }
        let region = &scope.obj.spec.region;
        let created = execute::replicate_key(&primary_client, &primary_arn, region, scope.desired)
            .await
            .map_err(Failure::kms)?;
        status.key_id = Some(created.key_id.clone());
        status.arn = Some(created.arn.clone());
        status.region = Some(region.clone());
        // Record the replica at once: a second ReplicateKey would fail (AlreadyExists).
        let version = status::write(
            scope.api,
            &scope.obj.name_any(),
            scope.obj.status.as_ref(),
            status,
        )
        .await
        .map_err(Failure::kube)?;
        scope.ctx.written.wrote(scope.obj, version);
        info!(arn = %created.arn, "replicated the primary");
        // Some KMS implementations (LocalStack) give a new replica its primary's tags rather
        // than the ones ReplicateKey asked for: its first sync retags it.
        Ok(Located {
            key_id: created.key_id.clone(),
            claim: Claim::ReplicaOf(primary_uid),
            restore: false,
            created: Some(created),
            alias_free: false,
        })
    }

    fn created_note(arn: &str) -> String {
        format!("replicated the primary into {arn}")
    }

    /// The primary, whatever its state; None when it is gone (the operator's own credentials
    /// are then used).
    async fn cleanup_source<'a>(&'a self, ctx: &'a Context) -> Result<Option<Source<'a>>, Failure> {
        let namespace = self.namespace().unwrap_or_default();
        let primary = primary(ctx, &namespace, &self.spec.primary_key_ref.name).await?;
        Ok(primary.map(|mut key| {
            let status = key.status.take().unwrap_or_default();
            Source::Primary {
                key: Box::new(key),
                status: Box::new(status),
            }
        }))
    }

    fn deletion_note(&self, key_id: &str, _status: &AwsReplicaKeyStatus) -> String {
        format!(
            "replica {key_id} in {} is scheduled for deletion in {} days",
            self.spec.region, self.spec.pending_window_days
        )
    }
}

async fn primary(ctx: &Context, namespace: &str, name: &str) -> Result<Option<AwsKey>, Failure> {
    let primaries: Api<AwsKey> = Api::namespaced(ctx.client.clone(), namespace);
    primaries.get_opt(name).await.map_err(Failure::kube)
}

/// The name of the AwsReplicaKey among `siblings` (same namespace) that holds, or is first in
/// line for, the replica `me` asks for: same primary and region, and older (created earlier;
/// by name on a tie). None when `me` is first.
fn region_holder(me: &AwsReplicaKey, siblings: &[AwsReplicaKey]) -> Option<String> {
    let rank = |r: &AwsReplicaKey| (r.creation_timestamp().map(|t| t.0), r.name_any());
    let my_rank = rank(me);
    siblings
        .iter()
        .filter(|r| r.uid() != me.uid())
        .filter(|r| {
            r.spec.primary_key_ref.name == me.spec.primary_key_ref.name
                && r.spec.region == me.spec.region
        })
        .filter(|r| rank(r) < my_rank)
        .map(|r| r.name_any())
        .min()
}

/// The replica of `primary_arn` that already exists in the replica's region (listed by the
/// primary), if this AwsReplicaKey may take it, never duplicated; and the claim it is taken
/// under. One tagged by this object or by the primary AwsKey (some KMS implementations copy
/// the primary's tags to replicas) is this object's replica, e.g. after a ReplicateKey whose
/// answer was lost: [`Claim::ReplicaOf`]. One of an earlier object of this name is taken
/// over like an AwsKey's; one without keyfleet's tags is adopted.
async fn find_replica(
    scope: &Scope<'_, AwsReplicaKey>,
    primary_client: &crate::kms::Client,
    primary_arn: &str,
    primary_uid: &str,
) -> Result<Option<(String, Claim)>, Failure> {
    let primary = observe::observe(primary_client, primary_arn, ReadDepth::DESCRIBE)
        .await
        .map_err(Failure::kms)?;
    let region = &scope.obj.spec.region;
    // The primary's replica in this region, if the primary (still) exists.
    let replica = primary.and_then(|p| p.replicas.into_iter().find(|(r, _)| r == region));
    let Some((_, arn)) = replica else {
        return Ok(None);
    };
    let Some(existing) = owned_key(scope.client, &arn, scope.owner).await? else {
        return Ok(None);
    };
    let tagged_by_primary =
        existing.tags.get(plan::OWNER_UID_TAG).map(String::as_str) == Some(primary_uid);
    match existing.ownership {
        Ownership::Elsewhere(other) if !tagged_by_primary => Err(Failure::conflict(
            "AdoptionRefused",
            format!(
                "the replica {arn} is owned by {other}; keyfleet never takes a key from another owner"
            ),
        )),
        Ownership::Unowned => {
            info!(%arn, "adopting the existing replica");
            Ok(Some((existing.key_id, Claim::Adopted)))
        }
        Ownership::PreviousIncarnation => {
            info!(%arn, "taking over the replica of an earlier object of this name");
            Ok(Some((existing.key_id, Claim::PreviousIncarnation)))
        }
        _ => {
            info!(%arn, "taking over the replica made for this object");
            let claim = Claim::ReplicaOf(primary_uid.to_string());
            Ok(Some((existing.key_id, claim)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn replica(name: &str, uid: &str, primary: &str, region: &str, created: i64) -> AwsReplicaKey {
        let spec = serde_json::from_value(serde_json::json!({
            "primaryKeyRef": {"name": primary}, "region": region
        }))
        .unwrap();
        let mut r = AwsReplicaKey::new(name, spec);
        r.metadata.uid = Some(uid.into());
        r.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        r
    }

    #[test]
    fn the_oldest_replica_of_a_primary_in_a_region_holds_it() {
        let a = replica("a", "1", "p", "eu-west-1", 100);
        let b = replica("b", "2", "p", "eu-west-1", 200);
        let c = replica("c", "3", "p", "eu-west-1", 100);
        let other_region = replica("d", "4", "p", "us-west-2", 50);
        let other_primary = replica("e", "5", "q", "eu-west-1", 50);
        let all = [
            a.clone(),
            b.clone(),
            c.clone(),
            other_region.clone(),
            other_primary.clone(),
        ];
        assert_eq!(region_holder(&a, &all), None);
        assert_eq!(region_holder(&b, &all), Some("a".into()));
        // Created in the same second: the name decides.
        assert_eq!(region_holder(&c, &all), Some("a".into()));
        assert_eq!(region_holder(&other_region, &all), None);
        assert_eq!(region_holder(&other_primary, &all), None);
    }
}
