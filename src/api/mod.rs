//! Custom resource types of the `kms.keyfleet.dev/v1alpha1` API: one file per kind, and one per
//! topic of the vocabulary they share (key specs, key material, policy, references, deletion,
//! expiration, status and conditions).

/// A type that holds another flattened under `$field` (a key kind's status its
/// `KmsKeyStatus`, its spec its `KeySettings`) reads as it: `Deref` and `DerefMut` to that field.
macro_rules! deref_to_flattened {
    ($target:ty, $field:ident: $($outer:ty),+) => {$(
        impl std::ops::Deref for $outer {
            type Target = $target;
            fn deref(&self) -> &$target {
                &self.$field
            }
        }

        impl std::ops::DerefMut for $outer {
            fn deref_mut(&mut self) -> &mut $target {
                &mut self.$field
            }
        }
    )+};
}

#[macro_use]
mod kind;

pub mod allowed_namespaces;
pub mod aws_key;
pub mod aws_key_policy_template;
pub mod aws_kms;
pub mod aws_replica_key;
pub mod conditions;
pub mod deletion;
pub mod expiration;
pub mod generated_material;
pub mod key_material;
pub mod key_policy;
pub mod key_settings;
pub mod key_spec;
pub mod key_status;
pub mod material_inventory;
pub mod material_retention;
pub mod pkcs11_token;
pub mod refs;

pub use allowed_namespaces::{AllowedNamespaces, NamespacesFrom};
pub use aws_key::{
    AwsKey, AwsKeySpec, AwsKeyStatus, GenerateInToken, KeyMaterialSource, MaterialChangePolicy,
    Pkcs11KeyRef, ReplicaRef,
};
pub use aws_key_policy_template::{
    AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec, AwsKeyPolicyTemplateStatus,
};
pub use aws_kms::{
    AdoptionPolicy, AwsKms, AwsKmsSpec, AwsKmsStatus, DEFAULT_CONNECTION, KeyPolicyLimits,
};
pub use aws_replica_key::{AwsReplicaKey, AwsReplicaKeySpec, AwsReplicaKeyStatus};
pub use deletion::{DEFAULT_DELETION_POLICY_ANNOTATION, DeletionPolicy, effective_deletion_policy};
pub use expiration::Expiration;
pub use generated_material::{
    GenerateMaterial, GeneratedMaterialStatus, RetainedSecret, ScheduledRotation,
};
pub use key_material::{MaterialEncoding, WrappingAlgorithm, WrappingKeySpec};
pub use key_policy::{KeyPolicy, KeyPolicyForm, PolicyShortcuts};
pub use key_settings::KeySettings;
pub use key_spec::{KeyFamily, KeySpec, KeyUsage};
pub use key_status::KmsKeyStatus;
pub use material_inventory::KeyMaterialEntry;
pub use material_retention::{ExpiringMaterialPolicy, RetainedMaterial};
pub use pkcs11_token::{
    NamespacedSecretKeySelector, Pkcs11Token, Pkcs11TokenSpec, Pkcs11TokenStatus, TokenWrapping,
};
pub use refs::{LocalObjectRef, SecretKeySelector};

/// The name of a keyfleet kind (`AwsKey`), known from its spec type: declared once, in the
/// kind's `kube(kind = ...)` argument, and recorded by `keyfleet_kind!`.
pub trait KindName {
    const KIND: &'static str;
}

/// The API group of every keyfleet kind.
pub const GROUP: &str = "kms.keyfleet.dev";
/// Prefix of the tags and labels keyfleet owns.
pub const TAG_PREFIX: &str = "keyfleet.dev/";

/// `Display` of the vocabulary enums: their KMS or CRD name (`as_str`).
macro_rules! display_as_str {
    ($($kind:ty),+) => {$(
        impl std::fmt::Display for $kind {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

display_as_str!(
    KeySpec,
    KeyUsage,
    MaterialEncoding,
    WrappingAlgorithm,
    WrappingKeySpec
);
