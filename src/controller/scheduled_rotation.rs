//! Dereference step for `keyMaterial.generate.rotation` (writes the Kubernetes API when due):
//! which Secret holds a generated key's current material, and, once the schedule is due, the
//! next Secret with fresh material, which the Rotate path then rotates the key to.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::generated_secret::{self, Generation};
use super::managed_key::{ManagedKey, Source};
use super::{Context, Failure};
use crate::api::generated_material::{GeneratedMaterialStatus, RetainedSecret};
use crate::api::{KmsKeyStatus, SecretKeySelector};

/// The Secret to read the material from, and the schedule's bookkeeping for an AwsKey's status.
pub struct MaterialSecret {
    pub name: String,
    pub schedule: Schedule,
}

impl MaterialSecret {
    fn unscheduled(name: &str) -> MaterialSecret {
        MaterialSecret {
            name: name.to_string(),
            schedule: Schedule::default(),
        }
    }
}

/// What a rotation schedule records in an AwsKey's status (both None without one).
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    /// `status.generatedMaterial`: the Secrets of a schedule (kept after the schedule is
    /// removed, so the key goes on reading the Secret of its current material).
    pub generated: Option<GeneratedMaterialStatus>,
    /// `status.nextRotationTime`: set while a schedule is in the spec.
    pub next_rotation: Option<Time>,
}

/// The Secrets of earlier generated materials of the key: an AwsKey's own schedule (as this
/// reconcile left it: a rotation due now has just retained its previous Secret), a replica's
/// primary's.
pub fn generated_retained(source: &Source<'_>, schedule: &Schedule) -> Vec<String> {
    let generated = match source {
        Source::Primary { status, .. } => status.generated_material.as_ref(),
        Source::Own(_) => schedule.generated.as_ref(),
    };
    generated
        .map(|g| g.retained.iter().map(|r| r.secret.clone()).collect())
        .unwrap_or_default()
}

/// The Secret holding the current material of a key: `secretRef`, or after a scheduled
/// rotation the Secret that rotation generated (`<name>-<n>`, recorded in the AwsKey's status;
/// a replica reads its primary's). When the schedule is due — `every` after the current
/// material was generated, once however many periods were missed — the next Secret is
/// generated here (never overwriting one that exists) and the previous one is retained.
pub async fn material_secret<K: ManagedKey>(
    ctx: &Context,
    obj: &K,
    source: &Source<'_>,
    secret_ref: &SecretKeySelector,
    namespace: &str,
) -> Result<MaterialSecret, Failure> {
    let spec = source.spec();
    let base = secret_ref.name.as_str();
    if let Source::Primary { status, .. } = source {
        // A replica reads the Secret of its primary's current material.
        let current = status
            .generated_material
            .as_ref()
            .filter(|g| g.series == base);
        return Ok(MaterialSecret::unscheduled(
            current.map_or(base, |g| g.secret.as_str()),
        ));
    }
    let own = obj.generated_material();
    let key_status: Option<&KmsKeyStatus> = obj.status().map(|s| &**s);
    let every = spec
        .key_material
        .generate
        .as_ref()
        .and_then(|g| g.rotation.as_ref())
        .and_then(|r| r.every());
    let now = ctx.clock.now();
    let mut state = match (own, every) {
        (Some(state), _) if state.series == base => state.clone(),
        (own, Some(_)) => new_series(base, own, key_status, now),
        // No schedule, and none that rotated this series: the Secret of `secretRef`.
        (_, None) => return Ok(MaterialSecret::unscheduled(base)),
    };
    let Some(every) = every else {
        // The schedule was removed: the key keeps the material of its last rotation.
        return Ok(MaterialSecret {
            name: state.secret.clone(),
            schedule: Schedule {
                generated: Some(state),
                next_rotation: None,
            },
        });
    };
    let imported = key_status.and_then(|s| s.material_fingerprint.clone());
    let rotating = key_status.is_some_and(|s| s.pending_material_fingerprint.is_some());
    if state.since.0 + every <= now && imported.is_some() && !rotating {
        let next = format!("{base}-{}", state.sequence + 1);
        let generation = Generation {
            namespace,
            secret: &next,
            key: &secret_ref.key,
            spec: spec.key_spec,
            encoding: spec.key_material.encoding,
            for_key: obj.meta().name.as_deref().unwrap_or_default(),
        };
        generated_secret::create(ctx, obj, &generation).await?;
        let previous = std::mem::replace(&mut state.secret, next);
        state.retained.push(RetainedSecret {
            secret: previous,
            key_material_id: key_status.and_then(|s| s.key_material_id.clone()),
            fingerprint: imported,
        });
        state.sequence += 1;
        state.since = Time(now);
    }
    Ok(MaterialSecret {
        name: state.secret.clone(),
        schedule: Schedule {
            next_rotation: Some(Time(state.since.0 + every)),
            generated: Some(state),
        },
    })
}

/// The bookkeeping of a series starting at `base` now (its current material counts from now);
/// the Secrets of an earlier series (another `secretRef`) stay listed as retained.
fn new_series(
    base: &str,
    earlier: Option<&GeneratedMaterialStatus>,
    key_status: Option<&KmsKeyStatus>,
    now: jiff::Timestamp,
) -> GeneratedMaterialStatus {
    let mut retained = Vec::new();
    if let Some(earlier) = earlier {
        retained.clone_from(&earlier.retained);
        retained.push(RetainedSecret {
            secret: earlier.secret.clone(),
            key_material_id: key_status.and_then(|s| s.key_material_id.clone()),
            fingerprint: key_status.and_then(|s| s.material_fingerprint.clone()),
        });
    }
    GeneratedMaterialStatus {
        series: base.to_string(),
        sequence: 0,
        secret: base.to_string(),
        since: Time(now),
        retained,
    }
}
