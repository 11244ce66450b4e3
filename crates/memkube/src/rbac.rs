//! RBAC for a client that is not cluster-admin: the rules of its Roles and ClusterRoles, each
//! bound cluster-wide or in one namespace, checked on every request like kube-apiserver's RBAC
//! authorizer (verb, API group, resource with subresource, namespace; no resourceNames).

use super::route::Target;
use super::status::{ApiError, qualified};
use http::Method;

/// User name in the Forbidden messages of a restricted client.
pub const SUBJECT: &str = "system:serviceaccount:memkube:restricted";

/// One rule of a Role (bound in `namespace`) or ClusterRole (bound cluster-wide: `None`).
/// `"*"` matches any group, resource or verb, as in Kubernetes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    /// Resources, with subresources as `awskeys/status`.
    pub resources: Vec<String>,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verbs: Vec<String>,
    /// `None`: a ClusterRole bound with a ClusterRoleBinding (every namespace and the
    /// cluster-scoped resources); `Some(ns)`: bound with a RoleBinding in `ns`.
    pub namespace: Option<String>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Rule {
    /// A ClusterRole rule bound cluster-wide.
    pub fn cluster(api_groups: &[&str], resources: &[&str], verbs: &[&str]) -> Rule {
        Rule {
            api_groups: strings(api_groups),
            resources: strings(resources),
            verbs: strings(verbs),
            namespace: None,
        }
    }

    /// A Role rule bound in `namespace`.
    pub fn in_namespace(
        namespace: &str,
        api_groups: &[&str],
        resources: &[&str],
        verbs: &[&str],
    ) -> Rule {
        Rule {
            namespace: Some(namespace.to_string()),
            ..Rule::cluster(api_groups, resources, verbs)
        }
    }

    fn allows(&self, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
        let any = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
        let in_scope = match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(bound), Some(ns)) => bound == ns,
            (Some(_), None) => false,
        };
        in_scope
            && any(&self.verbs, verb)
            && any(&self.api_groups, group)
            && any(&self.resources, resource)
    }
}

/// The RBAC verb of a request on `t`.
fn verb(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// Refuses a request none of `rules` allows, with kube-apiserver's 403 message.
pub(crate) fn authorize(
    rules: &[Rule],
    method: &Method,
    t: &Target,
    watch: bool,
) -> Result<(), ApiError> {
    let verb = verb(method, t, watch);
    let resource = match &t.subresource {
        Some(sub) => format!("{}/{sub}", t.plural),
        None => t.plural.clone(),
    };
    // A namespace's own object is in that namespace for RoleBindings.
    let namespace = t
        .namespace
        .as_deref()
        .or(match (t.plural.as_str(), t.group.as_str()) {
            ("namespaces", "") => t.name.as_deref(),
            _ => None,
        });
    if rules
        .iter()
        .any(|r| r.allows(verb, &t.group, &resource, namespace))
    {
        return Ok(());
    }
    let what = match &t.name {
        Some(name) => format!("{} {name:?}", qualified(&t.group, &t.plural)),
        None => qualified(&t.group, &t.plural),
    };
    let scope = match t.namespace.as_deref() {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    Err(ApiError::new(
        403,
        format!(
            "{what} is forbidden: User {SUBJECT:?} cannot {verb} resource {resource:?} in API \
             group {:?} {scope}",
            t.group
        ),
    ))
}
