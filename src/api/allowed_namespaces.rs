//! `allowedNamespaces`: which namespaces may use a cluster-scoped resource (an `AwsKms`, a
//! `Pkcs11Token`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// The namespaces whose resources may use this cluster-scoped one; a resource in any other
/// namespace is refused (for an AwsKms: `KmsConnectionNotAllowed`).
#[skip_serializing_none]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.from == 'Selector' ? has(self.selector) : !has(self.selector)").message("allowedNamespaces: selector is required with from: Selector and not allowed with from: All"))]
pub struct AllowedNamespaces {
    /// `All`: every namespace. `Selector`: the namespaces whose labels match `selector`.
    pub from: NamespacesFrom,
    /// Labels a namespace must have, with `from: Selector` (`matchLabels` and
    /// `matchExpressions`, as in any Kubernetes label selector).
    pub selector: Option<LabelSelector>,
}

// Which namespaces `allowedNamespaces` admits. A plain comment: the field carries the
// description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NamespacesFrom {
    /// Every namespace.
    All,
    /// The namespaces matching `selector`.
    Selector,
}

impl AllowedNamespaces {
    /// Every namespace.
    pub fn all() -> AllowedNamespaces {
        AllowedNamespaces {
            from: NamespacesFrom::All,
            selector: None,
        }
    }

    /// The namespaces whose labels match `match_labels`.
    pub fn matching(match_labels: BTreeMap<String, String>) -> AllowedNamespaces {
        AllowedNamespaces {
            from: NamespacesFrom::Selector,
            selector: Some(LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            }),
        }
    }

    /// Whether a namespace with these labels is admitted. An empty selector matches every
    /// namespace, as in Kubernetes.
    pub fn allows(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        match (self.from, &self.selector) {
            (NamespacesFrom::All, _) => true,
            (NamespacesFrom::Selector, None) => false,
            (NamespacesFrom::Selector, Some(selector)) => matches(selector, namespace_labels),
        }
    }
}

/// Label selector semantics: every `matchLabels` pair and every expression must hold.
fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An unknown operator admits nothing.
            _ => false,
        }
    });
    pairs && expressions
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyfleet_testkit::labels;
    use serde_json::json;

    fn allowed(spec: serde_json::Value) -> AllowedNamespaces {
        serde_json::from_value(spec).expect("allowedNamespaces")
    }

    #[test]
    fn all_admits_every_namespace() {
        assert!(allowed(json!({"from": "All"})).allows(&labels(&[])));
    }

    #[test]
    fn a_selector_admits_only_matching_namespaces() {
        let a = allowed(json!({"from": "Selector", "selector": {
            "matchLabels": {"team": "payments"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]},
                                 {"key": "quarantine", "operator": "DoesNotExist"}]}}));
        assert!(a.allows(&labels(&[("team", "payments"), ("env", "prod")])));
        assert!(!a.allows(&labels(&[("team", "payments"), ("env", "dev")])));
        assert!(!a.allows(&labels(&[("team", "orders"), ("env", "prod")])));
        assert!(!a.allows(&labels(&[
            ("team", "payments"),
            ("env", "prod"),
            ("quarantine", "yes")
        ])));
        let not_in = allowed(
            json!({"from": "Selector", "selector": {"matchExpressions": [
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "team", "operator": "Exists"}]}}),
        );
        assert!(not_in.allows(&labels(&[("team", "x")])));
        assert!(!not_in.allows(&labels(&[("team", "x"), ("env", "dev")])));
        assert!(!not_in.allows(&labels(&[])));
        assert!(!allowed(json!({"from": "Selector"})).allows(&labels(&[])));
    }
}
