//! Custom resource types of the `kms.keyfleet.dev/v1alpha1` API: one file per kind, and one per
//! topic of the vocabulary they share (key specs, key material, policy, references, deletion,
//! expiration, status and conditions).

pub mod aws_key;
pub mod aws_key_policy_template;
pub mod aws_kms;
pub mod aws_replica_key;
pub mod conditions;
pub mod deletion;
pub mod expiration;
pub mod key_material;
pub mod key_policy;
pub mod key_spec;
pub mod key_status;
pub mod refs;

pub use aws_key::{
    AwsKey, AwsKeySpec, AwsKeyStatus, KeyMaterialSource, MaterialChangePolicy, ReplicaRef,
};
pub use aws_key_policy_template::{AwsKeyPolicyTemplate, AwsKeyPolicyTemplateSpec};
pub use aws_kms::{AwsKms, AwsKmsSpec, AwsKmsStatus};
pub use aws_replica_key::{AwsReplicaKey, AwsReplicaKeySpec, AwsReplicaKeyStatus};
pub use deletion::DeletionPolicy;
pub use expiration::Expiration;
pub use key_material::{MaterialEncoding, WrappingAlgorithm, WrappingKeySpec};
pub use key_policy::{KeyPolicy, KeyPolicyForm, PolicyShortcuts};
pub use key_spec::{KeyFamily, KeySpec, KeyUsage};
pub use key_status::KmsKeyStatus;
pub use refs::{LocalObjectRef, SecretKeySelector};

/// The API group of every keyfleet kind.
pub const GROUP: &str = "kms.keyfleet.dev";
/// Prefix of the tags and labels keyfleet owns.
pub const TAG_PREFIX: &str = "keyfleet.dev/";
