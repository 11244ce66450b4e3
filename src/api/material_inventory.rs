//! The inventory of a key's materials in status (`status.materials`): one entry per key
//! material KMS holds, as `ListKeyRotations IncludeKeyMaterial=ALL_KEY_MATERIAL` reports it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// One key material of a key: what KMS reports for it (`RotationsListEntry`), or, where KMS
/// reports no material ids (LocalStack), what keyfleet imported (`confirmed: false`).
#[skip_serializing_none]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyMaterialEntry {
    /// KMS KeyMaterialId (symmetric keys; KMS gives RSA, ECC and HMAC material no id).
    pub key_material_id: Option<String>,
    /// KMS KeyMaterialState: CURRENT (encrypts and decrypts), NON_CURRENT (decrypts what it
    /// encrypted before a rotation), PENDING_ROTATION or PENDING_MULTI_REGION_IMPORT_AND_ROTATION
    /// (imported for a rotation that has not happened yet).
    pub state: Option<String>,
    /// KMS ImportState in this key's Region: IMPORTED, or PENDING_IMPORT (expired, deleted or
    /// never imported here; KMS keeps the key PendingImport until it is imported again).
    pub import_state: Option<String>,
    /// KEY_MATERIAL_EXPIRES or KEY_MATERIAL_DOES_NOT_EXPIRE.
    pub expiration_model: Option<String>,
    /// When KMS deletes this material (KEY_MATERIAL_EXPIRES only).
    pub valid_to: Option<Time>,
    /// KMS KeyMaterialDescription: keyfleet sets `keyfleet <fingerprint> <source> for <kind>
    /// <namespace>/<name>` on every import of symmetric material.
    pub description: Option<String>,
    /// When the key rotated to this material (unset for the first material).
    pub rotation_date: Option<Time>,
    /// Fingerprint of the material, when keyfleet knows it (it imported it, or its description
    /// names it); `keyMaterial.retained` Secrets are matched to entries by it.
    pub fingerprint: Option<String>,
    /// True: KMS reported this entry (ListKeyRotations, or DescribeKey for the one material of
    /// an RSA, ECC or HMAC key). False: KMS reports no material ids (LocalStack), and the entry
    /// is keyfleet's own record of what it imported.
    pub confirmed: bool,
    /// keyfleet deleted this material because `keyMaterial.retire` lists it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retired: bool,
}
