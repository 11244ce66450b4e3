//! keyfleet: BYOK keys in AWS KMS as Kubernetes custom resources.

pub mod api;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod crds;
pub mod desired;
pub mod http;
pub mod kms;
pub mod leader;
pub mod manifest;
pub mod material;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod tenancy;
pub mod validate;
