//! Shared helpers for integration tests. Each `tests/*.rs` binary that needs them declares
//! `mod support;` and uses only some of them, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod chart_rbac;
pub mod clock;
pub mod fleet;
pub mod generated_secrets;
pub mod kms_recorder;
pub mod kms_use;
pub mod leaks;
pub mod localstack;
pub mod localstack_ciphertext;
pub mod operator;
pub mod outside;
pub mod replicas;
pub mod softhsm;
pub mod tools;
