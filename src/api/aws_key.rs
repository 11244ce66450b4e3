//! `AwsKey` (namespaced): a KMS key with imported (BYOK) material taken from a Secret.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::expiration::Expiration;
use super::generated_material::{GenerateMaterial, GeneratedMaterialStatus};
use super::key_material::{MaterialEncoding, WrappingAlgorithm, WrappingKeySpec};
use super::key_settings::KeySettings;
use super::key_spec::{KeySpec, KeyUsage};
use super::key_status::KmsKeyStatus;
use super::refs::{LocalObjectRef, SecretKeySelector};

keyfleet_key_kind! {
kube(
    kind = "AwsKey",
    shortname = "ak",
    status = "AwsKeyStatus",
    doc = "A BYOK key in AWS KMS whose material is imported from a Secret.",
),
first_column(printcolumn(name = "Alias", type_ = "string", json_path = ".spec.alias")),
columns_after(
    printcolumn(name = "Next-Rotation", type_ = "string", json_path = ".status.nextRotationTime", priority = 1),
),
/// A KMS key whose material you bring: keyfleet creates an EXTERNAL-origin key in AWS KMS,
/// imports the material held in a Secret, and keeps alias, description, tags, policy and
/// enabled state as declared here.
#[x_kube(validation = Rule::new("!self.keySpec.startsWith('RSA_') || has(self.keyUsage)").message("keyUsage is required for RSA keys: ENCRYPT_DECRYPT or SIGN_VERIFY").field_path(".keyUsage").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("!has(self.keyUsage) || (self.keySpec == 'SYMMETRIC_DEFAULT' && self.keyUsage == 'ENCRYPT_DECRYPT') || (self.keySpec.startsWith('HMAC_') && self.keyUsage == 'GENERATE_VERIFY_MAC') || (self.keySpec.startsWith('ECC_') && self.keyUsage == 'SIGN_VERIFY') || (self.keySpec.startsWith('RSA_') && self.keyUsage in ['ENCRYPT_DECRYPT', 'SIGN_VERIFY'])").message("keyUsage does not fit keySpec: SYMMETRIC_DEFAULT takes ENCRYPT_DECRYPT, HMAC_* takes GENERATE_VERIFY_MAC, ECC_* takes SIGN_VERIFY, RSA_* takes ENCRYPT_DECRYPT or SIGN_VERIFY").field_path(".keyUsage"))]
#[x_kube(validation = Rule::new("has(self.keyUsage) == has(oldSelf.keyUsage) && (!has(self.keyUsage) || self.keyUsage == oldSelf.keyUsage)").message("keyUsage is immutable once the key exists").field_path(".keyUsage"))]
#[x_kube(validation = Rule::new("has(self.kmsRef) == has(oldSelf.kmsRef) && (!has(self.kmsRef) || self.kmsRef == oldSelf.kmsRef)").message("kmsRef is immutable: the key lives in the account of its connection").field_path(".kmsRef"))]
#[x_kube(validation = Rule::new("!has(self.keyMaterial.onChange) || self.keyMaterial.onChange != 'Rotate' || self.keySpec == 'SYMMETRIC_DEFAULT'").message("keyMaterial.onChange: Rotate needs keySpec SYMMETRIC_DEFAULT: KMS cannot rotate the material of RSA, ECC or HMAC keys").field_path(".keyMaterial.onChange"))]
#[x_kube(validation = Rule::new("!has(self.keyMaterial.generate) || !has(self.keyMaterial.generate.rotation) || (self.keySpec == 'SYMMETRIC_DEFAULT' && has(self.keyMaterial.onChange) && self.keyMaterial.onChange == 'Rotate')").message("keyMaterial.generate.rotation needs keySpec SYMMETRIC_DEFAULT and keyMaterial.onChange: Rotate: the schedule rotates through the Rotate path, and KMS rotates only symmetric keys").field_path(".keyMaterial.generate.rotation"))]
#[x_kube(validation = Rule::new("!has(self.deletionPolicy) || self.deletionPolicy != 'DeleteMaterial' || has(self.alias) || has(self.adoptKeyArn)").message("deletionPolicy DeleteMaterial needs an alias or adoptKeyArn, so that re-applying the AwsKey finds the key again").field_path(".deletionPolicy"))]
#[x_kube(validation = Rule::new("has(self.adoptKeyArn) == has(oldSelf.adoptKeyArn) && (!has(self.adoptKeyArn) || self.adoptKeyArn == oldSelf.adoptKeyArn)").message("adoptKeyArn is immutable").field_path(".adoptKeyArn"))]
pub struct AwsKeySpec {
    /// The `AwsKms` connection (cluster-scoped) to use; it must be granted to this namespace.
    /// Unset: the AwsKms named `default`. Immutable.
    pub kms_ref: Option<LocalObjectRef>,

    /// Region, alias, description, policy, enabled state and deletion settings.
    #[serde(flatten)]
    pub settings: KeySettings,

    /// Where the key material comes from. `onChange` can always be changed; the other fields
    /// only together with `onChange: Rotate` (pointing at another Secret is a Secret change).
    #[x_kube(validation = Rule::new("(has(self.onChange) && self.onChange == 'Rotate') || (has(self.secretRef) == has(oldSelf.secretRef) && (!has(self.secretRef) || self.secretRef == oldSelf.secretRef) && has(self.pkcs11) == has(oldSelf.pkcs11) && (!has(self.pkcs11) || (self.pkcs11.tokenRef == oldSelf.pkcs11.tokenRef && self.pkcs11.keyLabel == oldSelf.pkcs11.keyLabel)) && (has(self.encoding) ? self.encoding : 'Raw') == (has(oldSelf.encoding) ? oldSelf.encoding : 'Raw') && has(self.wrappingAlgorithm) == has(oldSelf.wrappingAlgorithm) && (!has(self.wrappingAlgorithm) || self.wrappingAlgorithm == oldSelf.wrappingAlgorithm) && has(self.wrappingKeySpec) == has(oldSelf.wrappingKeySpec) && (!has(self.wrappingKeySpec) || self.wrappingKeySpec == oldSelf.wrappingKeySpec))").message("keyMaterial is immutable except onChange; set onChange: Rotate to change the material"))]
    pub key_material: KeyMaterialSource,

    /// Type of key (CCKM `CustomerMasterKeySpec`). Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("keySpec is immutable"))]
    pub key_spec: KeySpec,

    /// What the key is for. Defaults follow CCKM: SYMMETRIC_DEFAULT → ENCRYPT_DECRYPT,
    /// HMAC_* → GENERATE_VERIFY_MAC, ECC_* → SIGN_VERIFY; RSA keys must state ENCRYPT_DECRYPT or
    /// SIGN_VERIFY. Immutable.
    pub key_usage: Option<KeyUsage>,

    /// Tags of the key. keyfleet also sets its own `keyfleet.dev/*` ownership tags; any other
    /// tag found on the key in AWS is removed on resync.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 40").message("at most 40 tags (AWS allows 50; keyfleet reserves some)"))]
    #[x_kube(validation = Rule::new("self.all(k, !k.startsWith('aws:') && !k.startsWith('keyfleet.dev/'))").message("tag keys starting with aws: or keyfleet.dev/ are reserved"))]
    #[x_kube(validation = Rule::new("self.all(k, k.size() >= 1 && k.size() <= 128 && k.matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]+$'))").message("tag keys must be 1-128 characters: letters, digits, spaces and _ . : / = + - @"))]
    #[x_kube(validation = Rule::new("self.all(k, self[k].size() <= 256 && self[k].matches('^[\\\\p{L}\\\\p{Z}\\\\p{N}_.:/=+\\\\-@]*$'))").message("tag values must be at most 256 characters: letters, digits, spaces and _ . : / = + - @"))]
    pub tags: BTreeMap<String, String>,

    /// Create a multi-region primary key that `AwsReplicaKey` resources can replicate.
    /// Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("multiRegion is immutable"))]
    pub multi_region: bool,

    /// Expiration of the imported material. Unset: the material does not expire.
    pub expiration: Option<Expiration>,

    /// ARN of an existing EXTERNAL-origin key to manage instead of creating a new one. Refused
    /// when another AwsKey or another cluster owns that key. Immutable.
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$"))]
    pub adopt_key_arn: Option<String>,
}

/// Observed state of an AwsKey, as seen in KMS.
pub struct AwsKeyStatus {
    /// What KMS reports about the key, and the Ready condition.
    #[serde(flatten)]
    pub key: KmsKeyStatus,
    /// Set while a CreateKey is in flight, so that a key created just before a crash is found
    /// (by its owner tag) and adopted instead of duplicated.
    pub create_started_at: Option<Time>,
    /// Replicas of this multi-region key, as seen in KMS.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaRef>,
    /// When the scheduled rotation (`keyMaterial.generate.rotation`) generates the next
    /// material; unset without a schedule.
    pub next_rotation_time: Option<Time>,
    /// The Secrets of generated material that rotates on a schedule: the current one and
    /// those retained from earlier rotations.
    pub generated_material: Option<GeneratedMaterialStatus>,
}
}

