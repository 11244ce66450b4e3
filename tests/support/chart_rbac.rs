//! The operator's RBAC as the Helm chart grants it (charts/keyfleet/templates/_helpers.tpl,
//! checked rule by rule in tests/helm_chart.rs), as rules of the in-memory API server, with the
//! optional `rbac.secretCreation` grant.

use memkube::Rule;

/// Where the chart lets keyfleet create Secrets (`rbac.secretCreation`).
#[derive(Clone, Copy, Debug)]
pub enum SecretCreation<'a> {
    /// Not granted (the chart's default).
    None,
    /// In every namespace (ClusterRole).
    Cluster,
    /// In these namespaces only (a Role in each).
    Namespaces(&'a [&'a str]),
}

/// The rules of a cluster-wide install (watchNamespaces empty).
pub fn operator_rules(secret_creation: SecretCreation<'_>) -> Vec<Rule> {
    let group = "kms.keyfleet.dev";
    let mut rules = vec![
        Rule::cluster(
            &[group],
            &["awskeys", "awsreplicakeys"],
            &["get", "list", "watch", "patch"],
        ),
        Rule::cluster(
            &[group],
            &["awskeys/status", "awsreplicakeys/status"],
            &["patch"],
        ),
        Rule::cluster(
            &[group],
            &["awskeys/finalizers", "awsreplicakeys/finalizers"],
            &["update"],
        ),
        Rule::cluster(&[""], &["secrets"], &["get", "list", "watch"]),
        Rule::cluster(&["events.k8s.io"], &["events"], &["create", "patch"]),
        Rule::cluster(
            &[group],
            &["awskmses", "awskeypolicytemplates", "pkcs11tokens"],
            &["get", "list", "watch"],
        ),
        Rule::cluster(
            &[group],
            &[
                "awskmses/status",
                "awskeypolicytemplates/status",
                "pkcs11tokens/status",
            ],
            &["patch"],
        ),
        Rule::cluster(&[""], &["namespaces"], &["get", "list", "watch"]),
    ];
    match secret_creation {
        SecretCreation::None => {}
        SecretCreation::Cluster => rules.push(Rule::cluster(&[""], &["secrets"], &["create"])),
        SecretCreation::Namespaces(namespaces) => rules.extend(
            namespaces
                .iter()
                .map(|ns| Rule::in_namespace(ns, &[""], &["secrets"], &["create"])),
        ),
    }
    rules
}
