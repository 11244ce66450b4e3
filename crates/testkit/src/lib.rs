//! Test helpers shared by keyfleet's unit tests, integration tests and benchmarks; never part
//! of the operator.

pub mod leak;
pub mod material;