/// Where the key material is read from and how it is wrapped for import.
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretRef) != has(self.pkcs11)").message("keyMaterial needs exactly one of secretRef and pkcs11"))]
#[x_kube(validation = Rule::new("!has(self.retire) || self.retire.size() == 0 || (has(self.retireMakesKeyUnusable) && self.retireMakesKeyUnusable)").message("keyMaterial.retire makes the whole key unusable in AWS (PendingImport: a key decrypts only while it holds every material it was rotated through), not only what the retired material encrypted; set keyMaterial.retireMakesKeyUnusable: true to confirm").field_path(".retire"))]
#[x_kube(validation = Rule::new("!has(self.generate) || has(self.secretRef)").message("keyMaterial.generate needs secretRef: the Secret keyfleet creates when it does not exist (a PKCS#11 key is generated with pkcs11.generate)").field_path(".generate"))]
pub struct KeyMaterialSource {
    /// The Secret key holding the material, in this resource's namespace. Symmetric keys: exactly
    /// 32 bytes. HMAC keys: raw bytes (HMAC_224: 28-64, HMAC_256: 32-64, HMAC_384: 48-128,
    /// HMAC_512: 64-128). RSA/ECC keys: a private key in PEM or DER (PKCS#8, PKCS#1 or SEC1).
    /// Exactly one of `secretRef` and `pkcs11`.
    pub secret_ref: Option<SecretKeySelector>,

