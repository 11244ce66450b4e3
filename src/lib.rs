//! keyfleet: BYOK keys in AWS KMS as Kubernetes custom resources.

pub mod api;
pub mod cli;
pub mod controller;
pub mod crds;
pub mod kms;
pub mod lint;
pub mod material;
pub mod memkube;
pub mod plan;
pub mod validate;
