//! Custom resource types of the `kms.keyfleet.dev/v1alpha1` API, one file per kind.

pub mod key_spec;

pub use key_spec::{KeyFamily, KeySpec, KeyUsage};
