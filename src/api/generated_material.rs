//! Material keyfleet generates itself (`keyMaterial.generate`): the Secret it creates when the
//! referenced one does not exist, and the labels that mark such a Secret.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every Secret keyfleet creates (`app.kubernetes.io/managed-by: keyfleet`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on the Secrets keyfleet creates.
pub const MANAGED_BY: &str = "keyfleet";
/// Label naming the AwsKey a generated Secret was created for (set when the name fits a label
/// value; the annotation of the same name always holds it).
pub const GENERATED_FOR: &str = "keyfleet.dev/generated-for";

/// Settings of material keyfleet generates (`keyMaterial.generate`; see that field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerateMaterial {}