    /// A key held in a PKCS#11 token (HSM): keyfleet exports it only wrapped under KMS's
    /// wrapping key (`C_WrapKey`), so its plaintext never leaves the HSM. `encoding` does not
    /// apply; `wrappingAlgorithm` defaults to what the token supports.
    pub pkcs11: Option<Pkcs11KeyRef>,

    /// How the Secret value is encoded: `Raw` bytes (default), or `Base64` / `Hex` text.
    #[serde(default)]
    pub encoding: MaterialEncoding,

    /// Wrapping algorithm for ImportKeyMaterial. Default: RSAES_OAEP_SHA_256 for symmetric and
    /// HMAC keys, RSA_AES_KEY_WRAP_SHA_256 for RSA and ECC keys.
    pub wrapping_algorithm: Option<WrappingAlgorithm>,

    /// Spec of the RSA wrapping key KMS generates. Default: RSA_2048 for symmetric and HMAC keys,
    /// RSA_4096 for RSA and ECC keys.
    pub wrapping_key_spec: Option<WrappingKeySpec>,

    /// What happens when the Secret holds other material than the key: `Refuse` (default) keeps
    /// the key as it is and reports `MaterialMismatch`; `Rotate` (SYMMETRIC_DEFAULT keys only)
    /// imports the new material as NEW_KEY_MATERIAL, brings every replica along and rotates
    /// with RotateKeyOnDemand, so old ciphertexts still decrypt and new ones use the new
    /// material.
    #[serde(default)]
    pub on_change: MaterialChangePolicy,

    /// KeyMaterialIds (see `status.materials`) of NON_CURRENT materials to delete with
    /// DeleteImportedKeyMaterial, on the key and on every replica. The current material is
    /// never deleted (refused as `MaterialRetirementRefused`). KMS then keeps the whole key
    /// PendingImport: a key decrypts only while it holds every material it was rotated through,
    /// so retiring crypto-shreds everything the key protects; it needs
    /// `retireMakesKeyUnusable: true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 25").message("at most 25 materials (KMS rotates a key on demand at most 25 times)"))]
    #[x_kube(validation = Rule::new("self.all(id, id.matches('^[0-9a-f]{64}$'))").message("retire lists KeyMaterialIds: 64 lowercase hex characters, as status.materials shows them"))]
    pub retire: Vec<String>,

