//! Who owns a KMS key: keyfleet's ownership tags and how a key found in KMS relates to an object.

use std::collections::BTreeMap;

use crate::api::TAG_PREFIX;

/// Tag that carries the uid of the AwsKey that owns a KMS key.
pub const OWNER_UID_TAG: &str = "keyfleet.dev/owner-uid";
/// Tag that carries `<namespace>/<name>` of the AwsKey that owns a KMS key.
pub const OWNER_TAG: &str = "keyfleet.dev/owner";
/// Tag that carries the id of the cluster whose keyfleet owns a KMS key.
pub const CLUSTER_TAG: &str = "keyfleet.dev/cluster";
/// Who a KMS key says it belongs to (from its `keyfleet.dev/*` tags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cluster: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The ownership tags keyfleet puts on every key it manages.
    pub fn tags(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (OWNER_UID_TAG.to_string(), self.uid.clone()),
            (
                OWNER_TAG.to_string(),
                format!("{}/{}", self.namespace, self.name),
            ),
            (CLUSTER_TAG.to_string(), self.cluster.clone()),
        ])
    }
}

/// How a key found in KMS relates to the AwsKey looking at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Tagged with this AwsKey's uid.
    Mine,
    /// Tagged by this cluster for an AwsKey of the same namespace and name that was deleted and
    /// applied again (a new uid): the same declared key.
    PreviousIncarnation,
    /// No keyfleet tags.
    Unowned,
    /// Owned by another AwsKey or another cluster; the string says which.
    Elsewhere(String),
}

/// Classifies a key's ownership from its tags.
pub fn ownership(tags: &BTreeMap<String, String>, me: &Owner) -> Ownership {
    let uid = tags.get(OWNER_UID_TAG);
    let owner = tags.get(OWNER_TAG);
    let cluster = tags.get(CLUSTER_TAG);
    if uid.is_none() && owner.is_none() && cluster.is_none() {
        return Ownership::Unowned;
    }
    let same_cluster = cluster.is_some_and(|c| *c == me.cluster);
    if same_cluster && uid.is_some_and(|u| *u == me.uid) {
        return Ownership::Mine;
    }
    let me_name = format!("{}/{}", me.namespace, me.name);
    if same_cluster && owner.is_some_and(|o| *o == me_name) {
        return Ownership::PreviousIncarnation;
    }
    Ownership::Elsewhere(format!(
        "AwsKey {} in cluster {}",
        owner.map(String::as_str).unwrap_or("<unknown>"),
        cluster.map(String::as_str).unwrap_or("<unknown>")
    ))
}
/// True for tag keys keyfleet itself manages.
pub fn is_keyfleet_tag(key: &str) -> bool {
    key.starts_with(TAG_PREFIX)
}
