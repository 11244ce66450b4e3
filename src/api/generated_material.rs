//! Material keyfleet generates itself (`keyMaterial.generate`): the labels of the Secrets it
//! creates, the rotation schedule of generated symmetric material, and the status that tracks
//! the Secrets of that schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// Label on every Secret keyfleet creates (`app.kubernetes.io/managed-by: keyfleet`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the Secrets keyfleet creates.
pub const MANAGED_BY: &str = "keyfleet";
/// Label naming the AwsKey a generated Secret was created for (set when the name fits a label
/// value; the annotation of the same name always holds it).
pub const GENERATED_FOR: &str = "keyfleet.dev/generated-for";

/// Settings of material keyfleet generates (`keyMaterial.generate`; see that field).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateMaterial {
    /// Scheduled rotation (SYMMETRIC_DEFAULT keys with `onChange: Rotate`): every `every`,
    /// keyfleet generates the next material into a new Secret `<secretRef.name>-<n>` (same rules:
    /// created only when missing, immutable, labelled, no owner reference) and rotates the key
    /// to it through the Rotate path (replicas first). The earlier Secrets are kept and listed
    /// in `status.generatedMaterial.retained`: KMS still decrypts with their material, and
    /// they count as `keyMaterial.retained` (renewed with an expiring key's current material).
    pub rotation: Option<ScheduledRotation>,
}

/// A rotation schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledRotation {
    /// Time between rotations, in days (`90d`, 1-3650) or hours (`12h`, 1-87600), counted from
    /// the generation of the current material (`status.nextRotationTime`). A schedule missed
    /// while keyfleet was not running rotates once when it runs again, not once per missed
    /// period. KMS allows 25 on-demand rotations per key.
    #[schemars(regex(
        pattern = r"^(([1-9][0-9]{0,2}|[1-2][0-9]{3}|3[0-5][0-9]{2}|36[0-4][0-9]|3650)d|([1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-6][0-9]{3}|87[0-5][0-9]{2}|87600)h)$"
    ))]
    pub every: String,
}

impl ScheduledRotation {
    /// The period; None when not of the form the schema admits (`<n>d` / `<n>h`).
    pub fn every(&self) -> Option<jiff::SignedDuration> {
        super::expiration::days_or_hours(&self.every)
            .filter(|hours| (1..=3650 * 24).contains(hours))
            .map(jiff::SignedDuration::from_hours)
    }
}

/// The Secrets of a key whose generated material rotates on a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GeneratedMaterialStatus {
    /// The `secretRef` name the Secrets are numbered from (`<series>`, `<series>-1`, ...); a new
    /// `secretRef` starts a new series.
    pub series: String,
    /// Number of the Secret holding the current (or pending) material: 0 for `<series>`, n for
    /// `<series>-<n>`.
    pub sequence: i64,
    /// The Secret holding the current material, or the material a rotation is bringing in.
    pub secret: String,
    /// When that material was generated (or first seen by the schedule).
    pub since: Time,
    /// Earlier Secrets of the series, oldest first: material KMS still holds (NON_CURRENT; old
    /// ciphertexts decrypt with it). keyfleet never deletes them; keep them while data
    /// encrypted under them lives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<RetainedSecret>,
}

/// A Secret holding earlier material of a key.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetainedSecret {
    /// Name of the Secret (in the key's namespace).
    pub secret: String,
    /// KMS KeyMaterialId of its material, as recorded when it was current.
    pub key_material_id: Option<String>,
    /// Fingerprint of its material.
    pub fingerprint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_periods_are_days_or_hours_within_ten_years() {
        let every = |text: &str| {
            ScheduledRotation {
                every: text.to_string(),
            }
            .every()
        };
        assert_eq!(
            every("90d"),
            Some(jiff::SignedDuration::from_hours(90 * 24))
        );
        assert_eq!(every("12h"), Some(jiff::SignedDuration::from_hours(12)));
        assert_eq!(
            every("3650d"),
            Some(jiff::SignedDuration::from_hours(87_600))
        );
        for refused in ["0d", "3651d", "87601h", "1w", "d", "-1d", ""] {
            assert_eq!(every(refused), None, "{refused}");
        }
    }
}
