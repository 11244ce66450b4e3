//! Test helpers shared by keyfleet's unit tests, integration tests and benchmarks; never part
//! of the operator.

pub mod leak;
pub mod material;

/// A label (or tag) map from `(key, value)` pairs.
pub fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
