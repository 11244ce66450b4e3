//! Expiration of imported key material: a fixed `validTo` or a renewed `rollingValidity`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// Expiration of the imported key material (CCKM `KeyExpiration` + `ValidTo`): a fixed
/// `validTo`, or a `rollingValidity` that keyfleet keeps renewing.
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.validTo) && has(self.rollingValidity))").message("validTo and rollingValidity are mutually exclusive"))]
pub struct Expiration {
    /// RFC 3339 time at which KMS deletes the imported material and the key becomes unusable
    /// (state PendingImport). Without it the material does not expire. Changing it re-imports
    /// the same material with the new expiry.
    pub valid_to: Option<Time>,
    /// Rolling validity of the material, in days (`90d`) or hours (`720h`), at most 365 days
    /// (AWS's cap). Every import sets ValidTo to now plus this duration, and keyfleet imports
    /// the same material again (on the primary and on every replica) before the remaining
    /// validity falls under the operator's renewal threshold. A dead-man's switch: when
    /// keyfleet stops renewing, the material expires and the key becomes unusable.
    #[schemars(regex(
        pattern = r"^(([1-9][0-9]?|[1-2][0-9]{2}|3[0-5][0-9]|36[0-5])d|([1-9][0-9]{0,2}|[1-7][0-9]{3}|8[0-6][0-9]{2}|87[0-5][0-9]|8760)h)$"
    ))]
    pub rolling_validity: Option<String>,
}

impl Expiration {
    /// The rolling validity as a duration; `None` when unset or not of the form `<n>d` /
    /// `<n>h` (the CRD schema admits nothing else).
    pub fn rolling_validity(&self) -> Option<Result<jiff::SignedDuration, String>> {
        let text = self.rolling_validity.as_deref()?;
        Some(match days_or_hours(text) {
            Some(h) if (1..=365 * 24).contains(&h) => Ok(jiff::SignedDuration::from_hours(h)),
            _ => Err(format!(
                "rollingValidity {text:?} is not a duration of 1d-365d (or 1h-8760h)"
            )),
        })
    }
}

/// Hours in a duration written as days (`90d`) or hours (`720h`); None for anything else.
pub(crate) fn days_or_hours(text: &str) -> Option<i64> {
    if let Some(days) = text.strip_suffix('d') {
        days.parse::<i64>().ok()?.checked_mul(24)
    } else if let Some(hours) = text.strip_suffix('h') {
        hours.parse::<i64>().ok()
    } else {
        None
    }
}
