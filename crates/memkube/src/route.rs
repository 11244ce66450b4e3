//! URL routing: turns an API path into a discovery endpoint or a resource target.

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/api/v1`
    CoreResources,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/apis/{group}/{version}`
    GroupResources(String, String),
    /// Anything under a resource.
    Resource(Target),
}

/// A resource collection, object or subresource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// API group, `""` for core.
    pub group: String,
    /// API version from the URL.
    pub version: String,
    /// Resource (plural) name.
    pub plural: String,
    /// Namespace from the URL, `None` for cluster-scoped or all-namespaces requests.
    pub namespace: Option<String>,
    /// Object name, `None` for a collection.
    pub name: Option<String>,
    /// Subresource (`status`, ...).
    pub subresource: Option<String>,
}

impl Target {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode(seg: &str) -> String {
    if !seg.contains('%') {
        return seg.to_string();
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a request path (without query).
pub fn parse(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        ["api"] => Some(Route::CoreVersions),
        ["api", "v1"] => Some(Route::CoreResources),
        ["apis"] => Some(Route::Groups),
        ["apis", g] => Some(Route::Group((*g).to_string())),
        ["apis", g, v] => Some(Route::GroupResources((*g).to_string(), (*v).to_string())),
        ["api", v, rest @ ..] => resource("", v, rest),
        ["apis", g, v, rest @ ..] => resource(g, v, rest),
        _ => None,
    }
}

fn resource(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let t = |plural: &str, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        Some(Route::Resource(Target {
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
            subresource: sub.map(str::to_string),
        }))
    };
    match rest {
        // Subresources of a Namespace object itself.
        ["namespaces", ns, sub @ ("status" | "finalize")] if group.is_empty() => {
            t("namespaces", None, Some(ns), Some(sub))
        }
        ["namespaces", ns, plural] => t(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] => t(plural, Some(ns), Some(name), None),
        ["namespaces", ns, plural, name, sub] => t(plural, Some(ns), Some(name), Some(sub)),
        [plural] => t(plural, None, None, None),
        [plural, name] => t(plural, None, Some(name), None),
        [plural, name, sub] => t(plural, None, Some(name), Some(sub)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse(path) {
            Some(Route::Resource(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn routes_core_and_groups() {
        let t = target("/api/v1/namespaces/ns1/configmaps/cm1");
        assert_eq!(
            (
                t.group.as_str(),
                t.plural.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref()
            ),
            ("", "configmaps", Some("ns1"), Some("cm1"))
        );
        let t = target("/apis/example.com/v1/namespaces/ns1/widgets/w/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        assert_eq!(t.api_version(), "example.com/v1");
        let t = target("/apis/example.com/v1/clusterthings/x");
        assert_eq!(t.namespace, None);
        assert_eq!(t.name.as_deref(), Some("x"));
        let t = target("/api/v1/namespaces");
        assert_eq!((t.plural.as_str(), t.name.as_deref()), ("namespaces", None));
        let t = target("/api/v1/namespaces/foo");
        assert_eq!(
            (t.plural.as_str(), t.name.as_deref()),
            ("namespaces", Some("foo"))
        );
        let t = target("/api/v1/namespaces/foo/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        assert_eq!(t.namespace, None);
        let t = target("/api/v1/secrets");
        assert_eq!(
            (t.plural.as_str(), t.namespace.as_deref()),
            ("secrets", None)
        );
        assert_eq!(parse("/version"), Some(Route::Version));
        assert_eq!(parse("/apis"), Some(Route::Groups));
        assert_eq!(parse("/nope"), None);
        assert_eq!(
            target("/api/v1/namespaces/a/configmaps/x%2Ey")
                .name
                .as_deref(),
            Some("x.y")
        );
    }
}