    /// Confirms that `retire` makes the key unusable (PendingImport in every region) until the
    /// retired material is imported again: required whenever `retire` lists a material.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retire_makes_key_unusable: bool,

    /// Secrets holding earlier materials of this key (the ones it was rotated away from), in
    /// this resource's namespace. keyfleet matches each to its KeyMaterialId by fingerprint
    /// (`status.materials`; KMS checks the match on import) and imports it again
    /// (EXISTING_KEY_MATERIAL) whenever the current material is renewed, on the key and on
    /// every replica, and wherever KMS lacks it (a new replica, expired material). A
    /// NON_CURRENT material that expires without a Secret here raises `MaterialWillExpire`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.size() <= 25").message("at most 25 retained materials (KMS rotates a key on demand at most 25 times)"))]
    pub retained: Vec<super::material_retention::RetainedMaterial>,

    /// A rotation (`onChange: Rotate`) of a key whose material expires leaves the previous
    /// material to expire unless its Secret is in `retained`: `Refuse` (default) does not
    /// rotate until it is (`PreviousMaterialNotRetained`); `Accept` rotates anyway.
    #[serde(default)]
    pub expiring_previous_material: super::material_retention::ExpiringMaterialPolicy,

    /// `{}`: keyfleet generates the material. When the Secret of `secretRef` does not exist and
    /// the key holds no material yet, keyfleet creates it (immutable, labelled
    /// `app.kubernetes.io/managed-by: keyfleet`, without owner reference: deleting this object
    /// never deletes the material) with fresh material of `keySpec` in `encoding`, then imports
    /// it. A Secret that exists is never overwritten. Needs `secretRef`, and the chart's
    /// `rbac.secretCreation` grant (else `SecretCreateForbidden`).
    pub generate: Option<GenerateMaterial>,
}

/// A key object in a `Pkcs11Token`.
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pkcs11KeyRef {
    /// The `Pkcs11Token` (cluster-scoped) holding the key; it must admit this namespace.
    pub token_ref: LocalObjectRef,
    /// CKA_LABEL of the key object: a secret key (CKK_AES of 32 bytes for SYMMETRIC_DEFAULT,
    /// CKK_GENERIC_SECRET for HMAC) or a private key (RSA, EC) with its public key under the
    /// same label. It must be CKA_EXTRACTABLE (exportable wrapped) and should be CKA_SENSITIVE.
    #[schemars(length(min = 1, max = 255))]
    pub key_label: String,
    /// `{}`: when the token has no object with `keyLabel`, keyfleet generates the key there
    /// (CKA_SENSITIVE, CKA_EXTRACTABLE only for wrapping, CKA_TOKEN). An existing object is
    /// never replaced.
    pub generate: Option<GenerateInToken>,
}

/// Generation settings for a key keyfleet creates in the token (none yet: `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GenerateInToken {}

// What keyfleet does when the Secret's material differs from the material in KMS. A plain
// comment: the field carries the description.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MaterialChangePolicy {
    /// Keep the key as it is and report `MaterialMismatch`.
    #[default]
    Refuse,
    /// Rotate the key to the new material (symmetric keys only).
    Rotate,
}

/// A replica of a multi-region key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRef {
    /// Region of the replica.
    pub region: String,
    /// ARN of the replica.
    pub arn: String,
}

impl KeyMaterialSource {
    /// The name of the Secret the material is read from (None for a PKCS#11 key).
    pub fn secret_name(&self) -> Option<&str> {
        self.secret_ref.as_ref().map(|r| r.name.as_str())
    }

    /// Whether the Secret `name` (in the resource's namespace) holds material of this key: the
    /// current material, or a `retained` one.
    pub fn reads_secret(&self, name: &str) -> bool {
        self.secret_name() == Some(name) || self.retained.iter().any(|r| r.secret_ref.name == name)
    }
}

impl AwsKeySpec {
    /// The usage the key is created with: the stated one, or the CCKM default for the spec.
    pub fn effective_usage(&self) -> Option<KeyUsage> {
        self.key_usage.or(self.key_spec.default_usage())
    }
}
