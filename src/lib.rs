//! keyfleet: BYOK keys in AWS KMS as Kubernetes custom resources.

pub mod api;
pub mod memkube;
